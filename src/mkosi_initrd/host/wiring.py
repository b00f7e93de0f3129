"""The profiles' wiring, for generic builds too: network → systemd-networkd (+ wait-online for
network-online.target) enabled in the initrd, and DHCP on wired links as the fallback .network; nfs →
a generator for root=[nfs:]SERVER:/PATH (systemd 252's fstab generator skips a root= that is not a
path; nfs-utils ships one only from 2.8.4 on)."""

from __future__ import annotations

import stat

from mkosi_initrd.host.entries import ORIGIN, data_entry
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.resources import resource_dir

UNIT_DIR = "/usr/lib/systemd/system"


# --profile network: the initrd's presets enable nothing, so networkd is wired here; the root mount of
# a network file system waits for network-online.target, which networkd-wait-online provides.
NETWORK_WANTS = (
    ("initrd.target", "systemd-networkd.service"),
    ("sockets.target", "systemd-networkd.socket"),
    ("network-online.target", "systemd-networkd-wait-online.service"),
)


NETWORK_DEFAULT = "network/89-mkosi-initrd-ethernet.network"


NFSROOT_GENERATOR = "nfs/mkosi-initrd-nfsroot-generator"


def network_wiring() -> Part:
    """networkd enabled in the initrd, with DHCP on wired interfaces as the fallback configuration."""
    entries = []
    for target, unit in NETWORK_WANTS:
        link = f"/etc/systemd/system/{target}.wants/{unit}"
        dest = f"{UNIT_DIR}/{unit}"
        entries.append(Entry(link, stat.S_IFLNK | 0o777, linkto=dest, size=len(dest), origin=ORIGIN))
    default = resource_dir() / NETWORK_DEFAULT
    entries.append(data_entry(f"/usr/lib/systemd/network/{default.name}", default.read_bytes()))
    return Part(entries=tuple(entries))


def nfs_wiring() -> Part:
    """A generator that turns root=[nfs:|nfs4:]SERVER:/PATH into sysroot.mount (systemd 252 cannot)."""
    generator = resource_dir() / NFSROOT_GENERATOR
    path = f"/usr/lib/systemd/system-generators/{generator.name}"
    return Part(entries=(data_entry(path, generator.read_bytes(), mode=0o755),))
