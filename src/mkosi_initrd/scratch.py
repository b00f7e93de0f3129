"""Scratch directories that no kill leaves behind for long.

A scratch directory is named `PREFIX-PID-START-RANDOM`: the builder's pid and its start time
(clock ticks since boot, /proc/PID/stat), so that a pid reused by another process does not keep a
dead builder's directory alive. It is removed when its `with` block ends, by an exception or by
SIGTERM/SIGINT (interrupt.py); after a SIGKILL, the next build that makes a scratch directory with
the same prefix removes it (`remove_stale`). Directories that earlier versions made with
`tempfile` (no pid) go once they are an hour old (`is_stale`).

Scratch space is in memory when there is some (/dev/shm): the depmod tree is hundreds of small
files, the UKI's parts are read once; neither should land on an ESP beside the output.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path
from types import TracebackType

# The scratch directories of a build (depmod's tree, a UKI's parts, the signing tools' files).
DEPMOD = "mkosi-initrd-depmod-"
UKI = "mkosi-initrd-uki-build-"
SIGN = "mkosi-initrd-sign-"
PREFIXES = (DEPMOD, UKI, SIGN)
_LEGACY_AGE = 3600  # seconds
_LEGACY = re.compile(r"[a-z0-9_]{8}")
_PID_ONLY = re.compile(r"[0-9]+-[0-9a-f]{8}")
_SHM = "/dev/shm"


def base_dir() -> Path:
    """/dev/shm when it is a writable directory, else the temp directory ($TMPDIR, /tmp)."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK | os.X_OK):
        return Path(_SHM)
    return Path(tempfile.gettempdir())


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when it does not exist)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat_line[stat_line.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else ""


_OWN_TAG = ""


def owner_tag() -> str:
    """`PID-START` of this process."""
    global _OWN_TAG
    pid = os.getpid()
    if not _OWN_TAG.startswith(f"{pid}-"):
        _OWN_TAG = f"{pid}-{start_time(pid)}"
    return _OWN_TAG


def tag_is_alive(tag: str) -> bool | None:
    """Whether the process a `PID-START` tag names still runs; None when `tag` is not one."""
    pid, _, start = tag.partition("-")
    if not pid.isdigit() or not start.isdigit():
        return None
    return start_time(int(pid)) == start


def is_stale(name: str, prefix: str, path: Path | None = None) -> bool:
    """A scratch name of a builder that no longer runs; of earlier versions' names, PREFIX-PID-RANDOM
    of a pid that is gone, or a `tempfile` name (PREFIX + 8 random characters) older than an hour."""
    rest = name[len(prefix) :]
    pid, _, after = rest.partition("-")
    start, _, rand = after.partition("-")
    alive = tag_is_alive(f"{pid}-{start}")
    if alive is not None and rand:
        return not alive
    if _PID_ONLY.fullmatch(rest):  # PID-RANDOM: the cache's temps of earlier versions
        return not os.path.exists(f"/proc/{pid}")
    if path is None or not _LEGACY.fullmatch(rest):
        return False
    try:
        return time.time() - path.lstat().st_mtime > _LEGACY_AGE
    except OSError:
        return False


def remove_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove the scratch directories and files `parent/PREFIX*` of builders that died."""
    removed = []
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return []
    uid = os.geteuid()
    for name in names:
        path = parent / name
        try:
            st = path.lstat()
        except OSError:
            continue
        # Only our own, and never through a symlink: /dev/shm is world-writable.
        if st.st_uid != uid or stat.S_ISLNK(st.st_mode) or not is_stale(name, prefix, path):
            continue
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def remove_all_stale() -> None:
    """What builders that died left in the scratch space (every build starts with this: a cached
    one makes no scratch directory of its own, and must clean up after a killed one all the same)."""
    base = base_dir()
    for prefix in PREFIXES:
        remove_stale(base, prefix)


def scratch_name(prefix: str) -> str:
    return f"{prefix}{owner_tag()}-{secrets.token_hex(4)}"


# Every scratch directory this process made and has not removed yet (see `remove_own`).
_OWN: set[Path] = set()


class ScratchDir:
    """A private scratch directory (mode 0700); `cleanup()` or the end of a `with` removes it."""

    def __init__(self, prefix: str, parent: Path | None = None) -> None:
        self.parent = parent if parent is not None else base_dir()
        remove_stale(self.parent, prefix)
        self.path = self.parent / scratch_name(prefix)
        _OWN.add(self.path)  # before it exists: a signal right after mkdir() must not miss it
        self.path.mkdir(mode=0o700)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        _OWN.discard(self.path)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def own() -> frozenset[Path]:
    return frozenset(_OWN)


def remove_own(keep: frozenset[Path] = frozenset()) -> None:
    """Remove what this process still has (a front end calls it on its way out, after a signal), but
    `keep`: what a caller that runs a front end in-process (the plugin building an extension) made."""
    for path in sorted(_OWN - keep):
        shutil.rmtree(path, ignore_errors=True)
    _OWN.intersection_update(keep)
