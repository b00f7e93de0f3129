"""Early microcode for x86: an uncompressed cpio the kernel reads before anything else.

The kernel looks for kernel/x86/microcode/{AuthenticAMD,GenuineIntel}.bin in a plain cpio at
the start of the initrd. Generic builds carry every blob of both vendors; host-only builds only
the blob for this machine's CPU (family/model/stepping from Config.procfs/cpuinfo).
"""

from __future__ import annotations

import io
import lzma
import re
import stat
from pathlib import Path

import zstandard

from mkosi_initrd.config.model import Config
from mkosi_initrd.host.cpu import VENDORS, HostCpu, host_cpu
from mkosi_initrd.image.cpio import write_cpio
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.rootfs import resolve_in_root

FIRMWARE_DIRS = ("/usr/lib/firmware", "/lib/firmware")
_INTEL_NAME = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{2}-[0-9a-f]{2}$")


def _ucode_dir(root: Path, vendor: str) -> Path | None:
    for base in FIRMWARE_DIRS:
        d = resolve_in_root(root, f"{base}/{VENDORS[vendor]}")
        if d.is_dir():
            return d
    return None


def _stem(name: str) -> str:
    for suffix in (".xz", ".zst"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _wanted(vendor: str, stem: str, cpu: HostCpu | None) -> bool:
    if vendor == "GenuineIntel":
        if not _INTEL_NAME.match(stem):
            return False
        return cpu is None or stem == f"{cpu.family:02x}-{cpu.model:02x}-{cpu.stepping:02x}"
    if not (stem.startswith("microcode_amd") and stem.endswith(".bin")):
        return False
    if cpu is None:
        return True
    # AMD ships one container per family from 15h on, and one for all older families.
    want = f"microcode_amd_fam{cpu.family:02x}h.bin" if cpu.family >= 0x15 else "microcode_amd.bin"
    return stem == want


def microcode_blobs(root: Path, cpu: HostCpu | None, generic: bool) -> dict[str, tuple[Path, ...]]:
    """Vendor → the firmware files to concatenate into its blob."""
    vendors = list(VENDORS) if generic else ([cpu.vendor] if cpu else [])
    out: dict[str, tuple[Path, ...]] = {}
    for vendor in vendors:
        d = _ucode_dir(root, vendor)
        if d is None:
            continue
        only = None if generic else cpu
        files = sorted(p for p in d.iterdir() if p.is_file() and _wanted(vendor, _stem(p.name), only))
        if files:
            out[vendor] = tuple(files)
    return out


def microcode_cpio(config: Config, *, mtime: int = 0) -> bytes | None:
    """The early cpio for `config` (None when there is no microcode to carry)."""
    if not config.microcode:
        return None
    cpu = None if config.generic else host_cpu(config.procfs)
    blobs = microcode_blobs(config.root, cpu, config.generic)
    if not blobs:
        return None
    entries = []
    for vendor, files in sorted(blobs.items()):
        data = b"".join(_read(p) for p in files)
        path = f"/kernel/x86/microcode/{vendor}.bin"
        entries.append(Entry(path, stat.S_IFREG | 0o644, data=data, size=len(data), origin="microcode"))
    buf = io.BytesIO()
    write_cpio(buf, entries, mtime=mtime)
    return buf.getvalue()
