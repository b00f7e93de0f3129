"""Time the package plan of the default list on this host (`mkosi-initrd plan --root /`).

    /work/venv/bin/python bench/bench_plan.py [--root /] [--runs 5]

Prints the best and median wall time of the package step (config + os-release + database +
closure + files) after one warm-up run, against the goal (well under 0.5 s), and, for context,
the whole make_plan (which adds the kernel modules and firmware).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mkosi_initrd.cli import default_kver  # noqa: E402
from mkosi_initrd.config.load import load_config  # noqa: E402
from mkosi_initrd.osrelease import read_os_release  # noqa: E402
from mkosi_initrd.planner.steps import make_plan, package_step  # noqa: E402

GOAL = 0.5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    kver = default_kver(a.root)
    times = []
    part = None
    for i in range(a.runs + 1):
        t = time.perf_counter()
        config = load_config(a.root, kver)
        part = package_step(config, read_os_release(a.root))
        if i:
            times.append(time.perf_counter() - t)
    assert part is not None
    best, median = min(times), statistics.median(times)
    print(
        f"package plan of the default list on {a.root} ({part.options.get('backend')}): "
        f"{len(part.packages)} packages, {len(part.entries)} entries, "
        f"{sum(e.size for e in part.entries) / 1e6:.1f} MB"
    )
    print(f"package step: best {best:.3f} s, median {median:.3f} s over {a.runs} runs (goal < {GOAL} s)")
    print(f"ratio to goal: {median / GOAL:.2f}")
    t = time.perf_counter()
    plan = make_plan(load_config(a.root, kver))
    print(
        f"whole make_plan (with modules and firmware): {time.perf_counter() - t:.3f} s,"
        f" {len(plan.entries)} entries"
    )
    return 0 if median < GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
