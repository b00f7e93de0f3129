"""The kernel's module index files, read once: the closure is computed from them, not from ELF files.

Measured on 6.1.0-56-amd64 (4023 modules): parsing modules.dep/alias/softdep/builtin takes ~0.04 s,
reading `.modinfo` of every module ~0.5 s (struct walk) or 10-17 s (pyelftools). So `.modinfo` is
read only for the modules that end up selected (modinfo.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
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
    # modules.softdep and modules.weakdep hold what the modules' .modinfo say (kmod >= 33 writes
    # both, with these headers): the closure then needs no .modinfo, only the firmware step does.
    modinfo_indexed: bool = False

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


def _lines(path: Path, text: str | None = None) -> Iterator[str]:
    if text is None:
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _damaged(path: Path, kver: str, what: str) -> InitrdError:
    return InitrdError(
        f"kernel {kver}: {path} is damaged: {what}",
        hint=f"regenerate it with 'depmod {kver}' (in the root), or reinstall the kernel's modules",
    )


def _read_index(path: Path, kver: str) -> str:
    """An index file's text; one that does not end with a newline was cut off while written."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        raise _damaged(path, kver, f"its last line is cut off ({text.rsplit(chr(10), 1)[-1][:60]!r})")
    return text


def _parse_dep(path: Path, kver: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """modules.dep: `relpath: dep-relpath ...` for every module. Anything else is damage, never an
    empty or smaller selection: a line that is no such line, a dependency without a line of its
    own (depmod writes one for every module: lines are missing)."""
    paths: dict[str, str] = {}
    deprels: dict[str, list[str]] = {}
    names: dict[str, str] = {}  # relpath → name; dependencies repeat the same paths
    for n, line in enumerate(_read_index(path, kver).splitlines(), 1):
        rel, sep, rest = line.partition(":")
        if not sep or ":" in rest or not rel.endswith(MODULE_SUFFIXES) or " " in rel:
            if line.strip():
                raise _damaged(path, kver, f"line {n} is not a module and its dependencies: {line[:80]!r}")
            continue
        name = names[rel] = module_name(rel)
        paths[name] = rel
        deprels[name] = rest.split()
    deps_named = set().union(*deprels.values())
    bad = next((d for d in deps_named if not d.endswith(MODULE_SUFFIXES)), None)
    if bad is not None:
        raise _damaged(path, kver, f"{bad[:80]!r} is not a module file")
    lost = deps_named - names.keys()
    if lost:
        what = f"{len(lost)} module(s) are dependencies without a line of their own, e.g. {min(lost)}"
        raise _damaged(path, kver, what)
    deps = {name: tuple(names[r] for r in rels) for name, rels in deprels.items()}
    return paths, deps


def _check_complete(moddir: Path, kver: str, paths: dict[str, str]) -> None:
    """modules.dep lists every installed module that modules.order (the kernel build's list) names;
    with no modules.order, it lists some module if the kernel has any."""
    dep = moddir / "modules.dep"
    order = moddir / "modules.order"
    if order.exists():
        # modules.order names `.ko` files, modules.dep the installed (maybe compressed) ones.
        listed = {rel[: rel.rindex(".ko") + 3] for rel in paths.values()}
        for rel in sorted(set(_read_index(order, kver).split()) - listed):
            stem = strip_module_suffix(rel)
            if any((moddir / f"{stem}{s}").exists() for s in MODULE_SUFFIXES):
                raise _damaged(
                    dep, kver, f"it has no line for the installed module {rel} (modules.order does)"
                )
    elif not paths and _has_module_file(moddir / "kernel"):
        raise _damaged(dep, kver, f"it lists no module, but {moddir}/kernel has module files")


def _has_module_file(top: Path) -> bool:
    for _dirpath, _dirnames, filenames in os.walk(top):
        if any(f.endswith(MODULE_SUFFIXES) for f in filenames):
            return True
    return False


def _index_lines(path: Path, kver: str, valid: Callable[[str], bool]) -> list[str]:
    """The lines of an optional index file, each of which must be `valid`."""
    if not path.exists():
        return []
    lines = list(_lines(path, _read_index(path, kver)))
    bad = next((line for line in lines if not valid(line)), None)
    if bad is not None:
        raise _damaged(path, kver, f"{bad[:80]!r} is not one of its lines")
    return lines


def _parse_builtin_modinfo(path: Path, kver: str) -> dict[str, ModInfo]:
    """`modname.key=value\\0...`: the .modinfo of every built-in module in one file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\0"):
        raise _damaged(path, kver, "its last entry is cut off")
    per_module: dict[str, list[bytes]] = {}
    for item in data.split(b"\0"):
        mod, dot, kv = item.partition(b".")
        if dot and b"=" in kv:
            per_module.setdefault(normalize(mod.decode(errors="replace")), []).append(kv)
    return {m: parse_modinfo(b"\0".join(kvs)) for m, kvs in per_module.items()}


def _parse_softdep(path: Path, kver: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for line in _index_lines(path, kver, lambda line: line.startswith("softdep ")):
        words = line.split(None, 2)
        if len(words) == 3 and words[0] == "softdep":
            pre, post = parse_softdep(words[2])
            old_pre, old_post = out.get(normalize(words[1]), ((), ()))
            out[normalize(words[1])] = (old_pre + tuple(pre), old_post + tuple(post))
    return out


def _parse_weakdep(path: Path, kver: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for line in _index_lines(path, kver, lambda line: line.startswith("weakdep ")):
        words = line.split()
        if len(words) >= 3 and words[0] == "weakdep":
            out[normalize(words[1])] = out.get(normalize(words[1]), ()) + tuple(words[2:])
    return out


_ALIAS_LINE = re.compile(r"^alias ([^*?\[\s]*)(\S*) (\S+)", re.M)


def _alias_table(alias_file: Path, kver: str, builtin_info: dict[str, ModInfo], modules: int) -> AliasTable:
    """One regex pass splits each alias into its literal prefix and the rest (26k lines: ~0.03 s)."""
    table = AliasTable()
    exact, by_prefix = table.exact, table.by_prefix
    text = _read_index(alias_file, kver) if alias_file.exists() else ""
    found = _ALIAS_LINE.findall(text)
    if text and not found and modules:
        raise _damaged(alias_file, kver, f"it has no alias line, for {modules} modules")
    for prefix, rest, module in found:
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
    """Read the index files of one kernel; a directory without modules.dep, or an index file that
    does not parse, is an error naming the file (never a smaller selection)."""
    if not (moddir / "modules.dep").exists():
        raise InitrdError(
            f"kernel {kver}: no modules.dep in {moddir}",
            hint=f"install the kernel's modules, or run 'depmod {kver}' in the root",
        )
    paths, deps = _parse_dep(moddir / "modules.dep", kver)
    _check_complete(moddir, kver, paths)
    builtin_lines = _index_lines(moddir / "modules.builtin", kver, lambda line: line.endswith(".ko"))
    builtin = {module_name(rel): rel for rel in builtin_lines}
    builtin_info = _parse_builtin_modinfo(moddir / "modules.builtin.modinfo", kver)
    return KernelIndex(
        kver=kver,
        moddir=moddir,
        paths=paths,
        deps=deps,
        builtin=builtin,
        softdeps=_parse_softdep(moddir / "modules.softdep", kver),
        weakdeps=_parse_weakdep(moddir / "modules.weakdep", kver),
        aliases=_alias_table(moddir / "modules.alias", kver, builtin_info, len(paths)),
        builtin_info=builtin_info,
        modinfo_indexed=_extracted(moddir / "modules.softdep") and _extracted(moddir / "modules.weakdep"),
    )


def _extracted(path: Path) -> bool:
    """The index file says it was extracted from the modules themselves (depmod's first line)."""
    try:
        with path.open("rb") as f:
            return f.readline().rstrip() in _EXTRACTED
    except OSError:
        return False


_EXTRACTED = (
    b"# Soft dependencies extracted from modules themselves.",
    b"# Weak dependencies extracted from modules themselves.",
)


def names_of(index: KernelIndex, names: Iterable[str]) -> list[str]:
    """Loadable module names among `names` (normalized), in order, unknown ones dropped."""
    return [n for n in (normalize(x) for x in names) if n in index.paths]
