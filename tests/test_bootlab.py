"""The boot harness itself, proven against the host's dracut initrd (the oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from boot.disks import ROOT_UUID, make_esp, marker_root
from boot.qemu import ROOT_MARKER, boot
from fixtures.kernel import HostKernel
from prereq import require_file

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


@pytest.fixture
def dracut_initrd(host_kernel: HostKernel) -> Path:
    """The distribution's initrd of the test kernel: dracut's, made when the kernel package was installed."""
    return require_file(
        host_kernel.distro_initrd, "dracut (before the kernel, so its hook builds the initrd)"
    )


@pytest.mark.boot
def test_dracut_initrd_boots_the_marker_root(host_kernel: HostKernel, dracut_initrd: Path) -> None:
    result = boot(
        host_kernel.image,
        dracut_initrd,
        [marker_root("ext4")],
        "root=/dev/vda ro",
        timeout=300,
        name="oracle",
    )
    assert result.passed, result.explain()
    assert result.facts["fs"] == "ext4"
    assert result.facts["label"] == "ext4"
    assert result.guest_uptime is not None and 0 < result.guest_uptime < result.seconds + 5


@pytest.mark.boot
def test_harness_fails_when_the_root_is_missing(host_kernel: HostKernel) -> None:
    # No initrd and no disk: the kernel panics (VFS: unable to mount root) and the harness says so fast.
    result = boot(host_kernel.image, None, [], "root=/dev/vda", timeout=120, name="no-root")
    assert not result.passed
    assert result.reason.startswith("failure: ") and "Kernel panic" in result.reason
    assert ROOT_MARKER not in result.log_path.read_text(errors="replace")


@pytest.mark.boot
def test_ovmf_boots_systemd_boot_from_the_esp(
    tmp_path: Path, host_kernel: HostKernel, dracut_initrd: Path
) -> None:
    require_file(SYSTEMD_BOOT, "systemd-boot-efi")
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
            "vmlinuz": host_kernel.image,
            "initrd": dracut_initrd,
        },
    )
    result = boot(
        None, None, [marker_root("ext4")], marker=ROOT_MARKER, timeout=400, ovmf_esp=esp, name="ovmf"
    )
    assert result.passed, result.explain()
    assert result.facts["fs"] == "ext4"
