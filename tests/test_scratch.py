"""Scratch directories: a later build tells a dead builder's from a live one's by pid and start time."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from mkosi_initrd import scratch
from mkosi_initrd.scratch import ScratchDir, is_stale, remove_stale

PREFIX = "mkosi-initrd-test-"


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_scratch_directory_is_named_after_this_process_and_removed_at_the_end(tmp_path: Path) -> None:
    with ScratchDir(PREFIX, tmp_path) as d:
        assert d.name.startswith(f"{PREFIX}{os.getpid()}-{scratch.start_time(os.getpid())}-")
        assert d.stat().st_mode & 0o777 == 0o700
        (d / "file").write_text("x")
        assert not is_stale(d.name, PREFIX, d)  # this process still runs
    assert list(tmp_path.iterdir()) == []


def test_a_dead_builders_directory_is_removed_by_the_next_one(tmp_path: Path) -> None:
    pid = dead_pid()
    dead = tmp_path / f"{PREFIX}{pid}-12345-abcd0123"
    (dead / "lib/modules").mkdir(parents=True)
    live = tmp_path / f"{PREFIX}{os.getpid()}-{scratch.start_time(os.getpid())}-abcd0123"
    live.mkdir()
    with ScratchDir(PREFIX, tmp_path) as mine:
        assert sorted(tmp_path.iterdir()) == sorted([live, mine])


def test_a_reused_pid_does_not_keep_a_dead_builders_directory(tmp_path: Path) -> None:
    # Our own pid, but another start time: the builder that made it is gone.
    reused = tmp_path / f"{PREFIX}{os.getpid()}-1-abcd0123"
    reused.mkdir()
    assert is_stale(reused.name, PREFIX, reused)
    assert remove_stale(tmp_path, PREFIX) == [reused] and not reused.exists()


def test_earlier_versions_names_go_by_pid_or_by_age(tmp_path: Path) -> None:
    old_cache_temp = tmp_path / f".tmp-{dead_pid()}-0123abcd"  # cache.py's former PID-RANDOM
    live_cache_temp = tmp_path / f".tmp-{os.getpid()}-0123abcd"
    fresh = tmp_path / f"{PREFIX}k2x_9abc"  # tempfile's 8 characters, no pid
    aged = tmp_path / f"{PREFIX}q7r_0zzz"
    for d in (old_cache_temp, live_cache_temp, fresh, aged):
        d.mkdir()
    hour_ago = time.time() - 3700
    os.utime(aged, (hour_ago, hour_ago))
    assert remove_stale(tmp_path, ".tmp-") == [old_cache_temp]
    assert remove_stale(tmp_path, PREFIX) == [aged]
    assert sorted(tmp_path.iterdir()) == sorted([live_cache_temp, fresh])


def test_what_is_not_ours_is_never_removed(tmp_path: Path) -> None:
    pid = dead_pid()
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / f"{PREFIX}{pid}-1-abcd0123"
    link.symlink_to(target)  # /dev/shm is world-writable: a planted symlink is not followed
    other = tmp_path / f"mkosi-initrd-other-{pid}-1-abcd0123"  # another prefix
    other.mkdir()
    assert remove_stale(tmp_path, PREFIX) == []
    assert link.is_symlink() and target.is_dir() and other.is_dir()
