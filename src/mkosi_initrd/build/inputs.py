"""What a cached build depends on, as JSON-able values: the key of the cheap inputs, computed before
any planning (build/cache.py's docstring lists them), and the signatures of every file a plan read."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from mkosi_initrd import __version__
from mkosi_initrd.config.model import Config
from mkosi_initrd.packages.locations import DPKG_STATUS, RPMDB_PATHS

if TYPE_CHECKING:
    from mkosi_initrd.build.options import BuildOptions
    from mkosi_initrd.plan.model import Plan


FORMAT = 1


_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # mkosi_initrd/, all of it


_DPKG_FILES = ("status", "diversions")


_RPM_SKIP = ("-shm", ".lock")  # touched by readers, not by changes


_UCODE_DIRS = ("amd-ucode", "intel-ucode")


_FIRMWARE_DIRS = ("/usr/lib/firmware", "/lib/firmware")


# What json.dumps takes: the key's parts and the signatures are values of this shape.
Json: TypeAlias = "str | int | float | bool | None | Sequence[Json] | Mapping[str, Json]"
Sig = list[int] | None
Inputs = list[tuple[str, Sig]]  # every file a plan read, with its signature


def sig(path: Path | str) -> Sig:
    """What changes when a file is replaced, written, truncated or chmod'ed; None when it is absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _digest_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _listing(d: Path, content_only: bool = False) -> list[tuple[str, Sig]]:
    """Names and signatures of a directory's files (not recursive); `content_only`: without the
    ctime, which readers change too (librpm reopens its sqlite WAL on every open)."""
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out = [(n, sig(d / n)) for n in names]
    return [(n, s[:5] if s and content_only else s) for n, s in out]


def code_state() -> list[Json]:
    """Our own code and data files, by content: a changed rule or list must rebuild."""
    h = hashlib.sha256(__version__.encode())
    for dirpath, dirnames, filenames in os.walk(_PACKAGE_DIR):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, _PACKAGE_DIR).encode() + b"\0")
            with open(p, "rb") as f:
                h.update(f.read())
    return [__version__, h.hexdigest()]


def db_state(root: Path) -> list[Json]:
    """The package database: dpkg's status by content (it is small), rpm's files by signature.

    A package installed, removed or updated changes these; reading the database does not."""
    out: list[Json] = []
    for p in RPMDB_PATHS:
        d = root / p
        if d.is_dir():
            out.append([p, [x for x in _listing(d, True) if not x[0].endswith(_RPM_SKIP)]])
    admindir = (root / DPKG_STATUS).parent
    if admindir.is_dir():
        out.append(["dpkg", [[n, _digest_file(admindir / n)] for n in _DPKG_FILES]])
        out.append(["dpkg info", sig(admindir / "info")])
    return out


def kernel_state(root: Path, kver: str) -> list[Json]:
    """The module index files (modules.*) and the module directory itself."""
    from mkosi_initrd.rootfs import resolve_in_root

    d = resolve_in_root(root, f"/usr/lib/modules/{kver}")
    return [str(d), sig(d), [x for x in _listing(d) if x[0].startswith("modules.")]]


def firmware_state(root: Path, config: Config) -> list[Json]:
    """Microcode blobs (read outside the plan), and the whole tree when firmware globs are used."""
    from mkosi_initrd.rootfs import resolve_in_root

    out: list[Json] = []
    for base in _FIRMWARE_DIRS:
        for vendor in _UCODE_DIRS:
            d = resolve_in_root(root, f"{base}/{vendor}")
            out.append([str(d), _listing(d)])
    if config.firmware:
        top = resolve_in_root(root, _FIRMWARE_DIRS[0])
        for dirpath, dirnames, _ in os.walk(top):
            dirnames.sort()
            out.append([dirpath, sig(dirpath)])
    return out


def host_files_state(config: Config) -> list[Json]:
    """The host's configuration files a host-only build may carry or read (files and trees)."""
    from mkosi_initrd.host.files import HOST_FILES, PROFILE_FILES
    from mkosi_initrd.rootfs import resolve_in_root

    paths = [*HOST_FILES, *(p for files in PROFILE_FILES.values() for p in files)]
    out: list[Json] = []
    for p in paths:
        host = resolve_in_root(config.root, p)
        out.append([p, sig(host)])
        if host.is_dir():
            for dirpath, dirnames, filenames in os.walk(host):
                dirnames.sort()
                out += [[os.path.join(dirpath, n), sig(os.path.join(dirpath, n))] for n in sorted(filenames)]
    return out


