"""What an ELF program or library needs from the file system to start: its interpreter (PT_INTERP),
its DT_NEEDED sonames and where it looks for them (DT_RUNPATH, else DT_RPATH).

Read with a few pread()s from the program headers and the dynamic segment, not with pyelftools:
the pre-flight check (build/check.py) needs this for every ELF file of an initrd (~450 on Debian), and
pyelftools takes about 1 ms per file where this takes 20 µs.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 15, 29
_ET_EXEC, _ET_DYN = 2, 3
_MAX_STRING = 4096
_MAX_READ = 1 << 20  # a damaged header must not make us read (or allocate) gigabytes


@dataclass(frozen=True)
class ElfLinks:
    interpreter: str = ""  # PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2; "" for libraries
    needed: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()  # directories as written ($ORIGIN unexpanded)


@dataclass(frozen=True)
class _Layout:
    end: str  # struct byte order
    wide: bool  # ELF64


def _layout(head: bytes) -> _Layout | None:
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    return _Layout("<" if head[5] == 1 else ">", head[4] == 2)


_PHDR = {True: ("IIQQQQQQ", 56), False: ("IIIIIIII", 32)}


def _program_headers(fd: int, head: bytes, lay: _Layout) -> list[tuple[int, int, int, int]] | None:
    """(p_type, p_offset, p_vaddr, p_filesz) of each program header; None for relocatables."""
    e = lay.end
    (etype,) = struct.unpack_from(e + "H", head, 16)
    if etype not in (_ET_EXEC, _ET_DYN):
        return None  # kernel modules and object files: nothing is loaded for them
    if lay.wide:
        (phoff,) = struct.unpack_from(e + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(e + "HH", head, 0x36)
    else:
        (phoff,) = struct.unpack_from(e + "I", head, 0x1C)
        phentsize, phnum = struct.unpack_from(e + "HH", head, 0x2A)
    fmt, size = _PHDR[lay.wide]
    if phentsize != size:
        return None
    end = phoff + size * phnum
    table = head[phoff:end] if end <= len(head) else os.pread(fd, size * phnum, phoff)
    if lay.wide:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, ...
        return [(p[0], p[2], p[3], p[5]) for p in struct.iter_unpack(e + fmt, table)]
    # p_type, p_offset, p_vaddr, p_paddr, p_filesz, ...
    return [(p[0], p[1], p[2], p[4]) for p in struct.iter_unpack(e + fmt, table)]


def _file_offset(phdrs: list[tuple[int, int, int, int]], vaddr: int) -> int | None:
    for ptype, off, start, filesz in phdrs:
        if ptype == _PT_LOAD and start <= vaddr < start + filesz:
            return vaddr - start + off
    return None


def _string(fd: int, offset: int, head: bytes = b"") -> str:
    end = head.find(b"\0", offset) if offset < len(head) else -1
    data = head[offset:end] if end >= 0 else os.pread(fd, _MAX_STRING, offset).split(b"\0", 1)[0]
    return data.decode("utf-8", "replace")


def _strings(fd: int, base: int, offsets: list[int]) -> list[str]:
    """NUL-terminated strings at `base + offset`, with one read for the range they span."""
    if not offsets:
        return []
    lo, hi = min(offsets), max(offsets)
    if hi - lo > _MAX_READ:
        return [_string(fd, base + o) for o in offsets]
    chunk = os.pread(fd, hi - lo + 256, base + lo)
    out = []
    for o in offsets:
        end = chunk.find(b"\0", o - lo)
        out.append(chunk[o - lo : end].decode("utf-8", "replace") if end >= 0 else _string(fd, base + o))
    return out


_WANTED_TAGS = (_DT_NEEDED, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH)


def _dynamic_tags(raw: bytes, lay: _Layout) -> dict[int, list[int]]:
    """Tag → values of the wanted entries of a dynamic section, up to DT_NULL: one struct call and
    tuple.index (in C) rather than a Python loop over its ~40 entries, as the check reads the
    dynamic section of every ELF file of the image."""
    step, code = (16, "q") if lay.wide else (8, "i")
    n = len(raw) // step
    flat = struct.unpack(f"{lay.end}{2 * n}{code}", raw[: n * step])
    tags, values = flat[0::2], flat[1::2]
    end = tags.index(_DT_NULL) if _DT_NULL in tags else n
    out: dict[int, list[int]] = {}
    for tag in _WANTED_TAGS:
        at = -1
        while True:
            try:
                at = tags.index(tag, at + 1, end)
            except ValueError:
                break
            out.setdefault(tag, []).append(values[at])
    return out


def read_links(fd: int, head: bytes) -> ElfLinks | None:
    """The links of the ELF file open as `fd` (`head`: its first bytes, 4 KiB or all of it);
    None when it is not a program or shared library. Malformed files raise struct.error, OSError,
    ValueError or OverflowError (offsets beyond any file)."""
    lay = _layout(head)
    if lay is None:
        return None
    phdrs = _program_headers(fd, head, lay)
    if phdrs is None:
        return None
    interp = next((_string(fd, off, head) for t, off, _, _ in phdrs if t == _PT_INTERP), "")
    dyn = next(((off, size) for t, off, _, size in phdrs if t == _PT_DYNAMIC), None)
    if dyn is None:
        return ElfLinks(interpreter=interp)  # static
    tags = _dynamic_tags(os.pread(fd, min(dyn[1], _MAX_READ), dyn[0]), lay)
    needed = tags.get(_DT_NEEDED, [])
    strtab = tags.get(_DT_STRTAB, [0])[0]
    rpath = tags.get(_DT_RUNPATH, tags.get(_DT_RPATH, [-1]))[0]  # DT_RUNPATH wins over DT_RPATH
    base = _file_offset(phdrs, strtab)
    if base is None:
        return ElfLinks(interpreter=interp)
    names = _strings(fd, base, [*needed, *([rpath] if rpath >= 0 else [])])
    dirs = names.pop().split(":") if rpath >= 0 else []
    return ElfLinks(interpreter=interp, needed=tuple(names), runpath=tuple(d for d in dirs if d))
