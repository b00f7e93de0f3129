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
