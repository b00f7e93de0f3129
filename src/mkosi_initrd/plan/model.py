"""The plan: everything that goes into one initrd, and why. A pure value, printable as JSON.

request/config → make_plan() → Plan → image.build_image()
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One entry of the initrd archive and where its bytes come from."""

    path: str  # absolute path inside the initrd, e.g. "/usr/bin/bash"
    mode: int  # full st_mode, type bits included
    source: Path | None = None  # host path whose bytes are copied (regular files)
    data: bytes | None = None  # generated content (regular files)
    linkto: str = ""  # symlink target
    size: int = 0  # bytes of a regular file (len(data) or the source's size)
    rdev: tuple[int, int] = (0, 0)  # device major/minor for device nodes
    hardlink: str = ""  # entries sharing a non-empty value are hardlinks of one file
    origin: str = ""  # package NEVRA, "kernel", "firmware" or "generated"

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass(frozen=True)
class PackageChoice:
    nevra: str
    name: str
    reason: tuple[str, ...]  # the chain that pulled it in: ("list:systemd", "systemd", "libc6") ...
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class CutEdge:
    """A requirement that was not followed because its target is excluded."""

    package: str
    requires: str
    excluded: str


@dataclass(frozen=True)
class ModuleChoice:
    name: str
    path: str  # relative to /usr/lib/modules/KVER
    reason: str  # "listed: ext4", "host: /sys/module", "modalias: /sys/devices/...", "dependency of X"


@dataclass(frozen=True)
class FirmwareChoice:
    path: str  # relative to /usr/lib/firmware
    reason: str  # the module(s) that want it


@dataclass(frozen=True)
class RequiredModule:
    """A module without which the image cannot mount its root: one of `names` must be in the image
    or built into the kernel (check.py)."""

    reason: str  # "root: ext4 on /", "generic: fs xfs"
    names: tuple[str, ...]


@dataclass(frozen=True)
class FileNeeds:
    """What one file of the image needs from the image when it runs (needs.py reads it)."""

    interpreter: str = ""  # an ELF program's PT_INTERP, a script's #! program
    needed: tuple[str, ...] = ()  # DT_NEEDED sonames
    runpath: tuple[str, ...] = ()  # DT_RUNPATH (else DT_RPATH) directories, $ORIGIN unexpanded
    runs: tuple[str, ...] = ()  # programs a udev rules file or a unit makes something run
    conditions: tuple[str, ...] = ()  # a unit's Condition*/Assert* paths: without them it never runs
    elf: bool = False


@dataclass(frozen=True)
class Plan:
    root: Path
    kver: str
    backend: str
    generic: bool
    profiles: tuple[str, ...]
    os_release: dict[str, str]
    packages: tuple[PackageChoice, ...]
    entries: tuple[Entry, ...]  # sorted by path, parents before children
    cut_edges: tuple[CutEdge, ...] = ()
    missing: tuple[str, ...] = ()  # optional entries that are not installed
    modules: tuple[ModuleChoice, ...] = ()
    firmware: tuple[FirmwareChoice, ...] = ()
    missing_firmware: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()  # what stops a build of this plan (`plan` still shows it)
    packages_only: bool = False  # no kernel part: `plan --packages-only`
    builtin: tuple[str, ...] = ()  # selected modules that are built into the kernel
    required_modules: tuple[RequiredModule, ...] = ()
    # Entry path → what that file needs at run time; None: not read (build/check.py reads it then).
    needs: Mapping[str, FileNeeds] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "kernel_version": self.kver or None,
            "packages_only": self.packages_only,
            "backend": self.backend,
            "generic": self.generic,
            "profiles": list(self.profiles),
            "os_release": {
                k: self.os_release[k] for k in ("ID", "ID_LIKE", "VERSION_ID") if k in self.os_release
            },
            "packages": [
                {
                    "name": p.name,
                    "nevra": p.nevra,
                    "reason": list(p.reason),
                    "files": p.files,
                    "bytes": p.bytes,
                }
                for p in self.packages
            ],
            "cut_edges": [vars(c) for c in self.cut_edges],
            "missing": list(self.missing),
            "modules": [{"name": m.name, "path": m.path, "reason": m.reason} for m in self.modules],
            "firmware": [{"path": f.path, "reason": f.reason} for f in self.firmware],
            "missing_firmware": list(self.missing_firmware),
            "files": len(self.entries),
            "bytes": sum(e.size for e in self.entries),
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "options": self.options,
        }
