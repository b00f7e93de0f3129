"""What a build writes, and where: the output options (format, microcode, UKI, cache), and its result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mkosi_initrd.config.settings import Values

if TYPE_CHECKING:
    # Only the type: a cached rebuild never imports the UKI code (pefile) it does not run.
    from mkosi_initrd.uki.options import UkiOptions


@dataclass(frozen=True)
class BuildOptions:
    output: Path
    format: str = "cpio"  # "cpio" or "uki"
    # Early microcode cpio (x86): None → prepended to `output` (uncompressed segment first);
    # a path → written there as its own file (kernel-install's staging `microcode`).
    microcode_output: Path | None = None
    kernel_image: Path | None = None  # for --format uki
    uki: UkiOptions | None = None  # --format uki: resolved before anything is built
    use_cache: bool = True


@dataclass(frozen=True)
class BuildResult:
    output: Path
    microcode: Path | None
    size: int
    packages: int
    modules: int
    checked: bool = True

    @property
    def summary(self) -> str:
        mb = self.size / 1e6
        unchecked = ", NOT checked: --no-check or Check=no" if not self.checked else ""
        counts = f"{self.packages} packages, {self.modules} modules"
        return f"wrote {self.output} ({mb:.1f} MB, {counts}{unchecked})"


def build_options(values: Values, uki: UkiOptions | None = None) -> BuildOptions:
    """The command line's build settings (target "build" in config/settings.py) → BuildOptions."""
    fmt = values.text("format") or "cpio"
    return BuildOptions(
        output=values.path("output") or Path("uki.efi" if fmt == "uki" else "initrd"),
        format=fmt,
        microcode_output=values.path("microcode_output"),
        kernel_image=values.path("kernel_image"),
        uki=uki,
        use_cache=values.flag("use_cache") is not False,
    )
