"""Which modules go into the initrd, and why: patterns, host-only probes, and the closure.

1. patterns: the default list (resources/modules/default.list), the profiles' lists, then the user's
   (config.modules; last match wins, so users can exclude what a list includes);
2. host-only mode narrows and widens that: default-list entries for other machines (file systems
   the host does not mount in the initrd, RAID levels, kvm, wireless: modules/host-only-omit.list)
   are left out, and it adds the file systems the initrd mounts, the root's block stack, and those
   of the host's modules (/sys/module, device modaliases) in the classes that boot a machine
   (modules/host.list: storage, input, buses, crypto ...; host/probes.py), except what a pattern
   excludes;
3. closure: modules.dep (always, even for excluded modules: they cannot load without), softdeps
   (modules.softdep and .modinfo, pre and post) and weakdeps, aliases resolved via modules.alias;
   built-in modules satisfy dependencies. Where depmod wrote the modules' softdeps and weakdeps
   into the index files (index.modinfo_indexed), no .modinfo is read here: only for firmware.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.host import probes
from mkosi_initrd.kernel.index import KernelIndex, normalize, strip_module_suffix
from mkosi_initrd.kernel.modinfo import COMPRESSED_SUFFIXES, ModInfo, read_modinfo
from mkosi_initrd.kernel.patterns import Pattern, PatternSet, compile_pattern, matches, module_key
from mkosi_initrd.kernel.required import required_modules
from mkosi_initrd.log import log
from mkosi_initrd.plan.model import RequiredModule
from mkosi_initrd.resources import read_list, resource_dir


@dataclass(frozen=True)
class Selection:
    """The closed module set: name → reason, plus what it needed and did not find."""

    modules: dict[str, str]
    builtin: dict[str, str]
    info: dict[str, ModInfo]
    warnings: tuple[str, ...]
    required: tuple[RequiredModule, ...] = ()  # what the pre-flight check holds the image to


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
            if self.index.modinfo_indexed:
                # The index files say all the closure needs; .modinfo is read for firmware only,
                # while depmod runs (modules.py).
                for name in batch:
                    self._follow(name, ModInfo())
                continue
            for name, info in zip(batch, read_all(self.index, batch), strict=True):
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


def read_all(index: KernelIndex, names: list[str]) -> list[ModInfo]:
    """The .modinfo of each module; compressed ones are decompressed in threads (lzma/zstd drop the GIL)."""
    paths = [index.moddir / index.paths[n] for n in names]
    if len(paths) > 4 and any(p.name.endswith(COMPRESSED_SUFFIXES) for p in paths):
        with ThreadPoolExecutor() as pool:
            return list(pool.map(read_modinfo, paths))
    return [read_modinfo(p) for p in paths]


def _host_wants(config: Config, index: KernelIndex, needed: list[probes.Want]) -> list[probes.Want]:
    """What this host needs (`needed`: its root stack and file systems as they are), and of its own
    modules those in the boot classes (a module by name, a device's modalias resolved to its modules)."""
    wants = list(needed)
    classes = host_classes(config)

    def boot_class(name: str) -> bool:
        rel = index.paths.get(normalize(name))
        # A built-in module, or one not in this kernel, adds nothing.
        return rel is not None and _included(classes, module_key(strip_module_suffix(rel)))

    for want in probes.used(config.sysfs):
        if want.module:
            names = [want.module]
        else:
            names = [m for _pattern, m in index.aliases.lookup(want.modalias)]
        wants += [probes.Want(reason=want.reason, module=m) for m in names if boot_class(m)]
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
    needed = [] if config.generic else list(probes.needed(config.root, config.sysfs, config.procfs))
    wants = _host_wants(config, index, needed) if not config.generic else []
    selection = close(index, sorted(chosen), wants, excluded)
    required = required_modules(config, index, needed, excluded)
    return dataclasses.replace(selection, required=required)


def _host_only_omit(config: Config) -> PatternSet | None:
    """The omit list for a host-only build whose root's file system is known; else None (all kept)."""
    if config.generic:
        return None
    if probes.root_fs_known(config.root, config.procfs):
        return host_only_omit()
    mount = probes.root_mount(config.procfs, os.path.realpath(config.root))
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
    wants: Iterable[probes.Want] = (),
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
