"""Other kernel-install plugins that put an initrd into the boot entry beside ours, found by what they do.

kernel-install runs every plugin, and its entry takes every initrd it finds in the staging area
(`initrd*`) or the entry directory; the kernel unpacks them in order, so the last one's /init runs.
A plugin that makes or fetches another generator's initrd and does not step aside when the admin
chose initrd_generator=mkosi-initrd turns the opt-in into nothing. Such plugins are found by their
code, not by their file name (Debian's 85-initrd.install became 55-initrd.install; copies get
renamed), and the staging area is looked at for what plugins before ours left there.

A plugin is a rival when its code (comment lines left out)
  - makes or takes an initrd: runs a generator (resources/initrd-generators.list), copies or links
    another generator's output (/boot/initrd.img-KVER, /boot/initramfs-KVER...), or a prebuilt
    image beside the kernel image;
  - writes where kernel-install takes initrds from: the staging area or the entry directory;
  - and acts under initrd_generator=mkosi-initrd: it never looks at the generator setting, or it
    names ours (mkosi's own plugin acts on mkosi-initrd too).
A plugin whose only evidence is a /boot file that does not exist for this kernel stages nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.kernel_install.policy import GENERATOR, Action, Context, Request
from mkosi_initrd.resources import read_list

OURS = "mkosi_initrd.kernel_install"  # what our install.d script runs: never our own rival
ETC_PLUGINS = Path("/etc/kernel/install.d")
MASKABLE = (
    Path("/run/kernel/install.d"),
    Path("/usr/local/lib/kernel/install.d"),
    Path("/usr/lib/kernel/install.d"),
)
PLUGIN_DIRS = (ETC_PLUGINS, *MASKABLE)  # kernel-install's order: /etc first
MAX_SCRIPT = 1 << 20  # plugins are scripts; a larger file is not read

_DESTINATION = re.compile(r"KERNEL_INSTALL_STAGING_AREA|staging_area|BOOT_DIR_ABS|ENTRY_DIR_ABS")
_GENERATOR_SETTING = re.compile(r"KERNEL_INSTALL_INITRD_GENERATOR|initrd_generator")
_BOOT_IMAGE = re.compile(r"/boot/(initrd\.img-|initramfs-)")
_BESIDE_KERNEL = re.compile(r"\$\{?KERNEL_IMAGE%/\*\}?/|dirname\b[^\n]*KERNEL_IMAGE")
# Writes an initrd under the name kernel-install takes: a redirection or copy whose target, at the end
# of the command, is "$KERNEL_INSTALL_STAGING_AREA/initrd" (the entry writers only test and glob it).
_WRITES_INITRD = re.compile(
    r"(?:>|\b(?:cp|ln|install|mv)\b[^\n]*\s)\s*[\"']?\$\{?(?:KERNEL_INSTALL_STAGING_AREA|BOOT_DIR_ABS|"
    r"ENTRY_DIR_ABS)\}?/initrd[\"']?\s*(?:$|[;&|\\])",
    re.M,
)


@dataclass(frozen=True)
class Rival:
    plugin: Path
    evidence: str  # what its code does, for the message

    @property
    def masking_command(self) -> str:
        """The exact command that stops kernel-install from running it."""
        name = self.plugin.name
        if self.plugin.parent in MASKABLE:
            return f"ln -s /dev/null {ETC_PLUGINS / name}"
        if self.plugin.parent == ETC_PLUGINS:
            return f"mv {self.plugin} {self.plugin}.disabled"  # kernel-install runs *.install only
        return f"remove {self.plugin} from $KERNEL_INSTALL_PLUGINS"

    def warning(self) -> str:
        return (
            f"{self.plugin} {self.evidence}, also under initrd_generator={GENERATOR}: the boot entry "
            f"would get its initrd instead of ours or beside it (the last one's /init runs). "
            f"Mask it with: {self.masking_command}"
        )


def _code(text: str) -> str:
    """The script without comment lines (a comment naming dracut runs nothing)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _generator_pattern(names: Iterable[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    # A shell command word, or a quoted program name in an argument vector (Python plugins).
    return re.compile(rf"(?:^|[\s;&|(`])(?P<cmd>{alts})(?=\s|$)|[\"'](?P<quoted>{alts})[\"']", re.M)


def classify(text: str, kver: str, boot: Path = Path("/boot"), generators: Sequence[str] = ()) -> str | None:
    """What makes the plugin with this code a rival (None if it is not one)."""
    code = _code(text)
    if OURS in code or not _DESTINATION.search(code):
        return None
    if _GENERATOR_SETTING.search(code) and GENERATOR not in code:
        return None  # it steps aside for any generator but its own
    if _WRITES_INITRD.search(code):
        return "writes an initrd where ours is staged"
    names = generators or read_list("initrd-generators.list")
    run = _generator_pattern(names).search(code)
    if run is not None:
        return f"runs {run.group('cmd') or run.group('quoted')}"
    if _BESIDE_KERNEL.search(code):
        return "copies a prebuilt initrd from beside the kernel image"
    for m in _BOOT_IMAGE.finditer(code):
        existing = sorted(boot.glob(f"{m.group(1)}{kver}*"))
        if existing:
            return f"stages {existing[0]}"
    return None


def active_plugins(dirs: Sequence[Path], listed: Sequence[Path] | None = None) -> list[Path]:
    """The plugins kernel-install runs, in order: those of $KERNEL_INSTALL_PLUGINS if set, else every
    *.install of the directories, the first directory having a name deciding (a link to /dev/null,
    an empty or non-executable file masks it)."""
    if listed is not None:
        return [p for p in listed if p.is_file() and os.access(p, os.X_OK)]
    chosen: dict[str, Path] = {}
    for d in dirs:
        try:
            names = sorted(p.name for p in d.iterdir() if p.name.endswith(".install"))
        except OSError:
            continue
        for name in names:
            chosen.setdefault(name, d / name)
    out = []
    for name in sorted(chosen):
        path = chosen[name]
        masked = path.resolve() == Path("/dev/null") or not path.is_file() or path.stat().st_size == 0
        if not masked and os.access(path, os.X_OK):
            out.append(path)
    return out


def _read(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_SCRIPT:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return None if b"\0" in data[:4096] else data.decode(errors="replace")


def find(
    kver: str, dirs: Sequence[Path], listed: Sequence[Path] | None = None, boot: Path = Path("/boot")
) -> list[Rival]:
    """Every active plugin whose code would stage another initrd for `kver`."""
    generators = read_list("initrd-generators.list")
    out = []
    for plugin in active_plugins(dirs, listed):
        text = _read(plugin)
        evidence = classify(text, kver, boot, generators) if text is not None else None
        if evidence is not None:
            out.append(Rival(plugin, evidence))
    return out


def foreign_staged(staging: Path, ours: Iterable[str]) -> list[Path]:
    """initrd* files that plugins before ours left in the staging area (ours overwrite theirs)."""
    mine = set(ours)
    try:
        return sorted(p for p in staging.iterdir() if p.name.startswith("initrd") and p.name not in mine)
    except OSError:
        return []


def rival_warnings(
    req: Request,
    ctx: Context,
    action: Action,
    dirs: Sequence[Path] = PLUGIN_DIRS,
    boot: Path = Path("/boot"),
) -> list[str]:
    """Plugins that would put another initrd into the boot entry instead of ours or beside it, each
    with the command that masks it, and initrd files that plugins run before this one left in the
    staging area."""
    if action.output is None or ctx.staging is None or action.output.parent != ctx.staging:
        return []
    if action.format != "cpio":
        return []  # a UKI carries its own initrd: what others stage does not reach it
    found = [r.warning() for r in find(req.kver, dirs, ctx.plugins, boot)]
    ours = [p.name for p in (action.output, action.microcode_output) if p is not None]
    left = foreign_staged(ctx.staging, ours)
    if left:
        found.append(
            f"a plugin run before this one staged {' '.join(map(str, left))}: the boot entry would load "
            "it beside ours; `kernel-install -v add ...` lists the plugins it runs"
        )
    return found
