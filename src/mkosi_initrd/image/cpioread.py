"""Read an initrd the way the kernel does: a sequence of segments, each a plain newc cpio or a
compressed stream (zstd, xz, gzip, bzip2, lzma) holding one or more cpio archives, with NUL
padding allowed between them.

Segment boundaries matter (early microcode must be a leading plain cpio), so this walks the
file itself instead of handing it to a general archive reader, which stops at the first trailer.
"""

from __future__ import annotations

import bz2
import lzma
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import zstandard

from mkosi_initrd.errors import InitrdError

_HDR = 110
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    name: str
    mode: int
    size: int
    nlink: int = 1
    ino: int = 0
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)
    linkto: str = ""

    @property
    def path(self) -> str:
        name = self.name[2:] if self.name.startswith("./") else self.name
        return "/" + name.lstrip("/") if name not in (".", "") else "/"


@dataclass(frozen=True)
class Segment:
    offset: int
    length: int  # bytes in the file
    compression: str  # "none", "zstd", "xz", "gzip", "bzip2", "lzma"
    uncompressed: int
    members: tuple[Member, ...]


@dataclass
class _Parser:
    """Incremental newc parser: feed() decompressed bytes, members accumulate."""

    want: Callable[[str], bool]
    members: list[Member] = field(default_factory=list)
    contents: dict[str, bytes] = field(default_factory=dict)
    buf: bytearray = field(default_factory=bytearray)
    total: int = 0
    _skip: int = 0  # data bytes still to drop (plus padding)
    _collect: tuple[str, int] | None = None  # (name, bytes wanted) of a member being captured
    _collected: bytearray = field(default_factory=bytearray)
    _pending: Member | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        self.total += len(data)
        while self._step():
            pass

    def _step(self) -> bool:
        if self._skip:
            n = min(self._skip, len(self.buf))
            if self._collect is not None:
                want = self._collect[1] - len(self._collected)
                self._collected += self.buf[: min(n, want)]
            del self.buf[:n]
            self._skip -= n
            if not self._skip:
                self._finish_member()
            return bool(self.buf)
        # Between members and archives: NUL padding is allowed (the kernel skips it too).
        i = 0
        while i < len(self.buf) and self.buf[i] == 0:
            i += 1
        if i:
            del self.buf[:i]
        if len(self.buf) < _HDR:
            return False
        magic = bytes(self.buf[:6])
        if magic not in (b"070701", b"070702"):
            raise InitrdError(
                f"not a newc cpio archive (found {magic!r} after {self.total - len(self.buf)} B)"
            )
        try:
            f = [int(self.buf[6 + 8 * k : 14 + 8 * k], 16) for k in range(13)]
        except ValueError as e:
            raise InitrdError("corrupt newc cpio header") from e
        ino, mode, uid, gid, nlink, mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, _check = f
        name_end = _HDR + namesize
        data_start = name_end + (-name_end % 4)
        if len(self.buf) < data_start:
            return False
        name = bytes(self.buf[_HDR : name_end - 1]).decode(errors="surrogateescape")
        del self.buf[:data_start]
        if name == "TRAILER!!!":
            return bool(self.buf)
        m = Member(name, mode, size, nlink, ino, mtime, uid, gid, (rmaj, rmin))
        self._pending = m
        self._skip = size + (-size % 4)
        is_link = stat.S_ISLNK(mode)
        if is_link or (size and self.want(m.path)):
            self._collect = (name, size)
            self._collected = bytearray()
        if not self._skip:
            self._finish_member()
        return True

    def _finish_member(self) -> None:
        m = self._pending
        assert m is not None
        if self._collect is not None:
            data = bytes(self._collected)
            if stat.S_ISLNK(m.mode):
                m = Member(
                    m.name, m.mode, m.size, m.nlink, m.ino, m.mtime, m.uid, m.gid, m.rdev, data.decode()
                )
            else:
                self.contents[m.path] = data
        self.members.append(m)
        self._pending = None
        self._collect = None

    def check_complete(self, where: str) -> None:
        if self._skip or self._pending or any(self.buf):
            raise InitrdError(f"{where}: truncated cpio archive")


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes) -> bytes: ...


