"""UKIs boot under OVMF (QEMU TCG) from a FAT ESP as EFI/BOOT/BOOTX64.EFI, through the initrd to the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from boot.disks import ROOT_UUID, make_esp, marker_root
from boot.qemu import boot
from fixtures.uki_inputs import installed_kernel, make_keypair, sbverify
from mkosi_initrd import uki
from mkosi_initrd.config import Config

KERNEL, KVER = installed_kernel()
# The initrd under test is the host's (dracut-built) one until our builder can make one for the boot
# lab; what this proves is the UKI: firmware → stub → kernel with .cmdline → .initrd → root.
HOST_INITRD = Path(f"/boot/initrd.img-{KVER}")
CMDLINE = f"root=UUID={ROOT_UUID} ro console=ttyS0,115200 panic=1 oops=panic"

pytestmark = [
    pytest.mark.boot,
    pytest.mark.skipif(not HOST_INITRD.exists(), reason=f"needs {HOST_INITRD}"),
]


def build_and_boot(tmp_path: Path, **signing: Path) -> None:
    config = Config(root=Path("/"), kver=KVER)
    options = uki.uki_options(config, kernel_image=KERNEL, cmdline=CMDLINE, environ={}, **signing)  # type: ignore[arg-type]
    efi = tmp_path / "uki.efi"
    uki.build_uki(config, options, [HOST_INITRD], efi)
    if signing:
        assert sbverify(signing["secureboot_certificate"], efi).returncode == 0
    esp = make_esp(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": efi})

    result = boot(None, None, [marker_root("ext4")], marker="MKOSI-INITRD-ROOT-OK", timeout=420,
                  ovmf_esp=esp, name="uki-signed" if signing else "uki")  # fmt: skip
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert f"Command line: {CMDLINE}" in log  # from .cmdline: nothing else passes one
    assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" in log
    assert result.facts["fs"] == "ext4" and result.facts["label"] == "ext4"


def test_unsigned_uki_boots_to_the_root(tmp_path: Path) -> None:
    build_and_boot(tmp_path)


def test_signed_uki_boots_to_the_root(tmp_path: Path) -> None:
    key, cert = make_keypair(tmp_path)
    build_and_boot(tmp_path, secureboot_private_key=key, secureboot_certificate=cert)
