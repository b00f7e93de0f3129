"""kernel-install plugin: `50-mkosi-initrd.install COMMAND KVER ENTRY_DIR [KERNEL_IMAGE] [INITRD...]`.

What to do (and where the output goes) is decided by policy.py, from the arguments and the
environment; rivals.py warns about plugins that would spoil the output. A matching prebuilt generic
initrd that a package installed as /usr/lib/modules/KVER/initrd (prebuilt.py) is copied there instead
of building.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mkosi_initrd import log as logmod
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel_install.policy import Action, Context, Request, context_from_env, decide, parse_argv
from mkosi_initrd.kernel_install.rivals import rival_warnings

if TYPE_CHECKING:
    from mkosi_initrd.config.sysextconf import SysextDef

MODULES_DIR = Path("/usr/lib/modules")


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

    from mkosi_initrd.image.atomic import atomic_write

    with prebuilt.open("rb") as src, atomic_write(output) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return f"copied prebuilt {prebuilt} to {output} ({output.stat().st_size / 1e6:.1f} MB)"


def build(req: Request, action: Action, root: Path = Path("/")) -> str:
    """Host-only build for KVER (which need not be the running kernel); returns the summary line."""
    from mkosi_initrd.build.options import BuildOptions
    from mkosi_initrd.build.pipeline import build as build_image
    from mkosi_initrd.config.load import load_config
    from mkosi_initrd.kernel_install.prebuilt import prebuilt_initrd

    assert action.output is not None
    check_kernel(req.kver, root)
    prebuilt = prebuilt_initrd(root, req.kver) if action.format == "cpio" else None
    if prebuilt is not None:
        return copy_prebuilt(prebuilt, action.output)
    # The root's files and the settings' defaults: what `mkosi-initrd -k KVER` would build.
    config = load_config(root.resolve(), req.kver)
    options = BuildOptions(
        output=action.output,
        format=action.format,
        microcode_output=action.microcode_output,
        kernel_image=req.kernel_image,
    )
    return build_image(config, options).summary


def companion_files(root: Path, kver: str) -> tuple[Path, ...]:
    """The UKI companions the configuration names ([UKI] Addons=, Credentials=), as paths in `root`."""
    from mkosi_initrd.config.load import load_config
    from mkosi_initrd.rootfs import resolve_in_root

    config = load_config(root.resolve(), kver)
    return tuple(resolve_in_root(root, word) for word in (*config.addons, *config.credentials))


def remove(req: Request, ctx: Context, action: Action) -> None:
    from mkosi_initrd.kernel_install.companions import remove_companions

    if action.output is not None:
        logmod.log.info("removing %s", action.output)
        action.output.unlink(missing_ok=True)
    if ctx.layout == "uki" and (removed := remove_companions(ctx, req.kver)) is not None:
        logmod.log.info("removed %s", removed)


def run(req: Request, ctx: Context, root: Path = Path("/")) -> int:
    log = logmod.log
    if ctx.verbose and ctx.conf_files:
        log.info("read %s", " ".join(map(str, ctx.conf_files)))
    action = decide(req, ctx)
    if action.kind == "skip":
        log.info("skipping: %s", action.reason)
        return 0
    if action.kind == "remove":
        remove(req, ctx, action)
        return 0
    assert action.output is not None
    for warning in dict.fromkeys(rival_warnings(req, ctx, action)):  # each once
        log.warning("%s", warning)
    from mkosi_initrd.config.sysextconf import read_definitions
    from mkosi_initrd.scratch import ScratchDir

    companions: tuple[Path, ...] = ()
    if ctx.layout == "uki":
        from mkosi_initrd.kernel_install.companions import check_companions

        check_kernel(req.kver, root)
        companions = companion_files(root, req.kver)
        check_companions(companions)  # a missing file stops the add before anything is replaced
    definitions = read_definitions(root)  # so does a bad extension definition
    with ScratchDir("mkosi-initrd-sysext-") as scratch:
        images = extension_images(req, action, root, definitions, scratch)
        log.info("building %s for kernel %s (%s)", action.output, req.kver, action.reason)
        log.info("%s", build(req, action, root))
        deliver(req, ctx, action, (*companions, *images.values()), images, scratch)
    return 0


def extension_images(
    req: Request, action: Action, root: Path, definitions: Sequence[SysextDef], scratch: Path
) -> dict[str, Path]:
    """The sysext.d extensions built for this kernel, before the base (a failure replaces nothing)."""
    from mkosi_initrd.kernel_install.extensions import build_extensions, command_builder
    from mkosi_initrd.kernel_install.prebuilt import prebuilt_initrd

    if not definitions:
        return {}
    check_kernel(req.kver, root)
    base = prebuilt_initrd(root, req.kver) if action.format == "cpio" else None
    images = build_extensions(definitions, req.kver, root, scratch, command_builder(base))
    logmod.log.info("built %s for kernel %s", " ".join(p.name for p in images.values()), req.kver)
    return images


def deliver(
    req: Request,
    ctx: Context,
    action: Action,
    companions: Sequence[Path],
    images: Mapping[str, Path],
    scratch: Path,
) -> None:
    """uki: every companion (addons, credentials, extensions) in one call; type-1: the extra initrd."""
    from mkosi_initrd.kernel_install.companions import stage_companions
    from mkosi_initrd.kernel_install.extensions import deliver_type1

    if ctx.layout == "uki":
        for d in stage_companions(ctx, req.kver, companions):
            logmod.log.info("staged %s in %s", " ".join(p.name for p in companions), d)
    elif (written := deliver_type1(ctx, action, images, scratch)) is not None:
        logmod.log.info("extensions %s for the boot entry in %s", " ".join(images), written)


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
