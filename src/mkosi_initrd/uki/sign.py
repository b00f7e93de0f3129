"""Secure Boot signing of a UKI (and, when wanted, of the kernel inside it) with sbsign or systemd-sbsign.

Configured like ukify: `[UKI]` in uki.conf (`$KERNEL_INSTALL_CONF_ROOT/uki.conf`, else the root's
/etc/kernel/uki.conf, then /usr/lib/kernel/uki.conf) with SecureBootPrivateKey=, SecureBootCertificate=,
SecureBootSigningTool=, SignKernel=; the command line's flags win over the file.
Everything is checked before anything is built: a key without a certificate (or the reverse), a missing
tool or an unreadable key is an error, and no output is written.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.log import log
from mkosi_initrd.rootfs import resolve_in_root

TOOLS = ("sbsign", "systemd-sbsign")
# systemd installs systemd-sbsign outside $PATH on some distributions.
_TOOL_FALLBACKS = {"systemd-sbsign": Path("/usr/lib/systemd/systemd-sbsign")}
UKI_CONF_DIRS = ("etc/kernel", "usr/lib/kernel")


@dataclass(frozen=True)
class SignConfig:
    key: Path
    cert: Path
    tool: str  # "sbsign" or "systemd-sbsign"
    tool_path: Path
    sign_kernel: bool | None = None  # None: sign the inner kernel only if it is unsigned


@dataclass(frozen=True)
class UkiConf:
    """The [UKI] keys of uki.conf that concern signing; paths as the file wrote them."""

    path: Path | None = None
    key: str | None = None
    cert: str | None = None
    tool: str | None = None
    sign_kernel: bool | None = None


def find_uki_conf(root: Path, environ: Mapping[str, str]) -> Path | None:
    conf_root = environ.get("KERNEL_INSTALL_CONF_ROOT")
    if conf_root:
        # kernel-install: with a CONF_ROOT, only that directory counts (host paths, not chrooted).
        path = Path(conf_root) / "uki.conf"
        return path if path.is_file() else None
    for d in UKI_CONF_DIRS:
        path = resolve_in_root(root, f"{d}/uki.conf")
        if path.is_file():
            return path
    return None


def _bool(value: str, path: Path) -> bool:
    v = value.strip().lower()
    if v in ("1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off"):
        return False
    raise InitrdError(f"{path}: SignKernel={value} is not a boolean", hint="use SignKernel=yes or no")


def read_uki_conf(path: Path | None) -> UkiConf:
    if path is None:
        return UkiConf()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are CamelCase
    try:
        parser.read_string(path.read_text(), source=str(path))
    except (OSError, configparser.Error) as e:
        raise InitrdError(f"cannot read {path}: {e}", hint="fix or remove the file") from e
    if not parser.has_section("UKI"):
        return UkiConf(path)
    uki = parser["UKI"]
    sign_kernel = uki.get("SignKernel")
    return UkiConf(
        path,
        key=uki.get("SecureBootPrivateKey") or None,
        cert=uki.get("SecureBootCertificate") or None,
        tool=uki.get("SecureBootSigningTool") or None,
        sign_kernel=_bool(sign_kernel, path) if sign_kernel else None,
    )


def find_tool(name: str) -> Path | None:
    found = shutil.which(name)
    if found:
        return Path(found)
    fallback = _TOOL_FALLBACKS.get(name)
    return fallback if fallback is not None and os.access(fallback, os.X_OK) else None


def _choose_tool(configured: str | None) -> tuple[str, Path]:
    if configured is not None:
        if configured not in TOOLS:
            raise InitrdError(
                f"unknown Secure Boot signing tool {configured!r}", hint=f"use one of: {', '.join(TOOLS)}"
            )
        path = find_tool(configured)
        if path is None:
            package = "sbsigntool (sbsigntools)" if configured == "sbsign" else "systemd (systemd-ukify)"
            raise InitrdError(f"signing tool {configured} is not installed", hint=f"install {package}")
        return configured, path
    for name in TOOLS:
        path = find_tool(name)
        if path is not None:
            return name, path
    raise InitrdError(
        "a Secure Boot key is configured but neither sbsign nor systemd-sbsign is installed",
        hint="install sbsigntool (Debian) / sbsigntools (Fedora), or remove the key setting",
    )


def _check_readable(path: Path, what: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise InitrdError(
            f"cannot read the Secure Boot {what} {path}: {e.strerror}", hint="check path and permissions"
        ) from e
    if not head.strip():
        raise InitrdError(f"the Secure Boot {what} {path} is empty", hint="point to a PEM file")


def resolve_signing(
    root: Path,
    *,
    key: Path | None = None,
    cert: Path | None = None,
    tool: str | None = None,
    sign_kernel: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> SignConfig | None:
    """CLI values over uki.conf; None when nothing asks for signing. Raises on a half or broken setup."""
    env = os.environ if environ is None else environ
    conf = read_uki_conf(find_uki_conf(root, env))
    conf_in_root = conf.path is not None and not env.get("KERNEL_INSTALL_CONF_ROOT")

    def from_conf(value: str | None) -> Path | None:
        if value is None:
            return None
        # Paths in the root's uki.conf name files of that root; a CONF_ROOT's are host paths.
        return resolve_in_root(root, value) if conf_in_root and value.startswith("/") else Path(value)

    key = key or from_conf(conf.key)
    cert = cert or from_conf(conf.cert)
    tool = tool or conf.tool
    sign_kernel = sign_kernel if sign_kernel is not None else conf.sign_kernel
    where = f" (from {conf.path})" if conf.path else ""
    if key is None and cert is None:
        if tool is not None or sign_kernel:
            log.warning(
                "a signing tool or SignKernel is set%s but no key and certificate: not signing", where
            )
        return None
    if key is None or cert is None:
        have, missing = ("private key", "certificate") if cert is None else ("certificate", "private key")
        raise InitrdError(
            f"a Secure Boot {have} is set{where} but no {missing}",
            hint="give both --secureboot-private-key and --secureboot-certificate (or SecureBootPrivateKey= "
            "and SecureBootCertificate= in uki.conf)",
        )
    _check_readable(key, "private key")
    _check_readable(cert, "certificate")
    name, path = _choose_tool(tool)
    return SignConfig(key, cert, name, path, sign_kernel)


def sign_command(cfg: SignConfig, src: Path, dst: Path) -> list[str]:
    if cfg.tool == "sbsign":
        return [
            str(cfg.tool_path),
            "--key",
            str(cfg.key),
            "--cert",
            str(cfg.cert),
            "--output",
            str(dst),
            str(src),
        ]
    return [
        str(cfg.tool_path),
        "sign",
        "--private-key",
        str(cfg.key),
        "--certificate",
        str(cfg.cert),
        "--output",
        str(dst),
        str(src),
    ]


def sign_file(cfg: SignConfig, src: Path, dst: Path) -> None:
    """Sign the PE `src` into `dst` (a fresh path; the caller renames it into place)."""
    cmd = sign_command(cfg, src, dst)
    log.debug("+ %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0 or not dst.exists():
        dst.unlink(missing_ok=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise InitrdError(
            f"{cfg.tool} failed to sign {src} (exit {proc.returncode}): {' / '.join(detail[-3:])}",
            hint=f"check that {cfg.key} is the private key of {cfg.cert}",
        )
