"""Root disks on LVM, LUKS2, RAID1 and btrfs subvolumes, made inside a helper guest.

The host kernel of the test machine has no device-mapper or md, and a test must never touch the host's
block devices anyway, so the stacked layouts are made the way dracut's own tests make them: boot the
Debian kernel with a "maker" initrd (busybox + lvm2/cryptsetup/mdadm/mkfs tools + the kernel modules
they need, all taken from the host) on blank image files; its /init runs a shell script that builds the
layout on /dev/vdX, copies the marker tree (disks.fill_marker_tree) onto the root file system and
powers off. The images are cached by everything that went into them.

UUIDs are fixed, so tests know the kernel command line without reading anything back:
    root=UUID=disks.ROOT_UUID   rd.luks.uuid=LUKS_UUID   rd.md.uuid=MD_UUID   rd.lvm.vg=VG
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from boot.disks import FORMAT_VERSION, ROOT_UUID, fill_marker_tree
from boot.qemu import boot
from fixtures.cache import cached
from fixtures.kernel import require_host_kernel

MODULES = (
    "virtio_pci", "virtio_blk", "dm_mod", "dm_crypt", "xts", "algif_skcipher", "raid1", "md_mod",
    "ext4", "xfs", "btrfs",
)  # fmt: skip
TOOLS = (
    "mdadm",
    "lvm",
    "dmsetup",
    "cryptsetup",
    "mke2fs",
    "mkfs.btrfs",
    "btrfs",
    "mkfs.xfs",
    "sfdisk",
    "blkid",
)
LUKS_UUID = "0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
MD_UUID = "1a2b3c4d:5e6f7a8b:9c0d1e2f:3a4b5c6d"  # mdadm's notation; rd.md.uuid= takes it too
VG = "vgtest"
LUKS_KEY = b"mkosi-initrd-test-key"  # key file content (no newline); the LUKS2 key slot 0
LVM_CONF = """\
devices { obtain_device_list_from_udev = 0 }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
"""
MAKER_DONE = "MAKER-DONE"

_LUKS_FORMAT = (
    "cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 "
    f"--uuid {LUKS_UUID} --key-file /luks.key"
)
_EXT4 = f"/usr/sbin/mke2fs -q -t ext4 -L mroot -U {ROOT_UUID} -d /payload"
# Each layout: (disk sizes in MiB, shell script run in the maker guest). busybox sh prefers its own
# applets to $PATH, so tools busybox also has (mke2fs) are called by absolute path.
LAYOUTS: dict[str, tuple[tuple[int, ...], str]] = {
    "btrfs": (
        (160,),
        f"""mkfs.btrfs -q -L mroot -U {ROOT_UUID} /dev/vda
mount -t btrfs /dev/vda /mnt
btrfs subvolume create /mnt/root
cp -a /payload/. /mnt/root/
umount /mnt""",
    ),
    "lvm": (
        (64,),
        f"""lvm pvcreate -q /dev/vda
lvm vgcreate -q {VG} /dev/vda
lvm lvcreate -q -y -Zn -n root -L 40M {VG}
{_EXT4} /dev/{VG}/root
lvm vgchange -q -an {VG}""",
    ),
    "luks": (
        (64,),
        f"""{_LUKS_FORMAT} /dev/vda
cryptsetup open --key-file /luks.key /dev/vda root
{_EXT4} /dev/mapper/root
cryptsetup close root""",
    ),
    "lvm-on-luks": (
        (80,),
        f"""{_LUKS_FORMAT} /dev/vda
