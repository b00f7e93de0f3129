"""The subset's module index from the kernel's own, without reading the modules: what depmod would
write over a tree of just the subset, byte for byte (tests/test_subsetindex.py compares with depmod).

    subset_index(index, relpaths, kmod) -> {file name: bytes} | None (None: run depmod)

The subset is closed under modules.dep, so every line depmod would write about it is in the
kernel's index files already: modules.alias, .softdep, .weakdep, .devname are those files' lines
about the subset (depmod writes them module by module in modules.order order, which the subset
keeps); modules.symbols the same lines in depmod's hash-table order (kmodindex.hash_superfast);
modules.dep needs the subset's own topological order (deporder.py); the `.bin` tries are written
from the same entries (kmodindex.py). This holds for one kernel build installed as it was built,
which is checked, else None: every module in modules.order (nothing out of tree that could export
a symbol twice, no order of depmod's own making), index files no older than the subset's module
files, the headers depmod writes, a depmod whose format is known (`kmod` is its version).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mkosi_initrd.kernel.deporder import subset_dep
from mkosi_initrd.kernel.elfsyms import needed_symbols
from mkosi_initrd.kernel.index import KernelIndex
from mkosi_initrd.kernel.kmodindex import alias_normalize, hash_superfast, index_bin
from mkosi_initrd.kernel.modinfo import decompress

# depmod versions whose output this reproduces: 34 writes the tries in pre-order, 33 added weakdeps.
KMOD_VERSIONS = range(30, 35)
_HEADERS = {
    "modules.alias": "# Aliases extracted from modules themselves.\n",
    "modules.softdep": "# Soft dependencies extracted from modules themselves.\n",
    "modules.weakdep": "# Weak dependencies extracted from modules themselves.\n",
    "modules.symbols": "# Aliases for symbols, used by symbol_request().\n",
}
_KERNEL_BUILD_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
_DEVNAME_HEADER = "# Device nodes to trigger on-demand module loading.\n"


def _text_files(kmod: int) -> tuple[str, ...]:
    names = ("modules.alias", "modules.softdep", "modules.symbols", "modules.devname")
    return (*names, "modules.weakdep") if kmod >= 33 else names


def usable(moddir: Path, kmod: int, module_files: Sequence[Path]) -> bool:
    """The cheap checks, before anything is read: depmod's version, the index files there, and
    depmod's own not older than the subset's module files (a module replaced after depmod ran).
    The kernel build's files (modules.order, modules.builtin*) come with the modules: not compared."""
    if kmod not in KMOD_VERSIONS:
        return False
    written = ("modules.dep", *_text_files(kmod))
    try:
        if not all((moddir / n).is_file() for n in _KERNEL_BUILD_FILES):
            return False
        oldest_index = min((moddir / n).stat().st_mtime_ns for n in written)
        newest_module = max((p.stat().st_mtime_ns for p in module_files), default=0)
    except OSError:
        return False
    return newest_module <= oldest_index


def subset_index(index: KernelIndex, relpaths: Sequence[str], kmod: int) -> dict[str, bytes] | None:
    moddir = index.moddir
    order = _module_order(moddir, set(index.paths.values()))
    if order is None:
        return None
    full = {index.paths[n]: [index.paths[d] for d in deps] for n, deps in index.deps.items()}
    subset_set = set(relpaths)
    if not subset_set <= full.keys() or any(not subset_set.issuperset(full[r]) for r in subset_set):
        return None  # not closed under modules.dep
    subset = [r for r in order if r in subset_set]
    names = {r: modname(r) for r in full}
    texts = {name: (moddir / name).read_text() for name in _text_files(kmod)}
    deps = subset_dep(full, order, subset, _symbol_order(moddir, full, names, texts["modules.symbols"]))
    if deps is None:
        return None
    idx = {names[r]: i for i, r in enumerate(subset)}
    files = _texts(texts, idx, set(names.values()))
    if files is None:
        return None
    dep_lines = [r + ":" + "".join(" " + d for d in deps[r]) for r in subset]
    files["modules.dep"] = "".join(line + "\n" for line in dep_lines)
    if not all(text.isascii() for text in files.values()):
        return None  # depmod's tries take 7-bit keys only
    builtin_modinfo = (moddir / "modules.builtin.modinfo").read_bytes()
    if not builtin_modinfo.isascii():
        return None
    bins: dict[str, list[tuple[str | None, str, int]]] = {
        "modules.dep.bin": [
            (names[r], line, i) for i, (r, line) in enumerate(zip(subset, dep_lines, strict=True))
        ],
        "modules.alias.bin": [(alias_normalize(a), m, idx[m]) for a, m in _pairs(files["modules.alias"])],
        "modules.symbols.bin": [(k, m, idx[m]) for k, m in _pairs(files["modules.symbols"])],
        "modules.builtin.bin": [(modname(line), "", 0) for line in _builtin(moddir)],
        "modules.builtin.alias.bin": list(_builtin_aliases(builtin_modinfo)),
    }
    out = {name: text.encode() for name, text in files.items()}
    for name, entries in bins.items():
        if any(key is None for key, _, _ in entries):
            return None  # an alias depmod would skip, with a warning
        out[name] = index_bin(((k or "", v, p) for k, v, p in entries), preorder=kmod >= 34)
    return out


