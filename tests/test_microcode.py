"""Early microcode cpio: all blobs in generic mode, only the host CPU's in host-only mode."""

from __future__ import annotations

import lzma
from pathlib import Path

from fixtures.host import FakeHost
from mkosi_initrd.config.model import Config
from mkosi_initrd.host.cpu import host_cpu
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.image.microcode import microcode_cpio


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    amd = root / "usr/lib/firmware/amd-ucode"
    intel = root / "usr/lib/firmware/intel-ucode"
    amd.mkdir(parents=True)
    intel.mkdir(parents=True)
    (amd / "microcode_amd.bin").write_bytes(b"AMD-OLD")
    (amd / "microcode_amd_fam17h.bin").write_bytes(b"AMD-17")
    (amd / "microcode_amd_fam19h.bin.xz").write_bytes(lzma.compress(b"AMD-19", check=lzma.CHECK_CRC32))
    (amd / "microcode_amd_fam19h.bin.asc").write_bytes(b"signature, not microcode")
    (intel / "06-55-04").write_bytes(b"INTEL-55")
    (intel / "06-8e-09").write_bytes(b"INTEL-8E")
    (root / "lib").symlink_to("usr/lib")
    return root


def _procfs(tmp_path: Path, vendor: str, family: int, model: int, stepping: int) -> Path:
    host = FakeHost(tmp_path, f"-{vendor}-{family}")
    host.cpu(vendor, family, model, stepping)
    return host.procfs


def _blobs(tmp_path: Path, data: bytes) -> dict[str, bytes]:
    f = tmp_path / "early.cpio"
    f.write_bytes(data)
    segments, contents = read_segments(f, want=lambda p: p.startswith("/kernel/x86/microcode/"))
    assert [s.compression for s in segments] == ["none"]
    names = [m.path for m in segments[0].members]
    assert names[:3] == ["/kernel", "/kernel/x86", "/kernel/x86/microcode"]
    return {k.rsplit("/", 1)[1]: v for k, v in contents.items()}


def test_generic_carries_every_blob_of_both_vendors(tmp_path: Path) -> None:
    cfg = Config(root=_root(tmp_path), generic=True, procfs=_procfs(tmp_path, "GenuineIntel", 6, 0x55, 4))
    data = microcode_cpio(cfg)
    assert data is not None
    assert _blobs(tmp_path, data) == {
        "AuthenticAMD.bin": b"AMD-OLD" + b"AMD-17" + b"AMD-19",
        "GenuineIntel.bin": b"INTEL-55" + b"INTEL-8E",
    }


def test_host_only_amd_takes_the_family_container(tmp_path: Path) -> None:
    cfg = Config(root=_root(tmp_path), procfs=_procfs(tmp_path, "AuthenticAMD", 25, 17, 1))
    data = microcode_cpio(cfg)
    assert data is not None
    assert _blobs(tmp_path, data) == {"AuthenticAMD.bin": b"AMD-19"}


def test_host_only_intel_takes_the_family_model_stepping_file(tmp_path: Path) -> None:
    cfg = Config(root=_root(tmp_path), procfs=_procfs(tmp_path, "GenuineIntel", 6, 0x8E, 9))
    data = microcode_cpio(cfg)
    assert data is not None
    assert _blobs(tmp_path, data) == {"GenuineIntel.bin": b"INTEL-8E"}


def test_no_microcode_when_none_is_installed_disabled_or_the_cpu_is_unknown(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    procfs = _procfs(tmp_path, "AuthenticAMD", 25, 17, 1)
    assert microcode_cpio(Config(root=empty, generic=True, procfs=procfs)) is None
    assert microcode_cpio(Config(root=_root(tmp_path), generic=True, microcode=False)) is None
    arm = FakeHost(tmp_path, "-arm")
    arm.cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")
    assert host_cpu(arm.procfs) is None
    assert microcode_cpio(Config(root=tmp_path / "root", procfs=arm.procfs)) is None


def test_the_early_cpio_is_reproducible(tmp_path: Path) -> None:
    cfg = Config(root=_root(tmp_path), generic=True)
    first = microcode_cpio(cfg, mtime=5)
    assert first is not None and len(_blobs(tmp_path, first)) == 2  # both vendors' blobs
    assert microcode_cpio(cfg, mtime=5) == first
    assert microcode_cpio(cfg, mtime=6) != first  # the mtime is in it: same input, same bytes
