"""dpkg backend: `var/lib/dpkg/status`, `info/*.list`, `diversions`, read-only.

Dependencies become `Dep` values in the rpm vocabulary so the closure has one language:
`a (>= 1) | b` is the rich dependency `(a >= 1 or b)`; `<<`/`>>` become `<`/`>`.
dpkg records no file metadata, so `files()` returns mode 0 ("read it from disk").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages import debversion
from mkosi_initrd.packages.model import Dep, FileEntry, FileFlag, Package
from mkosi_initrd.rootfs import CanonicalPaths

_OPS = {"<<": "<", "<=": "<=", "=": "=", ">=": ">=", ">>": ">", "<": "<=", ">": ">="}
_REL = re.compile(
    r"^\s*([^\s(\[<]+)\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?\s*(?:\[[^\]]*\])?\s*(?:<[^>]*>\s*)*$"
)


@functools.lru_cache(maxsize=4096)
def parse_relation(text: str) -> Dep:
    """`name[:arch] [(op version)]` → Dep (arch restrictions `[...]` and profiles `<...>` dropped)."""
    m = _REL.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse dependency {text!r}")
    name, op, evr = m.groups()
    return Dep(name, _OPS[op], evr) if op else Dep(name)


def parse_depends(field: str) -> list[Dep]:
    """A Depends-style field → one Dep per comma-separated group; alternatives become rich `or` deps."""
    deps = []
    for group in field.split(","):
        if not group.strip():
            continue
        alts = [parse_relation(a) for a in group.split("|")]
        if len(alts) == 1:
            deps.append(alts[0])
        else:
            deps.append(Dep("(" + " or ".join(str(a) for a in alts) + ")", rich=True))
    return deps


class Damaged(ValueError):
    """A status line that is neither `Field: value` nor a continuation (the text says which)."""


def _parse_stanza(stanza: str) -> dict[str, str]:
    """Fields of one status stanza; of the multi-line fields only Conffiles is kept (the
    descriptions are most of the file and never needed)."""
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.split("\n"):
        if line[:1] in (" ", "\t"):
            if not key:
                raise Damaged(line)
            if key == "Conffiles":
                fields[key] += "\n" + line.strip()
        elif ":" in line and " " not in line.partition(":")[0]:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        elif line:
            raise Damaged(line)
    if fields and ("Package" not in fields or "Status" not in fields):
        raise Damaged(stanza.split("\n", 1)[0])
    return fields


def _damaged(status: Path, text: str, line: str) -> InitrdError:
    at = text.find(line)
    n = text.count("\n", 0, at) + 1 if at >= 0 else 0
    where = f"line {n}" if n else "its end"
    return InitrdError(
        f"the dpkg database {status} is damaged at {where}: {line[:80]!r}",
        hint=f"restore it from {status.parent.parent.parent}/backups/dpkg.status.0 (dpkg's daily copy), "
        "or repair it with dpkg; then build again",
    )


def _is_installed(status: str) -> bool:
    want, _, state = (status.split() + ["", "", ""])[:3]
    return want in ("install", "hold") and state == "installed"


class DpkgDB:
    backend = "dpkg"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notes: list[str] = []
        self.admindir = root / "var/lib/dpkg"
        try:
            text = (self.admindir / "status").read_text(errors="replace")
        except OSError as e:
            raise InitrdError(f"cannot read dpkg status {self.admindir}/status: {e.strerror}") from e
        self.native_arch = self._native_arch()
        self._pkgs: list[Package] = []
        self._fields: dict[str, dict[str, str]] = {}
        self._by_name: dict[str, list[Package]] = {}
        self._provides: dict[str, list[tuple[Package, Dep]]] = {}
        self._file_index: dict[str, list[Package]] | None = None
        self._canon: CanonicalPaths | None = None
        self._primed: dict[str, list[Package]] = {}  # prime_files(): owners of some paths
        self._lists: dict[str, bytes] = {}  # package key → its file list
        self._known: dict[str, list[str]] = {}  # name or provide → packages dpkg knows, not installed
        status = self.admindir / "status"
        if text and not text.endswith("\n"):
            raise _damaged(status, text, text.rsplit("\n", 1)[-1])  # cut off while it was written
        for stanza in text.split("\n\n"):
            if stanza.strip():
                try:
                    fields = _parse_stanza(stanza.strip("\n"))
                except Damaged as e:
                    raise _damaged(status, text, str(e)) from e
                self._add(fields)
        if not self._pkgs:
            raise InitrdError(
                f"the dpkg database {status} lists no installed package",
                hint="point --root at an installed system, or restore the database from /var/backups",
            )
        self._diversions = self._read_diversions()
        if not self.native_arch and "dpkg" in self._by_name:
            self.native_arch = self._by_name["dpkg"][0].arch  # dpkg itself is always native

    def _native_arch(self) -> str:
        # dpkg keeps the native architecture in its `arch` file (newer dpkg) or implies it by the
        # architecture of dpkg itself; fall back to the common case.
        try:
            return (self.admindir / "arch").read_text().split()[0]
        except (OSError, IndexError):
            return ""

    def _add(self, f: dict[str, str]) -> None:
        if "Package" not in f:
            return
        if not _is_installed(f.get("Status", "")):
            for name in [f["Package"]] + [d.name for d in parse_depends(f.get("Provides", ""))]:
                self._known.setdefault(name.partition(":")[0], []).append(f["Package"])
            return
        epoch, upstream, revision = debversion.split(f.get("Version", "0"))
        try:
            pkg = Package(
                name=f["Package"],
                epoch=epoch or None,
                version=upstream,
                release=revision,
                arch=f.get("Architecture", "all"),
                requires=tuple(
                    parse_depends(f.get("Pre-Depends", "")) + parse_depends(f.get("Depends", ""))
                ),
                provides=tuple(parse_depends(f.get("Provides", ""))),
                recommends=tuple(parse_depends(f.get("Recommends", ""))),
                key=f"{f['Package']}:{f.get('Architecture', 'all')}",
            )
        except ValueError as e:
            raise InitrdError(
                f"dpkg status of {f['Package']}: {e}", hint="is var/lib/dpkg/status damaged?"
            ) from e
        self._pkgs.append(pkg)
        self._fields[pkg.key] = f
        self._by_name.setdefault(pkg.name, []).append(pkg)
        for prov in pkg.provides:
            self._provides.setdefault(prov.name, []).append((pkg, prov))

    def _read_diversions(self) -> dict[str, str]:
        """Diverted path → the package that diverted it (":" for a local diversion)."""
        try:
            lines = (self.admindir / "diversions").read_text().splitlines()
        except OSError:
            return {}
        return {lines[i]: lines[i + 2] for i in range(0, len(lines) - 2, 3)}

    # --- PackageDB protocol

    def packages(self) -> Sequence[Package]:
        return self._pkgs

    def full_version(self, pkg: Package) -> str:
        return self._fields[pkg.key].get("Version", "0")

    def multi_arch(self, pkg: Package) -> str:
        return self._fields[pkg.key].get("Multi-Arch", "no")

    def providers(self, dep: Dep) -> list[Package]:
        if dep.name.startswith("/"):
            canon = self._canonical(dep.name)
            primed = self._primed.get(canon)
            return list(primed if primed is not None else self._files().get(canon, []))
        name, _, qual = dep.name.partition(":")
        found: list[Package] = []
        for pkg in self._by_name.get(name, []):
            if self._arch_ok(pkg, qual) and debversion.satisfies(self.full_version(pkg), dep.op, dep.evr):
                found.append(pkg)
        for pkg, prov in self._provides.get(name, []):
            # A versioned dependency is only satisfied by a versioned (`=`) provide.
            if dep.op and not (prov.op == "=" and debversion.satisfies(prov.evr, dep.op, dep.evr)):
                continue
            if pkg not in found and self._arch_ok(pkg, qual):
                found.append(pkg)
        return found

    def _arch_ok(self, pkg: Package, qual: str) -> bool:
        if not qual or qual == "any":
            # Without a qualifier any installed architecture is accepted: dpkg already checked
            # co-installability; `:any` needs Multi-Arch: allowed, which dpkg also enforced.
            return True
        if qual == "native":
            return pkg.arch in (self.native_arch, "all") or not self.native_arch
        return pkg.arch == qual

    def files(self, pkg: Package) -> Sequence[FileEntry]:
        fields = self._fields[pkg.key]
        conffiles = {line.split()[0] for line in fields.get("Conffiles", "").splitlines() if line.strip()}
        entries = []
        for path in self._list(pkg):
            by = self._diversions.get(path)
            if by is not None and by != pkg.name:
                continue  # diverted away: the diverter (or the admin) owns what is at `path`
            flags = FileFlag.CONFIG if path in conffiles else FileFlag.NONE
            entries.append(FileEntry(path=path, mode=0, size=0, flags=flags))
        return entries

    def known_providers(self, name: str) -> list[str]:
        """Packages dpkg knows of (removed, config-files only, ...) that would provide `name`."""
        return sorted(set(self._known.get(name, [])))

    def vercmp(self, a: str, b: str) -> int:
        return debversion.compare(a, b)

    # --- helpers

    def _list(self, pkg: Package) -> list[str]:
        return [p for p in self._list_text(pkg).splitlines() if p and p != "/."]

    def _list_text(self, pkg: Package) -> str:
        return self._list_bytes(pkg).decode(errors="surrogateescape")

    def _list_bytes(self, pkg: Package) -> bytes:
        """The package's file list (info/PKG[:ARCH].list), every line ending in a newline; kept, as
        prime_files() may pass over all of them twice (8 MB on a full Debian 12 host)."""
        data = self._lists.get(pkg.key)
        if data is not None:
            return data
        data = b""
        info = self.admindir / "info"
        for name in (f"{pkg.name}:{pkg.arch}.list", f"{pkg.name}.list"):
            try:
                data = (info / name).read_bytes()
            except FileNotFoundError:
                continue
            data = data if data.endswith(b"\n") or not data else data + b"\n"
            break
        self._lists[pkg.key] = data
        return data

    def _canonical(self, path: str) -> str:
        if self._canon is None:
            self._canon = CanonicalPaths(self.root)
        return self._canon(path)

    def _files(self) -> dict[str, list[Package]]:
        """Canonical path → owners, built on first use (file-path entries not primed need it)."""
        if self._file_index is None:
            index: dict[str, list[Package]] = {}
            for pkg in self._pkgs:
                for path in self._list(pkg):
                    index.setdefault(self._canonical(path), []).append(pkg)
            self._file_index = index
        return self._file_index

    def prime_files(self, paths: Iterable[str]) -> None:
        """Find the owners of just these paths (file-path list entries, dlopen()ed libraries): one
        pass over the file lists for their names, instead of indexing the 100,000 files of every
        package (0.2 s on a full Debian 12 host) for a handful of lookups."""
        wanted = {self._canonical(p) for p in paths} - self._primed.keys()
        if not wanted or self._file_index is not None:
            return
        names = {w.rpartition("/")[2] for w in wanted}
        needles = [f"/{n}\n".encode(errors="surrogateescape") for n in names]
        found: dict[str, list[Package]] = {w: [] for w in wanted}
        for pkg in self._pkgs:
            data = self._list_bytes(pkg)  # bytes: most lists hold none of the names, none is decoded
            if not any(n in data for n in needles):
                continue
            for path in data.decode(errors="surrogateescape").splitlines():
                if path.rpartition("/")[2] in names:
                    owners = found.get(self._canonical(path))
                    if owners is not None:
                        owners.append(pkg)
        self._primed.update(found)
