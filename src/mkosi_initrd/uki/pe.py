"""Append sections to a PE image (the systemd-stub), the way a UKI needs them.

pefile parses the stub and validates it; the output headers are packed here directly and the section data
is streamed to the output file, so a 60 MB initrd is never copied through pefile (whose checksum alone
costs seconds, and UEFI ignores the checksum: it is written as 0).

Layout rules (as UKI tooling does them):
- the stub's trailing COFF symbol/string table (old stubs keep one) is dropped;
- every section's raw data starts at a FileAlignment multiple and its raw size is a multiple of it;
- new sections go after the last one, VirtualAddress rounded up to SectionAlignment;
- a section whose name the stub already has (.sbat) replaces that section's data in place: its virtual
  address cannot move, so its VirtualSize is capped at the gap to the next section (no overlap when
  loaded), while the raw data keeps all of it (shim reads .sbat from the file's raw data);
- SizeOfHeaders grows (moving all raw data) when the section table needs more room; it cannot grow
  past the first section's virtual address, and that is a clear error.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import pefile

from mkosi_initrd.errors import InitrdError

SECTION_HEADER = struct.Struct("<8sIIIIIIHHI")
SCN_CNT_CODE = 0x00000020
SCN_CNT_INITIALIZED_DATA = 0x00000040
SCN_MEM_READ = 0x40000000
_SECURITY = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]


# Section content: bytes, or a file copied in by the kernel (copy_file_range), never read into memory.
Chunk = bytes | Path


@dataclass(frozen=True)
class Section:
    name: str
    chunks: tuple[Chunk, ...]
    virtual_size: int | None = None  # None: the content's size; .linux: the kernel's SizeOfImage
    code: bool = False  # .linux: old kernels using the EFI handover protocol are executed in place

    @staticmethod
    def of(name: str, data: bytes) -> Section:
        return Section(name, (data,))


def chunk_size(chunk: Chunk) -> int:
    return len(chunk) if isinstance(chunk, bytes) else chunk.stat().st_size


@dataclass(frozen=True)
class _Placed:
    name: bytes
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int
    characteristics: int
    rest: tuple[int, int, int, int]  # relocation/line-number fields, kept as the stub had them
    chunks: tuple[Chunk, ...]
    sizes: tuple[int, ...]  # of each chunk, taken once so that layout and copy agree

    @property
    def size(self) -> int:
        return sum(self.sizes)


def round_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def read_pe(path: Path, what: str) -> tuple[bytes, pefile.PE]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InitrdError(f"cannot read {what} {path}: {e.strerror}", hint="check the path") from e
    return data, parse(data, f"{what} {path}")


def parse(data: bytes, what: str) -> pefile.PE:
    try:
        return pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as e:
        raise InitrdError(f"{what} is not a PE image: {e}", hint="pass an EFI PE binary") from e


def is_signed(pe: pefile.PE) -> bool:
    security = pe.OPTIONAL_HEADER.DATA_DIRECTORY[_SECURITY]
    return bool(security.VirtualAddress and security.Size)


def signer_subjects(pe: pefile.PE, data: bytes) -> list[str]:
    """Subjects of the certificates in each Authenticode signature (WIN_CERTIFICATE entries).

    openssl decodes the PKCS#7 blobs; without it the list is empty (presence is is_signed()'s job).
    """
    security = pe.OPTIONAL_HEADER.DATA_DIRECTORY[_SECURITY]
    offset, end = security.VirtualAddress, security.VirtualAddress + security.Size
    subjects: list[str] = []
    while security.VirtualAddress and offset + 8 <= min(end, len(data)):
        length = struct.unpack_from("<I", data, offset)[0]
        if length <= 8:
            break
        blob = data[offset + 8 : offset + length]
        try:
            out = subprocess.run(
                ["openssl", "pkcs7", "-inform", "DER", "-print_certs", "-noout"],
                input=blob,
                capture_output=True,
                check=False,
            ).stdout.decode(errors="replace")
        except OSError:
            return []
        subjects += [
            line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith("subject=")
        ]
        offset += round_up(length, 8)
    return subjects


def section_name(s: pefile.SectionStructure) -> str:
    return bytes(s.Name).rstrip(b"\0").decode("ascii", "replace")


def find_section(pe: pefile.PE, name: str) -> pefile.SectionStructure | None:
    return next((s for s in pe.sections if section_name(s) == name), None)


def _strip_symbol_table(pe: pefile.PE, data: bytes) -> bytes:
    """Drop a COFF symbol + string table at the end of the file (image files should not carry one)."""
    start = pe.FILE_HEADER.PointerToSymbolTable
    if not start:
        return data
    end = start + 18 * pe.FILE_HEADER.NumberOfSymbols
    if end + 4 <= len(data):
        end += struct.unpack_from("<I", data, end)[0]
    return data[:start] if end == len(data) else data


def _existing(pe: pefile.PE, data: bytes) -> list[_Placed]:
    placed = []
    for s in pe.sections:
        raw = data[s.PointerToRawData : s.PointerToRawData + s.SizeOfRawData] if s.SizeOfRawData else b""
        rest = (s.PointerToRelocations, s.PointerToLinenumbers, s.NumberOfRelocations, s.NumberOfLinenumbers)
        placed.append(
            _Placed(
                bytes(s.Name),
                s.Misc_VirtualSize,
                s.VirtualAddress,
                0,
                0,
                s.Characteristics,
                rest,
                (raw,),
                (len(raw),),
            )
        )
    return placed


def _replace(old: _Placed, new: Section, next_va: int | None) -> _Placed:
    sizes = tuple(chunk_size(c) for c in new.chunks)
    size = new.virtual_size if new.virtual_size is not None else sum(sizes)
    if next_va is not None:
        size = min(size, next_va - old.virtual_address)
    return _Placed(
        old.name, size, old.virtual_address, 0, 0, old.characteristics, old.rest, new.chunks, sizes
    )


def _new(section: Section, virtual_address: int) -> _Placed:
    name = section.name.encode("ascii")
    if len(name) > 8:
        raise ValueError(f"PE section name longer than 8 bytes: {section.name}")
    flags = SCN_MEM_READ | (SCN_CNT_CODE if section.code else SCN_CNT_INITIALIZED_DATA)
    sizes = tuple(chunk_size(c) for c in section.chunks)
    size = section.virtual_size if section.virtual_size is not None else sum(sizes)
    return _Placed(
        name.ljust(8, b"\0"), size, virtual_address, 0, 0, flags, (0, 0, 0, 0), section.chunks, sizes
    )


def _layout(sections: list[_Placed], headers_size: int, file_alignment: int) -> list[_Placed]:
    out, offset = [], headers_size
    for s in sections:
        if not s.size:
            out.append(replace(s, raw_size=0, raw_offset=0))
            continue
        offset = round_up(offset, file_alignment)
        raw_size = round_up(s.size, file_alignment)
        out.append(replace(s, raw_size=raw_size, raw_offset=offset))
        offset += raw_size
    return out


def add_sections(stub_data: bytes, sections: Sequence[Section], out: BinaryIO, what: str = "stub") -> None:
    """Write `stub_data` with `sections` appended (or replacing same-named stub sections) to `out`."""
    pe = parse(stub_data, what)
    if is_signed(pe):
        raise InitrdError(
            f"{what} is signed; a UKI's stub must be unsigned (the whole UKI is signed instead)",
            hint="use the unsigned linux*.efi.stub from systemd-boot-efi / systemd-boot-unsigned",
        )
    opt = pe.OPTIONAL_HEADER
    fa, sa = opt.FileAlignment, opt.SectionAlignment
    data = _strip_symbol_table(pe, stub_data)
    placed = _existing(pe, data)
    n_stub = len(placed)
    for section in sections:
        index = next(
            (i for i, p in enumerate(placed[:n_stub]) if p.name.rstrip(b"\0") == section.name.encode()), None
        )
        if index is not None:
            next_va = placed[index + 1].virtual_address if index + 1 < n_stub else None
            placed[index] = _replace(placed[index], section, next_va)
            continue
        last = placed[-1]
        placed.append(_new(section, round_up(last.virtual_address + last.virtual_size, sa)))

    e_lfanew = pe.DOS_HEADER.e_lfanew
    opt_offset = e_lfanew + 4 + 20
    table = opt_offset + pe.FILE_HEADER.SizeOfOptionalHeader
    table_end = table + SECTION_HEADER.size * len(placed)
    headers_size = round_up(max(opt.SizeOfHeaders, table_end), fa)
    first_va = min(p.virtual_address for p in placed[:n_stub])
    if headers_size > first_va:
        room = (first_va - table) // SECTION_HEADER.size - n_stub
        raise InitrdError(
            f"{what} has header room for {room} more sections, {len(placed) - n_stub} are needed",
            hint="drop an optional section (--splash, --devicetree) or use a newer systemd-stub",
        )
    placed = _layout(placed, headers_size, fa)

    header = bytearray(data[: min(opt.SizeOfHeaders, len(data))].ljust(headers_size, b"\0"))
    struct.pack_into("<H", header, e_lfanew + 4 + 2, len(placed))
    struct.pack_into("<II", header, e_lfanew + 4 + 8, 0, 0)  # no symbol table
    flags = pe.FILE_HEADER.Characteristics | pefile.IMAGE_CHARACTERISTICS["IMAGE_FILE_LOCAL_SYMS_STRIPPED"]
    struct.pack_into("<H", header, e_lfanew + 4 + 18, flags)
    initialized = opt.SizeOfInitializedData + sum(p.virtual_size for p in placed[n_stub:] if not _is_code(p))
    struct.pack_into("<I", header, opt_offset + 8, initialized & 0xFFFFFFFF)
    last = placed[-1]
    struct.pack_into("<I", header, opt_offset + 56, round_up(last.virtual_address + last.virtual_size, sa))
    struct.pack_into("<I", header, opt_offset + 60, headers_size)
    struct.pack_into("<I", header, opt_offset + 64, 0)  # CheckSum: UEFI does not check it
    for i, p in enumerate(placed):
        SECTION_HEADER.pack_into(
            header,
            table + i * SECTION_HEADER.size,
            p.name,
            p.virtual_size,
            p.virtual_address,
            p.raw_size,
            p.raw_offset,
            *p.rest,
            p.characteristics,
        )
    out.write(header)
    position = headers_size
    for p in placed:
        if not p.raw_size:
            continue
        out.write(bytes(p.raw_offset - position))
        for chunk, size in zip(p.chunks, p.sizes, strict=True):
            if isinstance(chunk, bytes):
                out.write(chunk)
            else:
                _copy_file(chunk, out, size)
        out.write(bytes(p.raw_size - p.size))
        position = p.raw_offset + p.raw_size


def _copy_file(path: Path, out: BinaryIO, size: int) -> None:
    """Append `size` bytes of `path` to `out`: in the kernel (copy_file_range) when it can."""
    out.flush()
    with open(path, "rb") as src:
        left = size
        try:
            while left:
                n = os.copy_file_range(src.fileno(), out.fileno(), left)
                if n == 0:
                    break
                left -= n
        except OSError:
            # Not between these file systems: copy in user space from where the kernel stopped.
            while left:
                block = src.read(min(left, 1 << 20))
                if not block:
                    break
                out.write(block)
                left -= len(block)
        if left:
            raise InitrdError(f"{path} shrank while it was being copied into the UKI", hint="run again")


def _is_code(p: _Placed) -> bool:
    return bool(p.characteristics & SCN_CNT_CODE)
