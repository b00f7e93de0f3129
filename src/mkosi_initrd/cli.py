"""Command line: `mkosi-initrd [build]`, `mkosi-initrd plan`, `mkosi-initrd inspect`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from mkosi_initrd import __version__
from mkosi_initrd import log as logmod
from mkosi_initrd.config import COMPRESSIONS, PROFILES, Config
from mkosi_initrd.errors import InitrdError

COMMANDS = ("build", "plan", "inspect")


def _selection_options(p: argparse.ArgumentParser) -> None:
    """Options that decide what goes into the initrd (shared by build and plan)."""
    p.add_argument(
        "-k",
        "--kernel-version",
        dest="kver",
        metavar="KVER",
        help="kernel version (default: the running kernel, or the only one installed in --root)",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="root of the installed system to take packages, modules and config from (default /)",
    )
    p.add_argument(
        "-g",
        "--generic",
        action="store_true",
        help="build a generic initrd: no host-specific modules or configuration",
    )
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        choices=PROFILES,
        help="add a profile's packages and modules (repeatable)",
    )
    p.add_argument("--backend", choices=("rpm", "dpkg"), help="package database backend (default: detect)")
    p.add_argument(
        "--add-package",
        action="append",
        default=[],
        metavar="ENTRY",
        help="also include a package, virtual provide or file path (repeatable)",
    )
    p.add_argument(
        "--remove-package",
        action="append",
        default=[],
        metavar="NAME",
        help="leave out a package, and the list entry of that name (repeatable)",
    )
    p.add_argument(
        "--add-module",
        action="append",
        default=[],
        metavar="PATTERN",
        help="module pattern to include, '-PATTERN' to exclude (repeatable)",
    )
    p.add_argument(
        "--add-firmware",
        action="append",
        default=[],
        metavar="GLOB",
        help="firmware glob relative to /usr/lib/firmware to include (repeatable)",
    )
    p.add_argument("--with-recommends", action="store_true", help="also follow weak dependencies")
    p.add_argument("--sysfs", type=Path, default=None, help=argparse.SUPPRESS)  # host probes, for tests
    p.add_argument("--procfs", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="show progress")
    p.add_argument("--debug", action="store_true", help="show debug output and tracebacks")


def _build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, help="output file (default: ./initrd, or ./uki.efi)")
    p.add_argument("-t", "--format", choices=("cpio", "uki"), default="cpio", help="output format")
    p.add_argument("--compression", choices=COMPRESSIONS, help="compressor for the cpio (default zstd)")
    p.add_argument("--level", type=int, help="compression level (default: zstd 3)")
    p.add_argument(
        "--microcode-output",
        type=Path,
        metavar="PATH",
        help="write the early microcode cpio here (x86; default: prepend nothing)",
    )
    p.add_argument("--no-microcode", action="store_true", help="no early microcode cpio")
    p.add_argument("--no-cache", action="store_true", help="do not reuse or store a cached result")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="skip the pre-flight check that the image would boot (for experts: an image missing "
        "a library, a program or a module is written anyway; the summary says it was not checked)",
    )
    uki = p.add_argument_group("UKI (--format uki)")
    uki.add_argument(
        "--kernel-image", type=Path, help="kernel image (default /usr/lib/modules/KVER/vmlinuz)"
    )
    uki.add_argument(
        "--cmdline",
        help="kernel command line (default: the root's /etc/kernel/cmdline or /usr/lib/kernel/cmdline;"
        " /proc/cmdline for --root / only)",
    )
    uki.add_argument("--stub", type=Path, help="systemd-stub to use")
    uki.add_argument("--os-release", type=Path, help="os-release for .osrel (default: the root's)")
    uki.add_argument("--splash", type=Path, help="splash image (.bmp)")
    uki.add_argument("--devicetree", type=Path, help="device tree blob (.dtb)")
    uki.add_argument("--secureboot-private-key", type=Path, metavar="KEY")
    uki.add_argument("--secureboot-certificate", type=Path, metavar="CERT")
    uki.add_argument("--signtool", choices=("sbsign", "systemd-sbsign"))
    uki.add_argument(
        "--sign-kernel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sign the inner kernel too (default: only when it is unsigned and keys are given)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mkosi-initrd",
        description="Build an initrd (or UKI) from the packages already installed on this system.",
        epilog="Commands: build (default), plan, inspect. See 'mkosi-initrd COMMAND --help'.",
    )
    p.add_argument("--version", action="version", version=f"mkosi-initrd {__version__}")
    sub = p.add_subparsers(dest="command")
    build = sub.add_parser("build", help="build an initrd (the default command)")
    _selection_options(build)
    _build_options(build)
    plan = sub.add_parser("plan", help="show what would go into the initrd, and why")
    _selection_options(plan)
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument(
        "--packages-only",
        action="store_true",
        help="plan the packages and their files alone, without a kernel (for roots that have none yet)",
    )
    insp = sub.add_parser("inspect", help="show what an initrd or UKI holds")
    insp.add_argument("file", type=Path)
    insp.add_argument("--json", action="store_true", help="print as JSON")
    insp.add_argument("--files", action="store_true", help="list every file")
    insp.add_argument("--debug", action="store_true")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    # `mkosi-initrd -k KVER -o OUT` builds, like mkosi's mkosi-initrd: "build" is implied.
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["build", *argv]
    return _parser().parse_args(argv)


def default_kver(root: Path) -> str:
    """The running kernel for /, else the only kernel installed in the root."""
    running = platform.release()
    moddir = root / "usr/lib/modules"
    if (moddir / running).is_dir():
        return running
    kvers = (
        sorted(p.name for p in moddir.glob("*") if (p / "modules.dep").exists()) if moddir.is_dir() else []
    )
    if len(kvers) == 1:
        return kvers[0]
    if not kvers:
        raise InitrdError(
            f"no kernel installed in {moddir}",
            hint="install a kernel package, or pass -k KVER"
            " (`mkosi-initrd plan --packages-only` plans the packages alone)",
        )
    raise InitrdError(f"several kernels in {moddir}: {' '.join(kvers)}", hint="choose one with -k KVER")


def make_config(args: argparse.Namespace, kernel: bool = True) -> Config:
    from mkosi_initrd.config import load_config

    root: Path = args.root.resolve()
    if not root.is_dir():
        raise InitrdError(
            f"root {args.root} does not exist or is not a directory",
            hint="point --root at an installed system (or a sysroot with its package database)",
        )
    kver = args.kver or (default_kver(root) if kernel else "")
    return load_config(root, kver, args)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan; exit 1 when it has errors (a build of it would stop), the plan shown all the same."""
    from mkosi_initrd.planner import make_package_plan, make_plan
    from mkosi_initrd.report import format_plan

    if args.packages_only:
        plan = make_package_plan(make_config(args, kernel=False))
    else:
        plan = make_plan(make_config(args), read_needs=False)  # what files need is for the check only
    if args.json:
        json.dump(plan.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_plan(plan))
    if plan.errors:
        from mkosi_initrd.build import files_absent

        print(
            f"mkosi-initrd: error: a build would stop: {files_absent(plan)} (see the plan's errors)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from mkosi_initrd.build import build, options_from_args

    start = time.monotonic()
    config = make_config(args)
    result = build(config, options_from_args(config, args))
    print(f"{result.summary} in {time.monotonic() - start:.2f}s")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from mkosi_initrd.inspect import inspect

    return inspect(args.file, as_json=args.json, list_files=args.files)


def subject(args: argparse.Namespace) -> str:
    """What the command was doing, for the one line a bug prints (guard.py)."""
    if args.command == "inspect":
        return f"inspecting {args.file}"
    kver = args.kver or default_kver(args.root.resolve())
    if args.command == "plan":
        return f"planning the initrd for kernel {kver}"
    return f"building the {'UKI' if args.format == 'uki' else 'initrd'} for kernel {kver}"


def main(argv: list[str] | None = None) -> int:
    from mkosi_initrd import guard

    args = parse_args(sys.argv[1:] if argv is None else argv)
    debug = getattr(args, "debug", False) or os.environ.get("MKOSI_INITRD_DEBUG") == "1"
    logmod.setup(verbose=getattr(args, "verbose", False), debug=debug)
    handler = {"build": cmd_build, "plan": cmd_plan, "inspect": cmd_inspect}[args.command]
    return guard.run(lambda: handler(args), lambda: subject(args), debug=debug)
