"""The files of the chosen packages → archive entries.

Left out: docs, man/info pages, licenses (by flag and by path: dpkg has no flags), non-C
locales, ghost files and the removal globs. Paths are canonicalised inside the root: a database
that records `/bin/x` on a usrmerged root (`/bin -> usr/bin`) yields `/usr/bin/x`; a path is
kept once (the first package in closure order owns it). Types come from the disk (a directory
the database lists may be a symlink there, like `/bin`); permission bits from the database when
it records them. Regular files' sizes are read from the disk: those are the bytes copied.

A package whose files are not on the disk is an error (one per package, with the counts): the root
is incomplete or its database stale (a container's rpmdb, a partial copy), and an initrd made of
what is left would not boot. Ghost and missing-ok files are not expected on disk; config files
missing from a package that is otherwise there are a warning (an admin may delete one).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.log import log
from mkosi_initrd.packages.closure import Chosen
from mkosi_initrd.packages.model import FileEntry, FileFlag, Package, PackageDB
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.rootfs import CanonicalPaths, resolve_in_root

DOC_DIRS = (
    "/usr/share/doc",
    "/usr/share/man",
    "/usr/share/info",
    "/usr/share/gtk-doc",
    "/usr/share/licenses",
    "/usr/share/common-licenses",  # Debian's (base-files)
    "/usr/share/lintian",
    "/usr/share/bug",
)
_LOCALE_DIRS = ("/usr/share/locale/", "/usr/lib/locale/")
_C_LOCALES = ("C", "C.UTF-8", "C.utf8")
_SKIP_FLAGS = FileFlag.DOC | FileFlag.LICENSE | FileFlag.README | FileFlag.GHOST


@dataclass(frozen=True)
class PackageFiles:
    package: Package
    entries: tuple[Entry, ...]
    expected: int = 0  # files of the package the initrd takes, by the database
    absent: tuple[str, ...] = ()  # of those, the ones not in the root (config files aside)
    absent_config: tuple[str, ...] = ()

    def error(self, root: Path) -> str:
        """The one error for a package with absent files ("" when there are none)."""
        if not self.absent:
            return ""
        n = len(self.absent) + len(self.absent_config)
        return (
            f"{n} of {self.expected} files of {self.package.nevra} are not in the root {root}"
            f" (e.g. {self.absent[0]}): the root is incomplete or its database is stale"
        )

    def warning(self, root: Path) -> str:
        """The one warning for a package whose config files alone are absent."""
        if self.absent or not self.absent_config:
            return ""
        shown = ", ".join(self.absent_config[:3]) + (", ..." if len(self.absent_config) > 3 else "")
        return f"{self.package.nevra}: {len(self.absent_config)} config files are not in {root}: {shown}"

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries)


def glob_matcher(globs: Iterable[str]) -> re.Pattern[str] | None:
    """A path matches a glob when it, or one of its parent directories, does."""
    parts = [fnmatch.translate(g.rstrip("/")) for g in globs if g.strip()]
    parts += [fnmatch.translate(g.rstrip("/") + "/*") for g in globs if g.strip()]
    return re.compile("|".join(parts)) if parts else None


_DOC_PREFIXES = tuple(d + "/" for d in DOC_DIRS)


def is_doc(path: str) -> bool:
    return path.startswith(_DOC_PREFIXES) or path in DOC_DIRS


def foreign_locale(path: str, lang: str) -> bool:
    if lang and lang not in _C_LOCALES:
        return True
    for d in _LOCALE_DIRS:
        if path.startswith(d):
            first = path[len(d) :].split("/", 1)[0]
            # locale.alias is the one file directly in /usr/share/locale; everything else is a language.
            return first not in _C_LOCALES and first != "locale.alias"
    return False


class FileSelector:
    def __init__(self, root: Path, db: PackageDB, remove_globs: Iterable[str]) -> None:
        self.root = root
        self.rootstr = str(root).rstrip("/")
        self.db = db
        self.removed = glob_matcher(remove_globs)
        self.canon = CanonicalPaths(root)
        self.seen: set[str] = set()

    def wanted(self, f: FileEntry) -> bool:
        return not (f.flags & _SKIP_FLAGS or is_doc(f.path) or foreign_locale(f.path, f.lang))

    def entries(self, pkg: Package) -> PackageFiles:
        out = []
        expected = 0
        absent: list[str] = []
        absent_config: list[str] = []
        absent_dirs = 0
        for f in self.db.files(pkg):
            if not self.wanted(f):
                continue
            path = self.canon(f.path)
            if path in self.seen or is_doc(path) or (self.removed and self.removed.match(path)):
                continue
            expected += 1
            entry = self._entry(pkg, f, path)
            if entry is not None:
                self.seen.add(path)
                out.append(entry)
            elif not f.flags & FileFlag.MISSINGOK:
                (absent_config if f.flags & FileFlag.CONFIG else absent).append(f.path)
                absent_dirs += stat.S_ISDIR(f.mode)
        for path in (*absent, *absent_config):
            log.debug("%s: %s is not in %s", pkg.nevra, path, self.root)
        if absent_dirs:  # files first: the example the error gives is then a program or library
            modes = {f.path: f.mode for f in self.db.files(pkg)}
            absent.sort(key=lambda path: stat.S_ISDIR(modes.get(path, 0)))
        return PackageFiles(pkg, tuple(out), expected, tuple(absent), tuple(absent_config))

    def _entry(self, pkg: Package, f: FileEntry, path: str) -> Entry | None:
        host = self.rootstr + path
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return None
        mode = st.st_mode
        if f.mode and stat.S_IFMT(f.mode) == stat.S_IFMT(mode):
            mode = f.mode
        if stat.S_ISREG(mode):
            return Entry(
                path,
                mode,
                source=Path(host),
                size=st.st_size,
                hardlink=self._hardlink(pkg, f, st),
                origin=pkg.nevra,
            )
        if stat.S_ISLNK(mode):
            return Entry(path, mode, linkto=os.readlink(host), origin=pkg.nevra)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return Entry(path, mode, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)), origin=pkg.nevra)
        return Entry(path, mode, origin=pkg.nevra)

    def _hardlink(self, pkg: Package, f: FileEntry, st: os.stat_result) -> str:
        if f.inode and f.nlink > 1:
            return f"{pkg.key}:{f.inode}"  # the database knows which files of a package are one
        if not f.inode and st.st_nlink > 1:
            return f"{st.st_dev}:{st.st_ino}"
        return ""


def package_entries(
    root: Path,
    db: PackageDB,
    chosen: Sequence[Chosen],
    remove_globs: Iterable[str],
    taken: Iterable[str] = (),
) -> tuple[list[PackageFiles], list[str]]:
    """Entries per chosen package (closure order decides who owns a shared path), and warnings
    (the errors are the packages' own: PackageFiles.error). `taken`: paths that packages chosen
    earlier (another call) already own."""
    sel = FileSelector(root, db, remove_globs)
    sel.seen.update(taken)
    result = [sel.entries(c.package) for c in chosen]
    return result, [w for pf in result if (w := pf.warning(root))]


def extra_entries(root: Path, extra: Iterable[tuple[str, str]]) -> list[Entry]:
    """Config ExtraFiles: (source inside the root, destination in the initrd); directories recurse."""
    out: list[Entry] = []
    for src, dst in extra:
        host = resolve_in_root(root, src)
        if not host.exists():
            from mkosi_initrd.errors import InitrdError

            raise InitrdError(
                f"extra file {src} does not exist in {root}", hint="fix ExtraFiles= in the config"
            )
        items = [(host, dst)]
        if host.is_dir():
            items += [
                (p, dst.rstrip("/") + "/" + p.relative_to(host).as_posix()) for p in sorted(host.rglob("*"))
            ]
        for p, d in items:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(d, st.st_mode, linkto=os.readlink(p), origin="extra"))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(d, st.st_mode, origin="extra"))
            else:
                out.append(Entry(d, st.st_mode, source=p, size=st.st_size, origin="extra"))
    return out
