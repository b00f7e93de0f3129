#!/usr/bin/env python3
"""What the pre-flight check costs, in this process: reading what each file of the plan needs
(needs.scan, done while planning) and the check itself (check.problems), for the generic and the
host-only plan of this host, N runs each after a warm-up; CPU and wall time, min and median.

    bench/bench_check.py [-k KVER] [--runs 25]

bench_all.py times whole builds with and without --no-check; on a machine other jobs load, a
difference of a few tens of milliseconds drowns in their noise there, not here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from benchkernel import bench_kernel  # noqa: E402
from mkosi_initrd.build import check  # noqa: E402
from mkosi_initrd.cli import make_config, parse_args  # noqa: E402
from mkosi_initrd.planner import needs  # noqa: E402
from mkosi_initrd.planner.steps import make_plan  # noqa: E402

GOAL = 0.05


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    fn()  # warm-up: page cache, imports
    cpu, wall = [], []
    for _ in range(runs):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return cpu, wall


def ms(xs: list[float]) -> str:
    return f"{min(xs) * 1e3:6.1f} ms min, {statistics.median(xs) * 1e3:6.1f} ms median"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--kver")
    ap.add_argument("--runs", type=int, default=25)
    a = ap.parse_args()
    kver = bench_kernel(a.kver).kver
    worst = 0.0
    for name, args in (("generic", ["--generic"]), ("host-only", [])):
        plan = make_plan(make_config(parse_args(["plan", "-k", kver, *args])), read_needs=False)
        read = needs.scan(plan.entries)
        checked = dataclasses.replace(plan, needs=read)
        assert check.problems(checked) == [], check.problems(checked)
        scan_cpu, scan_wall = timed(functools.partial(needs.scan, plan.entries), a.runs)
        check_cpu, check_wall = timed(functools.partial(check.problems, checked), a.runs)
        total = [s + c for s, c in zip(scan_cpu, check_cpu, strict=True)]
        worst = max(worst, statistics.median(total))
        elf = sum(n.elf for n in read.values())
        print(
            f"{name} (kernel {kver}): {len(plan.entries)} entries, {len(read)} files needing some, {elf} ELF"
        )
        print(f"  reading what files need  CPU {ms(scan_cpu)}   wall {ms(scan_wall)}")
        print(f"  the check                CPU {ms(check_cpu)}   wall {ms(check_wall)}")
        print(f"  together                 CPU {ms(total)}")
    verdict = "met" if worst <= GOAL else "NOT met"
    print(f"goal: at most {GOAL * 1e3:.0f} ms per build: {verdict} (worst median {worst * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
