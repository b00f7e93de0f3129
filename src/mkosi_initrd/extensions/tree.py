"""An extension's file tree written from plan entries, every mtime SOURCE_DATE_EPOCH (reproducible
images), owners root."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from mkosi_initrd.plan.model import Entry


def write_tree(entries: Iterable[Entry], top: Path, extra: dict[str, bytes], epoch: int) -> list[str]:
    """Write `entries` and `extra` (path → bytes, mode 0644) below `top`; the paths written, sorted."""
    written: list[str] = []
    for e in sorted(entries, key=lambda e: e.path):
        dest = top / e.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISLNK(e.mode):
            os.symlink(e.linkto, dest)
        elif stat.S_ISREG(e.mode):
            if e.data is not None:
                dest.write_bytes(e.data)
            else:
                assert e.source is not None
                shutil.copyfile(e.source, dest, follow_symlinks=True)
            dest.chmod(stat.S_IMODE(e.mode))
        else:
            continue  # device nodes never belong in /usr or /etc of an extension
        written.append(e.path)
    for path, data in sorted(extra.items()):
        dest = top / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(0o644)
        written.append(path)
    _clamp_times(top, epoch)
    return sorted(written)


def _clamp_times(top: Path, epoch: int) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(top, (epoch, epoch))
