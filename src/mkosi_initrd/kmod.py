"""The kernel's part of the plan: which modules and firmware go in, why, and their archive entries.

    plan_kernel(config) -> KernelPart
    start_kernel(config) -> PendingKernel   (the same, with depmod still running: .result(), .cancel())

1. patterns: the default list (resources/modules/default.list), the profiles' lists, then the user's
   (config.modules; last match wins, so users can exclude what a list includes);
2. host-only mode narrows and widens that: default-list entries for other machines (file systems
   the host does not mount in the initrd, RAID levels, kvm, wireless: modules/host-only-omit.list)
   are left out, and it adds the file systems the initrd mounts, the root's block stack, and those
   of the host's modules (/sys/module, device modaliases) in the classes that boot a machine
   (modules/host.list: storage, input, buses, crypto ...; hostprobe.py), except what a pattern
   excludes;
3. closure: modules.dep (always, even for excluded modules: they cannot load without), softdeps
   (modules.softdep and .modinfo, pre and post) and weakdeps, aliases resolved via modules.alias;
   built-in modules satisfy dependencies;
4. firmware= of the selected modules (firmware.py), user firmware globs;
5. entries: the module files as shipped (compressed ones stay compressed: see bench_modules.py)
   and the index files regenerated for the subset (modregen.py).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd import hostprobe
from mkosi_initrd.config import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.firmware import select_firmware
from mkosi_initrd.log import log
from mkosi_initrd.modindex import KernelIndex, load_index, normalize, strip_module_suffix
from mkosi_initrd.modinfo import COMPRESSED_SUFFIXES, ModInfo, decompress, parse_softdep, read_modinfo
from mkosi_initrd.modpattern import Pattern, PatternSet, compile_pattern, matches, module_key
from mkosi_initrd.modregen import Regeneration
from mkosi_initrd.plan import Entry, FirmwareChoice, ModuleChoice, RequiredModule
from mkosi_initrd.resources import read_list, resource_dir
from mkosi_initrd.rootfs import CanonicalPaths, resolve_in_root

MODULES_DIR = "/usr/lib/modules"


@dataclass(frozen=True)
class KernelPart:
    modules: tuple[ModuleChoice, ...]
    firmware: tuple[FirmwareChoice, ...]
    missing_firmware: tuple[str, ...]
    entries: tuple[Entry, ...]
    warnings: tuple[str, ...]
    builtin: tuple[str, ...] = ()  # selected modules that are built into the kernel
    required_modules: tuple[RequiredModule, ...] = ()  # what the pre-flight check holds it to


@dataclass(frozen=True)
class Selection:
    """The closed module set: name → reason, plus what it needed and did not find."""

    modules: dict[str, str]
    builtin: dict[str, str]
    info: dict[str, ModInfo]
    warnings: tuple[str, ...]
    required: tuple[RequiredModule, ...] = ()


def _profile_lists(config: Config, stem: str) -> list[Pattern]:
    out: list[Pattern] = []
    for profile in config.profiles:
        if (resource_dir() / f"modules/{stem}{profile}.list").exists():
            out += [
                compile_pattern(p, f"profile {profile}") for p in read_list(f"modules/{stem}{profile}.list")
            ]
    return out


def patterns_for(config: Config) -> list[Pattern]:
    patterns = [compile_pattern(p, "listed") for p in read_list("modules/default.list")]
    patterns += _profile_lists(config, "profile-")
    patterns += [compile_pattern(p, "config") for p in config.modules]
    return patterns


def host_only_omit() -> PatternSet:
    """Default-list entries a host-only build leaves out (a match that includes means: omit)."""
    return PatternSet(
        compile_pattern(p, "host-only omits") for p in read_list("modules/host-only-omit.list")
    )


def host_classes(config: Config) -> PatternSet:
    """Which of the host's own modules (loaded, built in, matching a device) a host-only build takes."""
    patterns = [compile_pattern(p, "host") for p in read_list("modules/host.list")]
    return PatternSet([*patterns, *_profile_lists(config, "host-")])


def _keys(index: KernelIndex) -> Iterator[tuple[str, str, bool]]:
    for name, rel, builtin in index.all_paths():
        yield name, module_key(strip_module_suffix(rel)), builtin


def _check_user_patterns(index: KernelIndex, patterns: Iterable[Pattern]) -> None:
    """A module the user asks for by name or pattern must exist (loadable or built in)."""
    wanted = [p for p in patterns if p.source == "config" and p.include]
    keys = [key for _, key, _ in _keys(index)] if wanted else []
    for p in wanted:
        if not any(matches(p, k) for k in keys):
            raise InitrdError(
                f"kernel module {p.text!r} not found in kernel {index.kver}",
                hint=f"check the name with 'modinfo -k {index.kver} NAME', or drop it from the config",
            )


