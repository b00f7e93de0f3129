"""What each step of the planner contributes (`Part`), and how the parts make one plan (`merge`).

A later part may replace an earlier part's file (the host's /etc/vconsole.conf over the package's,
say); that is logged, never silent. Directories that two parts both have keep the first one's mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mkosi_initrd.config.model import Config
from mkosi_initrd.log import log
from mkosi_initrd.plan.model import (
    CutEdge,
    Entry,
    FirmwareChoice,
    ModuleChoice,
    PackageChoice,
    Plan,
    RequiredModule,
)


@dataclass(frozen=True)
class Part:
    """One step's contribution: the packages', the kernel's, the host's, the extra files'."""

    entries: tuple[Entry, ...] = ()
    packages: tuple[PackageChoice, ...] = ()
    cut_edges: tuple[CutEdge, ...] = ()
    missing: tuple[str, ...] = ()
    modules: tuple[ModuleChoice, ...] = ()
    builtin: tuple[str, ...] = ()  # selected modules that are built into the kernel
    required_modules: tuple[RequiredModule, ...] = ()  # what the pre-flight check holds the image to
    firmware: tuple[FirmwareChoice, ...] = ()
    missing_firmware: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    options: Mapping[str, str | bool] = field(default_factory=dict)  # shown in the plan's JSON
    errors: tuple[str, ...] = ()  # what stops a build (packages whose files are not in the root)


def merge_entries(parts: Iterable[Sequence[Entry]]) -> tuple[Entry, ...]:
    by_path: dict[str, Entry] = {}
    for entries in parts:
        for e in entries:
            old = by_path.get(e.path)
            if old is not None:
                if old.is_dir and e.is_dir:
                    continue
                if old != e:
                    log.info("%s: %s replaces the entry from %s", e.path, e.origin or "?", old.origin or "?")
            by_path[e.path] = e
    return tuple(by_path[p] for p in sorted(by_path))


def merge(
    config: Config, os_release: dict[str, str], parts: Sequence[Part], packages_only: bool = False
) -> Plan:
    options: dict[str, str | bool] = {}
    for p in parts:
        options.update(p.options)
    return Plan(
        root=config.root,
        kver=config.kver,
        backend=str(options.get("backend", "")),
        generic=config.generic,
        profiles=config.profiles,
        os_release=os_release,
        packages=tuple(x for p in parts for x in p.packages),
        entries=merge_entries(p.entries for p in parts),
        cut_edges=tuple(x for p in parts for x in p.cut_edges),
        missing=tuple(x for p in parts for x in p.missing),
        modules=tuple(x for p in parts for x in p.modules),
        firmware=tuple(x for p in parts for x in p.firmware),
        missing_firmware=tuple(x for p in parts for x in p.missing_firmware),
        warnings=tuple(x for p in parts for x in p.warnings),
        options=options,
        errors=tuple(x for p in parts for x in p.errors),
        packages_only=packages_only,
        builtin=tuple(x for p in parts for x in p.builtin),
        required_modules=tuple(x for p in parts for x in p.required_modules),
    )


def add_entries(plan: Plan, entries: Iterable[Entry]) -> Plan:
    """The plan with `entries` merged over its own, as a last part would be."""
    return dataclasses.replace(plan, entries=merge_entries((plan.entries, tuple(entries))))
