#!/usr/bin/env python3
"""Same boot coverage? Build host-only initrds with ours and dracut on this machine, and boot each
on a root like this machine's own (ext4 on a virtio disk, found by UUID) in QEMU/TCG. Prints the
size, the size uncompressed and recompressed with zstd -3 (our default level; dracut uses 15), and
whether the guest reached the root's marker. Sizes are only comparable between images that boot.

    bench/hostonly_coverage.py [-k KVER] [--timeout S] [--dracut-add-drivers "virtio_blk ..."]
                               [--dracut-same-modules]

`--dracut-add-drivers` adds dracut's host-only with those drivers, to see what it needs to boot this
machine when it cannot probe it (a container without /proc/modules falls back to a set of input and
watchdog drivers, no disk driver). `--dracut-same-modules` adds dracut's host-only with exactly our
image's modules (`--drivers`: those and their dependencies, instead of dracut's own choice) and its
crypt module: the same boot coverage as ours, so the sizes compare user space alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "src")]

from benchkernel import bench_kernel  # noqa: E402
from boot import disks  # noqa: E402
from boot.qemu import boot  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
DRACUT_HOSTONLY = ["dracut", "-q", "--hostonly", "--zstd", "--force"]


def our_modules(kver: str) -> list[str]:
    cmd = [sys.executable, "-m", "mkosi_initrd", "plan", "--json", "-k", kver]
    plan = json.loads(subprocess.run(cmd, check=True, env=ENV, capture_output=True, text=True).stdout)
    return [m["name"] for m in plan["modules"]]


def recompressed(image: Path) -> tuple[int, int]:
    """(uncompressed size, size at zstd -3) of a one-segment zstd initrd."""
    raw = subprocess.run(["zstd", "-dc", str(image)], check=True, capture_output=True).stdout
    level3 = subprocess.run(["zstd", "-q", "-3", "-c"], input=raw, check=True, capture_output=True).stdout
    return len(raw), len(level3)


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Image name → build command (the output path is appended)."""
    k = args.kver
    out = {
        "ours host-only": [
            sys.executable,
            "-m",
            "mkosi_initrd",
            "--no-cache",
            "--no-microcode",
            "-k",
            k,
            "-o",
        ],
        "dracut host-only": [*DRACUT_HOSTONLY, "--kver", k],
    }
    if args.dracut_add_drivers:
        out["dracut host-only + drivers"] = [
            *DRACUT_HOSTONLY,
            "--add-drivers",
            args.dracut_add_drivers,
            "--kver",
            k,
        ]
    if args.dracut_same_modules:
        same = " ".join(our_modules(k))
        out["dracut host-only + our modules"] = [
            *DRACUT_HOSTONLY,
            "--add",
            "crypt",
            "--drivers",
            same,
            "--kver",
            k,
        ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--kver", help="kernel version (default: the tests' kernel, the newest installed)")
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--dracut-add-drivers", default="")
    ap.add_argument("--dracut-same-modules", action="store_true")
    args = ap.parse_args()
    host = bench_kernel(args.kver)
    args.kver, kernel = host.kver, host.image
    root = disks.marker_root("ext4")
    cmdline = f"root=UUID={disks.ROOT_UUID} ro"
    with tempfile.TemporaryDirectory(prefix="mkosi-initrd-coverage-") as tmp:
        for i, (name, cmd) in enumerate(commands(args).items()):
            image = Path(tmp) / f"initrd{i}"
            subprocess.run([*cmd, str(image)], check=True, env=ENV, stdout=subprocess.DEVNULL)
            result = boot(kernel, image, [root], cmdline, timeout=args.timeout, name=name.replace(" ", "-"))
            outcome = f"reached the root in {result.seconds:.1f} s" if result.passed else result.reason
            raw, level3 = recompressed(image)
            print(
                f"{name:32} {image.stat().st_size / 1e6:5.1f} MB ({raw / 1e6:5.1f} MB uncompressed, "
                f"{level3 / 1e6:5.1f} MB at zstd -3)  {outcome}  ({result.log_path})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
