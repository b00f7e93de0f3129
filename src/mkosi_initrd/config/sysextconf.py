"""Extension definitions: `/etc/mkosi-initrd/sysext.d/NAME.conf` (inside the root), one system extension
for the initrd each, rebuilt by the kernel-install plugin for every kernel it installs.

    [Extension]
    Packages=openssh-server          # words, repeatable lines accumulate
    Modules=wireguard                # module patterns, as [Kernel] Modules=
    Files=/etc/issue.initrd:/usr/share/initrd/issue
    VerityKey=/etc/mkosi-initrd/verity.key
    VerityCertificate=/etc/mkosi-initrd/verity.crt

NAME (the file name without .conf) names the image, `NAME.sysext.raw`, and its extension-release
file. Images that systemd-stub hands over (a UKI's extra.d, /.extra/sysext/) must be signed: both
keys are required. Every definition is read and checked before anything is built, so a bad one stops
`kernel-install add` before a working initrd is replaced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.config.ini import parse_ini
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.rootfs import resolve_in_root

SYSEXT_D = "/etc/mkosi-initrd/sysext.d"
SECTION = "Extension"
WORDS = ("Packages", "Modules", "Files")
PATHS = ("VerityKey", "VerityCertificate")
# systemd's image names: the file name is NAME.sysext.raw, the release file extension-release.NAME.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class SysextDef:
    name: str
    source: Path  # the .conf file, for messages
    packages: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # SOURCE[:DEST]
    verity_key: Path | None = None  # host paths (inside the root for kernel-install: the same)
    verity_certificate: Path | None = None


def definition_files(root: Path) -> list[Path]:
    d = resolve_in_root(root, SYSEXT_D)
    return sorted(p for p in d.glob("*.conf") if p.is_file()) if d.is_dir() else []


def read_definition(path: Path, root: Path = Path("/")) -> SysextDef:
    """One definition, checked: its name, known keys only, something to carry, both keys readable."""
    name = path.name.removesuffix(".conf")
    if not NAME.fullmatch(name) or name.endswith((".sysext", ".raw")):
        raise InitrdError(
            f"{path}: {name!r} is not an extension name",
            hint="name it NAME.conf: letters, digits, '_', '.', '-' (the image is NAME.sysext.raw)",
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InitrdError(f"cannot read extension definition {path}: {e}") from e
    words: dict[str, list[str]] = {k: [] for k in WORDS}
    paths: dict[str, Path] = {}
    for section, key, value, n in parse_ini(text, str(path)):
        where = f"{path}:{n}"
        if section != SECTION or key not in (*WORDS, *PATHS):
            raise InitrdError(
                f"{where}: unknown setting [{section}] {key}=",
                hint=f"[{SECTION}] takes {'=, '.join((*WORDS, *PATHS))}=",
            )
        if key in WORDS:
            words[key] = words[key] + value.split() if value else []
        elif not value.startswith("/"):
            raise InitrdError(f"{where}: {key}={value}: the path must be absolute")
        else:
            paths[key] = Path(value)
    defn = SysextDef(
        name, path, tuple(words["Packages"]), tuple(words["Modules"]), tuple(words["Files"]),
        paths.get("VerityKey"), paths.get("VerityCertificate"),
    )  # fmt: skip
    _check(defn, root)
    return defn


def _check(defn: SysextDef, root: Path) -> None:
    if not (defn.packages or defn.modules or defn.files):
        raise InitrdError(
            f"{defn.source}: the extension {defn.name} carries nothing",
            hint="set Packages=, Modules= or Files= in [Extension]",
        )
    if defn.verity_key is None or defn.verity_certificate is None:
        raise InitrdError(
            f"{defn.source}: the extension {defn.name} is not signed: VerityKey= and VerityCertificate= "
            "are both needed",
            hint="an image systemd-stub hands to the initrd is refused unsigned (the strict policy of "
            "/.extra/sysext/); make a key: openssl req -x509 -newkey rsa:2048 -nodes -keyout KEY -out CERT",
        )
    for key, value in (("VerityKey", defn.verity_key), ("VerityCertificate", defn.verity_certificate)):
        if not resolve_in_root(root, str(value)).is_file():
            raise InitrdError(f"{defn.source}: {key}={value} does not exist", hint="fix the path")


def read_definitions(root: Path) -> list[SysextDef]:
    """Every definition of the root, each checked (the first bad one raises)."""
    return [read_definition(p, root) for p in definition_files(root)]
