"""The package database of a root: values shared by the rpm and dpkg backends.

A backend reads; it never writes. `open_db()` picks the backend from what the root has.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mkosi_initrd.errors import InitrdError


class FileFlag(enum.Flag):
    NONE = 0
    CONFIG = enum.auto()
    DOC = enum.auto()
    LICENSE = enum.auto()
    GHOST = enum.auto()
    README = enum.auto()
    MISSINGOK = enum.auto()


class DepKind(enum.Flag):
    """When a requirement applies. Only RUNTIME (or PREREQ-only) edges are followed; INTERP is a
    scriptlet's or trigger's interpreter (`Requires(interp)`), needed only to run that script."""

    RUNTIME = 0
    PRE = enum.auto()
    POST = enum.auto()
    PREUN = enum.auto()
    POSTUN = enum.auto()
    PRETRANS = enum.auto()
    POSTTRANS = enum.auto()
    VERIFY = enum.auto()
    RPMLIB = enum.auto()
    CONFIG = enum.auto()
    INTERP = enum.auto()


class EmptyDatabase(InitrdError):
    """A package database that is there but lists no packages."""


@dataclass(frozen=True)
class Dep:
    """A requirement or provide. `op` is one of "", "<", "<=", "=", ">=", ">".

    A rich (boolean) dependency keeps its whole text in `name` with `rich=True`.
    """

    name: str
    op: str = ""
    evr: str = ""
    kind: DepKind = DepKind.RUNTIME
    rich: bool = False

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.evr}" if self.op else self.name


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute, as the package database records it
    mode: int  # st_mode incl. type bits
    size: int
    linkto: str = ""
    digest: str = ""
    flags: FileFlag = FileFlag.NONE
    lang: str = ""  # %lang of the file, "" for none
    inode: int = 0  # rpm's per-package file inode: equal values mark hardlinks
    nlink: int = 1


@dataclass(frozen=True)
class Package:
    name: str
    epoch: int | None
    version: str
    release: str
    arch: str
    requires: tuple[Dep, ...] = ()
    provides: tuple[Dep, ...] = ()
    recommends: tuple[Dep, ...] = ()
    key: str = field(default="", compare=False)  # backend handle (rpm: db record, dpkg: name:arch)

    @property
    def evr(self) -> str:
        e = f"{self.epoch}:" if self.epoch else ""
        return f"{e}{self.version}-{self.release}" if self.release else f"{e}{self.version}"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"


class PackageDB(Protocol):
    backend: str
    root: Path

    @property
    def notes(self) -> Sequence[str]:
        """What the user should know about the database (the plan shows it with its warnings)."""
        ...

    def packages(self) -> Sequence[Package]:
        """Every installed package (metadata only)."""
        ...

    def providers(self, dep: Dep) -> list[Package]:
        """Installed packages satisfying a plain (non-rich) dependency: a name, a virtual
        provide with version constraint, or a file path (file provides)."""
        ...

    def files(self, pkg: Package) -> Sequence[FileEntry]:
        """The files `pkg` owns, with metadata from the database."""
        ...

    def vercmp(self, a: str, b: str) -> int:
        """Compare two EVR strings with the backend's rules (-1, 0, 1)."""
        ...


RPMDB_PATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
DPKG_STATUS = "var/lib/dpkg/status"


def detect_backend(root: Path) -> str:
    for p in RPMDB_PATHS:
        d = root / p
        if (d / "rpmdb.sqlite").exists() or (d / "Packages").exists() or (d / "Packages.db").exists():
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
    if backend == "rpm":
        from mkosi_initrd.pkgdb_rpm import RpmDB

        try:
            return RpmDB(root)
        except EmptyDatabase as e:
            # An empty rpmdb beside a dpkg database (rpm run on a Debian system): the next location.
            if not detected or not (root / DPKG_STATUS).exists():
                raise
            from mkosi_initrd.pkgdb_dpkg import DpkgDB

            db = DpkgDB(root)
            db.notes.append(f"{e.message}; using the dpkg database {root}/{DPKG_STATUS}")
            return db
    if backend == "dpkg":
        from mkosi_initrd.pkgdb_dpkg import DpkgDB

        return DpkgDB(root)
    raise InitrdError(f"unknown package backend {backend!r}", hint="use --backend rpm or --backend dpkg")
