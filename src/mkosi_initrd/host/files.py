"""The host's files a host-only build reads or carries, by path in the root: data only, so that the
cache key (build/inputs.py) can sign them without importing what reads them."""

from __future__ import annotations

# What host/*.py reads to decide what to carry (tests/test_cache.py holds this list and the next to
# the paths named in host/*.py).
HOST_FILES = (
    "/etc/fstab",  # host/probes.initrd_filesystems
    "/etc/crypttab",
    "/etc/cryptsetup-keys.d",
    "/etc/vconsole.conf",
    "/etc/default/keyboard",
    "/etc/kernel/cmdline",
    "/etc/initramfs-tools/conf.d/resume",
    "/etc/lvm/lvm.conf",
    "/etc/lvm/lvmlocal.conf",
)


# Per profile: what a host-only build with it carries (carry.py).
PROFILE_FILES = {
    "raid": ("/etc/mdadm.conf", "/etc/mdadm.conf.d", "/etc/mdadm/mdadm.conf", "/etc/mdadm/mdadm.conf.d"),
    "lvm": ("/etc/lvm/devices/system.devices",),
    "network": (
        "/etc/systemd/network",
        "/etc/systemd/networkd.conf",
        "/etc/systemd/networkd.conf.d",
        "/etc/systemd/resolved.conf",
        "/etc/systemd/resolved.conf.d",
    ),
    "nfs": ("/etc/idmapd.conf", "/etc/idmapd.conf.d"),
}
