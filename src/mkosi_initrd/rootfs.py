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
    kept. For the many files of a package or a kernel's module tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._parents: dict[str, str] = {"": ""}

    def __call__(self, path: str) -> str:
        parent, _, base = path.rpartition("/")
        canon = self._parents.get(parent)
        if canon is None:
            rel = resolve_in_root(self.root, parent or "/").relative_to(self.root).as_posix()
            canon = self._parents[parent] = "" if rel == "." else "/" + rel
        return f"{canon}/{base}"
