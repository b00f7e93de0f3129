"""Module selection and closure on a synthetic kernel (real gcc-built modules indexed by the real depmod)."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.host import FakeHost
from fixtures.kernel import SYN_KVER, synthetic_kernel_root
from mkosi_initrd import scratch as scratch_module
from mkosi_initrd.cli import main
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.host.probes import Want, needed, root_needs
from mkosi_initrd.kernel.index import load_index
from mkosi_initrd.kernel.modules import plan_kernel, start_kernel
from mkosi_initrd.kernel.selection import close
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.planner.steps import make_plan


@pytest.fixture(scope="module")
def root() -> Path:
    return synthetic_kernel_root()


def config(root: Path, **kw: object) -> Config:
    base = Config(root=root, kver=SYN_KVER, generic=True)
    return replace(base, **kw)  # type: ignore[arg-type]


def reasons(part: Part) -> dict[str, str]:
    return {m.name: m.reason for m in part.modules}


def test_generic_takes_the_default_list_and_its_exclusions(root: Path) -> None:
    got = reasons(plan_kernel(config(root)))
    assert got["virtio_blk"] == "listed: virtio_blk"
    assert got["nls_utf8"] == "listed: /fs/nls/"
    assert got["bar_generic"] == "listed: crypto/"
    assert got["raid7"] == "listed: raid[0-9]*"
    assert "hw_crypt" not in got  # -/drivers/crypto/
    assert "foo" not in got and "blk_a" not in got  # not listed, no host probing in generic mode


def test_hard_dependency_by_symbol_is_followed(root: Path) -> None:
    got = reasons(plan_kernel(config(root, modules=("blk-a",))))
    assert got["blk_a"] == "config: blk-a"
    assert got["foo"] == "dependency of blk_a"


def closure(root: Path, *names: str, excluded: tuple[str, ...] = ()) -> dict[str, str]:
    index = load_index(root / "usr/lib/modules" / SYN_KVER, SYN_KVER)
    return close(index, [(n, "asked") for n in names], excluded=excluded).modules


def test_softdeps_pre_through_alias_and_post(root: Path) -> None:
    got = closure(root, "foo")
    assert got == {"foo": "asked", "bar_generic": "softdep of foo", "baz": "softdep of foo"}


def test_weakdep_from_modinfo_is_followed(root: Path) -> None:
    assert closure(root, "weak_user") == {"weak_user": "asked", "wk": "weakdep of weak_user"}


def test_dependency_chain_through_compressed_modules(root: Path) -> None:
    assert closure(root, "cz") == {"cz": "asked", "czlib": "dependency of cz"}


def test_excluding_a_softdep_leaves_it_out_but_hard_deps_stay(root: Path) -> None:
    got = reasons(plan_kernel(config(root, modules=("blk-a", "-foo", "-baz"))))
    assert got["foo"] == "dependency of blk_a"  # blk_a cannot load without it
    assert "baz" not in got
    assert closure(root, "blk-a", excluded=("foo", "baz", "bar_generic")) == {
        "blk_a": "asked",
        "foo": "dependency of blk_a",
    }


def test_compressed_modules_are_read_and_stored(root: Path) -> None:
    part = plan_kernel(config(root, modules=("cz", "cg")))
    got = {m.name: m.path for m in part.modules}
    assert got["cz"] == "kernel/fs/cz/cz.ko.zst"  # zstd: as shipped
    assert got["czlib"] == "kernel/lib/czlib.ko.xz"  # xz dependency, as shipped
    assert got["cg"] == "kernel/fs/cg/cg.ko"  # gzip: decompressed once
    entries = {e.path: e for e in part.entries}
    cg = entries[f"/usr/lib/modules/{SYN_KVER}/kernel/fs/cg/cg.ko"]
    assert cg.data is not None and cg.data.startswith(b"\x7fELF")
    fw = {f.path for f in part.firmware}
    assert {"cz/fw.bin.zst", "cg/a.fw", "cg/b.fw.xz"} <= fw  # read from the compressed .modinfo


def test_builtin_satisfies_a_softdep_and_brings_its_firmware(root: Path) -> None:
    part = plan_kernel(config(root, modules=("uses_builtin",)))
    assert "bi" in part.builtin
    assert "bi" not in reasons(part)
    assert any(f.path == "bi/builtin.fw" and f.reason == "bi" for f in part.firmware)


def test_missing_firmware_is_a_warning_naming_the_module(root: Path) -> None:
    part = plan_kernel(config(root, modules=("blk-a",)))
    assert part.missing_firmware == ("absent/missing.bin (wanted by blk_a)",)
    assert any("absent/missing.bin (wanted by blk_a)" in w for w in part.warnings)


def test_unknown_module_is_an_error_naming_it(root: Path) -> None:
    with pytest.raises(InitrdError, match="'no-such-module' not found in kernel 9.9.9-test"):
        plan_kernel(config(root, modules=("no-such-module",)))
    with pytest.raises(InitrdError, match="'/drivers/nothere/' not found"):
        plan_kernel(config(root, modules=("/drivers/nothere/",)))


def test_kernel_without_modules_dep_is_an_error_naming_the_version(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/modules/7.7.7/kernel").mkdir(parents=True)
    with pytest.raises(InitrdError, match="kernel 7.7.7: no modules.dep"):
        plan_kernel(Config(root=tmp_path, kver="7.7.7", generic=True))


def own_kernel(root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic kernel root; returns its module directory."""
    own = tmp_path / "root"
    shutil.copytree(root, own, symlinks=True)
    return own / "usr/lib/modules" / SYN_KVER


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0] + "\n"


