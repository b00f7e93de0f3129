"""Config → Plan: packages (closure), their files, modules, firmware and generated extras."""

from __future__ import annotations

from mkosi_initrd.config import Config
from mkosi_initrd.plan import Plan


def make_plan(config: Config) -> Plan:
    """Steps, each in its own module:

    1. packages: pkgdb.open_db → closure.resolve → files.package_entries     (issue 2)
    2. kernel:   kmod.plan_kernel(config) → KernelPart (modules, firmware, entries)  (issue 3)
    3. extras:   extras.generated_entries(config, ...) → entries              (issue 4)
    4. host:     hostconfig.host_entries(config) → entries                    (issue 6)
    then merge all entries (later steps may not silently replace package files), sort, freeze.
    """
    raise NotImplementedError("planner.make_plan: owned by the package-plan work (issue 2)")
