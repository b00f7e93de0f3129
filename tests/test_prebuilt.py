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
from mkosi_initrd.kernel_install.prebuilt import prebuilt_initrd
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


def test_initrd_whose_manifest_names_another_kernel_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(tmp_path, KVER, [manifest("9.9.9-1-test"), modules_dep(KVER)])
    with caplog.at_level(logging.INFO, logger="mkosi-initrd"):
        assert prebuilt_initrd(tmp_path, KVER) is None
    assert "built for kernel '9.9.9-1-test'" in caplog.text


def test_host_only_initrd_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    install(tmp_path, KVER, [manifest(KVER, generic=False), modules_dep(KVER)])
    with caplog.at_level(logging.INFO, logger="mkosi-initrd"):
        assert prebuilt_initrd(tmp_path, KVER) is None
    assert "host-only" in caplog.text


def test_initrd_holding_another_kernels_modules_is_not_used(tmp_path: Path) -> None:
    install(tmp_path, KVER, [manifest(KVER), modules_dep(KVER), modules_dep("9.9.9-1-test")])
    assert prebuilt_initrd(tmp_path, KVER) is None


def test_initrd_without_the_kernels_module_index_is_not_used(tmp_path: Path) -> None:
    install(tmp_path, KVER, [manifest(KVER)])
    assert prebuilt_initrd(tmp_path, KVER) is None


def test_another_generators_initrd_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # e.g. a dracut-built one: dracut's plugin uses the same path for its prebuilt images.
    dracut_marker = Entry("/usr/lib/dracut/modules.txt", REG, data=b"systemd\n", size=8)
    install(tmp_path, KVER, [dracut_marker, modules_dep(KVER)])
    with caplog.at_level(logging.INFO, logger="mkosi-initrd"):
        assert prebuilt_initrd(tmp_path, KVER) is None
    assert "not built by mkosi-initrd" in caplog.text
    install(tmp_path, KVER, [manifest(KVER, generator="dracut"), modules_dep(KVER)])
    assert prebuilt_initrd(tmp_path, KVER) is None


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
    path.write_bytes(path.read_bytes()[:-20])
    assert prebuilt_initrd(tmp_path, KVER) is None


def test_modules_directory_symlink_is_resolved_inside_the_root(tmp_path: Path) -> None:
    real = tmp_path / "srv/kernels" / KVER
    real.mkdir(parents=True)
    write_initrd([manifest(KVER), modules_dep(KVER)], real / "initrd")
    (tmp_path / "usr/lib/modules").mkdir(parents=True)
    (tmp_path / f"usr/lib/modules/{KVER}").symlink_to(f"/srv/kernels/{KVER}")
    assert prebuilt_initrd(tmp_path, KVER) == real / "initrd"
