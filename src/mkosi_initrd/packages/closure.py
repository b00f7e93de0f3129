"""The package closure: from list entries to every installed package they need, and why.

Breadth-first, so each package's chain is a shortest one from a list entry. Only runtime
requirements are followed (not scriptlet-only ones, not a scriptlet's or trigger's interpreter,
not rpmlib()), weak ones only on request.
An `or` picks an alternative already in the closure, else the first installed one. Conditional
rich dependencies (`if`/`unless`) are decided once the closure is otherwise complete, so their
conditions see every package. A requirement whose only providers are excluded becomes a
CutEdge; one that nothing installed provides is a warning (the package database is what it is).
"""

from __future__ import annotations

import fnmatch
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages import richdep
from mkosi_initrd.packages.model import Dep, DepKind, Package, PackageDB
from mkosi_initrd.plan.model import CutEdge

_NOT_RUNTIME = (
    DepKind.PRE
    | DepKind.POST
    | DepKind.PREUN
    | DepKind.POSTUN
    | DepKind.PRETRANS
    | DepKind.POSTTRANS
    | DepKind.VERIFY
    | DepKind.RPMLIB
    | DepKind.CONFIG
    | DepKind.INTERP
)


@dataclass(frozen=True)
class Request:
    """One list entry: a package name, a virtual provide or a file path."""

    entry: str
    origin: str  # "list", "profile:lvm", "config" ...: the first link of every chain
    optional: bool = False

    @classmethod
    def parse(cls, line: str, origin: str) -> Request:
        optional = line.endswith("?")
        return cls(line.rstrip("?").strip(), origin, optional)

    @property
    def label(self) -> str:
        return f"{self.origin}:{self.entry}"


@dataclass(frozen=True)
class Chosen:
    package: Package
    reason: tuple[str, ...]  # ("list:systemd", "systemd", "libc6")


@dataclass(frozen=True)
class Closure:
    packages: tuple[Chosen, ...]
    cut_edges: tuple[CutEdge, ...]
    missing: tuple[str, ...]  # optional entries that are not installed
    warnings: tuple[str, ...]  # requirements nothing installed provides


class Excluder:
    """Package-name globs that never go in (the exclusion list), and names the user removed."""

    def __init__(self, patterns: Iterable[str], removed: Iterable[str] = ()) -> None:
        pats = list(patterns)
        self._re = re.compile("|".join(fnmatch.translate(p) for p in pats)) if pats else None
        self.removed = frozenset(removed)

    def __call__(self, pkg: Package) -> bool:
        return pkg.name in self.removed or bool(self._re and self._re.match(pkg.name))


def runtime(dep: Dep) -> bool:
    return not (dep.kind & _NOT_RUNTIME) and not dep.name.startswith("rpmlib(")


