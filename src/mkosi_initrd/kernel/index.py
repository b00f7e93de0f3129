"""The kernel's module index files, read once: the closure is computed from them, not from ELF files.

Measured on 6.1.0-56-amd64 (4023 modules): parsing modules.dep/alias/softdep/builtin takes ~0.04 s,
reading `.modinfo` of every module ~0.5 s (struct walk) or 10-17 s (pyelftools). So `.modinfo` is
read only for the modules that end up selected (modinfo.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel.modinfo import MODULE_SUFFIXES, ModInfo, parse_modinfo, parse_softdep

_GLOB_CHARS = re.compile(r"[*?\[]")


def normalize(name: str) -> str:
    """`-` and `_` are the same in module names and aliases (outside `[...]`, like libkmod)."""
    if "[" not in name:
        return name.replace("-", "_")
    out = []
    depth = 0
    for c in name:
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        out.append("_" if c == "-" and not depth else c)
    return "".join(out)


def strip_module_suffix(relpath: str) -> str:
    for suffix in MODULE_SUFFIXES[::-1]:  # longest first
        if relpath.endswith(suffix):
            return relpath[: -len(suffix)]
    return relpath


def module_name(relpath: str) -> str:
    """`kernel/drivers/md/dm-mod.ko.xz` → `dm_mod`."""
    return normalize(strip_module_suffix(relpath.rsplit("/", 1)[-1]))


def glob_match(name: str, pattern: str) -> bool:
    """fnmatchcase(name, pattern), without compiling a regex for the common `*`-only patterns.

    A host-only build matches its modaliases against ~700 distinct alias patterns; fnmatch
    compiles each one (~0.3 s in all), this walks the literal pieces with str.find."""
    if "?" in pattern or "[" in pattern:
        return fnmatchcase(name, pattern)
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return name == pattern
    first, last = pieces[0], pieces[-1]
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    pos, end = len(first), len(name) - len(last)
    for piece in pieces[1:-1]:
        pos = name.find(piece, pos, end)
        if pos < 0:
            return False
        pos += len(piece)
    return True


@dataclass
class AliasTable:
    """alias pattern → module names; literal aliases in a dict, globs indexed by their literal prefix."""

    exact: dict[str, list[str]] = field(default_factory=dict)
    by_prefix: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    prefix_lengths: list[int] = field(default_factory=list)

    def add(self, pattern: str, module: str) -> None:
        pattern = normalize(pattern)
        m = _GLOB_CHARS.search(pattern)
        if m is None:
            self.exact.setdefault(pattern, []).append(module)
        else:
            self.by_prefix.setdefault(pattern[: m.start()], []).append((pattern, module))

    def freeze(self) -> None:
        self.prefix_lengths = sorted({len(p) for p in self.by_prefix})

    def lookup(self, name: str) -> list[tuple[str, str]]:
        """(alias pattern, module) pairs whose pattern matches `name` (a modalias or an alias)."""
        name = normalize(name)
        found = [(name, m) for m in self.exact.get(name, ())]
        for n in self.prefix_lengths:
            if n > len(name):
                break
            for pattern, module in self.by_prefix.get(name[:n], ()):
                if glob_match(name, pattern):
                    found.append((pattern, module))
        return found


@dataclass
class KernelIndex:
    """What `/usr/lib/modules/KVER` says about its modules. Names are normalized (`_`)."""

    kver: str
    moddir: Path  # host path of /usr/lib/modules/KVER inside the root
    paths: dict[str, str]  # loadable module name → path relative to moddir
    deps: dict[str, tuple[str, ...]]  # module → its (transitive) dependencies from modules.dep
    builtin: dict[str, str]  # built-in module name → path as in modules.builtin
    softdeps: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # module → (pre, post)
    weakdeps: dict[str, tuple[str, ...]]
    aliases: AliasTable
    builtin_info: dict[str, ModInfo]

    def resolve(self, name: str) -> tuple[list[str], list[str]]:
        """A module name or alias (as in a softdep) → (loadable modules, built-in modules)."""
        n = normalize(name)
        if n in self.paths:
            return [n], []
        if n in self.builtin:
            return [], [n]
        mods = sorted({m for _, m in self.aliases.lookup(n)})
        return [m for m in mods if m in self.paths], [m for m in mods if m in self.builtin]

    def all_paths(self) -> Iterator[tuple[str, str, bool]]:
        """(name, relpath, builtin) of every module, loadable and built in."""
        for name, rel in self.paths.items():
            yield name, rel, False
        for name, rel in self.builtin.items():
            yield name, rel, True


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def _parse_dep(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    paths: dict[str, str] = {}
    deprels: dict[str, list[str]] = {}
    names: dict[str, str] = {}  # relpath → name; dependencies repeat the same paths
    for line in _lines(path):
        rel, _, rest = line.partition(":")
        name = names[rel] = module_name(rel)
        paths[name] = rel
        deprels[name] = rest.split()
    deps = {
        name: tuple(names[r] if r in names else module_name(r) for r in rels)
        for name, rels in deprels.items()
    }
    return paths, deps


def _parse_builtin_modinfo(path: Path) -> dict[str, ModInfo]:
    """`modname.key=value\\0...`: the .modinfo of every built-in module in one file."""
    if not path.exists():
        return {}
    per_module: dict[str, list[bytes]] = {}
    for item in path.read_bytes().split(b"\0"):
        mod, dot, kv = item.partition(b".")
        if dot and b"=" in kv:
            per_module.setdefault(normalize(mod.decode(errors="replace")), []).append(kv)
    return {m: parse_modinfo(b"\0".join(kvs)) for m, kvs in per_module.items()}


def _parse_softdep(path: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for line in _lines(path):
        words = line.split(None, 2)
        if len(words) == 3 and words[0] == "softdep":
            pre, post = parse_softdep(words[2])
            old_pre, old_post = out.get(normalize(words[1]), ((), ()))
            out[normalize(words[1])] = (old_pre + tuple(pre), old_post + tuple(post))
    return out


def _parse_weakdep(path: Path) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for line in _lines(path):
        words = line.split()
        if len(words) >= 3 and words[0] == "weakdep":
            out[normalize(words[1])] = out.get(normalize(words[1]), ()) + tuple(words[2:])
    return out


_ALIAS_LINE = re.compile(r"^alias ([^*?\[\s]*)(\S*) (\S+)", re.M)


def _alias_table(alias_file: Path, builtin_info: dict[str, ModInfo]) -> AliasTable:
    """One regex pass splits each alias into its literal prefix and the rest (26k lines: ~0.03 s)."""
    table = AliasTable()
    exact, by_prefix = table.exact, table.by_prefix
    text = alias_file.read_text(errors="replace") if alias_file.exists() else ""
    for prefix, rest, module in _ALIAS_LINE.findall(text):
        module = module.replace("-", "_")
        prefix = prefix.replace("-", "_")
        if not rest:
            exact.setdefault(prefix, []).append(module)
        else:
            by_prefix.setdefault(prefix, []).append((prefix + normalize(rest), module))
    for mod, info in builtin_info.items():
        for alias in info.alias:
            table.add(alias, mod)
    table.freeze()
    return table


def load_index(moddir: Path, kver: str) -> KernelIndex:
    """Read the index files of one kernel; a directory without modules.dep is an error."""
    if not (moddir / "modules.dep").exists():
        raise InitrdError(
            f"kernel {kver}: no modules.dep in {moddir}",
            hint=f"install the kernel's modules, or run 'depmod {kver}' in the root",
        )
    paths, deps = _parse_dep(moddir / "modules.dep")
    builtin = {module_name(rel): rel for rel in _lines(moddir / "modules.builtin")}
    builtin_info = _parse_builtin_modinfo(moddir / "modules.builtin.modinfo")
    return KernelIndex(
        kver=kver,
        moddir=moddir,
        paths=paths,
        deps=deps,
        builtin=builtin,
        softdeps=_parse_softdep(moddir / "modules.softdep"),
        weakdeps=_parse_weakdep(moddir / "modules.weakdep"),
        aliases=_alias_table(moddir / "modules.alias", builtin_info),
        builtin_info=builtin_info,
    )


def names_of(index: KernelIndex, names: Iterable[str]) -> list[str]:
    """Loadable module names among `names` (normalized), in order, unknown ones dropped."""
    return [n for n in (normalize(x) for x in names) if n in index.paths]
