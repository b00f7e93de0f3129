"""What the files of a plan need when they run, read once while planning (for build/check.py):

- ELF programs and libraries: their interpreter, DT_NEEDED sonames and RUNPATH (elfdyn.py);
- scripts: the `#!` interpreter (and for `#!/usr/bin/env NAME`, NAME);
- udev rules: the programs RUN, PROGRAM and IMPORT{program} run (relative names are udev's own);
- systemd units and their drop-ins: the programs of the Exec*= lines.

Module, firmware and /usr/share files are not read: nothing in them runs. A file that cannot be
read is left to the image writer, which names it.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Iterable

from mkosi_initrd.plan.model import Entry, FileNeeds
from mkosi_initrd.planner.elfdyn import read_links

SKIP_ORIGINS = ("kernel", "firmware")
SKIP_PREFIXES = ("/usr/lib/modules/", "/usr/lib/firmware/", "/usr/share/")
UDEV_DIR = "/usr/lib/udev"  # where udev runs a program named without a path from
UNIT_SUFFIXES = (".service", ".socket", ".mount", ".swap")
_HEAD = 4096
_MAX_TEXT = 1 << 20

_UDEV_PROGRAM = re.compile(r'\b(?:RUN(?:\{program\})?|PROGRAM|IMPORT\{program\})\s*\+?=\s*"([^"]*)"')
_EXEC = re.compile(
    r"^[ \t]*Exec(?:Start|StartPre|StartPost|Condition|Reload|Stop|StopPre|StopPost)[ \t]*=[ \t]*(.*)$",
    re.M,
)
_EXEC_PREFIXES = "@-:+!|"
# Conditions and assertions on a path: when it is not there, the unit does not run at all.
_PATH_CONDITION = re.compile(
    r"^[ \t]*(?:Condition|Assert)(?:PathExists|PathExistsGlob|PathIsDirectory|PathIsSymbolicLink|"
    r"PathIsMountPoint|PathIsReadWrite|DirectoryNotEmpty|FileNotEmpty|FileIsExecutable)[ \t]*=[ \t]*(\S+)",
    re.M,
)


def is_rules(path: str) -> bool:
    return path.endswith(".rules") and "/udev/rules.d/" in path


def is_unit(path: str) -> bool:
    """A system unit, or a drop-in of one (`NAME.service.d/*.conf`)."""
    if "/systemd/system/" not in path:
        return False
    if path.endswith(UNIT_SUFFIXES):
        return True
    parent = os.path.dirname(path)
    return path.endswith(".conf") and parent.endswith(tuple(f"{s}.d" for s in UNIT_SUFFIXES))


def _literal(program: str) -> bool:
    """A program name that names a file (no specifier or variable is expanded in it)."""
    return bool(program) and "$" not in program and "%" not in program


def rule_programs(text: str) -> list[str]:
    """The programs a udev rules file runs (absolute; udev's own directory for relative names)."""
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for value in _UDEV_PROGRAM.findall(line):
            words = value.split()
            if words and _literal(words[0]):
                out.append(words[0] if words[0].startswith("/") else f"{UDEV_DIR}/{words[0]}")
    return out


# A quoted word (with the quotes) or a plain one: enough to find each command's first word and the
# `;` words between commands (shlex would do the same, at 20 times the cost on ~300 lines).
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|\S+')


def _command_words(value: str) -> list[str]:
    return [w[1:-1] if w[:1] in "\"'" and len(w) > 1 else w for w in _WORD.findall(value)]


def unit_conditions(text: str) -> list[str]:
    """Paths (or globs) a unit's Condition*=/Assert*= lines need to exist for it to run at all, and
    `!PATH` for those that must not exist (`ConditionPathExists=!/etc/initrd-release`: never in an
    initrd); triggering (`|`) ones decide nothing alone and are left out."""
    return [v for v in _PATH_CONDITION.findall(text) if not v.startswith("|")]


def unit_programs(text: str) -> list[str]:
    """The programs of a unit's Exec*= lines (absolute, or a bare name systemd looks up in its
    search path). `;` as a word separates commands; `@-:+!|` prefix the first word; with `-`, a
    program that fails (or is missing) is ignored, so it is left out."""
    out = []
    for value in _EXEC.findall(text.replace("\\\n", " ")):
        command: list[str] = []
        for word in [*_command_words(value), ";"]:
            if word != ";":
                command.append(word)
                continue
            if command:
                prefix = command[0][: len(command[0]) - len(command[0].lstrip(_EXEC_PREFIXES))]
                program = command[0][len(prefix) :]
                if _literal(program) and "-" not in prefix:
                    out.append(program)
            command = []
    return out


def _shebang(head: bytes) -> tuple[str, tuple[str, ...]]:
    """A script's interpreter, and for `/usr/bin/env NAME` the program NAME."""
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        return "", ()
    if os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return words[0], tuple(names[:1])
    return words[0], ()


def _read(e: Entry, size: int) -> tuple[bytes, int | None]:
    """The first `size` bytes of the entry, and an open descriptor on its source (or None)."""
    if e.data is not None:
        return e.data[:size], None
    assert e.source is not None
    fd = os.open(e.source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, 0), fd
    except BaseException:
        os.close(fd)
        raise


def file_needs(e: Entry) -> FileNeeds | None:
    """What the file of `e` needs, or None when it needs nothing (or is not read)."""
    if e.source is None and e.data is None:
        return None
    text_file = is_rules(e.path) or is_unit(e.path)
    try:
        head, fd = _read(e, _MAX_TEXT if text_file else _HEAD)
    except OSError:
        return None
    try:
        if text_file:
            text = head.decode("utf-8", "replace")
            if is_rules(e.path):
                runs = rule_programs(text)
                return FileNeeds(runs=tuple(runs)) if runs else None
            runs = unit_programs(text)
            return FileNeeds(runs=tuple(runs), conditions=tuple(unit_conditions(text))) if runs else None
        if head.startswith(b"#!"):
            interpreter, names = _shebang(head)
            return FileNeeds(interpreter=interpreter, runs=names) if interpreter else None
        if head.startswith(b"\x7fELF"):
            return _elf_needs(e, head, fd)
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _elf_needs(e: Entry, head: bytes, fd: int | None) -> FileNeeds | None:
    if fd is None:
        return None  # generated entries are never programs
    try:
        links = read_links(fd, head)
    except (struct.error, OSError, ValueError, OverflowError):
        links = None  # a damaged ELF file: the loader would refuse it; not ours to judge here
    if links is None:
        return None
    return FileNeeds(interpreter=links.interpreter, needed=links.needed, runpath=links.runpath, elf=True)


def wanted(e: Entry) -> bool:
    return stat.S_ISREG(e.mode) and e.origin not in SKIP_ORIGINS and not e.path.startswith(SKIP_PREFIXES)


def scan(entries: Iterable[Entry]) -> dict[str, FileNeeds]:
    """Entry path → what it needs, for every regular file that needs something."""
    out = {}
    for e in entries:
        if wanted(e):
            needs = file_needs(e)
            if needs is not None:
                out[e.path] = needs
    return out
