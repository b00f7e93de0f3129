"""Config → Plan: packages (closure), their files, modules, firmware and generated extras.

`make_plan` is a short list of steps; each returns a `Part` (or any object with some of its
fields) and `merge` puts them together. A later part may replace an earlier part's file (a
generated /etc/initrd-release over the package's, say); that is logged, never silent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mkosi_initrd import (
    closure,
    elfnotes,
    extras,
    files,
    hostconfig,
    hostprobe,
    kmod,
    needs,
    osrelease,
    rootstack,
)
from mkosi_initrd.config import PROFILES, Config
from mkosi_initrd.log import log
from mkosi_initrd.pkgdb import open_db
from mkosi_initrd.plan import CutEdge, Entry, FirmwareChoice, ModuleChoice, PackageChoice, Plan
from mkosi_initrd.resources import read_list, resource_dir


@dataclass(frozen=True)
class Part:
    """What one step contributes to the plan."""

    entries: tuple[Entry, ...] = ()
    packages: tuple[PackageChoice, ...] = ()
    cut_edges: tuple[CutEdge, ...] = ()
    missing: tuple[str, ...] = ()
    modules: tuple[ModuleChoice, ...] = ()
    firmware: tuple[FirmwareChoice, ...] = ()
    missing_firmware: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


def make_plan(config: Config, *, read_needs: bool = True) -> Plan:
    """The plan for `config`; `read_needs`: with what its files need at run time (needs.py), for
    the pre-flight check."""
    # Host-only: the profiles the root's block stack needs (LVM, RAID, NFS), and the packages the
    # host's configuration needs (loadkeys for a KEYMAP=); both no-ops for generic builds.
    config = hostconfig.with_host_packages(rootstack.with_host_profiles(config))
    os_release = osrelease.read_os_release(config.root)
    # The kernel first: depmod then writes the subset's module index on another core while the
    # packages are planned.
    kernel = kmod.start_kernel(config)
    try:
        parts: list[Any] = [dlopen_step(config, resolve_packages(config, os_release))]
        parts.append(kernel.result())
    except BaseException:
        kernel.cancel()
        raise
    parts.append(hostconfig.host_config(config))
    parts.append(Part(entries=tuple(files.extra_entries(config.root, config.extra_files))))
    # Generated entries (extras.py) see everything else, for the manifest and sysusers.d.
    parts.append(Part(entries=extras.generated_entries(config, merge(config, os_release, parts))))
    plan = merge(config, os_release, parts)
    return replace(plan, needs=needs.scan(plan.entries)) if read_needs else plan


def make_package_plan(config: Config) -> Plan:
    """The package part alone (`plan --packages-only`): for roots without a kernel yet, such as
    build roots and container images. No modules, firmware, host configuration or generated files."""
    config = hostconfig.with_host_packages(rootstack.with_host_profiles(config))
    os_release = osrelease.read_os_release(config.root)
    packages = dlopen_step(config, resolve_packages(config, os_release))
    return merge(config, os_release, [packages], packages_only=True)


# --- step 1: packages


def dlopen_step(config: Config, resolved: Resolved) -> Part:
    """The packages, and those of the libraries included programs dlopen() (.note.dlopen, or
    dlopen.list for loaders that declare nothing) that are installed: resolved on top of the package
    closure, as if they had been list entries."""
    fallbacks = [elfnotes.Fallback.parse(line) for line in read_list("dlopen.list")]
    wanted, unmet = elfnotes.dlopen_libraries(config.root, resolved.part.entries, fallbacks)
    for n in unmet:
        log.debug("%s: dlopen %s (%s), not installed: %s", n.binary, n.feature, n.priority, n.sonames)
    # The libraries that unlock disks (the ones dlopen.list names) are reported when missing, by
    # soname; a systemd's other optional libraries (QR codes, BPF ...) are not worth a line.
    unlocking = {so for fb in fallbacks for so in fb.sonames}
    absent = sorted({n.sonames[0] for n in unmet if unlocking & set(n.sonames)})
    part = replace(resolved.part, missing=(*resolved.part.missing, *absent))
    if not wanted:
        return part
    log.info("dlopen notes want %s", " ".join(wanted))
    prime = getattr(resolved.db, "prime_files", None)
    if prime is not None:
        prime(wanted)
    reqs = [closure.Request(path, "dlopen") for path in wanted]
    more = closure.resolve(
        resolved.db, reqs, resolved.excluder, weak_deps=config.weak_deps, seed=resolved.chosen
    )
    taken = {e.path for e in part.entries}
    extra = package_part(config, resolved, more, taken)
    return Part(
        entries=(*part.entries, *extra.entries),
        packages=tuple(sorted((*part.packages, *extra.packages), key=lambda c: (c.name, c.nevra))),
        cut_edges=tuple(sorted((*part.cut_edges, *extra.cut_edges), key=lambda c: (c.package, c.requires))),
        missing=(*part.missing, *extra.missing),
        warnings=(*part.warnings, *extra.warnings),
        options=part.options,
        errors=(*part.errors, *extra.errors),
    )


def requests(config: Config, family: str) -> list[closure.Request]:
    """The base list of the family, its file-system tools, the profiles' lists, then the config's and
    command line's entries; less the entries named by RemovePackages=."""
    reqs = [closure.Request.parse(e, "list") for e in read_list(f"packages/{family}/base.list")]
    reqs += filesystem_tools(config, family)
    for p in config.profiles:
        reqs += [
            closure.Request.parse(e, f"profile:{p}")
            for e in read_list(f"packages/{family}/profiles/{p}.list")
        ]
    reqs += [
        closure.Request.parse(e, "--add-package" if e in config.added_packages else "config")
        for e in config.packages
    ]
    # --remove-package takes a list entry out too: naming it is how one drops a wanted package.
    removed = set(config.remove_packages)
    return [r for r in reqs if r.entry not in removed]


