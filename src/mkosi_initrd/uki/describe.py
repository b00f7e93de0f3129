"""`mkosi-initrd inspect` of a UKI (or a UKI addon): its sections, command line, os-release, uname, SBAT,
signatures (of the UKI and of the kernel inside), and the files of its .initrd and .ucode."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pefile

from mkosi_initrd import osrelease
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image import cpioread
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki.pe import read_pe
from mkosi_initrd.uki.stub import stub_version

ADDON_SECTIONS = (".cmdline", ".initrd", ".ucode", ".dtb", ".dtbauto")  # what systemd-stub takes from addons
KNOWN_SECTIONS = (".osrel", ".cmdline", ".dtb", ".uname", ".splash", ".initrd", ".ucode", ".linux", ".sbat")


def is_uki(path: Path) -> bool:
    """A PE file with a .linux section is a unified kernel image; a plain bzImage has none."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"MZ":
                return False
        pe = pefile.PE(str(path), fast_load=True)
    except (OSError, pefile.PEFormatError):
        return False
    try:
        return pemod.find_section(pe, ".linux") is not None
    finally:
        pe.close()


def _text(section: pefile.SectionStructure | None) -> str | None:
    if section is None:
        return None
    # The raw data, not just VirtualSize bytes: a merged .sbat may be longer than its capped VirtualSize.
    data: bytes = section.get_data()
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def describe(path: Path) -> dict[str, Any]:
    """What a UKI holds: sections, cmdline, os-release, uname, SBAT, signatures, the initrd's files."""
    data, pe = read_pe(path, "UKI")
    if pemod.find_section(pe, ".linux") is None:
        if any(pemod.find_section(pe, n) is not None for n in ADDON_SECTIONS):
            return describe_addon(path, data, pe)
        raise InitrdError(f"{path} is a PE image without a .linux section, not a UKI or a UKI addon")
    sections = _sections(pe)

    linux = _payload(pe, ".linux")
    linux_pe = pemod.parse(linux, f".linux of {path}") if linux else None
    osrel = _text(pemod.find_section(pe, ".osrel"))
    sbat = _text(pemod.find_section(pe, ".sbat"))
    version = stub_version(pe)
    return {
        "path": str(path),
        "type": "uki",
        "size": len(data),
        "signed": pemod.is_signed(pe),
        "signers": pemod.signer_subjects(pe, data),
        "stub_version": version,
        "sections": sections,
        "cmdline": _text(pemod.find_section(pe, ".cmdline")),
        "uname": _text(pemod.find_section(pe, ".uname")),
        "osrel": osrelease.parse(osrel) if osrel is not None else None,
        "sbat": sbat.splitlines() if sbat else [],
        "linux": {
            "size": len(linux),
            "signed": bool(linux_pe and pemod.is_signed(linux_pe)),
            "signers": pemod.signer_subjects(linux_pe, linux) if linux_pe else [],
        },
        "initrd": _describe_initrd(_payload(pe, ".initrd")),
        "ucode": _describe_initrd(_payload(pe, ".ucode")) if pemod.find_section(pe, ".ucode") else None,
    }


def _sections(pe: pefile.PE) -> list[dict[str, Any]]:
    return [
        {
            "name": pemod.section_name(s),
            "virtual_address": s.VirtualAddress,
            "virtual_size": s.Misc_VirtualSize,
            "file_offset": s.PointerToRawData,
            "file_size": s.SizeOfRawData,
        }
        for s in pe.sections
    ]


def _payload(pe: pefile.PE, name: str) -> bytes:
    s = pemod.find_section(pe, name)
    return bytes(s.get_data()[: s.Misc_VirtualSize]) if s is not None else b""


def describe_addon(path: Path, data: bytes, pe: pefile.PE) -> dict[str, Any]:
    """A UKI addon (uki/addon.py): its sections, command line, SBAT, signature, initrd and ucode files."""
    from mkosi_initrd.uki.addon import addon_version

    sbat = _text(pemod.find_section(pe, ".sbat"))
    has = {name: pemod.find_section(pe, name) is not None for name in (".initrd", ".ucode")}
    return {
        "path": str(path),
        "type": "addon",
        "size": len(data),
        "signed": pemod.is_signed(pe),
        "signers": pemod.signer_subjects(pe, data),
        "stub_version": addon_version(pe),
        "sections": _sections(pe),
        "cmdline": _text(pemod.find_section(pe, ".cmdline")),
        "sbat": sbat.splitlines() if sbat else [],
        "initrd": _describe_initrd(_payload(pe, ".initrd")) if has[".initrd"] else None,
        "ucode": _describe_initrd(_payload(pe, ".ucode")) if has[".ucode"] else None,
    }


def _describe_initrd(data: bytes) -> dict[str, Any]:
    if not data:
        return {"size": 0, "segments": [], "files": []}
    # cpioread reads files; a section is small enough to pass through a temp file.
    with tempfile.NamedTemporaryFile(prefix="mkosi-initrd-uki-") as f:
        f.write(data)
        f.flush()
        try:
            segments, _ = cpioread.read_segments(Path(f.name))
        except InitrdError as e:  # an unreadable initrd should not hide the rest of the UKI
            return {"size": len(data), "segments": [], "files": [], "error": e.message}
    return {
        "size": len(data),
        "segments": [
            {"offset": s.offset, "compression": s.compression, "files": len(s.members)} for s in segments
        ],
        "files": [m.path for m in cpioread.iter_members(segments)],
    }


def format_description(d: Mapping[str, Any], list_files: bool = False) -> str:
    """Human-readable `mkosi-initrd inspect` output for a UKI or an addon."""
    signed = f"signed by {'; '.join(d['signers']) or '?'}" if d["signed"] else "unsigned"
    addon = d.get("type") == "addon"
    out = [f"{d['path']}: {'UKI addon' if addon else 'UKI'}, {d['size']} bytes, {signed}"]
    if d.get("stub_version"):
        out.append(f"  stub: systemd-{'addon' if addon else 'stub'} {d['stub_version']}")
    if not addon:
        out.append(f"  uname: {d['uname']}")
    out.append(f"  cmdline: {d['cmdline']}")
    if d.get("osrel"):
        out.append(f"  osrel: {d['osrel'].get('PRETTY_NAME') or d['osrel'].get('NAME', '?')}")
    if not addon:
        kernel_signers = "; ".join(d["linux"].get("signers", [])) or "?"
        signed_kernel = f"signed by {kernel_signers}" if d["linux"]["signed"] else "unsigned"
        out.append(f"  kernel: {d['linux']['size']} bytes, {signed_kernel}")
    out.append("  sections:")
    for s in d["sections"]:
        out.append(
            f"    {s['name']:<9} vma {s['virtual_address']:#010x} size {s['virtual_size']:>10}"
            f"  file {s['file_offset']:#010x} +{s['file_size']}"
        )
    out.append("  sbat:")
    out += [f"    {line}" for line in d["sbat"]]
    for key in ("ucode", "initrd"):
        part = d.get(key)
        if not part:
            continue
        segs = ", ".join(f"{s['compression']} ({s['files']} files)" for s in part["segments"])
        segs = f"unreadable: {part['error']}" if part.get("error") else segs
        out.append(f"  {key}: {part['size']} bytes: {segs or 'empty'}")
        if list_files:
            out += [f"    {name}" for name in part["files"]]
    return "\n".join(out) + "\n"
