"""`mkosi-initrd addon NAME --cmdline TEXT [--initrd FILE] [--ucode FILE] -o NAME.addon.efi`: a UKI PE
addon on the root's `addon<arch>.efi.stub` (systemd-boot-efi), signed like the UKI (sign.py: the same
key, certificate and tool settings, uki.conf included).

systemd-stub (>= 254) loads `*.addon.efi` from `ESP/loader/addons/` and `<uki>.efi.extra.d/`, through
the firmware's LoadImage (so under Secure Boot an unsigned or tampered addon is refused), and takes
their `.cmdline` (appended to the UKI's), and from 257 on `.initrd` and `.ucode` too. An addon is the
stub plus those sections and an `.sbat` (ukify's default entry); never a `.linux`.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pefile

from mkosi_initrd import scratch
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.atomic import atomic_write
from mkosi_initrd.log import log
from mkosi_initrd.rootfs import resolve_in_root
from mkosi_initrd.scratch import ScratchDir
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki import sign
from mkosi_initrd.uki.assemble import merge_sbat
from mkosi_initrd.uki.pe import read_pe
from mkosi_initrd.uki.stub import STUB_DIR, check_stub, stub_version

ADDON_SBAT = (
    "uki-addon,1,UKI Addon,addon,1,https://www.freedesktop.org/software/systemd/man/latest/systemd-stub.html"
)
SECTIONS_SINCE = {".cmdline": 254, ".initrd": 257, ".ucode": 257}  # systemd-stub loads them since
SUFFIX = ".addon.efi"
MACHINE_ARCH = {"x86_64": "x64", "i686": "ia32", "aarch64": "aa64", "armv7l": "arm", "riscv64": "riscv64",
                "loongarch64": "loongarch64"}  # fmt: skip
CPIO_MAGIC = (b"070701", b"070702")
COMPRESSED_MAGIC = (b"\x28\xb5\x2f\xfd", b"\xfd7zXZ", b"\x1f\x8b", b"\x02\x21\x4c\x18", b"BZh")


@dataclass(frozen=True)
class AddonOptions:
    """An addon's inputs, resolved and checked (see `addon_options`)."""

    stub: Path
    output: Path
    cmdline: str | None = None
    initrd: Path | None = None
    ucode: Path | None = None
    signing: sign.SignConfig | None = None


def find_addon_stub(root: Path, explicit: Path | None = None, machine: str | None = None) -> Path:
    """--stub, else the root's addon<arch>.efi.stub for this machine's architecture."""
    if explicit is not None:
        if not explicit.is_file():
            raise InitrdError(f"addon stub {explicit} does not exist", hint="check --stub")
        return explicit
    machine = machine or platform.machine()
    arch = MACHINE_ARCH.get(machine)
    if arch is None:
        raise InitrdError(f"no systemd addon stub is known for {machine}", hint="pass --stub PATH")
    name = f"/{STUB_DIR}/addon{arch}.efi.stub"
    path = resolve_in_root(root, name)
    if not path.is_file():
        raise InitrdError(
            f"no addon stub in {root}: {name} is missing",
            hint="install systemd-boot-efi (Debian) / systemd-boot-unsigned (Fedora), systemd >= 254, "
            "in that root; or pass --stub PATH",
        )
    return path


def _check_cpio(path: Path, what: str, *, compressed: bool) -> Path:
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise InitrdError(f"cannot read the {what} {path}: {e.strerror}", hint=f"check --{what}") from e
    if head.startswith(CPIO_MAGIC) or (compressed and head.startswith(COMPRESSED_MAGIC)):
        return path
    kind = "a newc cpio (compressed or not)" if compressed else "an uncompressed newc cpio (early microcode)"
    raise InitrdError(f"the {what} {path} is not {kind}", hint=f"pass {kind} to --{what}")


def addon_version(stub: pefile.PE) -> int | None:
    """The systemd version of an addon stub (`systemd-addon 257...` in .sdmagic)."""
    magic = pemod.find_section(stub, ".sdmagic")
    if magic is None:
        return None
    text = bytes(magic.get_data())
    return stub_version(stub) if b"systemd-stub" in text else _version_after(text, b"systemd-addon ")


