"""What an extension carries: the entries of the plan with its packages and modules that the base
initrd lacks or holds with other contents (a module index regenerated for base + extension), split
into what a sysext may hold (/usr, /opt) and what only a confext can (/etc)."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.plan.model import Entry

SYSEXT_TOPS = ("/usr/", "/opt/")
CONFEXT_TOP = "/etc/"
# What the build generates about itself (its manifest, the release files) describes the base: an
# extension must not overlay it.
GENERATED = "generated"


@dataclass(frozen=True)
class BaseFile:
    """A path of the base initrd: its type bits and what identifies its contents."""

    mode: int
    linkto: str = ""
    data: bytes | None = None  # a regular file's bytes (from an initrd), or None: compare by source
    source: Path | None = None
    size: int = 0


@dataclass(frozen=True)
class Content:
    usr: tuple[Entry, ...]  # the sysext's entries
    etc: tuple[Entry, ...]  # the confext's entries


def base_from_plan(entries: Iterable[Entry]) -> dict[str, BaseFile]:
    return {e.path: BaseFile(e.mode, e.linkto, e.data, e.source, e.size) for e in entries}


def _bytes(entry: Entry) -> bytes:
    if entry.data is not None:
        return entry.data
    assert entry.source is not None
    return entry.source.read_bytes()


def _same(entry: Entry, base: BaseFile) -> bool:
    if stat.S_IFMT(entry.mode) != stat.S_IFMT(base.mode):
        return False
    if stat.S_ISLNK(entry.mode):
        return entry.linkto == base.linkto
    if not stat.S_ISREG(entry.mode):
        return True  # directories and nodes: the path is all there is
    if base.source is not None and entry.source == base.source:
        return True  # the same file of the root
    if base.data is None and base.source is None:
        return False
    other = base.data if base.data is not None else base.source.read_bytes()  # type: ignore[union-attr]
    return _bytes(entry) == other


def extension_content(full: Iterable[Entry], base: Mapping[str, BaseFile]) -> Content:
    """The entries of `full` that are new or different against `base`, by where they may go.
    Directories are not carried: the tree makes those its files lie in."""
    new = [
        e for e in full
        if e.origin != GENERATED and (e.path not in base or not _same(e, base[e.path]))
    ]  # fmt: skip
    files = [e for e in new if not stat.S_ISDIR(e.mode)]
    usr = [e for e in files if e.path.startswith(SYSEXT_TOPS)]
    etc = [e for e in files if e.path.startswith(CONFEXT_TOP)]
    return Content(tuple(usr), tuple(etc))
