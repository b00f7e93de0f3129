"""Entries → newc cpio → compressor → atomically replaced file.

Optional early segments (the uncompressed microcode cpio) are written first, uncompressed:
the kernel looks for microcode only in a leading plain cpio, then unpacks every following
(compressed) segment into the same rootfs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.image.atomic import MODE, atomic_write
from mkosi_initrd.image.compress import compressor
from mkosi_initrd.image.cpio import CpioStats, write_cpio
from mkosi_initrd.plan.model import Entry


@dataclass(frozen=True)
class ImageStats:
    path: Path
    size: int  # bytes on disk
    cpio: CpioStats  # the main (compressed) archive
    early_bytes: int  # bytes of leading uncompressed segments


def write_initrd(
    entries: Iterable[Entry],
    output: Path,
    *,
    compression: str = "zstd",
    level: int | None = None,
    mtime: int = 0,
    early: Sequence[bytes] = (),
    mode: int = MODE,
) -> ImageStats:
    with atomic_write(output, mode) as f:
        for segment in early:
            f.write(segment)
        early_bytes = sum(len(s) for s in early)
        with compressor(f, compression, level) as z:
            stats = write_cpio(z, entries, mtime=mtime)
        f.flush()
        size = f.tell()
    return ImageStats(Path(output), size, stats, early_bytes)
