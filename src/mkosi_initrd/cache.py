"""Cached rebuilds: when nothing that decides the output changed, copy the last result into place.

An entry is found by a key over the cheap-to-read inputs, computed before any planning: our code
and data files, the configuration values (files and command line), the output options (for a UKI:
kernel image, stub, command line, keys ..., files by signature), the package database's state,
the kernel's module index, os-release, the microcode blobs and, in host-only mode, the host probes
(loaded modules, device modaliases, the root's block stack, the CPU). The entry then names every
file the plan copied or read (packages' files, modules, firmware, extra files) with its stat
signature, plus the directories where wanted firmware was missing; any difference is a miss. So a
package updated behind the database's back, an edited conffile, a new firmware file or a changed
crypttab carried in all rebuild.

Layout: DIR/<key>/{meta.json, output[, microcode]}. meta.json holds each file's SHA-256, checked
while the file is copied to its destination (through atomic.atomic_write); a mismatch discards the
copy and the entry, and the initrd is rebuilt: a corrupt entry is never shipped. Entries are
written to a temp directory and renamed into place, so concurrent builders need no lock (the
last rename wins; a reader holds the directory open). The directory is bounded in size: least
recently used entries go first (a hit touches meta.json).

The hit path imports neither the package backends nor the planner.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkosi_initrd import __version__
from mkosi_initrd.config import Config
from mkosi_initrd.log import log
from mkosi_initrd.scratch import remove_stale, scratch_name

if TYPE_CHECKING:
    from mkosi_initrd.cachemeta import CachedFile

DEFAULT_DIR = Path("/var/cache/mkosi-initrd")
DEFAULT_MAX_BYTES = 512 << 20
ENV_DIR = "MKOSI_INITRD_CACHE_DIR"
ENV_MAX = "MKOSI_INITRD_CACHE_MAX"  # bytes, with an optional K/M/G suffix
FORMAT = 1
_CHUNK = 1 << 20
_META = "meta.json"
_TMP, _TRASH = ".tmp-", ".trash-"  # + scratch.py's PID-START-RANDOM
_MODE = 0o600
_PACKAGE_DIR = Path(__file__).resolve().parent
# pkgdb.py's paths (a test holds them equal): importing it would cost the hit path its types.
RPMDB_PATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_FILES = ("status", "diversions")
_RPM_SKIP = ("-shm", ".lock")  # touched by readers, not by changes
_UCODE_DIRS = ("amd-ucode", "intel-ucode")
_FIRMWARE_DIRS = ("/usr/lib/firmware", "/lib/firmware")


class CorruptEntry(Exception):
    """A cached file does not match its checksum (raised inside atomic_write: the copy vanishes)."""


# --- settings


@dataclass(frozen=True)
class Settings:
    directory: Path
    max_bytes: int


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMG" else text
    if not number.isdigit():
        from mkosi_initrd.errors import InitrdError

        raise InitrdError(f"{ENV_MAX}={text}: not a size", hint="bytes, or a number with K, M or G")
    return int(number) * mult


def settings(directory: Path | None = None, environ: Any = None) -> Settings:
    env = os.environ if environ is None else environ
    d = directory or (Path(env[ENV_DIR]) if env.get(ENV_DIR) else DEFAULT_DIR)
    return Settings(d, parse_size(env[ENV_MAX]) if env.get(ENV_MAX) else DEFAULT_MAX_BYTES)


# --- signatures of inputs


Sig = list[int] | None


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


def _listing(d: Path, content_only: bool = False) -> list[Any]:
    """Names and signatures of a directory's files (not recursive); `content_only`: without the
    ctime, which readers change too (librpm reopens its sqlite WAL on every open)."""
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out = [[n, sig(d / n)] for n in names]
    return [[n, s[:5] if s and content_only else s] for n, s in out]


def code_state() -> list[Any]:
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


def db_state(root: Path) -> list[Any]:
    """The package database: dpkg's status by content (it is small), rpm's files by signature.

    A package installed, removed or updated changes these; reading the database does not."""
    out: list[Any] = []
    for p in RPMDB_PATHS:
        d = root / p
        if d.is_dir():
            out.append([p, [x for x in _listing(d, True) if not x[0].endswith(_RPM_SKIP)]])
    admindir = (root / DPKG_STATUS).parent
    if admindir.is_dir():
        out.append(["dpkg", [[n, _digest_file(admindir / n)] for n in _DPKG_FILES]])
        out.append(["dpkg info", sig(admindir / "info")])
    return out


def kernel_state(root: Path, kver: str) -> list[Any]:
    """The module index files (modules.*) and the module directory itself."""
    from mkosi_initrd.rootfs import resolve_in_root

    d = resolve_in_root(root, f"/usr/lib/modules/{kver}")
    return [str(d), sig(d), [x for x in _listing(d) if x[0].startswith("modules.")]]


def firmware_state(root: Path, config: Config) -> list[Any]:
    """Microcode blobs (read outside the plan), and the whole tree when firmware globs are used."""
    from mkosi_initrd.rootfs import resolve_in_root

    out: list[Any] = []
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


# Host files hostconfig.py reads to decide what to carry (besides the profiles' files, taken from
# hostconfig.PROFILE_FILES); a test holds this list to the paths named in hostconfig.py.
HOST_FILES = (
    "/etc/fstab",  # hostprobe.initrd_filesystems
    "/etc/crypttab",
    "/etc/cryptsetup-keys.d",
    "/etc/vconsole.conf",
    "/etc/default/keyboard",
    "/etc/kernel/cmdline",
    "/etc/initramfs-tools/conf.d/resume",
    "/etc/lvm/lvm.conf",
    "/etc/lvm/lvmlocal.conf",
)


def host_files_state(config: Config) -> list[Any]:
    """The host's configuration files a host-only build may carry or read (files and trees)."""
    from mkosi_initrd.hostconfig import PROFILE_FILES
    from mkosi_initrd.rootfs import resolve_in_root

    paths = [*HOST_FILES, *(p for files in PROFILE_FILES.values() for p in files)]
    out: list[Any] = []
    for p in paths:
        host = resolve_in_root(config.root, p)
        out.append([p, sig(host)])
        if host.is_dir():
            for dirpath, dirnames, filenames in os.walk(host):
                dirnames.sort()
                out += [[os.path.join(dirpath, n), sig(os.path.join(dirpath, n))] for n in sorted(filenames)]
    return out


