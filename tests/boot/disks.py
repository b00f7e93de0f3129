"""Disk images for boot tests, built from files without touching the host's block devices.

The test root is tiny: /sbin/init is `marker_init.c` compiled static; it prints ROOT_MARKER with the
type and source of its / mount and the label in /etc/marker-label, then powers off. Images are cached
(tests/fixtures/cache.py) by everything that goes into them, and booted with snapshot=on.

    marker_root("ext4")  -> image whose / is ext4 (mke2fs -d), root=UUID=ROOT_UUID or /dev/vda
    marker_root("xfs")   -> xfs populated from a protofile (mkfs.xfs -p)
    make_esp(out, {"EFI/BOOT/BOOTX64.EFI": uki})  -> FAT ESP image (mkfs.vfat + mtools)

Stacked roots (LVM, LUKS, RAID, btrfs subvolumes) are made inside a helper guest: see stacked.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from fixtures.cache import cached

HERE = Path(__file__).parent
MARKER_INIT_SOURCE = HERE / "marker_init.c"
ROOT_UUID = "6b2a3c1e-5d4f-4e7a-9b8c-0d1e2f3a4b5c"  # fixed, so tests can say root=UUID=...
ROOT_LABEL = "mroot"
IMAGE_NAME = "disk.img"
FORMAT_VERSION = "1"  # bump when the layout of the tree or images changes


def _run(*cmd: str | Path, **kw: object) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def _tool_version(cmd: str) -> str:
    out = subprocess.run([cmd, "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else cmd


def marker_init() -> Path:
    """The static marker init binary (cached by its source and the compiler)."""
    source = MARKER_INIT_SOURCE.read_bytes()

    def build(d: Path) -> None:
        _run("gcc", "-static", "-O2", "-Wall", "-o", d / "init", MARKER_INIT_SOURCE)

    return cached("marker-init", [FORMAT_VERSION, source, _tool_version("gcc")], build) / "init"


def fill_marker_tree(dest: Path, label: str, mode: str = "") -> None:
    """A minimal OS tree an initrd will switch into: os-release (systemd checks it), init, mount points."""
    for d in ("sbin", "etc", "usr/lib", "dev", "proc", "sys", "run", "tmp", "sysroot", "var"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(marker_init(), dest / "sbin/init")
    os.chmod(dest / "sbin/init", 0o755)
    os_release = (
        'NAME="mkosi-initrd test root"\nID=mkosi-initrd-test\nPRETTY_NAME="mkosi-initrd test root"\n'
    )
    (dest / "usr/lib/os-release").write_text(os_release)
    (dest / "etc/os-release").symlink_to("../usr/lib/os-release")
    (dest / "etc/marker-label").write_text(label + "\n")
    if mode:  # marker_init.c: "hibernate" → hibernate to /dev/vdb, report the resume
        (dest / "etc/marker-mode").write_text(mode + "\n")
    (dest / "etc/fstab").write_text("")
    (dest / "etc/machine-id").write_text("")


def marker_root(fs: str = "ext4", label: str | None = None, mode: str = "") -> Path:
    """A root file system image (whole disk, no partition table) holding the marker tree."""
    label = label or fs
    builders = {"ext4": _build_ext4, "xfs": _build_xfs}
    if fs not in builders:
        raise ValueError(f"marker_root: no host-side builder for {fs!r} (stacked roots: see stacked.py)")
    key: list[str | bytes] = [
        FORMAT_VERSION,
        fs,
        label,
        mode,
        MARKER_INIT_SOURCE.read_bytes(),
        _tool_version(f"mkfs.{fs}"),
    ]

    def build(d: Path) -> None:
        tree = d / "tree"
        fill_marker_tree(tree, label, mode)
        builders[fs](tree, d / IMAGE_NAME)
        shutil.rmtree(tree)

    return cached(f"root-{fs}{'-' + mode if mode else ''}", key, build) / IMAGE_NAME


def swap_disk(out: Path, size_mb: int = 512) -> Path:
    """A blank swap image (mkswap on the file), writable: the hibernation image goes here."""
    _run("truncate", "-s", f"{size_mb}M", out)
    _run("mkswap", "-q", out)
    return out


def _build_ext4(tree: Path, image: Path) -> None:
    _run("truncate", "-s", "64M", image)
    _run("mke2fs", "-q", "-t", "ext4", "-L", ROOT_LABEL, "-U", ROOT_UUID, "-d", tree, image)


def _build_xfs(tree: Path, image: Path) -> None:
    proto = tree.parent / "xfs.proto"
    proto.write_text(xfs_protofile(tree))
    _run("truncate", "-s", "320M", image)  # mkfs.xfs refuses file systems below 300 MiB
    _run("mkfs.xfs", "-q", "-L", ROOT_LABEL, "-m", f"uuid={ROOT_UUID}", "-p", proto, image)


def xfs_protofile(tree: Path) -> str:
    """mkfs.xfs protofile describing `tree` (regular files, directories, symlinks)."""
    lines = ["boot", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        pad = " " * depth
        for p in sorted(d.iterdir()):
            mode = p.lstat().st_mode & 0o7777
            if p.is_symlink():
                lines.append(f"{pad}{p.name} l--777 0 0 {os.readlink(p)}")
            elif p.is_dir():
                lines.append(f"{pad}{p.name} d--{mode:03o} 0 0")
                walk(p, depth + 1)
                lines.append(f"{pad}$")
            else:
                lines.append(f"{pad}{p.name} ---{mode:03o} 0 0 {p}")

    walk(tree, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def make_esp(out: Path, files: Mapping[str, Path], size_mb: int | None = None) -> Path:
    """A FAT ESP image at `out` with `files` ({"EFI/BOOT/BOOTX64.EFI": path, ...}), via mtools."""
    payload = sum(p.stat().st_size for p in files.values())
    size_mb = size_mb or max(64, payload // 2**20 * 5 // 4 + 16)
    out.unlink(missing_ok=True)
    _run("truncate", "-s", f"{size_mb}M", out)
    _run("mkfs.vfat", "-F", "32", "-n", "ESP", out)
    made: set[str] = set()
    for dest in sorted(files):
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                _run("mmd", "-i", out, f"::/{d}")
                made.add(d)
        _run("mcopy", "-i", out, files[dest], f"::/{dest.strip('/')}")
    return out


def newc_archive(files: Mapping[str, bytes], mode: int = 0o600) -> bytes:
    """A small uncompressed newc cpio holding `files` (parent directories included), for appending."""
    entries: list[tuple[str, int, bytes]] = []
    parts = [p.strip("/").split("/") for p in files]
    dirs = sorted({"/".join(ps[:i]) for ps in parts for i in range(1, len(ps))})
    entries += [(d, 0o040755, b"") for d in dirs]
    entries += [(p.strip("/"), 0o100000 | mode, data) for p, data in sorted(files.items())]
    entries.append(("TRAILER!!!", 0, b""))
    out = bytearray()
    for ino, (name, fmode, data) in enumerate(entries, start=1):
        fields = (ino, fmode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initrd_with(initrd: Path, files: Mapping[str, bytes], out: Path) -> Path:
    """`initrd` followed by a cpio of `files` (the kernel unpacks concatenated archives in order)."""
    data = initrd.read_bytes()
    out.write_bytes(data + b"\0" * (-len(data) % 4) + newc_archive(files))
    return out