def _version_after(text: bytes, marker: bytes) -> int | None:
    start = text.find(marker)
    digits = text[start + len(marker) :].split(b".", 1)[0].split(b"-", 1)[0] if start >= 0 else b""
    return int(digits) if digits.isdigit() else None


def addon_options(
    root: Path,
    name: str,
    *,
    cmdline: str | None = None,
    initrd: Path | None = None,
    ucode: Path | None = None,
    output: Path | None = None,
    stub: Path | None = None,
    key: Path | None = None,
    cert: Path | None = None,
    tool: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> AddonOptions:
    """Everything checked before anything is written: the name, the stub (unsigned, new enough for the
    sections asked for), the files, the signing setup."""
    if not name or "/" in name or name.startswith("."):
        raise InitrdError(
            f"addon name {name!r}: a file name is needed", hint="e.g. `mkosi-initrd addon debug`"
        )
    cmdline = " ".join(cmdline.split()) if cmdline is not None else None
    if not cmdline and initrd is None and ucode is None:
        raise InitrdError(f"addon {name}: nothing to put in it", hint="give --cmdline, --initrd or --ucode")
    output = output or Path(f"{name.removesuffix(SUFFIX)}{SUFFIX}")
    if not output.name.endswith(SUFFIX):
        log.warning("%s: systemd-stub loads only files named *%s", output, SUFFIX)
    stub_path = find_addon_stub(root, stub)
    check_stub(stub_path)
    _, stub_pe = read_pe(stub_path, "addon stub")
    if pemod.find_section(stub_pe, ".linux") is not None:
        raise InitrdError(
            f"addon stub {stub_path} is a UKI", hint="use addon<arch>.efi.stub (systemd-boot-efi)"
        )
    version = addon_version(stub_pe)
    wanted = [s for s, v in ((".cmdline", cmdline), (".initrd", initrd), (".ucode", ucode)) if v]
    for section in wanted:
        if version is not None and version < SECTIONS_SINCE[section]:
            raise InitrdError(
                f"addon stub {stub_path} is systemd {version}: systemd-stub loads {section} from addons "
                f"only since systemd {SECTIONS_SINCE[section]}",
                hint="update systemd-boot-efi, or leave that section out",
            )
    return AddonOptions(
        stub=stub_path,
        output=output,
        cmdline=cmdline or None,
        initrd=_check_cpio(initrd, "initrd", compressed=True) if initrd else None,
        ucode=_check_cpio(ucode, "ucode", compressed=False) if ucode else None,
        signing=sign.resolve_signing(root, key=key, cert=cert, tool=tool, environ=environ),
    )


def addon_sections(options: AddonOptions, stub: pefile.PE) -> list[pemod.Section]:
    sections = []
    if options.cmdline:
        sections.append(pemod.Section.of(".cmdline", options.cmdline.encode() + b"\0"))
    if options.initrd is not None:
        sections.append(pemod.Section(".initrd", (options.initrd,)))
    if options.ucode is not None:
        sections.append(pemod.Section(".ucode", (options.ucode,)))
    sections.append(pemod.Section.of(".sbat", merge_sbat(stub, extra=(ADDON_SBAT,))))
    return sections


def build_addon(options: AddonOptions) -> None:
    """Write the addon to options.output atomically, signed when options.signing says so."""
    stub_data, stub = read_pe(options.stub, "addon stub")
    sections = addon_sections(options, stub)
    what = f"addon stub {options.stub}"
    if options.signing is None:
        with atomic_write(options.output) as out:
            pemod.add_sections(stub_data, sections, out, what)
        log.info("wrote unsigned addon %s", options.output)
        return
    with ScratchDir(scratch.SIGN) as tmp:
        unsigned, signed = tmp / "addon.unsigned.efi", tmp / "addon.signed.efi"
        with open(unsigned, "wb") as out:
            pemod.add_sections(stub_data, sections, out, what)
        sign.sign_file(options.signing, unsigned, signed)
        with atomic_write(options.output) as out, open(signed, "rb") as src:
            shutil.copyfileobj(src, out)
    log.info("wrote addon %s signed with %s", options.output, options.signing.cert)
