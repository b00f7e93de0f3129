"""/etc/passwd and /etc/group of the initrd: the users and groups the included packages declare in
sysusers.d (processed like systemd-sysusers), the groups their udev rules use, over the files a
package ships.

root is the exception when the initrd runs systemd-sysusers at boot: sysusers then creates root itself,
and only a user it creates takes the `passwd.hashed-password.root` / `passwd.plaintext-password.root` /
`passwd.shell.root` credentials. So a password for the emergency shell comes with the boot (an addon's
credential, SMBIOS, the command line) instead of being built in. Without one, sysusers leaves root
locked and the emergency units' drop-in (resources/extra) lets sulogin in without a password."""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.plan.model import Entry
from mkosi_initrd.rootfs import resolve_in_root

# sysusers.d's defaults (systemd's NOLOGIN and the first dynamic system id, counting down).
NOLOGIN = "/usr/sbin/nologin"


SYSTEM_ID_MAX = 999


def _content(e: Entry) -> bytes:
    if e.data is not None:
        return e.data
    if e.source is not None:
        return Path(e.source).read_bytes()
    return b""


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


SYSUSERS_BINARIES = ("/usr/bin/systemd-sysusers", "/bin/systemd-sysusers")
SYSUSERS_UNIT = "systemd-sysusers.service"
UNIT_DIRS = ("/usr/lib/systemd/system", "/etc/systemd/system", "/lib/systemd/system")


def passwd_group_files(entries: Sequence[Entry], root: Path) -> tuple[bytes, bytes]:
    """/etc/passwd and /etc/group for the planned `entries` (`root`'s /etc/group for rule groups)."""
    planned = {e.path: e for e in entries}
    acc = accounts(sysusers_files(entries))
    add_rule_groups(acc, udev_rule_groups(entries), root)
    root_at_boot = "root" in acc.users and sysusers_runs_at_boot(planned)
    return passwd_group(
        acc, planned.get("/etc/passwd"), planned.get("/etc/group"), root_at_boot=root_at_boot
    )


def sysusers_runs_at_boot(planned: dict[str, Entry]) -> bool:
    """systemd-sysusers, its unit and the sysinit.target.wants link that starts it are all planned."""
    unit = any(f"{d}/{SYSUSERS_UNIT}" in planned for d in UNIT_DIRS)
    wanted = any(f"{d}/sysinit.target.wants/{SYSUSERS_UNIT}" in planned for d in UNIT_DIRS)
    return unit and wanted and any(b in planned for b in SYSUSERS_BINARIES)


def passwd_group(
    acc: _Accounts, passwd: Entry | None = None, group: Entry | None = None, *, root_at_boot: bool = False
) -> tuple[bytes, bytes]:
    """passwd and group files: a package's own files (if planned) first, then sysusers entries they lack.
    With `root_at_boot` the passwd file has no root line (sysusers adds it at boot; its group stays)."""
    root = User("root", 0, 0, "", "/root", "/bin/sh")
    users = {"root": root, **acc.users}
    groups = {"root": 0, **acc.groups}
    existing = [f for f in _existing(passwd) if not (root_at_boot and f[0] == "root")]
    pw_lines = [":".join(f) for f in existing]
    have = {f[0] for f in existing} | ({"root"} if root_at_boot else set())
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


def udev_rule_groups(entries: Iterable[Entry]) -> set[str]:
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


def sysusers_files(entries: Iterable[Entry]) -> list[tuple[str, bytes]]:
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
