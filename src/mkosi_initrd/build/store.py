"""The cache directory: where it is and how big it may grow, entries copied in and out with their
SHA-256 checked on the way, published by rename, removed atomically, evicted least recently used first."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mkosi_initrd.log import log
from mkosi_initrd.scratch import remove_stale, scratch_name

if TYPE_CHECKING:
    from mkosi_initrd.build.cachemeta import CachedFile

DEFAULT_DIR = Path("/var/cache/mkosi-initrd")


DEFAULT_MAX_BYTES = 512 << 20


ENV_DIR = "MKOSI_INITRD_CACHE_DIR"


ENV_MAX = "MKOSI_INITRD_CACHE_MAX"  # bytes, with an optional K/M/G suffix


_CHUNK = 1 << 20


_MODE = 0o600
META = "meta.json"  # an entry's description; its mtime is when it was last used
TMP, TRASH = ".tmp-", ".trash-"  # + scratch.py's PID-START-RANDOM


class CorruptEntry(Exception):
    """A cached file does not match its checksum (raised inside atomic_write: the copy vanishes)."""


@dataclass(frozen=True)
class Settings:
    directory: Path
    max_bytes: int


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMG" else text
    if not number.isdigit():
        from mkosi_initrd.errors import InitrdError

        raise InitrdError(f"{ENV_MAX}={text}: not a size", hint="bytes, or a number with K, M or G")
    return int(number) * mult


def settings(directory: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    d = directory or (Path(env[ENV_DIR]) if env.get(ENV_DIR) else DEFAULT_DIR)
    return Settings(d, parse_size(env[ENV_MAX]) if env.get(ENV_MAX) else DEFAULT_MAX_BYTES)


def copy_verified(dir_fd: int, name: str, want: CachedFile, target: Path) -> int:
    """Copy a cached file to `target` atomically, checking its digest on the way; returns its size.

    The copy stays in the kernel (copy_file_range) while a thread hashes the same bytes through
    the page cache: on two cores that costs the longer of the two, not their sum."""
    from concurrent.futures import ThreadPoolExecutor

    from mkosi_initrd.image.atomic import atomic_write

    src = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with ThreadPoolExecutor(1) as pool, atomic_write(target, _MODE) as out:
            hashed = pool.submit(_digest_fd, src)
            size = _copy_fd(src, out.fileno())
            if hashed.result() != (want.sha256, size) or size != want.size:
                raise CorruptEntry(f"{name}: checksum mismatch")
    finally:
        os.close(src)
    return size


def _digest_fd(fd: int) -> tuple[str, int]:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest(), offset


def _copy_fd(src: int, dst: int) -> int:
    size = os.fstat(src).st_size
    offset = 0
    try:
        while offset < size:
            n = os.copy_file_range(src, dst, size - offset, offset)
            if n == 0:
                break
            offset += n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    while chunk := os.pread(src, _CHUNK, offset):  # what copy_file_range could not do
        offset += os.write(dst, chunk)
    return offset


def copy_in(src: Path, dst: Path) -> tuple[str, int]:
    """A fresh output into the cache: copied in the kernel while a thread hashes it."""
    from concurrent.futures import ThreadPoolExecutor

    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _MODE)
        try:
            with ThreadPoolExecutor(1) as pool:
                hashed = pool.submit(_digest_fd, fd)
                size = _copy_fd(fd, out)
                digest, hashed_size = hashed.result()
        finally:
            os.close(out)
    finally:
        os.close(fd)
    if hashed_size != size:
        raise OSError(errno.EIO, f"{src} changed while it was copied into the cache")
    return digest, size


def publish(tmp: Path, entry: Path, top: Path) -> None:
    """rename() a finished entry into place; a stale one of the same key is moved away first."""
    for _ in range(3):
        try:
            os.rename(tmp, entry)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            remove_entry(entry, top)


def remove_entry(entry: Path, top: Path) -> None:
    """Move an entry out of the way (atomic), then delete it: readers never see half an entry."""
    trash = top / scratch_name(TRASH)
    try:
        os.rename(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


@dataclass(frozen=True)
class EntryInfo:
    path: Path
    size: int
    used: float


def entries(top: Path) -> list[EntryInfo]:
    out = []
    for p in top.iterdir() if top.is_dir() else ():
        if p.name.startswith("."):
            continue
        try:
            used = os.stat(p / META).st_mtime
        except OSError:
            used = 0.0  # no meta: unfinished or broken, first to go
        size = sum(f.stat().st_size for f in _files(p))
        out.append(EntryInfo(p, size, used))
    return out


def _files(d: Path) -> Iterable[Path]:
    try:
        return [f for f in d.iterdir() if f.is_file()]
    except OSError:
        return []


def evict(top: Path, max_bytes: int, keep: str = "") -> list[Path]:
    """Remove least recently used entries until the cache holds at most `max_bytes`; also temps
    and trash of builders that died."""
    remove_dead_temps(top)
    found = sorted(entries(top), key=lambda e: e.used)
    total = sum(e.size for e in found)
    removed = []
    for e in found:
        if total <= max_bytes:
            break
        if e.path.name == keep:
            continue
        remove_entry(e.path, top)
        total -= e.size
        removed.append(e.path)
        log.debug("cache: evicted %s (%d bytes)", e.path.name, e.size)
    return removed


def remove_dead_temps(top: Path) -> None:
    """Half-written entries and trash of builders that died (scratch.py's stale check)."""
    for prefix in (TMP, TRASH):
        remove_stale(top, prefix)
