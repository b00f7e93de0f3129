"""kernel-install 257 for real: Debian 13's own kernel-install, run in the trixie root.

The root is a chroot on a private overlay of the cached fixture (/proc, /sys, /dev bound; fixtures/
trixie.py), with mkosi-initrd installed into it the way the package installs it (the module in
/usr/lib/python3/dist-packages, install.d/50-mkosi-initrd.install in /usr/lib/kernel/install.d;
fixtures/ourpackage.py) and run by the root's python3 3.13. Every plugin trixie ships runs as it would
on an installed machine: 50-depmod, ours, 55-initrd (initramfs-tools' image, which debootstrap made),
90-loaderentry, 90-uki-copy. $BOOT_ROOT is /boot/efi inside the root; the entry token is its
machine-id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from boot.disks import ROOT_UUID, marker_root
from boot.qemu import boot
from fixtures import ourpackage
from fixtures import trixie as trixie_fixture
from fixtures.trixie import Chroot, TrixieRoot
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki.describe import describe

SRC = str(Path(__file__).parents[1] / "src")
BOOT_ROOT = "/boot/efi"
CMDLINE = f"root=UUID={ROOT_UUID} ro"
MASK_55 = "ln -s /dev/null /etc/kernel/install.d/55-initrd.install"
pytestmark = [pytest.mark.slow, pytest.mark.kernel_install]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ourpackage.package_tree(tmp_path_factory.mktemp("package"))


@dataclass(frozen=True)
class Entry:
    """A type #1 boot loader entry, as 90-loaderentry wrote it."""

    linux: str
    initrds: tuple[str, ...]
    options: str

    @classmethod
    def parse(cls, text: str) -> Entry:
        lines = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")]
        keys = [(k, v.strip()) for k, v in lines]
        return cls(
            linux=next(v for k, v in keys if k == "linux"),
            initrds=tuple(v for k, v in keys if k == "initrd"),
            options=next(v for k, v in keys if k == "options"),
        )


