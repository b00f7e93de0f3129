"""Where a root keeps its package database: read by the backends, the backend detection and the
cache key (which must not import the backends: a cached rebuild does without them)."""

from __future__ import annotations

from pathlib import Path

RPMDB_PATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
RPMDB_FILES = ("rpmdb.sqlite", "Packages", "Packages.db")  # sqlite, bdb, ndb
DPKG_STATUS = "var/lib/dpkg/status"


def rpmdb_path(root: Path) -> str | None:
    """The rpm database's directory in the root ("usr/lib/sysimage/rpm"), or None without one."""
    for p in RPMDB_PATHS:
        if any((root / p / f).exists() for f in RPMDB_FILES):
            return p
    return None
