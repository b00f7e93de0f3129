"""build.write_outputs: where the early microcode goes (prepended, or its own file for kernel-install)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mkosi_initrd.build.options import BuildOptions
from mkosi_initrd.build.pipeline import write_outputs
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.plan.model import Entry, Plan


def _plan(root: Path) -> Plan:
    entries = (Entry("/init", stat.S_IFLNK | 0o777, linkto="usr/lib/systemd/systemd"),)
    return Plan(root, "1.0", "rpm", True, (), {}, (), entries)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    root = tmp_path / "root"
    (root / "usr/lib/firmware/intel-ucode").mkdir(parents=True)
    (root / "usr/lib/firmware/intel-ucode/06-55-04").write_bytes(b"INTEL")
    return Config(root=root, kver="1.0", generic=True, source_date_epoch=7)


def test_microcode_is_prepended_as_a_plain_cpio_by_default(config: Config, tmp_path: Path) -> None:
    out = tmp_path / "initrd"
    size, microcode = write_outputs(config, _plan(config.root), BuildOptions(output=out))
    assert microcode is None and size == out.stat().st_size
    segments, _ = read_segments(out)
    assert [s.compression for s in segments] == ["none", "zstd"]
    assert segments[0].members[-1].path == "/kernel/x86/microcode/GenuineIntel.bin"
    assert {m.mtime for s in segments for m in s.members} == {7}


def test_microcode_output_gets_its_own_file_and_the_initrd_none(config: Config, tmp_path: Path) -> None:
    out, ucode = tmp_path / "initrd", tmp_path / "microcode"
    _, microcode = write_outputs(
        config, _plan(config.root), BuildOptions(output=out, microcode_output=ucode)
    )
    assert microcode == ucode and ucode.stat().st_mode & 0o7777 == 0o600
    assert [s.compression for s in read_segments(out)[0]] == ["zstd"]
    assert [m.path for m in read_segments(ucode)[0][0].members][
        -1
    ] == "/kernel/x86/microcode/GenuineIntel.bin"


def test_no_microcode_file_when_there_is_no_microcode(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    out, ucode = tmp_path / "initrd", tmp_path / "microcode"
    cfg = Config(root=root, kver="1.0", generic=True, compression="gzip")
    _, microcode = write_outputs(cfg, _plan(root), BuildOptions(output=out, microcode_output=ucode))
    assert microcode is None and not ucode.exists()
    assert [s.compression for s in read_segments(out)[0]] == ["gzip"]


def test_an_unknown_format_is_a_user_error(config: Config, tmp_path: Path) -> None:
    with pytest.raises(InitrdError, match="unknown output format"):
        write_outputs(config, _plan(config.root), BuildOptions(output=tmp_path / "x", format="tar"))
