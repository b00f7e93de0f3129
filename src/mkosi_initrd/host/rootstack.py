"""What the root file system is mounted from, layer by layer, and the profiles that stack needs.

The mount at / (procfs mountinfo) names a block device; /sys/dev/block/MAJ:MIN leads to it, and its
`slaves/` to what it is built from: dm-crypt (dm uuid CRYPT-...), LVM (LVM-...), md (md/level),
partitions, disks. A host-only build turns on the profiles the layers need (LVM → lvm, md → raid,
an NFS root → nfs + network), so a host-only build on a LUKS+LVM machine works without flags.
LUKS needs no profile: cryptsetup is in the base list. Probes read Config.sysfs/procfs only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.config.model import Config
from mkosi_initrd.host.probes import block_dir, read_attr, root_mount, shown
from mkosi_initrd.log import log

NETWORK_FS = ("nfs", "nfs4")
# dm uuid prefix (set by the tool that made the mapping) → layer kind.
DM_KINDS = (
    ("CRYPT-VERITY-", "verity"),
    ("CRYPT-INTEGRITY-", "integrity"),
    ("CRYPT-", "crypt"),
    ("LVM-", "lvm"),
)
# layer kind → the profile it needs
KIND_PROFILES = {"lvm": "lvm", "md": "raid"}


@dataclass(frozen=True)
class Layer:
    kind: str  # "crypt", "lvm", "verity", "integrity", "dm", "md", "partition", "disk"
    device: str  # as the host names it: /sys/devices/...
    detail: str = ""  # dm uuid, md level ...


@dataclass(frozen=True)
class RootStack:
    fstype: str
    source: str
    layers: tuple[Layer, ...]  # the root device first, then what it is built from (depth first)

    def profiles(self) -> tuple[tuple[str, str], ...]:
        """(profile, reason) pairs, in a stable order, each profile once."""
        out: dict[str, str] = {}
        if self.fstype in NETWORK_FS:
            out["nfs"] = f"root is {self.fstype} ({self.source})"
            out["network"] = f"root is {self.fstype} ({self.source})"
        for layer in self.layers:
            profile = KIND_PROFILES.get(layer.kind)
            if profile and profile not in out:
                out[profile] = f"root on {layer.kind} {layer.device}" + (
                    f" ({layer.detail})" if layer.detail else ""
                )
        return tuple(out.items())


def detect(sysfs: Path, procfs: Path, where: str = "/") -> RootStack | None:
    """The stack of the root mounted at `where` (a --root directory that is no mount has none)."""
    mount = root_mount(procfs, where)
    if mount is None:
        return None
    sysfs = Path(os.path.realpath(sysfs))
    block = block_dir(sysfs, mount)
    layers: list[Layer] = []
    if block is not None:
        _walk(sysfs, block, layers, set())
    return RootStack(mount.fstype, mount.source, tuple(layers))


def with_host_profiles(config: Config) -> Config:
    """The config with the profiles the host's root stack needs added (host-only builds only)."""
    if config.generic:
        return config
    stack = detect(config.sysfs, config.procfs, os.path.realpath(config.root))
    if stack is None:
        return config
    added = [(p, why) for p, why in stack.profiles() if p not in config.profiles]
    for profile, why in added:
        log.info("profile %s: %s", profile, why)
    if not added:
        return config
    return dataclasses.replace(config, profiles=(*config.profiles, *(p for p, _ in added)))


def _walk(sysfs: Path, block: Path, layers: list[Layer], seen: set[Path]) -> None:
    if block in seen:
        return
    seen.add(block)
    layers.append(_classify(sysfs, block))
    slaves = block / "slaves"
    if slaves.is_dir():
        for slave in sorted(os.listdir(slaves)):
            _walk(sysfs, Path(os.path.realpath(slaves / slave)), layers, seen)
    elif (block / "partition").exists():
        _walk(sysfs, block.parent, layers, seen)


def _classify(sysfs: Path, block: Path) -> Layer:
    name = shown(sysfs, block)
    if (block / "dm").is_dir():
        uuid = read_attr(block / "dm/uuid")
        kind = next((k for prefix, k in DM_KINDS if uuid.startswith(prefix)), "dm")
        return Layer(kind, name, uuid)
    level = read_attr(block / "md/level")
    if level:
        return Layer("md", name, level)
    if (block / "partition").exists():
        return Layer("partition", name)
    return Layer("disk", name)
