"""Config → Plan: packages (closure), their files, modules, firmware and generated extras.

`make_plan` is a short list of steps; each returns a `Part` (parts.py), merged once into the plan,
which the generated entries (generated.py) then see whole, for the manifest and sysusers.d.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mkosi_initrd import osrelease
from mkosi_initrd.config.model import Config
from mkosi_initrd.config.settings import PROFILES
from mkosi_initrd.host import probes
from mkosi_initrd.host.carry import host_config
from mkosi_initrd.kernel.modules import start_kernel
from mkosi_initrd.log import log
from mkosi_initrd.packages import closure, files
from mkosi_initrd.packages.database import open_db
from mkosi_initrd.plan.model import PackageChoice, Plan
from mkosi_initrd.plan.parts import Part, add_entries, merge
from mkosi_initrd.planner import needs
from mkosi_initrd.planner.dlopen import dlopen_libraries
from mkosi_initrd.planner.effective import effective_config
from mkosi_initrd.planner.generated import generated_entries
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
        packages = dlopen_step(config, os_release, package_step(config, os_release))
        kernel_part = kernel.result()
    except BaseException:
        kernel.cancel()
        raise
    extra = Part(entries=tuple(files.extra_entries(config.root, config.extra_files)))
    plan = merge(config, os_release, [packages, kernel_part, host_config(config), extra])
    plan = add_entries(plan, generated_entries(config, plan))
    return dataclasses.replace(plan, needs=needs.scan(plan.entries)) if read_needs else plan


def make_package_plan(config: Config) -> Plan:
    """The package part alone (`plan --packages-only`): for roots without a kernel yet, such as
    build roots and container images. No modules, firmware, host configuration or generated files."""
    config = effective_config(config)
    os_release = osrelease.read_os_release(config.root)
    packages = dlopen_step(config, os_release, package_step(config, os_release))
    return merge(config, os_release, [packages], packages_only=True)


# --- step 1: packages


def dlopen_step(config: Config, os_release: dict[str, str], packages: Part) -> Part:
    """The packages again, if included programs dlopen() libraries (.note.dlopen) that are installed."""
    wanted, unmet = dlopen_libraries(config.root, packages.entries)
    for n in unmet:
        log.debug("%s: dlopen %s (%s), not installed: %s", n.binary, n.feature, n.priority, n.sonames)
    if not wanted:
        return packages
    log.info("dlopen notes want %s", " ".join(wanted))
    return package_step(config, os_release, [closure.Request(path, "dlopen") for path in wanted])


def requests(config: Config, family: str) -> list[closure.Request]:
    """The base list of the family, its file-system tools, the profiles' lists, then the config's and
    command line's entries."""
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
    return reqs


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


def package_step(config: Config, os_release: dict[str, str], extra: Sequence[closure.Request] = ()) -> Part:
    family = osrelease.family(os_release)
    db = open_db(config.root, config.backend)
    excluder = closure.Excluder(exclusions(family), config.remove_packages)
    reqs = [*requests(config, family), *extra]
    result = closure.resolve(db, reqs, excluder, weak_deps=config.weak_deps)
    remove_globs = [*read_list("remove-files.list"), *profile_removals(config), *config.remove_files]
    per_pkg, warnings = files.package_entries(config.root, db, result.packages, remove_globs)
    warnings = [*db.notes, *filesystem_warnings(config, family, result.missing), *warnings]
    choices = [
        PackageChoice(c.package.nevra, c.package.name, c.reason, len(pf.entries), pf.bytes)
        for c, pf in zip(result.packages, per_pkg, strict=True)
    ]
    return Part(
        entries=tuple(e for pf in per_pkg for e in pf.entries),
        packages=tuple(sorted(choices, key=lambda c: (c.name, c.nevra))),
        cut_edges=tuple(sorted(result.cut_edges, key=lambda c: (c.package, c.requires))),
        missing=result.missing,
        warnings=(*result.warnings, *warnings),
        options={"backend": db.backend, "family": family, "weak_deps": config.weak_deps},
        errors=tuple(e for pf in per_pkg if (e := pf.error(config.root))),
    )
