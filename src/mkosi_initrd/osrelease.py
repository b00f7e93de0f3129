"""os-release of the root, and the package-list family it belongs to (by ID, then ID_LIKE)."""

from __future__ import annotations

import shlex
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.resources import read_list, resource_dir
from mkosi_initrd.rootfs import resolve_in_root

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")


def parse(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        fields[key.strip()] = " ".join(words)
    return fields


def read_os_release(root: Path) -> dict[str, str]:
    for p in OS_RELEASE_PATHS:
        host = resolve_in_root(root, p)
        if host.is_file():
            return parse(host.read_text(errors="replace"))
    raise InitrdError(
        f"no os-release in {root} (looked for {', '.join(OS_RELEASE_PATHS)})",
        hint="point --root at an installed system",
    )


def families() -> dict[str, list[str]]:
    """Family (a directory under resources/packages) → the os-release IDs it covers."""
    base = resource_dir() / "packages"
    return {d.name: read_list(f"packages/{d.name}/ids.list") for d in sorted(base.iterdir()) if d.is_dir()}


def family(os_release: dict[str, str]) -> str:
    ids = [os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()]
    fams = families()
    for i in ids:
        for fam, members in fams.items():
            if i and i in members:
                return fam
    known = ", ".join(f"{f} ({' '.join(m)})" for f, m in fams.items())
    raise InitrdError(
        f"no package list for this distribution: ID={os_release.get('ID', '')!r}"
        f" ID_LIKE={os_release.get('ID_LIKE', '')!r}",
        hint=f"known families: {known}; add ID_LIKE to os-release or list packages in the config",
    )
