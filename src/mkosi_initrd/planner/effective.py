"""The configuration a build plans with, which is also what the cache keys a build by."""

from __future__ import annotations

from mkosi_initrd.config.model import Config
from mkosi_initrd.host.packages import with_host_packages
from mkosi_initrd.host.rootstack import with_host_profiles


def effective_config(config: Config) -> Config:
    """`config` as a host-only build plans it: with the profiles the root's block stack needs (LVM,
    RAID, NFS: host/rootstack.py) and the packages the host's configuration needs (loadkeys for a
    KEYMAP=: host/packages.py). A generic build plans with `config` as it is."""
    if config.generic:
        return config
    return with_host_packages(with_host_profiles(config))
