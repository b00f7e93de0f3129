"""Data files shipped in the package (package lists, module lists, extra tree)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_dir() -> Path:
    return Path(str(resources.files("mkosi_initrd") / "resources"))


def read_list(relpath: str) -> list[str]:
    """A list file: one entry per line, `#` comments and blank lines ignored."""
    path = resource_dir() / relpath
    entries = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries
