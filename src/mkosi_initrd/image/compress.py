"""Streaming compressors the kernel can unpack an initramfs segment from.

zstd (default, level 3, with a content checksum the kernel verifies), xz (CRC32 check: the
kernel's decoder does not do CRC64 or SHA-256), gzip (mtime 0 and no file name in the header,
so the output is reproducible) or none.
"""

from __future__ import annotations

import gzip
import lzma
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

import zstandard

from mkosi_initrd.config.settings import COMPRESSIONS
from mkosi_initrd.errors import InitrdError

DEFAULT_LEVEL = {"zstd": 3, "xz": 6, "gzip": 6, "none": 0}
# zstd stops at 19: levels 20-22 need windows the kernel's decompressor may refuse (> 128 MiB with --long).
LEVELS = {"zstd": range(1, 20), "xz": range(0, 10), "gzip": range(1, 10), "none": range(0, 1)}
# The kernel's xz decoder handles only LZMA2 with a CRC32 (or no) check; a 1 MiB dictionary keeps
# its memory use small, as the kernel's own scripts do.
_XZ_DICT = 1 << 20


def resolve_level(kind: str, level: int | None) -> int:
    if kind not in COMPRESSIONS:
        raise InitrdError(f"unknown compression {kind!r}", hint=f"use one of {', '.join(COMPRESSIONS)}")
    if level is None:
        return DEFAULT_LEVEL[kind]
    allowed = LEVELS[kind]
    if level not in allowed:
        raise InitrdError(
            f"compression level {level} is out of range for {kind}",
            hint=f"use {allowed.start}..{allowed.stop - 1}",
        )
    return level


@contextmanager
def compressor(out: BinaryIO, kind: str = "zstd", level: int | None = None) -> Iterator[BinaryIO]:
    """A writable stream that compresses into `out`; the frame is finished on a clean exit.

    `out` itself is left open (it belongs to the caller, e.g. an atomic output file).
    """
    lvl = resolve_level(kind, level)
    if kind == "none":
        yield out
        return
    if kind == "zstd":
        # Always zstd's multithreaded mode, with as many workers as there are CPUs: its output
        # does not depend on the number of workers (only on MT mode itself), so the bytes stay
        # the same on every machine while the compression runs on all cores (up to 8: an initrd is
        # ~15 jobs of 8 MB, and each worker holds a job's buffers).
        threads = max(1, min(8, len(os.sched_getaffinity(0))))
        cctx = zstandard.ZstdCompressor(level=lvl, write_checksum=True, threads=threads)
        with cctx.stream_writer(out, closefd=False) as zw:
            yield cast(BinaryIO, zw)
        return
    if kind == "xz":
        filters = [{"id": lzma.FILTER_LZMA2, "preset": lvl, "dict_size": _XZ_DICT}]
        with lzma.LZMAFile(out, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters) as xw:
            yield cast(BinaryIO, xw)
        return
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=lvl, mtime=0) as gw:
        yield cast(BinaryIO, gw)
