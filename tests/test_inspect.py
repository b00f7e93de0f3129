"""`inspect`: segments, compression and files of any newc initrd, ours and other tools'."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import stat
import subprocess
from pathlib import Path

import libarchive
import pytest

from fixtures.kernel import HostKernel
from mkosi_initrd.cli import main
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.compress import compressor
from mkosi_initrd.image.cpio import write_cpio
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.inspect import describe_initrd
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.planner.manifest import MANIFEST
from prereq import require_file

REG = stat.S_IFREG | 0o644


def _cpio(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    write_cpio(buf, entries)
    return buf.getvalue()


def _compressed(kind: str, entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with compressor(buf, kind) as z:
        write_cpio(z, entries)
    return buf.getvalue()


def _gnu_cpio(tree: Path) -> bytes:
    names = "\n".join(sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))) + "\n"
    return subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input=names.encode(),
        cwd=tree,
        capture_output=True,
        check=True,
    ).stdout


def test_segments_of_every_compression_are_found_with_their_offsets(tmp_path: Path) -> None:
    early = _cpio([Entry("/kernel/x86/microcode/AuthenticAMD.bin", REG, data=b"u" * 10)])
    parts = [
        early,
        b"\0" * 512,  # padding between segments, as dracut writes it
        _compressed("zstd", [Entry("/a", REG, data=b"a")]),
        _compressed("xz", [Entry("/b", REG, data=b"b")]),
        _compressed("gzip", [Entry("/c", REG, data=b"c")]),
        _cpio([Entry("/d", REG, data=b"d")]),
    ]
    f = tmp_path / "initrd"
    f.write_bytes(b"".join(parts))
    segments, _ = read_segments(f)
    assert [s.compression for s in segments] == ["none", "zstd", "xz", "gzip", "none"]
    offsets = [0, len(early) + 512]
    for p in parts[2:-1]:
        offsets.append(offsets[-1] + len(p))
    assert [s.offset for s in segments] == offsets
    assert [[m.path for m in s.members if stat.S_ISREG(m.mode)] for s in segments] == [
        ["/kernel/x86/microcode/AuthenticAMD.bin"], ["/a"], ["/b"], ["/c"], ["/d"],
    ]  # fmt: skip


def test_archives_written_by_gnu_cpio_are_read_like_libarchive_reads_them(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/x").write_bytes(b"12345")
    (tree / "usr/bin/y").symlink_to("x")
    (tree / "etc").mkdir()
    (tree / "etc/os-release").write_text('PRETTY_NAME="Test OS"\n')
    raw = _gnu_cpio(tree)
    f = tmp_path / "initrd"
    f.write_bytes(gzip.compress(raw, mtime=0) + lzma.compress(raw))
    info = describe_initrd(f)
    assert [s["compression"] for s in info["segments"]] == ["gzip", "xz"]
    with libarchive.memory_reader(raw) as arc:
        expected = sorted(("/" + e.pathname, e.size if e.isfile else 0) for e in arc)
    ours = sorted((x["path"], x["size"] if x["mode"].startswith("0o100") else 0) for x in info["files"])
    assert ours == sorted(expected * 2)
    assert info["os_release"]["PRETTY_NAME"] == "Test OS"
    assert {x["path"]: x.get("linkto") for x in info["files"]}["/usr/bin/y"] == "x"


def test_the_manifest_is_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = {
        "generator": {"name": "mkosi-initrd", "version": "0.1.0"},
        "kernel": "6.1.0-test",
        "packages": [{"name": "bash", "nevra": "bash-5.2-1.x86_64"}],
        "modules": [{"name": "ext4"}],
        "build": {"generic": True},
    }
    f = tmp_path / "initrd"
    f.write_bytes(_compressed("zstd", [Entry(MANIFEST, REG, data=json.dumps(manifest).encode())]))
    assert main(["inspect", str(f)]) == 0
    out = capsys.readouterr().out
    assert "bash-5.2-1.x86_64" in out and "ext4" in out and "6.1.0-test" in out
    assert main(["inspect", "--json", str(f)]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"] == manifest


def test_truncated_and_foreign_files_are_user_errors(tmp_path: Path) -> None:
    f = tmp_path / "initrd"
    data = _compressed("zstd", [Entry("/a", REG, data=bytes(range(256)) * 4000)])
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(InitrdError, match="truncated"):
        read_segments(f)
    f.write_bytes(b"hello world, not an initrd")
    with pytest.raises(InitrdError, match="unknown data at offset 0"):
        read_segments(f)


def test_files_listing_shows_modes_links_and_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "initrd"
    f.write_bytes(
        _cpio(
            [
                Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
                Entry("/init", stat.S_IFLNK | 0o777, linkto="/x"),
            ]
        )
    )
    assert main(["inspect", "--files", str(f)]) == 0
    out = capsys.readouterr().out
    assert "crw-------" in out and "5, 1" in out and "/init -> /x" in out


def test_the_distribution_initrd_in_boot_is_read_completely(host_kernel: HostKernel) -> None:
    path = require_file(
        host_kernel.distro_initrd, "dracut (before the kernel, so its hook builds the initrd)"
    )
    info = describe_initrd(path)
    assert info["entries"] > 100
    assert any(x["path"].endswith("/systemd") or x["path"] == "/init" for x in info["files"])
    if "dracut" in info["os_release"].get("PRETTY_NAME", ""):
        assert info["dracut_modules"] and "systemd" in info["dracut_modules"]
    end = info["segments"][-1]["offset"] + info["segments"][-1]["size"]
    assert path.stat().st_size - end < 512  # nothing left unread but padding


def test_a_uki_is_described_by_its_sections_and_embedded_initrd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_kernel: HostKernel
) -> None:
    from mkosi_initrd.config.model import Config
    from mkosi_initrd.uki.assemble import build_uki
    from mkosi_initrd.uki.options import UkiInputs, uki_options

    kernel, kver = host_kernel.image, host_kernel.kver
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=testos\n")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(_compressed("zstd", [Entry("/init", REG, data=b"#!/bin/sh\n")]))
    config = Config(root=root, kver=kver, procfs=root)
    out = tmp_path / "uki.efi"
    options = uki_options(config, UkiInputs(kernel_image=kernel, cmdline="quiet"), environ={})
    build_uki(config, options, [initrd], out)
    assert main(["inspect", "--json", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["type"] == "uki" and d["cmdline"] == "quiet" and "/init" in d["initrd"]["files"]
    assert main(["inspect", str(out)]) == 0
    assert ".linux" in capsys.readouterr().out
