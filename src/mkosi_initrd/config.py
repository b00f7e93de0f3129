"""Our configuration: ini files with drop-ins, merged with the command line.

Files (later wins; a drop-in of the same name in a later directory replaces an earlier one):
  /usr/lib/mkosi-initrd/mkosi-initrd.conf, /run/..., /etc/mkosi-initrd/mkosi-initrd.conf
  and `mkosi-initrd.conf.d/*.conf` in the same directories, sorted by file name.
All paths are read inside --root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIRS = ("usr/lib/mkosi-initrd", "usr/local/lib/mkosi-initrd", "run/mkosi-initrd", "etc/mkosi-initrd")
PROFILES = ("lvm", "raid", "nfs", "network", "pkcs11", "plymouth")
COMPRESSIONS = ("zstd", "xz", "gzip", "none")


@dataclass(frozen=True)
class Config:
    root: Path = Path("/")
    kver: str = ""
    generic: bool = False
    profiles: tuple[str, ...] = ()
    backend: str | None = None  # None: detect from the root
    packages: tuple[str, ...] = ()  # extra package entries (names, provides, paths)
    remove_packages: tuple[str, ...] = ()
    extra_files: tuple[tuple[str, str], ...] = ()  # (source in root, destination in initrd)
    remove_files: tuple[str, ...] = ()  # globs
    modules: tuple[str, ...] = ()  # patterns, "-" prefix excludes
    firmware: tuple[str, ...] = ()  # globs relative to /usr/lib/firmware
    compression: str = "zstd"
    level: int | None = None  # None: the compressor's default (zstd 3)
    microcode: bool = True
    weak_deps: bool = False
    source_date_epoch: int = 0
    sysfs: Path = Path("/sys")  # host probes (tests point these at fixture trees)
    procfs: Path = Path("/proc")
    config_files: tuple[Path, ...] = field(default=(), compare=False)  # what was read, for --debug
