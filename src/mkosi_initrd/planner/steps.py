"""Config → Plan: packages (closure), their files, modules, firmware and generated extras.

`make_plan` is a short list of steps; each returns a `Part` (parts.py), merged once into the plan,
which the generated entries (generated.py) then see whole, for the manifest and sysusers.d.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from mkosi_initrd import osrelease
from mkosi_initrd.config.model import Config
from mkosi_initrd.config.settings import PROFILES
from mkosi_initrd.host import probes
from mkosi_initrd.host.carry import host_config
from mkosi_initrd.kernel.modules import start_kernel
from mkosi_initrd.log import log
from mkosi_initrd.packages import closure, files
from mkosi_initrd.packages.database import open_db
from mkosi_initrd.packages.model import PackageDB
from mkosi_initrd.plan.model import PackageChoice, Plan
from mkosi_initrd.plan.parts import Part, add_entries, merge
from mkosi_initrd.planner import needs
from mkosi_initrd.planner.dlopen import Fallback, dlopen_libraries
from mkosi_initrd.planner.effective import effective_config
from mkosi_initrd.planner.generated import generated_entries, systemd_version
from mkosi_initrd.planner.sysext import sysext_entries
from mkosi_initrd.resources import read_list, resource_dir


def make_plan(config: Config, *, read_needs: bool = True) -> Plan:
    """The plan for `config`; `read_needs`: with what its files need at run time (needs.py), for
    the pre-flight check."""
    config = effective_config(config)
    os_release = osrelease.read_os_release(config.root)
    # The kernel first: depmod then writes the subset's module index on another core while the
    # packages are planned.
    kernel = start_kernel(config)
    try:
        packages = dlopen_step(config, resolve_packages(config, os_release))
        kernel_part = kernel.result()
    except BaseException:
        kernel.cancel()
        raise
    extra = Part(entries=tuple(files.extra_entries(config.root, config.extra_files)))
    plan = merge(config, os_release, [packages, kernel_part, host_config(config), extra])
    plan = add_entries(plan, sysext_entries(config, plan, systemd_version(plan)))
    plan = add_entries(plan, generated_entries(config, plan))
    return replace(plan, needs=needs.scan(plan.entries)) if read_needs else plan


def make_package_plan(config: Config) -> Plan:
    """The package part alone (`plan --packages-only`): for roots without a kernel yet, such as
    build roots and container images. No modules, firmware, host configuration or generated files."""
    config = effective_config(config)
    os_release = osrelease.read_os_release(config.root)
    packages = dlopen_step(config, resolve_packages(config, os_release))
    return merge(config, os_release, [packages], packages_only=True)


# --- step 1: packages


def dlopen_step(config: Config, resolved: Resolved) -> Part:
    """The packages, and those of the libraries included programs dlopen() (.note.dlopen, or
    dlopen.list for loaders that declare nothing) that are installed: resolved on top of the package
    closure, as if they had been list entries."""
    fallbacks = [Fallback.parse(line) for line in read_list("dlopen.list")]
    wanted, unmet = dlopen_libraries(config.root, resolved.part.entries, fallbacks)
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
    return config.generic or not probes.root_fs_known(config.root, config.procfs)  # selection.py warns


def filesystem_tools(config: Config, family: str) -> list[closure.Request]:
    """The tools of every file system for a generic initrd, those installed (a root has the tools of
    the file systems it uses); host-only, those of the file systems it mounts, required."""
    table = filesystem_table(family)
    if every_filesystem(config):
        reqs = [closure.Request(r.entry, r.origin, optional=True) for _t, r in table]
    else:
        wanted = {t for t, _why in probes.initrd_filesystems(config.root, config.procfs)}
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
    db: PackageDB
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
