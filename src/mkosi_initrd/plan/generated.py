"""Generated entries: what systemd needs to run as the initrd's PID 1, beyond the packages' files.

- /init → /usr/lib/systemd/systemd (the kernel runs /init from an initramfs)
- /etc/initrd-release: the root's os-release, marked as this initrd (systemd enters initrd mode
  when it exists)
- /sysroot and the usual mount points, /dev/console (the kernel opens it for PID 1's stdio
  before devtmpfs is mounted)
- usr-merge symlinks (/bin → usr/bin ...) exactly as the root has them
- /etc/passwd, /etc/group: the users and groups the included packages declare in sysusers.d
- the extra tree in resources/extra (presets, dm udev rule, cryptsetup credential drop-ins;
  resources/extra-systemd-N only for systemd >= N, so older ones log no unknown settings)
- /usr/lib/clock-epoch (when SOURCE_DATE_EPOCH gives it a meaningful mtime)
- a manifest of what went in (/usr/lib/mkosi-initrd/manifest.json)

hwdb: none. A compiled hwdb.bin adds its size raw for keyboard/input quirks that finding and
unlocking the root does not depend on (13 MB on Debian 12); its sources are left out by the removal list.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkosi_initrd import __version__
from mkosi_initrd.config.load import Config
from mkosi_initrd.image.compress import resolve_level
from mkosi_initrd.plan.model import Entry, Plan
from mkosi_initrd.resources import resource_dir
from mkosi_initrd.rootfs import resolve_in_root

ORIGIN = "generated"
MANIFEST = "/usr/lib/mkosi-initrd/manifest.json"
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
# sysusers.d's defaults (systemd's NOLOGIN and the first dynamic system id, counting down).
NOLOGIN = "/usr/sbin/nologin"
SYSTEM_ID_MAX = 999


def _file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data=data, size=len(data), origin=ORIGIN)


def _dir(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode, origin=ORIGIN)


def _symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, linkto=target, size=len(target), origin=ORIGIN)


def _content(e: Entry) -> bytes:
    if e.data is not None:
        return e.data
    if e.source is not None:
        return Path(e.source).read_bytes()
    return b""


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


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


@dataclass
class _Accounts:
    users: dict[str, User]
    groups: dict[str, int]
    members: dict[str, list[str]]

    def taken(self, n: int) -> bool:
        return n in {u.uid for u in self.users.values()} or n in self.groups.values()

    def allocate(self) -> int:
        n = SYSTEM_ID_MAX
        while self.taken(n):
            n -= 1
        return n


def _field(v: str, default: str) -> str:
    return default if v in ("-", "") else v


def _parse_sysusers(text: str) -> list[list[str]]:
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                lines.append(shlex.split(line))
            except ValueError:
                continue  # systemd-sysusers skips such lines too
    return lines


def accounts(sysusers: Sequence[tuple[str, bytes]]) -> _Accounts:
    """Users and groups declared by sysusers.d files (name, content), processed like systemd-sysusers:
    files by name, groups before users, fixed ids first, dynamic ids counting down from 999."""
    acc = _Accounts({}, {}, {})
    lines = [
        fields for _, text in sorted(sysusers) for fields in _parse_sysusers(text.decode(errors="replace"))
    ]

    # Fixed ids first so that a dynamic allocation never takes an id a later line asks for.
    def order(f: list[str]) -> tuple[bool, bool]:
        fixed = len(f) > 2 and f[2].split(":")[0].isdigit()
        return (not fixed, f[0] != "g")

    for f in sorted(lines, key=order):
        kind, name = f[0], f[1] if len(f) > 1 else ""
        if kind == "g" and name:
            if name not in acc.groups:
                want = f[2] if len(f) > 2 else "-"
                acc.groups[name] = int(want) if want.isdigit() else acc.allocate()
        elif kind == "u" and name and name not in acc.users:
            _add_user(acc, f)
        elif kind == "m" and len(f) > 2:
            acc.members.setdefault(f[2], []).append(name)
    return acc


def _add_user(acc: _Accounts, f: list[str]) -> None:
    name = f[1]
    ids = f[2] if len(f) > 2 else "-"
    uid_s, _, gid_s = ids.partition(":")
    uid = int(uid_s) if uid_s.isdigit() else acc.allocate()
    if gid_s.isdigit():
        gid = int(gid_s)
    elif gid_s:
        gid = acc.groups.setdefault(gid_s, acc.allocate())
    else:
        # A user gets a group of its own name, with the same id when that is free.
        gid = acc.groups.get(name, uid if uid not in acc.groups.values() else acc.allocate())
        acc.groups.setdefault(name, gid)
    acc.users[name] = User(
        name,
        uid,
        gid,
        _field(f[3] if len(f) > 3 else "-", ""),
        _field(f[4] if len(f) > 4 else "-", "/"),
        _field(f[5] if len(f) > 5 else "-", "/bin/sh" if uid == 0 else NOLOGIN),
    )


def _existing(e: Entry | None) -> list[list[str]]:
    if e is None:
        return []
    return [
        line.split(":") for line in _content(e).decode(errors="replace").splitlines() if line.count(":") >= 2
    ]


def passwd_group(
    acc: _Accounts, passwd: Entry | None = None, group: Entry | None = None
) -> tuple[bytes, bytes]:
    """passwd and group files: a package's own files (if planned) first, then sysusers entries they lack."""
    root = User("root", 0, 0, "", "/root", "/bin/sh")
    users = {"root": root, **acc.users}
    groups = {"root": 0, **acc.groups}
    pw_lines = [":".join(f) for f in _existing(passwd)]
    have = {f[0] for f in _existing(passwd)}
    for u in sorted(users.values(), key=lambda u: (u.uid, u.name)):
        if u.name not in have:
            pw_lines.append(f"{u.name}:x:{u.uid}:{u.gid}:{u.gecos}:{u.home}:{u.shell}")
    gr_lines = [":".join(f) for f in _existing(group)]
    have = {f[0] for f in _existing(group)}
    for name, gid in sorted(groups.items(), key=lambda g: (g[1], g[0])):
        if name not in have:
            gr_lines.append(f"{name}:x:{gid}:{','.join(sorted(acc.members.get(name, [])))}")
    return ("\n".join(pw_lines) + "\n").encode(), ("\n".join(gr_lines) + "\n").encode()


