"""Host-only builds keep what boots this host: its file systems, its root stack, its boot-class modules.

Synthetic kernel (fixtures.kernel) for the module rules, the host's own dpkg root for the packages.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.host import FakeHost
from fixtures.kernel import SYN_KVER, require_host_kernel, synthetic_kernel_root
from mkosi_initrd.build import check
from mkosi_initrd.cli import make_config, parse_args
from mkosi_initrd.config.model import Config
from mkosi_initrd.host.probes import initrd_filesystems, root_fs_known
from mkosi_initrd.host.rootstack import with_host_profiles
from mkosi_initrd.kernel.modules import plan_kernel
from mkosi_initrd.plan.model import Plan
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.planner.steps import make_plan
from prereq import require

FSTAB = """\
# comment line
UUID=1234  /          synfs  defaults          0 1
/dev/vda2  /usr       cz     ro                0 2
/dev/vda3  /home      cg     defaults          0 2
/dev/vda4  /srv\\040data  cg,synfs x-initrd.mount 0 2
/dev/vda5  none       swap   sw                0 0
tmpfs      /tmp       tmpfs  defaults          0 0
"""


@pytest.fixture(scope="module")
def kroot() -> Path:
    return synthetic_kernel_root()


def host(tmp: Path, fstype: str = "synfs", fstab: str = "", sys_modules: tuple[str, ...] = ()) -> Config:
    """A host with its root mounted as `fstype` and the given /etc/fstab and /sys/module entries."""
    fake = FakeHost(tmp)
    fake.module(*sys_modules)
    etc = tmp / "root/etc"
    etc.mkdir(parents=True)
    # The root directory is where the host's root is mounted, as a sysroot would be.
    fake.mount(os.path.realpath(tmp / "root"), "0:99", fstype, "/dev/root")
    if fstab:
        (etc / "fstab").write_text(fstab)
    return fake.config(Config(root=tmp / "root"))


def kernel_config(kroot: Path, cfg: Config, **kw: object) -> Config:
    """The host's config on a copy of the synthetic kernel root, with the host's /etc."""
    shutil.copytree(kroot / "usr", cfg.root / "usr", symlinks=True)
    return replace(cfg, kver=SYN_KVER, **kw)  # type: ignore[arg-type]


def test_initrd_mounts_are_the_root_usr_and_x_initrd_mount_entries(tmp_path: Path) -> None:
    cfg = host(tmp_path, fstype="cz", fstab=FSTAB)
    got = list(initrd_filesystems(cfg.root, cfg.procfs))
    assert got == [
        ("cz", f"root: cz on / ({os.path.realpath(cfg.root)})"),
        ("synfs", "fstab: synfs on /"),
        ("cg", "fstab: cg on /srv data"),  # a list of types: each may be the one that mounts
    ]


def test_no_fstab_means_the_running_root_alone(tmp_path: Path) -> None:
    cfg = host(tmp_path, fstype="xfs")
    assert list(initrd_filesystems(cfg.root, cfg.procfs)) == [
        ("xfs", f"root: xfs on / ({os.path.realpath(cfg.root)})")
    ]


def test_host_only_takes_the_file_systems_it_mounts_and_not_the_others(kroot: Path, tmp_path: Path) -> None:
    fstab = "UUID=1 / synfs defaults 0 1\n/dev/vda2 /usr cz ro 0 2\n/dev/vda3 /home cg defaults 0 2\n"
    cfg = host(tmp_path, fstab=fstab)
    got = {m.name: m.reason for m in plan_kernel(kernel_config(kroot, cfg)).modules}
    assert got["synfs"] == f"root: synfs on / ({os.path.realpath(cfg.root)})"
    assert got["cz"] == "fstab: cz on /usr"
    assert got["czlib"] == "dependency of cz"
    assert "cg" not in got  # /home is mounted after the switch to the root


def kernel_plan(part: Part, cfg: Config) -> Plan:
    """A plan of the kernel's part alone: what the pre-flight check's module rules look at."""
    return Plan(cfg.root, cfg.kver, "", cfg.generic, (), {}, (), part.entries, modules=part.modules,
                builtin=part.builtin, required_modules=part.required_modules)  # fmt: skip


def test_the_check_holds_a_host_only_image_to_the_file_systems_it_mounts(
    kroot: Path, tmp_path: Path
) -> None:
    cfg = kernel_config(
        kroot, host(tmp_path, fstab="UUID=1 / synfs defaults 0 1\n/dev/vda2 /usr cz ro 0 2\n")
    )
    part = plan_kernel(cfg)
    reasons = {r.reason: r.names for r in part.required_modules}
    assert reasons == {
        f"root: synfs on / ({os.path.realpath(cfg.root)})": ("synfs",),
        "fstab: cz on /usr": ("cz",),
    }
    plan = kernel_plan(part, cfg)
    assert check.module_problems(plan, check.InPlan(plan.entries)) == []
    synfs = next(m for m in part.modules if m.name == "synfs")
    entries = tuple(e for e in part.entries if not e.path.endswith(synfs.path))
    found = check.module_problems(replace(plan, entries=entries), check.InPlan(entries))
    kdir = f"/usr/lib/modules/{SYN_KVER}"
    assert (
        f"module synfs ({synfs.reason}) was selected, but {kdir}/{synfs.path} is not in the image" in found
    )
    root = f"root: synfs on / ({os.path.realpath(cfg.root)})"
    assert f"{root}: module synfs is neither in the image nor built into kernel {SYN_KVER}" in found


def test_a_root_file_system_the_kernel_has_no_module_for_fails_the_check(
    kroot: Path, tmp_path: Path
) -> None:
    # A root on a file system whose module is not built for this kernel (yet: an out-of-tree one,
    # say): without the check, an initrd that cannot mount the root.
    cfg = kernel_config(kroot, host(tmp_path, fstype="zfs"))
    plan = kernel_plan(plan_kernel(cfg), cfg)
    root = f"root: zfs on / ({os.path.realpath(cfg.root)})"
    assert check.module_problems(plan, check.InPlan(plan.entries)) == [
        f"{root}: module zfs is neither in the image nor built into kernel {SYN_KVER}"
    ]


def test_host_only_omits_default_list_entries_for_other_machines(kroot: Path, tmp_path: Path) -> None:
    generic = {m.name for m in plan_kernel(Config(root=kroot, kver=SYN_KVER, generic=True)).modules}
    host_only = {m.name for m in plan_kernel(kernel_config(kroot, host(tmp_path))).modules}
    assert {"raid7", "nls_utf8", "nls_cp437", "virtio_blk", "dm_crypt"} <= generic
    assert "raid7" not in host_only  # raid[0-9]*: RAID levels come from the root's stack
    assert {"nls_utf8", "nls_cp437", "virtio_blk", "dm_crypt"} <= host_only  # kept: hardware, vfat's


def test_a_container_root_keeps_the_whole_default_list(kroot: Path, tmp_path: Path) -> None:
    got = {m.name for m in plan_kernel(kernel_config(kroot, host(tmp_path, fstype="overlay"))).modules}
    assert "raid7" in got  # cannot tell what the installed system boots from: as before, all of it


def test_fstab_tells_the_root_file_system_under_a_container_root(tmp_path: Path) -> None:
    cfg = host(tmp_path, fstype="overlay", fstab="UUID=1 / xfs defaults 0 1\n")
    assert root_fs_known(cfg.root, cfg.procfs)
    assert not root_fs_known(host(tmp_path / "b", fstype="overlay").root, cfg.procfs)


def test_a_sysroot_that_is_only_a_directory_does_not_take_the_running_roots_file_system(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path)
    fake.mount("/", "0:99", "xfs", "/dev/root")
    cfg = fake.config(Config(root=tmp_path / "root"))
    assert list(initrd_filesystems(Path("/"), cfg.procfs)) == [
        ("xfs", "root: xfs on /")
    ]  # the running root's
    assert list(initrd_filesystems(cfg.root, cfg.procfs)) == []  # / is the build machine's, not the root's
    assert not root_fs_known(cfg.root, cfg.procfs)


def test_a_sysroot_that_is_only_a_directory_takes_no_profiles_from_the_running_system(
    tmp_path: Path,
) -> None:
    fake = FakeHost(tmp_path)
    fake.block("virtual/block/md0", "9:0", md__level="raid1")
    fake.mount("/", "9:0", "ext4", "/dev/md0")
    cfg = fake.config(Config(root=tmp_path / "root"))
    assert with_host_profiles(replace(cfg, root=Path("/"))).profiles == ("raid",)  # the running root
    assert with_host_profiles(cfg).profiles == ()  # a directory: the running root is not its root


def test_host_modules_outside_the_boot_classes_stay_out(kroot: Path, tmp_path: Path) -> None:
    cfg = kernel_config(kroot, host(tmp_path, sys_modules=("sunrpc", "baz", "blk_a")))
    got = {m.name: m.reason for m in plan_kernel(cfg).modules}
    assert "sunrpc" not in got  # net/: not a boot class without the network profiles
    assert got["baz"] == "host: /sys/module/baz"  # lib/
    assert got["blk_a"] == "host: /sys/module/blk_a"  # drivers/block/


def test_a_profile_still_brings_its_modules_host_only(kroot: Path, tmp_path: Path) -> None:
    cfg = kernel_config(kroot, host(tmp_path), profiles=("nfs",))
    assert {m.name: m.reason for m in plan_kernel(cfg).modules}["sunrpc"] == "profile nfs: net/sunrpc/"


# --- packages: the host's own dpkg root, the file system chosen by a fixture mountinfo


def host_plan(tmp_path: Path, fstype: str, *args: str) -> Plan:
    """This host's own root, as if / were mounted as `fstype` (its /sys as it is)."""
    fake = FakeHost(tmp_path)
    fake.mount("/", "0:99", fstype, "/dev/root")
    kver = require_host_kernel().kver
    return make_plan(make_config(parse_args(["plan", "-k", kver, "--procfs", str(fake.procfs), *args])))


