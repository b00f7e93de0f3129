"""Plan → files on disk: initrd (+ early microcode cpio), optionally a UKI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mkosi_initrd import scratch
from mkosi_initrd.build.options import BuildOptions, BuildResult
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.atomic import atomic_write
from mkosi_initrd.log import log
from mkosi_initrd.scratch import ScratchDir

if TYPE_CHECKING:
    from mkosi_initrd.plan.model import Plan

# What earlier versions left beside the output when killed (tempfile names; scratch.is_stale).
LEGACY_SCRATCH = (".mkosi-initrd-", ".uki-")

# The image writer and microcode (zstandard, lzma, cpio) are imported where they are used: a
# cached rebuild (cache.py) needs none of them, and its time budget is mostly imports.


class _Steps:
    """Progress lines (shown with -v) with the time each step took."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        log.info("%s (%.2fs)", what, now - self.last)
        self.last = now


def _write_microcode(data: bytes, path: Path) -> None:
    with atomic_write(path, 0o600) as f:
        f.write(data)


def write_outputs(
    config: Config, plan: Plan, options: BuildOptions, steps: _Steps | None = None
) -> tuple[int, Path | None]:
    """The initrd (or UKI) and microcode files for `plan`; returns (output size, microcode path)."""
    from mkosi_initrd.image.initrd import write_initrd
    from mkosi_initrd.image.microcode import microcode_cpio

    steps = steps or _Steps()
    mtime = config.source_date_epoch
    early = microcode_cpio(config, mtime=mtime)
    if early:
        steps.done(f"early microcode cpio: {len(early)} bytes")
    if options.format == "uki":
        return _write_uki(config, plan, options, early, steps), None
    if options.format != "cpio":
        raise InitrdError(f"unknown output format {options.format!r}", hint="use --format cpio or uki")
    separate = options.microcode_output is not None
    stats = write_initrd(
        plan.entries,
        options.output,
        compression=config.compression,
        level=config.level,
        mtime=mtime,
        early=[early] if early and not separate else [],
    )
    steps.done(f"initrd: {stats.cpio.entries} entries, {stats.cpio.data_bytes / 1e6:.1f} MB uncompressed")
    if separate and early and options.microcode_output is not None:
        _write_microcode(early, options.microcode_output)
        return stats.size, options.microcode_output
    return stats.size, None


def _write_uki(config: Config, plan: Plan, options: BuildOptions, early: bytes | None, steps: _Steps) -> int:
    from mkosi_initrd.image.initrd import write_initrd
    from mkosi_initrd.uki.assemble import build_uki
    from mkosi_initrd.uki.options import UkiInputs, uki_options

    resolved = options.uki or uki_options(config, UkiInputs(kernel_image=options.kernel_image))
    # The UKI's initrd and microcode, before they go into it: in scratch space (scratch.py), not
    # beside the output (an ESP has no room for a killed build's 30 MB).
    with ScratchDir(scratch.UKI) as tmp:
        initrd = tmp / "initrd"
        stats = write_initrd(
            plan.entries,
            initrd,
            compression=config.compression,
            level=config.level,
            mtime=config.source_date_epoch,
        )
        steps.done(
            f"initrd: {stats.cpio.entries} entries, {stats.cpio.data_bytes / 1e6:.1f} MB uncompressed"
        )
        ucode = None
        if early:
            ucode = tmp / "microcode"
            ucode.write_bytes(early)
        build_uki(config, resolved, [initrd], options.output, microcode=ucode)
    steps.done("UKI")
    return Path(options.output).stat().st_size


def check_outputs(options: BuildOptions) -> None:
    """Before anything is planned: every output goes into a directory that exists."""
    for what, path in (("output", options.output), ("microcode output", options.microcode_output)):
        if path is None:
            continue
        parent = Path(path).absolute().parent
        if not parent.is_dir():
            raise InitrdError(
                f"cannot write the {what} {path}: {parent} is not a directory",
                hint=f"create {parent} first, or choose another path",
            )


def _remove_stale_scratch(options: BuildOptions) -> None:
    scratch.remove_all_stale()
    out_dir = Path(options.output).absolute().parent
    for prefix in LEGACY_SCRATCH:
        scratch.remove_stale(out_dir, prefix)


def build(config: Config, options: BuildOptions) -> BuildResult:
    from mkosi_initrd.build.cache import BuildCache

    check_outputs(options)
    _remove_stale_scratch(options)
    steps = _Steps()
    cache = BuildCache.open(config, options)
    if cache and (hit := cache.lookup()):
        steps.done("cached result")
        return BuildResult(hit.output, hit.microcode, hit.size, hit.packages, hit.modules)
    from mkosi_initrd.planner.steps import make_plan

    plan = make_plan(config, read_needs=config.check)
    stop_on_errors(plan)
    if cache:
        cache.record(plan)  # the inputs' signatures as planned, before the files are read
    steps.done(
        f"plan: {len(plan.packages)} packages, {len(plan.modules)} modules, {len(plan.entries)} entries"
    )
    for w in plan.warnings:
        log.warning("%s", w)
    if config.check:
        from mkosi_initrd.build.check import require_bootable

        require_bootable(plan)
        steps.done("pre-flight check")
    else:
        log.warning("the pre-flight check is off (--no-check or Check=no): the image is written unchecked")
    size, microcode = write_outputs(config, plan, options, steps)
    # Only checked builds are cached: a checked build must never be served an unchecked image.
    if cache and config.check:
        cache.store(options.output, microcode, len(plan.packages), len(plan.modules))
    return BuildResult(
        Path(options.output), microcode, size, len(plan.packages), len(plan.modules), checked=config.check
    )


def files_absent(plan: Plan) -> str:
    """'N packages of the initrd have files that are not in ROOT', for a plan with errors."""
    n = len(plan.errors)
    have = "1 package of the initrd has" if n == 1 else f"{n} packages of the initrd have"
    return f"{have} files that are not in {plan.root}"


def stop_on_errors(plan: Plan) -> None:
    """A plan with errors (packages whose files are not in the root) is never built: what is left of
    it would not boot, and nothing is written."""
    if not plan.errors:
        return
    raise InitrdError(
        f"{files_absent(plan)}:\n" + "\n".join(f"  {e}" for e in plan.errors),
        hint="reinstall those packages, or point --root at the complete system"
        " (`mkosi-initrd plan` shows the plan and these counts)",
    )