def host_state(config: Config) -> list[Json]:
    """Host-only builds: the same probes kernel/selection.py makes, the CPU microcode is chosen for, the
    kernel command line (resume=) and the host's configuration files."""
    from mkosi_initrd.host import probes
    from mkosi_initrd.host.cpu import host_cpu

    def wants() -> Iterator[probes.Want]:
        yield from probes.needed(config.root, config.sysfs, config.procfs)
        yield from probes.used(config.sysfs)

    cpu = host_cpu(config.procfs)  # what microcode.py chooses the blob by
    try:
        cmdline = (config.procfs / "cmdline").read_text()
    except OSError:
        cmdline = ""
    return [[w.reason, w.module, w.modalias] for w in wants()] + [
        repr(cpu),
        cmdline,
        host_files_state(config),
    ]


def value_state(value: object) -> Json:
    """A settings value (a UKI's options, say) with every file it names by signature."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [[f.name, value_state(getattr(value, f.name))] for f in fields(value)]
    if isinstance(value, Path):
        return [str(value), sig(value)]
    return repr(value)


_LOCATIONS = ("root", "sysfs", "procfs")  # where to read, not what: their contents are keyed elsewhere


def config_state(config: Config) -> list[Json]:
    """Every setting's value (config files and command line merged), not the files' text; a file a
    setting names (VerityCertificate=) by its signature too: its bytes go into the image."""
    out: list[Json] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "config_files":
            continue
        if isinstance(value, Path) and f.name not in _LOCATIONS:
            out.append([f.name, value_state(value)])
        else:
            out.append([f.name, repr(value)])
    return out


def input_key(config: Config, options: BuildOptions) -> str:
    """The key of the cheap inputs; see the module docstring."""
    from mkosi_initrd.osrelease import OS_RELEASE_PATHS
    from mkosi_initrd.planner.effective import effective_config
    from mkosi_initrd.rootfs import resolve_in_root

    root = config.root
    parts: list[Json] = [
        ["format", FORMAT],
        ["code", code_state()],
        ["config", config_state(effective_config(config))],
        ["options", options.format, options.microcode_output is None],
        ["uki", value_state(options.uki) if options.format == "uki" else None],
        ["packages", db_state(root)],
        ["kernel", kernel_state(root, config.kver)],
        ["os-release", [_digest_file(resolve_in_root(root, p)) for p in OS_RELEASE_PATHS]],
        ["firmware", firmware_state(root, config)],
        ["host", None if config.generic else host_state(config)],
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def plan_inputs(config: Config, plan: Plan) -> Inputs:
    """Every file the plan copies or read from, and where missing firmware would appear."""
    from mkosi_initrd.rootfs import resolve_in_root

    paths: set[str] = {str(e.source) for e in plan.entries if e.source is not None}
    kdir = resolve_in_root(config.root, f"/usr/lib/modules/{config.kver}")
    for m in plan.modules:
        # gzip modules are stored decompressed (as data): their source is the .gz next to it.
        for candidate in (kdir / m.path, kdir / f"{m.path}.gz"):
            if os.path.lexists(candidate):
                paths.add(str(candidate))
    for src, _ in config.extra_files:
        paths.add(str(resolve_in_root(config.root, src)))
    for e in plan.entries:
        if e.origin == "host-config" and e.data is not None:  # crypttab, key files: read, then filtered
            paths.add(str(resolve_in_root(config.root, e.path)))
    fwdir = resolve_in_root(config.root, _FIRMWARE_DIRS[0])
    for missing in plan.missing_firmware:
        name = missing.split(" (wanted by", 1)[0]
        for base in (f"updates/{config.kver}", "updates", config.kver, ""):
            paths.add(str(_nearest_dir(fwdir / base / name)))
    return [(p, sig(p)) for p in sorted(paths)]


def _nearest_dir(path: Path) -> Path:
    """The deepest existing directory on the way to `path`: its mtime changes when `path` appears."""
    d = path.parent
    while not d.is_dir() and d != d.parent:
        d = d.parent
    return d
