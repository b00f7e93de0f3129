"""What a UKI is made of besides the initrd, resolved and checked before the (slow) initrd build starts,
so a configuration error never leaves output behind: the kernel image (and that it is the initrd's
kernel version), the stub, the command line (kernel-install's order), os-release, splash, devicetree
and the Secure Boot signing configuration (sign.py)."""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkosi_initrd.config.model import Config
from mkosi_initrd.config.settings import Values
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.log import log
from mkosi_initrd.rootfs import resolve_in_root
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki import sign
from mkosi_initrd.uki.pe import read_pe
from mkosi_initrd.uki.stub import check_stub, efi_arch, find_stub

CMDLINE_FILES = ("etc/kernel/cmdline", "usr/lib/kernel/cmdline")


@dataclass(frozen=True)
class UkiInputs:
    """What the command line asks for (each field is the setting of the same name, config/settings.py);
    None: found the default way (see `uki_options`)."""

    kernel_image: Path | None = None
    cmdline: str | None = None
    stub: Path | None = None
    os_release: Path | None = None
    splash: Path | None = None
    devicetree: Path | None = None
    secureboot_private_key: Path | None = None
    secureboot_certificate: Path | None = None
    signtool: str | None = None
    sign_kernel: bool | None = None


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
    config: Config, inputs: UkiInputs = UkiInputs(), environ: Mapping[str, str] | None = None
) -> UkiOptions:
    env = os.environ if environ is None else environ
    kernel_path = inputs.kernel_image or default_kernel_image(config)
    kernel_data, kernel = read_pe(kernel_path, "kernel image")
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
    stub_path = find_stub(config, efi_arch(kernel, kernel_path), inputs.stub, env)
    check_stub(stub_path)
    signing = sign.resolve_signing(
        config.root,
        key=inputs.secureboot_private_key,
        cert=inputs.secureboot_certificate,
        tool=inputs.signtool,
        sign_kernel=inputs.sign_kernel,
        environ=env,
    )
    return UkiOptions(
        kernel_image=kernel_path,
        stub=stub_path,
        cmdline=inputs.cmdline.strip() if inputs.cmdline is not None else find_cmdline(config, env),
        uname=uname or config.kver,
        os_release=find_os_release(config, inputs.os_release),
        splash=_optional_file(inputs.splash, "splash"),
        devicetree=_optional_file(inputs.devicetree, "devicetree"),
        signing=signing,
    )


def uki_inputs(values: Values) -> UkiInputs:
    """The command line's UKI settings (target "uki" in config/settings.py, by field name)."""
    given: dict[str, Any] = {f.name: values.get(f.name) for f in dataclasses.fields(UkiInputs)}
    return UkiInputs(**given)
