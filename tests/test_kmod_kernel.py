"""The real Debian kernel package (unpacked with dpkg-deb -x): closure, index and firmware properties."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fixtures.host import FakeHost
from fixtures.kernel import debian_kernel_root, kernel_under_test
from mkosi_initrd.cli import main
from mkosi_initrd.config.model import Config
from mkosi_initrd.kernel.index import load_index, normalize, strip_module_suffix
from mkosi_initrd.kernel.modules import plan_kernel
from mkosi_initrd.kernel.patterns import PatternSet, module_key
from mkosi_initrd.kernel.selection import host_classes
from mkosi_initrd.plan.parts import Part

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("host_kernel")]
KVER = kernel_under_test().kver  # the package of the test kernel, unpacked


@pytest.fixture(scope="module")
def root() -> Path:
    return debian_kernel_root()


@pytest.fixture(scope="module")
def generic(root: Path) -> Part:
    return plan_kernel(Config(root=root, kver=KVER, generic=True))


def modinfo_field(field: str, paths: list[Path]) -> list[str]:
    """The real modinfo tool's values of `field` for each module (joined by spaces)."""
    out = subprocess.run(
        ["modinfo", "-0", *map(str, paths)], capture_output=True, text=True, check=True
    ).stdout
    values: dict[str, list[str]] = {}
    current = ""
    for record in out.split("\0"):
        record = record.lstrip("\n")
        if record.startswith("filename:"):
            current = record.split(":", 1)[1].strip()
            values[current] = []
        elif record.startswith(field + "="):
            values[current].append(record.split("=", 1)[1])
    return [" ".join(values[str(p)]) for p in paths]


