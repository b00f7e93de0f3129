"""The host's CPU as microcode is chosen for it: the first CPU of Config.procfs/cpuinfo (x86 only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VENDORS = {"AuthenticAMD": "amd-ucode", "GenuineIntel": "intel-ucode"}


@dataclass(frozen=True)
class HostCpu:
    vendor: str
    family: int
    model: int
    stepping: int


def host_cpu(procfs: Path) -> HostCpu | None:
    """The first CPU of `procfs`/cpuinfo, or None when it is not an x86 CPU we know."""
    try:
        text = (procfs / "cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        k, _, v = line.partition(":")
        fields.setdefault(k.strip(), v.strip())
    vendor = fields.get("vendor_id", "")
    if vendor not in VENDORS:
        return None
    try:
        return HostCpu(vendor, int(fields["cpu family"]), int(fields["model"]), int(fields["stepping"]))
    except (KeyError, ValueError):
        return None
