"""The symbols a kernel module needs, in the order depmod reads them (libkmod-elf.c,
kmod_elf_get_dependency_symbols): the undefined symbols of `.symtab` in table order, then the
`__versions` entries no such symbol names (module_layout and the like).

Only deporder.py's rare case needs this (a module whose dependencies' order the index files do not
settle), so it reads the whole decoded module with a struct walk.
"""

from __future__ import annotations

import struct

_SHT_SYMTAB = 2
_EM_SPARC, _EM_SPARCV9 = 2, 43


def needed_symbols(elf: bytes) -> list[str] | None:
    """The names, None for an ELF file this walk does not handle (then depmod does)."""
    if elf[:4] != b"\x7fELF" or elf[4] not in (1, 2) or elf[5] not in (1, 2):
        return None
    e = "<" if elf[5] == 1 else ">"
    wide = elf[4] == 2
    (machine,) = struct.unpack_from(e + "H", elf, 18)
    if machine in (_EM_SPARC, _EM_SPARCV9):
        return None  # register symbols are skipped there
    if wide:
        (shoff,) = struct.unpack_from(e + "Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", elf, 0x3A)
        shdr, sym = struct.Struct(e + "IIQQQQIIQQ"), struct.Struct(e + "IBBHQQ")
    else:
        (shoff,) = struct.unpack_from(e + "I", elf, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", elf, 0x2E)
        shdr, sym = struct.Struct(e + "IIIIIIIIII"), struct.Struct(e + "IIIBBH")
    headers = [shdr.unpack_from(elf, shoff + i * shentsize) for i in range(shnum)]
    names = _section(elf, headers[shstrndx])
    symtab = next((h for h in headers if h[1] == _SHT_SYMTAB), None)
    if symtab is None:
        return []
    strtab = _section(elf, headers[symtab[6]])
    table = _section(elf, symtab)
    out = []
    for i in range(1, len(table) // sym.size):
        fields = sym.unpack_from(table, i * sym.size)
        name_off, shndx = fields[0], (fields[3] if wide else fields[5])
        if shndx != 0:
            continue
        name = _cstr(strtab, name_off)
        if name:
            out.append(name)
    versions = next((h for h in headers if _cstr(names, h[0]) == "__versions"), None)
    if versions is not None:
        # struct modversion_info: an unsigned long crc, then the name, 64 bytes in all.
        data, crc = _section(elf, versions), 8 if wide else 4
        seen = set(out)
        for off in range(0, len(data) - 63, 64):
            name = _cstr(data, off + crc)
            if name not in seen:
                out.append(name)
    return out


def _section(elf: bytes, header: tuple[int, ...]) -> bytes:
    offset, size = header[4], header[5]
    return elf[offset : offset + size]


def _cstr(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    return data[offset : end if end >= 0 else len(data)].decode("ascii", "replace")
