"""rpm backend: the root's rpmdb through python3-rpm, opened read-only.

Headers are read once; provides are indexed in Python and matched with rpm's own range
comparison (`rpm.ds.Compare`). A file requirement is satisfied, as in rpm's dependency check and
`rpm -q --whatprovides`, by the packages owning that file (rpm's `instfilenames` lookup, which
resolves directory symlinks inside the root, so `/bin/sh` finds `/usr/bin/sh` on a usrmerged
root), else by those providing the path by name (`Provides: /bin/sh`: what answers where the
root lacks the `/bin` symlink, in a database-only root).

A Berkeley DB database without its index files (`Packages` alone, as container images and
copied databases have) is read through its headers; the file lookup then uses an index built
here the same way (packages/fileindex.py). The database is the first of RPMDB_PATHS that lists
packages: an empty one (rpm creates an empty `rpmdb.sqlite` when queried with the wrong
--dbpath) is passed over with a note.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages.fileindex import FileIndex
from mkosi_initrd.packages.locations import RPMDB_FILES, RPMDB_PATHS
from mkosi_initrd.packages.model import Dep, DepKind, EmptyDatabase, FileEntry, FileFlag, Package

_rpm: Any = None


def _import_rpm() -> Any:
    global _rpm
    if _rpm is None:
        try:
            import rpm
        except ImportError as e:
            raise InitrdError(
                "the rpm Python binding is not available",
                hint="install python3-rpm (Debian/Fedora); in a venv also `pip install rpm` (the shim)",
            ) from e
        _rpm = rpm
    return _rpm


_Flag = TypeVar("_Flag", DepKind, FileFlag)


def _flags(value: int, bits: Iterable[tuple[int, _Flag]], none: _Flag) -> _Flag:
    """rpm's bit field → our flag set, by a (bit, flag) table."""
    out = none
    for bit, flag in bits:
        if value & bit:
            out |= flag
    return out


@functools.cache
def _dep_kinds(rpm: Any) -> tuple[tuple[int, DepKind], ...]:
    return (
        (rpm.RPMSENSE_SCRIPT_PRE, DepKind.PRE),
        (rpm.RPMSENSE_SCRIPT_POST, DepKind.POST),
        (rpm.RPMSENSE_SCRIPT_PREUN, DepKind.PREUN),
        (rpm.RPMSENSE_SCRIPT_POSTUN, DepKind.POSTUN),
        (rpm.RPMSENSE_PRETRANS, DepKind.PRETRANS),
        (rpm.RPMSENSE_POSTTRANS, DepKind.POSTTRANS),
        (rpm.RPMSENSE_SCRIPT_VERIFY, DepKind.VERIFY),
        (rpm.RPMSENSE_INTERP, DepKind.INTERP),
        (rpm.RPMSENSE_RPMLIB, DepKind.RPMLIB),
        (rpm.RPMSENSE_CONFIG, DepKind.CONFIG),
    )


@functools.cache
def _file_flags(rpm: Any) -> tuple[tuple[int, FileFlag], ...]:
    return (
        (rpm.RPMFILE_CONFIG, FileFlag.CONFIG),
        (rpm.RPMFILE_DOC, FileFlag.DOC),
        (rpm.RPMFILE_LICENSE, FileFlag.LICENSE),
        (rpm.RPMFILE_GHOST, FileFlag.GHOST),
        (rpm.RPMFILE_README, FileFlag.README),
        (rpm.RPMFILE_MISSINGOK, FileFlag.MISSINGOK),
    )


def _op(rpm: Any, flags: int) -> str:
    sense = flags & (rpm.RPMSENSE_LESS | rpm.RPMSENSE_GREATER | rpm.RPMSENSE_EQUAL)
    return {
        0: "",
        rpm.RPMSENSE_LESS: "<",
        rpm.RPMSENSE_LESS | rpm.RPMSENSE_EQUAL: "<=",
        rpm.RPMSENSE_EQUAL: "=",
        rpm.RPMSENSE_GREATER | rpm.RPMSENSE_EQUAL: ">=",
        rpm.RPMSENSE_GREATER: ">",
    }.get(sense, "")


