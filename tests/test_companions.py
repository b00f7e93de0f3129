"""kernel_install/companions.py: what lands in the staging area and beside the UKI, and what is refused
before anything is replaced (the real kernel-install 257 run is in test_addons_trixie.py)."""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

import pytest

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel_install.companions import (
    check_companions,
    credential_bytes,
    remove_companions,
    stage_companions,
)
from mkosi_initrd.kernel_install.policy import Context

KVER = "6.12.0-test"
# The null-key credential header systemd-creds 257 writes: key type id, then the AES256-GCM sizes.
NULL_KEY_ID = bytes.fromhex("058469daf6f54324800549da0f8ea2fb")
CRED = NULL_KEY_ID + struct.pack("<4I", 32, 1, 12, 16) + os.urandom(64)


def context(tmp_path: Path, layout: str = "uki") -> Context:
    (tmp_path / "staging").mkdir(exist_ok=True)
    return Context(
        layout=layout, staging=tmp_path / "staging", boot_root=tmp_path / "boot", entry_token="tok"
    )


def files(tmp_path: Path, **content: bytes) -> list[Path]:
    out = []
    for name, data in content.items():
        p = tmp_path / "src" / name.replace("_", ".")
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        out.append(p)
    return out


def named(tmp_path: Path, content: dict[str, bytes]) -> list[Path]:
    out = []
    for name, data in content.items():
        p = tmp_path / "src" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        out.append(p)
    return out


def listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_companions_land_in_the_staging_area_and_beside_the_uki(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    base64_text = base64.encodebytes(CRED)  # what `systemd-creds encrypt` writes: wrapped Base64 lines
    given = [
        *files(tmp_path, debug_addon_efi=b"MZ addon", b_cred=CRED),
        *named(
            tmp_path,
            {"systemd.extra-unit.x.service.cred": base64_text, "cryptsetup.passphrase.cred": base64_text},
        ),
    ]
    beside = tmp_path / f"boot/EFI/Linux/tok-{KVER}.efi.extra.d"
    assert stage_companions(ctx, KVER, given) == (tmp_path / "staging/uki.efi.extra.d", beside)
    # A generator's credential is staged decoded, a service's (ImportCredential=) as Base64.
    want = {"b.cred": CRED, "debug.addon.efi": b"MZ addon", "systemd.extra-unit.x.service.cred": CRED}
    want["cryptsetup.passphrase.cred"] = base64_text
    want[".mkosi-initrd-staged"] = (
        b"debug.addon.efi\nb.cred\nsystemd.extra-unit.x.service.cred\ncryptsetup.passphrase.cred\n"
    )
    assert listing(tmp_path / "staging/uki.efi.extra.d") == want and listing(beside) == want
    assert (beside / "b.cred").stat().st_mode & 0o777 == 0o600
    # A second add with another set replaces the directory whole; no temp directories stay.
    stage_companions(ctx, KVER, given[:1])
    assert listing(beside) == {".mkosi-initrd-staged": b"debug.addon.efi\n", "debug.addon.efi": b"MZ addon"}
    assert sorted(p.name for p in beside.parent.iterdir()) == [beside.name]
    # No companions configured any more: none boot with the UKI.
    assert stage_companions(ctx, KVER, []) == ()
    assert not beside.exists() and not (tmp_path / "staging/uki.efi.extra.d").exists()


def test_remove_deletes_the_directory_beside_the_uki(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    stage_companions(ctx, KVER, files(tmp_path, x_addon_efi=b"MZ"))
    assert remove_companions(ctx, KVER) == tmp_path / f"boot/EFI/Linux/tok-{KVER}.efi.extra.d"
    assert list((tmp_path / "boot/EFI/Linux").iterdir()) == []
    assert remove_companions(ctx, KVER) is None


def test_other_layouts_get_no_companions(tmp_path: Path) -> None:
    assert stage_companions(context(tmp_path, "bls"), KVER, files(tmp_path, x_addon_efi=b"MZ")) == ()
    assert list((tmp_path / "staging").iterdir()) == [] and not (tmp_path / "boot").exists()


def test_text_that_is_no_credential_is_staged_as_it_is(tmp_path: Path) -> None:
    plain = named(tmp_path, {"systemd.extra-unit.a.service.cred": b"aGVsbG8gd29ybGQh\n"})
    assert credential_bytes(plain[0]) == b"aGVsbG8gd29ybGQh\n"  # valid Base64, but no credential header
    binary = named(tmp_path, {"systemd.extra-unit.b.service.cred": CRED})
    assert credential_bytes(binary[0]) == CRED


def test_bad_companions_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    good = files(tmp_path, x_addon_efi=b"MZ")
    stage_companions(ctx, KVER, good)
    beside = tmp_path / f"boot/EFI/Linux/tok-{KVER}.efi.extra.d"
    with pytest.raises(InitrdError, match=r"companion file .*/missing\.cred does not exist"):
        stage_companions(ctx, KVER, [*good, tmp_path / "missing.cred"])
    with pytest.raises(InitrdError, match=r"systemd-stub reads only \*\.addon\.efi"):
        check_companions(files(tmp_path, notes_txt=b"x"))
    other = tmp_path / "other" / "x.addon.efi"
    other.parent.mkdir()
    other.write_bytes(b"MZ2")
    with pytest.raises(InitrdError, match="have the same name x.addon.efi"):
        check_companions([*good, other])
    assert listing(beside) == {".mkosi-initrd-staged": b"x.addon.efi\n", "x.addon.efi": b"MZ"}


def test_files_others_put_beside_the_uki_are_kept_ours_replaced(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    beside = tmp_path / f"boot/EFI/Linux/tok-{KVER}.efi.extra.d"
    beside.mkdir(parents=True)
    (beside / "theirs.addon.efi").write_bytes(b"MZ theirs")
    stage_companions(ctx, KVER, files(tmp_path, ours_addon_efi=b"MZ ours"))
    assert listing(beside) == {
        ".mkosi-initrd-staged": b"ours.addon.efi\n",
        "ours.addon.efi": b"MZ ours",
        "theirs.addon.efi": b"MZ theirs",
    }
    stage_companions(ctx, KVER, [])  # ours left the configuration: theirs stays
    assert listing(beside) == {".mkosi-initrd-staged": b"", "theirs.addon.efi": b"MZ theirs"}
