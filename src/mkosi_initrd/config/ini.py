"""The ini files: which are read, in what order, and the values of the settings they set.

Files (later wins; a drop-in of the same name in a later directory replaces an earlier one):
  /usr/lib/mkosi-initrd/mkosi-initrd.conf, /run/..., /etc/mkosi-initrd/mkosi-initrd.conf
  and `mkosi-initrd.conf.d/*.conf` in the same directories, sorted by file name.
All paths are read inside --root. List settings accumulate across files; an empty assignment
(`Packages=`) clears what earlier files said. Other settings: the last one wins.
"""

from __future__ import annotations

from pathlib import Path

from mkosi_initrd.config.settings import Setting, in_files
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.rootfs import resolve_in_root

CONFIG_DIRS = ("usr/lib/mkosi-initrd", "usr/local/lib/mkosi-initrd", "run/mkosi-initrd", "etc/mkosi-initrd")
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


def read_files(files: list[Path]) -> dict[str, object]:
    """Setting name → the value the files give it (words as a list)."""
    values: dict[str, object] = {}
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise InitrdError(f"cannot read config {path}: {e}") from e
        apply(values, path, text)
    return values


def apply(values: dict[str, object], path: Path, text: str) -> None:
    known = in_files()
    for section, key, value, n in parse_ini(text, str(path)):
        where = f"{path}:{n}"
        setting = known.get((section, key))
        if setting is None:
            raise InitrdError(
                f"{where}: unknown setting [{section}] {key}=",
                hint="see mkosi-initrd.conf.example for the settings",
            )
        if setting.kind == "words":
            items = values.setdefault(setting.name, [])
            assert isinstance(items, list)
            if not value:
                items.clear()
            items += [_word(setting, word, where) for word in value.split()]
        else:
            values[setting.name] = _scalar(setting, value, where)


def _word(setting: Setting, word: str, where: str) -> object:
    if setting.choices and word not in setting.choices:
        noun = setting.key.lower().removesuffix("s")  # Profiles= → "profile"
        raise InitrdError(f"{where}: unknown {noun} {word!r}", hint=f"{noun}s: {' '.join(setting.choices)}")
    return setting.word(word, where) if setting.word else word


def _scalar(setting: Setting, value: str, where: str) -> object:
    if setting.kind == "flag":
        if value.lower() not in _BOOLS:
            raise InitrdError(f"{where}: expected a boolean, got {value!r}", hint="yes or no")
        return _BOOLS[value.lower()]
    if setting.kind == "number":
        if not value.lstrip("-").isdigit():
            raise InitrdError(f"{where}: {setting.key}={value}: not a number")
        return int(value)
    if setting.kind == "path" and value:
        if not value.startswith("/"):
            raise InitrdError(f"{where}: {setting.key}={value}: not an absolute path")
        return Path(value)
    if value and setting.choices and value not in setting.choices:
        raise InitrdError(f"{where}: {setting.key}={value}", hint=f"one of {' '.join(setting.choices)}")
    return value or None