class _Closure:
    def __init__(self, index: KernelIndex, excluded: set[str]) -> None:
        self.index = index
        self.excluded = excluded
        self.modules: dict[str, str] = {}
        self.builtin: dict[str, str] = {}
        self.info: dict[str, ModInfo] = {}
        self.warnings: list[str] = []
        self._frontier: list[str] = []

    def add(self, name: str, reason: str, *, hard: bool = False) -> None:
        """A loadable or built-in module; soft additions respect exclusions, hard ones do not."""
        name = normalize(name)
        if name in self.modules or name in self.builtin or (not hard and name in self.excluded):
            return
        if name in self.index.paths:
            self.modules[name] = reason
            self._frontier.append(name)
        elif name in self.index.builtin:
            self.builtin[name] = reason

    def add_optional(self, target: str, reason: str) -> None:
        """A softdep/weakdep target: a module name or an alias."""
        loadable, builtin = self.index.resolve(target)
        for m in (*loadable, *builtin):
            self.add(m, reason)

    def add_modalias(self, modalias: str, reason: str) -> None:
        for _pattern, m in self.index.aliases.lookup(modalias):
            self.add(m, reason)

    def run(self) -> None:
        while self._frontier:
            batch, self._frontier = self._frontier, []
            for name, info in zip(batch, _read_all(self.index, batch), strict=True):
                self.info[name] = info
                self._follow(name, info)

    def _follow(self, name: str, info: ModInfo) -> None:
        idx = self.index
        for dep in idx.deps.get(name, ()):
            if dep in idx.paths:
                self.add(dep, f"dependency of {name}", hard=True)
            elif dep not in idx.builtin:
                self.warnings.append(f"{dep} is a dependency of {name} but is not installed")
        for dep in info.depends:
            if normalize(dep) not in idx.paths and normalize(dep) not in idx.builtin:
                self.warnings.append(f"{dep} is a dependency of {name} but is not installed")
            else:
                self.add(dep, f"dependency of {name}", hard=True)
        pre, post = idx.softdeps.get(name, ((), ()))
        for target in (*pre, *info.softdep_pre, *post, *info.softdep_post):
            self.add_optional(target, f"softdep of {name}")
        for target in (*idx.weakdeps.get(name, ()), *info.weakdep):
            self.add_optional(target, f"weakdep of {name}")


def _read_all(index: KernelIndex, names: list[str]) -> list[ModInfo]:
    """The .modinfo of each module; compressed ones are decompressed in threads (lzma/zstd drop the GIL)."""
    paths = [index.moddir / index.paths[n] for n in names]
    if len(paths) > 4 and any(p.name.endswith(COMPRESSED_SUFFIXES) for p in paths):
        with ThreadPoolExecutor() as pool:
            return list(pool.map(read_modinfo, paths))
    return [read_modinfo(p) for p in paths]


def _host_wants(config: Config, index: KernelIndex, needed: list[hostprobe.Want]) -> list[hostprobe.Want]:
    """What this host needs (`needed`: its root stack and file systems as they are), and of its own
    modules those in the boot classes (a module by name, a device's modalias resolved to its modules)."""
    wants = list(needed)
    classes = host_classes(config)

    def boot_class(name: str) -> bool:
        rel = index.paths.get(normalize(name))
        # A built-in module, or one not in this kernel, adds nothing.
        return rel is not None and _included(classes, module_key(strip_module_suffix(rel)))

    for want in hostprobe.used(config.sysfs):
        if want.module:
            names = [want.module]
        else:
            names = [m for _pattern, m in index.aliases.lookup(want.modalias)]
        wants += [hostprobe.Want(reason=want.reason, module=m) for m in names if boot_class(m)]
    return wants


def select_modules(config: Config, index: KernelIndex) -> Selection:
    patterns = patterns_for(config)
    _check_user_patterns(index, patterns)
    pset = PatternSet(patterns)
    omit = _host_only_omit(config)
    excluded: set[str] = set()
    chosen: list[tuple[str, str]] = []
    for name, key, _builtin in _keys(index):
        p = pset.decide(key)
        if p is None:
            continue
        if not p.include:
            excluded.add(name)
        elif p.source == "listed" and omit is not None and _included(omit, key):
            continue  # the host probes add it back if this host needs it
        else:
            chosen.append((name, p.reason))
    needed = [] if config.generic else list(hostprobe.needed(config.root, config.sysfs, config.procfs))
    wants = _host_wants(config, index, needed) if not config.generic else []
    selection = close(index, sorted(chosen), wants, excluded)
    required = required_modules(config, index, needed, excluded)
    return dataclasses.replace(selection, required=required)


