"""The host's lvm.conf and lvmlocal.conf, when they set something that changes which devices LVM
activates at boot (anything else there is about the running system)."""

from __future__ import annotations

import re
from pathlib import Path

from mkosi_initrd.host.entries import copy_entry
from mkosi_initrd.host.formats import read_text
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.rootfs import resolve_in_root

# lvm.conf settings that change which devices LVM sees or activates at boot: only then the host's
# lvm.conf matters in the initrd (anything else there is about the running system).
LVM_ACTIVATION_KEYS = (
    "filter",
    "global_filter",
    "use_devicesfile",
    "devicesfile",
    "volume_list",
    "auto_activation_volume_list",
    "event_activation",
    "system_id_source",
    "system_id_file",
)


def lvm_conf(root: Path) -> Part:
    entries = []
    for name in ("/etc/lvm/lvm.conf", "/etc/lvm/lvmlocal.conf"):
        host = resolve_in_root(root, name)
        if host.is_file() and _sets_any(read_text(host), LVM_ACTIVATION_KEYS):
            entries.append(copy_entry(root, name))
    return Part(entries=tuple(entries))


def _sets_any(text: str, keys: tuple[str, ...]) -> bool:
    pattern = re.compile(r"^\s*(" + "|".join(map(re.escape, keys)) + r")\s*=", re.M)
    return any(pattern.match(line) for line in text.splitlines() if not line.lstrip().startswith("#"))
