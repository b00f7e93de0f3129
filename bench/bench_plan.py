"""Time the package plan of the default list on this host (`mkosi-initrd plan --root /`).

    /work/venv/bin/python bench/bench_plan.py [--root /] [--runs 5]

Prints the best and median wall time of make_plan (config + database + closure + files) in
this process, after one warm-up run, and the goal (well under 0.5 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mkosi_initrd.cli import default_kver  # noqa: E402
from mkosi_initrd.config import load_config  # noqa: E402
from mkosi_initrd.planner import make_plan  # noqa: E402

GOAL = 0.5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    kver = default_kver(a.root)
    times = []
    plan = None
    for i in range(a.runs + 1):
        t = time.perf_counter()
        plan = make_plan(load_config(a.root, kver, None))
        if i:
            times.append(time.perf_counter() - t)
    assert plan is not None
    best, median = min(times), statistics.median(times)
    print(
        f"plan of the default list on {a.root} ({plan.backend}): {len(plan.packages)} packages, "
        f"{len(plan.entries)} entries, {sum(e.size for e in plan.entries) / 1e6:.1f} MB"
    )
    print(f"make_plan: best {best:.3f} s, median {median:.3f} s over {a.runs} runs (goal < {GOAL} s)")
    print(f"ratio to goal: {median / GOAL:.2f}")
    return 0 if median < GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
