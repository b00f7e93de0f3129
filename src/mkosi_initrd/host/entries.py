"""Archive entries for what a host-only build carries from the host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mkosi_initrd.plan.model import Entry
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.rootfs import resolve_in_root

ORIGIN = "host-config"


def copy_paths(root: Path, paths: tuple[str, ...]) -> Part:
    """Files and directory trees, by their path in the root, when present."""
    entries: list[Entry] = []
    for path in paths:
        host = resolve_in_root(root, path)
        if host.is_dir():
            entries.append(Entry(path, stat.S_IFDIR | 0o755, origin=ORIGIN))
            for sub in sorted(host.rglob("*")):
                entries.append(copy_entry(root, f"{path}/{sub.relative_to(host).as_posix()}"))
        elif host.is_file():
            entries.append(copy_entry(root, path))
    return Part(entries=tuple(entries))


def copy_entry(root: Path, path: str) -> Entry:
    host = resolve_in_root(root, path, follow_last=False)
    st = os.lstat(host)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(host)
        return Entry(path, st.st_mode, linkto=target, size=len(target), origin=ORIGIN)
    if stat.S_ISDIR(st.st_mode):
        return Entry(path, st.st_mode, origin=ORIGIN)
    return Entry(path, st.st_mode, source=host, size=st.st_size, origin=ORIGIN)


def data_entry(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data=data, size=len(data), origin=ORIGIN)