def effective_config(config: Config) -> Config:
    """The configuration a host-only build plans with: profiles its root stack needs, packages its
    console needs (planner.make_plan does the same first)."""
    if config.generic:
        return config
    from mkosi_initrd import hostconfig, rootstack

    return hostconfig.with_host_packages(rootstack.with_host_profiles(config))


def host_state(config: Config) -> list[Any]:
    """Host-only builds: the same probes kmod.py makes, the CPU microcode is chosen for, the
    kernel command line (resume=) and the host's configuration files."""
    from mkosi_initrd import hostprobe

    def wants() -> Iterator[hostprobe.Want]:
        yield from hostprobe.needed(config.root, config.sysfs, config.procfs)
        yield from hostprobe.used(config.sysfs)

    cpu = ""
    try:
        with open(config.procfs / "cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU is the one microcode.py looks at
                cpu += line if line.split(":")[0].strip() in _CPU_FIELDS else ""
    except OSError:
        pass
    try:
        cmdline = (config.procfs / "cmdline").read_text()
    except OSError:
        cmdline = ""
    return [[w.reason, w.module, w.modalias] for w in wants()] + [cpu, cmdline, host_files_state(config)]


_CPU_FIELDS = ("vendor_id", "cpu family", "model", "stepping")


def value_state(value: Any) -> Any:
    """A settings value (a UKI's options, say) with every file it names by signature."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [[f.name, value_state(getattr(value, f.name))] for f in fields(value)]
    if isinstance(value, Path):
        return [str(value), sig(value)]
    return repr(value)


def config_state(config: Config) -> list[Any]:
    """Every setting's value (config files and command line merged), not the files' text."""
    return [[f.name, repr(getattr(config, f.name))] for f in fields(config) if f.name != "config_files"]


def input_key(config: Config, options: Any) -> str:
    """The key of the cheap inputs; see the module docstring."""
    from mkosi_initrd.osrelease import OS_RELEASE_PATHS
    from mkosi_initrd.rootfs import resolve_in_root

    root = config.root
    parts: list[Any] = [
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


def plan_inputs(config: Config, plan: Any) -> list[list[Any]]:
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
    return [[p, sig(p)] for p in sorted(paths)]


def _nearest_dir(path: Path) -> Path:
    """The deepest existing directory on the way to `path`: its mtime changes when `path` appears."""
    d = path.parent
    while not d.is_dir() and d != d.parent:
        d = d.parent
    return d


# --- entries


@dataclass(frozen=True)
class Hit:
    output: Path
    microcode: Path | None
    size: int
    packages: int
    modules: int


def _copy_verified(dir_fd: int, name: str, want: CachedFile, target: Path) -> int:
    """Copy a cached file to `target` atomically, checking its digest on the way; returns its size.

    The copy stays in the kernel (copy_file_range) while a thread hashes the same bytes through
    the page cache: on two cores that costs the longer of the two, not their sum."""
    from concurrent.futures import ThreadPoolExecutor

    from mkosi_initrd.atomic import atomic_write

    src = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with ThreadPoolExecutor(1) as pool, atomic_write(target, _MODE) as out:
            hashed = pool.submit(_digest_fd, src)
            size = _copy_fd(src, out.fileno())
            if hashed.result() != (want.sha256, size) or size != want.size:
                raise CorruptEntry(f"{name}: checksum mismatch")
    finally:
        os.close(src)
    return size


def _digest_fd(fd: int) -> tuple[str, int]:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest(), offset


def _copy_fd(src: int, dst: int) -> int:
    size = os.fstat(src).st_size
    offset = 0
    try:
        while offset < size:
            n = os.copy_file_range(src, dst, size - offset, offset)
            if n == 0:
                break
            offset += n
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    while chunk := os.pread(src, _CHUNK, offset):  # what copy_file_range could not do
        offset += os.write(dst, chunk)
    return offset


class BuildCache:
    def __init__(self, config: Config, options: Any, where: Settings) -> None:
        self.config = config
        self.options = options
        self.where = where
        self.key = input_key(config, options)
        self.entry = where.directory / self.key
        self.inputs: list[list[Any]] | None = None

    @classmethod
    def open(cls, config: Config, options: Any, directory: Path | None = None) -> BuildCache | None:
        """None when caching does not apply (--no-cache, a UKI without resolved options) or the
        directory is unusable."""
        if not getattr(options, "use_cache", True) or options.format not in ("cpio", "uki"):
            return None
        if options.format == "uki" and options.uki is None:
            return None
        where = settings(directory)
        try:
            where.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            log.debug("cache %s unusable: %s", where.directory, e)
            return None
        if not os.access(where.directory, os.W_OK):
            return None
        _remove_dead_temps(where.directory)  # a killed builder's, also when this build is a hit
        return cls(config, options, where)

    # -- lookup

    def lookup(self) -> Hit | None:
        """The cached result copied into place, or None (a miss, a stale, invalid or corrupt entry)."""
        try:
            dfd = os.open(self.entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            log.debug("cache miss: %s", self.key)
            return None
        try:
            return self._lookup(dfd)
        except Exception as e:  # never a traceback, never a permanent failure: build instead
            log.warning(
                "cache entry %s failed (%s: %s; this is a bug): rebuilding", self.entry, type(e).__name__, e
            )
            self._discard(dfd)
            return None
        finally:
            os.close(dfd)

    def _lookup(self, dfd: int) -> Hit | None:
        from mkosi_initrd import cachemeta

        # Everything about the entry is checked before anything is written.
        try:
            with open(os.open(_META, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)) as f:
                meta = cachemeta.parse(json.load(f), version=FORMAT, key=self.key)
        except (OSError, ValueError, cachemeta.InvalidEntry) as e:
            log.warning("cache entry %s is invalid (%s): rebuilding", self.entry, e)
            self._discard(dfd)
            return None
        for path, old in meta.inputs:
            if sig(path) != old:
                log.info("cache: %s changed, rebuilding", path)
                self._discard(dfd)
                return None
        microcode = self.options.microcode_output if "microcode" in meta.files else None
        try:
            size = _copy_verified(dfd, "output", meta.files["output"], self.options.output)
            if microcode is not None:
                _copy_verified(dfd, "microcode", meta.files["microcode"], microcode)
        except (CorruptEntry, OSError) as e:
            log.warning("cache entry %s is corrupt (%s): rebuilding", self.entry, e)
            self._discard(dfd)
            return None
        try:
            os.utime(_META, dir_fd=dfd)  # least recently used goes first
        except OSError:
            pass
        return Hit(Path(self.options.output), microcode, size, meta.packages, meta.modules)

    def _discard(self, dfd: int) -> None:
        """Remove the entry `dfd` refers to, unless another builder has replaced it meanwhile."""
        try:
            if os.stat(self.entry).st_ino == os.fstat(dfd).st_ino:
                _remove(self.entry, self.where.directory)
        except OSError:
            pass

    # -- store

    def record(self, plan: Any) -> None:
        """Note the plan's inputs; called before they are read, so a change while building shows."""
        self.inputs = plan_inputs(self.config, plan)

    def store(self, output: Path, microcode: Path | None, packages: int, modules: int) -> None:
        """Keep a copy of a fresh build; failures only cost the next build its shortcut."""
        if self.inputs is None:
            raise ValueError("BuildCache.store() without record(plan)")
        try:
            self._store(self.inputs, output, microcode, packages, modules)
        except OSError as e:
            log.warning("cannot store the build in the cache %s: %s", self.where.directory, e)
        except Exception as e:  # the build itself succeeded: its output stands
            log.warning("cannot store the build in the cache (%s: %s; this is a bug)", type(e).__name__, e)

    def _store(
        self, inputs: list[list[Any]], output: Path, microcode: Path | None, packages: int, modules: int
    ) -> None:
        top = self.where.directory
        tmp = top / scratch_name(_TMP)
        tmp.mkdir(mode=0o700)
        try:
            files = {"output": _copy_in(output, tmp / "output")}
            if microcode is not None:
                files["microcode"] = _copy_in(microcode, tmp / "microcode")
            total = sum(f["size"] for f in files.values())
            if total > self.where.max_bytes:
                return
            meta = {
                "format": FORMAT,
                "key": self.key,
                "created": int(time.time()),
                "files": files,
                "result": {"packages": packages, "modules": modules},
                "inputs": inputs,
            }
            (tmp / _META).write_text(json.dumps(meta))
            _publish(tmp, self.entry, top)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        evict(top, self.where.max_bytes, keep=self.entry.name)


def _copy_in(src: Path, dst: Path) -> dict[str, Any]:
    """A fresh output into the cache: copied in the kernel while a thread hashes it."""
    from concurrent.futures import ThreadPoolExecutor

    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _MODE)
        try:
            with ThreadPoolExecutor(1) as pool:
                hashed = pool.submit(_digest_fd, fd)
                size = _copy_fd(fd, out)
                digest, hashed_size = hashed.result()
        finally:
            os.close(out)
    finally:
        os.close(fd)
    if hashed_size != size:
        raise OSError(errno.EIO, f"{src} changed while it was copied into the cache")
    return {"sha256": digest, "size": size}


