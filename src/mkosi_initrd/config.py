"""Our configuration: ini files with drop-ins, merged with the command line.

Files (later wins; a drop-in of the same name in a later directory replaces an earlier one):
  /usr/lib/mkosi-initrd/mkosi-initrd.conf, /run/..., /etc/mkosi-initrd/mkosi-initrd.conf
  and `mkosi-initrd.conf.d/*.conf` in the same directories, sorted by file name.
All paths are read inside --root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIRS = ("usr/lib/mkosi-initrd", "usr/local/lib/mkosi-initrd", "run/mkosi-initrd", "etc/mkosi-initrd")
PROFILES = ("lvm", "raid", "nfs", "network", "pkcs11", "plymouth")
COMPRESSIONS = ("zstd", "xz", "gzip", "none")


@dataclass(frozen=True)
class Config:
    root: Path = Path("/")
    kver: str = ""
    generic: bool = False
    profiles: tuple[str, ...] = ()
    backend: str | None = None  # None: detect from the root
    packages: tuple[str, ...] = ()  # extra package entries (names, provides, paths)
    added_packages: tuple[str, ...] = ()  # those of `packages` given with --add-package (errors say so)
    remove_packages: tuple[str, ...] = ()
    extra_files: tuple[tuple[str, str], ...] = ()  # (source in root, destination in initrd)
    remove_files: tuple[str, ...] = ()  # globs
    modules: tuple[str, ...] = ()  # patterns, "-" prefix excludes
    firmware: tuple[str, ...] = ()  # globs relative to /usr/lib/firmware
    compression: str = "zstd"
    level: int | None = None  # None: the compressor's default (zstd 3)
    microcode: bool = True
    weak_deps: bool = False
    source_date_epoch: int = 0
    sysfs: Path = Path("/sys")  # host probes (tests point these at fixture trees)
    procfs: Path = Path("/proc")
    config_files: tuple[Path, ...] = field(default=(), compare=False)  # what was read, for --debug


# --- reading the files

# (section, key) → Config field. List settings accumulate across files; an empty assignment
# (`Packages=`) clears what earlier files said. Scalars: the last one wins.
_LISTS = {
    ("Packages", "Packages"): "packages",
    ("Packages", "RemovePackages"): "remove_packages",
    ("Packages", "Profiles"): "profiles",
    ("Files", "ExtraFiles"): "extra_files",
    ("Files", "RemoveFiles"): "remove_files",
    ("Kernel", "Modules"): "modules",
    ("Kernel", "Firmware"): "firmware",
}
_SCALARS = {
    ("Packages", "WithRecommends"): "weak_deps",
    ("Packages", "Backend"): "backend",
    ("Kernel", "Generic"): "generic",
    ("Output", "Compression"): "compression",
    ("Output", "CompressionLevel"): "level",
    ("Output", "Microcode"): "microcode",
}
_BOOLS = {
    "1": True,
    "yes": True,
    "true": True,
    "on": True,
    "0": False,
    "no": False,
    "false": False,
    "off": False,
}


def config_files(root: Path) -> list[Path]:
    """The files to read, in order: the main file, then drop-ins sorted by name. A file in a later
    directory (`/etc` over `/run` over `/usr/local/lib` over `/usr/lib`) replaces one of the same name."""
    from mkosi_initrd.rootfs import resolve_in_root

    main: Path | None = None
    dropins: dict[str, Path] = {}
    for d in CONFIG_DIRS:
        p = resolve_in_root(root, f"/{d}/mkosi-initrd.conf")
        if p.is_file():
            main = p
        dd = resolve_in_root(root, f"/{d}/mkosi-initrd.conf.d")
        if dd.is_dir():
            for f in dd.glob("*.conf"):
                dropins[f.name] = resolve_in_root(root, f"/{d}/mkosi-initrd.conf.d/{f.name}")
    return ([main] if main else []) + [dropins[n] for n in sorted(dropins) if dropins[n].is_file()]


def parse_ini(text: str, where: str) -> list[tuple[str, str, str, int]]:
    """INI text → (section, key, value, line number); keys may repeat."""
    from mkosi_initrd.errors import InitrdError

    out = []
    section = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if "=" not in line or not section:
            raise InitrdError(
                f"{where}:{n}: cannot parse {raw!r}", hint="expected [Section] and Key=value lines"
            )
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip(), n))
    return out


def _apply(values: dict[str, Any], path: Path, text: str) -> None:
    from mkosi_initrd.errors import InitrdError

    for section, key, value, n in parse_ini(text, str(path)):
        where = f"{path}:{n}"
        if (section, key) in _LISTS:
            name = _LISTS[(section, key)]
            items: list[object] = values.setdefault(name, [])
            if not value:
                items.clear()
            for word in value.split():
                items.append(_list_item(name, word, where))
        elif (section, key) in _SCALARS:
            name = _SCALARS[(section, key)]
            values[name] = _scalar(name, value, where)
        else:
            raise InitrdError(
                f"{where}: unknown setting [{section}] {key}=",
                hint="see mkosi-initrd.conf.example for the settings",
            )


def _list_item(name: str, word: str, where: str) -> object:
    from mkosi_initrd.errors import InitrdError

    if name == "profiles" and word not in PROFILES:
        raise InitrdError(f"{where}: unknown profile {word!r}", hint=f"profiles: {' '.join(PROFILES)}")
    if name == "extra_files":
        src, _, dst = word.partition(":")
        if not src.startswith("/") or (dst and not dst.startswith("/")):
            raise InitrdError(f"{where}: ExtraFiles={word}: paths must be absolute", hint="SOURCE[:DEST]")
        return (src, dst or src)
    return word


def _scalar(name: str, value: str, where: str) -> object:
    from mkosi_initrd.errors import InitrdError

    if name in ("weak_deps", "generic", "microcode"):
        if value.lower() not in _BOOLS:
            raise InitrdError(f"{where}: expected a boolean, got {value!r}", hint="yes or no")
        return _BOOLS[value.lower()]
    if name == "level":
        if not value.lstrip("-").isdigit():
            raise InitrdError(f"{where}: CompressionLevel={value}: not a number")
        return int(value)
    if name == "compression" and value not in COMPRESSIONS:
        raise InitrdError(f"{where}: Compression={value}", hint=f"one of {' '.join(COMPRESSIONS)}")
    if name == "backend" and value not in ("rpm", "dpkg", ""):
        raise InitrdError(f"{where}: Backend={value}", hint="rpm or dpkg")
    return value or None


def _arg(args: object, name: str, default: Any = None) -> Any:
    return getattr(args, name, default) if args is not None else default


def load_config(root: Path, kver: str, args: object = None) -> Config:
    """The root's config files, then the command line (`args`: an argparse namespace, or None).

    Command-line lists add to the files' lists; command-line scalars override them."""
    import os

    from mkosi_initrd.errors import InitrdError

    if not root.is_dir():
        raise InitrdError(f"root {root} does not exist or is not a directory")
    values: dict[str, Any] = {}
    files = config_files(root)
    for path in files:
        try:
            _apply(values, path, path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise InitrdError(f"cannot read config {path}: {e}") from e

    def merged(name: str, cli: str | None = None) -> tuple[Any, ...]:
        items = list(values.get(name, [])) + list(_arg(args, cli, None) or [] if cli else [])
        return tuple(dict.fromkeys(items))

    sde = os.environ.get("SOURCE_DATE_EPOCH", "")
    level = _arg(args, "level")
    return Config(
        root=root,
        kver=kver,
        generic=bool(_arg(args, "generic", False) or values.get("generic", False)),
        profiles=merged("profiles", "profile"),
        backend=_arg(args, "backend") or values.get("backend"),
        packages=merged("packages", "add_package"),
        added_packages=tuple(dict.fromkeys(_arg(args, "add_package") or ())),
        remove_packages=merged("remove_packages", "remove_package"),
        extra_files=merged("extra_files"),
        remove_files=merged("remove_files"),
        # Module patterns keep order and repeats: the last matching pattern decides.
        modules=tuple(values.get("modules", [])) + tuple(_arg(args, "add_module") or ()),
        firmware=merged("firmware", "add_firmware"),
        compression=_arg(args, "compression") or values.get("compression") or "zstd",
        level=level if level is not None else values.get("level"),
        microcode=bool(values.get("microcode", True)) and not _arg(args, "no_microcode", False),
        weak_deps=bool(_arg(args, "with_recommends", False) or values.get("weak_deps", False)),
        source_date_epoch=int(sde) if sde.isdigit() else 0,
        sysfs=_arg(args, "sysfs") or Path("/sys"),
        procfs=_arg(args, "procfs") or Path("/proc"),
        config_files=tuple(files),
    )
