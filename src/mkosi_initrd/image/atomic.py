"""Replace a file atomically: the old file stays until the new one is complete and on disk.

The new content goes to an unnamed file (O_TMPFILE) in the target's directory, so that even
`kill -9` leaves nothing behind: the kernel frees an unnamed file when its last descriptor
closes. Only once it is complete and fsynced does it get a name (`.NAME.XXXX.tmp`, beside the
target) that is immediately renamed over the target. File systems without O_TMPFILE (vfat on an
ESP) get a named temp file instead, removed on errors and on SIGTERM/SIGINT/SIGHUP.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.interrupt import Interrupted, signals_raise

MODE = 0o600
TEMP_SUFFIX = ".tmp"
__all__ = ["MODE", "Interrupted", "atomic_write"]


def _temp_name(target: Path) -> Path:
    # The pid lets a later run remove temps of a writer that was killed (named temps only).
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _remove_stale_temps(target: Path) -> None:
    """Named temps of writers that no longer run (killed with SIGKILL while writing)."""
    prefix = f".{target.name}."
    for p in target.parent.glob(f"{glob.escape(prefix)}*{TEMP_SUFFIX}"):
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            p.unlink(missing_ok=True)


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000


def _link_fd(fd: int, name: Path) -> None:
    """Give the unnamed file `fd` a name: linkat(AT_EMPTY_PATH), else via its /proc/self/fd link."""
    if _libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(name), _AT_EMPTY_PATH) == 0:
        return
    os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)


def _copy_to(fd: int, name: Path, mode: int) -> None:
    """Last resort when the unnamed file cannot be linked: copy it into a named temp."""
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        size = os.fstat(fd).st_size
        copied = 0
        while copied < size:
            n = os.sendfile(out, fd, copied, size - copied)
            if n == 0:
                raise OSError(errno.EIO, "short copy")
            copied += n
        os.fchmod(out, mode)
        os.fsync(out)
    finally:
        os.close(out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_unnamed(directory: Path, mode: int) -> int | None:
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # no O_TMPFILE on this file system: use a named temp file
        raise


def _error(target: Path, e: OSError) -> InitrdError:
    hint = "free some space there" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return InitrdError(f"cannot write {target}: {e.strerror or e}", hint=hint)


def _close_quietly(f: BinaryIO) -> None:
    """Close without flushing again: after a failed write (ENOSPC) the buffer cannot be written,
    and that second error must not hide the first."""
    try:
        f.close()
    except OSError:
        pass


@contextlib.contextmanager
def atomic_write(target: Path, mode: int = MODE) -> Iterator[BinaryIO]:
    """Yield a binary file; on a clean exit it replaces `target` (fsynced, `mode`), else vanishes."""
    target = Path(os.path.abspath(target))
    directory = target.parent
    if not directory.is_dir():
        raise InitrdError(f"cannot write {target}: {directory} is not a directory")
    try:
        fd = _open_unnamed(directory, mode)
    except OSError as e:
        raise _error(target, e) from e
    _remove_stale_temps(target)
    if fd is not None:
        with _unnamed(fd, target, mode) as f:
            yield f
    else:
        with _named(target, mode) as f:
            yield f


def _flush_to_disk(f: BinaryIO, mode: int) -> None:
    """Everything written so far on disk, with the final mode, before the file gets its name."""
    f.flush()
    os.fchmod(f.fileno(), mode)
    os.fsync(f.fileno())


@contextlib.contextmanager
def _unnamed(fd: int, target: Path, mode: int) -> Iterator[BinaryIO]:
    f = os.fdopen(fd, "wb")
    try:
        yield f
        _flush_to_disk(f, mode)
        tmp = _temp_name(target)
        with signals_raise():
            try:
                try:
                    _link_fd(fd, tmp)
                except OSError:
                    _copy_to(fd, tmp, mode)
                os.rename(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        _fsync_dir(target.parent)
    except OSError as e:
        raise _error(target, e) from e
    finally:
        _close_quietly(f)


@contextlib.contextmanager
def _named(target: Path, mode: int) -> Iterator[BinaryIO]:
    with signals_raise():
        tmp = _temp_name(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except OSError as e:
            raise _error(target, e) from e
        f = os.fdopen(fd, "wb")
        try:
            yield f
            _flush_to_disk(f, mode)
            f.close()
            os.rename(tmp, target)
            _fsync_dir(target.parent)
        except OSError as e:
            raise _error(target, e) from e
        finally:
            _close_quietly(f)
            tmp.unlink(missing_ok=True)
