"""Generated entries: what systemd needs as the initrd's PID 1, users from sysusers.d, the manifest."""

from __future__ import annotations

import glob
import json
import re
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from mkosi_initrd.config.model import Config
from mkosi_initrd.plan.model import Entry, ModuleChoice, PackageChoice, Plan
from mkosi_initrd.planner.accounts import accounts, passwd_group
from mkosi_initrd.planner.dlopen import dlopen_libraries, needed, notes_of
from mkosi_initrd.planner.generated import generated_entries, initrd_release
from mkosi_initrd.planner.manifest import MANIFEST

REG = stat.S_IFREG | 0o644
OS_RELEASE = {
    "NAME": "Debian GNU/Linux",
    "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
    "ID": "debian",
    "VERSION_ID": "12",
}


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("usr/lib")
    return root


def _plan(root: Path, entries: list[Entry]) -> Plan:
    return Plan(
        root=root,
        kver="6.1.0-test",
        backend="dpkg",
        generic=True,
        profiles=(),
        os_release=OS_RELEASE,
        packages=(PackageChoice("systemd-252-1.x86_64", "systemd", ("list:systemd",)),),
        entries=tuple(entries),
        modules=(ModuleChoice("ext4", "kernel/fs/ext4/ext4.ko", "listed: ext4"),),
    )


