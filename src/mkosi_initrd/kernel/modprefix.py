"""The `.modinfo` of a compressed module from the start of its decoded stream, not the whole module.

The section headers that say where `.modinfo` is sit at the end of the ELF file, and a `.ko.xz` is
one xz block: reading them means decoding everything. But `.modinfo` lies near the start (after
`.text` and the symbol tables' small sections): measured on Debian 13's 6.12 kernel (the 276 modules
of a generic build), it ends at a median 11% of the decoded module (max 75%), and decoding up to
there takes 0.15 s against 0.83 s for the whole modules.

So the stream is decoded in chunks until `.modinfo` is recognised by its content: modpost puts
`vermagic=` and `name=` in every module's `.modinfo`; the section is the run of `key=value` strings
(and NUL padding) around `vermagic=`. Every `.modinfo` string has that form, so the run cannot stop
inside the section; the neighbouring sections are binary (zero-filled until relocated). A module
where this is not found (no `name=` of this module in the run) is decoded whole and read by its
section headers (modinfo.py). tests/test_modprefix.py holds both readings equal on every module of
the trixie kernel.
"""

from __future__ import annotations

import io
import lzma
import re
import zlib
from collections.abc import Iterable, Iterator

import zstandard

CHUNK = 16 * 1024
_VERMAGIC = b"\0vermagic="
_KEY = re.compile(rb"[A-Za-z0-9_]+=")
_USED_KEY = re.compile(rb"(?:depends|softdep|weakdep|firmware|alias|license|description|author)=")
_NON_NUL = re.compile(rb"[^\0]")
_BLOCK = 4096
_ZEROS = bytes(_BLOCK)
# How libkmod tells a compressed module (by magic, not by file name); modinfo.py uses them too.
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def decoded_chunks(data: bytes) -> Iterator[bytes]:
    """A compressed module's ELF bytes, CHUNK at a time (recognised by magic, like libkmod)."""
    if data.startswith(XZ_MAGIC):
        xz = lzma.LZMADecompressor()
        out = xz.decompress(data, max_length=CHUNK)
        while True:
            yield out
            if xz.eof:
                return
            if xz.needs_input:
                raise EOFError("truncated xz stream")
            out = xz.decompress(b"", max_length=CHUNK)
    elif data.startswith(ZSTD_MAGIC):
        # Module zstd frames may lack a content size: a stream reader does not need one.
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            while out := reader.read(CHUNK):
                yield out
    elif data.startswith(GZIP_MAGIC):
        gz = zlib.decompressobj(wbits=31)
        out = gz.decompress(data, CHUNK)
        while True:
            yield out
            if gz.eof:
                return
            if not gz.unconsumed_tail:
                raise EOFError("truncated gzip stream")
            out = gz.decompress(gz.unconsumed_tail, CHUNK)
    else:
        yield data


def modinfo_run(buf: bytes | bytearray, complete: bool) -> bytes | None:
    """The `key=value` run around `vermagic=` in the decoded prefix `buf`; None while it may go on
    past the end of `buf` (or no `vermagic=` is in it yet), unless `complete` (the whole module).

    NUL runs inside the section (padding) and the zero-filled neighbours are stepped over with
    C-speed scans: a walk string by string spent 3x the xz decoding itself on those NULs."""
    at = buf.find(_VERMAGIC)
    if at < 0:
        return None
    start, head = _run_start(buf, at)
    end = _run_end(buf, at + 1, complete)
    if end is None:
        return None
    # The zero padding of the neighbouring sections is not the section's.
    return head + bytes(buf[start:end]).strip(b"\0") + b"\0"


def _run_start(buf: bytes | bytearray, at: int) -> tuple[int, bytes]:
    """Where the run ending at the NUL `buf[at]` starts, going back over `key=value` strings and
    NULs; and the head of a section glued to the previous one (see below)."""
    start = pos = at  # buf[pos] is the NUL after the string before it
    while pos > 0:
        if buf[pos - 1] == 0:
            pos = _nuls_before(buf, pos)
            continue
        prev = buf.rfind(b"\0", 0, pos)
        piece = buf[prev + 1 : pos]
        if not _KEY.match(piece):
            # The section may start right after the previous one's last byte, with no NUL between:
            # its first string is this piece's tail, from a key this project reads.
            if m := _USED_KEY.search(piece):
                return start, bytes(piece[m.start() :]) + b"\0"
            return start, b""
        start = prev + 1
        pos = max(prev, 0)
    return start, b""


def _nuls_before(buf: bytes | bytearray, pos: int) -> int:
    """The start of the run of NULs that ends at `pos`."""
    while pos >= _BLOCK and buf[pos - _BLOCK : pos] == _ZEROS:
        pos -= _BLOCK
    lo = max(0, pos - _BLOCK)
    return lo + len(buf[lo:pos].rstrip(b"\0"))


def _run_end(buf: bytes | bytearray, pos: int, complete: bool) -> int | None:
    """The end of the run of `key=value` strings and NULs from `pos`; None if it may go on past the
    end of `buf` and `buf` is not `complete`."""
    end = pos
    while True:
        m = _NON_NUL.search(buf, pos)
        if m is None:  # NULs up to the end
            return end if complete else None
        pos = m.start()
        nul = buf.find(b"\0", pos)
        if nul < 0:  # the last string may be cut off: decode more
            if not complete:
                return None
            nul = len(buf)
        if not _KEY.match(buf, pos, nul):
            return end
        end = pos = nul + 1


def prefix_modinfo(data: bytes, name: str) -> bytes | None:
    """The raw `.modinfo` strings of the compressed module `data` named `name` (normalized), found in
    as little of its decoded stream as holds them; None if not found (read it by the headers)."""
    return modinfo_from(decoded_chunks(data), name)


def modinfo_from(chunks: Iterable[bytes], name: str) -> bytes | None:
    """`prefix_modinfo` over decoded chunks: consumes them only until the run is complete."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        run = modinfo_run(buf, complete=False)
        if run is not None:
            return run if _names(run, name) else None
    run = modinfo_run(buf, complete=True)
    return run if run is not None and _names(run, name) else None


def _names(run: bytes, name: str) -> bool:
    """The run is this module's `.modinfo`: it holds `name=` with the module's name."""
    for piece in run.split(b"\0"):
        if piece.startswith(b"name="):
            return piece[5:].decode(errors="replace").replace("-", "_") == name
    return False