def undefined_symbols(path: Path) -> set[str]:
    out = subprocess.run(["nm", "-u", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_generic_selection_takes_the_default_list(generic: Part) -> None:
    names = {m.name for m in generic.modules}
    assert {"ext4", "xfs", "btrfs", "virtio_blk", "nvme", "dm_crypt", "sd_mod", "usb_storage"} <= names
    listed_hw_crypto = [
        m.name
        for m in generic.modules
        if m.path.startswith("kernel/drivers/crypto/") and m.reason.startswith("listed")
    ]
    assert listed_hw_crypto == ["ccp_crypto"]  # "-/drivers/crypto/", then "ccp_crypto" again
    assert 150 < len(names) < 600


def test_every_dependency_of_a_selected_module_is_selected_or_built_in(root: Path, generic: Part) -> None:
    moddir = root / "usr/lib/modules" / KVER
    index = load_index(moddir, KVER)
    selected = {m.name for m in generic.modules}
    builtin = set(index.builtin)
    paths = [moddir / m.path for m in generic.modules]
    for m, depends in zip(generic.modules, modinfo_field("depends", paths), strict=True):
        for dep in filter(None, depends.strip().split(",")):
            assert normalize(dep) in selected | builtin, f"{dep} (modinfo depends of {m.name}) left out"
        for dep in index.deps[m.name]:
            assert dep in selected | builtin, f"{dep} (modules.dep of {m.name}) left out"


def test_every_resolvable_softdep_is_selected(root: Path, generic: Part) -> None:
    moddir = root / "usr/lib/modules" / KVER
    index = load_index(moddir, KVER)
    selected = {m.name for m in generic.modules}
    paths = [moddir / m.path for m in generic.modules]
    checked = 0
    for m, softdep in zip(generic.modules, modinfo_field("softdep", paths), strict=True):
        for target in softdep.replace("pre:", " ").replace("post:", " ").split():
            loadable, builtin = index.resolve(target)
            assert builtin or set(loadable) & selected or not loadable, f"softdep {target} of {m.name}"
            checked += 1
    assert checked > 0  # ext4, jbd2, ... have softdeps on this kernel


def test_regenerated_index_resolves_every_module_and_symbol(
    root: Path, generic: Part, tmp_path: Path
) -> None:
    for e in generic.entries:
        path = tmp_path / e.path.lstrip("/")
        if e.is_dir:
            path.mkdir(parents=True, exist_ok=True)
        elif e.data is not None:
            path.write_bytes(e.data)
        elif e.source is not None:
            os.symlink(e.source, path)  # content is the kernel's own file
    (tmp_path / "lib").symlink_to("usr/lib")
    names = [m.name for m in generic.modules]
    proc = subprocess.run(
        ["modprobe", "-d", str(tmp_path), "-S", KVER, "-a", "--show-depends", *names],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith("insmod "):
            assert Path(line.split()[1]).exists(), line


def test_every_symbol_a_selected_module_needs_is_exported_by_the_subset(root: Path, generic: Part) -> None:
    """Symbols exported by modules (the full kernel's modules.symbols) must come from selected ones."""
    moddir = root / "usr/lib/modules" / KVER
    exporters: dict[str, set[str]] = {}
    for line in (moddir / "modules.symbols").read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            exporters.setdefault(words[1].removeprefix("symbol:"), set()).add(normalize(words[2]))
    selected = {m.name for m in generic.modules}
    needed = 0
    for m in generic.modules:
        for sym in undefined_symbols(moddir / m.path):
            if sym in exporters:
                needed += 1
                assert exporters[sym] & selected, f"{m.name} needs {sym} from {sorted(exporters[sym])}"
    assert needed > 100


def test_firmware_of_selected_modules_only(generic: Part) -> None:
    wanted_by = {part.strip() for f in generic.firmware for part in f.reason.split(",")}
    assert wanted_by <= {m.name for m in generic.modules}
    for missing in generic.missing_firmware:
        assert "(wanted by " in missing


def test_host_only_keeps_every_loaded_module_of_this_kernel_in_the_boot_classes(root: Path) -> None:
    config = Config(root=root, kver=KVER, generic=False)
    part = plan_kernel(config)
    index = load_index(root / "usr/lib/modules" / KVER, KVER)
    classes = host_classes(config)
    loaded = {normalize(n) for n in os.listdir("/sys/module")} & set(index.paths)
    in_class = {n for n in loaded if _decides(classes, index.paths[n])}
    names = {m.name for m in part.modules}
    assert in_class <= names
    # What this host loads for other purposes (its container networking, say) stays out.
    for name in loaded - in_class:
        assert name not in names or not part_reason(part, name).startswith("host:")


def _decides(classes: PatternSet, rel: str) -> bool:
    p = classes.decide(module_key(strip_module_suffix(rel)))
    return p is not None and p.include


def part_reason(part: Part, name: str) -> str:
    return next(m.reason for m in part.modules if m.name == name)


def test_host_only_leaves_out_file_systems_and_features_this_host_does_not_use(
    root: Path, generic: Part, tmp_path: Path
) -> None:
    # This host, with the unpacked kernel's directory mounted as its root is (a sysroot).
    mountinfo = Path("/proc/self/mountinfo").read_text()
    root_line = next(line for line in mountinfo.splitlines() if line.split()[4] == "/")
    left, right = root_line.split(" - ")
    root_fs, source = right.split()[:2]
    fake = FakeHost(tmp_path)
    fake.mount(os.path.realpath(root), left.split()[2], root_fs, source)
    config = Config(root=root, kver=KVER, generic=False, procfs=fake.procfs)
    host = {m.name for m in plan_kernel(config).modules}
    assert {"xfs", "btrfs", "kvm", "cfg80211", "raid456", "dm_raid"} <= {m.name for m in generic.modules}
    assert (
        not {"xfs", "btrfs", "kvm", "cfg80211", "raid456", "dm_raid", "thunderbolt_net"} - {root_fs} & host
    )
    if root_fs in index_names(root):
        assert root_fs in host
    # The hardware part of the default list stays: the disk may move to another controller.
    assert {"virtio_blk", "nvme", "ahci", "usb_storage", "sd_mod", "dm_crypt", "nls_cp437"} <= host


def index_names(root: Path) -> set[str]:
    return set(load_index(root / "usr/lib/modules" / KVER, KVER).paths)


def test_plan_json_lists_modules_and_firmware_with_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    """The host's own root: its Debian kernel and firmware-linux-free (tools/setup.sh installs both)."""
    assert main(["plan", "--json", "--generic", "-k", KVER, "--add-module", "carl9170"]) == 0
    plan = json.loads(capsys.readouterr().out)
    modules = {m["name"]: m for m in plan["modules"]}
    assert modules["carl9170"]["reason"] == "config: carl9170"
    assert modules["ext4"] == {"name": "ext4", "path": "kernel/fs/ext4/ext4.ko", "reason": "listed: ext4"}
    assert modules["jbd2"]["reason"] == "dependency of ext4"
    assert {"path": "carl9170-1.fw", "reason": "carl9170"} in plan["firmware"]
    assert all("(wanted by " in m for m in plan["missing_firmware"])