def installed(name: str) -> bool:
    return os.path.exists(f"/var/lib/dpkg/info/{name}.list") or os.path.exists(
        f"/var/lib/dpkg/info/{name}:amd64.list"
    )


FS_TOOLS = {"ext4": "e2fsprogs", "xfs": "xfsprogs", "btrfs": "btrfs-progs", "vfat": "dosfstools"}


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs"])
def test_host_only_takes_the_tools_of_its_root_file_system_only(tmp_path: Path, fstype: str) -> None:
    tools = FS_TOOLS[fstype]
    require(installed(tools), f"{tools} ({fstype})", f"apt-get install {tools}")
    names = {p.name for p in host_plan(tmp_path, fstype).packages}
    assert FS_TOOLS[fstype] in names
    assert not (set(FS_TOOLS.values()) - {FS_TOOLS[fstype]}) & names


@pytest.mark.parametrize("args", [("--generic",), ()], ids=["generic", "host-only-in-a-container"])
def test_every_file_systems_tools_when_generic_or_the_root_is_unknown(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    tools = {t for t in FS_TOOLS.values() if installed(t)}
    require(len(tools) >= 2, f"two of {', '.join(FS_TOOLS.values())}", "apt-get install e2fsprogs xfsprogs")
    names = {p.name for p in host_plan(tmp_path, "ext4" if args else "overlay", *args).packages}
    assert tools <= names


def test_networkd_only_with_the_network_profile(tmp_path: Path) -> None:
    without = {e.path for e in host_plan(tmp_path / "a", "ext4").entries}
    with_net = {e.path for e in host_plan(tmp_path / "b", "ext4", "--profile", "network").entries}
    assert "/usr/lib/systemd/systemd-networkd" not in without
    assert "/usr/lib/systemd/systemd-networkd" in with_net
    assert "/usr/lib/systemd/network/99-default.link" in without  # udev's naming rules stay


def test_files_nothing_in_an_initrd_reads_are_left_out(tmp_path: Path) -> None:
    paths = [e.path for e in host_plan(tmp_path, "ext4", "--generic").entries]
    assert any(p.startswith("/usr/lib/systemd/") for p in paths)
    dead = ("/usr/share/bash-completion/", "/usr/share/zsh/", "/usr/share/initramfs-tools/")
    assert [p for p in paths if p.startswith(dead)] == []


# --- every removal list together: no program loses a library it needs (check.py, the pre-flight
# check every build runs, is the one implementation of these invariants)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--generic",),
        ("--generic", *(a for p in ("lvm", "raid", "nfs", "network") for a in ("--profile", p))),
    ],
    ids=["host-only", "generic", "generic-with-profiles"],
)
def test_every_library_a_program_in_the_initrd_needs_is_in_it(tmp_path: Path, args: tuple[str, ...]) -> None:
    plan = host_plan(tmp_path, "ext4", *args)
    assert plan.needs is not None and any(n.needed for n in plan.needs.values())
    assert check.missing_libraries(plan.needs, check.InPlan(plan.entries)) == []


# --- udev rules: every program a rule runs is in the initrd


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--generic",),
        ("--generic", *(a for p in ("lvm", "raid", "nfs", "network") for a in ("--profile", p))),
    ],
    ids=["host-only", "generic", "generic-with-profiles"],
)
def test_every_program_a_udev_rule_in_the_initrd_runs_is_in_it(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    plan = host_plan(tmp_path, "ext4", *args)
    assert plan.needs is not None
    image = check.InPlan(plan.entries)
    programs = check.run_programs(plan.needs, image)
    assert any(p.endswith("/ata_id") for _, p in programs)  # the rules were read
    assert check.missing_programs(plan.needs, image) == []
