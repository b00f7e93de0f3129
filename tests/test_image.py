"""The image writer end to end: reproducible bytes, mode 0600, and atomic replacement under failure."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.kernel import HostKernel
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.image.initrd import write_initrd
from mkosi_initrd.plan.model import Entry

SRC = str(Path(__file__).parents[1] / "src")


def _tree(tmp_path: Path, mb: int = 2) -> list[Entry]:
    """A few files with incompressible content (so sizes on disk are predictable)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    entries = []
    for i in range(mb):
        f = src / f"blob{i}"
        f.write_bytes(hashlib.shake_256(str(i).encode()).digest(1 << 20))
        entries.append(Entry(f"/usr/share/blob{i}", stat.S_IFREG | 0o644, source=f, size=1 << 20))
    entries.append(Entry("/etc/hello", stat.S_IFREG | 0o644, data=b"hello\n", size=6))
    entries.append(Entry("/init", stat.S_IFLNK | 0o777, linkto="usr/lib/systemd/systemd"))
    return entries


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("compression", ["zstd", "xz", "gzip", "none"])
def test_two_builds_of_the_same_entries_are_bit_identical(tmp_path: Path, compression: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    level = 0 if compression == "xz" else None  # xz's default preset is slow on random data
    write_initrd(_tree(tmp_path, 1), a, compression=compression, level=level, mtime=1700000000)
    os.utime(tmp_path / "src/blob0", (0, 12345))  # source mtimes must not leak into the archive
    write_initrd(
        list(reversed(_tree(tmp_path, 1))), b, compression=compression, level=level, mtime=1700000000
    )
    assert _sha(a) == _sha(b)
    c = tmp_path / "c"
    write_initrd(_tree(tmp_path, 1), c, compression=compression, level=level, mtime=0)
    assert _sha(a) != _sha(c)  # SOURCE_DATE_EPOCH is what sets the mtimes


def test_the_initrd_has_mode_0600_and_early_segments_come_first(tmp_path: Path) -> None:
    out = tmp_path / "initrd"
    early_cpio = tmp_path / "early"
    ucode = Entry("/kernel/x86/microcode/AuthenticAMD.bin", stat.S_IFREG | 0o644, data=b"u")
    write_initrd([ucode], early_cpio, compression="none")
    stats = write_initrd(_tree(tmp_path), out, early=[early_cpio.read_bytes()])
    assert out.stat().st_mode & 0o7777 == 0o600
    assert stats.size == out.stat().st_size
    segments, _ = read_segments(out)
    assert [s.compression for s in segments] == ["none", "zstd"]


_CHILD = textwrap.dedent(
    """
    import stat, sys
    from pathlib import Path
    from mkosi_initrd.image.initrd import write_initrd
    from mkosi_initrd.plan.model import Entry
    fifo = Path(sys.argv[2])
    entries = [Entry(f"/usr/share/blob{i}", stat.S_IFREG | 0o644, source=Path(sys.argv[3]) / f"blob{i}")
               for i in range(2)]
    # Sorted after the blobs: the build blocks on the FIFO once the blobs are written.
    entries.append(Entry("/usr/zzz/fifo", stat.S_IFREG | 0o644, source=fifo))
    # Uncompressed: multithreaded zstd holds back a job's worth of output, this must reach the disk.
    write_initrd(entries, Path(sys.argv[1]), compression="none")
    """
)


def _temp_fds(pid: int, directory: Path) -> list[int]:
    """Sizes of the files `pid` holds open in `directory` (the unnamed temp shows up as '... (deleted)')."""
    sizes: list[int] = []
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone: the caller's poll() says so
        return sizes
    for fd in fds:
        try:  # descriptors come and go while we look
            if os.readlink(fd).startswith(str(directory) + "/"):
                sizes.append(os.stat(fd).st_size)
        except OSError:
            continue
    return sizes


def test_kill_9_mid_build_keeps_the_old_initrd_and_leaves_no_temp(tmp_path: Path) -> None:
    _tree(tmp_path)
    out_dir = tmp_path / "boot"
    out_dir.mkdir()
    target = out_dir / "initrd"
    target.write_bytes(b"previous initrd")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": SRC}
    p = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target), str(fifo), str(tmp_path / "src")], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not any(_temp_fds(p.pid, out_dir)):  # wait until compressed data is on disk
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -9
    assert target.read_bytes() == b"previous initrd"
    assert sorted(x.name for x in out_dir.iterdir()) == ["initrd"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_enospc_keeps_the_old_initrd_and_leaves_no_temp(tmp_path: Path, tiny_tmpfs: Path) -> None:
    target = tiny_tmpfs / "initrd"
    target.write_bytes(b"previous initrd")
    with pytest.raises(InitrdError, match="No space left on device") as e:
        write_initrd(_tree(tmp_path, mb=3), target)
    assert "free some space" in str(e.value)
    assert target.read_bytes() == b"previous initrd"
    assert sorted(x.name for x in tiny_tmpfs.iterdir()) == ["initrd"]
    assert int(subprocess.run(["df", "--output=used", "-B1", str(tiny_tmpfs)], capture_output=True,
                              text=True).stdout.split()[-1]) < 64 * 1024  # fmt: skip


@pytest.mark.slow
def test_two_cli_builds_of_this_host_give_one_sha256(tmp_path: Path, host_kernel: HostKernel) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "SOURCE_DATE_EPOCH": "1700000000"}
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        cmd = [sys.executable, "-m", "mkosi_initrd", "-k", host_kernel.kver, "--generic", "--no-cache"]
        cmd += ["-o", str(out)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    assert _sha(outs[0]) == _sha(outs[1])
    assert outs[0].stat().st_mode & 0o7777 == 0o600
    (seg,), _ = read_segments(outs[0])
    assert {m.mtime for m in seg.members} == {1700000000}


@pytest.mark.slow
def test_kill_9_of_the_cli_while_it_writes_keeps_the_old_initrd(
    tmp_path: Path, host_kernel: HostKernel
) -> None:
    out_dir = tmp_path / "boot"
    out_dir.mkdir()
    target = out_dir / f"initramfs-{host_kernel.kver}.img"
    target.write_bytes(b"previous initrd")
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "mkosi_initrd", "-k", host_kernel.kver, "--generic", "--no-cache"]
    cmd += ["-o", str(target)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(size > 1_000_000 for size in _temp_fds(p.pid, out_dir)):
            assert p.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -9
    assert target.read_bytes() == b"previous initrd"
    assert sorted(x.name for x in out_dir.iterdir()) == [target.name]
