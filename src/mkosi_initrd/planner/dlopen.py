"""Libraries that included programs load with dlopen(), declared in `.note.dlopen` ELF notes.

Package dependencies do not name dlopen()ed libraries (systemd loads libtss2, libfido2,
libcryptsetup's plugins, p11-kit ... at run time), so an initrd built from the dependency closure
alone would fail TPM2/FIDO2/pkcs11 unlocking. systemd (and others) describe these libraries in
notes of type 0x407c0c0a, owner "FDO", whose payload is a JSON array of
{"feature", "description", "priority", "soname": [...]}. Each soname found installed in the root
is wanted in the initrd, together with the libraries it needs itself (DT_NEEDED).

Loaders without notes (systemd before 256, libtss2-tctildr) are described by a data file instead,
by soname, never by package name (names change: libtss2-mu0 became libtss2-mu-4.0.1-0t64):
resources/dlopen.list, `LOADER WHEN FEATURE SONAME...`, LOADER a file-name glob. A line counts when
a file it names is in the initrd and, for WHEN=undeclared, carries no notes of its own: a systemd
that declares its dlopen()s is taken at its word.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import mmap
import os
import re
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkosi_initrd.log import log
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.rootfs import resolve_in_root

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

# pyelftools is imported where an ELF file is parsed: most builds find no file carrying a note
# (the section-name pre-check below), and its import is a fifth of the planner's.

NOTE_TYPE = 0x407C0C0A
NOTE_OWNER = "FDO"
SECTION = b".note.dlopen"
# Where sonames are looked up in the root, in the dynamic loader's default order (multiarch first).
LIBDIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/lib",
)


SKIP_PREFIXES = ("/usr/lib/modules/", "/usr/lib/firmware/", "/usr/share/")


@dataclass(frozen=True)
class DlopenNote:
    binary: str  # path in the initrd of the ELF file carrying the note
    feature: str
    priority: str  # "required", "recommended" or "suggested"
    sonames: tuple[str, ...]  # alternatives: any one of them is enough


def _elf(path: Path) -> ELFFile | None:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        return ELFFile(f)
    except ELFError:
        f.close()
        return None


def _mentions_section(path: Path) -> bool:
    """Cheap pre-check: the section name string table (a few hundred bytes, found through the ELF
    header) holds the note's section name. Three small reads instead of scanning the whole file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _shstrtab_mentions(fd, SECTION)
    except (OSError, struct.error):
        return False
    finally:
        os.close(fd)


