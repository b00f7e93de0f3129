"""Plan → files on disk: initrd (+ early microcode cpio), optionally a UKI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.config import Config


@dataclass(frozen=True)
class BuildOptions:
    output: Path
    format: str = "cpio"  # "cpio" or "uki"
    # Early microcode cpio (x86): None → prepended to `output` (uncompressed segment first);
    # a path → written there as its own file (kernel-install's staging `microcode`).
    microcode_output: Path | None = None
    kernel_image: Path | None = None  # for --format uki
    uki: object | None = None  # uki.UkiOptions for --format uki
    use_cache: bool = True


@dataclass(frozen=True)
class BuildResult:
    output: Path
    microcode: Path | None
    size: int
    packages: int
    modules: int

    @property
    def summary(self) -> str:
        mb = self.size / 1e6
        return f"wrote {self.output} ({mb:.1f} MB, {self.packages} packages, {self.modules} modules)"


def build(config: Config, options: BuildOptions) -> BuildResult:
    raise NotImplementedError("build.build: owned by the image work (issue 4)")


def options_from_args(config: Config, args: object) -> BuildOptions:
    """CLI arguments → BuildOptions (the UKI part via uki.options_from_args)."""
    raise NotImplementedError("build.options_from_args: owned by the image work (issue 4)")
