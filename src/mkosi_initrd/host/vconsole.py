"""The console: /etc/vconsole.conf and /etc/default/keyboard, and the KEYMAP= file with its includes,
so a passphrase is typed in the user's layout; loadkeys (kbd) is planned for it."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

from mkosi_initrd.host.entries import copy_entry, copy_paths
from mkosi_initrd.host.formats import env_file
from mkosi_initrd.plan.parts import Part
from mkosi_initrd.rootfs import resolve_in_root

KEYMAP_DIRS = ("/usr/share/keymaps", "/usr/lib/kbd/keymaps", "/usr/share/kbd/keymaps")


def vconsole(root: Path) -> Part:
    entries = list(copy_paths(root, ("/etc/vconsole.conf", "/etc/default/keyboard")).entries)
    settings = env_file(resolve_in_root(root, "/etc/vconsole.conf"))
    warnings = []
    for var in ("KEYMAP", "KEYMAP_TOGGLE"):
        name = settings.get(var, "")
        if not name:
            continue
        found = keymap_files(root, name)
        if not found:
            warnings.append(
                f"/etc/vconsole.conf: {var}={name}: no keymap file found under {', '.join(KEYMAP_DIRS)}"
            )
        entries += [copy_entry(root, p) for p in found]
    return Part(entries=tuple(entries), warnings=tuple(warnings))


def keymap_files(root: Path, name: str) -> list[str]:
    """The keymap `name` and the files it includes, as paths in the root."""
    out: list[str] = []
    todo = [name]
    while todo:
        want = todo.pop()
        path = _find_keymap(root, want, near=out[0] if out else None)
        if path is None or path in out:
            continue
        out.append(path)
        todo += _keymap_includes(resolve_in_root(root, path))
    return out


def _find_keymap(root: Path, name: str, near: str | None) -> str | None:
    dirs = ([os.path.dirname(near)] if near else []) + list(KEYMAP_DIRS)
    for top in dirs:
        base = resolve_in_root(root, top)
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for suffix in (".map.gz", ".map", ".inc.gz", ".inc", ".gz", ""):
                if name + suffix in filenames:
                    return "/" + str((Path(dirpath) / (name + suffix)).relative_to(root))
    return None


def _keymap_includes(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode(errors="replace")
    except (OSError, EOFError):
        return []
    return re.findall(r'^\s*include\s+"([^"]+)"', text, re.M)
