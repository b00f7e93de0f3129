"""UKIs boot under OVMF (QEMU TCG) from a FAT ESP as EFI/BOOT/BOOTX64.EFI, through the initrd to the root.

The UKIs are built by `mkosi-initrd --generic --format uki` from this host's packages and kernel, so
the whole chain is ours: firmware → systemd-stub → kernel with .cmdline → our .initrd → the marker root.
With Secure Boot enforced (our test certificate enrolled as PK/KEK/db in a copy of the OVMF variable
store, by virt-firmware's virt-fw-vars), the signed UKI boots and the unsigned one is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from boot import qemu, secureboot
from boot.disks import ROOT_UUID, make_esp, marker_root
from boot.qemu import ROOT_MARKER, boot
from fixtures.kernel import kernel_under_test
from fixtures.uki_inputs import make_keypair, sbverify
from mkosi_initrd import cli
from mkosi_initrd.uki.describe import describe

KERNEL, KVER = kernel_under_test().image, kernel_under_test().kver
CMDLINE = f"root=UUID={ROOT_UUID} ro console=ttyS0,115200 panic=1 oops=panic no_timer_check"

pytestmark = [
    pytest.mark.boot,
    pytest.mark.usefixtures("host_kernel"),
]


def build_esp(tmp_path: Path, *flags: str) -> Path:
    efi = tmp_path / "uki.efi"
    args = ["--generic", "--format", "uki", "-k", KVER, "--kernel-image", str(KERNEL), "--no-cache"]
    assert cli.main([*args, "--cmdline", CMDLINE, "-o", str(efi), *flags]) == 0
    info = describe(efi)
    assert info["cmdline"] == CMDLINE and "/init" in info["initrd"]["files"]
    return make_esp(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": efi})


def boot_esp(esp: Path, name: str, timeout: int = 420, **kw: Any) -> qemu.BootResult:
    return boot(
        None, None, [marker_root("ext4")], marker=ROOT_MARKER, timeout=timeout, ovmf_esp=esp, name=name, **kw
    )


def build_and_boot(tmp_path: Path, *flags: str) -> str:
    result = boot_esp(build_esp(tmp_path, *flags), "uki-signed" if flags else "uki")
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert f"Command line: {CMDLINE}" in log  # from .cmdline: nothing else passes one
    assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in log
    assert result.facts["fs"] == "ext4" and result.facts["label"] == "ext4"
    return log


def test_unsigned_uki_boots_to_the_root(tmp_path: Path) -> None:
    build_and_boot(tmp_path)


def test_signed_uki_boots_to_the_root(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    build_and_boot(tmp_path, *signing_flags(keys))
    assert sbverify(keys / "db.crt", tmp_path / "uki.efi").returncode == 0


def signing_flags(keys: Path) -> list[str]:
    key, cert = make_keypair(keys)
    return ["--secureboot-private-key", str(key), "--secureboot-certificate", str(cert)]


@pytest.fixture
def secure_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """OVMF variables with Secure Boot on and only our certificate trusted; returns the keys directory."""
    return secureboot.enroll(tmp_path, monkeypatch)


def test_secure_boot_runs_the_signed_uki(tmp_path: Path, secure_boot: Path) -> None:
    flags = ["--secureboot-private-key", str(secure_boot / "db.key")]
    log = build_and_boot(tmp_path, *flags, "--secureboot-certificate", str(secure_boot / "db.crt"))
    assert "secureboot: Secure boot enabled" in log


def test_secure_boot_refuses_the_unsigned_uki(tmp_path: Path, secure_boot: Path) -> None:
    esp = build_esp(tmp_path)
    result = boot_esp(
        esp, "uki-unsigned-sb", timeout=180, fail_patterns=("Access Denied", "Security Violation")
    )
    assert not result.passed
    assert "Access Denied" in result.reason, result.explain()
