"""Generated entries: what systemd needs to run as the initrd's PID 1, beyond the packages' files.

- /init → /usr/lib/systemd/systemd (the kernel runs /init from an initramfs)
- /etc/initrd-release: the root's os-release, marked as this initrd (systemd enters initrd mode
  when it exists)
- /sysroot and the usual mount points, /dev/console (the kernel opens it for PID 1's stdio
  before devtmpfs is mounted)
- usr-merge symlinks (/bin → usr/bin ...) exactly as the root has them
- /etc/passwd, /etc/group: the users and groups the included packages declare in sysusers.d, root
  left to systemd-sysusers at boot so it takes a passwd.* credential
  (accounts.py)
- the extra tree in resources/extra (presets, dm udev rule, cryptsetup credential drop-ins;
  resources/extra-systemd-N only for systemd >= N, so older ones log no unknown settings)
- /usr/lib/clock-epoch (when SOURCE_DATE_EPOCH gives it a meaningful mtime)
- a manifest of what went in (/usr/lib/mkosi-initrd/manifest.json: manifest.py)

hwdb: none. A compiled hwdb.bin adds its size raw for keyboard/input quirks that finding and
unlocking the root does not depend on (13 MB on Debian 12); its sources are left out by the removal list.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

from mkosi_initrd import __version__
from mkosi_initrd.config.model import Config
from mkosi_initrd.plan.model import Entry, Plan
from mkosi_initrd.planner.accounts import passwd_group_files
from mkosi_initrd.planner.manifest import MANIFEST, manifest
from mkosi_initrd.resources import resource_dir

ORIGIN = "generated"
SYSTEMD = "/usr/lib/systemd/systemd"
USRMERGE_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
VARIANT_ID = "mkosi-initrd"
# Mount points and directories systemd and the tools in the initrd expect to exist.
DIRS = {
    "/dev": 0o755,
    "/proc": 0o555,
    "/sys": 0o555,
    "/run": 0o755,
    "/sysroot": 0o755,
    "/tmp": 0o1777,
    "/var/tmp": 0o1777,
    "/root": 0o700,
    "/etc": 0o755,
}


def _file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data=data, size=len(data), origin=ORIGIN)


def _dir(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode, origin=ORIGIN)


def _symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, linkto=target, size=len(target), origin=ORIGIN)


# --- os-release


def initrd_release(os_release: dict[str, str]) -> bytes:
    """The root's os-release, with NAME/PRETTY_NAME and VARIANT saying this is our initrd."""
    fields = dict(os_release)
    for key in ("NAME", "PRETTY_NAME"):
        if key in fields:
            fields[key] = f"{fields[key]} ({VARIANT_ID})"
    fields.setdefault("NAME", "Linux")
    fields["VARIANT"] = f"mkosi-initrd {__version__}"
    fields["VARIANT_ID"] = VARIANT_ID
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in fields.items()).encode()


# --- users and groups


# --- the extra tree, usr-merge, manifest


def extra_tree(base: Path | None = None) -> list[Entry]:
    """Files under resources/extra, as 0644 files (directories are implied)."""
    base = base or resource_dir() / "extra"
    out = []
    for dirpath, _dirnames, filenames in os.walk(base):
        for name in filenames:
            p = Path(dirpath) / name
            data = p.read_bytes()
            out.append(_file("/" + str(p.relative_to(base)), data))
    return sorted(out, key=lambda e: e.path)


def systemd_version(plan: Plan) -> int | None:
    """The major version of the planned systemd package ("252.39-1~deb12u2" → 252)."""
    for p in plan.packages:
        if p.name == "systemd":
            evr = p.nevra[len(p.name) + 1 :].split(":", 1)[-1]
            digits = re.match(r"\d+", evr)
            return int(digits.group()) if digits else None
    return None


def extra_trees(version: int | None) -> list[Entry]:
    """resources/extra, plus each resources/extra-systemd-N whose settings the planned systemd
    knows (N <= its version; all of them when the version is unknown)."""
    out = extra_tree()
    for d in sorted(resource_dir().glob("extra-systemd-*")):
        since = d.name.rsplit("-", 1)[1]
        if since.isdigit() and (version is None or version >= int(since)):
            out += extra_tree(d)
    return sorted(out, key=lambda e: e.path)


def usrmerge_links(root: Path) -> list[Entry]:
    """/bin → usr/bin and friends, for exactly the links the root has."""
    out = []
    for name in USRMERGE_LINKS:
        p = root / name
        if p.is_symlink():
            out.append(_symlink(f"/{name}", os.readlink(p)))
    return out


def generated_entries(config: Config, plan: Plan) -> tuple[Entry, ...]:
    """Entries to add to (or, for /etc/passwd and /etc/group, merge over) the plan so far."""
    planned = {e.path: e for e in plan.entries}
    out: list[Entry] = [_dir(p, mode) for p, mode in DIRS.items()]
    out.append(Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1), origin=ORIGIN))
    out.append(_symlink("/init", SYSTEMD.lstrip("/")))
    out.append(_file("/etc/initrd-release", initrd_release(plan.os_release)))
    if "/etc/os-release" not in planned and "/usr/lib/os-release" not in planned:
        out.append(_symlink("/etc/os-release", "initrd-release"))
    out += usrmerge_links(config.root)
    passwd, group = passwd_group_files(plan.entries, config.root)
    out += [_file("/etc/passwd", passwd), _file("/etc/group", group)]
    out += extra_trees(systemd_version(plan))
    if config.source_date_epoch > 0:
        # systemd takes this file's mtime as the earliest plausible time, and resets a clock that is
        # more than 15 years past it. Every entry gets SOURCE_DATE_EPOCH as its mtime; without one
        # it would say 1970, so then systemd's built-in epoch is the better floor.
        out.append(_file("/usr/lib/clock-epoch", b""))
    out.append(_file(MANIFEST, manifest(config, plan)))
    # Directories the plan already has keep their package's mode; identical symlinks stay the package's.
    return tuple(e for e in out if not _already_planned(e, planned.get(e.path)))


def _already_planned(e: Entry, old: Entry | None) -> bool:
    if old is None:
        return False
    return (e.is_dir and old.is_dir) or (e.is_symlink and old.is_symlink and e.linkto == old.linkto)
