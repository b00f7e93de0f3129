"""The root's modprobe.d: its `softdep` lines, which the initrd's modprobe follows too."""

from __future__ import annotations

from pathlib import Path

from mkosi_initrd.kernel.index import KernelIndex, normalize
from mkosi_initrd.kernel.modinfo import parse_softdep
from mkosi_initrd.rootfs import resolve_in_root

MODPROBE_DIRS = (
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/run/modprobe.d",
    "/etc/modprobe.d",
)


def add_config_softdeps(index: KernelIndex, root: Path) -> None:
    """`softdep` lines of the root's modprobe.d: the initrd's modprobe follows them too (they ship in
    the kmod/udev packages), so their targets must be in the initrd."""
    files: dict[str, Path] = {}  # by file name: a later directory's file replaces an earlier one
    for d in MODPROBE_DIRS:
        host = resolve_in_root(root, d)
        if host.is_dir():
            files.update({f.name: f for f in host.glob("*.conf")})
    for name in sorted(files):
        try:
            lines = files[name].read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split(None, 2)
            if len(words) == 3 and words[0] == "softdep":
                pre, post = parse_softdep(words[2])
                old_pre, old_post = index.softdeps.get(normalize(words[1]), ((), ()))
                index.softdeps[normalize(words[1])] = (old_pre + tuple(pre), old_post + tuple(post))