def required_modules(
    config: Config, index: KernelIndex, needed: Iterable[hostprobe.Want], excluded: Iterable[str]
) -> tuple[RequiredModule, ...]:
    """What the image cannot mount its root without (check.py holds the image to it).

    Host-only: the file systems the initrd mounts, the root's block stack and its disk's drivers
    (a modalias that resolves to no module is a built-in or driverless device: nothing to hold).
    Generic: the storage and file-system modules of modules/required.list that the kernel has.
    Candidates the configuration excludes do not count: excluding them is the admin's call."""
    skip = set(excluded)
    by_reason: dict[str, list[str]] = {}
    if config.generic:
        for line in read_list("modules/required.list"):
            kind, name = line.split()
            loadable, builtin = index.resolve(name)
            if loadable or builtin:
                by_reason.setdefault(f"generic: {kind} {name}", []).extend([*loadable, *builtin])
    elif hostprobe.root_fs_known(config.root, config.procfs):
        for want in needed:
            names = by_reason.setdefault(want.reason, [])
            if want.module:  # the name itself, even if this kernel has no such module: then none
                names.append(normalize(want.module))
            if want.modalias:
                names += [m for _pattern, m in index.aliases.lookup(want.modalias)]
    out = []
    for reason, names in by_reason.items():
        candidates = tuple(dict.fromkeys(n for n in names if n not in skip))
        if candidates:
            out.append(RequiredModule(reason=reason, names=candidates))
    return tuple(out)


def _host_only_omit(config: Config) -> PatternSet | None:
    """The omit list for a host-only build whose root's file system is known; else None (all kept)."""
    if config.generic:
        return None
    if hostprobe.root_fs_known(config.root, config.procfs):
        return host_only_omit()
    mount = hostprobe.root_mount(config.procfs, os.path.realpath(config.root))
    log.warning(
        "host-only: the root's file system cannot be told (/ is %s, and /etc/fstab has no line for it), "
        "so every file system of the default list is kept; add / to /etc/fstab, or use --generic",
        mount.fstype if mount else "not in mountinfo",
    )
    return None


def _included(pset: PatternSet, key: str) -> bool:
    p = pset.decide(key)
    return p is not None and p.include


def close(
    index: KernelIndex,
    chosen: Iterable[tuple[str, str]],
    wants: Iterable[hostprobe.Want] = (),
    excluded: Iterable[str] = (),
) -> Selection:
    """The closure of the chosen modules ((name, reason), first reason wins) and the host's wants."""
    closure = _Closure(index, set(excluded))
    for name, reason in chosen:
        closure.add(name, reason)
    for want in wants:
        if want.module:
            closure.add(want.module, want.reason)
        if want.modalias:
            closure.add_modalias(want.modalias, want.reason)
    closure.run()
    return Selection(
        modules=closure.modules,
        builtin=closure.builtin,
        info=closure.info,
        warnings=tuple(dict.fromkeys(closure.warnings)),
    )


def stored_path(rel: str) -> str:
    """Where a module goes in the initrd: as shipped, except gzip ones are stored decompressed.

    xz and zstd modules stay compressed: every kmod that distributions build with those has them,
    and bench_modules.py measured storing them as shipped to give a smaller image in less time.
    gzip is the exception: Debian's kmod is built without zlib and could not load them.
    """
    return rel[: -len(".gz")] if rel.endswith(".ko.gz") else rel


def _dirs(entries: dict[str, Entry], path: str) -> None:
    parts = path.split("/")
    for i in range(4, len(parts)):  # /usr/lib/modules and below
        d = "/".join(parts[:i])
        entries.setdefault(d, Entry(path=d, mode=stat.S_IFDIR | 0o755, origin="kernel"))


