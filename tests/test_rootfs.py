from pathlib import Path

from mkosi_initrd.rootfs import resolve_in_root


def test_absolute_symlink_restarts_at_the_root(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("/usr/bin")
    assert resolve_in_root(tmp_path, "/bin/sh") == tmp_path / "usr/bin/sh"


def test_dotdot_never_climbs_above_the_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/escape").symlink_to("../../../../etc/passwd")
    assert resolve_in_root(tmp_path, "/etc/escape") == tmp_path / "etc/passwd"


def test_last_component_kept_when_not_following(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/target")
    assert resolve_in_root(tmp_path, "/link", follow_last=False) == tmp_path / "link"
    assert resolve_in_root(tmp_path, "/link") == tmp_path / "target"


def test_canonical_directories_follow_nested_and_relative_links(tmp_path: Path) -> None:
    from mkosi_initrd.rootfs import CanonicalPaths

    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "usr/lib/arch").symlink_to("./x86_64-linux-gnu")  # a link below a link
    (tmp_path / "usr/lib/x86_64-linux-gnu/up").symlink_to("../../../etc")
    canon = CanonicalPaths(tmp_path)
    assert canon("/lib/arch/libc.so.6") == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert canon("/lib/arch/up/fstab") == "/etc/fstab"
    assert canon("/usr/lib/./arch/../arch/x") == "/usr/lib/x86_64-linux-gnu/x"
    assert canon("/fstab") == "/fstab" and canon.directory("") == ""
    for path in ("/lib/arch/libc.so.6", "/lib/arch/up/fstab", "/lib/x", "/usr/lib/arch/y"):
        expect = resolve_in_root(tmp_path, path.rpartition("/")[0] or "/") / path.rpartition("/")[2]
        assert tmp_path / canon(path).lstrip("/") == expect
