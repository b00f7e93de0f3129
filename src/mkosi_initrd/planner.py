"""Config → Plan: packages (closure), their files, modules, firmware and generated extras."""

from __future__ import annotations

from mkosi_initrd.config import Config
from mkosi_initrd.plan import Plan


def make_plan(config: Config) -> Plan:
    raise NotImplementedError("planner.make_plan: owned by the package-plan work (issue 2)")
