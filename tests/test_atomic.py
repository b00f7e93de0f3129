"""Atomic replacement: the old file survives every failure, and no temp file is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image import atomic
from mkosi_initrd.image.atomic import atomic_write


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_success_replaces_the_target_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "initrd"
    target.write_bytes(b"old")
    target.chmod(0o644)
    with atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # not visible before the end
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o7777 == 0o600
    assert _listing(tmp_path) == ["initrd"]


def test_an_exception_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "initrd"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("build failed")
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["initrd"]


def test_a_missing_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(InitrdError, match="not a directory"), atomic_write(tmp_path / "no" / "initrd"):
        pass


def test_without_o_tmpfile_a_named_temp_is_used_and_removed_on_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vfat (an ESP) has no O_TMPFILE; this machine cannot mount one, so take that branch directly.
    monkeypatch.setattr(atomic, "_open_unnamed", lambda d, m: None)
    target = tmp_path / "initrd"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        assert any(n.endswith(".tmp") for n in _listing(tmp_path))
        raise RuntimeError("build failed")
    assert _listing(tmp_path) == ["initrd"] and target.read_bytes() == b"old"
    with atomic_write(target) as f:
        f.write(b"new")
    assert _listing(tmp_path) == ["initrd"] and target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o7777 == 0o600


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from mkosi_initrd.image import atomic
    if sys.argv[2] == "named":
        atomic._open_unnamed = lambda d, m: None
    with atomic.atomic_write(Path(sys.argv[1])) as f:
        f.write(b"partial" * 1000)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize(
    ("how", "sig"),
    [
        ("unnamed", signal.SIGKILL),
        ("unnamed", signal.SIGTERM),
        ("named", signal.SIGTERM),
        ("named", signal.SIGINT),
    ],
)
def test_a_killed_writer_leaves_the_old_file_and_no_temp(tmp_path: Path, how: str, sig: int) -> None:
    target = tmp_path / "initrd"
    target.write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).parents[1])}
    p = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target), how], stdout=subprocess.PIPE, env=env, text=True
    )
    assert p.stdout is not None
    assert p.stdout.readline() == "writing\n"
    p.send_signal(sig)
    rc = p.wait(timeout=30)
    assert rc != 0
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["initrd"]


def test_a_named_temp_left_by_a_sigkilled_writer_is_removed_by_the_next_one(tmp_path: Path) -> None:
    target = tmp_path / "initrd"
    target.write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).parents[1])}
    p = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target), "named"], stdout=subprocess.PIPE, env=env, text=True
    )
    assert p.stdout is not None and p.stdout.readline() == "writing\n"
    p.kill()
    p.wait(timeout=30)
    assert target.read_bytes() == b"old"
    assert len(_listing(tmp_path)) == 2  # SIGKILL cannot be caught: the temp is still there
    with atomic_write(target) as f:
        f.write(b"new")
    assert _listing(tmp_path) == ["initrd"]


def test_the_copy_fallback_gives_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Some kernels refuse to link an unnamed file (EXDEV): the content is copied to a named temp.
    def refuse(fd: int, name: Path) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(atomic, "_link_fd", refuse)
    target = tmp_path / "initrd"
    with atomic_write(target) as f:
        f.write(b"abc" * 100000)
    assert target.read_bytes() == b"abc" * 100000
    assert target.stat().st_mode & 0o7777 == 0o600
    assert _listing(tmp_path) == ["initrd"]
