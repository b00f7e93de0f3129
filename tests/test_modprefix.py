"""A compressed module's .modinfo from the start of its decoded stream (kernel/modprefix.py), held
to the reading by section headers on real modules: every module of the Debian 13 kernel (.ko.xz), and
the host kernel's modules compressed here with xz, zstd and gzip as kernels ship them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.kernel import HostKernel
from fixtures.trixie import TrixieRoot
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel.modinfo import ModInfo, decompress, modinfo_section, parse_modinfo, read_modinfo
from mkosi_initrd.kernel.modprefix import decoded_chunks, modinfo_from, modinfo_run, prefix_modinfo
from prereq import require_program

# (tool, suffix, arguments): what the kernel's Makefile.modinst and the distributions use.
COMPRESSORS = (
    ("xz", ".xz", ["--check=crc32", "--lzma2=dict=1MiB"]),
    ("zstd", ".zst", ["-q", "-19"]),
    ("gzip", ".gz", ["-n", "-9"]),
)


def _name(path: Path) -> str:
    return path.name.split(".ko", 1)[0].replace("-", "_")


def _by_headers(path: Path) -> ModInfo:
    return parse_modinfo(modinfo_section(decompress(path.read_bytes())))


@pytest.mark.slow  # ~1 min: every module decoded whole too
def test_every_trixie_module_reads_the_same_from_its_prefix_as_by_its_headers(trixie: TrixieRoot) -> None:
    files = sorted(trixie.modules.rglob("*.ko.xz"))
    assert len(files) > 4000
    found = 0
    for path in files:
        raw = prefix_modinfo(path.read_bytes(), _name(path))
        if raw is not None:
            found += 1
            assert parse_modinfo(raw) == _by_headers(path), path
    assert found == len(files)  # none needed the whole module


def test_the_prefix_is_decoded_only_until_modinfo_is_complete(trixie: TrixieRoot) -> None:
    path = next(trixie.modules.rglob("ext4.ko.xz"))
    data = path.read_bytes()
    total = len(decompress(data))
    used: list[int] = []

    def counted() -> Iterator[bytes]:
        for chunk in decoded_chunks(data):
            used.append(len(chunk))
            yield chunk

    raw = modinfo_from(counted(), "ext4")
    assert raw is not None and parse_modinfo(raw) == _by_headers(path)
    assert b"name=ext4\0" in raw and raw.endswith(b"\0")
    assert sum(used) < total / 4, (sum(used), total)


@pytest.fixture(scope="module")
def host_modules(host_kernel: HostKernel, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Host modules with firmware=, softdep= and weakdep-free ones, and the biggest few."""
    moddir = Path("/usr/lib/modules") / host_kernel.kver
    kos = sorted(moddir.rglob("*.ko"))
    assert kos, f"{moddir} has no uncompressed modules"
    with_fw = [p for p in kos if read_modinfo(p).firmware][:15]
    with_softdep = [p for p in kos if read_modinfo(p).softdep_pre or read_modinfo(p).softdep_post][:10]
    biggest = sorted(kos, key=lambda p: p.stat().st_size)[-3:]
    chosen = list(dict.fromkeys([*with_fw, *with_softdep, *biggest, *kos[:20]]))
    assert with_fw and with_softdep
    out = tmp_path_factory.mktemp("modules")
    for p in chosen:
        shutil.copyfile(p, out / p.name)
    return sorted(out.iterdir())


@pytest.mark.parametrize(("tool", "suffix", "args"), COMPRESSORS, ids=[c[0] for c in COMPRESSORS])
def test_host_modules_compressed_read_as_uncompressed(
    host_modules: list[Path], tmp_path: Path, tool: str, suffix: str, args: list[str]
) -> None:
    require_program(tool, tool if tool != "xz" else "xz-utils")
    for ko in host_modules:
        packed = tmp_path / (ko.name + suffix)
        packed.write_bytes(
            subprocess.run([tool, *args, "-c", str(ko)], capture_output=True, check=True).stdout
        )
        assert prefix_modinfo(packed.read_bytes(), _name(ko)) is not None, packed
        assert read_modinfo(packed) == read_modinfo(ko), packed


def test_an_elf_without_modinfo_is_read_whole_and_has_none(tmp_path: Path) -> None:
    packed = tmp_path / "true.ko.xz"
    packed.write_bytes(subprocess.run(["xz", "-c", "/bin/true"], capture_output=True, check=True).stdout)
    assert prefix_modinfo(packed.read_bytes(), "true") is None
    assert read_modinfo(packed) == ModInfo()


def test_a_module_of_another_name_is_read_by_its_headers(host_modules: list[Path], tmp_path: Path) -> None:
    ko = host_modules[0]
    packed = tmp_path / "renamed.ko.xz"
    packed.write_bytes(subprocess.run(["xz", "-c", str(ko)], capture_output=True, check=True).stdout)
    assert prefix_modinfo(packed.read_bytes(), "renamed") is None
    assert read_modinfo(packed) == read_modinfo(ko)


def test_a_truncated_compressed_module_is_a_user_error(host_modules: list[Path], tmp_path: Path) -> None:
    ko = max(host_modules, key=lambda p: p.stat().st_size)
    data = subprocess.run(["xz", "-c", str(ko)], capture_output=True, check=True).stdout
    cut = tmp_path / ko.name.replace(".ko", "-cut.ko.xz")
    cut.write_bytes(data[:200])
    with pytest.raises(InitrdError, match="cannot read kernel module"):
        read_modinfo(cut)


def test_the_run_spans_padding_longer_than_a_scan_block_and_stops_at_binary_neighbours() -> None:
    zeros = bytes(3 * 4096 + 17)  # longer than the block the NUL scans step by
    section = b"license=GPL\0" + zeros + b"firmware=a.bin\0\0\0vermagic=6.12 SMP\0" + zeros + b"name=m\0"
    buf = b"\x01\x02binary" + zeros + section + zeros + b"\x7fELF\x03" + zeros
    run = modinfo_run(buf, complete=True)
    assert run == section.strip(b"\0") + b"\0"
    assert parse_modinfo(run).firmware == ("a.bin",)
    # Cut inside the trailing zeros, the run may still go on: decode more.
    assert modinfo_run(buf[: len(buf) - len(zeros) - 8], complete=False) is None
    assert modinfo_run(buf[: buf.index(b"name=m") + 3], complete=False) is None


def test_a_section_glued_to_its_binary_neighbour_keeps_its_first_string() -> None:
    buf = b"\x00\x00\x13\x37junklicense=GPL\0vermagic=6.12\0name=m\0\x00\x00\xff\xfe"
    assert modinfo_run(buf, complete=True) == b"license=GPL\0vermagic=6.12\0name=m\0"