def _decompressor(kind: str) -> _Decompressor:
    if kind == "zstd":
        d: _Decompressor = zstandard.ZstdDecompressor().decompressobj()
        return d
    if kind in ("xz", "lzma"):
        return lzma.LZMADecompressor(lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
    if kind == "gzip":
        return zlib.decompressobj(wbits=31)
    return bz2.BZ2Decompressor()


_MAGICS = (
    (b"070701", "none"),
    (b"070702", "none"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzo"),
)


def detect(head: bytes) -> str | None:
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return None


def _segment(data: memoryview, offset: int, kind: str, want: Callable[[str], bool]) -> tuple[Segment, dict]:
    parser = _Parser(want)
    where = f"segment at offset {offset} ({kind})"
    if kind == "none":
        # A plain cpio ends at its trailer: feed header by header until the parser is idle after it.
        end = _plain_end(data, offset)
        parser.feed(bytes(data[offset:end]))
        length = end - offset
    elif kind in ("lz4", "lzo"):
        raise InitrdError(
            f"{where}: {kind} segments cannot be read", hint="recompress with zstd, xz or gzip"
        )
    else:
        d = _decompressor(kind)
        pos = offset
        while not d.eof:
            if pos >= len(data):
                raise InitrdError(f"{where}: compressed stream is truncated")
            chunk = bytes(data[pos : pos + _CHUNK])
            pos += len(chunk)
            try:
                parser.feed(d.decompress(chunk))
            except (lzma.LZMAError, zlib.error, OSError, zstandard.ZstdError) as e:
                raise InitrdError(f"{where}: {e}") from e
        length = pos - offset - len(d.unused_data)
    parser.check_complete(where)
    seg = Segment(offset, length, kind, parser.total, tuple(parser.members))
    return seg, parser.contents


def _plain_end(data: memoryview, offset: int) -> int:
    """End offset (after the trailer and its padding) of the plain newc archive at `offset`."""
    pos = offset
    while True:
        if bytes(data[pos : pos + 6]) not in (b"070701", b"070702") or pos + _HDR > len(data):
            raise InitrdError(f"corrupt or truncated plain cpio at offset {pos}")
        size = int(bytes(data[pos + 54 : pos + 62]), 16)
        namesize = int(bytes(data[pos + 94 : pos + 102]), 16)
        name = bytes(data[pos + _HDR : pos + _HDR + namesize - 1])
        pos += _HDR + namesize
        pos += -pos % 4
        pos += size + (-size % 4)
        if name == b"TRAILER!!!":
            return min(pos, len(data))


def read_segments(path: Path, want: Callable[[str], bool] = lambda p: False) -> tuple[list[Segment], dict]:
    """All segments of the initrd at `path`, and the contents of members for which `want(path)`."""
    raw = path.read_bytes()
    data = memoryview(raw)
    segments: list[Segment] = []
    contents: dict[str, bytes] = {}
    pos = 0
    while True:
        while pos < len(data) and data[pos] == 0:
            pos += 1
        if pos >= len(data):
            break
        kind = detect(bytes(data[pos : pos + 8]))
        if kind is None:
            raise InitrdError(
                f"{path}: unknown data at offset {pos} ({bytes(data[pos : pos + 8]).hex()})",
                hint="not an initrd, or a compression this tool does not know",
            )
        seg, got = _segment(data, pos, kind, want)
        segments.append(seg)
        contents.update(got)
        pos = seg.offset + seg.length
    if not segments:
        raise InitrdError(f"{path} is empty")
    return segments, contents


def iter_members(segments: list[Segment]) -> Iterator[Member]:
    for s in segments:
        yield from s.members
