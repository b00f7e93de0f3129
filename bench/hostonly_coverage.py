#!/usr/bin/env python3
"""Same boot coverage? Build host-only initrds with ours and dracut on this machine, and boot each
on a root like this machine's own (ext4 on a virtio disk, found by UUID) in QEMU/TCG. Prints the
size and whether the guest reached the root's marker. Sizes are only comparable between images
that boot.

    bench/hostonly_coverage.py [-k KVER] [--timeout S] [--dracut-add-drivers "virtio_blk ..."]

`--dracut-add-drivers` builds a third image, dracut's host-only with those drivers added, to see
what dracut's host-only needs to boot this machine when it cannot probe it (a container without
/proc/modules falls back to a set of input and watchdog drivers, no disk driver).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "src")]

from boot import disks  # noqa: E402
from boot.qemu import boot  # noqa: E402


def build(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--kver", default=os.uname().release)
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--dracut-add-drivers", default="")
    args = ap.parse_args()
    kernel = Path(f"/boot/vmlinuz-{args.kver}")
    root = disks.marker_root("ext4")
    cmdline = f"root=UUID={disks.ROOT_UUID} ro"
    with tempfile.TemporaryDirectory(prefix="mkosi-initrd-coverage-") as tmp:
        images = {
            "ours host-only": (Path(tmp) / "ours", [sys.executable, "-m", "mkosi_initrd", "--no-cache"]),
            "dracut host-only": (Path(tmp) / "dracut", ["dracut", "-q", "--hostonly", "--zstd", "--force"]),
        }
        if args.dracut_add_drivers:
            images["dracut host-only + drivers"] = (
                Path(tmp) / "dracut-drivers",
                [
                    "dracut",
                    "-q",
                    "--hostonly",
                    "--zstd",
                    "--force",
                    "--add-drivers",
                    args.dracut_add_drivers,
                ],
            )
        for name, (out, cmd) in images.items():
            if name.startswith("ours"):
                build([*cmd, "-k", args.kver, "-o", str(out)])
            else:
                build([*cmd, "--kver", args.kver, str(out)])
            result = boot(kernel, out, [root], cmdline, timeout=args.timeout, name=name.replace(" ", "-"))
            outcome = f"reached the root in {result.seconds:.1f} s" if result.passed else result.reason
            print(
                f"{name:28} {out.stat().st_size / 1e6:6.1f} MB  {outcome}  ({result.log_path})", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
