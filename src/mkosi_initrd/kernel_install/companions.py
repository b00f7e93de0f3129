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
then renamed into place), so a failed copy leaves the previous set, never half of a new one; what we
staged last time (listed in OWNED) is replaced, files someone else put there are kept.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel_install.policy import Context

# What systemd-stub looks for in extra.d (systemd-stub(7), "COMPANION FILES"); anything else would be
# silently ignored at boot, so it is refused when staging.
SUFFIXES = (".addon.efi", ".cred", ".sysext.raw", ".confext.raw", ".raw")
STAGED = "uki.efi.extra.d"
OWNED = ".mkosi-initrd-staged"  # the names we staged, so that a later add replaces only those
GENERATOR_CREDENTIALS = ("systemd.extra-unit.", "systemd.unit-dropin.")  # read by a generator
CRED_HEADER_SIZES = struct.pack("<4I", 32, 1, 12, 16)
BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


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


def credential_bytes(path: Path) -> bytes:
    """A credential as its reader in the initrd can take it. systemd 257 reads the credentials that came
    from the ESP (/run/credentials/@encrypted) two ways: services' ImportCredential= (cryptsetup.*,
    passwd.*, tmpfiles.*, ...) decode Base64, as `systemd-creds encrypt` writes it, while generators
    (systemd-debug-generator's systemd.extra-unit.* and systemd.unit-dropin.*) take the binary form
    only: Base64 there fails ("Failed to read credential ..., ignoring: Operation not supported"). So
    those are staged decoded (lossless), the others as they are."""
    data = path.read_bytes()
    if not path.name.startswith(GENERATOR_CREDENTIALS):
        return data
    text = b"".join(data.split())
    if not text or len(text) % 4 or text.strip(BASE64_ALPHABET):
        return data
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error:
        return data
    # Only what decodes to systemd's credential header (a key type id, then the AES256-GCM sizes: key
    # 32, block 1, IV 12, tag 16) is one; other text is left as it is.
    return decoded if decoded[16:32] == CRED_HEADER_SIZES else data


def uki_extra_dir(ctx: Context, kver: str) -> Path | None:
    """`$BOOT/EFI/Linux/ENTRY_TOKEN-KVER.efi.extra.d`, where 90-uki-copy puts the UKI; None when
    kernel-install did not say where that is."""
    if ctx.boot_root is None or not ctx.entry_token:
        return None
    return ctx.boot_root / "EFI/Linux" / f"{ctx.entry_token}-{kver}.efi.extra.d"


def owned(target: Path) -> set[str]:
    """The names we staged into `target` last time (its OWNED file; systemd-stub ignores that name)."""
    try:
        return set((target / OWNED).read_text().split())
    except OSError:
        return set()


def _replace_dir(target: Path, files: Sequence[Path]) -> None:
    """`target` holds `files`, plus whatever others put there (files we did not stage last time), or
    is left as it was. Without either the directory goes."""
    foreign = (
        [p for p in target.iterdir() if p.is_file() and p.name not in owned(target) | {OWNED}]
        if target.is_dir()
        else []
    )
    foreign = [p for p in foreign if p.name not in {f.name for f in files}]  # a configured file wins
    if not files and not foreign:
        shutil.rmtree(target, ignore_errors=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    new = target.with_name(f".{target.name}.{os.getpid()}.new")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(new, ignore_errors=True)
    try:
        new.mkdir(mode=0o755)
        for f in [*files, *foreign]:
            data = credential_bytes(f) if f.name.endswith(".cred") and f not in foreign else f.read_bytes()
            (new / f.name).write_bytes(data)
            os.chmod(new / f.name, 0o600 if f.name.endswith(".cred") else 0o644)
        (new / OWNED).write_text("".join(f"{f.name}\n" for f in files))
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
    """Put `files` (all companions of this UKI) into the staging area and beside the UKI, replacing the
    ones staged last time (a set emptied in the configuration must not keep booting with the old
    addons) and keeping files others put there; returns the directories that hold our files."""
    if ctx.layout != "uki":
        return ()
    check_companions(files)
    dirs = [d for d in (ctx.staging / STAGED if ctx.staging else None, uki_extra_dir(ctx, kver)) if d]
    for d in dirs:
        _replace_dir(d, files)
    return tuple(dirs) if files else ()


def remove_companions(ctx: Context, kver: str) -> Path | None:
    """`remove`: the directory beside the UKI (kernel-install 257 removes it too, older ones do not)."""
    target = uki_extra_dir(ctx, kver)
    if target is None or not target.is_dir():
        return None
    shutil.rmtree(target)
    return target