@dataclass(frozen=True)
class Machine:
    """The trixie root with our package installed."""

    chroot: Chroot
    trixie: TrixieRoot

    @property
    def token(self) -> str:
        return self.path("/etc/machine-id").read_text().strip()

    def path(self, inside: str) -> Path:
        return self.chroot.path / inside.lstrip("/")

    def write(self, inside: str, text: str) -> None:
        self.path(inside).parent.mkdir(parents=True, exist_ok=True)
        self.path(inside).write_text(text)

    def kernel_install(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.chroot.run("kernel-install", "-v", *args, env={"BOOT_ROOT": BOOT_ROOT})

    def add(self) -> subprocess.CompletedProcess[str]:
        kver = self.trixie.kver
        result = self.kernel_install("add", kver, f"/boot/vmlinuz-{kver}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result

    def boot_files(self) -> list[str]:
        top = self.path(BOOT_ROOT)
        return sorted(str(p.relative_to(top)) for p in top.rglob("*") if not p.is_dir())

    def entry(self) -> Entry:
        return Entry.parse(
            self.path(f"{BOOT_ROOT}/loader/entries/{self.token}-{self.trixie.kver}.conf").read_text()
        )


@pytest.fixture
def machine(trixie: TrixieRoot, package: Path, tmp_path: Path) -> Iterator[Machine]:
    with trixie_fixture.chroot(trixie, tmp_path / "chroot") as c:
        ourpackage.install_into(package, c.path, "/usr/lib/python3/dist-packages")
        m = Machine(c, trixie)
        m.path(BOOT_ROOT).mkdir(parents=True)
        m.write("/etc/kernel/cmdline", CMDLINE + "\n")
        yield m


def inspect(initrd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC}
    shown = subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", "inspect", "--json", str(initrd)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def concatenated(parts: list[Path], out: Path) -> Path:
    """The entry's initrds as the boot loader hands them to the kernel: one after another, 4-aligned."""
    data = b""
    for p in parts:
        data += b"\0" * (-len(data) % 4) + p.read_bytes()
    out.write_bytes(data)
    return out


@pytest.mark.boot
def test_bls_entry_boots_our_initrd_once_55_initrd_is_masked_as_the_warning_says(
    machine: Machine, tmp_path: Path
) -> None:
    kver, token = machine.trixie.kver, machine.token
    machine.write("/etc/kernel/install.conf", "layout=bls\ninitrd_generator=mkosi-initrd\n")
    first = machine.add()
    # Debian's 55-initrd.install links initramfs-tools' image into the staging area after us: named
    # once, with the command that masks it.
    warnings = [line for line in first.stderr.splitlines() if "Mask it with:" in line]
    assert len(warnings) == 1, first.stderr
    assert "/usr/lib/kernel/install.d/55-initrd.install stages /boot/initrd.img-" in warnings[0]
    assert warnings[0].endswith(f"Mask it with: {MASK_55}")
    entry_dir = f"{BOOT_ROOT}/{token}/{kver}"
    assert machine.entry().initrds == (f"{entry_dir}/initrd", f"{entry_dir}/initrd.img-{kver}")  # the harm

    masked = machine.chroot.run("sh", "-c", warnings[0].split("Mask it with: ", 1)[1])
    assert masked.returncode == 0, masked.stderr
    second = machine.add()
    assert "Mask it with:" not in second.stderr
    entry = machine.entry()
    assert entry.initrds == (f"{entry_dir}/initrd",)
    assert entry.linux == f"{entry_dir}/linux" and entry.options.startswith(CMDLINE)
    # The first add's initramfs-tools link stays in the entry directory (90-loaderentry does not clean
    # up) but no entry names it any more.
    assert machine.boot_files() == [
        f"{token}/{kver}/initrd",
        f"{token}/{kver}/initrd.img-{kver}",
        f"{token}/{kver}/linux",
        f"loader/entries/{token}-{kver}.conf",
    ]
    ours = machine.path(entry.initrds[0])
    manifest = inspect(ours)["manifest"]
    assert manifest["generator"]["name"] == "mkosi-initrd" and manifest["kernel"] == kver
    assert manifest["build"]["generic"] is False  # host-only, as the plugin builds
    assert machine.path(entry.linux).read_bytes() == machine.trixie.kernel.read_bytes()

    # The entry as a boot loader starts it: its kernel, its initrds, its options.
    initrd = concatenated([machine.path(p) for p in entry.initrds], tmp_path / "entry-initrds")
    result = boot(
        machine.path(entry.linux),
        initrd,
        [marker_root("ext4")],
        entry.options,
        timeout=300,
        name="trixie-ki-bls",
    )
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert "Running in initrd." in log and "systemd 257" in log  # ours; initramfs-tools runs no systemd
    assert result.facts["fs"] == "ext4"

    removed = machine.kernel_install("remove", kver)
    assert removed.returncode == 0, removed.stderr
    assert machine.boot_files() == []


def test_uki_layout_from_install_conf_d_installs_our_uki_and_removes_it(machine: Machine) -> None:
    kver, token = machine.trixie.kver, machine.token
    # install.conf says bls; the drop-in, which only kernel-install >= 255 reads, says uki.
    machine.write("/etc/kernel/install.conf", "layout=bls\n")
    machine.write(
        "/etc/kernel/install.conf.d/50-mkosi-initrd.conf", "layout=uki\nuki_generator=mkosi-initrd\n"
    )
    result = machine.add()
    assert "layout=uki set via config" in result.stderr  # kernel-install's own verdict
    assert "KERNEL_INSTALL_UKI_GENERATOR=mkosi-initrd" in result.stderr
    assert "Mask it with:" not in result.stderr  # a UKI carries its own initrd: 55-initrd cannot reach it
    name = f"EFI/Linux/{token}-{kver}.efi"
    assert machine.boot_files() == [name]  # 90-uki-copy put our UKI there; no type #1 entry
    d = describe(machine.path(f"{BOOT_ROOT}/{name}"))
    assert d["uname"] == kver and d["cmdline"] == CMDLINE and d["stub_version"] == 257
    assert d["initrd"]["segments"][-1]["compression"] == "zstd"
    assert "/etc/initrd-release" in d["initrd"]["files"]
    efi = machine.path(f"{BOOT_ROOT}/{name}").read_bytes()
    linux = pemod.find_section(pemod.parse(efi, "uki"), ".linux")
    kernel = machine.trixie.kernel.read_bytes()
    assert linux is not None and efi[linux.PointerToRawData :][: len(kernel)] == kernel  # unchanged

    removed = machine.kernel_install("remove", kver)
    assert removed.returncode == 0, removed.stderr
    assert machine.boot_files() == []


def test_not_selected_leaves_the_entry_to_initramfs_tools(machine: Machine) -> None:
    kver, token = machine.trixie.kver, machine.token
    machine.write("/etc/kernel/install.conf", "layout=bls\n")
    result = machine.add()
    assert "skipping: initrd_generator=(unset)" in result.stderr  # ours exits 0, the others go on
    entry_dir = f"{BOOT_ROOT}/{token}/{kver}"
    assert machine.entry().initrds == (f"{entry_dir}/initrd.img-{kver}",)


SIGNED = "VerityKey=/etc/mkosi-initrd/verity.key\nVerityCertificate=/etc/mkosi-initrd/verity.crt\n"


def verity_keys(machine: Machine) -> None:
    """The extension-signing key pair in the root's /etc/mkosi-initrd/ (made with the host's openssl)."""
    from fixtures.uki_inputs import make_keypair

    keys = machine.path("/etc/mkosi-initrd")
    keys.mkdir(parents=True, exist_ok=True)
    make_keypair(keys, "verity")


def test_a_bad_extension_definition_stops_the_add_before_the_entry_is_replaced(machine: Machine) -> None:
    kver, token = machine.trixie.kver, machine.token
    machine.chroot.run("sh", "-c", MASK_55)
    machine.write("/etc/kernel/install.conf", "layout=bls\ninitrd_generator=mkosi-initrd\n")
    machine.add()
    initrd = machine.path(f"{BOOT_ROOT}/{token}/{kver}/initrd")
    before, files = initrd.read_bytes(), machine.boot_files()
    assert inspect(initrd)["manifest"]["build"]["sysext_support"] is False  # nothing declared yet

    machine.write("/etc/mkosi-initrd/sysext.d/sshd.conf", "[Extension]\nPackages=openssh-server\n")
    failed = machine.kernel_install("add", kver, f"/boot/vmlinuz-{kver}")
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "/etc/mkosi-initrd/sysext.d/sshd.conf: the extension sshd is not signed" in failed.stderr
    assert initrd.read_bytes() == before and machine.boot_files() == files  # the working entry stays


def test_sysext_d_extensions_are_built_and_delivered_by_layout_and_removed(machine: Machine) -> None:
    """uki: NAME.sysext.raw beside the UKI (a signed DDI), the base trusting its certificate; bls: the
    entry's second initrd holds /.extra/sysext/NAME.raw; remove leaves nothing."""
    from mkosi_initrd import cli
    from mkosi_initrd.image.cpioread import iter_members, read_segments

    # The extensions are made by `mkosi-initrd sysext` (the command; built on its own branch).
    assert "sysext" in cli.COMMANDS
    kver, token = machine.trixie.kver, machine.token
    machine.chroot.run("sh", "-c", MASK_55)
    verity_keys(machine)
    machine.write("/etc/mkosi-initrd/sysext.d/sshd.conf", f"[Extension]\nPackages=openssh-server\n{SIGNED}")
    machine.write("/etc/kernel/install.conf", "layout=uki\nuki_generator=mkosi-initrd\n")
    machine.add()
    uki, image = f"EFI/Linux/{token}-{kver}.efi", f"EFI/Linux/{token}-{kver}.efi.extra.d/sshd.sysext.raw"
    staged = f"EFI/Linux/{token}-{kver}.efi.extra.d/.mkosi-initrd-staged"  # companions.py's record
    confext = f"EFI/Linux/{token}-{kver}.efi.extra.d/sshd.confext.raw"  # openssh-server's /etc/ssh
    assert machine.boot_files() == [uki, staged, confext, image]
    assert b'{"rootHash":' in machine.path(f"{BOOT_ROOT}/{image}").read_bytes()  # the signature partition
    files = describe(machine.path(f"{BOOT_ROOT}/{uki}"))["initrd"]["files"]
    assert "/usr/lib/verity.d/sshd.crt" in files and "/usr/bin/systemd-sysext" in files
    assert machine.kernel_install("remove", kver).returncode == 0
    assert machine.boot_files() == []

    machine.write("/etc/kernel/install.conf", "layout=bls\ninitrd_generator=mkosi-initrd\n")
    machine.add()
    entry_dir = f"{BOOT_ROOT}/{token}/{kver}"
    assert machine.entry().initrds == (f"{entry_dir}/initrd", f"{entry_dir}/initrd-sysext")
    segments, _ = read_segments(machine.path(f"{entry_dir}/initrd-sysext"))
    extra = {m.path for m in iter_members(segments)}
    assert {"/.extra/sysext/sshd.raw", "/.extra/confext/sshd.raw"} <= extra
    assert machine.kernel_install("remove", kver).returncode == 0
    assert machine.boot_files() == []
