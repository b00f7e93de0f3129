"""rpm backend: the root's rpmdb through python3-rpm, opened read-only.

Headers are read once; provides are indexed in Python and matched with rpm's own range
comparison (`rpm.ds.Compare`), file requirements go to the `basenames` index (which resolves
directory symlinks inside the root, so `/bin/sh` finds `/usr/bin/sh` on a usrmerged root).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages.locations import RPMDB_PATHS, rpmdb_path
from mkosi_initrd.packages.model import Dep, DepKind, FileEntry, FileFlag, Package

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


def find_dbpath(root: Path) -> str:
    path = rpmdb_path(root)
    if path is not None:
        return "/" + path
    raise InitrdError(
        f"no rpm database in {root} (looked in {', '.join('/' + p for p in RPMDB_PATHS)})",
        hint="point --root at an rpm-based system, or use --backend dpkg",
    )


class RpmDB:
    backend = "rpm"

    def __init__(self, root: Path) -> None:
        rpm = _import_rpm()
        self.root = root
        self.dbpath = find_dbpath(root)
        rpm.setVerbosity(rpm.RPMLOG_CRIT)
        # %_dbpath is global state in librpm: set it for this open only (Debian's default is ~/.rpmdb).
        rpm.addMacro("_dbpath", self.dbpath)
        try:
            self.ts = rpm.TransactionSet(str(root))
            self.ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
            self.ts.openDB()
            self._headers: dict[str, Any] = {}
            self._pkgs: list[Package] = []
            mi = self.ts.dbMatch()
            for h in mi:
                self._add(rpm, str(mi.instance()), h)
        except rpm.error as e:
            raise InitrdError(
                f"cannot read the rpm database {root}{self.dbpath}: {e}",
                hint="check that it is readable and not damaged (rpm --root R --dbpath ... -qa)",
            ) from e
        finally:
            rpm.delMacro("_dbpath")
        if not self._pkgs:
            raise InitrdError(
                f"the rpm database {root}{self.dbpath} lists no packages (empty or damaged)",
                hint="check it with: rpm --root R --dbpath ... -qa",
            )
        self._by_key = {p.key: p for p in self._pkgs}
        self._provides: dict[str, list[tuple[Package, Dep]]] = {}
        for p in self._pkgs:
            for prov in p.provides:
                self._provides.setdefault(prov.name, []).append((p, prov))
        self._ds_cache: dict[tuple[str, str, str], Any] = {}

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
        if dep.name.startswith("/"):
            return self._file_providers(dep.name)
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
        found = []
        mi = self.ts.dbMatch("basenames", path)
        for _h in mi:
            pkg = self._by_key.get(str(mi.instance()))
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
