"""Host configuration carried into host-only initrds, and the root stack that picks profiles."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from pathlib import Path

import pytest

from fixtures.host import FakeHost
from fixtures.kernel import HostKernel
from mkosi_initrd.config.model import Config
from mkosi_initrd.host import crypttab, lvm, resume, rootstack, vconsole
from mkosi_initrd.host.carry import host_config
from mkosi_initrd.host.packages import with_host_packages
from mkosi_initrd.plan.parts import Part


def write(root: Path, path: str, text: str | bytes, mode: int = 0o644) -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    p.chmod(mode)
    return p


def by_path(result: Part) -> dict[str, object]:
    return {e.path: e for e in result.entries}


# --- crypttab


def test_only_x_initrd_attach_lines_go_into_the_initrd_crypttab(tmp_path: Path) -> None:
    write(
        tmp_path,
        "/etc/crypttab",
        "# comment\n"
        "root UUID=1111 /etc/keys/root.key luks,x-initrd.attach\n"
        "home UUID=2222 none luks\n"
        "swap UUID=3333 none luks,discard,x-initrd.attach\n",
    )
    write(tmp_path, "/etc/keys/root.key", b"secret", 0o600)
    result = crypttab.crypttab(tmp_path)
    initrd_crypttab = by_path(result)["/etc/crypttab"]
    text = initrd_crypttab.data.decode()  # type: ignore[attr-defined]
    assert "root UUID=1111" in text and "swap UUID=3333" in text
    assert "home" not in text
    assert result.warnings == ()


def test_key_file_keeps_mode_0600_and_its_bytes(tmp_path: Path) -> None:
    write(tmp_path, "/etc/crypttab", "root UUID=1 /etc/keys/root.key luks,x-initrd.attach\n")
    write(tmp_path, "/etc/keys/root.key", b"\x00secret\xff", 0o600)
    key = by_path(crypttab.crypttab(tmp_path))["/etc/keys/root.key"]
    assert key.mode == stat.S_IFREG | 0o600  # type: ignore[attr-defined]
    assert key.data == b"\x00secret\xff"  # type: ignore[attr-defined]


def test_key_file_never_readable_by_others_in_the_initrd(tmp_path: Path) -> None:
    write(tmp_path, "/etc/crypttab", "root UUID=1 /etc/keys/root.key luks,x-initrd.attach\n")
    write(tmp_path, "/etc/keys/root.key", b"k", 0o644)
    key = by_path(crypttab.crypttab(tmp_path))["/etc/keys/root.key"]
    assert stat.S_IMODE(key.mode) == 0o600  # type: ignore[attr-defined]


def test_default_key_file_is_taken_from_cryptsetup_keys_d(tmp_path: Path) -> None:
    write(tmp_path, "/etc/crypttab", "root UUID=1 - luks,x-initrd.attach\n")
    write(tmp_path, "/etc/cryptsetup-keys.d/root.key", b"k", 0o600)
    assert "/etc/cryptsetup-keys.d/root.key" in by_path(crypttab.crypttab(tmp_path))


def test_unreadable_key_file_is_a_warning_naming_the_line(tmp_path: Path) -> None:
    write(tmp_path, "/etc/crypttab", "# c\nroot UUID=1 /etc/keys/gone.key luks,x-initrd.attach\n")
    result = crypttab.crypttab(tmp_path)
    assert "/etc/crypttab" in by_path(result)
    assert "/etc/keys/gone.key" not in by_path(result)
    (warning,) = result.warnings
    assert (
        "line 2 (root)" in warning and "/etc/keys/gone.key" in warning and "may not unlock root" in warning
    )


def test_key_on_a_device_is_not_copied(tmp_path: Path) -> None:
    write(tmp_path, "/etc/crypttab", "root UUID=1 /key.bin:UUID=abcd luks,x-initrd.attach\n")
    result = crypttab.crypttab(tmp_path)
    assert set(by_path(result)) == {"/etc/crypttab"} and result.warnings == ()


def test_no_crypttab_or_no_initrd_lines_carry_nothing(tmp_path: Path) -> None:
    assert crypttab.crypttab(tmp_path).entries == ()
    write(tmp_path, "/etc/crypttab", "home UUID=2 none luks\n")
    assert crypttab.crypttab(tmp_path).entries == ()


def test_key_symlink_escaping_the_root_stays_inside_it(tmp_path: Path) -> None:
    write(tmp_path, "/etc/crypttab", "root UUID=1 /etc/keys/root.key luks,x-initrd.attach\n")
    (tmp_path / "etc/keys").mkdir()
    (tmp_path / "etc/keys/root.key").symlink_to("/../../inside.key")
    write(tmp_path, "/inside.key", b"in-root", 0o600)
    assert by_path(crypttab.crypttab(tmp_path))["/etc/keys/root.key"].data == b"in-root"  # type: ignore[attr-defined]


# --- console


def test_vconsole_keymap_and_its_includes_are_carried(tmp_path: Path) -> None:
    write(tmp_path, "/etc/vconsole.conf", 'KEYMAP="de"\nFONT=eurlatgr\n')
    maps = "/usr/share/keymaps/i386"
    write(
        tmp_path,
        f"{maps}/qwertz/de.map.gz",
        gzip.compress(b'include "linux-with-alt-and-altgr"\nkeycode 1 = Escape\n'),
    )
    write(tmp_path, f"{maps}/include/linux-with-alt-and-altgr.inc", 'include "linux-keys-bare"\n')
    write(tmp_path, f"{maps}/include/linux-keys-bare.inc", "keycode 2 = one\n")
    result = vconsole.vconsole(tmp_path)
    assert set(by_path(result)) == {
        "/etc/vconsole.conf",
        f"{maps}/qwertz/de.map.gz",
        f"{maps}/include/linux-with-alt-and-altgr.inc",
        f"{maps}/include/linux-keys-bare.inc",
    }
    assert result.warnings == ()


def test_missing_keymap_is_a_warning(tmp_path: Path) -> None:
    write(tmp_path, "/etc/vconsole.conf", "KEYMAP=nowhere\n")
    (warning,) = vconsole.vconsole(tmp_path).warnings
    assert "KEYMAP=nowhere" in warning


# --- hibernation


@pytest.mark.parametrize(
    "device",
    ["/dev/disk/by-uuid/3f1e-ab.c", "/dev/vdb", "/dev/mapper/vg-swap", "/dev/disk/by-label/my swap"],
)
def test_unit_path_escape_matches_systemd_escape(device: str) -> None:
    expected = subprocess.run(
        ["systemd-escape", "--path", device], capture_output=True, text=True, check=True
    )
    assert resume.unit_path_escape(device) == expected.stdout.strip()


def test_resume_from_initramfs_tools_config_becomes_a_resume_unit(tmp_path: Path) -> None:
    write(tmp_path, "/etc/initramfs-tools/conf.d/resume", "RESUME=UUID=5a6b-7c\n")
    host = FakeHost(tmp_path)
    host.cmdline("root=/dev/vda ro")
    (entry,) = resume.resume(tmp_path, host.procfs).entries
    assert entry.path == (
        "/etc/systemd/system/sysinit.target.wants/systemd-hibernate-resume@dev-disk-by\\x2duuid-5a6b\\x2d7c.service"
    )
    assert entry.linkto.endswith("/systemd-hibernate-resume@.service")


def test_resume_in_etc_kernel_cmdline_wins_over_the_running_one(tmp_path: Path) -> None:
    write(tmp_path, "/etc/kernel/cmdline", "root=/dev/vda resume=/dev/vdc\n")
    host = FakeHost(tmp_path)
    host.cmdline("resume=/dev/vdb")
    assert resume.resume_device(tmp_path, host.procfs) == ("/dev/vdc", "/etc/kernel/cmdline")
    (tmp_path / "etc/kernel/cmdline").unlink()
    assert resume.resume_device(tmp_path, host.procfs) == ("/dev/vdb", "/proc/cmdline")  # the running one
    # A --root build's target is not the running system: the build machine's resume= is not its.
    assert resume.resume_device(tmp_path, host.procfs, running=False) is None


def test_a_sysroot_build_takes_resume_from_its_root_never_from_the_build_machine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    host = FakeHost(tmp_path / "host")
    host.cmdline("root=/dev/sda1 resume=/dev/vdb")  # the machine running the build
    config = host.config(Config(root=root, kver="1.0"))

    def resume_units() -> list[str]:
        return [e.path for e in host_config(config).entries if "hibernate-resume@" in e.path]

    assert resume_units() == []
    write(root, "/etc/kernel/cmdline", "root=/dev/vda resume=/dev/vdc\n")  # the target's own
    assert resume_units() == [
        "/etc/systemd/system/sysinit.target.wants/systemd-hibernate-resume@dev-vdc.service"
    ]


def test_no_resume_configured_adds_nothing(tmp_path: Path) -> None:
    write(tmp_path, "/etc/initramfs-tools/conf.d/resume", "RESUME=none\n")
    assert resume.resume(tmp_path, tmp_path / "proc").entries == ()


# --- lvm and profile files


def test_lvm_conf_only_when_it_changes_activation(tmp_path: Path) -> None:
    write(tmp_path, "/etc/lvm/lvm.conf", 'global {\n  # filter = [ "r|.*|" ]\n  umask = 077\n}\n')
    assert lvm.lvm_conf(tmp_path).entries == ()
    write(tmp_path, "/etc/lvm/lvm.conf", 'devices {\n  global_filter = [ "r|/dev/sdb|" ]\n}\n')
    assert [e.path for e in lvm.lvm_conf(tmp_path).entries] == ["/etc/lvm/lvm.conf"]


def test_profiles_carry_their_files_and_generic_carries_nothing(tmp_path: Path) -> None:
    write(tmp_path, "/etc/mdadm/mdadm.conf", "ARRAY /dev/md0 UUID=1:2:3:4\n")
    write(tmp_path, "/etc/lvm/devices/system.devices", "IDTYPE=devname IDNAME=/dev/vda\n")
    write(tmp_path, "/etc/systemd/network/20-wired.network", "[Match]\nName=en*\n")
    write(tmp_path, "/etc/idmapd.conf", "[General]\nDomain=example.org\n")
    procfs = FakeHost(tmp_path).procfs
    config = Config(root=tmp_path, procfs=procfs, profiles=("raid", "lvm", "network", "nfs"))
    paths = set(by_path(host_config(config)))
    assert {
        "/etc/mdadm/mdadm.conf",
        "/etc/lvm/devices/system.devices",
        "/etc/systemd/network",
        "/etc/systemd/network/20-wired.network",
        "/etc/idmapd.conf",
    } <= paths
    without_raid = set(by_path(host_config(Config(root=tmp_path, procfs=procfs, profiles=("nfs",)))))
    assert "/etc/mdadm/mdadm.conf" not in without_raid and "/etc/idmapd.conf" in without_raid
    assert host_config(Config(root=tmp_path, procfs=procfs, generic=True, profiles=("raid",))).entries == ()


# --- root stack


def test_lvm_on_luks_on_a_partition_turns_on_lvm_only(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    part, luks, lv = host.lvm_on_luks()
    stack = rootstack.detect(host.sysfs, host.procfs)
    assert stack is not None
    assert [layer.kind for layer in stack.layers] == ["lvm", "crypt", "partition", "disk"]
    assert [layer.device for layer in stack.layers[:3]] == [host.shown(d) for d in (lv, luks, part)]
    assert stack.layers[-1].device.endswith("/block/vda")
    assert [p for p, _ in stack.profiles()] == ["lvm"]
    config = rootstack.with_host_profiles(host.config(profiles=("network",)))
    assert config.profiles == ("network", "lvm")
    assert rootstack.with_host_profiles(host.config(generic=True)).profiles == ()


def test_raid1_root_turns_on_raid(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    a = host.block("pci0000:00/0000:00:04.0/virtio1/block/vda", "254:0")
    b = host.block("pci0000:00/0000:00:05.0/virtio2/block/vdb", "254:16")
    md = host.block("virtual/block/md0", "9:0", md__level="raid1")
    host.slave(md, a)
    host.slave(md, b)
    host.mount("/", "9:0", "ext4", "/dev/md0")
    stack = rootstack.detect(host.sysfs, host.procfs)
    assert stack is not None
    assert [(layer.kind, layer.detail) for layer in stack.layers] == [
        ("md", "raid1"),
        ("disk", ""),
        ("disk", ""),
    ]
    ((profile, why),) = stack.profiles()
    assert profile == "raid" and "/sys/devices/virtual/block/md0" in why


def test_nfs_root_turns_on_nfs_and_network(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.mount("/", "0:52", "nfs4", "10.0.2.2:/srv/root", "rw,vers=4.2")
    stack = rootstack.detect(host.sysfs, host.procfs)
    assert stack is not None and stack.layers == ()
    assert [p for p, _ in stack.profiles()] == ["nfs", "network"]


def test_btrfs_anonymous_device_is_found_by_its_source(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.block("pci0000:00/0000:00:04.0/virtio1/block/vda", "254:0")
    host.mount("/", "0:30", "btrfs", "/dev/vda", "rw,subvol=/root")
    stack = rootstack.detect(host.sysfs, host.procfs)
    assert stack is not None and [layer.kind for layer in stack.layers] == ["disk"]
    assert stack.profiles() == ()


def test_detect_reads_the_running_host() -> None:
    stack = rootstack.detect(Path("/sys"), Path("/proc"))
    assert stack is not None and stack.fstype  # whatever / is here, it has a type


def test_keymap_pulls_in_loadkeys_only_for_host_only_builds(tmp_path: Path) -> None:
    write(tmp_path, "/etc/vconsole.conf", "KEYMAP=de\n")
    assert "kbd?" in with_host_packages(Config(root=tmp_path)).packages
    assert with_host_packages(Config(root=tmp_path, generic=True)).packages == ()
    write(tmp_path, "/etc/vconsole.conf", "FONT=eurlatgr\n")
    assert with_host_packages(Config(root=tmp_path)).packages == ()


def test_network_profile_enables_networkd_even_for_generic_builds(tmp_path: Path) -> None:
    procfs = FakeHost(tmp_path).procfs
    for generic in (False, True):
        config = Config(root=tmp_path, procfs=procfs, generic=generic, profiles=("network",))
        entries = by_path(host_config(config))
        link = entries["/etc/systemd/system/initrd.target.wants/systemd-networkd.service"]
        assert link.linkto == "/usr/lib/systemd/system/systemd-networkd.service"  # type: ignore[attr-defined]
        assert (
            "/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service" in entries
        )
        default = entries["/usr/lib/systemd/network/89-mkosi-initrd-ethernet.network"]
        assert b"DHCP=yes" in default.data  # type: ignore[attr-defined]
    assert host_config(Config(root=tmp_path, procfs=procfs, generic=True)).entries == ()


def test_hosts_own_network_files_sort_before_the_default(tmp_path: Path) -> None:
    # networkd takes the first file (by name) that matches a link: the host's 20-*.network wins.
    write(
        tmp_path,
        "/etc/systemd/network/20-wired.network",
        "[Match]\nName=en*\n[Network]\nAddress=10.1.1.2/24\n",
    )
    procfs = FakeHost(tmp_path).procfs
    names = sorted(
        Path(p).name
        for p in by_path(host_config(Config(root=tmp_path, procfs=procfs, profiles=("network",))))
        if p.endswith(".network")
    )
    assert names == ["20-wired.network", "89-mkosi-initrd-ethernet.network"]


def run_nfsroot_generator(tmp_path: Path, cmdline: str) -> dict[str, str]:
    """Run the generator the nfs profile installs, as systemd would in an initrd, on `cmdline`."""
    procfs = FakeHost(tmp_path).procfs
    config = Config(root=tmp_path, procfs=procfs, generic=True, profiles=("nfs",))
    (entry,) = host_config(config).entries
    assert entry.path == "/usr/lib/systemd/system-generators/mkosi-initrd-nfsroot-generator"
    assert stat.S_IMODE(entry.mode) == 0o755
    script = write(tmp_path, "generator", entry.data or b"", 0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "SYSTEMD_IN_INITRD": "1", "SYSTEMD_PROC_CMDLINE": cmdline}
    subprocess.run(["sh", str(script), str(out)], check=True, env=env)
    units = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    if units:
        link = out / "initrd-root-fs.target.requires/sysroot.mount"
        assert os.readlink(link) == "../sysroot.mount"
    return units


@pytest.mark.parametrize(
    ("cmdline", "what", "fstype", "options"),
    [
        ("root=10.0.2.2:/root rootfstype=nfs4 ro", "10.0.2.2:/root", "nfs4", "ro"),
        ("root=nfs:server:/srv/os:vers=3,tcp rw", "server:/srv/os", "nfs", "rw,vers=3,tcp"),
        ("root=nfs4:srv:/r rootflags=noatime", "srv:/r", "nfs4", "ro,noatime"),
    ],
)
def test_nfsroot_generator_writes_sysroot_mount(
    tmp_path: Path, cmdline: str, what: str, fstype: str, options: str
) -> None:
    unit = run_nfsroot_generator(tmp_path, cmdline)["sysroot.mount"]
    assert f"What={what}\n" in unit and f"Type={fstype}\n" in unit and f"Options={options}\n" in unit
    assert "After=network-online.target" in unit and "Where=/sysroot" in unit


@pytest.mark.parametrize(
    "cmdline", ["root=/dev/vda ro", "root=UUID=1234", "root=host:/x rootfstype=ext4", ""]
)
def test_nfsroot_generator_leaves_other_roots_alone(tmp_path: Path, cmdline: str) -> None:
    assert run_nfsroot_generator(tmp_path, cmdline) == {}


@pytest.mark.slow
def test_host_only_plan_on_an_lvm_on_luks_host_turns_on_lvm_without_flags(
    tmp_path: Path, host_kernel: HostKernel
) -> None:
    import json
    import sys

    host = FakeHost(tmp_path)
    host.lvm_on_luks()
    src = str(Path(__file__).parents[1] / "src")

    def plan(*extra: str) -> dict[str, object]:
        cmd = [sys.executable, "-m", "mkosi_initrd", "plan", "-k", host_kernel.kver, "--root", "/", "--json"]
        cmd += [*host.flags(), *extra]
        out = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    host_only = plan()
    assert host_only["profiles"] == ["lvm"]
    assert "lvm2" in {p["name"] for p in host_only["packages"]}  # type: ignore[attr-defined]
    assert {"dm_mod", "dm_crypt"} <= {m["name"] for m in host_only["modules"]}  # type: ignore[attr-defined]
    generic = plan("--generic")
    assert generic["profiles"] == []
    assert "lvm2" not in {p["name"] for p in generic["packages"]}  # type: ignore[attr-defined]
