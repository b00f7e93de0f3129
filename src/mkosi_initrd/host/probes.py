"""What the running host uses: loaded and built-in modules, device modaliases, the root's block stack,
the file systems the initrd mounts.

Every probe takes the sysfs/procfs paths as parameters (Config.sysfs/procfs), so tests run on
fixture trees; reasons name the paths as the host sees them (`/sys/...`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.rootfs import resolve_in_root

# dm UUID prefix (set by the tool that created the mapping) → the target module it needs.
_DM_UUID_MODULES = (
    ("CRYPT-VERITY-", "dm_verity"),
    ("CRYPT-INTEGRITY-", "dm_integrity"),
    ("CRYPT-", "dm_crypt"),
    ("LVM-", "dm_mod"),
    ("mpath-", "dm_multipath"),
)
# /sys/block/mdX/md/level → the personality module.
_MD_LEVEL_MODULES = {
    "raid0": "raid0",
    "raid1": "raid1",
    "raid4": "raid456",
    "raid5": "raid456",
    "raid6": "raid456",
    "raid10": "raid10",
    "linear": "linear",
}


@dataclass(frozen=True)
class Want:
    """A module (by name) or a modalias (to look up) the host needs, and why."""

    reason: str
    module: str = ""
    modalias: str = ""


def shown(sysfs: Path, path: Path) -> str:
    """A fixture path as the host would name it."""
    try:
        return "/sys/" + str(path.relative_to(sysfs))
    except ValueError:
        return str(path)


def read_attr(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def sys_modules(sysfs: Path) -> Iterator[Want]:
    """/sys/module lists loaded modules and built-in ones that have parameters."""
    moddir = sysfs / "module"
    if moddir.is_dir():
        for name in sorted(os.listdir(moddir)):
            yield Want(reason=f"host: /sys/module/{name}", module=name)


def device_modaliases(sysfs: Path) -> Iterator[Want]:
    """Every /sys/devices/**/modalias (symlinks are not followed: sysfs has loops)."""
    for dirpath in _dirs_with(str(sysfs / "devices"), "modalias"):
        alias = read_attr(Path(dirpath) / "modalias")
        if alias:
            yield Want(reason=f"modalias: {shown(sysfs, Path(dirpath))} ({alias})", modalias=alias)


def _dirs_with(top: str, name: str) -> Iterator[str]:
    """Directories under `top` (sorted, top-down, symlinks not followed) that hold a file `name`.

    One scandir per directory and the d_type it returns: os.walk's extra bookkeeping doubled the
    time of this walk over sysfs's ~1000 directories (it is on every host-only build)."""
    try:
        with os.scandir(top) as it:
            found = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    if any(e.name == name for e in found):
        yield top
    for e in found:
        if e.is_dir(follow_symlinks=False):
            yield from _dirs_with(e.path, name)


@dataclass(frozen=True)
class RootMount:
    fstype: str
    devnum: str  # "MAJ:MIN"
    source: str


def root_mount(procfs: Path, where: str = "/") -> RootMount | None:
    """The mount at `where` (/ by default) from mountinfo (the last one wins when mounts are stacked)."""
    found = None
    for line in read_attr(procfs / "self/mountinfo").splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or _fstab_unescape(fields[4]) != where:
            continue
        rfields = right.split()
        if len(rfields) >= 2:
            found = RootMount(fstype=rfields[0], devnum=fields[2], source=rfields[1])
    return found


def block_dir(sysfs: Path, mount: RootMount) -> Path | None:
    """The sysfs directory of the root's block device (resolved), if it has one."""
    link = sysfs / "dev/block" / mount.devnum
    if not mount.devnum.startswith("0:") and link.exists():
        return Path(os.path.realpath(link))
    # Anonymous device numbers (btrfs): the source names the device, /dev/mapper/NAME by its dm name.
    classes = sysfs / "class/block"
    base = os.path.basename(mount.source)
    if mount.source.startswith("/dev/mapper/") and classes.is_dir():
        for dev in sorted(os.listdir(classes)):
            if read_attr(classes / dev / "dm/name") == base:
                return Path(os.path.realpath(classes / dev))
    if mount.source.startswith("/dev/") and (classes / base).exists():
        return Path(os.path.realpath(classes / base))
    return None


