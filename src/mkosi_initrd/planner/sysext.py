"""Sysext support in the base initrd: what systemd-sysext needs to merge system extensions (signed
dm-verity DDIs handed over by systemd-stub in /.extra/sysext/, or images the initrd itself holds)
before the root is mounted.

- the internal profile `sysext`: resources/modules/profile-sysext.list (loop, dm-mod, dm-verity,
  erofs, squashfs, overlay) and packages/FAMILY/profiles/sysext.list (systemd-sysext); libcryptsetup
  comes by soname with the dlopen step, the pre-flight check requires it (build/sysextcheck.py);
- the unit: systemd >= 258 ships systemd-sysext-initrd.service statically in initrd.target.wants;
  before that one systemd-sysext.service serves host and initrd, and the initrd must enable it
  (our presets disable everything): a symlink in initrd.target.wants;
- a drop-in (DROPIN) for that unit: units the extensions carry are loaded and what they enable for
  initrd.target is started; the unmerge at switch-root reloads nothing;
- the trust certificate in /usr/lib/verity.d/ (systemd's userspace signature check; the kernel's
  keyrings are tried first).

On when `SysextSupport=yes`/`--sysext-support`, when a verity certificate is configured, or when the
root declares extensions in /etc/mkosi-initrd/sysext.d/*.conf (config/sysextconf.py; the kernel-install
plugin builds them), whose certificates are trusted as /usr/lib/verity.d/NAME.crt.
"""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

from mkosi_initrd.config.model import Config
from mkosi_initrd.config.sysextconf import definition_files, read_definitions
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.plan.model import Entry, Plan
from mkosi_initrd.rootfs import resolve_in_root

PROFILE = "sysext"
UNIT_DIR = "/usr/lib/systemd/system"
INITRD_UNIT = "systemd-sysext-initrd.service"  # systemd >= 258, static in initrd.target.wants
UNIT = "systemd-sysext.service"  # systemd <= 257: host and initrd, enabled here
# The same for configuration extensions (/etc, the companion NAME.confext.raw): systemd >= 258 has
# an initrd unit of its own; before that systemd-confext.service (>= 254) is enabled here.
CONFEXT_INITRD_UNIT = "systemd-confext-initrd.service"
CONFEXT_UNIT = "systemd-confext.service"
WANTS = f"{UNIT_DIR}/initrd.target.wants"
VERITY_D = "/usr/lib/verity.d"
CERT_NAME = "mkosi-initrd.crt"
DROPIN_NAME = "10-mkosi-initrd.conf"
ORIGIN = "generated"

# systemd-sysext does not start the units an extension brings: after the merge a daemon-reload
# loads them, but initrd.target's start job was expanded before they existed, so what they enable
# for initrd.target would never run. Starting initrd.target again (as initrd-parse-etc.service does
# for initrd-fs.target after its reload) adds them to the boot. At switch-root the unit is stopped
# (Conflicts=initrd-switch-root.target) and unmerges; its reload then would only reload PID 1 in the
# middle of the switch, which re-executes anyway: --no-reload (systemd >= 255).
DROPIN = """\
# mkosi-initrd: the extensions' units run in the initrd (planner/sysext.py).
[Service]
ExecStartPost=systemctl daemon-reload
ExecStartPost=systemctl --no-block start initrd.target
"""
NO_RELOAD = """ExecStop=
ExecStop=systemd-sysext unmerge --no-reload
"""


def wanted(config: Config) -> bool:
    return (
        config.sysext_support or config.verity_certificate is not None or bool(definition_files(config.root))
    )


def with_sysext_profile(config: Config) -> Config:
    """`config` with the internal profile `sysext` when the initrd is to merge extensions."""
    if PROFILE in config.profiles or not wanted(config):
        return config
    return dataclasses.replace(config, profiles=(*config.profiles, PROFILE), sysext_support=True)


def _file(path: str, data: bytes) -> Entry:
    return Entry(path, stat.S_IFREG | 0o644, data=data, size=len(data), origin=ORIGIN)


def read_certificate(path: Path) -> bytes:
    """A PEM certificate (what systemd's verity.d reader loads), checked before anything is written."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InitrdError(
            f"verity certificate {path}: {e.strerror}", hint="VerityCertificate= names a PEM X.509 file"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise InitrdError(
            f"verity certificate {path} is not a PEM X.509 certificate",
            hint="convert it: openssl x509 -in CERT -out CERT.pem (systemd reads PEM from verity.d)",
        )
    return data


def sysext_entries(config: Config, plan: Plan, systemd: int | None) -> list[Entry]:
    """What a plan with sysext support adds: the unit's enablement and drop-in, the certificate."""
    if PROFILE not in plan.profiles:
        return []
    paths = {e.path for e in plan.entries}
    unit = INITRD_UNIT if f"{UNIT_DIR}/{INITRD_UNIT}" in paths else UNIT
    out: list[Entry] = []
    if unit == UNIT and f"{WANTS}/{UNIT}" not in paths:
        link = f"../{UNIT}"
        mode = stat.S_IFLNK | 0o777
        out.append(Entry(f"{WANTS}/{UNIT}", mode, linkto=link, size=len(link), origin=ORIGIN))
    confext = f"{UNIT_DIR}/{CONFEXT_UNIT}" in paths and f"{UNIT_DIR}/{CONFEXT_INITRD_UNIT}" not in paths
    if confext and f"{WANTS}/{CONFEXT_UNIT}" not in paths:
        link = f"../{CONFEXT_UNIT}"
        out.append(
            Entry(
                f"{WANTS}/{CONFEXT_UNIT}", stat.S_IFLNK | 0o777, linkto=link, size=len(link), origin=ORIGIN
            )
        )
    dropin = DROPIN + (NO_RELOAD if systemd is None or systemd >= 255 else "")
    out.append(_file(f"{UNIT_DIR}/{unit}.d/{DROPIN_NAME}", dropin.encode()))
    if config.verity_certificate is not None:
        out.append(_file(f"{VERITY_D}/{CERT_NAME}", read_certificate(config.verity_certificate)))
    # The root's own extensions (sysext.d, what kernel-install builds): their certificates too, and a
    # bad definition stops the build here, before anything is written.
    for defn in read_definitions(config.root):
        assert defn.verity_certificate is not None  # checked by read_definition
        cert = resolve_in_root(config.root, str(defn.verity_certificate))
        out.append(_file(f"{VERITY_D}/{defn.name}.crt", read_certificate(cert)))
    return out
