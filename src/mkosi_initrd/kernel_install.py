"""kernel-install plugin: `50-mkosi-initrd.install COMMAND KVER ENTRY_DIR [KERNEL_IMAGE] [INITRD...]`.

Acts only when the admin opted in (initrd_generator=mkosi-initrd, or uki_generator=mkosi-initrd with
layout=uki). Whenever it does not act it exits 0, never 77: 77 would stop the plugins after us
(60-ukify, 90-loaderentry), which still have to install the kernel.

Where the output goes depends on the layout:
  bls, uki, custom  $KERNEL_INSTALL_STAGING_AREA/initrd (+ microcode), picked up by the 60/90 plugins
  uki + uki_generator=mkosi-initrd   $KERNEL_INSTALL_STAGING_AREA/uki.efi, for 90-uki-copy
  other             $KERNEL_INSTALL_BOOT_ROOT/initramfs-KVER.img (GRUB's fixed name), removed on `remove`

A matching prebuilt generic initrd that a package installed as /usr/lib/modules/KVER/initrd (prebuilt.py)
is copied there instead of building.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkosi_initrd import installconf, rivals
from mkosi_initrd import log as logmod
from mkosi_initrd.errors import InitrdError

GENERATOR = "mkosi-initrd"
PLUGIN_DIRS = (
    Path("/etc/kernel/install.d"),
    Path("/run/kernel/install.d"),
    Path("/usr/local/lib/kernel/install.d"),
    Path("/usr/lib/kernel/install.d"),
)
MODULES_DIR = Path("/usr/lib/modules")


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
        verbose=environ.get("KERNEL_INSTALL_VERBOSE", "0") not in ("", "0"),
        # kernel-install exports KERNEL_INSTALL_UKI_GENERATOR (possibly empty) since systemd 254
        # (systemd PR #26940), the release that also defined the `microcode` staging file (PR #27941).
        staging_microcode="KERNEL_INSTALL_UKI_GENERATOR" in environ,
        plugins=tuple(Path(p) for p in plugins.split()) if plugins and plugins.strip() != ":" else None,
        conf_files=conf.files,
    )


def is_uki(image: Path) -> bool:
    """A PE file with a .linux section is a unified kernel image; a plain bzImage has none."""
    import pefile

    try:
        pe = pefile.PE(str(image), fast_load=True)
    except (pefile.PEFormatError, OSError):
        return False
    try:
        return any(s.Name.rstrip(b"\0") == b".linux" for s in pe.sections)
    finally:
        pe.close()


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
        return Action("skip", f"remove: nothing of ours to remove for layout={ctx.layout}")
    if req.command != "add":
        return Action("skip", f"command {req.command or '(none)'!r} is not add or remove")
    if not req.kver:
        raise InitrdError("add: no kernel version given", hint="usage: add KVER ENTRY_DIR KERNEL_IMAGE")
    if ctx.image_type == "uki" or (not ctx.image_type and req.kernel_image and is_uki(req.kernel_image)):
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


def rival_warnings(
    req: Request,
    ctx: Context,
    action: Action,
    dirs: Sequence[Path] = PLUGIN_DIRS,
    boot: Path = Path("/boot"),
) -> list[str]:
    """Plugins that would put another initrd into the boot entry instead of ours or beside it, each
    with the command that masks it (rivals.py finds them by what their code does), and initrd
    files that plugins run before this one left in the staging area."""
    if action.output is None or ctx.staging is None or action.output.parent != ctx.staging:
        return []
    if action.format != "cpio":
        return []  # a UKI carries its own initrd: what others stage does not reach it
    found = [r.warning() for r in rivals.find(req.kver, dirs, ctx.plugins, boot)]
    ours = [p.name for p in (action.output, action.microcode_output) if p is not None]
    left = rivals.foreign_staged(ctx.staging, ours)
    if left:
        found.append(
            f"a plugin run before this one staged {' '.join(map(str, left))}: the boot entry would load "
            "it beside ours; `kernel-install -v add ...` lists the plugins it runs"
        )
    return found


def check_kernel(kver: str, root: Path = Path("/")) -> None:
    moddir = root / MODULES_DIR.relative_to("/") / kver
    if not moddir.is_dir():
        raise InitrdError(
            f"kernel {kver}: {moddir} does not exist",
            hint=f"install the modules of kernel {kver} before running kernel-install add",
        )


def copy_prebuilt(prebuilt: Path, output: Path) -> str:
    """A packaged generic initrd (early microcode included: one file) replaces building."""
    import shutil

    from mkosi_initrd.atomic import atomic_write

    with prebuilt.open("rb") as src, atomic_write(output) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return f"copied prebuilt {prebuilt} to {output} ({output.stat().st_size / 1e6:.1f} MB)"


def build(req: Request, action: Action, root: Path = Path("/")) -> str:
    """Host-only build for KVER (which need not be the running kernel); returns the summary line."""
    from mkosi_initrd.build import BuildOptions
    from mkosi_initrd.build import build as build_image
    from mkosi_initrd.cli import make_config, parse_args
    from mkosi_initrd.prebuilt import prebuilt_initrd

    assert action.output is not None
    check_kernel(req.kver, root)
    prebuilt = prebuilt_initrd(root, req.kver) if action.format == "cpio" else None
    if prebuilt is not None:
        return copy_prebuilt(prebuilt, action.output)
    # The command line parser supplies the same defaults `mkosi-initrd -k KVER` would use.
    config = make_config(parse_args(["build", "--kernel-version", req.kver, "--root", str(root)]))
    options = BuildOptions(
        output=action.output,
        format=action.format,
        microcode_output=action.microcode_output,
        kernel_image=req.kernel_image,
    )
    return build_image(config, options).summary


def run(req: Request, ctx: Context) -> int:
    log = logmod.log
    if ctx.verbose and ctx.conf_files:
        log.info("read %s", " ".join(map(str, ctx.conf_files)))
    action = decide(req, ctx)
    if action.kind == "skip":
        log.info("skipping: %s", action.reason)
        return 0
    assert action.output is not None
    if action.kind == "remove":
        log.info("removing %s", action.output)
        action.output.unlink(missing_ok=True)
        return 0
    for warning in dict.fromkeys(rival_warnings(req, ctx, action)):  # each once
        log.warning("%s", warning)
    log.info("building %s for kernel %s (%s)", action.output, req.kver, action.reason)
    log.info("%s", build(req, action))
    return 0


def inspect(req: Request, ctx: Context) -> int:
    """`50-mkosi-initrd.install inspect [KVER [ENTRY_DIR [KERNEL_IMAGE]]]`: what `add` would do."""
    action = decide(Request("add", req.kver or "KVER", req.entry_dir, req.kernel_image, req.initrds), ctx)
    print(f"layout: {ctx.layout or '(unset)'}")
    print(f"initrd_generator: {ctx.initrd_generator or '(unset)'}")
    print(f"uki_generator: {ctx.uki_generator or '(unset)'}")
    print(f"install.conf: {' '.join(map(str, ctx.conf_files)) or '(none)'}")
    print(f"add: {action.kind} ({action.reason})")
    for label, path in (("output", action.output), ("microcode", action.microcode_output)):
        if path is not None:
            print(f"{label}: {path}")
    if action.kind == "build":
        print(f"format: {action.format}")
        for warning in rival_warnings(req, ctx, action):
            print(f"warning: {warning}")
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    from mkosi_initrd import guard

    env = os.environ if environ is None else environ
    req = parse_argv(sys.argv[1:] if argv is None else argv)
    debug = env.get("MKOSI_INITRD_DEBUG") == "1"

    def body() -> int:
        ctx = context_from_env(env)
        logmod.setup(verbose=ctx.verbose, debug=debug)
        if req.command == "inspect":
            return inspect(req, ctx)
        return run(req, ctx)

    return guard.run(
        body,
        lambda: f"kernel-install {req.command or '(no command)'} for kernel {req.kver or '?'}",
        debug=debug,
        how="MKOSI_INITRD_DEBUG=1",
    )


if __name__ == "__main__":
    raise SystemExit(main())
