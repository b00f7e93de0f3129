"""Unified Kernel Image: systemd-stub + .osrel .cmdline [.dtb] .uname [.splash] .initrd [.ucode] .linux .sbat

Section order and alignment follow ukify (see pe.py for the PE rules). The `.linux` bytes are the kernel
file's bytes, unchanged, so a distro signature inside stays valid; only when signing is configured and
the kernel is unsigned (or SignKernel=yes) is a signed copy put there instead.
All inputs are resolved and checked by `options.uki_options()` before the (slow) initrd build starts,
so a configuration error never leaves output behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pefile

from mkosi_initrd import scratch
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.atomic import atomic_write
from mkosi_initrd.log import log
from mkosi_initrd.scratch import ScratchDir
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki import sign
from mkosi_initrd.uki.options import UkiOptions
from mkosi_initrd.uki.pe import read_pe
from mkosi_initrd.uki.stub import stub_version

UKI_SBAT = "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/"
SBAT_HEADER = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md"
UCODE_SINCE = 256  # systemd-stub learned the .ucode section in v256; older stubs get microcode in .initrd


# --- resolving the inputs -------------------------------------------------------------------------


# --- assembling ------------------------------------------------------------------------------------


def merge_sbat(*pes: pefile.PE, extra: Sequence[str] = (UKI_SBAT,)) -> bytes:
    """One header line, then the entries of every input's .sbat, then ours; NUL-terminated."""
    lines = [SBAT_HEADER]
    for pe in pes:
        section = pemod.find_section(pe, ".sbat")
        if section is None:
            continue
        text = section.get_data().split(b"\0", 1)[0].decode("utf-8", "replace")
        entries = [line for line in text.splitlines() if line.strip()]
        if not entries or not entries[0].startswith("sbat,"):
            log.warning("ignoring a .sbat section without the sbat header line")
            continue
        lines += [e for e in entries[1:] if e not in lines]
    lines += [e for e in extra if e not in lines]
    return ("\n".join(lines) + "\n\0").encode()


def initrd_chunks(parts: Sequence[Path]) -> tuple[pemod.Chunk, ...]:
    """The files in order, each padded to 4 bytes (the kernel looks for cpio magic at 4-byte boundaries)."""
    chunks: list[pemod.Chunk] = []
    for path in parts:
        chunks.append(path)
        chunks.append(bytes(-pemod.chunk_size(path) % 4))
    return tuple(chunks)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InitrdError(f"cannot read {what} {path}: {e.strerror}") from e


def kernel_is_signed(path: Path) -> bool:
    return pemod.is_signed(read_pe(path, "kernel image")[1])


def _sections(
    options: UkiOptions, stub: pefile.PE, kernel_path: Path, initrds: Sequence[Path], microcode: Path | None
) -> list[pemod.Section]:
    kernel = pefile.PE(str(kernel_path), fast_load=True)  # mmap: only the headers and .sbat are read
    version = stub_version(stub)
    ucode_section = microcode is not None and version is not None and version >= UCODE_SINCE
    initrd_parts = list(initrds) if ucode_section or microcode is None else [microcode, *initrds]
    sections = []
    if options.os_release is not None:
        sections.append(pemod.Section.of(".osrel", _read(options.os_release, "os-release")))
    if options.cmdline:
        sections.append(pemod.Section.of(".cmdline", options.cmdline.encode() + b"\0"))
    if options.devicetree is not None:
        sections.append(pemod.Section(".dtb", (options.devicetree,)))
    sections.append(pemod.Section.of(".uname", options.uname.encode()))
    if options.splash is not None:
        sections.append(pemod.Section(".splash", (options.splash,)))
    sections.append(pemod.Section(".initrd", initrd_chunks(initrd_parts)))
    if ucode_section and microcode is not None:
        sections.append(pemod.Section(".ucode", (microcode,)))
    size_of_image = kernel.OPTIONAL_HEADER.SizeOfImage
    sections.append(pemod.Section(".linux", (kernel_path,), virtual_size=size_of_image, code=True))
    sections.append(pemod.Section.of(".sbat", merge_sbat(stub, kernel)))
    kernel.close()
    return sections


def build_uki(
    config: Config, options: UkiOptions, initrds: list[Path], output: Path, *, microcode: Path | None = None
) -> None:
    """Write the UKI to `output` atomically (signed when options.signing says so).

    `initrds` go into .initrd in order; `microcode` (an uncompressed early cpio) becomes .ucode where the
    stub supports it, else the first part of .initrd.
    """
    stub_data, stub = read_pe(options.stub, "systemd-stub")
    for path in [*initrds, *([microcode] if microcode else [])]:
        if not path.is_file():
            raise InitrdError(f"initrd {path} does not exist")
    what = f"systemd-stub {options.stub}"
    if options.signing is None:
        # Straight into the output's atomic temp file: nothing else touches the disk.
        sections = _sections(options, stub, options.kernel_image, initrds, microcode)
        with atomic_write(output) as out:
            pemod.add_sections(stub_data, sections, out, what)
        log.info("wrote unsigned UKI %s", output)
        return
    # The signing tools work on named files: those live in a private scratch directory.
    with ScratchDir(scratch.SIGN) as tmp:
        kernel_path = _kernel_for_linux_section(options.signing, options.kernel_image, tmp)
        sections = _sections(options, stub, kernel_path, initrds, microcode)
        unsigned = tmp / "uki.unsigned.efi"
        with open(unsigned, "wb") as out:
            pemod.add_sections(stub_data, sections, out, what)
        signed = tmp / "uki.signed.efi"
        sign.sign_file(options.signing, unsigned, signed)
        with atomic_write(output) as out, open(signed, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        log.info("wrote UKI %s signed with %s", output, options.signing.cert)


def _kernel_for_linux_section(cfg: sign.SignConfig, kernel: Path, tmp: Path) -> Path:
    """The kernel file whose bytes go into .linux: the input, or a signed copy when that is wanted."""
    if cfg.sign_kernel is False:
        return kernel
    if cfg.sign_kernel is None and kernel_is_signed(kernel):
        log.debug("%s is signed already: .linux keeps its bytes", kernel)
        return kernel
    signed = tmp / "linux.signed"
    sign.sign_file(cfg, kernel, signed)
    return signed


# --- inspecting ------------------------------------------------------------------------------------
