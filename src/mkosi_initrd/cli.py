"""Command line: `mkosi-initrd [build]`, `plan`, `inspect`, `addon`, `sysext`.

The options are config/settings.py's table: parse_args() turns the command line into the values of
its settings, from which the Config (config/load.py), the build's options and the UKI's are made."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mkosi_initrd import __version__
from mkosi_initrd import log as logmod
from mkosi_initrd.config.model import Config
from mkosi_initrd.config.settings import SETTINGS, Setting, Values
from mkosi_initrd.errors import InitrdError

if TYPE_CHECKING:
    from mkosi_initrd.build.options import BuildOptions

COMMANDS = {
    "build": "build an initrd (the default command)",
    "plan": "show what would go into the initrd, and why",
    "inspect": "show what an initrd, UKI or UKI addon holds",
    "addon": "build a UKI addon (NAME.addon.efi: a command line, initrd or microcode for systemd-stub)",
    "sysext": "build a system extension for the initrd (NAME.sysext.raw: packages the base initrd lacks)",
}


@dataclass(frozen=True)
class Invocation:
    command: str
    values: Values


def _add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, s: Setting) -> None:
    """One setting as argparse declares it. Settings of the config (and the build's flags) default
    to None on the command line: what it does not say, the files and the table decide."""
    kw: dict[str, object] = {"help": s.help if s.help is not None else argparse.SUPPRESS}
    if s.choices:
        kw["choices"] = s.choices
    if s.metavar:
        kw["metavar"] = s.metavar
    default = None if s.target == "config" else s.default
    if s.kind == "flag":
        kw.update(action="store_const", const=not s.negate, default=default)
    elif s.kind == "tristate":
        kw.update(action=argparse.BooleanOptionalAction, default=None)
    elif s.kind == "words":
        kw.update(action="append", default=None)
    else:
        kw.update(type={"path": Path, "number": int, "text": str}[s.kind], default=default)
    if s.positional:
        parser.add_argument(s.flags[0], **kw)  # type: ignore[arg-type]
    else:
        parser.add_argument(*s.flags, dest=s.name, **kw)  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mkosi-initrd",
        description="Build an initrd (or UKI) from the packages already installed on this system.",
        epilog="Commands: build (default), plan, inspect, addon, sysext. See 'mkosi-initrd COMMAND --help'.",
    )
    p.add_argument("--version", action="version", version=f"mkosi-initrd {__version__}")
    sub = p.add_subparsers(dest="command")
    for command, help in COMMANDS.items():
        parser = sub.add_parser(command, help=help)
        groups: dict[str, argparse._ArgumentGroup] = {}
        for s in SETTINGS:
            if s.flags and command in s.commands:
                group = groups.setdefault(s.group, parser.add_argument_group(s.group)) if s.group else None
                _add(group or parser, s)
    return p


def parse_args(argv: list[str]) -> Invocation:
    # `mkosi-initrd -k KVER -o OUT` builds, like mkosi's mkosi-initrd: "build" is implied.
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["build", *argv]
    values = vars(_parser().parse_args(argv))
    return Invocation(str(values.pop("command")), Values(values))


def default_kver(root: Path) -> str:
    """The running kernel for /, else the only kernel installed in the root."""
    running = platform.release()
    moddir = root / "usr/lib/modules"
    if (moddir / running).is_dir():
        return running
    kvers = (
        sorted(p.name for p in moddir.glob("*") if (p / "modules.dep").exists()) if moddir.is_dir() else []
    )
    if len(kvers) > 1:
        # A kernel package's removal leaves its directory with the generated index files but no
        # modules (Debian's postrm): that is no kernel to choose from.
        kvers = [k for k in kvers if (moddir / k / "kernel").is_dir()] or kvers
    if len(kvers) == 1:
        return kvers[0]
    if not kvers:
        raise InitrdError(
            f"no kernel installed in {moddir}",
            hint="install a kernel package, or pass -k KVER"
            " (`mkosi-initrd plan --packages-only` plans the packages alone)",
        )
    raise InitrdError(f"several kernels in {moddir}: {' '.join(kvers)}", hint="choose one with -k KVER")


def make_config(invocation: Invocation, kernel: bool = True) -> Config:
    from mkosi_initrd.config.load import load_config

    values = invocation.values
    given = values.path("root") or Path("/")
    root = given.resolve()
    if not root.is_dir():
        raise InitrdError(
            f"root {given} does not exist or is not a directory",
            hint="point --root at an installed system (or a sysroot with its package database)",
        )
    kver = values.text("kver") or (default_kver(root) if kernel else "")
    return load_config(root, kver, values)


def cmd_plan(invocation: Invocation) -> int:
    """Print the plan; exit 1 when it has errors (a build of it would stop), the plan shown all the same."""
    from mkosi_initrd.planner.steps import make_package_plan, make_plan
    from mkosi_initrd.report import format_plan

    if invocation.values.flag("packages_only"):
        plan = make_package_plan(make_config(invocation, kernel=False))
    else:
        plan = make_plan(make_config(invocation), read_needs=False)  # what files need is for the check only
    if invocation.values.flag("json"):
        json.dump(plan.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_plan(plan))
    if plan.errors:
        from mkosi_initrd.build.pipeline import files_absent

        print(
            f"mkosi-initrd: error: a build would stop: {files_absent(plan)} (see the plan's errors)",
            file=sys.stderr,
        )
        return 1
    return 0


def build_setup(invocation: Invocation) -> tuple[Config, BuildOptions]:
    """The Config and the options of a `build` command line; a UKI's inputs are resolved and checked
    here, before anything is built."""
    from mkosi_initrd.build.options import build_options

    config = make_config(invocation)
    values = invocation.values
    uki = None
    if values.text("format") == "uki":
        from mkosi_initrd.uki.options import uki_inputs, uki_options

        uki = uki_options(config, uki_inputs(values))
    return config, build_options(values, uki)


def cmd_build(invocation: Invocation) -> int:
    from mkosi_initrd.build.pipeline import build

    start = time.monotonic()
    result = build(*build_setup(invocation))
    print(f"{result.summary} in {time.monotonic() - start:.2f}s")
    return 0


def cmd_inspect(invocation: Invocation) -> int:
    from mkosi_initrd.inspect import inspect

    values = invocation.values
    path = values.path("file")
    assert path is not None  # argparse requires it
    return inspect(
        path, as_json=bool(values.flag("json")), list_files=bool(values.flag("files")),
        cert=values.path("certificate"),
    )  # fmt: skip


def cmd_addon(invocation: Invocation) -> int:
    from mkosi_initrd.uki.addon import addon_options, build_addon

    v = invocation.values
    options = addon_options(
        (v.path("root") or Path("/")).resolve(),
        v.text("name") or "",
        cmdline=v.text("cmdline"),
        initrd=v.path("initrd"),
        ucode=v.path("ucode"),
        output=v.path("output"),
        stub=v.path("stub"),
        key=v.path("secureboot_private_key"),
        cert=v.path("secureboot_certificate"),
        tool=v.text("signtool"),
    )
    build_addon(options)
    signed = f"signed with {options.signing.cert}" if options.signing else "unsigned"
    print(f"{options.output}: UKI addon on {options.stub}, {signed}")
    return 0


def cmd_sysext(invocation: Invocation) -> int:
    from mkosi_initrd.extensions.sysext import SysextRequest, build_sysext

    v = invocation.values
    name = v.text("name") or ""
    fmt = v.text("sysext_format") or "raw"
    output = v.path("output") or Path(f"{name}.sysext.raw" if fmt == "raw" else name)
    request = SysextRequest(
        name=name,
        config=make_config(invocation),
        output=output.absolute(),
        packages=tuple(v.words("sysext_packages")),
        modules=tuple(v.words("sysext_modules")),
        files=tuple(v.words("sysext_files")),
        fmt=fmt,
        key=v.path("verity_key"),
        cert=v.path("verity_certificate"),
        base=v.path("base"),
    )
    start = time.monotonic()
    for made in build_sysext(request):
        trust = "signed" if made.signed else "unsigned: for local trusted use only (/run/extensions)"
        print(f"{made.path}: {made.kind}, {len(made.files)} files, {made.size() / 1e6:.2f} MB, {trust}")
    print(f"built in {time.monotonic() - start:.2f}s")
    return 0


def subject(invocation: Invocation) -> str:
    """What the command was doing, for the one line a bug prints (guard.py)."""
    values = invocation.values
    if invocation.command == "inspect":
        return f"inspecting {values.path('file')}"
    if invocation.command == "addon":
        return f"building the addon {values.text('name')}"
    if invocation.command == "sysext":
        return f"building the extension {values.text('name')}"
    kver = values.text("kver") or default_kver((values.path("root") or Path("/")).resolve())
    if invocation.command == "plan":
        return f"planning the initrd for kernel {kver}"
    return f"building the {'UKI' if values.text('format') == 'uki' else 'initrd'} for kernel {kver}"


def main(argv: list[str] | None = None) -> int:
    from mkosi_initrd import guard

    invocation = parse_args(sys.argv[1:] if argv is None else argv)
    values = invocation.values
    debug = bool(values.flag("debug")) or os.environ.get("MKOSI_INITRD_DEBUG") == "1"
    logmod.setup(verbose=bool(values.flag("verbose")), debug=debug)
    handler = {
        "build": cmd_build,
        "plan": cmd_plan,
        "inspect": cmd_inspect,
        "addon": cmd_addon,
        "sysext": cmd_sysext,
    }[invocation.command]
    return guard.run(lambda: handler(invocation), lambda: subject(invocation), debug=debug)
