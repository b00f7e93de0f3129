"""A small, deterministic newc ("070701") cpio writer.

Determinism is the point: entries are written sorted by path, inodes are renumbered from 1 in
that order, owners are 0:0 and every mtime is the same value (SOURCE_DATE_EPOCH or 0), so the
same entries always give the same bytes. Parent directories missing from the input are added
(mode 0755) because the kernel's unpacker does not create them.

Hardlinks: entries sharing a non-empty `Entry.hardlink` become one inode with nlink = group size.
The data is stored on the last member only (the GNU cpio convention): the kernel creates the
file at the first member and fills it at the last one, and GNU cpio and libarchive do the same.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.plan.model import Entry

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
DIR_MODE = stat.S_IFDIR | 0o755
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CpioStats:
    entries: int  # archive members, trailer excluded
    files: int  # regular files
    data_bytes: int  # file and symlink contents
    archive_bytes: int  # everything written


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def header(
    name: str, *, ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    """One newc header with its NUL-terminated name, padded to a multiple of 4 bytes."""
    encoded = os.fsencode(name) + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
    raw = MAGIC + b"".join(b"%08X" % v for v in fields) + encoded
    return raw + _pad(len(raw))


def archive_name(path: str) -> str:
    """Archive member name of an absolute initrd path: no leading slash, like cpio's own output."""
    name = path.strip("/")
    if not name or ".." in name.split("/"):
        raise InitrdError(f"invalid path {path!r} in the initrd plan")
    return name


def complete_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Sorted entries, with every missing parent directory added (mode 0755); duplicates rejected."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        name = archive_name(e.path)
        if name in by_path:
            raise InitrdError(f"{e.path} is planned twice ({by_path[name].origin} and {e.origin})")
        by_path[name] = e
    for name in list(by_path):
        parent = os.path.dirname(name)
        while parent and parent not in by_path:
            by_path[parent] = Entry(path="/" + parent, mode=DIR_MODE, origin="generated")
            parent = os.path.dirname(parent)
    return [by_path[name] for name in sorted(by_path, key=lambda n: os.fsencode(n))]


def _inodes(entries: Sequence[Entry]) -> tuple[list[int], dict[str, int], dict[str, int]]:
    """Inode per entry (one per hardlink group), group sizes, and the index of each group's last member."""
    inos: list[int] = []
    group_ino: dict[str, int] = {}
    group_size: dict[str, int] = {}
    group_last: dict[str, int] = {}
    next_ino = 1
    for i, e in enumerate(entries):
        if e.hardlink and stat.S_ISREG(e.mode):
            if e.hardlink not in group_ino:
                group_ino[e.hardlink] = next_ino
                next_ino += 1
            group_size[e.hardlink] = group_size.get(e.hardlink, 0) + 1
            group_last[e.hardlink] = i
            inos.append(group_ino[e.hardlink])
        else:
            inos.append(next_ino)
            next_ino += 1
    return inos, group_size, group_last


class CpioWriter:
    """Writes members to a binary stream; `finish()` writes the trailer."""

    def __init__(self, out: BinaryIO, *, mtime: int = 0) -> None:
        self.out = out
        self.mtime = mtime
        self.written = 0
        self.members = 0
        self.files = 0
        self.data_bytes = 0

    def _write(self, b: bytes) -> None:
        self.out.write(b)
        self.written += len(b)

    def add(
        self,
        name: str,
        *,
        ino: int,
        mode: int,
        nlink: int = 1,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        hdr = header(name, ino=ino, mode=mode, nlink=nlink, mtime=self.mtime, size=len(data), rdev=rdev)
        self._write(hdr)
        if data:
            self._write(data)
            self._write(_pad(len(data)))
        self.members += 1
        self.files += stat.S_ISREG(mode)
        self.data_bytes += len(data)

    def add_file(
        self, name: str, *, ino: int, mode: int, nlink: int, source: os.PathLike[str] | str
    ) -> None:
        """A regular file streamed from `source` (the size is taken when it is opened)."""
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._write(header(name, ino=ino, mode=mode, nlink=nlink, mtime=self.mtime, size=size))
            left = size
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise InitrdError(f"{source} shrank while it was being archived (as {name})")
                self._write(chunk)
                left -= len(chunk)
        self._write(_pad(size))
        self.members += 1
        self.files += 1
        self.data_bytes += size

    def finish(self) -> CpioStats:
        self._write(header(TRAILER, ino=0, mode=0, nlink=1, mtime=0, size=0))
        return CpioStats(self.members, self.files, self.data_bytes, self.written)


def _add_regular(w: CpioWriter, e: Entry, name: str, ino: int, nlink: int, carries_data: bool) -> None:
    if not carries_data:
        w.add(name, ino=ino, mode=e.mode, nlink=nlink)
    elif e.data is not None:
        w.add(name, ino=ino, mode=e.mode, nlink=nlink, data=e.data)
    elif e.source is not None:
        try:
            w.add_file(name, ino=ino, mode=e.mode, nlink=nlink, source=e.source)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
            raise InitrdError(
                f"cannot read {e.source} for {e.path} (from {e.origin or 'the plan'}): {err.strerror}",
                hint="reinstall that package, or leave the file out with a removal glob",
            ) from err
    else:
        w.add(name, ino=ino, mode=e.mode, nlink=nlink)


def write_cpio(out: BinaryIO, entries: Iterable[Entry], *, mtime: int = 0) -> CpioStats:
    """Write `entries` (plus missing parents) as one newc archive, trailer included."""
    ordered = complete_entries(entries)
    inos, group_size, group_last = _inodes(ordered)
    w = CpioWriter(out, mtime=mtime)
    for i, (e, ino) in enumerate(zip(ordered, inos, strict=True)):
        name = archive_name(e.path)
        fmt = stat.S_IFMT(e.mode)
        if fmt == stat.S_IFREG:
            nlink = group_size.get(e.hardlink, 1) if e.hardlink else 1
            _add_regular(w, e, name, ino, nlink, not e.hardlink or group_last[e.hardlink] == i)
        elif fmt == stat.S_IFLNK:
            if not e.linkto:
                raise InitrdError(f"symlink {e.path} in the plan has no target")
            w.add(name, ino=ino, mode=e.mode, data=os.fsencode(e.linkto))
        elif fmt == stat.S_IFDIR:
            w.add(name, ino=ino, mode=e.mode, nlink=2)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            w.add(name, ino=ino, mode=e.mode, rdev=e.rdev)
        else:
            raise InitrdError(f"{e.path}: unsupported file type {oct(e.mode)} in the plan")
    return w.finish()
