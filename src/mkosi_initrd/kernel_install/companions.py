"""Companion files of a UKI: what systemd-stub picks up from `<uki>.efi.extra.d/` (layout uki only).

systemd-stub reads `*.addon.efi` (PE addons, verified under Secure Boot), `*.cred` (credentials,
into the initrd's /.extra/credentials/), `*.sysext.raw`, `*.confext.raw` (extension images) from the
directory named after the UKI plus `.extra.d` (boot counting `NAME+3-0.efi` keeps `NAME.efi.extra.d`).
The one mechanism that puts any of them there:

    stage_companions(ctx, kver, files)   # all of them in one call: the directory is replaced
    remove_companions(ctx, kver)

They go to `$KERNEL_INSTALL_STAGING_AREA/uki.efi.extra.d/`, which kernel-install's 90-uki-copy
copies beside the UKI in newer versions, and are also copied beside the UKI directly,
`$BOOT/EFI/Linux/ENTRY_TOKEN-KVER.efi.extra.d/`: kernel-install 257's 90-uki-copy removes that
directory on `remove` but never copies it on `add`. The directory is replaced whole (built beside it,
then renamed into place), so a failed copy leaves the previous set, never half of a new one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel_install.policy import Context

# What systemd-stub looks for in extra.d (systemd-stub(7), "COMPANION FILES"); anything else would be
# silently ignored at boot, so it is refused when staging.
SUFFIXES = (".addon.efi", ".cred", ".sysext.raw", ".confext.raw", ".raw")
STAGED = "uki.efi.extra.d"


def check_companions(files: Sequence[Path]) -> None:
    """Every file exists, has a name systemd-stub reads, and no two share a name; raises before anything
    is written, so a bad configuration never replaces a working set."""
    seen: dict[str, Path] = {}
    for f in files:
        if not f.name.endswith(SUFFIXES):
            raise InitrdError(
                f"companion file {f}: systemd-stub reads only {', '.join('*' + s for s in SUFFIXES)}",
                hint=f"rename {f.name} (a credential NAME.cred, an addon NAME.addon.efi)",
            )
        if not f.is_file():
            raise InitrdError(
                f"companion file {f} does not exist (or is not a regular file)",
                hint="fix the path in the configuration ([UKI] Addons=/Credentials=) or create the file",
            )
        if f.name in seen:
            raise InitrdError(f"companion files {seen[f.name]} and {f} have the same name {f.name}")
        seen[f.name] = f


def uki_extra_dir(ctx: Context, kver: str) -> Path | None:
    """`$BOOT/EFI/Linux/ENTRY_TOKEN-KVER.efi.extra.d`, where 90-uki-copy puts the UKI; None when
    kernel-install did not say where that is."""
    if ctx.boot_root is None or not ctx.entry_token:
        return None
    return ctx.boot_root / "EFI/Linux" / f"{ctx.entry_token}-{kver}.efi.extra.d"


def _replace_dir(target: Path, files: Sequence[Path]) -> None:
    """`target` holds exactly `files` afterwards, or is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    new = target.with_name(f".{target.name}.{os.getpid()}.new")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(new, ignore_errors=True)
    try:
        new.mkdir(mode=0o755)
        for f in files:
            shutil.copyfile(f, new / f.name)
            os.chmod(new / f.name, 0o600 if f.name.endswith(".cred") else 0o644)
        for f in new.iterdir():
            with f.open("rb") as fd:
                os.fsync(fd.fileno())
        if target.exists():
            target.rename(old)
        new.rename(target)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def stage_companions(ctx: Context, kver: str, files: Sequence[Path]) -> tuple[Path, ...]:
    """Put `files` (all companions of this UKI) into the staging area and beside the UKI; returns the
    directories written. No files: the directories are removed (a set emptied in the configuration
    must not keep booting with the old addons)."""
    if ctx.layout != "uki":
        return ()
    check_companions(files)
    dirs = [d for d in (ctx.staging / STAGED if ctx.staging else None, uki_extra_dir(ctx, kver)) if d]
    for d in dirs:
        if files:
            _replace_dir(d, files)
        else:
            shutil.rmtree(d, ignore_errors=True)
    return tuple(dirs) if files else ()


def remove_companions(ctx: Context, kver: str) -> Path | None:
    """`remove`: the directory beside the UKI (kernel-install 257 removes it too, older ones do not)."""
    target = uki_extra_dir(ctx, kver)
    if target is None or not target.is_dir():
        return None
    shutil.rmtree(target)
    return target