def _publish(tmp: Path, entry: Path, top: Path) -> None:
    """rename() a finished entry into place; a stale one of the same key is moved away first."""
    for _ in range(3):
        try:
            os.rename(tmp, entry)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _remove(entry, top)


def _remove(entry: Path, top: Path) -> None:
    """Move an entry out of the way (atomic), then delete it: readers never see half an entry."""
    trash = top / scratch_name(_TRASH)
    try:
        os.rename(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


# --- size bound


@dataclass(frozen=True)
class EntryInfo:
    path: Path
    size: int
    used: float


def entries(top: Path) -> list[EntryInfo]:
    out = []
    for p in top.iterdir() if top.is_dir() else ():
        if p.name.startswith("."):
            continue
        try:
            used = os.stat(p / _META).st_mtime
        except OSError:
            used = 0.0  # no meta: unfinished or broken, first to go
        size = sum(f.stat().st_size for f in _files(p))
        out.append(EntryInfo(p, size, used))
    return out


def _files(d: Path) -> Iterable[Path]:
    try:
        return [f for f in d.iterdir() if f.is_file()]
    except OSError:
        return []


def evict(top: Path, max_bytes: int, keep: str = "") -> list[Path]:
    """Remove least recently used entries until the cache holds at most `max_bytes`; also temps
    and trash of builders that died."""
    _remove_dead_temps(top)
    found = sorted(entries(top), key=lambda e: e.used)
    total = sum(e.size for e in found)
    removed = []
    for e in found:
        if total <= max_bytes:
            break
        if e.path.name == keep:
            continue
        _remove(e.path, top)
        total -= e.size
        removed.append(e.path)
        log.debug("cache: evicted %s (%d bytes)", e.path.name, e.size)
    return removed


def _remove_dead_temps(top: Path) -> None:
    """Half-written entries and trash of builders that died (scratch.py's stale check)."""
    for prefix in (_TMP, _TRASH):
        remove_stale(top, prefix)
