"""Boot: initrds built from the Debian 13 root boot its own kernel (6.12, .ko.xz modules, systemd 257).

Generic builds from the trixie fixture (`--root T --generic`, the profiles a layout needs), on the
core roots of the boot matrix (tests/boot/matrix.py: the same disks and command lines): plain ext4,
LUKS2 (`rd.luks.uuid=` + `rd.luks.key=`, the key in an appended cpio: a generic initrd carries no
crypttab), LVM, RAID1; and a UKI on trixie's systemd-stub 257 under OVMF. The LUKS2 root also opens with
no key file at all, from a `cryptsetup.passphrase` credential (without it, the boot stops at the prompt).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from boot import disks, matrix, stacked
from boot.qemu import ROOT_MARKER, boot
from fixtures.trixie import TrixieRoot

SRC = str(Path(__file__).parents[1] / "src")
CASES = ("plain", "luks-cmdline", "lvm", "raid1")
pytestmark = pytest.mark.boot


def build(trixie: TrixieRoot, out: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "mkosi_initrd", "--root", str(trixie.root), "-k", trixie.kver, "--generic"]
    built = subprocess.run(
        [*cmd, "-o", str(out), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr


@pytest.mark.parametrize("name", CASES)
def test_trixie_generic_initrd_boots_the_trixie_kernel_to_the_root(
    trixie: TrixieRoot, name: str, tmp_path: Path
) -> None:
    case = matrix.CASES[name]
    initrd = tmp_path / "initrd"
    build(trixie, initrd, *(a for p in case.profiles for a in ("--profile", p)))
    if case.key_from == "cmdline":
        initrd = disks.initrd_with(initrd, {matrix.KEY_PATH: stacked.LUKS_KEY}, tmp_path / "initrd+key")
    result = boot(
        trixie.kernel, initrd, case.disk_images(), case.cmdline, timeout=case.timeout, name=f"trixie-{name}"
    )
    assert result.passed, result.explain()
    want = {"fs": case.expect_fs, "label": case.expect_label, "src": case.expect_src or None}
    assert {k: result.facts.get(k) for k, v in want.items() if v} == {k: v for k, v in want.items() if v}
    log = result.log_path.read_text(errors="replace")
    assert f"Linux version {trixie.kver}" in log and "Running in initrd." in log
    assert "systemd 257" in log  # the root's systemd ran the initrd


def test_trixie_uki_boots_under_ovmf_on_its_own_stub(trixie: TrixieRoot, tmp_path: Path) -> None:
    efi = tmp_path / "uki.efi"
    cmdline = f"root=UUID={disks.ROOT_UUID} ro console=ttyS0,115200 panic=1 oops=panic no_timer_check"
    build(trixie, efi, "--format", "uki", "--kernel-image", str(trixie.kernel), "--cmdline", cmdline)
    esp = disks.make_esp(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": efi})
    result = boot(
        None,
        None,
        [disks.marker_root("ext4")],
        marker=ROOT_MARKER,
        timeout=360,
        ovmf_esp=esp,
        name="trixie-uki",
    )
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert f"Command line: {cmdline}" in log  # from .cmdline: nothing else passes one
    assert f"Linux version {trixie.kver}" in log and "systemd 257" in log


def test_a_cryptsetup_passphrase_credential_unlocks_the_luks_root(
    trixie: TrixieRoot, tmp_path: Path
) -> None:
    """No key file anywhere: systemd-cryptsetup takes the passphrase from the `cryptsetup.passphrase`
    system credential, which our drop-in imports (`ImportCredential=cryptsetup.*`, systemd >= 254)."""
    case = matrix.CASES["luks-cmdline"]
    initrd = tmp_path / "initrd"
    build(trixie, initrd, *(a for p in case.profiles for a in ("--profile", p)))
    passphrase = stacked.LUKS_KEY.decode()  # a key file's bytes are its passphrase
    cmdline = case.cmdline.replace(f" rd.luks.key={matrix.KEY_PATH}", "")
    assert "rd.luks.key" not in cmdline
    cmdline += f" systemd.set_credential=cryptsetup.passphrase:{passphrase}"
    result = boot(
        trixie.kernel, initrd, case.disk_images(), cmdline, timeout=case.timeout, name="trixie-luks-cred"
    )
    assert result.passed, result.explain()  # a passphrase prompt ends the boot (FAIL_PATTERNS)
    assert result.facts.get("label") == case.expect_label and result.facts.get("src") == case.expect_src
    assert "systemd 257" in result.log_path.read_text(errors="replace")
