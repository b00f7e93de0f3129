"""What a package database says, in one vocabulary for the rpm and dpkg backends: packages, their
dependencies and provides, their files. A backend reads; it never writes (database.open_db())."""

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