def filesystem_table(family: str) -> list[tuple[str, closure.Request]]:
    path = f"packages/{family}/filesystems.list"
    if not (resource_dir() / path).exists():
        return []
    return [
        (t, closure.Request.parse(e, "list")) for t, e in (line.split(None, 1) for line in read_list(path))
    ]


def every_filesystem(config: Config) -> bool:
    """Generic, or host-only where the root cannot be told: every file system's tools."""
    return config.generic or not hostprobe.root_fs_known(config.root, config.procfs)  # kmod.py warns


def filesystem_tools(config: Config, family: str) -> list[closure.Request]:
    """The tools of every file system for a generic initrd, those installed (a root has the tools of
    the file systems it uses); host-only, those of the file systems it mounts, required."""
    table = filesystem_table(family)
    if every_filesystem(config):
        reqs = [closure.Request(r.entry, r.origin, optional=True) for _t, r in table]
    else:
        wanted = {t for t, _why in hostprobe.initrd_filesystems(config.root, config.procfs)}
        reqs = [closure.Request(r.entry, f"fs {t}", r.optional) for t, r in table if t in wanted]
    out: dict[str, closure.Request] = {}
    for r in reqs:
        out.setdefault(r.entry, r)
    return list(out.values())


def filesystem_warnings(config: Config, family: str, missing: Sequence[str]) -> list[str]:
    """For an initrd with every file system's tools: one warning naming those not installed."""
    if not every_filesystem(config):
        return []
    absent: dict[str, list[str]] = {}
    for fstype, req in filesystem_table(family):
        if req.entry in missing:
            absent.setdefault(req.entry, []).append(fstype)
    if not absent:
        return []
    which = "; ".join(f"{', '.join(types)} ({entry})" for entry, types in absent.items())
    return [
        f"no tools for {which} in the initrd: not installed (install them to check, repair or make"
        " such file systems from the initrd)"
    ]