def _cut_mid_line(text: str) -> str:
    return text[: text.index("\n", len(text) // 2) - 3]


def _lose_last_lines(text: str) -> str:
    return "".join(text.splitlines(keepends=True)[:-4])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: "\x00\x01 not an index \xff\n" * 20, "line 1 is not a module and its dependencies"),
        (lambda t: "", "it has no line for the installed module kernel/"),
        (_first_line, "it has no line for the installed module kernel/"),
        (_cut_mid_line, "its last line is cut off"),
        (_lose_last_lines, "it has no line for the installed module "),
        (lambda t: t.replace(".ko:", ".ko", 1), "line 1 is not a module and its dependencies"),
    ],
    ids=["garbage", "empty", "one-line", "cut-mid-line", "lines-lost", "no-colon"],
)
def test_a_damaged_modules_dep_is_an_error_naming_it(
    root: Path, tmp_path: Path, damage: Callable[[str], str], message: str
) -> None:
    kdir = own_kernel(root, tmp_path)
    dep = kdir / "modules.dep"
    dep.write_text(damage(dep.read_text()))
    with pytest.raises(InitrdError) as e:
        plan_kernel(Config(root=kdir.parents[3], kver=SYN_KVER, generic=True))
    assert f"kernel {SYN_KVER}: {dep} is damaged: {message}" in str(e.value)
    assert f"depmod {SYN_KVER}" in e.value.hint


def test_an_empty_modules_dep_without_modules_order_is_an_error_too(root: Path, tmp_path: Path) -> None:
    kdir = own_kernel(root, tmp_path)
    (kdir / "modules.order").unlink()
    (kdir / "modules.dep").write_text("")
    with pytest.raises(InitrdError, match="it lists no module, but .*/kernel has module files"):
        load_index(kdir, SYN_KVER)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("modules.alias", lambda t: t[:-5], "its last line is cut off"),
        ("modules.alias", lambda t: "garbage\n", "it has no alias line"),
        ("modules.builtin", lambda t: t + "garbage\n", "'garbage' is not one of its lines"),
        (
            "modules.softdep",
            lambda t: "softdep foo pre: bar\nsoftdep\x00garbage\n",
            "is not one of its lines",
        ),
        ("modules.builtin.modinfo", lambda t: t[:-1], "its last entry is cut off"),
    ],
)
def test_a_damaged_index_file_is_an_error_naming_it(
    root: Path, tmp_path: Path, name: str, damage: Callable[[str], str], message: str
) -> None:
    kdir = own_kernel(root, tmp_path)
    path = kdir / name
    path.write_text(damage(path.read_text() if path.exists() else ""))
    with pytest.raises(InitrdError, match=f"kernel {SYN_KVER}: .*/{name} is damaged: .*{message}"):
        load_index(kdir, SYN_KVER)


