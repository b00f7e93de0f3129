"""Plugins that run after ours and would spoil its output (mkosi's, Debian's), each with the command
that masks it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mkosi_initrd.kernel_install.policy import GENERATOR, Action, Context, Request

MKOSI_PLUGIN = "50-mkosi.install"


DEBIAN_PLUGIN = "85-initrd.install"  # systemd's Debian packaging: installs /boot/initrd.img-KVER


PLUGIN_DIRS = (
    Path("/etc/kernel/install.d"),
    Path("/run/kernel/install.d"),
    Path("/usr/local/lib/kernel/install.d"),
    Path("/usr/lib/kernel/install.d"),
)


def active_plugin(name: str, ctx: Context, dirs: Sequence[Path] = PLUGIN_DIRS) -> Path | None:
    """The plugin `name` if kernel-install will run it: listed in $KERNEL_INSTALL_PLUGINS, or else found
    in the plugin directories (the first directory that has the name decides; /dev/null masks)."""
    if ctx.plugins is not None:
        return next((p for p in ctx.plugins if p.name == name and os.access(p, os.X_OK)), None)
    for d in dirs:
        path = d / name
        if path.exists() or path.is_symlink():
            masked = path.resolve() == Path("/dev/null") or not path.is_file() or path.stat().st_size == 0
            return None if masked or not os.access(path, os.X_OK) else path
    return None


def rival_warnings(
    req: Request,
    ctx: Context,
    action: Action,
    dirs: Sequence[Path] = PLUGIN_DIRS,
    boot: Path = Path("/boot"),
) -> list[str]:
    """Plugins that run after us and would spoil our output, each with the command that masks it."""
    staged = action.output is not None and ctx.staging is not None and action.output.parent == ctx.staging
    found: list[tuple[Path, str]] = []
    # mkosi's plugin acts on initrd_generator=mkosi-initrd too ('-' sorts before '.': it runs after us).
    mkosi = active_plugin(MKOSI_PLUGIN, ctx, dirs) if ctx.initrd_generator == GENERATOR else None
    if mkosi is not None:
        effect = f"would overwrite {action.output}" if staged else "builds a second initrd"
        found.append(
            (mkosi, f"also acts on initrd_generator={GENERATOR} and runs after this plugin: it {effect}")
        )
    # Debian's plugin stages initramfs-tools' initrd whatever the generator: the entry would load both.
    old = boot / f"initrd.img-{req.kver}"
    debian = active_plugin(DEBIAN_PLUGIN, ctx, dirs) if staged and action.format == "cpio" else None
    if debian is not None and old.exists():
        found.append((debian, f"stages {old} as a second initrd, loaded after the one built here"))
    return [
        f"{plugin} {effect}. Mask it with: ln -s /dev/null /etc/kernel/install.d/{plugin.name}"
        for plugin, effect in found
    ]
