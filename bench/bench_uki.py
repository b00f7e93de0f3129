"""How much UKI assembly adds to a build: build_uki() on the installed kernel and initrd, against the
objcopy assembly dracut --uefi does (same stub, kernel, initrd and command line), in the same run.

    /work/venv/bin/python bench/bench_uki.py [--runs N] [--initrd PATH] [--kernel PATH]

Goal: under 0.3 s unsigned (median; output fsynced like a real build).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mkosi_initrd import uki
from mkosi_initrd.config import Config

GOAL_SECONDS = 0.3
CMDLINE = "root=UUID=6b2a3c1e-5d4f-4e7a-9b8c-0d1e2f3a4b5c ro quiet"


def median_seconds(fn: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def objcopy_uki(options: uki.UkiOptions, initrd: Path, tmp: Path, out: Path) -> None:
    """dracut --uefi's way: objcopy --add-section at fixed VMAs."""
    cmdline = tmp / "cmdline.txt"
    cmdline.write_bytes(options.cmdline.encode() + b"\0")
    uname = tmp / "uname.txt"
    uname.write_text(options.uname)
    sections = [(".osrel", options.os_release, 0x20000), (".cmdline", cmdline, 0x30000),
                (".uname", uname, 0x40000), (".linux", options.kernel_image, 0x2000000),
                (".initrd", initrd, 0x3000000)]  # fmt: skip
    cmd = ["objcopy"]
    for name, path, vma in sections:
        cmd += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={vma:#x}"]
    subprocess.run([*cmd, str(options.stub), str(out)], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel", type=Path)
    ap.add_argument("--initrd", type=Path)
    args = ap.parse_args()
    kernel = args.kernel or max(Path("/boot").glob("vmlinuz-*"))
    kver = uki.detect_uname(kernel.read_bytes()) or ""
    initrd = args.initrd or Path(f"/boot/initrd.img-{kver}")
    config = Config(root=Path("/"), kver=kver)

    with tempfile.TemporaryDirectory(prefix="bench-uki-", dir="/var/tmp") as d:
        tmp = Path(d)
        key, cert = tmp / "db.key", tmp / "db.crt"
        subprocess.run(
            ["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=bench/", "-keyout", key, "-out", cert],
            check=True, capture_output=True,
        )  # fmt: skip
        start = time.perf_counter()
        options = uki.uki_options(config, kernel_image=kernel, cmdline=CMDLINE, environ={})
        resolve = time.perf_counter() - start
        signed_options = uki.uki_options(
            config,
            kernel_image=kernel,
            cmdline=CMDLINE,
            secureboot_private_key=key,
            secureboot_certificate=cert,
            environ={},
        )
        out = tmp / "uki.efi"
        ours = median_seconds(lambda: uki.build_uki(config, options, [initrd], out), args.runs)
        size = out.stat().st_size
        signed = median_seconds(lambda: uki.build_uki(config, signed_options, [initrd], out), args.runs)
        objcopy = median_seconds(lambda: objcopy_uki(options, initrd, tmp, tmp / "objcopy.efi"), args.runs)

    mb = {p: p.stat().st_size / 1e6 for p in (kernel, initrd)}
    print(f"kernel {kernel} ({mb[kernel]:.1f} MB), initrd {initrd} ({mb[initrd]:.1f} MB)")
    print(f"UKI {size / 1e6:.1f} MB, median of {args.runs} runs:")
    print(f"  resolve options (stub, cmdline, uname) {resolve:.3f} s")
    print(f"  build_uki unsigned                     {ours:.3f} s")
    print(f"  build_uki signed (sbsign)              {signed:.3f} s")
    print(
        f"  objcopy assembly (dracut --uefi's way) {objcopy:.3f} s  -> ours/objcopy = {ours / objcopy:.2f}"
    )
    verdict = "PASS" if resolve + ours < GOAL_SECONDS else "FAIL"
    print(f"goal: UKI assembly adds < {GOAL_SECONDS} s unsigned: {resolve + ours:.3f} s {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
