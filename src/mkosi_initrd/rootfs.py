"""Paths inside a root (sysroot): resolve symlinks without ever leaving the root."""

from __future__ import annotations

import os
from pathlib import Path

_MAX_LINKS = 40


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """Resolve `path` (absolute, as seen from inside `root`) to a host path under `root`.

    Symlinks are followed as the root would see them: absolute targets restart at `root`,
    `..` never climbs above it. The result need not exist.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (parts or follow_last) and candidate.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise OSError(f"too many levels of symbolic links resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


class CanonicalPaths:
    """Canonical paths inside the root: parent directories resolved (each once), the last component
    kept. For the many files of a package or a kernel's module tree.

    A directory is resolved from its parent's canonical path and one lstat of its own name (a full
    resolve_in_root only where that name is a symlink): a package database's ten thousand
    directories cost as many lstat calls, not one per component of each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._host = str(root).rstrip("/")
        self._parents: dict[str, str] = {"": ""}

    def __call__(self, path: str) -> str:
        parent, _, base = path.rpartition("/")
        return f"{self.directory(parent)}/{base}"

    def directory(self, path: str) -> str:
        """The canonical form of directory `path` ("" for the root itself)."""
        canon = self._parents.get(path)
        if canon is None:
            up, _, name = path.rpartition("/")
            above = self.directory(up)
            if name in ("", "."):
                canon = above
            elif name == ".." or os.path.islink(f"{self._host}{above}/{name}"):
                rel = resolve_in_root(self.root, f"{above}/{name}").relative_to(self.root).as_posix()
                canon = "" if rel == "." else "/" + rel
            else:
                canon = f"{above}/{name}"
            self._parents[path] = canon
        return canon
