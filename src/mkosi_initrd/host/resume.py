"""Hibernation: the resume= device from /etc/kernel/cmdline, the running kernel's command line (for
the running system only: a --root build's target is not what runs) or Debian's
/etc/initramfs-tools/conf.d/resume becomes a systemd-hibernate-resume@ instance in the initrd, so
resume works even when the boot loader does not pass resume=."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from mkosi_initrd.host.entries import ORIGIN
from mkosi_initrd.host.formats import cmdline_value, env_file, read_text
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.rootfs import resolve_in_root

RESUME_UNIT = "systemd-hibernate-resume@.service"


def resume_device(root: Path, procfs: Path, running: bool = True) -> tuple[str, str] | None:
    """(device spec, where it was configured) for hibernation resume, if the host has one;
    `running`: the root is the running system, whose command line (procfs) then counts too."""
    for where, path in (("/etc/kernel/cmdline", resolve_in_root(root, "/etc/kernel/cmdline")),):
        spec = cmdline_value(read_text(path), "resume")
        if spec:
            return spec, where
    spec = cmdline_value(read_text(procfs / "cmdline"), "resume") if running else ""
    if spec:
        return spec, "/proc/cmdline"
    conf = env_file(resolve_in_root(root, "/etc/initramfs-tools/conf.d/resume"))
    spec = conf.get("RESUME", "")
    if spec and spec.lower() != "none":
        return spec, "/etc/initramfs-tools/conf.d/resume"
    return None


def resume(root: Path, procfs: Path, running: bool = True) -> Part:
    found = resume_device(root, procfs, running)
    if found is None:
        return Part()
    spec, _where = found
    instance = unit_path_escape(device_node(spec))
    # Where systemd-hibernate-resume-generator puts it when resume= is on the command line.
    link = f"/etc/systemd/system/sysinit.target.wants/systemd-hibernate-resume@{instance}.service"
    target = f"/usr/lib/systemd/system/{RESUME_UNIT}"
    return Part(entries=(Entry(link, stat.S_IFLNK | 0o777, linkto=target, size=len(target), origin=ORIGIN),))


def device_node(spec: str) -> str:
    """UUID=x, LABEL=x, PARTUUID=x, PARTLABEL=x → the /dev/disk/by-* path udev creates."""
    for key, sub in (
        ("UUID", "uuid"),
        ("LABEL", "label"),
        ("PARTUUID", "partuuid"),
        ("PARTLABEL", "partlabel"),
    ):
        if spec.startswith(key + "="):
            return f"/dev/disk/by-{sub}/{spec[len(key) + 1 :]}"
    return spec


def unit_path_escape(path: str) -> str:
    """systemd's path escaping for unit instance names (what `systemd-escape --path` prints)."""
    path = re.sub(r"/+", "/", path).strip("/")
    if not path:
        return "-"
    out = []
    for i, ch in enumerate(path):
        if ch == "/":
            out.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
    return "".join(out)