class _Resolver:
    def __init__(self, db: PackageDB, excluded: Excluder, weak_deps: bool) -> None:
        self.db = db
        self.excluded = excluded
        self.weak_deps = weak_deps
        self.chosen: dict[str, Chosen] = {}
        self.queue: deque[Chosen] = deque()
        self.deferred: list[tuple[Package, richdep.Cond, tuple[str, ...]]] = []
        self.cut: dict[tuple[str, str], CutEdge] = {}
        self.warnings: list[str] = []
        self._prov_cache: dict[Dep, list[Package]] = {}

    # --- queries

    def providers(self, dep: Dep) -> list[Package]:
        key = Dep(dep.name, dep.op, dep.evr)
        found = self._prov_cache.get(key)
        if found is None:
            found = self._prov_cache[key] = self.db.providers(key)
        return found

    def _in(self, pkgs: Iterable[Package]) -> bool:
        return any(p.key in self.chosen for p in pkgs)

    def _candidates(self, node: richdep.Node) -> list[Package] | None:
        """Packages that would satisfy an Atom/with/without node (None for other nodes)."""
        if isinstance(node, richdep.Atom):
            return self.providers(node.dep)
        if isinstance(node, richdep.Bool) and node.op in ("with", "without"):
            sets = [self._candidates(a) or [] for a in node.args]
            if node.op == "with":
                keys = set.intersection(*({p.key for p in s} for s in sets))
            else:
                keys = {p.key for p in sets[0]} - {p.key for s in sets[1:] for p in s}
            return [p for p in sets[0] if p.key in keys]
        return None

    def holds(self, node: richdep.Node) -> bool:
        """Is `node` satisfied by the closure as it stands?"""
        cands = self._candidates(node)
        if cands is not None:
            return self._in(cands)
        if isinstance(node, richdep.Bool):
            test = all if node.op == "and" else any
            return test(self.holds(a) for a in node.args)
        assert isinstance(node, richdep.Cond)
        if self.holds(node.cond) == (node.op == "if"):
            return self.holds(node.then)
        return node.otherwise is None or self.holds(node.otherwise)

    def can(self, node: richdep.Node) -> bool:
        """Could `node` be satisfied with installed packages that are not excluded?"""
        cands = self._candidates(node)
        if cands is not None:
            return any(p.key in self.chosen or not self.excluded(p) for p in cands)
        if isinstance(node, richdep.Bool):
            test = all if node.op == "and" else any
            return test(self.can(a) for a in node.args)
        return True  # conditionals are decided later

    # --- building

    def add(self, pkg: Package, reason: tuple[str, ...]) -> None:
        if pkg.key not in self.chosen:
            chosen = self.chosen[pkg.key] = Chosen(pkg, reason)
            self.queue.append(chosen)

    def best(self, cands: Sequence[Package], wanted: str, arch: str) -> Package:
        def rank(p: Package) -> tuple[int, int, str]:
            return (p.name != wanted, p.arch not in (arch, "noarch", "all"), p.name)

        return min(cands, key=rank)

    def require(self, who: Chosen, node: richdep.Node, text: str, weak: bool = False) -> None:
        pkg = who.package
        cands = self._candidates(node)
        if cands is not None:
            wanted = node.dep.name if isinstance(node, richdep.Atom) else ""
            if self._in(cands):
                return
            allowed = [p for p in cands if not self.excluded(p)]
            if allowed:
                best = self.best(allowed, wanted, pkg.arch)
                self.add(best, (*who.reason, best.name))
            elif not weak:
                self.unsatisfiable(pkg, node, text)
            return
        if isinstance(node, richdep.Cond):
            self.deferred.append((pkg, node, who.reason))
            return
        assert isinstance(node, richdep.Bool)
        if node.op == "and":
            for arg in node.args:
                self.require(who, arg, richdep.to_text(arg), weak)
            return
        # or: an alternative already satisfied, else the first that can be, else report the whole.
        if any(self.holds(a) for a in node.args):
            return
        pick = next((a for a in node.args if self.can(a)), None)
        if pick is not None:
            self.require(who, pick, richdep.to_text(pick), weak)
        elif not weak:
            self.unsatisfiable(pkg, node, text)

    def unsatisfiable(self, pkg: Package, node: richdep.Node, text: str) -> None:
        """Nothing allowed satisfies `node`: a cut edge if something installed would, else a warning."""
        installed = sorted({p.name for d in richdep.atoms(node) for p in self.providers(d)})
        if installed:
            self.cut.setdefault((pkg.name, text), CutEdge(pkg.name, text, ", ".join(installed)))
        else:
            self.warnings.append(f"{pkg.nevra} requires {text}, which nothing installed provides")

    def follow(self, who: Chosen) -> None:
        pkg = who.package
        deps = [(d, False) for d in pkg.requires if runtime(d)]
        if self.weak_deps:
            deps += [(d, True) for d in pkg.recommends]
        for dep, weak in deps:
            if dep.rich:
                try:
                    node = richdep.parse(dep.name)
                except richdep.RichDepError as e:
                    self.warnings.append(f"{pkg.nevra}: {e}")
                    continue
            else:
                node = richdep.Atom(dep)
            self.require(who, node, str(dep), weak)

    def drain(self) -> None:
        while self.queue:
            self.follow(self.queue.popleft())

    def settle(self) -> None:
        """Run to a fixpoint, deciding conditionals: first those whose condition came true,
        then (when nothing else moves) the remaining ones by their `else`/`unless` branch."""
        self.drain()
        while self.deferred:
            pending, self.deferred = self.deferred, []
            decided = False
            later = []
            for pkg, cond, reason in pending:
                if self.holds(cond.cond):
                    branch = cond.then if cond.op == "if" else cond.otherwise
                    if branch is not None:
                        self.require(Chosen(pkg, reason), branch, richdep.to_text(branch))
                    decided = True
                else:
                    later.append((pkg, cond, reason))
            self.deferred += later
            self.drain()
            if decided:
                continue
            pending, self.deferred = self.deferred, []
            for pkg, cond, reason in pending:
                branch = cond.otherwise if cond.op == "if" else cond.then
                if branch is not None:
                    self.require(Chosen(pkg, reason), branch, richdep.to_text(branch))
            self.drain()


def resolve(
    db: PackageDB,
    requests: Sequence[Request],
    excluded: Excluder,
    weak_deps: bool = False,
    seed: Sequence[Chosen] = (),
) -> Closure:
    """The closure of `requests`. A non-optional entry that is not installed is an error.

    `seed`: a closure already made (of other requests); only what `requests` add to it is returned,
    as if all had been resolved at once. Seed packages with conditional requirements are followed
    again, since what is added may make a condition true."""
    r = _Resolver(db, excluded, weak_deps)
    for c in seed:
        r.chosen[c.package.key] = c
        if any(d.rich and (" if " in d.name or " unless " in d.name) for d in c.package.requires):
            r.queue.append(c)
    missing = []
    for req in requests:
        dep = Dep(req.entry)
        cands = r.providers(dep)
        if not cands:
            if req.optional:
                missing.append(req.entry)
                continue
            raise not_installed(db, req)
        if r._in(cands):
            continue
        # List entries may name what the exclusion list keeps out (asking is explicit), but
        # not what the user removed.
        allowed = [p for p in cands if p.name not in excluded.removed]
        if allowed:
            best = r.best(allowed, req.entry, "")
            r.add(best, (req.label, best.name))
    r.settle()
    seeded = {c.package.key for c in seed}
    return Closure(
        packages=tuple(c for c in r.chosen.values() if c.package.key not in seeded),
        cut_edges=tuple(r.cut.values()),
        missing=tuple(missing),
        warnings=tuple(dict.fromkeys(r.warnings)),
    )


def not_installed(db: PackageDB, req: Request) -> InitrdError:
    known = getattr(db, "known_providers", None)
    candidates: list[str] = known(req.entry) if known else []
    what = "file" if req.entry.startswith("/") else "package or provide"
    where = f" (from {req.origin})" if req.origin else ""
    if candidates:
        hint = f"install {' or '.join(candidates)}, which would provide it, or remove the entry"
    else:
        hint = "install the package that provides it, or remove the entry (or mark it optional with '?')"
    return InitrdError(f"{what} {req.entry!r}{where} is not installed in {db.root}", hint=hint)
