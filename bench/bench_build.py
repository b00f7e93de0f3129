#!/usr/bin/env python3
"""Whole initrd builds: ours (generic, host-only) against dracut (--no-hostonly, --hostonly) for the
same kernel, in the same run, N runs each; prints min/median wall time, sizes and ratios.

    bench/bench_build.py [-k KVER] [--runs N] [--skip-dracut]

Each build is a fresh process (Python start-up included for ours), output to a scratch directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def ours(kver: str, out: Path, generic: bool) -> list[str]:
    cmd = [sys.executable, "-m", "mkosi_initrd", "-k", kver, "-o", str(out), "--no-cache"]
    return cmd + (["--generic"] if generic else [])


def dracut(kver: str, out: Path, generic: bool) -> list[str]:
    mode = "--no-hostonly" if generic else "--hostonly"
    return ["dracut", "--quiet", "--force", mode, "--kver", kver, str(out)]


def run(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    start = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--kver", default=platform.release())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-dracut", action="store_true")
    args = ap.parse_args()
    if not Path(f"/usr/lib/modules/{args.kver}/modules.dep").exists():
        kvers = sorted(p.parent.name for p in Path("/usr/lib/modules").glob("*/modules.dep"))
        if len(kvers) != 1:
            sys.exit(f"kernel {args.kver} is not installed; use -k (installed: {' '.join(kvers)})")
        args.kver = kvers[0]
    tools = [("ours", ours)] + (
        [] if args.skip_dracut or not shutil.which("dracut") else [("dracut", dracut)]
    )
    results: dict[tuple[str, str], tuple[list[float], int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        for mode in ("generic", "host-only"):
            for name, make in tools:
                out = Path(tmp) / f"{name}-{mode}.img"
                times = [run(make(args.kver, out, mode == "generic")) for _ in range(args.runs)]
                results[(name, mode)] = (times, out.stat().st_size)
                print(f"{name:6} {mode:9} runs={times}", file=sys.stderr)
    print(f"kernel {args.kver}, {args.runs} runs each, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'tool':6} {'mode':9} {'min s':>7} {'median s':>9} {'size MB':>8}")
    for (name, mode), (times, size) in results.items():
        print(f"{name:6} {mode:9} {min(times):7.2f} {statistics.median(times):9.2f} {size / 1e6:8.1f}")
    for mode in ("generic", "host-only"):
        if ("dracut", mode) in results:
            o, d = results[("ours", mode)], results[("dracut", mode)]
            print(
                f"{mode}: dracut/ours time ratio min {min(d[0]) / min(o[0]):.2f}x,"
                f" median {statistics.median(d[0]) / statistics.median(o[0]):.2f}x;"
                f" size ratio ours/dracut {o[1] / d[1]:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
