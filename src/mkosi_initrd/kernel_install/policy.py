"""What the plugin does for a kernel-install call, as a function of its arguments and environment.

Acts only when the admin opted in (initrd_generator=mkosi-initrd, or uki_generator=mkosi-initrd with
layout=uki). Whenever it does not act it exits 0, never 77: 77 would stop the plugins after us
(60-ukify, 90-loaderentry), which still have to install the kernel.

Where the output goes depends on the layout:
  bls, uki, custom  $KERNEL_INSTALL_STAGING_AREA/initrd (+ microcode), picked up by the 60/90 plugins
  uki + uki_generator=mkosi-initrd   $KERNEL_INSTALL_STAGING_AREA/uki.efi, for 90-uki-copy
  other             $KERNEL_INSTALL_BOOT_ROOT/initramfs-KVER.img (GRUB's fixed name), removed on `remove`
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel_install import installconf

GENERATOR = "mkosi-initrd"


@dataclass(frozen=True)
class Request:
    """The argument vector; kernel-install passes three arguments for `remove`, four or more for `add`."""

    command: str = ""
    kver: str = ""
    entry_dir: Path | None = None
    kernel_image: Path | None = None
    initrds: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Context:
    """What kernel-install told us through the environment (and install.conf, where it says nothing)."""

    layout: str = ""
    initrd_generator: str = ""
    uki_generator: str = ""
    image_type: str = ""  # "uki", "pe", "unknown"; empty: kernel-install too old to say
    staging: Path | None = None
    boot_root: Path | None = None
    entry_token: str = ""  # $KERNEL_INSTALL_ENTRY_TOKEN: the UKI is $BOOT/EFI/Linux/TOKEN-KVER.efi
    verbose: bool = False
    # kernel-install < 254 has no `microcode` staging file type: its 90-loaderentry ignores it.
    staging_microcode: bool = False
    plugins: tuple[Path, ...] | None = None  # $KERNEL_INSTALL_PLUGINS, if set
    conf_files: tuple[Path, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Action:
    """What to do. `kind` is "skip", "build" or "remove"; `reason` is shown in verbose mode."""

    kind: str
    reason: str
    output: Path | None = None
    microcode_output: Path | None = None
    format: str = "cpio"


def parse_argv(argv: Sequence[str]) -> Request:
    """Never fails: missing arguments stay empty and are judged by `decide`."""
    args = list(argv)

    def get(i: int) -> str:
        return args[i] if len(args) > i else ""

    return Request(
        command=get(0),
        kver=get(1),
        entry_dir=Path(get(2)) if get(2) else None,
        kernel_image=Path(get(3)) if get(3) else None,
        initrds=tuple(Path(a) for a in args[4:] if a),
    )


def context_from_env(environ: Mapping[str, str]) -> Context:
    conf = installconf.settings(environ)
    plugins = environ.get("KERNEL_INSTALL_PLUGINS")
    staging = environ.get("KERNEL_INSTALL_STAGING_AREA")
    boot_root = environ.get("KERNEL_INSTALL_BOOT_ROOT")
    return Context(
        layout=conf.layout,
        initrd_generator=conf.initrd_generator,
        uki_generator=conf.uki_generator,
        image_type=environ.get("KERNEL_INSTALL_IMAGE_TYPE", ""),
        staging=Path(staging) if staging else None,
        boot_root=Path(boot_root) if boot_root else None,
        entry_token=environ.get("KERNEL_INSTALL_ENTRY_TOKEN", ""),
        verbose=environ.get("KERNEL_INSTALL_VERBOSE", "0") not in ("", "0"),
        # kernel-install exports KERNEL_INSTALL_UKI_GENERATOR (possibly empty) since systemd 254
        # (systemd PR #26940), the release that also defined the `microcode` staging file (PR #27941).
        staging_microcode="KERNEL_INSTALL_UKI_GENERATOR" in environ,
        plugins=tuple(Path(p) for p in plugins.split()) if plugins and plugins.strip() != ":" else None,
        conf_files=conf.files,
    )


def _is_uki(image: Path) -> bool:
    # Imported here: a plugin that is not selected exits before it would need pefile.
    from mkosi_initrd.uki.describe import is_uki

    return is_uki(image)


def decide(req: Request, ctx: Context) -> Action:
    """The whole policy, as a function of arguments and environment (the image is looked at for `add`)."""
    builds_uki = ctx.layout == "uki" and ctx.uki_generator == GENERATOR
    if ctx.initrd_generator != GENERATOR and not builds_uki:
        return Action(
            "skip",
            f"initrd_generator={ctx.initrd_generator or '(unset)'}, "
            f"uki_generator={ctx.uki_generator or '(unset)'}: not selected",
        )
    if req.command == "remove":
        if ctx.layout == "other" and ctx.boot_root and req.kver:
            return Action("remove", "layout=other", output=ctx.boot_root / f"initramfs-{req.kver}.img")
        if ctx.layout == "uki" and req.kver:
            # output None: the UKI itself is 90-uki-copy's; its companion files (companions.py) are ours.
            return Action("remove", "layout=uki: the UKI's companion files")
        return Action("skip", f"remove: nothing of ours to remove for layout={ctx.layout}")
    if req.command != "add":
        return Action("skip", f"command {req.command or '(none)'!r} is not add or remove")
    if not req.kver:
        raise InitrdError("add: no kernel version given", hint="usage: add KVER ENTRY_DIR KERNEL_IMAGE")
    if ctx.image_type == "uki" or (not ctx.image_type and req.kernel_image and _is_uki(req.kernel_image)):
        return Action("skip", f"{req.kernel_image} is already a unified kernel image")
    if req.initrds and ctx.layout != "uki":
        return Action("skip", f"pre-built initrds were given: {' '.join(map(str, req.initrds))}")
    if ctx.layout == "other":
        if ctx.boot_root is None:
            raise InitrdError(
                "layout=other but KERNEL_INSTALL_BOOT_ROOT is not set", hint="run kernel-install"
            )
        return Action("build", "layout=other", output=ctx.boot_root / f"initramfs-{req.kver}.img")
    if ctx.staging is None:
        raise InitrdError(
            f"layout={ctx.layout} but KERNEL_INSTALL_STAGING_AREA is not set", hint="run kernel-install"
        )
    if builds_uki:
        return Action("build", "uki_generator=mkosi-initrd", output=ctx.staging / "uki.efi", format="uki")
    microcode = ctx.staging / "microcode" if ctx.staging_microcode else None
    return Action("build", f"layout={ctx.layout}", output=ctx.staging / "initrd", microcode_output=microcode)
