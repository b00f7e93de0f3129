"""Host configuration carried into a host-only initrd: what the root's storage and console need.

- crypttab.py: /etc/crypttab's `x-initrd.attach` lines and their key files;
- vconsole.py: the console's keymap (and loadkeys);
- resume.py: the hibernation resume device;
- per profile: raid → mdadm.conf(.d); lvm → the devices file and lvm.conf/lvmlocal.conf when they set
  something that changes which devices are activated (lvm.py); network → /etc/systemd/network,
  networkd.conf(.d), resolved.conf(.d); nfs → idmapd.conf(.d);
- and the profiles' wiring (wiring.py), for generic builds too.

Everything is read inside Config.root (rootfs.resolve_in_root); the kernel command line from
Config.procfs. Host files are carried only when the build is not generic.
"""

from __future__ import annotations

import os

from mkosi_initrd.config.model import Config
from mkosi_initrd.host.crypttab import crypttab
from mkosi_initrd.host.entries import copy_paths
from mkosi_initrd.host.files import PROFILE_FILES
from mkosi_initrd.host.lvm import lvm_conf
from mkosi_initrd.host.resume import resume
from mkosi_initrd.host.vconsole import vconsole
from mkosi_initrd.host.wiring import network_wiring, nfs_wiring
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.plan.parts import Part


def host_config(config: Config, profiles: tuple[str, ...] | None = None) -> Part:
    """Everything from the host the initrd needs, and the profiles' wiring (the only part for generic)."""
    profiles = config.profiles if profiles is None else profiles
    wiring = [network_wiring() if "network" in profiles else Part()]
    wiring.append(nfs_wiring() if "nfs" in profiles else Part())
    entries: list[Entry] = [e for w in wiring for e in w.entries]
    if config.generic:
        return Part(entries=tuple(entries))
    warnings: list[str] = []
    for part in (
        crypttab(config.root),
        vconsole(config.root),
        resume(config.root, config.procfs, running=os.path.realpath(config.root) == "/"),
        lvm_conf(config.root) if "lvm" in profiles else Part(),
        *(copy_paths(config.root, PROFILE_FILES[p]) for p in profiles if p in PROFILE_FILES),
    ):
        entries += part.entries
        warnings += part.warnings
    return Part(entries=tuple(entries), warnings=tuple(warnings))