_RULE_GROUP = re.compile(r'\bGROUP\s*:?=\s*"([^"$%]+)"')


def _udev_rule_groups(entries: Iterable[Entry]) -> set[str]:
    """Groups the included udev rules assign to device nodes."""
    groups: set[str] = set()
    for e in entries:
        if e.path.startswith(("/usr/lib/udev/rules.d/", "/etc/udev/rules.d/")) and e.path.endswith(".rules"):
            groups.update(_RULE_GROUP.findall(_content(e).decode(errors="replace")))
    return groups


def add_rule_groups(acc: _Accounts, wanted: Iterable[str], root: Path) -> None:
    """Groups that udev rules use but no sysusers.d file declares (Debian creates kvm, render, sgx,
    input in maintainer scripts): the root's id when it has the group, else a dynamic one, so udevd
    does not warn about unknown groups."""
    missing = sorted(set(wanted) - set(acc.groups))
    if not missing:
        return
    host = {f[0]: f[2] for f in _group_file(resolve_in_root(root, "/etc/group")) if len(f) > 2}
    for name in missing:
        gid = host.get(name, "")
        acc.groups[name] = int(gid) if gid.isdigit() and not acc.taken(int(gid)) else acc.allocate()


def _group_file(path: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return []


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


def build_options(config: Config) -> dict[str, Any]:
    return {
        "generic": config.generic,
        "profiles": list(config.profiles),
        "compression": config.compression,
        "level": resolve_level(config.compression, config.level),
        "microcode": config.microcode,
        "weak_deps": config.weak_deps,
        "source_date_epoch": config.source_date_epoch,
        "packages": list(config.packages),
        "remove_packages": list(config.remove_packages),
        "modules": list(config.modules),
        "firmware": list(config.firmware),
    }


def manifest(config: Config, plan: Plan) -> bytes:
    """What this initrd holds and how it was made. No timestamps or host paths: builds stay reproducible."""
    data = {
        "generator": {"name": "mkosi-initrd", "version": __version__},
        "kernel": plan.kver,
        "backend": plan.backend,
        "os_release": {k: plan.os_release[k] for k in ("ID", "VERSION_ID") if k in plan.os_release},
        "build": build_options(config),
        "packages": [{"name": p.name, "nevra": p.nevra} for p in plan.packages],
        "modules": [{"name": m.name, "path": m.path} for m in plan.modules],
        "firmware": [f.path for f in plan.firmware],
    }
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _sysusers_files(entries: Iterable[Entry]) -> list[tuple[str, bytes]]:
    out = []
    for e in entries:
        d, name = os.path.split(e.path)
        if (
            d in ("/usr/lib/sysusers.d", "/etc/sysusers.d")
            and name.endswith(".conf")
            and stat.S_ISREG(e.mode)
        ):
            out.append((name, _content(e)))
    # A file in /etc overrides the one of the same name in /usr/lib.
    return list({name: (name, data) for name, data in sorted(out, key=lambda x: x[0])}.values())


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
    acc = accounts(_sysusers_files(plan.entries))
    add_rule_groups(acc, _udev_rule_groups(plan.entries), config.root)
    passwd, group = passwd_group(acc, planned.get("/etc/passwd"), planned.get("/etc/group"))
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