def test_a_build_on_a_garbage_modules_dep_fails_and_keeps_the_old_initrd(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The reported case: rc 0 and an initrd with 0 modules, over the one that booted.
    from fixtures.rpmspecs import rpm_root

    own = tmp_path / "rpmroot"
    shutil.copytree(rpm_root(), own, symlinks=True)
    dep = own / "usr/lib/modules/1.0/modules.dep"
    dep.write_text("this is not an index\n")
    out = tmp_path / "initrd"
    out.write_bytes(b"the initrd that booted")
    assert main(["--root", str(own), "-k", "1.0", "--generic", "--no-cache", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"mkosi-initrd: error: kernel 1.0: {dep} is damaged: line 1" in err and "Traceback" not in err
    assert out.read_bytes() == b"the initrd that booted"


def test_regenerated_index_lets_modprobe_resolve_the_subset(root: Path, tmp_path: Path) -> None:
    part = plan_kernel(config(root, modules=("blk-a", "cz")))
    write_tree(part, tmp_path)
    (tmp_path / "lib").symlink_to("usr/lib")  # merged /usr, as the packages in the initrd make it
    kdir = tmp_path / "lib/modules" / SYN_KVER
    dep = (kdir / "modules.dep").read_text()
    assert "kernel/drivers/block/blk-a.ko: kernel/fs/foo/foo.ko" in dep
    assert "hw_crypt" not in dep  # only the subset
    out = modprobe(tmp_path, "--show-depends", "pci:v00001234d00000001sv0sd0bc01sc00i00")
    assert out.splitlines() == [
        f"insmod {kdir}/kernel/crypto/bar_generic.ko ",  # softdep pre: crypto-bar of foo
        f"insmod {kdir}/kernel/fs/foo/foo.ko ",
        f"insmod {kdir}/kernel/lib/baz.ko ",  # softdep post: of foo
        f"insmod {kdir}/kernel/drivers/block/blk-a.ko ",
    ]
    assert "czlib.ko.xz" in modprobe(tmp_path, "--show-depends", "cz")


def test_a_failing_package_step_leaves_no_depmod_run_behind(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The planner starts depmod before the package step; a root without a package database fails
    # there, and the depmod scratch tree must be gone with the error.
    own = tmp_path / "root"
    shutil.copytree(root, own, symlinks=True)
    (own / "etc/os-release").write_text("ID=debian\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(scratch_module, "base_dir", lambda: scratch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InitrdError, match="package database"):
            make_plan(config(own))
        gc.collect()
    # Cleaned up by the planner, not by the garbage collector's finalizers (they warn).
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert list(scratch.iterdir()) == []


def test_the_index_of_a_started_kernel_part_is_the_same_as_a_finished_one(root: Path) -> None:
    pending = start_kernel(config(root, modules=("blk-a", "cz")))
    assert not any(e.path.endswith("/modules.dep") for e in pending.part.entries)
    assert pending.result() == plan_kernel(config(root, modules=("blk-a", "cz")))


def modprobe(tree: Path, *args: str) -> str:
    proc = subprocess.run(
        ["modprobe", "-d", str(tree), "-S", SYN_KVER, *args], capture_output=True, text=True, check=True
    )
    return proc.stdout


def write_tree(part: Part, dest: Path) -> None:
    """The entries as files, the way the image writer would store them."""
    for e in part.entries:
        path = dest / e.path.lstrip("/")
        if e.is_dir:
            path.mkdir(parents=True, exist_ok=True)
        elif e.is_symlink:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(e.linkto, path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(e.data if e.data is not None else e.source.read_bytes())  # type: ignore[union-attr]


# ---- host-only mode on a fixture sysfs/procfs ----


BLK_A_DEVICE = "pci:v00001234d00005678sv00000000sd00000000bc01sc08i02"  # matches blk_a's alias
VIRTIO_PCI = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"


def make_host(tmp: Path, *, crypt: bool = False, root: Path | None = None) -> FakeHost:
    """A host whose root is on a virtio disk (on dm-crypt with `crypt`), with a device blk_a drives,
    nvme loaded and printk built in; with `root`, that directory is mounted too (as a sysroot would be)."""
    host = FakeHost(tmp)
    host.modalias("pci0000:00/0000:00:03.0", BLK_A_DEVICE)
    host.modalias("pci0000:00/0000:00:02.0", VIRTIO_PCI)
    host.modalias("pci0000:00/0000:00:02.0/virtio1", "virtio:d00000002v00001AF4")
    host.driver("pci0000:00/0000:00:02.0/virtio1", "virtio", "virtio_blk")
    host.block("pci0000:00/0000:00:02.0/virtio1/block/vda", "254:0")
    vda1 = host.block("pci0000:00/0000:00:02.0/virtio1/block/vda/vda1", "254:1", partition="1")
    host.module("nvme")  # loaded on the host
    host.module("printk")  # built-in, not a module of this kernel
    devnum, source = "254:1", "/dev/vda1"
    if crypt:
        dm = host.block("virtual/block/dm-0", "253:0", dm__uuid="CRYPT-LUKS2-0123-root")
        host.slave(dm, vda1)
        devnum, source = "253:0", "/dev/mapper/root"
    host.mount("/", devnum, "synfs", source)
    if root is not None:
        host.mount(os.path.realpath(root), devnum, "synfs", source)
    return host


def test_host_only_adds_root_fs_modalias_and_loaded_modules(root: Path, tmp_path: Path) -> None:
    host = make_host(tmp_path, root=root)
    got = reasons(plan_kernel(host.config(config(root))))
    assert got["synfs"] == f"root: synfs on / ({os.path.realpath(root)})"
    assert got["blk_a"] == (f"modalias: /sys/devices/pci0000:00/0000:00:03.0 ({BLK_A_DEVICE})")
    assert got["foo"] == "dependency of blk_a"
    assert got["virtio_blk"] == "listed: virtio_blk"  # the first reason is kept


def test_root_block_stack_names_the_disk_driver_and_bus(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    assert Want(reason="root: synfs on /", module="synfs") in list(
        needed(Path("/"), host.sysfs, host.procfs)
    )
    wants = list(root_needs(host.sysfs, host.procfs))
    assert (
        Want(reason="root: driver of /sys/devices/pci0000:00/0000:00:02.0/virtio1", module="virtio_blk")
        in wants
    )
    assert (
        Want(
            reason=f"root: modalias of /sys/devices/pci0000:00/0000:00:02.0 ({VIRTIO_PCI})",
            modalias=VIRTIO_PCI,
        )
        in wants
    )


def test_root_on_dm_crypt_follows_slaves(tmp_path: Path) -> None:
    host = make_host(tmp_path, crypt=True)
    wants = {(w.module, w.reason) for w in root_needs(host.sysfs, host.procfs) if w.module}
    assert ("dm_crypt", "root: /sys/devices/virtual/block/dm-0 (dm uuid CRYPT-...)") in wants
    assert ("dm_mod", "root: device-mapper /sys/devices/virtual/block/dm-0") in wants
    assert ("virtio_blk", "root: driver of /sys/devices/pci0000:00/0000:00:02.0/virtio1") in wants


def test_exclusion_beats_host_detection(root: Path, tmp_path: Path) -> None:
    host = make_host(tmp_path, root=root)
    detected = reasons(plan_kernel(host.config(config(root))))
    excluded = reasons(plan_kernel(host.config(config(root), modules=("-blk-a",))))
    assert detected["blk_a"].startswith("modalias: ")  # the host probes bring it in ...
    assert "blk_a" not in excluded  # ... and the exclusion keeps it out
    assert excluded["synfs"] == detected["synfs"] and excluded["nvme"] == detected["nvme"]  # the rest stays


def test_generic_ignores_the_host(root: Path, tmp_path: Path) -> None:
    host = make_host(tmp_path, root=root)
    host_only = reasons(plan_kernel(host.config(config(root))))
    generic = reasons(plan_kernel(host.config(config(root), generic=True)))
    assert {"blk_a", "synfs"} <= set(host_only)  # what this host's probes bring in
    assert not {"blk_a", "synfs"} & set(generic)
    assert generic["virtio_blk"] == "listed: virtio_blk" and generic["nvme"] == "listed: nvme"


def test_profile_lists_add_modules(root: Path) -> None:
    got = reasons(plan_kernel(config(root, profiles=("nfs",))))
    assert got["sunrpc"] == "profile nfs: net/sunrpc/"


def test_softdep_in_the_roots_modprobe_config_is_followed(root: Path, tmp_path: Path) -> None:
    own = tmp_path / "root"
    shutil.copytree(root / "usr/lib/modules" / SYN_KVER, own / "usr/lib/modules" / SYN_KVER, symlinks=True)
    (own / "etc/modprobe.d").mkdir(parents=True)
    (own / "etc/modprobe.d/local.conf").write_text("# ours\nsoftdep nvme pre: sunrpc  # odd but valid\n")
    got = reasons(plan_kernel(Config(root=own, kver=SYN_KVER, generic=True)))
    assert got["sunrpc"] == "softdep of nvme"


def test_module_missing_from_disk_is_an_error_naming_it(root: Path, tmp_path: Path) -> None:
    own = tmp_path / "root"
    kdir = own / "usr/lib/modules" / SYN_KVER
    kdir.parent.mkdir(parents=True)
    shutil.copytree(root / "usr/lib/modules" / SYN_KVER, kdir, symlinks=True)
    (kdir / "kernel/drivers/nvme/nvme.ko").unlink()
    with pytest.raises(InitrdError, match="cannot read kernel module .*/kernel/drivers/nvme/nvme.ko"):
        plan_kernel(Config(root=own, kver=SYN_KVER, generic=True))