def _shstrtab_mentions(fd: int, name: bytes) -> bool:
    ident = os.pread(fd, 64, 0)
    if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return False
    end = "<" if ident[5] == 1 else ">"
    if ident[4] == 2:  # ELF64: e_shoff at 0x28, e_shentsize/e_shnum/e_shstrndx at 0x3a
        (shoff,) = struct.unpack_from(end + "Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", ident, 0x3A)
        entry_fmt, entry_at = end + "QQ", 0x18  # sh_offset, sh_size
    else:  # ELF32
        (shoff,) = struct.unpack_from(end + "I", ident, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", ident, 0x2E)
        entry_fmt, entry_at = end + "II", 0x10
    if shoff == 0 or shnum == 0 or shstrndx == 0:
        return False
    if shstrndx >= 0xFF00:  # SHN_XINDEX and friends: rare, read the names the long way
        return _scan_whole(fd, name)
    header = os.pread(fd, shentsize, shoff + shstrndx * shentsize)
    offset, size = struct.unpack_from(entry_fmt, header, entry_at)
    return name in os.pread(fd, min(size, 1 << 20), offset)


def _scan_whole(fd: int, name: bytes) -> bool:
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
        return m.find(name) >= 0


def notes_of(path: Path, name: str = "") -> list[DlopenNote]:
    """The dlopen notes of one ELF file ([] for non-ELF files and files without them); read once per
    process (`mkosi-initrd sysext` plans base and extension, the same files twice)."""
    try:
        st = path.stat()
    except OSError:
        return _read_notes(path, name)
    return list(_cached_notes(path, st.st_size, st.st_mtime_ns, name))


@functools.cache
def _cached_notes(path: Path, size: int, mtime_ns: int, name: str) -> tuple[DlopenNote, ...]:
    return tuple(_read_notes(path, name))


def _read_notes(path: Path, name: str) -> list[DlopenNote]:
    if not _mentions_section(path):
        return []
    elf = _elf(path)
    if elf is None:
        return []
    from elftools.elf.sections import NoteSection

    out: list[DlopenNote] = []
    try:
        for section in elf.iter_sections():
            if not isinstance(section, NoteSection):
                continue
            note: Any
            for note in section.iter_notes():
                if note["n_type"] != NOTE_TYPE or note["n_name"] != NOTE_OWNER:
                    continue
                out += _parse_payload(note["n_descdata"], name or str(path))
    finally:
        elf.stream.close()
    return out


def _parse_payload(desc: bytes, binary: str) -> list[DlopenNote]:
    try:
        items = json.loads(desc.rstrip(b"\0").decode())
    except (UnicodeDecodeError, ValueError):
        log.warning("%s: unreadable .note.dlopen payload, ignored", binary)
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        sonames = item.get("soname", [])
        if isinstance(sonames, str):
            sonames = [sonames]
        out.append(
            DlopenNote(
                binary,
                str(item.get("feature", "")),
                str(item.get("priority", "recommended")),
                tuple(str(s) for s in sonames),
            )
        )
    return out


def needed(path: Path) -> list[str]:
    """DT_NEEDED sonames of an ELF file, from its SHT_DYNAMIC section and the string table that
    section links to. Read with a few preads: pyelftools' import and object model cost more than
    the libraries a dlopen() closure walks (measured: 80 ms for 18 libraries, 45 of them the import)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        return _dt_needed(fd)
    except (OSError, struct.error, IndexError):
        return []
    finally:
        os.close(fd)


def _dt_needed(fd: int) -> list[str]:
    ident = os.pread(fd, 64, 0)
    if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return []
    end = "<" if ident[5] == 1 else ">"
    if ident[4] == 2:  # ELF64
        (shoff,) = struct.unpack_from(end + "Q", ident, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", ident, 0x3A)
        shdr, dyn = end + "IIQQQQII", end + "qQ"
    else:
        (shoff,) = struct.unpack_from(end + "I", ident, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", ident, 0x2E)
        shdr, dyn = end + "IIIIIIII", end + "iI"
    if shoff == 0 or shnum == 0:
        return []  # no section headers (or more than 0xff00 of them): nothing to read here
    table = os.pread(fd, shentsize * shnum, shoff)
    # (sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info) of each section
    sections = [struct.unpack_from(shdr, table, i * shentsize)[1:8] for i in range(shnum)]
    for sh_type, _flags, _addr, offset, size, link, _info in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        data = os.pread(fd, size, offset)
        step = struct.calcsize(dyn)
        tags = [struct.unpack_from(dyn, data, i) for i in range(0, len(data) - step + 1, step)]
        _t, _f, _a, str_offset, str_size, _l, _i = sections[link]
        strings = os.pread(fd, str_size, str_offset)
        out = []
        for tag, value in tags:
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                out.append(strings[value : strings.index(b"\0", value)].decode(errors="replace"))
        return out
    return []


def find_library(root: Path, soname: str) -> str | None:
    """Path inside the root (canonical, symlinks resolved in-root) of an installed soname."""
    for d in LIBDIRS:
        host = resolve_in_root(root, f"{d}/{soname}")
        if host.is_file():
            return "/" + str(host.relative_to(root))
    return None


def scan(entries: Iterable[Entry]) -> list[DlopenNote]:
    """Notes of every regular file in `entries` copied from the root (modules and firmware skipped)."""
    out = []
    for e in entries:
        if e.source is None or not stat.S_ISREG(e.mode) or e.path.startswith(SKIP_PREFIXES):
            continue
        out += notes_of(Path(e.source), e.path)
    return out


@dataclass(frozen=True)
class Fallback:
    """A dlopen() its loader does not declare (a line of resources/dlopen.list)."""

    loader: str  # file-name glob: libsystemd-shared-*.so
    always: bool  # False: only for a loader without notes of its own
    feature: str
    sonames: tuple[str, ...]  # alternatives, as in a note

    @classmethod
    def parse(cls, line: str) -> Fallback:
        loader, when, feature, *sonames = line.split()
        if when not in ("always", "undeclared") or not sonames:
            raise ValueError(f"dlopen.list: bad line {line!r}")
        return cls(loader, when == "always", feature, tuple(sonames))


def _fallback_notes(
    root: Path, fallbacks: Sequence[Fallback], paths: Iterable[str], noted: set[str]
) -> list[DlopenNote]:
    """Notes for the fallback lines whose loader is among `paths` (initrd paths) without notes."""
    if not fallbacks:
        return []
    # One pattern for all loaders: a few thousand paths are matched once each.
    any_loader = re.compile("|".join(fnmatch.translate(fb.loader) for fb in fallbacks))
    out = []
    for path in sorted(set(paths)):
        name = path.rsplit("/", 1)[-1]
        if not any_loader.match(name):
            continue
        declares = path in noted or bool(notes_of(resolve_in_root(root, path)))
        out += [
            DlopenNote(path, fb.feature, "recommended", fb.sonames)
            for fb in fallbacks
            if fnmatch.fnmatchcase(name, fb.loader) and (fb.always or not declares)
        ]
    return out


def dlopen_libraries(
    root: Path, entries: Iterable[Entry], fallbacks: Sequence[Fallback] = ()
) -> tuple[list[str], list[DlopenNote]]:
    """Library paths in the root wanted by the notes of `entries` (plus their DT_NEEDED closure),
    and the notes none of whose sonames is installed. `fallbacks` stand in for the notes of
    loaders that have none, also where a loader comes in as a wanted library's DT_NEEDED."""
    entries = list(entries)
    have = {e.path for e in entries}
    notes = scan(entries)
    noted = {n.binary for n in notes}
    files = [e.path for e in entries if e.source is not None and stat.S_ISREG(e.mode)]
    wanted: list[str] = []
    unmet: list[DlopenNote] = []
    seen: set[str] = set()
    checked: set[str] = set()
    pending = notes + _fallback_notes(root, fallbacks, files, noted)
    checked.update(files)
    while pending:
        queue: list[str] = []
        for note in pending:
            found = [p for p in (find_library(root, s) for s in note.sonames) if p]
            if not found:
                unmet.append(note)
            queue += found
        added = _needed_closure(root, queue, seen)
        wanted += [p for p in added if p not in have]
        fresh = [p for p in added if p not in checked]
        checked.update(fresh)
        pending = _fallback_notes(root, fallbacks, fresh, noted)
    return sorted(set(wanted)), unmet


def _needed_closure(root: Path, queue: list[str], seen: set[str]) -> list[str]:
    """`queue` and the libraries they need (DT_NEEDED), transitively, skipping `seen` (updated)."""
    out = []
    while queue:
        p = queue.pop(0)
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        for so in needed(resolve_in_root(root, p)):
            lib = find_library(root, so)
            if lib and lib not in seen:
                queue.append(lib)
    return out
