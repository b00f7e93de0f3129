"""systemd-stub, the EFI program a UKI is built on: found for the kernel's architecture (or given),
checked to be unsigned (the UKI is signed as a whole), and its version (what sections it knows)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pefile

from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.rootfs import resolve_in_root
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki.pe import read_pe

STUB_DIR = "usr/lib/systemd/boot/efi"


# PE machine → EFI architecture suffix of systemd's stubs (linux{arch}.efi.stub).
EFI_ARCH = {0x8664: "x64", 0x14C: "ia32", 0xAA64: "aa64", 0x1C2: "arm", 0x1C4: "arm", 0x5064: "riscv64",
            0x6264: "loongarch64"}  # fmt: skip


def efi_arch(kernel: pefile.PE, path: Path) -> str:
    machine = kernel.FILE_HEADER.Machine
    if machine not in EFI_ARCH:
        raise InitrdError(
            f"kernel image {path} is for PE machine {machine:#x}, for which no systemd-stub is known",
            hint="pass --stub PATH",
        )
    return EFI_ARCH[machine]


def find_stub(config: Config, arch: str, stub: Path | None, environ: Mapping[str, str]) -> Path:
    """--stub, else $KERNEL_INSTALL_BOOT_STUB, else the root's stub for the kernel's arch, else the host's
    (a root built for tests rarely ships systemd-boot)."""
    explicit = stub or (
        Path(environ["KERNEL_INSTALL_BOOT_STUB"]) if environ.get("KERNEL_INSTALL_BOOT_STUB") else None
    )
    if explicit is not None:
        if not explicit.is_file():
            raise InitrdError(
                f"systemd-stub {explicit} does not exist", hint="check --stub / KERNEL_INSTALL_BOOT_STUB"
            )
        return explicit
    name = f"{STUB_DIR}/linux{arch}.efi.stub"
    for path in (resolve_in_root(config.root, name), Path("/") / name):
        if path.is_file():
            return path
    raise InitrdError(
        f"no systemd-stub for {arch}: /{name} is missing",
        hint="install systemd-boot-efi (Debian) / systemd-boot-unsigned (Fedora), or pass --stub PATH",
    )


def check_stub(path: Path) -> None:
    data, stub = read_pe(path, "systemd-stub")
    if pemod.is_signed(stub):
        raise InitrdError(
            f"systemd-stub {path} is signed; a UKI is built on the unsigned stub and signed as a whole",
            hint="use the unsigned linux*.efi.stub (systemd-boot-efi / systemd-boot-unsigned)",
        )


def stub_version(stub: pefile.PE) -> int | None:
    magic = pemod.find_section(stub, ".sdmagic")
    m = re.search(rb"systemd-stub (\d+)", magic.get_data()) if magic is not None else None
    return int(m.group(1)) if m else None
