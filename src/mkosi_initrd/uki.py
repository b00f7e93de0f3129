"""Unified Kernel Image: systemd-stub + .osrel .cmdline [.dtb] .uname [.splash] .initrd [.ucode] .linux .sbat

Section order and alignment follow ukify (see pe.py for the PE rules). The `.linux` bytes are the kernel
file's bytes, unchanged, so a distro signature inside stays valid; only when signing is configured and
the kernel is unsigned (or SignKernel=yes) is a signed copy put there instead.
All inputs are resolved and checked by `uki_options()` before the (slow) initrd build starts, so a
configuration error never leaves output behind.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pefile

from mkosi_initrd import cpioread, osrelease, scratch, sign
from mkosi_initrd import pe as pemod
from mkosi_initrd.atomic import atomic_write
from mkosi_initrd.config import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.log import log
from mkosi_initrd.rootfs import resolve_in_root
from mkosi_initrd.scratch import ScratchDir

STUB_DIR = "usr/lib/systemd/boot/efi"
# PE machine → EFI architecture suffix of systemd's stubs (linux{arch}.efi.stub).
EFI_ARCH = {0x8664: "x64", 0x14C: "ia32", 0xAA64: "aa64", 0x1C2: "arm", 0x1C4: "arm", 0x5064: "riscv64",
            0x6264: "loongarch64"}  # fmt: skip
UKI_SBAT = "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/"
SBAT_HEADER = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md"
UCODE_SINCE = 256  # systemd-stub learned the .ucode section in v256; older stubs get microcode in .initrd
CMDLINE_FILES = ("etc/kernel/cmdline", "usr/lib/kernel/cmdline")
KNOWN_SECTIONS = (".osrel", ".cmdline", ".dtb", ".uname", ".splash", ".initrd", ".ucode", ".linux", ".sbat")


@dataclass(frozen=True)
class UkiOptions:
    """Everything a UKI needs besides the initrd, resolved and checked (see `uki_options`)."""

    kernel_image: Path
    stub: Path
    cmdline: str
    uname: str
    os_release: Path | None = None
    splash: Path | None = None
    devicetree: Path | None = None
    signing: sign.SignConfig | None = None


# --- resolving the inputs -------------------------------------------------------------------------


def default_kernel_image(config: Config) -> Path:
    """/usr/lib/modules/KVER/vmlinuz (Fedora, Arch, ...) or /boot/vmlinuz-KVER (Debian) in the root."""
    candidates = [f"usr/lib/modules/{config.kver}/vmlinuz", f"boot/vmlinuz-{config.kver}"]
    for c in candidates:
        path = resolve_in_root(config.root, c)
        if path.is_file():
            return path
    raise InitrdError(
        f"no kernel image for {config.kver} in {config.root} (looked for /{' and /'.join(candidates)})",
        hint="pass --kernel-image PATH",
    )


def _read_pe(path: Path, what: str) -> tuple[bytes, pefile.PE]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InitrdError(f"cannot read {what} {path}: {e.strerror}", hint="check the path") from e
    return data, pemod.parse(data, f"{what} {path}")


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


def detect_uname(kernel: bytes) -> str | None:
    """The kernel release from the x86 boot header, or from a 'Linux version' banner in the image."""
    if kernel[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", kernel, 0x206)[0] >= 0x200:
        offset = struct.unpack_from("<H", kernel, 0x20E)[0] + 0x200
        end = kernel.find(b"\0", offset, offset + 256)
        if offset < len(kernel) and end > offset:
            words = kernel[offset:end].decode("ascii", "replace").split()
            if words:
                return words[0]
    m = re.search(rb"Linux version (\S+) \(", kernel)  # uncompressed images (arm64 Image, ...)
    return m.group(1).decode("ascii", "replace") if m else None


def _clean_cmdline(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return " ".join(" ".join(lines).split())


def find_cmdline(config: Config, environ: Mapping[str, str]) -> str:
    """kernel-install's order: $KERNEL_INSTALL_CONF_ROOT/cmdline or /etc/kernel/cmdline,
    /usr/lib/kernel/cmdline, else /proc/cmdline without BOOT_IMAGE= and initrd=.

    /proc/cmdline describes the running machine: for a --root other than / (a sysroot, an image
    being built) it is never used, so a missing file stops the build instead of embedding the build
    machine's command line in a UKI for another one."""
    conf_root = environ.get("KERNEL_INSTALL_CONF_ROOT")
    files = (
        [Path(conf_root) / "cmdline"]
        if conf_root
        else [resolve_in_root(config.root, f) for f in CMDLINE_FILES]
    )
    for path in files:
        if path.is_file():
            log.debug("kernel command line from %s", path)
            return _clean_cmdline(path.read_text())
    if os.path.realpath(config.root) != "/":
        tried = " and ".join(map(str, files)) + (" do not exist" if len(files) > 1 else " does not exist")
        raise InitrdError(
            f"no kernel command line for the UKI: {tried} "
            f"(the running machine's /proc/cmdline is not used for --root {config.root})",
            hint=f"write the target's command line to {files[0]}, or pass --cmdline",
        )
    try:
        words = (config.procfs / "cmdline").read_text().split()
    except OSError:
        return ""
    return " ".join(w for w in words if not w.startswith(("BOOT_IMAGE=", "initrd=")))


