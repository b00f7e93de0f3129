"""The root's package database: the backend picked from what the root has, opened read-only."""

from __future__ import annotations

from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages.locations import DPKG_STATUS, RPMDB_PATHS, rpmdb_path
from mkosi_initrd.packages.model import EmptyDatabase, PackageDB


def detect_backend(root: Path) -> str:
    if rpmdb_path(root) is not None:
        return "rpm"
    if (root / DPKG_STATUS).exists():
        return "dpkg"
    raise InitrdError(
        f"no package database in {root}: looked for an rpmdb in "
        + ", ".join(f"{root}/{p}" for p in RPMDB_PATHS)
        + f" and for {root}/{DPKG_STATUS}",
        hint="point --root at an installed system (or a sysroot with its package database)",
    )


def open_db(root: Path, backend: str | None = None) -> PackageDB:
    if not root.is_dir():
        raise InitrdError(f"root {root} does not exist or is not a directory")
    detected = backend is None
    backend = backend or detect_backend(root)
    # The backends are imported when chosen: python3-rpm is not needed for a dpkg root.
    if backend == "rpm":
        from mkosi_initrd.packages.rpm import RpmDB

        try:
            return RpmDB(root)
        except EmptyDatabase as e:
            # An empty rpmdb beside a dpkg database (rpm run on a Debian system): the next location.
            if not detected or not (root / DPKG_STATUS).exists():
                raise
            from mkosi_initrd.packages.dpkg import DpkgDB

            db = DpkgDB(root)
            db.notes.append(f"{e.message}; using the dpkg database {root}/{DPKG_STATUS}")
            return db
    if backend == "dpkg":
        from mkosi_initrd.packages.dpkg import DpkgDB

        return DpkgDB(root)
    raise InitrdError(f"unknown package backend {backend!r}", hint="use --backend rpm or --backend dpkg")