cryptsetup open --key-file /luks.key /dev/vda pv
lvm pvcreate -q /dev/mapper/pv
lvm vgcreate -q {VG} /dev/mapper/pv
lvm lvcreate -q -y -Zn -n root -L 40M {VG}
{_EXT4} /dev/{VG}/root
lvm vgchange -q -an {VG}
cryptsetup close pv""",
    ),
    "raid1": (
        (64, 64),
        f"""mdadm --create /dev/md0 --run --level=1 --raid-devices=2 --metadata=1.2 --assume-clean \\
    --uuid={MD_UUID} --homehost=any /dev/vda /dev/vdb
{_EXT4} /dev/md0
mdadm --stop /dev/md0""",
    ),
}


@dataclass(frozen=True)
class StackedRoot:
    kind: str
    images: tuple[Path, ...]

    @property
    def cmdline(self) -> str:
        """What a systemd initrd needs on the kernel command line to find this root (dracut reads it too)."""
        args = [f"root=UUID={ROOT_UUID}"]
        if self.kind == "btrfs":
            args.append("rootflags=subvol=root")
        if "luks" in self.kind:
            args.append(f"rd.luks.uuid={LUKS_UUID}")
        if "lvm" in self.kind:
            args.append(f"rd.lvm.vg={VG}")
        if self.kind == "raid1":
            args.append(f"rd.md.uuid={MD_UUID}")
        return " ".join(args)


def stacked_root(kind: str) -> StackedRoot:
    sizes, script = LAYOUTS[kind]
    base = maker_base()
    key: list[str | bytes] = [
        FORMAT_VERSION,
        kind,
        script,
        str(sizes),
        base.parent.name,
        (Path(__file__).parent / "marker_init.c").read_bytes(),
    ]

    def build(d: Path) -> None:
        images = [d / f"disk{i}.img" for i in range(len(sizes))]
        for image, size in zip(images, sizes, strict=True):
            subprocess.run(["truncate", "-s", f"{size}M", str(image)], check=True)
        _run_maker(kind, script, base, images, d / "maker.log")

    out = cached(f"stacked-{kind}", key, build)
    return StackedRoot(kind, tuple(out / f"disk{i}.img" for i in range(len(sizes))))


def _run_maker(kind: str, script: str, base: Path, images: list[Path], log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="mkosi-initrd-maker-") as tmp:
        job = Path(tmp) / "job"
        fill_marker_tree(job / "payload", kind)
        (job / "luks.key").write_bytes(LUKS_KEY)
        os.chmod(job / "luks.key", 0o600)
        (job / "make.sh").write_text(f"set -ex\n{script}\n")
        initrd = Path(tmp) / "initrd.cpio"
        with open(initrd, "wb") as out:
            out.write(base.read_bytes())
            out.write(_cpio(job))
        result = boot(
            require_host_kernel().image,
            initrd,
            images,
            "loglevel=4",
            marker=MAKER_DONE,
            timeout=600,
            name=f"maker-{kind}",
            log_path=log,
            writable=True,
        )
    if not result.passed or result.facts.get("rc") != "0":
        raise RuntimeError(f"maker guest for {kind} failed: {result.explain()}")


def _cpio(tree: Path) -> bytes:
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, check=True, capture_output=True).stdout
    return subprocess.run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
        cwd=tree,
        input=names,
        check=True,
        capture_output=True,
    ).stdout


def maker_base() -> Path:
    """The maker initrd's fixed part (tools, libraries, modules, /init) as an uncompressed newc cpio."""
    tools = [shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") for t in TOOLS]
    missing = [t for t, p in zip(TOOLS, tools, strict=True) if p is None]
    if missing:
        raise RuntimeError(f"maker initrd: tools not installed: {missing}")
    module_lines = _module_load_lines(require_host_kernel().kver)
    versions = [
        subprocess.run(["dpkg-query", "-W", p], capture_output=True, text=True).stdout
        for p in (
            "lvm2",
            "cryptsetup-bin",
            "mdadm",
            "e2fsprogs",
            "btrfs-progs",
            "xfsprogs",
            "busybox-static",
        )
    ]
    kver = require_host_kernel().kver
    key = [FORMAT_VERSION, kver, *map(str, tools), *module_lines, *versions, _maker_init(module_lines)]

    def build(d: Path) -> None:
        tree = d / "tree"
        _fill_maker_tree(tree, [Path(t) for t in tools if t], module_lines)
        (d / "base.cpio").write_bytes(_cpio(tree))
        shutil.rmtree(tree)

    return cached("maker-base", key, build) / "base.cpio"


def _module_load_lines(kver: str) -> list[str]:
    """`insmod PATH ARGS` lines in dependency order, from the host's modules.dep for the kernel."""
    lines: list[str] = []
    for mod in MODULES:
        out = subprocess.run(
            ["modprobe", "-S", kver, "--show-depends", mod], check=True, capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("insmod ") and line not in lines:
                lines.append(line)
    return lines


def _maker_init(module_lines: list[str]) -> str:
    loads = "\n".join(f"{line} 2>/dev/null" for line in module_lines)  # crc32c-intel fails on qemu64: fine
    return f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /mnt /bb /run/lock/lvm /run/cryptsetup /run/mdadm
/bin/busybox --install -s /bb
export PATH=/usr/sbin:/usr/bin:/bb DM_DISABLE_UDEV=1 MDADM_NO_UDEV=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{loads}
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
sh /make.sh
echo "{MAKER_DONE} rc=$?"
sync
poweroff -f
"""


def _fill_maker_tree(tree: Path, tools: list[Path], module_lines: list[str]) -> None:
    for name in ("bin", "sbin", "lib", "lib64"):
        (tree / "usr" / name).mkdir(parents=True, exist_ok=True)
        (tree / name).symlink_to(f"usr/{name}")
    (tree / "etc/lvm").mkdir(parents=True)
    (tree / "etc/lvm/lvm.conf").write_text(LVM_CONF)
    (tree / "etc/mdadm").mkdir()
    (tree / "etc/mdadm/mdadm.conf").write_text("")
    shutil.copy2("/bin/busybox", tree / "usr/bin/busybox")
    for tool in tools:
        _copy_with_libs(tree, tool)
    for line in module_lines:
        _copy_host_path(tree, Path(line.split()[1]))
    init = tree / "init"
    init.write_text(_maker_init(module_lines))
    init.chmod(0o755)


def _copy_with_libs(tree: Path, binary: Path) -> None:
    _copy_host_path(tree, binary)
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        words = line.split()
        paths = [w for w in words if w.startswith("/")]
        if paths:
            _copy_host_path(tree, Path(paths[0]))


def _merged(path: Path) -> Path:
    """/bin/x, /lib/x ... → /usr/bin/x, /usr/lib/x (the host and the maker tree are usr-merged)."""
    parts = path.parts
    if len(parts) > 1 and parts[1] in ("bin", "sbin", "lib", "lib64"):
        return Path("/usr", *parts[1:])
    return path


def _copy_host_path(tree: Path, path: Path) -> None:
    """Copy a host file into the tree at the same place, recreating the symlinks on the way to it."""
    path = _merged(path)
    for _ in range(40):
        dest = tree / path.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            if not dest.exists():
                shutil.copy2(path, dest)
            return
        target = os.readlink(path)
        if not dest.is_symlink():
            dest.symlink_to(target)
        path = _merged(Path(os.path.normpath(path.parent / target)))
    raise RuntimeError(f"symlink loop at {path}")
