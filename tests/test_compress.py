"""Compressors: standard streams (checked with the command-line tools), kernel-friendly settings."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import zstandard

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.compress import compressor, resolve_level

PAYLOAD = b"".join(b"line %d of an initrd\n" % i for i in range(20000))


def _compress(kind: str, level: int | None = None) -> bytes:
    buf = io.BytesIO()
    with compressor(buf, kind, level) as z:
        for i in range(0, len(PAYLOAD), 4096):
            z.write(PAYLOAD[i : i + 4096])
    assert not buf.closed  # the caller's stream stays open (it is the atomic output file)
    return buf.getvalue()


@pytest.mark.parametrize(("kind", "tool"), [("zstd", "zstd"), ("xz", "xz"), ("gzip", "gzip")])
def test_command_line_tools_decompress_our_streams(kind: str, tool: str) -> None:
    out = subprocess.run([tool, "-dc"], input=_compress(kind), capture_output=True, check=True).stdout
    assert out == PAYLOAD


def test_none_writes_the_bytes_unchanged() -> None:
    assert _compress("none") == PAYLOAD


def test_zstd_frames_carry_a_checksum_at_the_default_level_3() -> None:
    data = _compress("zstd")
    params = zstandard.get_frame_parameters(data)
    assert params.has_checksum
    assert data == _compress("zstd", 3)
    assert data != _compress("zstd", 1)


def test_xz_uses_crc32_which_the_kernel_decoder_supports(tmp_path: Path) -> None:
    f = tmp_path / "a.xz"
    f.write_bytes(_compress("xz"))
    info = subprocess.run(["xz", "--robot", "-lvv", str(f)], capture_output=True, check=True).stdout.decode()
    assert "\tCRC32\t" in info
    # The kernel's decoder allocates the dictionary: keep it at 1 MiB whatever the level.
    assert "--lzma2=dict=1MiB" in info


def test_gzip_output_is_reproducible_with_zero_mtime_and_no_name() -> None:
    data = _compress("gzip")
    assert data[4:8] == b"\0\0\0\0"  # MTIME
    assert data[3] & 0x08 == 0  # no FNAME
    assert data == _compress("gzip")


@pytest.mark.parametrize(
    ("kind", "level"), [("zstd", 0), ("zstd", 22), ("gzip", 10), ("xz", -1), ("lz4", None)]
)
def test_bad_levels_and_kinds_are_user_errors(kind: str, level: int | None) -> None:
    with pytest.raises(InitrdError):
        resolve_level(kind, level)


def test_an_exception_while_compressing_propagates() -> None:
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), compressor(buf, "zstd") as z:
        z.write(b"abc")
        raise RuntimeError("boom")


def test_zstd_bytes_do_not_depend_on_the_number_of_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import random

    rng = random.Random(7)
    words = [bytes(rng.randrange(97, 123) for _ in range(rng.randrange(2, 12))) for _ in range(5000)]
    data = b" ".join(rng.choice(words) for _ in range(4_000_000))  # ~25 MB: several zstd jobs
    outputs = set()
    for cpus in ({0}, {0, 1}, set(range(8))):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cpus=cpus: cpus)
        buf = io.BytesIO()
        with compressor(buf, "zstd") as z:
            for i in range(0, len(data), 1 << 20):
                z.write(data[i : i + (1 << 20)])
        outputs.add(buf.getvalue())
    assert len(outputs) == 1
    assert zstandard.ZstdDecompressor().decompressobj().decompress(outputs.pop()) == data
