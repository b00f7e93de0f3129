"""Extensions for type-1 boot entries (layouts `bls` and `other`): no systemd-stub picks up companion
files there, so the images travel in an extra initrd that puts them where the stub would,
/.extra/sysext/NAME.raw. systemd-sysext in the initrd searches that directory whoever filled it, and
applies the same strict image policy to it (signed dm-verity or refused). Measured: a signed image
in such an initrd, after the base initrd of a direct kernel boot, is merged (tests/test_sysext_boot.py).

The archive is an uncompressed newc cpio: the images are erofs already, and the kernel unpacks
concatenated archives (bls: a second `initrd` line; other: appended to initramfs-KVER.img). A cpio
is only found at a 4-byte boundary: boot loaders align each initrd so, append_initrd() pads.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path

from mkosi_initrd.image.atomic import atomic_write
from mkosi_initrd.image.cpio import write_cpio
from mkosi_initrd.plan.model import Entry

EXTRA_SYSEXT = "/.extra/sysext"
EXTRA_CONFEXT = "/.extra/confext"


def _place(name: str, path: Path) -> str:
    if path.name.endswith(".confext.raw"):  # NAME.confext → /.extra/confext/NAME.raw
        return f"{EXTRA_CONFEXT}/{name.removesuffix('.confext')}.raw"
    return f"{EXTRA_SYSEXT}/{name}.raw"


def sysext_entries(images: Mapping[str, Path]) -> list[Entry]:
    """NAME → image file: the archive's entries, /.extra/sysext/NAME.raw (systemd strips .sysext), a
    companion confext's /.extra/confext/NAME.raw."""
    return sorted(
        (
            Entry(_place(name, path), stat.S_IFREG | 0o444, source=path, size=path.stat().st_size)
            for name, path in images.items()
        ),
        key=lambda e: e.path,
    )


def write_sysext_initrd(images: Mapping[str, Path], out: Path, mtime: int = 0) -> Path:
    """The extra initrd holding `images`, written atomically to `out`."""
    with atomic_write(out, 0o644) as f:
        write_cpio(f, sysext_entries(images), mtime=mtime)
    return out


def append_initrd(base: Path, extra: Path) -> None:
    """`extra` appended to `base` (layout=other: GRUB loads one initramfs-KVER.img), replacing it
    atomically; zero padding puts the appended cpio at a 4-byte boundary, where the kernel looks."""
    import shutil

    with atomic_write(base, 0o644) as f:
        with base.open("rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
            f.write(bytes(-src.tell() % 4))
        with extra.open("rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
