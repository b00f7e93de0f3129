"""The modules an image cannot mount its root without: build/check.py holds the image to them.

Host-only: the file systems the initrd mounts, the root's block stack and its disk's drivers (a
modalias that resolves to no module is a built-in or driverless device: nothing to hold).
Generic: the storage and file-system modules of modules/required.list that the kernel has.
Candidates the configuration excludes do not count: excluding them is the admin's call.
"""

from __future__ import annotations

from collections.abc import Iterable

from mkosi_initrd.config.model import Config
from mkosi_initrd.host import probes
from mkosi_initrd.kernel.index import KernelIndex, normalize
from mkosi_initrd.plan.model import RequiredModule
from mkosi_initrd.resources import read_list


def required_modules(
    config: Config, index: KernelIndex, needed: Iterable[probes.Want], excluded: Iterable[str]
) -> tuple[RequiredModule, ...]:
    """What the image cannot mount its root without, by reason (see the module docstring)."""
    skip = set(excluded)
    by_reason: dict[str, list[str]] = {}
    if config.generic:
        for line in read_list("modules/required.list"):
            kind, name = line.split()
            loadable, builtin = index.resolve(name)
            if loadable or builtin:
                by_reason.setdefault(f"generic: {kind} {name}", []).extend([*loadable, *builtin])
    elif probes.root_fs_known(config.root, config.procfs):
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