def _module_entries(
    config: Config, index: KernelIndex, selection: Selection
) -> tuple[dict[str, Entry], list[tuple[str, Path | bytes]]]:
    """The module files' entries (with their directories), and depmod's input: (relpath, source)."""
    kdir = f"{MODULES_DIR}/{index.kver}"
    entries: dict[str, Entry] = {}
    sources: list[tuple[str, Path | bytes]] = []
    canon = CanonicalPaths(config.root)  # each module directory resolved once, not per module
    for name in sorted(selection.modules):
        rel = index.paths[name]
        source = config.root / canon(f"{kdir}/{rel}").lstrip("/")
        if source.is_symlink():
            source = resolve_in_root(config.root, f"{kdir}/{rel}")
        try:
            st = source.stat()
        except OSError as e:
            raise InitrdError(
                f"kernel {index.kver}: module {name} is in modules.dep but {kdir}/{rel} cannot be read: {e}",
                hint=f"reinstall the kernel's modules, or run 'depmod {index.kver}' in the root",
            ) from e
        path = f"{kdir}/{stored_path(rel)}"
        _dirs(entries, path)
        mode = stat.S_IFREG | (st.st_mode & 0o777)
        if stored_path(rel) != rel:
            data = decompress(source.read_bytes())
            entries[path] = Entry(path=path, mode=mode, data=data, size=len(data), origin="kernel")
            sources.append((stored_path(rel), data))
        else:
            entries[path] = Entry(path=path, mode=mode, source=source, size=st.st_size, origin="kernel")
            sources.append((rel, source))
    return entries, sources


def _index_entries(kver: str, index_files: dict[str, bytes]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for fname, data in sorted(index_files.items()):
        path = f"{MODULES_DIR}/{kver}/{fname}"
        _dirs(entries, path)
        mode = stat.S_IFREG | 0o644
        entries[path] = Entry(path=path, mode=mode, data=data, size=len(data), origin="kernel")
    return entries


def firmware_wants(index: KernelIndex, selection: Selection) -> list[tuple[str, str]]:
    wants = [(m, fw) for m in sorted(selection.modules) for fw in selection.info[m].firmware]
    for m in sorted(selection.builtin):
        wants += [(m, fw) for fw in index.builtin_info.get(m, ModInfo()).firmware]
    return wants


MODPROBE_DIRS = (
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/run/modprobe.d",
    "/etc/modprobe.d",
)


def add_config_softdeps(index: KernelIndex, root: Path) -> None:
    """`softdep` lines of the root's modprobe.d: the initrd's modprobe follows them too (they ship in
    the kmod/udev packages), so their targets must be in the initrd."""
    files: dict[str, Path] = {}  # by file name: a later directory's file replaces an earlier one
    for d in MODPROBE_DIRS:
        host = resolve_in_root(root, d)
        if host.is_dir():
            files.update({f.name: f for f in host.glob("*.conf")})
    for name in sorted(files):
        try:
            lines = files[name].read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split(None, 2)
            if len(words) == 3 and words[0] == "softdep":
                pre, post = parse_softdep(words[2])
                old_pre, old_post = index.softdeps.get(normalize(words[1]), ((), ()))
                index.softdeps[normalize(words[1])] = (old_pre + tuple(pre), old_post + tuple(post))


@dataclass(frozen=True)
class PendingKernel:
    """The kernel's part with the subset's module index still being written by depmod."""

    part: KernelPart  # without the index files
    regeneration: Regeneration

    def result(self) -> KernelPart:
        index = _index_entries(self.regeneration.kver, self.regeneration.result())
        entries = {e.path: e for e in self.part.entries} | index
        return dataclasses.replace(self.part, entries=tuple(entries[p] for p in sorted(entries)))

    def cancel(self) -> None:
        self.regeneration.cancel()


def plan_kernel(config: Config) -> KernelPart:
    return start_kernel(config).result()


def start_kernel(config: Config) -> PendingKernel:
    """Select modules and firmware, and start depmod on the subset (it runs while the caller goes on)."""
    kdir = resolve_in_root(config.root, f"{MODULES_DIR}/{config.kver}")
    index = load_index(kdir, config.kver)
    add_config_softdeps(index, config.root)
    selection = select_modules(config, index)
    fw = select_firmware(config.root, config.kver, firmware_wants(index, selection), config.firmware)
    for w in (*selection.warnings, *fw.warnings):
        log.debug("kernel %s: %s", config.kver, w)  # returned in KernelPart.warnings, shown by the caller
    modules = tuple(
        ModuleChoice(name=name, path=stored_path(index.paths[name]), reason=reason)
        for name, reason in sorted(selection.modules.items(), key=lambda kv: index.paths[kv[0]])
    )
    entries, sources = _module_entries(config, index, selection)
    part = KernelPart(
        modules=modules,
        firmware=fw.choices,
        missing_firmware=fw.missing,
        entries=(*entries.values(), *fw.entries),
        warnings=selection.warnings + fw.warnings,
        builtin=tuple(sorted(selection.builtin)),
        required_modules=selection.required,
    )
    return PendingKernel(part, Regeneration(index.moddir, index.kver, sources))
