"""Firmware files the selected modules ask for (`firmware=` in .modinfo), plus user globs.

Names are looked up like the kernel's firmware loader does (updates/KVER, updates, KVER, then the
top directory), each also as `.zst` and `.xz`. Symlinks inside the firmware tree are kept as
symlinks, with every link of the chain; a link leaving the tree is replaced by the file it points to.
A firmware file that is not installed is a warning naming the module that wants it, never an error.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from mkosi_initrd.plan.model import Entry, FirmwareChoice
from mkosi_initrd.rootfs import resolve_in_root

FIRMWARE_DIR = "/usr/lib/firmware"
_SUFFIXES = ("", ".zst", ".xz")
_GLOB_CHARS = frozenset("*?[")
_MAX_LINKS = 40


@dataclass(frozen=True)
class FirmwarePart:
    choices: tuple[FirmwareChoice, ...]
    entries: tuple[Entry, ...]
    missing: tuple[str, ...]  # "name (wanted by module)"
    warnings: tuple[str, ...]


class _Tree:
    """The firmware files chosen so far, as archive entries (symlink chains included)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fwdir = resolve_in_root(root, FIRMWARE_DIR)
        self.entries: dict[str, Entry] = {}

    def add(self, rel: str) -> None:
        self._add(rel, 0)

    def _add(self, rel: str, depth: int) -> None:
        if depth > _MAX_LINKS:
            return
        parts = rel.split("/")
        for i in range(len(parts)):
            sub = "/".join(parts[: i + 1])
            host = self.fwdir / sub
            if not host.is_symlink():
                continue
            target = os.readlink(host)
            rest = parts[i + 1 :]
            if target.startswith("/"):
                # /lib is /usr/lib in a merged root; a link there stays in the tree.
                target = posixpath.normpath(target)
                if target.startswith("/lib/firmware/"):
                    target = "/usr" + target
                inside = posixpath.relpath(target, FIRMWARE_DIR)
            else:
                inside = posixpath.normpath(posixpath.join(posixpath.dirname(sub), target))
            if inside.startswith("../") or inside == "..":
                self._file(rel, resolve_in_root(self.root, f"{FIRMWARE_DIR}/{rel}"))
                return
            self._dirs(sub)
            linkto = posixpath.relpath(inside, posixpath.dirname(sub) or ".")
            self.entries[f"{FIRMWARE_DIR}/{sub}"] = Entry(
                path=f"{FIRMWARE_DIR}/{sub}", mode=stat.S_IFLNK | 0o777, linkto=linkto, origin="firmware"
            )
            self._add("/".join([inside, *rest]), depth + 1)
            return
        self._file(rel, resolve_in_root(self.root, f"{FIRMWARE_DIR}/{rel}"))

    def _file(self, rel: str, source: Path) -> None:
        st = source.stat()
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(source)):
                self._add(f"{rel}/{child}", 0)
            return
        self._dirs(rel)
        self.entries[f"{FIRMWARE_DIR}/{rel}"] = Entry(
            path=f"{FIRMWARE_DIR}/{rel}",
            mode=stat.S_IFREG | (st.st_mode & 0o777),
            source=source,
            size=st.st_size,
            origin="firmware",
        )

    def _dirs(self, rel: str) -> None:
        path = FIRMWARE_DIR
        for part in rel.split("/")[:-1]:
            path = f"{path}/{part}"
            if path not in self.entries:
                self.entries[path] = Entry(path=path, mode=stat.S_IFDIR | 0o755, origin="firmware")


def inside_tree(name: str) -> bool:
    """A firmware name (from a module's .modinfo: not ours to trust) that stays in the firmware
    directory: relative, and no `..` climbing out of it."""
    normal = posixpath.normpath(name)
    return bool(name) and not name.startswith("/") and normal != ".." and not normal.startswith("../")


def _exists(root: Path, rel: str) -> bool:
    return resolve_in_root(root, f"{FIRMWARE_DIR}/{rel}").is_file()


def find_firmware(root: Path, kver: str, name: str) -> list[str]:
    """Paths relative to the firmware directory that satisfy `name` (the first hit, or all glob hits)."""
    fwdir = resolve_in_root(root, FIRMWARE_DIR)
    for base in (f"updates/{kver}", "updates", kver, ""):
        stem = posixpath.join(base, name) if base else name
        if _GLOB_CHARS.isdisjoint(name):
            for suffix in _SUFFIXES:
                if _exists(root, stem + suffix):
                    return [stem + suffix]
        else:
            hits = sorted({str(p.relative_to(fwdir)) for s in _SUFFIXES for p in fwdir.glob(stem + s)})
            hits = [h for h in hits if _exists(root, h)]
            if hits:
                return hits
    return []


def _all_firmware(root: Path) -> list[str]:
    fwdir = resolve_in_root(root, FIRMWARE_DIR)
    out = []
    for dirpath, dirnames, filenames in os.walk(fwdir, followlinks=False):
        dirnames.sort()
        rel = os.path.relpath(dirpath, fwdir)
        out += [f if rel == "." else f"{rel}/{f}" for f in sorted(filenames)]
    return out


def _strip(name: str) -> str:
    for suffix in _SUFFIXES[1:]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def select_firmware(
    root: Path, kver: str, wants: Iterable[tuple[str, str]], globs: Iterable[str]
) -> FirmwarePart:
    """`wants`: (module, firmware name) pairs; `globs`: user globs (compression suffix ignored)."""
    tree = _Tree(root)
    reasons: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    warnings: list[str] = []
    for module, name in wants:
        if not inside_tree(name):
            warnings.append(f"{module} asks for firmware {name!r}, outside {FIRMWARE_DIR}: ignored")
            continue
        name = posixpath.normpath(name)
        hits = find_firmware(root, kver, name)
        if not hits:
            missing.setdefault(name, []).append(module)
        for rel in hits:
            reasons.setdefault(rel, []).append(module)
    globs = list(globs)
    if globs:
        available = _all_firmware(root)
        for glob in globs:
            hits = [rel for rel in available if fnmatchcase(_strip(rel), glob) or fnmatchcase(rel, glob)]
            if not hits:
                warnings.append(f"firmware glob {glob!r} matches nothing in {FIRMWARE_DIR}")
            for rel in hits:
                reasons.setdefault(rel, []).append(f"listed: {glob}")
    for rel in sorted(reasons):
        tree.add(rel)
    missing_list = tuple(
        f"{name} (wanted by {', '.join(sorted(set(mods)))})" for name, mods in sorted(missing.items())
    )
    if missing_list:
        warnings.append(
            f"{len(missing_list)} firmware file(s) wanted by selected modules are not installed "
            f"(see missing_firmware), e.g. {missing_list[0]}"
        )
    choices = tuple(
        FirmwareChoice(path=rel, reason=", ".join(dict.fromkeys(why)))
        for rel, why in sorted(reasons.items())
    )
    return FirmwarePart(
        choices=choices,
        entries=tuple(tree.entries[p] for p in sorted(tree.entries)),
        missing=missing_list,
        warnings=tuple(warnings),
    )
