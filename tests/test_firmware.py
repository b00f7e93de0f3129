"""Firmware lookup: compressed variants, globs, search order and symlink chains kept inside the tree."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from fixtures.kernel import SYN_KVER, synthetic_kernel_root
from mkosi_initrd.kernel.firmware import find_firmware, select_firmware

FW = "/usr/lib/firmware"


@pytest.fixture(scope="module")
def root() -> Path:
    return synthetic_kernel_root()


def test_symlink_chain_is_kept_link_by_link(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [("foo", "foo/fw.bin")], [])
    entries = {e.path: e for e in part.entries}
    assert entries[f"{FW}/foo/fw.bin"].linkto == "../vendor/foo-fw.bin"
    assert entries[f"{FW}/vendor/foo-fw.bin"].linkto == "foo-fw-1.2.bin"
    final = entries[f"{FW}/vendor/foo-fw-1.2.bin"]
    assert stat.S_ISREG(final.mode) and final.source is not None
    assert final.source.read_text() == "FOO FIRMWARE"
    assert [c.path for c in part.choices] == ["foo/fw.bin"]
    assert part.choices[0].reason == "foo"


def test_absolute_link_into_the_tree_becomes_relative(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [("bi", "bi/builtin.fw")], [])
    entries = {e.path: e for e in part.entries}
    assert entries[f"{FW}/bi/builtin.fw"].linkto == "../vendor/bi.fw"
    assert f"{FW}/vendor/bi.fw" in entries


def test_link_leaving_the_tree_is_stored_as_the_file(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [("x", "extra/outside.bin")], [])
    (entry,) = [e for e in part.entries if e.path == f"{FW}/extra/outside.bin"]
    assert stat.S_ISREG(entry.mode)
    assert entry.source == root / "etc/outside-firmware.bin"


def test_compressed_variant_satisfies_the_plain_name(root: Path) -> None:
    assert find_firmware(root, SYN_KVER, "cz/fw.bin") == ["cz/fw.bin.zst"]
    assert find_firmware(root, SYN_KVER, "cg/*.fw") == ["cg/a.fw", "cg/b.fw.xz"]
    assert find_firmware(root, SYN_KVER, "cz/nothing.bin") == []


def test_updates_directory_wins_like_the_kernel_loader(tmp_path: Path) -> None:
    for rel in ("usr/lib/firmware/a.bin", "usr/lib/firmware/updates/a.bin", "usr/lib/firmware/5.0/b.bin"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "usr/lib/firmware/b.bin").write_text("generic")
    assert find_firmware(tmp_path, "5.0", "a.bin") == ["updates/a.bin"]
    assert find_firmware(tmp_path, "5.0", "b.bin") == ["5.0/b.bin"]


def test_missing_firmware_names_every_module_that_wants_it(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [("m1", "no/such.bin"), ("m2", "no/such.bin")], [])
    assert part.missing == ("no/such.bin (wanted by m1, m2)",)
    assert part.entries == ()
    assert "no/such.bin (wanted by m1, m2)" in part.warnings[0]


def test_user_globs_ignore_the_compression_suffix(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [], ["cg/b.fw", "unwanted/*"])
    assert {c.path: c.reason for c in part.choices} == {
        "cg/b.fw.xz": "listed: cg/b.fw",
        "unwanted/other.bin": "listed: unwanted/*",
    }


def test_user_glob_matching_nothing_is_a_warning(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [], ["nothing/*"])
    assert part.choices == ()
    assert part.warnings == ("firmware glob 'nothing/*' matches nothing in /usr/lib/firmware",)


@pytest.mark.parametrize("name", ["../../../etc/shadow", "/etc/shadow", "foo/../../../../etc/shadow", ".."])
def test_a_firmware_name_leaving_the_firmware_directory_is_ignored_with_a_warning(
    root: Path, tmp_path: Path, name: str
) -> None:
    # firmware= comes from a module's .modinfo: a name that climbs out must not pull in the root's
    # files (here a copy of the synthetic root with an /etc/shadow to be taken).
    own = tmp_path / "root"
    shutil.copytree(root, own, symlinks=True)
    (own / "etc/shadow").write_text("root:secret:::\n")
    part = select_firmware(own, SYN_KVER, [("evil", name), ("foo", "foo/fw.bin")], [])
    assert [w for w in part.warnings if "evil" in w] == [
        f"evil asks for firmware {name!r}, outside {FW}: ignored"
    ]
    assert all(e.path.startswith(f"{FW}/") and ".." not in e.path.split("/") for e in part.entries)
    assert all(e.source is None or own / "usr/lib/firmware" in e.source.parents for e in part.entries)
    assert [c.path for c in part.choices] == ["foo/fw.bin"]


def test_a_name_with_dots_that_stays_inside_is_looked_up_normalized(root: Path) -> None:
    part = select_firmware(root, SYN_KVER, [("foo", "cz/../foo/fw.bin")], [])
    assert [c.path for c in part.choices] == ["foo/fw.bin"]
    assert all(".." not in e.path.split("/") for e in part.entries)