def profile_removals(config: Config) -> list[str]:
    """Files only a profile uses (remove-files-unless-PROFILE.list), for the profiles that are off."""
    out: list[str] = []
    for profile in PROFILES:
        path = f"remove-files-unless-{profile}.list"
        if profile not in config.profiles and (resource_dir() / path).exists():
            out += read_list(path)
    return out


def exclusions(family: str) -> list[str]:
    globs = read_list("exclude.list")
    if (resource_dir() / f"packages/{family}/exclude.list").exists():
        globs += read_list(f"packages/{family}/exclude.list")
    return globs


@dataclass(frozen=True)
class Resolved:
    """The package step: its part of the plan, and what resolving more on top of it needs."""

    part: Part
    db: Any  # PackageDB
    family: str
    chosen: tuple[closure.Chosen, ...]
    excluder: closure.Excluder
    remove_globs: tuple[str, ...]


def resolve_packages(config: Config, os_release: dict[str, str]) -> Resolved:
    family = osrelease.family(os_release)
    db = open_db(config.root, config.backend)
    excluder = closure.Excluder(exclusions(family), config.remove_packages)
    reqs = requests(config, family)
    prime = getattr(db, "prime_files", None)
    if prime is not None:  # the few file-path entries, without indexing every package's files
        prime([r.entry for r in reqs if r.entry.startswith("/")])
    result = closure.resolve(db, reqs, excluder, weak_deps=config.weak_deps)
    remove_globs = (*read_list("remove-files.list"), *profile_removals(config), *config.remove_files)
    resolved = Resolved(Part(), db, family, result.packages, excluder, remove_globs)
    notes = (*db.notes, *filesystem_warnings(config, family, result.missing))
    return replace(resolved, part=package_part(config, resolved, result, notes=notes))


def package_step(config: Config, os_release: dict[str, str]) -> Part:
    return resolve_packages(config, os_release).part


def package_part(
    config: Config,
    resolved: Resolved,
    result: closure.Closure,
    taken: Iterable[str] = (),
    notes: Sequence[str] = (),
) -> Part:
    """The entries and choices of the packages of `result`; `taken`: paths packages before them own;
    `notes`: warnings about the database and the list, before those about the packages' files."""
    db = resolved.db
    per_pkg, warnings = files.package_entries(config.root, db, result.packages, resolved.remove_globs, taken)
    choices = [
        PackageChoice(c.package.nevra, c.package.name, c.reason, len(pf.entries), pf.bytes)
        for c, pf in zip(result.packages, per_pkg, strict=True)
    ]
    return Part(
        entries=tuple(e for pf in per_pkg for e in pf.entries),
        packages=tuple(sorted(choices, key=lambda c: (c.name, c.nevra))),
        cut_edges=tuple(sorted(result.cut_edges, key=lambda c: (c.package, c.requires))),
        missing=result.missing,
        warnings=(*result.warnings, *notes, *warnings),
        options={"backend": db.backend, "family": resolved.family, "weak_deps": config.weak_deps},
        errors=tuple(e for pf in per_pkg if (e := pf.error(config.root))),
    )


# --- merging


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
    config: Config, os_release: dict[str, str], parts: Sequence[Any], packages_only: bool = False
) -> Plan:
    def cat(name: str) -> tuple[Any, ...]:
        return tuple(x for p in parts for x in getattr(p, name, ()))

    options: dict[str, Any] = {}
    for p in parts:
        options.update(getattr(p, "options", {}))
    return Plan(
        root=config.root,
        kver=config.kver,
        backend=str(options.get("backend", "")),
        generic=config.generic,
        profiles=config.profiles,
        os_release=os_release,
        packages=cat("packages"),
        entries=merge_entries(getattr(p, "entries", ()) for p in parts),
        cut_edges=cat("cut_edges"),
        missing=cat("missing"),
        modules=cat("modules"),
        firmware=cat("firmware"),
        missing_firmware=cat("missing_firmware"),
        warnings=cat("warnings"),
        options=options,
        errors=cat("errors"),
        packages_only=packages_only,
        builtin=cat("builtin"),
        required_modules=cat("required_modules"),
    )