_SENSE = {"": 0, "<": 2, "<=": 10, "=": 8, ">=": 12, ">": 4}  # RPMSENSE_LESS=2 GREATER=4 EQUAL=8


def _deps(rpm: Any, h: Any, tag: str) -> tuple[Dep, ...]:
    out = []
    for d in rpm.ds(h, tag):
        flags = d.Flags()
        out.append(
            Dep(
                d.N(),
                _op(rpm, flags),
                d.EVR() or "",
                _flags(flags, _dep_kinds(rpm), DepKind.RUNTIME),
                bool(d.IsRich()),
            )
        )
    return tuple(out)


def _split_evr(evr: str) -> tuple[str, str, str]:
    epoch, _, vr = evr.rpartition(":")
    version, _, release = vr.partition("-")
    return epoch or "0", version, release


def dbpaths(root: Path) -> list[str]:
    """The locations in `root` that hold an rpm database file, in RPMDB_PATHS order."""
    return ["/" + p for p in RPMDB_PATHS if any((root / p / f).exists() for f in RPMDB_FILES)]


def find_dbpath(root: Path) -> str:
    found = dbpaths(root)
    if not found:
        raise InitrdError(
            f"no rpm database in {root} (looked in {', '.join('/' + p for p in RPMDB_PATHS)})",
            hint="point --root at an rpm-based system, or use --backend dpkg",
        )
    return found[0]


