"""Human-readable rendering of a plan: what goes in, and why."""

from __future__ import annotations

from mkosi_initrd.plan.model import Plan


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def format_plan(plan: Plan) -> str:
    osr = plan.os_release
    kernel = "absent (packages only)" if plan.packages_only else plan.kver
    lines = [
        f"root {plan.root}  kernel {kernel}  backend {plan.backend}"
        f"  os {osr.get('ID', '?')} {osr.get('VERSION_ID', '')}".rstrip(),
        f"profiles: {' '.join(plan.profiles) or '-'}  generic: {'yes' if plan.generic else 'no'}",
        "",
    ]
    pkg_bytes = sum(p.bytes for p in plan.packages)
    lines.append(
        f"packages ({len(plan.packages)}, {sum(p.files for p in plan.packages)} files, {_size(pkg_bytes)}):"
    )
    width = max((len(p.nevra) for p in plan.packages), default=0)
    for p in plan.packages:
        chain = " → ".join(p.reason)
        lines.append(f"  {p.nevra:<{width}} {p.files:>5} files {_size(p.bytes):>9}  {chain}")
    if plan.cut_edges:
        lines += [
            "",
            f"cut edges ({len(plan.cut_edges)}: requirements not followed, their targets are excluded):",
        ]
        lines += [f"  {c.package} requires {c.requires}  ✂ {c.excluded}" for c in plan.cut_edges]
    if plan.missing:
        lines += ["", f"missing (optional entries, not installed): {' '.join(plan.missing)}"]
    if plan.packages_only:
        lines += ["", "modules, firmware, host configuration, generated files: not planned (packages only)"]
    elif plan.modules:
        lines += ["", f"modules: {len(plan.modules)}"]
    if plan.firmware or plan.missing_firmware:
        lines += [f"firmware: {len(plan.firmware)} files, {len(plan.missing_firmware)} missing"]
    if plan.warnings:
        lines += ["", f"warnings ({len(plan.warnings)}):"] + [f"  {w}" for w in plan.warnings]
    if plan.errors:
        lines += ["", f"errors ({len(plan.errors)}: a build stops here):"] + [f"  {e}" for e in plan.errors]
    total = sum(e.size for e in plan.entries)
    lines += ["", f"total: {len(plan.entries)} entries, {_size(total)}"]
    return "\n".join(lines) + "\n"