def _stack(sysfs: Path, block: Path, seen: set[Path]) -> Iterator[Want]:
    """The block device, what it is built from (slaves), and the drivers of their parents."""
    if block in seen:
        return
    seen.add(block)
    name = shown(sysfs, block)
    uuid = read_attr(block / "dm/uuid")
    if (block / "dm").is_dir():
        yield Want(reason=f"root: device-mapper {name}", module="dm_mod")
        for prefix, module in _DM_UUID_MODULES:
            if uuid.startswith(prefix):
                yield Want(reason=f"root: {name} (dm uuid {prefix}...)", module=module)
                break
    level = read_attr(block / "md/level")
    if level:
        yield Want(reason=f"root: md {name}", module="md_mod")
        if level in _MD_LEVEL_MODULES:
            yield Want(reason=f"root: md {name} ({level})", module=_MD_LEVEL_MODULES[level])
    slaves = block / "slaves"
    if slaves.is_dir():
        for slave in sorted(os.listdir(slaves)):
            yield from _stack(sysfs, Path(os.path.realpath(slaves / slave)), seen)
    # A partition's disk is its parent directory; then walk up to the bus.
    devices = sysfs / "devices"
    parent = block
    while parent != devices and devices in parent.parents:
        modlink = parent / "driver/module"  # absent for built-in drivers: nothing to add
        if modlink.exists():
            yield Want(
                reason=f"root: driver of {shown(sysfs, parent)}",
                module=os.path.basename(os.path.realpath(modlink)),
            )
        alias = read_attr(parent / "modalias")
        if alias:
            yield Want(reason=f"root: modalias of {shown(sysfs, parent)} ({alias})", modalias=alias)
        parent = parent.parent


def needed(root: Path, sysfs: Path, procfs: Path) -> Iterator[Want]:
    """What the host cannot boot without: the file systems the initrd mounts, the root's block stack."""
    for fstype, reason in initrd_filesystems(root, procfs):
        yield Want(reason=reason, module=fstype)
        yield Want(reason=reason, modalias=f"fs-{fstype}")
    yield from root_needs(sysfs, procfs, os.path.realpath(root))


def used(sysfs: Path) -> Iterator[Want]:
    """What the host uses now: loaded and built-in modules, its devices' modaliases."""
    yield from sys_modules(sysfs)
    yield from device_modaliases(sysfs)


def root_needs(sysfs: Path, procfs: Path, where: str = "/") -> Iterator[Want]:
    """The modules the block stack of the root mounted at `where` is made of (its file system:
    initrd_filesystems)."""
    mount = root_mount(procfs, where)
    if mount is None:
        return
    sysfs = Path(os.path.realpath(sysfs))  # compared with resolved links below
    block = block_dir(sysfs, mount)
    if block is not None:
        yield from _stack(sysfs, block, set())


# Root file systems that do not tell what the installed system boots from: a container's or live
# image's root, a chroot on tmpfs. A host-only build there cannot narrow file systems down.
UNTELLING_ROOTS = frozenset({"overlay", "tmpfs", "rootfs", "ramfs", "aufs", "fuse-overlayfs"})

# fstab types that are not file systems a module or tool is needed for.
_NOT_FS = frozenset({"auto", "none", "swap", "ignore", "bind", "rbind", "tmpfs", "proc", "sysfs", "devpts"})


def _fstab_unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t")


def root_fs_known(root: Path, procfs: Path) -> bool:
    """Whether the root's own file system can be told: mounted as itself, or named by /etc/fstab."""
    mount = root_mount(procfs, os.path.realpath(root))
    if mount is not None and mount.fstype not in UNTELLING_ROOTS:
        return True
    return any(
        t not in UNTELLING_ROOTS and t not in _NOT_FS
        for where, types, _ in fstab_entries(root)
        if where == "/"
        for t in types
    )


def fstab_entries(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """(mount point, types, options) of each line of the root's /etc/fstab."""
    for line in read_attr(resolve_in_root(root, "/etc/fstab")).splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3:
            options = fields[3].split(",") if len(fields) > 3 else []
            yield _fstab_unescape(fields[1]), fields[2].split(","), options


def initrd_filesystems(root: Path, procfs: Path) -> Iterator[tuple[str, str]]:
    """(fstype, reason): the file systems the initrd mounts on this host.

    The root as mounted now (mountinfo), and from the root's /etc/fstab the entries systemd mounts
    in the initrd: /, /usr and anything marked x-initrd.mount. Each type once, the first reason wins.
    For a --root other than /, the mount at that directory, if it is one (a sysroot that is only a
    directory, as in a build root, tells nothing; the running system's / is not the target's).
    """
    seen: set[str] = set()
    where = os.path.realpath(root)
    mount = root_mount(procfs, where)
    if mount is not None and mount.fstype not in _NOT_FS:
        seen.add(mount.fstype)
        yield mount.fstype, f"root: {mount.fstype} on /" + ("" if where == "/" else f" ({where})")
    for point, types, options in fstab_entries(root):
        if point not in ("/", "/usr") and "x-initrd.mount" not in options:
            continue
        for t in types:  # fstab allows a list of types to try
            if t not in _NOT_FS and t not in seen:
                seen.add(t)
                yield t, f"fstab: {t} on {point}"
