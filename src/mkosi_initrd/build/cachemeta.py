"""The schema of a cache entry's meta.json, checked before the entry is used (build/cache.py).

    {"format": 1, "key": "<40 hex>", "created": <int>,
     "files": {"output": {"sha256": "<64 hex>", "size": <int>}, "microcode": {...}?},
     "result": {"packages": <int>, "modules": <int>},
     "inputs": [["<path>", null | [<6 ints>]], ...]}

Anything else, for whatever reason (a disk error, an older or newer writer, a hand edit), makes
the entry invalid: it is discarded and the build runs, with a warning; nothing was written yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIG_FIELDS = 6
_FILES = ("output", "microcode")


class InvalidEntry(Exception):
    """meta.json does not validate; the message says where."""


@dataclass(frozen=True)
class CachedFile:
    sha256: str
    size: int


@dataclass(frozen=True)
class Meta:
    files: dict[str, CachedFile]  # "output", and "microcode" when the build had one
    packages: int
    modules: int
    inputs: tuple[tuple[str, list[int] | None], ...]


def _count(value: object, where: str) -> int:
    # bool is an int to Python, not to this schema.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidEntry(f"{where} is {value!r}, not a count")
    return value


def _dict(
    value: object, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, object]:
    if not isinstance(value, dict):
        raise InvalidEntry(f"{where} is {type(value).__name__}, not an object")
    missing = [k for k in keys if k not in value]
    extra = sorted(set(value) - set(keys) - set(optional))
    if missing or extra:
        raise InvalidEntry(f"{where} lacks {missing}" if missing else f"{where} has unknown keys {extra}")
    return value


def _file(value: object, where: str) -> CachedFile:
    d = _dict(value, where, ("sha256", "size"))
    if not isinstance(d["sha256"], str) or not _HEX64.fullmatch(d["sha256"]):
        raise InvalidEntry(f"{where}.sha256 is not a SHA-256")
    return CachedFile(d["sha256"], _count(d["size"], f"{where}.size"))


def _input(value: object, i: int) -> tuple[str, list[int] | None]:
    where = f"inputs[{i}]"
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str) or not value[0]:
        raise InvalidEntry(f"{where} is not [path, signature]")
    sig = value[1]
    if sig is not None:
        if not isinstance(sig, list) or len(sig) != _SIG_FIELDS:
            raise InvalidEntry(f"{where} has no file signature")
        sig = [_count(x, f"{where} signature") for x in sig]
    return value[0], sig


def parse(meta: object, *, version: int, key: str) -> Meta:
    """The entry `meta` describes, or InvalidEntry saying what is wrong."""
    top = _dict(meta, "meta.json", ("format", "key", "files", "result", "inputs"), ("created",))
    if top["format"] != version or isinstance(top["format"], bool):
        raise InvalidEntry(f"format {top['format']!r}, not {version}")
    if top["key"] != key:
        raise InvalidEntry("it is filed under another key")
    if "created" in top:
        _count(top["created"], "created")
    files = _dict(top["files"], "files", ("output",), _FILES[1:])
    result = _dict(top["result"], "result", ("packages", "modules"))
    if not isinstance(top["inputs"], list):
        raise InvalidEntry("inputs is not a list")
    return Meta(
        files={name: _file(files[name], f"files.{name}") for name in _FILES if name in files},
        packages=_count(result["packages"], "result.packages"),
        modules=_count(result["modules"], "result.modules"),
        inputs=tuple(_input(x, i) for i, x in enumerate(top["inputs"])),
    )
