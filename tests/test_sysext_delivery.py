"""Extensions delivered for type-1 entries (kernel_install/extensions.py, sysextinitrd.py): an extra
initrd at /.extra/sysext/NAME.raw, staged beside ours (bls) or appended at a 4-byte boundary (other),
read back segment by segment as the kernel unpacks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkosi_initrd.image.cpioread import iter_members, read_segments
from mkosi_initrd.kernel_install.extensions import STAGED_INITRD, deliver_type1
from mkosi_initrd.kernel_install.policy import Action, Context
from mkosi_initrd.kernel_install.sysextinitrd import write_sysext_initrd


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "sshd.sysext.raw"
    path.write_bytes(b"DDI" * 1001)  # the archive carries the bytes as they are
    return path


def test_bls_stages_an_extra_initrd_beside_ours(tmp_path: Path, image: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    ctx = Context(layout="bls", staging=staging)
    written = deliver_type1(ctx, Action("build", "", output=staging / "initrd"), {"sshd": image}, tmp_path)
    assert written == staging / STAGED_INITRD
    assert sorted(p.name for p in staging.glob("initrd*")) == ["initrd-sysext"]  # ours is built apart
    segments, contents = read_segments(written, lambda p: p.endswith(".raw"))
    assert [m.path for m in iter_members(segments)] == [
        "/.extra",
        "/.extra/sysext",
        "/.extra/sysext/sshd.raw",
    ]
    assert list(contents.values()) == [image.read_bytes()]


@pytest.mark.parametrize("base_size", [4096, 4097, 4099])
def test_other_appends_the_archive_at_a_4_byte_boundary(tmp_path: Path, image: Path, base_size: int) -> None:
    base = tmp_path / "initramfs.img"
    first = write_sysext_initrd({"first": image}, tmp_path / "first.cpio")  # a stand-in base initrd
    base.write_bytes(first.read_bytes() + bytes(base_size - first.stat().st_size % base_size))
    size = base.stat().st_size
    ctx = Context(layout="other", boot_root=tmp_path)
    assert deliver_type1(ctx, Action("build", "", output=base), {"sshd": image}, tmp_path) == base
    data = base.read_bytes()
    assert (
        data[size : size + (-size % 4)] == bytes(-size % 4) and data[size + (-size % 4) :][:6] == b"070701"
    )
    segments, contents = read_segments(base, lambda p: p.endswith(".raw"))
    assert len(segments) == 2 and "/.extra/sysext/sshd.raw" in {m.path for m in iter_members(segments)}


def test_uki_and_no_images_deliver_nothing_here(tmp_path: Path, image: Path) -> None:
    ctx = Context(layout="uki", staging=tmp_path)
    assert (
        deliver_type1(ctx, Action("build", "", output=tmp_path / "uki.efi"), {"sshd": image}, tmp_path)
        is None
    )
    assert deliver_type1(Context(layout="bls", staging=tmp_path), Action("build", ""), {}, tmp_path) is None
    assert not list(tmp_path.glob("initrd*"))
