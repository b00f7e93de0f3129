"""Benchmark: module selection + closure + firmware for the generic list on a real kernel (target < 0.3 s).

Also measures the choices documented in the code:
- .modinfo read: minimal struct walk (modinfo.py) vs pyelftools, on the selected modules;
- index regeneration with depmod over a symlink tree (kernel/depmod.py);
- compressed modules: storing .ko.xz as shipped vs decompressing once, inside a zstd-3 image.

    .venv/bin/python bench/bench_modules.py [--root /] [--kver KVER]   (default: the tests' kernel)
"""

from __future__ import annotations

import argparse
import io
import lzma
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from benchkernel import bench_kernel  # noqa: E402
from mkosi_initrd.config.model import Config  # noqa: E402
from mkosi_initrd.kernel.depmod import regenerate  # noqa: E402
from mkosi_initrd.kernel.firmware import FirmwarePart, select_firmware  # noqa: E402
from mkosi_initrd.kernel.index import load_index  # noqa: E402
from mkosi_initrd.kernel.modinfo import modinfo_section  # noqa: E402
from mkosi_initrd.kernel.modules import firmware_wants  # noqa: E402
from mkosi_initrd.kernel.selection import Selection, select_modules  # noqa: E402

T = TypeVar("T")


def timed(fn: Callable[[], T], runs: int = 5) -> tuple[float, T]:
    times = []
    result = fn()  # warm-up: page cache and imports, as on a second kernel-install run
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/"))
    ap.add_argument("--kver")
    args = ap.parse_args()
    kver = args.kver if args.root != Path("/") else bench_kernel(args.kver).kver
    if not kver:
        sys.exit("--kver is needed with --root")
    config = Config(root=args.root, kver=kver, generic=True)
    moddir = args.root / "usr/lib/modules" / kver

    def select() -> tuple[Selection, FirmwarePart]:
        index = load_index(moddir, kver)
        selection = select_modules(config, index)
        fw = select_firmware(config.root, kver, firmware_wants(index, selection), config.firmware)
        return selection, fw

    t_total, result = timed(select)
    selection, fw = result
    mods = sorted(selection.modules)
    print(f"kernel {kver}: generic list → {len(mods)} modules, {len(fw.choices)} firmware files")
    t_index, index = timed(lambda: load_index(moddir, kver))
    print(f"  index load (modules.dep/alias/softdep/builtin): {t_index * 1000:.1f} ms")
    verdict = "OK" if t_total < 0.3 else "OVER TARGET"
    print(f"selection + closure + firmware: {t_total * 1000:.1f} ms (target < 300 ms: {verdict})")

    paths = [moddir / index.paths[m] for m in mods]
    blobs = [p.read_bytes() for p in paths]
    t_struct, _ = timed(lambda: [modinfo_section(b) for b in blobs])
    try:
        from elftools.elf.elffile import ELFFile

        def elftools_read() -> list[bytes]:
            return [ELFFile(io.BytesIO(b)).get_section_by_name(".modinfo").data() for b in blobs]

        t_elf, _ = timed(elftools_read, runs=1)
        print(
            f".modinfo of {len(blobs)} modules: struct walk {t_struct * 1000:.1f} ms, "
            f"pyelftools {t_elf * 1000:.1f} ms ({t_elf / t_struct:.0f}x)"
        )
    except ImportError:
        print(f".modinfo of {len(blobs)} modules: struct walk {t_struct * 1000:.1f} ms (no pyelftools)")

    sources: list[tuple[str, Path | bytes]] = [(index.paths[m], p) for m, p in zip(mods, paths, strict=True)]
    t_depmod, files = timed(lambda: regenerate(moddir, kver, sources), runs=3)
    print(
        f"index regeneration (depmod, {len(sources)} symlinks): {t_depmod * 1000:.1f} ms, {len(files)} files"
    )

    # Compressed modules, as Fedora ships them (xz, crc32, 1 MiB dictionary like kbuild's modules_install).
    xz_filters = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}]
    xz = [lzma.compress(b, check=lzma.CHECK_CRC32, filters=xz_filters) for b in blobs]
    raw_total = sum(map(len, blobs))
    t_dec = timed(lambda: [lzma.decompress(x) for x in xz], runs=1)[0]
    for label, data, extra in (
        ("as shipped (.ko.xz)", b"".join(xz), 0.0),
        ("decompressed once (.ko)", b"".join(blobs), t_dec),
    ):
        start = time.perf_counter()
        out = zstandard.ZstdCompressor(level=3, threads=-1).compress(data)
        t_zstd = time.perf_counter() - start
        print(
            f"  {label:26s}: image part {len(out) / 1e6:6.2f} MB (raw {raw_total / 1e6:.1f} MB), "
            f"decompress {extra * 1000:6.0f} ms + zstd-3 {t_zstd * 1000:5.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