class RpmDB:
    backend = "rpm"

    def __init__(self, root: Path) -> None:
        rpm = _import_rpm()
        self.root = root
        self.notes: list[str] = []
        self._headers: dict[str, Any] = {}
        self._pkgs: list[Package] = []
        rpm.setVerbosity(rpm.RPMLOG_CRIT)
        locations = dbpaths(root) or [find_dbpath(root)]
        empty = []
        for dbpath in locations:
            self.dbpath = dbpath
            self.ts = self._open(rpm, dbpath)
            if self._pkgs:
                break
            empty.append(f"{root}{dbpath}")
            self.ts.closeDB()
        if not self._pkgs:
            raise EmptyDatabase(
                f"the rpm database {' and '.join(empty)} lists no packages (empty or damaged)",
                hint=f"check it with: rpm --root {root} --dbpath {locations[-1]} -qa",
            )
        for e in empty:
            self.notes.append(
                f"{e} lists no packages, using {root}{self.dbpath} (rpm creates an empty database "
                f"when queried with a --dbpath the system does not use; remove it if nothing does)"
            )
        self._by_key = {p.key: p for p in self._pkgs}
        self._provides: dict[str, list[tuple[Package, Dep]]] = {}
        for p in self._pkgs:
            for prov in p.provides:
                self._provides.setdefault(prov.name, []).append((p, prov))
        self._ds_cache: dict[tuple[str, str, str], Any] = {}
        self._own_files = not self._index_works()
        self._lookup: FileIndex | None = None  # built on the first file lookup that needs it
        if self._own_files:
            self.notes.append(
                f"{root}{self.dbpath} has no file index (a Berkeley DB without its index files): file"
                " requirements are resolved from the package headers (rpm --rebuilddb recreates it)"
            )

    def _open(self, rpm: Any, dbpath: str) -> Any:
        """Open `dbpath` and read every header (none for an empty database)."""
        # %_dbpath is global state in librpm: set it for this open only (Debian's default is ~/.rpmdb).
        rpm.addMacro("_dbpath", dbpath)
        try:
            ts = rpm.TransactionSet(str(self.root))
            ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
            ts.openDB()
            mi = ts.dbMatch()
            for h in mi:
                self._add(rpm, str(mi.instance()), h)
        except rpm.error as e:
            raise InitrdError(
                f"cannot read the rpm database {self.root}{dbpath}: {e}",
                hint="check that it is readable and not damaged:"
                f" rpm --root {self.root} --dbpath {dbpath} -qa",
            ) from e
        finally:
            rpm.delMacro("_dbpath")
        return ts

    def _index_works(self) -> bool:
        """Does rpm's file index answer? It is missing from a Berkeley DB copied without its
        index files: then a file of a package, asked for, is found in none."""
        for key, h in self._headers.items():
            names = h[_rpm.RPMTAG_FILENAMES]
            if names:
                mi = self.ts.dbMatch("basenames", names[0])
                return any(str(mi.instance()) == key for _h in mi)
        return True  # no package has files: nothing to look up

    def _own_index(self) -> FileIndex:
        rpm = _rpm
        tags = (rpm.RPMTAG_DIRNAMES, rpm.RPMTAG_DIRINDEXES, rpm.RPMTAG_BASENAMES, rpm.RPMTAG_FILESTATES)
        return FileIndex(self.root, ((key, *(h[t] for t in tags)) for key, h in self._headers.items()))

    def _add(self, rpm: Any, key: str, h: Any) -> None:
        if h["name"] == "gpg-pubkey":
            return  # keys imported into the db, not packages
        epoch = h["epoch"]
        pkg = Package(
            name=h["name"],
            epoch=int(epoch) if epoch is not None else None,
            version=h["version"],
            release=h["release"],
            arch=h["arch"] or "noarch",
            requires=_deps(rpm, h, "requires"),
            provides=_deps(rpm, h, "provides"),
            recommends=_deps(rpm, h, "recommends"),
            key=key,
        )
        self._headers[key] = h
        self._pkgs.append(pkg)

    # --- PackageDB protocol

    def packages(self) -> Sequence[Package]:
        return self._pkgs

    def providers(self, dep: Dep) -> list[Package]:
        # A path: the packages owning that file, else those providing it by name (as rpm's
        # dependency check and `rpm -q --whatprovides` do).
        if dep.name.startswith("/") and (owners := self._file_providers(dep.name)):
            return owners
        found: list[Package] = []
        for pkg, prov in self._provides.get(dep.name, []):
            if pkg not in found and self._overlap(prov, dep):
                found.append(pkg)
        return found

    def files(self, pkg: Package) -> Sequence[FileEntry]:
        rpm = _rpm
        h = self._headers[pkg.key]
        langs = h[rpm.RPMTAG_FILELANGS] or []
        out = []
        for i, f in enumerate(rpm.files(h)):
            if f.state not in (rpm.RPMFILE_STATE_NORMAL, rpm.RPMFILE_STATE_REPLACED):
                continue  # not on disk: excluded docs or languages, netshared, other colour
            out.append(
                FileEntry(
                    path=f.name,
                    mode=f.mode,
                    size=f.size,
                    linkto=f.linkto or "",
                    digest=f.digest or "",
                    flags=_flags(f.fflags, _file_flags(rpm), FileFlag.NONE),
                    lang=langs[i] if i < len(langs) else "",
                    inode=f.inode,
                    nlink=f.nlink,
                )
            )
        return out

    def vercmp(self, a: str, b: str) -> int:
        return int(_rpm.labelCompare(_split_evr(a), _split_evr(b)))

    # --- helpers

    def _file_providers(self, path: str) -> list[Package]:
        """Packages owning `path` with the file installed (not replaced, excluded or of another colour)."""
        if self._own_files:
            self._lookup = self._lookup or self._own_index()
            keys = self._lookup.owners(path)
        else:
            mi = self.ts.dbMatch("instfilenames", path)
            keys = [str(mi.instance()) for _h in mi]
        found = []
        for key in keys:
            pkg = self._by_key.get(key)
            if pkg is not None and pkg not in found:
                found.append(pkg)
        return found

    def _ds(self, name: str, op: str, evr: str, tag: str) -> Any:
        key = (name + "\0" + tag, op, evr)
        ds = self._ds_cache.get(key)
        if ds is None:
            ds = self._ds_cache[key] = _rpm.ds((name, _SENSE[op], evr), tag)
        return ds

    def _overlap(self, prov: Dep, req: Dep) -> bool:
        if not req.op or not prov.op:
            return True  # an unversioned provide satisfies any version, as in rpm
        p = self._ds(prov.name, prov.op, prov.evr, "providename")
        r = self._ds(req.name, req.op, req.evr, "requirename")
        return bool(p.Compare(r))
