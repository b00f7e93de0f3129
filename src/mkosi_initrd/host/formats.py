"""The host files' small formats: text that may be absent, KEY=value files, the kernel command line."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in read_text(path).splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out


def cmdline_value(cmdline: str, key: str) -> str:
    value = ""
    for word in cmdline.split():
        k, sep, v = word.partition("=")
        if sep and k == key:
            value = v  # the last one wins, as in the kernel
    return value