def _symbol_order(
    moddir: Path, full: dict[str, list[str]], names: dict[str, str], symbols_text: str
) -> Callable[[str], list[str] | None]:
    """deporder's `direct_deps`: a module's dependencies in the order its needed symbols name them
    (depmod's), from its ELF symbols and modules.symbols (parsed when first needed)."""
    lookup: list[tuple[dict[str, str], dict[str, str]]] = []

    def direct_deps(rel: str) -> list[str] | None:
        symbols = needed_symbols(decompress((moddir / rel).read_bytes()))
        if symbols is None:
            return None
        if not lookup:
            lookup.append((dict(_SYMBOL_LINE.findall(symbols_text)), {names[r]: r for r in full}))
        owners, by_name = lookup[0]
        out: dict[str, None] = {}
        for s in symbols:
            owner = owners.get(s[1:] if s.startswith(".") else s)  # ppc64's `.foo` is foo
            if owner in by_name:
                out.setdefault(by_name[owner], None)
        return list(out)

    return direct_deps


def modname(path: str) -> str:
    """depmod's path_to_modname: the file name up to its first `.`, `-` as `_`."""
    return path.rsplit("/", 1)[-1].split(".", 1)[0].replace("-", "_")


def _module_order(moddir: Path, installed: set[str]) -> list[str] | None:
    """The installed modules in modules.order's order; None unless each is there exactly once.
    modules.order names `.ko` files, modules.dep the installed, maybe compressed, ones."""
    by_ko = {r[: r.rindex(".ko") + 3]: r for r in installed}
    out = [by_ko[line] for line in (moddir / "modules.order").read_text().split() if line in by_ko]
    return out if len(out) == len(installed) == len(set(out)) else None


_ALIAS_LINE = re.compile(r"^alias (\S+) (\S+)$", re.M)
_SYMBOL_LINE = re.compile(r"^alias symbol:(\S+) (\S+)$", re.M)  # symbol, the module exporting it


def _pairs(text: str) -> list[tuple[str, str]]:
    """`alias KEY MODULE` lines."""
    return _ALIAS_LINE.findall(text)


def _texts(texts: dict[str, str], idx: dict[str, int], known: set[str]) -> dict[str, str] | None:
    """The text files' lines about the subset (`idx`: its module names; `known`: all of them)."""
    out = {}
    for name, text in texts.items():
        header = _HEADERS.get(name, "")
        if name == "modules.devname":
            lines = [line for line in text.splitlines(True) if not line.startswith("#")]
            if not known.issuperset(_field(line, 0) for line in lines):
                return None
            kept = [line for line in lines if _field(line, 0) in idx]
            out[name] = (_DEVNAME_HEADER if kept else "") + "".join(kept)
            continue
        if not text.startswith(header) or not text.endswith("\n"):
            return None
        lines = text[len(header) :].splitlines(True)
        if name in ("modules.alias", "modules.symbols"):  # `alias KEY MODULE`: the module is last
            modules = [line[line.rfind(" ") + 1 : -1] for line in lines]
        else:
            modules = [_field(line, 1) for line in lines]
        if not known.issuperset(modules):
            return None  # a module modules.dep does not have: another depmod run, or names not ours
        kept = [line for line, module in zip(lines, modules, strict=True) if module in idx]
        if name == "modules.symbols":
            kept.sort(key=lambda line: _symbol_slot(line))
        out[name] = header + "".join(kept)
    return out


def _field(line: str, n: int) -> str:
    words = line.split()
    return words[n] if len(words) > n else ""


def _symbol_slot(line: str) -> tuple[int, bytes]:
    """Where depmod's symbol hash (2048 buckets, each sorted by name) puts the line's symbol."""
    name = line.split(" ", 2)[1].removeprefix("symbol:").encode()
    return hash_superfast(name) & 2047, name


def _builtin(moddir: Path) -> list[str]:
    """modules.builtin's lines, as depmod reads them (it skips, with an error, ones not starting with
    a letter)."""
    return [line for line in (moddir / "modules.builtin").read_text().splitlines() if line[:1].isalpha()]


def _builtin_aliases(data: bytes) -> Iterator[tuple[str | None, str, int]]:
    """`modname.alias=value` of modules.builtin.modinfo, as depmod's stream reading finds them (an
    entry without `.` or `=` also hides the one after it there)."""
    pos, n = 0, len(data)
    while pos < n:
        modname, pos = _until(data, pos, b".")
        if not modname:
            continue
        key, pos = _until(data, pos, b"=")
        if key != b"alias":
            pos = _skip(data, pos)
            continue
        value, pos = _until(data, pos, b"\0")
        if value:
            yield alias_normalize(value.decode("ascii", "replace")), modname.decode("ascii", "replace"), 0


def _until(data: bytes, pos: int, end: bytes) -> tuple[bytes, int]:
    """depmod's flush_stream_to: the bytes up to `end`, or b"" when a NUL or the end of the data
    comes first; and the position after the byte that stopped it."""
    nul = data.find(b"\0", pos)
    if nul < 0:
        nul = len(data)
    if end == b"\0":
        return (b"", nul) if nul == len(data) else (data[pos:nul], nul + 1)
    hit = data.find(end, pos, nul)
    if hit < 0:
        return b"", min(nul + 1, len(data))
    return data[pos:hit], hit + 1


def _skip(data: bytes, pos: int) -> int:
    """depmod's flush_stream: past the next NUL."""
    stop = data.find(b"\0", pos)
    return len(data) if stop < 0 else stop + 1
