"""The configuration a build plans with, which is also what the cache keys a build by."""

from __future__ import annotations

from mkosi_initrd.config.model import Config
from mkosi_initrd.host.packages import with_host_packages
from mkosi_initrd.host.rootstack import with_host_profiles
from mkosi_initrd.planner.sysext import with_sysext_profile


def effective_config(config: Config) -> Config:
    """`config` as a host-only build plans it: with the profiles the root's block stack needs (LVM,
    RAID, NFS: host/rootstack.py) and the packages the host's configuration needs (loadkeys for a
    KEYMAP=: host/packages.py). A generic build plans with `config` as it is. Both get the internal
    profile `sysext` when the initrd is to merge extensions (planner/sysext.py)."""
    config = with_sysext_profile(config)
    if config.generic:
        return config
    return with_host_packages(with_host_profiles(config))
