"""The kernel's part of the plan: which modules and firmware go in, why, and their archive entries.

    plan_kernel(config) -> Part
    start_kernel(config) -> PendingKernel   (the same, with depmod still running: .result(), .cancel())

1.-3. the modules: patterns, host-only probes and the closure (selection.py);
4. firmware= of the selected modules (firmware.py), user firmware globs;
5. entries: the module files as shipped (compressed ones stay compressed: see bench_modules.py)
   and the index files regenerated for the subset (depmod.py).
"""

from __future__ import annotations

import dataclasses
import stat
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel.depmod import Regeneration
from mkosi_initrd.kernel.firmware import select_firmware
from mkosi_initrd.kernel.index import KernelIndex, load_index
from mkosi_initrd.kernel.modinfo import ModInfo, decompress
from mkosi_initrd.kernel.modprobe import add_config_softdeps
from mkosi_initrd.kernel.selection import Selection, read_all, select_modules
from mkosi_initrd.log import log
from mkosi_initrd.plan.model import Entry, ModuleChoice
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.rootfs import CanonicalPaths, resolve_in_root

MODULES_DIR = "/usr/lib/modules"


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
    info = selection.info
    missing = sorted(m for m in selection.modules if m not in info)
    if missing:  # the closure did not read them (the index files sufficed)
        info = info | dict(zip(missing, read_all(index, missing), strict=True))
    wants = [(m, fw) for m in sorted(selection.modules) for fw in info[m].firmware]
    for m in sorted(selection.builtin):
        wants += [(m, fw) for fw in index.builtin_info.get(m, ModInfo()).firmware]
    return wants


@dataclass(frozen=True)
class PendingKernel:
    """The kernel's part with the subset's module index still being written by depmod."""

    part: Part  # without the index files
    regeneration: Regeneration

    def result(self) -> Part:
        index = _index_entries(self.regeneration.kver, self.regeneration.result())
        entries = {e.path: e for e in self.part.entries} | index
        return dataclasses.replace(self.part, entries=tuple(entries[p] for p in sorted(entries)))

    def cancel(self) -> None:
        self.regeneration.cancel()


def plan_kernel(config: Config) -> Part:
    return start_kernel(config).result()


def start_kernel(config: Config) -> PendingKernel:
    """Select modules and firmware, and start depmod on the subset (it runs while the caller goes on).

    depmod starts before the firmware step: it decodes the whole subset on another core while
    .modinfo is read (for firmware only, where the index files say the rest: index.modinfo_indexed)."""
    kdir = resolve_in_root(config.root, f"{MODULES_DIR}/{config.kver}")
    index = load_index(kdir, config.kver)
    add_config_softdeps(index, config.root)
    selection = select_modules(config, index)
    entries, sources = _module_entries(config, index, selection)
    regeneration = Regeneration(index.moddir, index.kver, sources, index)
    try:
        return PendingKernel(_kernel_part(config, index, selection, entries), regeneration)
    except BaseException:
        regeneration.cancel()
        raise


def _kernel_part(
    config: Config, index: KernelIndex, selection: Selection, entries: dict[str, Entry]
) -> Part:
    fw = select_firmware(config.root, config.kver, firmware_wants(index, selection), config.firmware)
    for w in (*selection.warnings, *fw.warnings):
        log.debug("kernel %s: %s", config.kver, w)  # returned in Part.warnings, shown by the caller
    modules = tuple(
        ModuleChoice(name=name, path=stored_path(index.paths[name]), reason=reason)
        for name, reason in sorted(selection.modules.items(), key=lambda kv: index.paths[kv[0]])
    )
    return Part(
        modules=modules,
        firmware=fw.choices,
        missing_firmware=fw.missing,
        entries=(*entries.values(), *fw.entries),
        warnings=selection.warnings + fw.warnings,
        builtin=tuple(sorted(selection.builtin)),
        required_modules=selection.required,
    )
