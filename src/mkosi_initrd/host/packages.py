"""The packages the host's configuration needs besides the lists (loadkeys for a KEYMAP=). Part of the
effective configuration, so it is on a cached rebuild's path too: it reads, it plans nothing."""

from __future__ import annotations

import dataclasses

from mkosi_initrd.config.model import Config
from mkosi_initrd.host.formats import env_file
from mkosi_initrd.rootfs import resolve_in_root

# systemd-vconsole-setup runs loadkeys; optional: a root may not have it (then: a warning by the planner).
KEYMAP_PACKAGES = ("kbd?",)


def with_host_packages(config: Config) -> Config:
    """The config with the packages the host's configuration needs (loadkeys for a KEYMAP=)."""
    if config.generic:
        return config
    settings = env_file(resolve_in_root(config.root, "/etc/vconsole.conf"))
    wanted = [p for p in KEYMAP_PACKAGES if settings.get("KEYMAP") and p.rstrip("?") not in config.packages]
    return dataclasses.replace(config, packages=(*config.packages, *wanted)) if wanted else config
