#!/usr/bin/env python3
"""`mkosi-initrd sysext` of openssh-server against the generic initrd of the Debian 13 fixture root,
timed beside the generic base initrd's build (--no-cache) in the same run, interleaved, byte-compiled
as installed. The directory format: this machine's systemd-repart (252) makes no DDIs, and the image
step is systemd-repart's, not ours.

    bench/bench_sysext.py [--root R -k KVER] [--runs N]

Prints min/median wall time of each, the ratio sysext/base, and the extension's size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
TARGET = 0.5  # seconds, issue 17


def run(argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "mkosi_initrd", *argv], env=env, check=True, capture_output=True)
    return time.monotonic() - start


def fixture_root() -> tuple[Path, str]:
    sys.path[:0] = [str(REPO / "tests"), str(SRC)]
    from fixtures.trixie import trixie_root

    t = trixie_root()
    return t.root, t.kver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--root", type=Path)
    ap.add_argument("-k", "--kernel-version", dest="kver")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    root, kver = (args.root, args.kver) if args.root and args.kver else fixture_root()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC / "mkosi_initrd")], check=True)
    common = ["--root", str(root), "-k", kver, "--generic"]
    times: dict[str, list[float]] = {"sysext": [], "base": []}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sshd"
        for _ in range(args.runs):
            times["sysext"].append(run(["sysext", "sshd", *common, "--package", "openssh-server",
                                        "--format", "directory", "-o", str(out)]))  # fmt: skip
            times["base"].append(run(["build", *common, "--no-cache", "-o", str(Path(tmp) / "initrd")]))
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and not p.is_symlink())
        count = sum(1 for p in out.rglob("*") if not p.is_dir())
    for name, t in times.items():
        print(f"{name}: min {min(t):.2f}s median {statistics.median(t):.2f}s ({len(t)} runs)")
    print(f"ratio sysext/base build (min): {min(times['sysext']) / min(times['base']):.2f}")
    verdict = "met" if min(times["sysext"]) < TARGET else "NOT met"
    print(f"target {TARGET} s for the sysext: {verdict}")
    print(f"extension: {count} files, {size / 1e6:.2f} MB in regular files (uncompressed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
