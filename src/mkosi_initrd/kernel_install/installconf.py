"""kernel-install's own settings (install.conf), for what older kernel-install versions do not export.

systemd 252's kernel-install exports KERNEL_INSTALL_INITRD_GENERATOR and KERNEL_INSTALL_LAYOUT but knows
no `uki_generator=` and reads no `install.conf.d/` drop-ins; newer versions export everything they know.
So the environment wins where it carries a value, and install.conf fills in the rest, read with
kernel-install's own search order:

  $KERNEL_INSTALL_CONF_ROOT/install.conf + $KERNEL_INSTALL_CONF_ROOT/install.conf.d/*.conf   (if set), else
  the first install.conf found in /etc/kernel, /run/kernel, /usr/local/lib/kernel, /usr/lib/kernel,
  then install.conf.d/*.conf from the same directories: sorted by file name, a drop-in in an earlier
  directory replaces one of the same name in a later directory, later drop-ins override earlier values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SEARCH_DIRS = (
    Path("/etc/kernel"),
    Path("/run/kernel"),
    Path("/usr/local/lib/kernel"),
    Path("/usr/lib/kernel"),
)

# install.conf key → the variable kernel-install exports for it.
ENV_NAMES = {
    "layout": "KERNEL_INSTALL_LAYOUT",
    "initrd_generator": "KERNEL_INSTALL_INITRD_GENERATOR",
    "uki_generator": "KERNEL_INSTALL_UKI_GENERATOR",
}


@dataclass(frozen=True)
class InstallSettings:
    layout: str = ""
    initrd_generator: str = ""
    uki_generator: str = ""
    files: tuple[Path, ...] = field(default=(), compare=False)  # what was read, for verbose output


def config_files(conf_root: Path | None, search_dirs: tuple[Path, ...] = SEARCH_DIRS) -> list[Path]:
    """install.conf and its drop-ins, in the order their values apply (later wins)."""
    dirs = (conf_root,) if conf_root is not None else search_dirs
    files = [d / "install.conf" for d in dirs if (d / "install.conf").is_file()][:1]
    dropins: dict[str, Path] = {}
    for d in reversed(dirs):  # an earlier (higher priority) directory replaces a drop-in of the same name
        conf_d = d / "install.conf.d"
        if conf_d.is_dir():
            dropins.update({p.name: p for p in conf_d.glob("*.conf") if p.is_file()})
    return files + [dropins[name] for name in sorted(dropins)]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse(text: str) -> dict[str, str]:
    """KEY=VALUE lines as both kernel-install parsers accept them (shell-sourced or section-less ini)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        values[key] = _unquote(value.strip())
    return values


def read_install_conf(
    conf_root: Path | None = None, search_dirs: tuple[Path, ...] = SEARCH_DIRS
) -> tuple[dict[str, str], tuple[Path, ...]]:
    values: dict[str, str] = {}
    files = tuple(config_files(conf_root, search_dirs))
    for path in files:
        values.update(parse(path.read_text(errors="replace")))
    return values, files


def settings(environ: Mapping[str, str], search_dirs: tuple[Path, ...] = SEARCH_DIRS) -> InstallSettings:
    """The effective layout and generators: a non-empty KERNEL_INSTALL_* variable wins over install.conf.

    An empty variable is what kernel-install exports for "not configured in the files I read", which on
    older versions excludes drop-ins, so the files are consulted for it.
    """
    conf_root = environ.get("KERNEL_INSTALL_CONF_ROOT") or None
    values, files = read_install_conf(Path(conf_root) if conf_root else None, search_dirs)

    def pick(key: str) -> str:
        return environ.get(ENV_NAMES[key], "") or values.get(key, "")

    return InstallSettings(
        layout=pick("layout"),
        initrd_generator=pick("initrd_generator"),
        uki_generator=pick("uki_generator"),
        files=files,
    )
