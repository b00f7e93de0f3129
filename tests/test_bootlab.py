"""The boot harness itself, proven against the host's dracut initrd (the oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from boot.disks import ROOT_UUID, make_esp, marker_root
from boot.qemu import ROOT_MARKER, boot

KVER = "6.1.0-56-amd64"
KERNEL = Path(f"/boot/vmlinuz-{KVER}")
DRACUT_INITRD = Path(f"/boot/initrd.img-{KVER}")
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")

needs_host_boot_files = pytest.mark.skipif(
    not (KERNEL.exists() and DRACUT_INITRD.exists()), reason=f"needs {KERNEL} and {DRACUT_INITRD}"
)


@pytest.mark.boot
@needs_host_boot_files
def test_dracut_initrd_boots_the_marker_root(tmp_path: Path) -> None:
    result = boot(
        KERNEL, DRACUT_INITRD, [marker_root("ext4")], "root=/dev/vda ro", timeout=300, name="oracle"
    )
    assert result.passed, result.explain()
    assert result.facts["fs"] == "ext4"
    assert result.facts["label"] == "ext4"
    assert result.guest_uptime is not None and 0 < result.guest_uptime < result.seconds + 5


@pytest.mark.boot
def test_harness_fails_when_the_root_is_missing(tmp_path: Path) -> None:
    # No initrd and no disk: the kernel panics (VFS: unable to mount root) and the harness says so fast.
    result = boot(KERNEL, None, [], "root=/dev/vda", timeout=120, name="no-root")
    assert not result.passed
    assert result.reason.startswith("failure: ") and "Kernel panic" in result.reason
    assert ROOT_MARKER not in result.log_path.read_text(errors="replace")


@pytest.mark.boot
@needs_host_boot_files
def test_ovmf_boots_systemd_boot_from_the_esp(tmp_path: Path) -> None:
    entry = tmp_path / "marker.conf"
    entry.write_text(
        "title marker\nlinux /vmlinuz\ninitrd /initrd\n"
        f"options root=UUID={ROOT_UUID} ro console=ttyS0 no_timer_check\n"
    )
    loader = tmp_path / "loader.conf"
    loader.write_text("timeout 0\ndefault marker.conf\n")
    esp = make_esp(
        tmp_path / "esp.img",
        {
            "EFI/BOOT/BOOTX64.EFI": SYSTEMD_BOOT,
            "loader/loader.conf": loader,
            "loader/entries/marker.conf": entry,
            "vmlinuz": KERNEL,
            "initrd": DRACUT_INITRD,
        },
    )
    result = boot(
        None, None, [marker_root("ext4")], marker=ROOT_MARKER, timeout=400, ovmf_esp=esp, name="ovmf"
    )
    assert result.passed, result.explain()
    assert result.facts["fs"] == "ext4"