def find_os_release(config: Config, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise InitrdError(f"os-release file {explicit} does not exist", hint="check --os-release")
        return explicit
    for name in ("etc/os-release", "usr/lib/os-release"):
        path = resolve_in_root(config.root, name)
        if path.is_file():
            return path
    log.warning("no os-release in %s: the UKI gets no .osrel section", config.root)
    return None


def _optional_file(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise InitrdError(f"{what} {path} does not exist", hint=f"check --{what}")
    return path


def uki_options(
    config: Config,
    *,
    kernel_image: Path | None = None,
    cmdline: str | None = None,
    stub: Path | None = None,
    os_release: Path | None = None,
    splash: Path | None = None,
    devicetree: Path | None = None,
    secureboot_private_key: Path | None = None,
    secureboot_certificate: Path | None = None,
    signtool: str | None = None,
    sign_kernel: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> UkiOptions:
    env = os.environ if environ is None else environ
    kernel_path = kernel_image or default_kernel_image(config)
    kernel_data, kernel = _read_pe(kernel_path, "kernel image")
    if pemod.find_section(kernel, ".linux") is not None:
        raise InitrdError(
            f"kernel image {kernel_path} is a unified kernel image already",
            hint="pass the plain kernel (vmlinuz) with --kernel-image",
        )
    uname = detect_uname(kernel_data)
    if uname is not None and config.kver and uname != config.kver:
        raise InitrdError(
            f"kernel image {kernel_path} is version {uname}, but the initrd is built for {config.kver}",
            hint=f"pass -k {uname}, or the kernel image of {config.kver}",
        )
    stub_path = find_stub(config, efi_arch(kernel, kernel_path), stub, env)
    _check_stub(stub_path)
    signing = sign.resolve_signing(
        config.root,
        key=secureboot_private_key,
        cert=secureboot_certificate,
        tool=signtool,
        sign_kernel=sign_kernel,
        environ=env,
    )
    return UkiOptions(
        kernel_image=kernel_path,
        stub=stub_path,
        cmdline=cmdline.strip() if cmdline is not None else find_cmdline(config, env),
        uname=uname or config.kver,
        os_release=find_os_release(config, os_release),
        splash=_optional_file(splash, "splash"),
        devicetree=_optional_file(devicetree, "devicetree"),
        signing=signing,
    )


def options_from_args(config: Config, args: Any, environ: Mapping[str, str] | None = None) -> UkiOptions:
    """cli.py's UKI flags → UkiOptions (flags the namespace lacks count as unset)."""

    def get(name: str) -> Any:
        return getattr(args, name, None)

    return uki_options(
        config,
        kernel_image=get("kernel_image"),
        cmdline=get("cmdline"),
        stub=get("stub"),
        os_release=get("os_release"),
        splash=get("splash"),
        devicetree=get("devicetree"),
        secureboot_private_key=get("secureboot_private_key"),
        secureboot_certificate=get("secureboot_certificate"),
        signtool=get("signtool"),
        sign_kernel=get("sign_kernel"),
        environ=environ,
    )


def _check_stub(path: Path) -> None:
    data, stub = _read_pe(path, "systemd-stub")
    if pemod.is_signed(stub):
        raise InitrdError(
            f"systemd-stub {path} is signed; a UKI is built on the unsigned stub and signed as a whole",
            hint="use the unsigned linux*.efi.stub (systemd-boot-efi / systemd-boot-unsigned)",
        )


def stub_version(stub: pefile.PE) -> int | None:
    magic = pemod.find_section(stub, ".sdmagic")
    m = re.search(rb"systemd-stub (\d+)", magic.get_data()) if magic is not None else None
    return int(m.group(1)) if m else None


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
    return pemod.is_signed(_read_pe(path, "kernel image")[1])


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
    stub_data, stub = _read_pe(options.stub, "systemd-stub")
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


def is_uki(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"MZ":
                return False
        pe = pefile.PE(str(path), fast_load=True)
    except (OSError, pefile.PEFormatError):
        return False
    return pemod.find_section(pe, ".linux") is not None


def _text(section: pefile.SectionStructure | None) -> str | None:
    if section is None:
        return None
    # The raw data, not just VirtualSize bytes: a merged .sbat may be longer than its capped VirtualSize.
    data: bytes = section.get_data()
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def describe(path: Path) -> dict[str, Any]:
    """What a UKI holds: sections, cmdline, os-release, uname, SBAT, signatures, the initrd's files."""
    data, pe = _read_pe(path, "UKI")
    if pemod.find_section(pe, ".linux") is None:
        raise InitrdError(f"{path} is a PE image without a .linux section, not a UKI")
    sections = [
        {
            "name": pemod.section_name(s),
            "virtual_address": s.VirtualAddress,
            "virtual_size": s.Misc_VirtualSize,
            "file_offset": s.PointerToRawData,
            "file_size": s.SizeOfRawData,
        }
        for s in pe.sections
    ]

    def payload(name: str) -> bytes:
        s = pemod.find_section(pe, name)
        return bytes(s.get_data()[: s.Misc_VirtualSize]) if s is not None else b""

    linux = payload(".linux")
    linux_pe = pemod.parse(linux, f".linux of {path}") if linux else None
    osrel = _text(pemod.find_section(pe, ".osrel"))
    sbat = _text(pemod.find_section(pe, ".sbat"))
    version = stub_version(pe)
    return {
        "path": str(path),
        "type": "uki",
        "size": len(data),
        "signed": pemod.is_signed(pe),
        "signers": pemod.signer_subjects(pe, data),
        "stub_version": version,
        "sections": sections,
        "cmdline": _text(pemod.find_section(pe, ".cmdline")),
        "uname": _text(pemod.find_section(pe, ".uname")),
        "osrel": osrelease.parse(osrel) if osrel is not None else None,
        "sbat": sbat.splitlines() if sbat else [],
        "linux": {
            "size": len(linux),
            "signed": bool(linux_pe and pemod.is_signed(linux_pe)),
            "signers": pemod.signer_subjects(linux_pe, linux) if linux_pe else [],
        },
        "initrd": _describe_initrd(payload(".initrd")),
        "ucode": _describe_initrd(payload(".ucode")) if pemod.find_section(pe, ".ucode") else None,
    }


def _describe_initrd(data: bytes) -> dict[str, Any]:
    if not data:
        return {"size": 0, "segments": [], "files": []}
    # cpioread reads files; a section is small enough to pass through a temp file.
    with tempfile.NamedTemporaryFile(prefix="mkosi-initrd-uki-") as f:
        f.write(data)
        f.flush()
        try:
            segments, _ = cpioread.read_segments(Path(f.name))
        except InitrdError as e:  # an unreadable initrd should not hide the rest of the UKI
            return {"size": len(data), "segments": [], "files": [], "error": e.message}
    return {
        "size": len(data),
        "segments": [
            {"offset": s.offset, "compression": s.compression, "files": len(s.members)} for s in segments
        ],
        "files": [m.path for m in cpioread.iter_members(segments)],
    }


def format_description(d: Mapping[str, Any], list_files: bool = False) -> str:
    """Human-readable `mkosi-initrd inspect` output for a UKI."""
    signed = f"signed by {'; '.join(d['signers']) or '?'}" if d["signed"] else "unsigned"
    out = [f"{d['path']}: UKI, {d['size']} bytes, {signed}"]
    if d.get("stub_version"):
        out.append(f"  stub: systemd-stub {d['stub_version']}")
    out.append(f"  uname: {d['uname']}")
    out.append(f"  cmdline: {d['cmdline']}")
    if d.get("osrel"):
        out.append(f"  osrel: {d['osrel'].get('PRETTY_NAME') or d['osrel'].get('NAME', '?')}")
    kernel_signers = "; ".join(d["linux"].get("signers", [])) or "?"
    signed_kernel = f"signed by {kernel_signers}" if d["linux"]["signed"] else "unsigned"
    out.append(f"  kernel: {d['linux']['size']} bytes, {signed_kernel}")
    out.append("  sections:")
    for s in d["sections"]:
        out.append(
            f"    {s['name']:<9} vma {s['virtual_address']:#010x} size {s['virtual_size']:>10}"
            f"  file {s['file_offset']:#010x} +{s['file_size']}"
        )
    out.append("  sbat:")
    out += [f"    {line}" for line in d["sbat"]]
    for key in ("ucode", "initrd"):
        part = d.get(key)
        if not part:
            continue
        segs = ", ".join(f"{s['compression']} ({s['files']} files)" for s in part["segments"])
        segs = f"unreadable: {part['error']}" if part.get("error") else segs
        out.append(f"  {key}: {part['size']} bytes: {segs or 'empty'}")
        if list_files:
            out += [f"    {name}" for name in part["files"]]
    return "\n".join(out) + "\n"