def _by_path(entries: tuple[Entry, ...]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def test_systemd_as_pid1_has_init_release_sysroot_console_and_usrmerge(tmp_path: Path) -> None:
    root = _root(tmp_path)
    got = _by_path(generated_entries(Config(root=root), _plan(root, [])))
    assert got["/init"].linkto == "usr/lib/systemd/systemd"
    release = got["/etc/initrd-release"].data or b""
    assert b"VARIANT_ID=mkosi-initrd" in release and b"ID=debian" in release
    assert got["/sysroot"].is_dir
    assert stat.S_ISCHR(got["/dev/console"].mode) and got["/dev/console"].rdev == (5, 1)
    assert got["/bin"].linkto == "usr/bin" and got["/lib"].linkto == "usr/lib"
    assert "/sbin" not in got and "/lib64" not in got  # only the links the root has
    assert got["/tmp"].mode & 0o7777 == 0o1777
    assert "/usr/lib/udev/rules.d/10-mkosi-initrd-dm.rules" in got
    assert b"disable *" in (got["/usr/lib/systemd/system-preset/99-mkosi-initrd.preset"].data or b"")
    assert "/usr/lib/systemd/system/systemd-cryptsetup@.service.d/credential.conf" in got
    assert "/usr/lib/clock-epoch" not in got  # its mtime would be 0: 1970 is no floor for the clock
    with_sde = _by_path(generated_entries(Config(root=root, source_date_epoch=1700000000), _plan(root, [])))
    assert "/usr/lib/clock-epoch" in with_sde


def test_settings_newer_than_the_planned_systemd_are_left_out(tmp_path: Path) -> None:
    root = _root(tmp_path)
    dropin = "/usr/lib/systemd/system/systemd-cryptsetup@.service.d/import-credential.conf"
    plan = _plan(root, [])  # systemd 252: no ImportCredential=
    assert dropin not in _by_path(generated_entries(Config(root=root), plan))
    newer = replace(plan, packages=(PackageChoice("systemd-256.11-1.fc41.x86_64", "systemd", ("list",)),))
    assert b"ImportCredential=cryptsetup.*" in (
        _by_path(generated_entries(Config(root=root), newer))[dropin].data or b""
    )


def test_initrd_release_is_parseable_by_the_shell_and_names_us() -> None:
    text = initrd_release({**OS_RELEASE, "PRETTY_NAME": 'It\'s "quoted"'}).decode()
    out = subprocess.run(
        ["sh", "-c", f'{text}\necho "$PRETTY_NAME|$VARIANT_ID"'], capture_output=True, text=True
    )
    assert out.stdout.strip() == 'It\'s "quoted" (mkosi-initrd)|mkosi-initrd'


def test_directories_already_planned_keep_the_package_mode(tmp_path: Path) -> None:
    root = _root(tmp_path)
    plan = _plan(root, [Entry("/etc", stat.S_IFDIR | 0o700, origin="pkg")])
    assert "/etc" not in _by_path(generated_entries(Config(root=root), plan))


def test_symlinks_the_packages_already_ship_stay_theirs(tmp_path: Path) -> None:
    root = _root(tmp_path)
    plan = _plan(root, [Entry("/bin", stat.S_IFLNK | 0o777, linkto="usr/bin", origin="base-files")])
    got = _by_path(generated_entries(Config(root=root), plan))
    assert "/bin" not in got and got["/lib"].linkto == "usr/lib"


def test_users_and_groups_come_from_the_included_sysusers_files(tmp_path: Path) -> None:
    root = _root(tmp_path)
    basic = root / "usr/lib/sysusers.d/basic.conf"
    basic.write_text("g tty 5 -\nu root 0 - /root /bin/bash\nu nobody 65534:65534 - /nonexistent\n")
    journal = root / "usr/lib/sysusers.d/systemd-journal.conf"
    journal.write_text("g systemd-journal - -\n")
    network = root / "usr/lib/sysusers.d/systemd-network.conf"
    network.write_text('u systemd-network - "systemd Network Management"\nm systemd-network tty\n')
    not_included = root / "usr/lib/sysusers.d/other.conf"
    not_included.write_text("u someone 1234\n")
    plan = _plan(
        root, [Entry(f"/usr/lib/sysusers.d/{p.name}", REG, source=p) for p in (basic, journal, network)]
    )
    got = _by_path(generated_entries(Config(root=root), plan))
    passwd = (got["/etc/passwd"].data or b"").decode().splitlines()
    group = (got["/etc/group"].data or b"").decode().splitlines()
    assert "root:x:0:0::/root:/bin/bash" in passwd
    assert "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin" in passwd
    assert "systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin" in passwd
    assert "systemd-journal:x:999:" in group  # dynamic ids count down from 999, files in name order
    assert "tty:x:5:systemd-network" in group
    assert not any(line.startswith("someone:") for line in passwd)


def test_groups_used_by_udev_rules_exist_with_the_roots_ids(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "etc").mkdir()
    (root / "etc/group").write_text("root:x:0:\nkvm:x:104:\nrender:x:105:\n")
    rules = Entry(
        "/usr/lib/udev/rules.d/50-udev-default.rules",
        REG,
        data=b'KERNEL=="kvm", GROUP="kvm", MODE="0660"\nSUBSYSTEM=="drm", GROUP="render"\n'
        b'SUBSYSTEM=="sgx", GROUP:="sgx"\nSUBSYSTEM=="tty", GROUP="tty"\nGROUP="$env{X}"\n',
    )
    basic = Entry("/usr/lib/sysusers.d/basic.conf", REG, data=b"g tty 5 -\n")
    got = _by_path(generated_entries(Config(root=root), _plan(root, [rules, basic])))
    group = (got["/etc/group"].data or b"").decode().splitlines()
    assert "kvm:x:104:" in group and "render:x:105:" in group and "tty:x:5:" in group
    assert "sgx:x:999:" in group  # not in the root: a dynamic id
    assert not any(line.startswith("$") for line in group)


def test_a_packaged_passwd_file_is_kept_and_completed(tmp_path: Path) -> None:
    acc = accounts([("a.conf", b"u svc 500\n")])
    pw = Entry(
        "/etc/passwd", REG, data=b"root:x:0:0:Super User:/root:/bin/bash\nbin:x:1:1::/:/sbin/nologin\n"
    )
    passwd, group = passwd_group(acc, pw, None)
    assert passwd.decode().splitlines() == [
        "root:x:0:0:Super User:/root:/bin/bash",
        "bin:x:1:1::/:/sbin/nologin",
        "svc:x:500:500::/:/usr/sbin/nologin",
    ]
    assert group.decode().splitlines() == ["root:x:0:", "svc:x:500:"]


def test_the_manifest_lists_packages_modules_and_options_without_timestamps(tmp_path: Path) -> None:
    root = _root(tmp_path)
    cfg = Config(root=root, kver="6.1.0-test", generic=True, compression="xz", level=9, source_date_epoch=42)
    data = _by_path(generated_entries(cfg, _plan(root, [])))[MANIFEST].data or b""
    m = json.loads(data)
    assert m["packages"] == [{"name": "systemd", "nevra": "systemd-252-1.x86_64"}]
    assert m["modules"] == [{"name": "ext4", "path": "kernel/fs/ext4/ext4.ko"}]
    assert m["build"]["compression"] == "xz" and m["build"]["level"] == 9 and m["build"]["generic"] is True
    assert m["kernel"] == "6.1.0-test"
    assert data == (_by_path(generated_entries(cfg, _plan(root, [])))[MANIFEST].data or b"")


# --- .note.dlopen

_NOTE_C = r"""
#include <stdint.h>
#define JSON "[{\"feature\":\"tpm\",\"description\":\"TPM2 unlock\",\"priority\":\"recommended\"," \
             "\"soname\":[\"libmissing.so.9\",\"libdemo.so.1\"]}," \
             "{\"feature\":\"fido2\",\"priority\":\"suggested\",\"soname\":[\"libnothere.so.2\"]}]"
struct __attribute__((packed)) note {
    uint32_t namesz, descsz, type; char name[4]; char desc[(sizeof(JSON) + 3) & ~3];
};
__attribute__((used, section(".note.dlopen"), aligned(4)))
static const struct note n = { 4, sizeof(JSON), 0x407c0c0a, "FDO", JSON };
int main(void) { return 0; }
"""


def _gcc(*args: str | Path) -> None:
    subprocess.run(["gcc", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def note_root(tmp_path: Path) -> Path:
    root = _root(tmp_path)
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (tmp_path / "dep.c").write_text("int dep(void) { return 1; }\n")
    _gcc("-shared", "-fPIC", "-Wl,-soname,libdep.so.3", "-o", libdir / "libdep.so.3", tmp_path / "dep.c")
    (tmp_path / "demo.c").write_text("int dep(void); int demo(void) { return dep(); }\n")
    demo = libdir / "libdemo.so.1.2"
    _gcc(
        "-shared",
        "-fPIC",
        "-Wl,-soname,libdemo.so.1",
        "-o",
        demo,
        tmp_path / "demo.c",
        "-L",
        libdir,
        "-l:libdep.so.3",
    )
    (libdir / "libdemo.so.1").symlink_to("libdemo.so.1.2")
    (tmp_path / "tool.c").write_text(_NOTE_C)
    _gcc("-o", root / "usr/bin/tool", tmp_path / "tool.c")
    return root


def test_dlopen_notes_are_read_from_elf_files(note_root: Path) -> None:
    notes = notes_of(note_root / "usr/bin/tool", "/usr/bin/tool")
    assert [(n.feature, n.priority, n.sonames) for n in notes] == [
        ("tpm", "recommended", ("libmissing.so.9", "libdemo.so.1")),
        ("fido2", "suggested", ("libnothere.so.2",)),
    ]
    assert notes_of(note_root / "usr/lib/x86_64-linux-gnu/libdep.so.3") == []


def test_installed_dlopen_libraries_and_their_needed_libraries_are_wanted(note_root: Path) -> None:
    tool = Entry("/usr/bin/tool", stat.S_IFREG | 0o755, source=note_root / "usr/bin/tool")
    wanted, unmet = dlopen_libraries(note_root, [tool])
    assert wanted == ["/usr/lib/x86_64-linux-gnu/libdemo.so.1.2", "/usr/lib/x86_64-linux-gnu/libdep.so.3"]
    assert [n.feature for n in unmet] == ["fido2"]
    assert needed(note_root / "usr/lib/x86_64-linux-gnu/libdemo.so.1.2") == ["libdep.so.3"]


def test_needed_reads_what_readelf_shows(tmp_path: Path) -> None:
    # DT_NEEDED read by hand (elfnotes.needed) against binutils, on this machine's own ELF files
    # and on files that are not ELF or have no dynamic section.
    files = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/lib*.so.*"))[::25] + ["/usr/bin/bash", "/usr/bin/ls"]
    (tmp_path / "text").write_text("not an ELF file\n")
    subprocess.run(
        ["gcc", "-c", "-x", "c", "-", "-o", tmp_path / "obj.o"], input=b"int f(void){return 1;}", check=True
    )
    for path in [*files, str(tmp_path / "text"), str(tmp_path / "obj.o")]:
        out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
        assert needed(Path(path)) == re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out), path
    assert len(files) > 20
