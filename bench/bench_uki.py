"""How much UKI assembly adds to a build: build_uki() on the installed kernel and initrd, against the
objcopy assembly dracut --uefi does (same stub, kernel, initrd and command line), in the same run; then
whole host builds `mkosi-initrd --format cpio` vs `--format uki` (the difference is what the UKI adds).

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

from benchkernel import bench_kernel
from mkosi_initrd.config.model import Config
from mkosi_initrd.uki.assemble import build_uki
from mkosi_initrd.uki.options import UkiInputs, UkiOptions, detect_uname, uki_options

GOAL_SECONDS = 0.3
CMDLINE = "root=UUID=6b2a3c1e-5d4f-4e7a-9b8c-0d1e2f3a4b5c ro quiet"


def median_seconds(fn: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def objcopy_uki(options: UkiOptions, initrd: Path, tmp: Path, out: Path) -> None:
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


def pipeline_seconds(kver: str, kernel: Path, tmp: Path, runs: int) -> tuple[float, float]:
    """Median seconds of whole host builds, cpio and uki interleaved so that load spikes hit both."""
    from mkosi_initrd import cli

    def args(fmt: str) -> list[str]:
        extra = ["--kernel-image", str(kernel)] if fmt == "uki" else []
        return ["--format", fmt, "-k", kver, "-o", str(tmp / f"pipeline.{fmt}"), "--no-cache", *extra]

    times: dict[str, list[float]] = {"cpio": [], "uki": []}
    for _ in range(runs):
        for fmt in times:
            start = time.perf_counter()
            if cli.main([*args(fmt), "--cmdline", CMDLINE]) != 0:
                raise RuntimeError(f"mkosi-initrd --format {fmt} failed")
            times[fmt].append(time.perf_counter() - start)
    return statistics.median(times["cpio"]), statistics.median(times["uki"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel", type=Path)
    ap.add_argument("--initrd", type=Path)
    args = ap.parse_args()
    kernel = args.kernel or bench_kernel().image
    kver = detect_uname(kernel.read_bytes()) or ""
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
        options = uki_options(config, UkiInputs(kernel_image=kernel, cmdline=CMDLINE), environ={})
        resolve = time.perf_counter() - start
        signed_options = uki_options(
            config,
            UkiInputs(
                kernel_image=kernel, cmdline=CMDLINE, secureboot_private_key=key, secureboot_certificate=cert
            ),
            environ={},
        )
        out = tmp / "uki.efi"
        ours = median_seconds(lambda: build_uki(config, options, [initrd], out), args.runs)
        size = out.stat().st_size
        signed = median_seconds(lambda: build_uki(config, signed_options, [initrd], out), args.runs)
        objcopy = median_seconds(lambda: objcopy_uki(options, initrd, tmp, tmp / "objcopy.efi"), args.runs)
        cpio_build, uki_build = pipeline_seconds(kver, kernel, tmp, args.runs)

    mb = {p: p.stat().st_size / 1e6 for p in (kernel, initrd)}
    print(f"kernel {kernel} ({mb[kernel]:.1f} MB), initrd {initrd} ({mb[initrd]:.1f} MB)")
    print(f"UKI {size / 1e6:.1f} MB, median of {args.runs} runs:")
    print(f"  resolve options (stub, cmdline, uname) {resolve:.3f} s")
    print(f"  build_uki unsigned                     {ours:.3f} s")
    print(f"  build_uki signed (sbsign)              {signed:.3f} s")
    print(
        f"  objcopy assembly (dracut --uefi's way) {objcopy:.3f} s  -> ours/objcopy = {ours / objcopy:.2f}"
    )
    print(f"  mkosi-initrd build --format cpio        {cpio_build:.3f} s")
    adds = uki_build - cpio_build
    print(f"  mkosi-initrd build --format uki         {uki_build:.3f} s  -> adds {adds:.3f} s")
    added = max(resolve + ours, adds)
    verdict = "PASS" if added < GOAL_SECONDS else "FAIL"
    print(f"goal: UKI assembly adds < {GOAL_SECONDS} s to a build (unsigned): {added:.3f} s {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
