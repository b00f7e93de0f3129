"""UKI addons and credentials on Debian 13 (systemd 257: its stubs, its kernel-install, its initrd).

- kernel-install 257 in the trixie root (layout uki, uki_generator=mkosi-initrd) with `[UKI] Addons=`
  and `Credentials=` in our configuration: the addon (made in the root by `mkosi-initrd addon` on its
  own addon stub) and the credential (made by the root's `systemd-creds encrypt`) land beside the UKI in
  $BOOT/EFI/Linux/TOKEN-KVER.efi.extra.d/ (kernel-install 257's 90-uki-copy does not copy
  uki.efi.extra.d/), `remove` takes them away, and that $BOOT booted by the root's systemd-boot under
  OVMF gives the root the addon's command line while the credential's `systemd.extra-unit.*` unit runs
  in our initrd (systemd 257) and prints its marker on the console.
- Secure Boot on (only our key enrolled): of two signed addons beside a signed UKI, the one altered
  after signing is refused by systemd-stub (the firmware's LoadImage: "Access denied"), the other
  applies, and the boot reaches the root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from boot import disks, secureboot
from boot.qemu import ROOT_MARKER, BootResult, boot
from fixtures import ourpackage
from fixtures import trixie as trixie_fixture
from fixtures.trixie import Chroot, TrixieRoot
from mkosi_initrd.kernel_install.companions import CRED_HEADER_SIZES
from mkosi_initrd.uki.describe import describe

SRC = str(Path(__file__).parents[1] / "src")
BOOT_ROOT = "/boot/efi"
CONSOLE = "ro console=ttyS0,115200 panic=1 oops=panic no_timer_check"
CMDLINE = f"root=UUID={disks.ROOT_UUID} {CONSOLE}"
UNIT = "mkosi-marker.service"
CREDENTIAL_MARKER = "MKOSI-INITRD-CREDENTIAL-UNIT-RAN"
MARKER_UNIT = f"""\
[Unit]
Description=mkosi-initrd credential marker
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo {CREDENTIAL_MARKER} >/dev/console'
"""
ADDON = "/etc/kernel/addons/marker.addon.efi"
CREDENTIAL = f"/etc/kernel/credentials/systemd.extra-unit.{UNIT}.cred"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ourpackage.package_tree(tmp_path_factory.mktemp("package"))


@pytest.fixture
def machine(trixie: TrixieRoot, package: Path, tmp_path: Path) -> Iterator[Chroot]:
    """The trixie root with our package installed as packaged, layout uki with our UKI, an addon and a
    credential named in our configuration."""
    with trixie_fixture.chroot(trixie, tmp_path / "chroot") as c:
        ourpackage.install_into(package, c.path, "/usr/lib/python3/dist-packages")
        (c.path / BOOT_ROOT.lstrip("/")).mkdir(parents=True)
        # rd.systemd.wants= starts the credential's unit in the initrd (systemd-debug-generator).
        write(c, "/etc/kernel/cmdline", f"{CMDLINE} rd.systemd.wants={UNIT}\n")
        write(c, "/etc/kernel/install.conf", "layout=uki\nuki_generator=mkosi-initrd\n")
        write(c, "/etc/mkosi-initrd/mkosi-initrd.conf", f"[UKI]\nAddons={ADDON}\nCredentials={CREDENTIAL}\n")
        write(c, "/tmp/marker.service", MARKER_UNIT)
        for d in (ADDON, CREDENTIAL):
            (c.path / d.lstrip("/")).parent.mkdir(parents=True)
        made = c.run("python3", "-m", "mkosi_initrd", "addon", "marker", "--cmdline", "mkosi.addon=applied",
                     "-o", ADDON)  # fmt: skip
        assert made.returncode == 0, made.stderr
        creds = c.run("systemd-creds", "encrypt", "--with-key=null", f"--name=systemd.extra-unit.{UNIT}",
                      "/tmp/marker.service", CREDENTIAL)  # fmt: skip
        assert creds.returncode == 0, creds.stderr
        yield c


def write(c: Chroot, inside: str, text: str) -> None:
    path = c.path / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def kernel_install(c: Chroot, *args: str) -> subprocess.CompletedProcess[str]:
    return c.run("kernel-install", "-v", *args, env={"BOOT_ROOT": BOOT_ROOT})


def boot_files(c: Chroot) -> dict[str, bytes]:
    top = c.path / BOOT_ROOT.lstrip("/")
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def boot_esp(esp: Path, name: str) -> BootResult:
    result = boot(None, None, [disks.marker_root("ext4")], marker=ROOT_MARKER, timeout=420, ovmf_esp=esp,
                  name=name)  # fmt: skip
    assert result.passed, result.explain()
    return result


@pytest.mark.boot
@pytest.mark.kernel_install
def test_kernel_install_puts_addons_and_credentials_beside_the_uki_and_the_boot_uses_them(
    machine: Chroot, trixie: TrixieRoot, tmp_path: Path
) -> None:
    kver = trixie.kver
    token = (machine.path / "etc/machine-id").read_text().strip()
    added = kernel_install(machine, "add", kver, f"/boot/vmlinuz-{kver}")
    assert added.returncode == 0, added.stderr
    uki, extra = f"EFI/Linux/{token}-{kver}.efi", f"EFI/Linux/{token}-{kver}.efi.extra.d"
    files = boot_files(machine)
    cred = f"{extra}/systemd.extra-unit.{UNIT}.cred"
    assert sorted(files) == sorted([uki, f"{extra}/marker.addon.efi", cred, f"{extra}/.mkosi-initrd-staged"])
    assert files[f"{extra}/marker.addon.efi"] == (machine.path / ADDON.lstrip("/")).read_bytes()
    # systemd-creds wrote Base64; what the stub hands to the initrd is the binary credential.
    assert (machine.path / CREDENTIAL.lstrip("/")).read_bytes()[:4].isascii()
    assert files[cred][16:32] == CRED_HEADER_SIZES
    addon = describe(machine.path / BOOT_ROOT.lstrip("/") / extra / "marker.addon.efi")
    assert addon["type"] == "addon" and addon["cmdline"] == "mkosi.addon=applied"
    assert (
        describe(machine.path / BOOT_ROOT.lstrip("/") / uki)["cmdline"]
        == f"{CMDLINE} rd.systemd.wants={UNIT}"
    )

    # That $BOOT as the ESP, started by the root's systemd-boot.
    top = machine.path / BOOT_ROOT.lstrip("/")
    esp = disks.make_esp(
        tmp_path / "esp.img",
        {"EFI/BOOT/BOOTX64.EFI": trixie.systemd_boot, **{name: top / name for name in files}},
    )
    result = boot_esp(esp, "trixie-addon-credential")
    log = result.log_path.read_text(errors="replace")
    assert result.root_cmdline == [*CMDLINE.split(), f"rd.systemd.wants={UNIT}", "mkosi.addon=applied"]
    assert "systemd 257" in log and "Running in initrd." in log
    assert f"Received untrusted credentials: systemd.extra-unit.{UNIT}" in log
    assert CREDENTIAL_MARKER in log.split(ROOT_MARKER)[0]  # printed before the root's init ran

    removed = kernel_install(machine, "remove", kver)
    assert removed.returncode == 0, removed.stderr
    assert boot_files(machine) == {}


@pytest.mark.kernel_install
def test_a_missing_companion_stops_the_add_before_anything_is_replaced(
    machine: Chroot, trixie: TrixieRoot
) -> None:
    kver = trixie.kver
    assert kernel_install(machine, "add", kver, f"/boot/vmlinuz-{kver}").returncode == 0
    before = boot_files(machine)
    (machine.path / CREDENTIAL.lstrip("/")).unlink()
    failed = kernel_install(machine, "add", kver, f"/boot/vmlinuz-{kver}")
    assert failed.returncode != 0
    assert (
        f"companion file {CREDENTIAL} does not exist" in failed.stderr and "Traceback" not in failed.stderr
    )
    assert "building" not in failed.stderr  # stopped before the build
    assert boot_files(machine) == before


@pytest.mark.boot
def test_secure_boot_refuses_a_tampered_addon_and_still_boots_the_root(
    trixie: TrixieRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = secureboot.enroll(tmp_path, monkeypatch)
    sign = [
        "--secureboot-private-key",
        str(keys / "db.key"),
        "--secureboot-certificate",
        str(keys / "db.crt"),
    ]
    uki = tmp_path / "uki.efi"
    run("--root", str(trixie.root), "-k", trixie.kver, "--generic", "--format", "uki", "--kernel-image",
        str(trixie.kernel), "--cmdline", CMDLINE, "-o", str(uki), *sign)  # fmt: skip
    for name in ("good", "bad"):
        run("addon", name, "--root", str(trixie.root), "--cmdline", f"mkosi.addon={name}", *sign,
            "-o", str(tmp_path / f"{name}.addon.efi"))  # fmt: skip
    bad = tmp_path / "bad.addon.efi"
    data = bad.read_bytes()
    assert data.count(b"mkosi.addon=bad") == 1
    bad.write_bytes(data.replace(b"mkosi.addon=bad", b"mkosi.addon=BAD"))  # after signing
    esp = disks.make_esp(tmp_path / "esp.img", {
        "EFI/BOOT/BOOTX64.EFI": uki,
        "EFI/BOOT/BOOTX64.EFI.extra.d/bad.addon.efi": bad,
        "EFI/BOOT/BOOTX64.EFI.extra.d/good.addon.efi": tmp_path / "good.addon.efi",
    })  # fmt: skip
    result = boot_esp(esp, "trixie-addon-secureboot")
    log = result.log_path.read_text(errors="replace")
    assert "secureboot: Secure boot enabled" in log
    assert "Failed to read 'bad.addon.efi'" in log and "ignoring: Access denied" in log
    assert result.root_cmdline == [*CMDLINE.split(), "mkosi.addon=good"]


def run(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-m", "mkosi_initrd", *args], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
