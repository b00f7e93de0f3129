"""Boot: an unmodified generic UKI built from the Debian 13 root (systemd 257 in the initrd, its
systemd-stub 257, kernel 6.12) with sysext support, under OVMF through systemd-boot 257 from
ESP/EFI/Linux/, and a signed system extension beside it in ESP/EFI/Linux/UKI.efi.extra.d/: the stub
hands it over in /.extra/sysext/, systemd-sysext verifies its signature against the certificate the
initrd trusts (/usr/lib/verity.d/; the kernel's keyrings do not know it: -ENOKEY, then userspace) and
merges it before switch-root, the extension's own unit prints a marker and `systemd-sysext status`
on the console, and the root is reached. With the signature broken the image is refused (the
strict policy for /.extra/sysext/: signed or nothing) and the boot still reaches the root.

Two boots (~50 s each under TCG); the images are built once for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from boot import disks
from boot.qemu import ROOT_MARKER, boot
from fixtures.sysext_marker import (
    CONFEXT_MARKER,
    MARKER,
    UNIT,
    broken_signature,
    marker_sysext,
    own_marker_confext,
    own_marker_sysext,
)
from fixtures.trixie import TrixieRoot
from fixtures.uki_inputs import make_keypair
from mkosi_initrd.kernel_install.sysextinitrd import append_initrd, write_sysext_initrd

SRC = str(Path(__file__).parents[1] / "src")
UKI = "EFI/Linux/mkosi-initrd-test.efi"
# journald forwards to the console: the sysext service's own messages land in the serial log.
CMDLINE = (
    f"root=UUID={disks.ROOT_UUID} ro console=ttyS0,115200 panic=1 oops=panic no_timer_check "
    "systemd.journald.forward_to_console=1"
)
pytestmark = pytest.mark.boot


@dataclass(frozen=True)
class Images:
    uki: Path
    cert: Path
    signed: Path
    broken: Path
    own: Path  # made without systemd-repart
    confext: Path
    loader_conf: Path
    systemd_boot: Path


@pytest.fixture(scope="module")
def images(trixie: TrixieRoot, tmp_path_factory: pytest.TempPathFactory) -> Images:
    tmp = tmp_path_factory.mktemp("sysext-boot")
    key, cert = make_keypair(tmp, "verity")
    signed = marker_sysext(trixie, tmp, key, cert)
    uki = tmp / "uki.efi"
    cmd = [
        sys.executable, "-m", "mkosi_initrd", "--root", str(trixie.root), "-k", trixie.kver, "--generic",
        "--sysext-support", "--verity-certificate", str(cert), "--format", "uki",
        "--kernel-image", str(trixie.kernel), "--cmdline", CMDLINE, "-o", str(uki),
    ]  # fmt: skip
    built = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    conf = tmp / "loader.conf"
    conf.write_text("timeout 0\n")
    broken = broken_signature(signed, tmp / "broken.sysext.raw")
    own = own_marker_sysext(trixie, tmp, key, cert)
    confext = own_marker_confext(trixie, tmp, key, cert)
    return Images(uki, cert, signed, broken, own, confext, conf, trixie.systemd_boot)


def boot_with(images: Images, extension: Path, tmp: Path, name: str, confext: Path | None = None) -> str:
    esp = disks.make_esp(
        tmp / "esp.img",
        {
            "EFI/BOOT/BOOTX64.EFI": images.systemd_boot,
            "loader/loader.conf": images.loader_conf,
            UKI: images.uki,
            f"{UKI}.extra.d/marker.sysext.raw": extension,
            **({f"{UKI}.extra.d/marker.confext.raw": confext} if confext else {}),
        },
    )
    result = boot(
        None, None, [disks.marker_root("ext4")], marker=ROOT_MARKER, timeout=420, ovmf_esp=esp, name=name
    )
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert "Running in initrd." in log and "systemd 257" in log  # the trixie root's systemd ran it
    return log


def test_a_signed_sysext_beside_the_uki_is_merged_in_the_initrd(images: Images, tmp_path: Path) -> None:
    log = boot_with(images, images.signed, tmp_path, "sysext-signed")
    assert "Using extensions 'marker.sysext.raw'." in log and "Merged extensions into '/usr'." in log
    at = log.index(f"{MARKER} by /usr/lib/mkosi-initrd-test/sysext-marker")  # run from the extension
    status = log[at:]
    assert "HIERARCHY EXTENSIONS SINCE" in status and "/usr      marker" in status
    assert f"Finished {UNIT}" in log
    # merged before switch-root, unmerged when the initrd is left, then the root
    assert at < log.index("Unmerged '/usr'.") < log.index("Switching root.") < log.index(ROOT_MARKER)


def test_a_sysext_and_confext_made_without_systemd_repart_are_merged_in_the_initrd(
    images: Images, tmp_path: Path
) -> None:
    """The DDI of extensions/verity.py (what a machine with systemd < 255 builds): systemd 257 finds its
    partitions, verifies its signature and merges it."""
    log = boot_with(images, images.own, tmp_path, "sysext-own", confext=images.confext)
    assert "Merged extensions into '/usr'." in log
    assert f"{MARKER} by /usr/lib/mkosi-initrd-test/sysext-marker" in log
    # its companion confext, /etc in the initrd (systemd-confext.service, enabled by sysext support)
    assert "Merged extensions into '/etc'." in log and f"{CONFEXT_MARKER} from /etc" in log


def test_a_sysext_with_a_broken_signature_is_refused_and_the_root_is_reached(
    images: Images, tmp_path: Path
) -> None:
    log = boot_with(images, images.broken, tmp_path, "sysext-broken")
    assert "Root hash verification failed" in log  # the kernel rejects the signature, userspace too
    assert "Failed to merge hierarchies" in log
    assert "Failed to start systemd-sysext.service" in log
    assert MARKER not in log and "Merged extensions" not in log


def test_a_type_1_entry_gets_its_sysext_from_an_extra_initrd(
    trixie: TrixieRoot, images: Images, tmp_path: Path
) -> None:
    """No stub: the base initrd (cpio) and the extra initrd with /.extra/sysext/marker.raw, concatenated
    as the kernel takes two `initrd` lines of a boot entry; systemd-sysext finds and verifies it there."""
    base = tmp_path / "initrd"
    cmd = [
        sys.executable, "-m", "mkosi_initrd", "--root", str(trixie.root), "-k", trixie.kver, "--generic",
        "--sysext-support", "--verity-certificate", str(images.cert), "-o", str(base),
    ]  # fmt: skip
    built = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    extra = write_sysext_initrd({"marker": images.signed}, tmp_path / "initrd-sysext")
    both = tmp_path / "initrd+sysext"
    both.write_bytes(base.read_bytes())
    append_initrd(both, extra)  # layout=other's way; a boot loader aligns two initrd lines the same
    result = boot(
        trixie.kernel, both, [disks.marker_root("ext4")], CMDLINE.replace(" console=ttyS0,115200", ""),
        marker=ROOT_MARKER, timeout=300, name="sysext-type1",
    )  # fmt: skip
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert "Using extensions 'marker.raw'." in log and f"{MARKER} by " in log
