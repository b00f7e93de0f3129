"""UKIs boot under OVMF (QEMU TCG) from a FAT ESP as EFI/BOOT/BOOTX64.EFI, through the initrd to the root.

The UKIs are built by `mkosi-initrd --generic --format uki` from this host's packages and kernel, so
the whole chain is ours: firmware → systemd-stub → kernel with .cmdline → our .initrd → the marker root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from boot.disks import ROOT_UUID, make_esp, marker_root
from boot.qemu import ROOT_MARKER, boot
from fixtures.uki_inputs import installed_kernel, make_keypair, sbverify
from mkosi_initrd import cli, uki

KERNEL, KVER = installed_kernel()
CMDLINE = f"root=UUID={ROOT_UUID} ro console=ttyS0,115200 panic=1 oops=panic"

pytestmark = [
    pytest.mark.boot,
    pytest.mark.skipif(not Path(f"/usr/lib/modules/{KVER}").is_dir(), reason=f"modules of {KVER} missing"),
]


def build_and_boot(tmp_path: Path, *flags: str) -> None:
    efi = tmp_path / "uki.efi"
    args = ["--generic", "--format", "uki", "-k", KVER, "--kernel-image", str(KERNEL), "--no-cache"]
    assert cli.main([*args, "--cmdline", CMDLINE, "-o", str(efi), *flags]) == 0
    info = uki.describe(efi)
    assert info["cmdline"] == CMDLINE and "/init" in info["initrd"]["files"]
    esp = make_esp(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": efi})

    name = "uki-signed" if flags else "uki"
    result = boot(
        None, None, [marker_root("ext4")], marker=ROOT_MARKER, timeout=420, ovmf_esp=esp, name=name
    )
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert f"Command line: {CMDLINE}" in log  # from .cmdline: nothing else passes one
    assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in log
    assert result.facts["fs"] == "ext4" and result.facts["label"] == "ext4"


def test_unsigned_uki_boots_to_the_root(tmp_path: Path) -> None:
    build_and_boot(tmp_path)


def test_signed_uki_boots_to_the_root(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key, cert = make_keypair(keys)
    build_and_boot(tmp_path, "--secureboot-private-key", str(key), "--secureboot-certificate", str(cert))
    assert sbverify(cert, tmp_path / "uki.efi").returncode == 0
