"""The newc writer: read back by libarchive (an independent reader) and by our segment reader."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import libarchive
import pytest

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.cpio import complete_entries, write_cpio
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.plan.model import Entry

REG = stat.S_IFREG


def _entries(tmp_path: Path) -> list[Entry]:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 5000)
    return [
        Entry("/usr/bin/tool", REG | 0o755, source=src, size=5000, origin="pkg"),
        Entry("/usr/bin/tool2", REG | 0o755, source=src, size=5000, hardlink="g1", origin="pkg"),
        Entry("/usr/bin/tool3", REG | 0o755, source=src, size=5000, hardlink="g1", origin="pkg"),
        Entry("/usr/bin/link", stat.S_IFLNK | 0o777, linkto="tool"),
        Entry("/etc/hello", REG | 0o644, data=b"hi\n", size=3),
        Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("/usr/bin/suid", REG | 0o4755, data=b"#!/bin/sh\n", size=10),
        Entry("/bin", stat.S_IFLNK | 0o777, linkto="usr/bin"),
    ]


def _archive(entries: list[Entry], mtime: int = 0) -> bytes:
    buf = io.BytesIO()
    write_cpio(buf, entries, mtime=mtime)
    return buf.getvalue()


def test_missing_parents_are_added_and_entries_are_sorted(tmp_path: Path) -> None:
    done = complete_entries(_entries(tmp_path))
    paths = [e.path for e in done]
    assert paths == sorted(paths, key=lambda p: p.strip("/").encode())
    for d in ("/usr", "/usr/bin", "/dev", "/etc"):
        e = next(e for e in done if e.path == d)
        assert e.mode == stat.S_IFDIR | 0o755


def test_libarchive_reads_every_entry_with_owner_root_and_fixed_mtime(tmp_path: Path) -> None:
    data = _archive(_entries(tmp_path), mtime=1700000000)
    seen = {}
    with libarchive.memory_reader(data) as arc:
        for e in arc:
            body = b"".join(e.get_blocks())
            seen[e.pathname] = (e.mode, e.uid, e.gid, e.mtime, body, e.linkpath)
    assert set(seen) == {
        "bin", "dev", "dev/console", "etc", "etc/hello", "usr", "usr/bin", "usr/bin/link",
        "usr/bin/suid", "usr/bin/tool", "usr/bin/tool2", "usr/bin/tool3",
    }  # fmt: skip
    assert all(v[1] == 0 and v[2] == 0 and v[3] == 1700000000 for v in seen.values())
    assert seen["etc/hello"][4] == b"hi\n"
    assert seen["usr/bin/tool"][4] == b"x" * 5000
    assert seen["usr/bin/link"][5] == "tool"
    assert seen["bin"][5] == "usr/bin"
    assert seen["usr/bin/suid"][0] == REG | 0o4755


def test_hardlinks_share_one_inode_and_the_data_is_stored_once(tmp_path: Path) -> None:
    data = _archive(_entries(tmp_path))
    assert data.count(b"x" * 5000) == 2  # tool, and one member of the tool2/tool3 group
    f = tmp_path / "a.cpio"
    f.write_bytes(data)
    (seg,), _ = read_segments(f)
    m = {x.path: x for x in seg.members}
    assert m["/usr/bin/tool2"].ino == m["/usr/bin/tool3"].ino != m["/usr/bin/tool"].ino
    assert m["/usr/bin/tool2"].nlink == m["/usr/bin/tool3"].nlink == 2
    assert (m["/usr/bin/tool2"].size, m["/usr/bin/tool3"].size) == (0, 5000)
    inos = [x.ino for x in seg.members if x.path not in ("/usr/bin/tool2",)]
    assert len(set(inos)) == len(inos)  # every other member has its own inode


def test_gnu_cpio_extracts_hardlinks_devices_and_symlinks(tmp_path: Path) -> None:
    data = _archive(_entries(tmp_path))
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--no-absolute-filenames", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "usr/bin/tool2").read_bytes() == b"x" * 5000
    assert (out / "usr/bin/tool2").stat().st_ino == (out / "usr/bin/tool3").stat().st_ino
    assert (out / "usr/bin/link").readlink() == Path("tool")
    st = (out / "dev/console").stat()
    assert stat.S_ISCHR(st.st_mode) and (st.st_rdev >> 8, st.st_rdev & 0xFF) == (5, 1)


def test_same_entries_give_the_same_bytes_in_any_input_order(tmp_path: Path) -> None:
    entries = _entries(tmp_path)
    assert _archive(entries) == _archive(list(reversed(entries)))


def test_a_path_planned_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    dup = [Entry("/etc/a", REG | 0o644, data=b"1", origin="p1"), Entry("/etc/a/", REG | 0o644, data=b"2")]
    with pytest.raises(InitrdError, match="/etc/a"):
        _archive(dup)


def test_paths_climbing_out_of_the_archive_are_refused() -> None:
    with pytest.raises(InitrdError, match="invalid path"):
        _archive([Entry("/usr/../../etc/x", REG | 0o644, data=b"")])


def test_a_source_file_is_archived_with_its_size_at_open_time(tmp_path: Path) -> None:
    # The plan's size may be stale (the file changed after planning): the header must carry the
    # size of what is actually copied, or the archive would be corrupt.
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    data = _archive([Entry("/f", REG | 0o644, source=src, size=999)])
    with libarchive.memory_reader(data) as arc:
        bodies = [b"".join(e.get_blocks()) for e in arc]
    assert bodies == [b"abc"]


def test_a_planned_file_missing_on_disk_is_an_error_naming_it_and_its_package(tmp_path: Path) -> None:
    gone = Entry("/usr/bin/gone", REG | 0o755, source=tmp_path / "gone", origin="pkg-1.0-1.x86_64")
    with pytest.raises(InitrdError, match=r"gone.*pkg-1\.0-1\.x86_64") as e:
        _archive([gone])
    assert "reinstall" in e.value.hint


def test_file_names_that_are_not_utf8_are_archived_byte_for_byte(tmp_path: Path) -> None:
    name = os.fsdecode(b"/usr/share/caf\xe9")  # Latin-1 bytes, as a package may ship them
    data = _archive([Entry(name, REG | 0o644, data=b"x"), Entry("/l", stat.S_IFLNK | 0o777, linkto=name)])
    assert b"usr/share/caf\xe9\0" in data and b"/usr/share/caf\xe9" in data
