"""Human-readable rendering of a plan."""

from __future__ import annotations

from mkosi_initrd.plan import Plan


def format_plan(plan: Plan) -> str:
    raise NotImplementedError("report.format_plan: owned by the package-plan work (issue 2)")
