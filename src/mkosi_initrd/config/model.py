"""The configuration of one build: what the ini files and the command line say (settings.py lists every
setting), for one root and one kernel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Config:
    root: Path = Path("/")
    kver: str = ""
    generic: bool = False
    profiles: tuple[str, ...] = ()
    backend: str | None = None  # None: detect from the root
    packages: tuple[str, ...] = ()  # extra package entries (names, provides, paths)
    added_packages: tuple[str, ...] = ()  # those of `packages` given with --add-package (errors say so)
    remove_packages: tuple[str, ...] = ()
    extra_files: tuple[tuple[str, str], ...] = ()  # (source in root, destination in initrd)
    remove_files: tuple[str, ...] = ()  # globs
    modules: tuple[str, ...] = ()  # patterns, "-" prefix excludes
    firmware: tuple[str, ...] = ()  # globs relative to /usr/lib/firmware
    compression: str = "zstd"
    level: int | None = None  # None: the compressor's default (zstd 3)
    microcode: bool = True
    check: bool = True  # the pre-flight check (build/check.py); --no-check or Check=no turns it off
    weak_deps: bool = False
    addons: tuple[str, ...] = ()  # UKI companions the kernel-install plugin stages (layout uki)
    credentials: tuple[str, ...] = ()
    verity_certificate: Path | None = None  # trusted for signed extensions (/usr/lib/verity.d/)
    sysext_support: bool = False  # the initrd merges system extensions (planner/sysext.py)
    source_date_epoch: int = 0
    sysfs: Path = Path("/sys")  # host probes (tests point these at fixture trees)
    procfs: Path = Path("/proc")
    config_files: tuple[Path, ...] = field(default=(), compare=False)  # what was read, for --debug
