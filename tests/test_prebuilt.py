"""Which file at /usr/lib/modules/KVER/initrd counts as a prebuilt initrd for KVER.

The initrds here are written by the project's own writer (image.write_initrd): real newc archives,
zstd-compressed, with an early microcode segment where it matters.
"""

from __future__ import annotations

import io
import json
import logging
import stat
from pathlib import Path

import pytest

from mkosi_initrd.image.cpio import write_cpio
from mkosi_initrd.image.initrd import write_initrd
from mkosi_initrd.kernel_install.prebuilt import mismatch, prebuilt_initrd
from mkosi_initrd.plan.model import Entry

KVER = "9.9.9-2-test"  # synthetic trees only
REG = stat.S_IFREG | 0o644


def manifest(kernel: str, generator: str = "mkosi-initrd", generic: bool = True) -> Entry:
    fields = {
        "generator": {"name": generator, "version": "0.1.0"},
        "kernel": kernel,
        "build": {"generic": generic},
    }
    data = json.dumps(fields).encode()
    return Entry("/usr/lib/mkosi-initrd/manifest.json", REG, data=data, size=len(data))


def modules_dep(kver: str) -> Entry:
    data = b"kernel/fs/ext4/ext4.ko: \n"
    return Entry(f"/usr/lib/modules/{kver}/modules.dep", REG, data=data, size=len(data))


def microcode_cpio() -> bytes:
    out = io.BytesIO()
    data = b"\x01" * 64
    write_cpio(out, [Entry("/kernel/x86/microcode/GenuineIntel.bin", REG, data=data, size=len(data))])
    return out.getvalue()


def install(root: Path, kver: str, entries: list[Entry], early: tuple[bytes, ...] = ()) -> Path:
    path = root / f"usr/lib/modules/{kver}/initrd"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_initrd(entries, path, early=early)
    return path


def test_our_initrd_for_the_same_kernel_is_used_with_microcode_in_front(tmp_path: Path) -> None:
    path = install(tmp_path, KVER, [manifest(KVER), modules_dep(KVER)], early=(microcode_cpio(),))
    assert prebuilt_initrd(tmp_path, KVER) == path


def test_no_file_means_no_prebuilt_initrd(tmp_path: Path) -> None:
    (tmp_path / f"usr/lib/modules/{KVER}").mkdir(parents=True)
    assert prebuilt_initrd(tmp_path, KVER) is None
    path = install(tmp_path, KVER, [manifest(KVER), modules_dep(KVER)])
    assert prebuilt_initrd(tmp_path, KVER) == path


OTHER = "9.9.9-1-test"
DRACUT_MARKER = Entry("/usr/lib/dracut/modules.txt", REG, data=b"systemd\n", size=8)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        pytest.param([manifest(OTHER), modules_dep(KVER)], f"it was built for kernel '{OTHER}'",
                     id="other-kernel"),
        pytest.param([manifest(KVER, generic=False), modules_dep(KVER)], "it is a host-only initrd",
                     id="host-only"),
        pytest.param([manifest(KVER), modules_dep(KVER), modules_dep(OTHER)],
                     f"modules of kernel {OTHER}", id="another-kernels-modules"),
        pytest.param([manifest(KVER)], f"it has no /usr/lib/modules/{KVER}/modules.dep",
                     id="no-module-index"),
        # e.g. a dracut-built one: dracut's plugin uses the same path for its prebuilt images.
        pytest.param([DRACUT_MARKER, modules_dep(KVER)], "not built by mkosi-initrd", id="dracuts"),
        pytest.param([manifest(KVER, generator="dracut"), modules_dep(KVER)], "names generator 'dracut'",
                     id="another-generator-named"),
    ],
)  # fmt: skip
def test_an_initrd_that_is_not_our_generic_one_for_this_kernel_is_passed_over_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, entries: list[Entry], reason: str
) -> None:
    path = install(tmp_path, KVER, entries)
    with caplog.at_level(logging.INFO, logger="mkosi-initrd"):
        assert prebuilt_initrd(tmp_path, KVER) is None
    assert reason in mismatch(path, KVER) and reason in caplog.text
    install(tmp_path, KVER, [manifest(KVER), modules_dep(KVER)])  # the same place, our generic one: used
    assert prebuilt_initrd(tmp_path, KVER) == path


def test_unreadable_initrd_is_passed_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / f"usr/lib/modules/{KVER}/initrd"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an initrd")
    assert prebuilt_initrd(tmp_path, KVER) is None
    assert "cannot read it" in caplog.text


def test_truncated_initrd_is_passed_over(tmp_path: Path) -> None:
    path = install(tmp_path, KVER, [manifest(KVER), modules_dep(KVER)])
    assert prebuilt_initrd(tmp_path, KVER) == path
    path.write_bytes(path.read_bytes()[:-20])
    assert prebuilt_initrd(tmp_path, KVER) is None


def test_modules_directory_symlink_is_resolved_inside_the_root(tmp_path: Path) -> None:
    real = tmp_path / "srv/kernels" / KVER
    real.mkdir(parents=True)
    write_initrd([manifest(KVER), modules_dep(KVER)], real / "initrd")
    (tmp_path / "usr/lib/modules").mkdir(parents=True)
    (tmp_path / f"usr/lib/modules/{KVER}").symlink_to(f"/srv/kernels/{KVER}")
    assert prebuilt_initrd(tmp_path, KVER) == real / "initrd"
