"""install.conf reading: kernel-install's search order, drop-ins, quoting, and the environment's priority."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkosi_initrd.kernel_install import installconf


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, ...]:
    """Stand-ins for /etc/kernel, /run/kernel, /usr/local/lib/kernel, /usr/lib/kernel (in that order)."""
    result = tuple(tmp_path / name for name in ("etc", "run", "usr-local-lib", "usr-lib"))
    for d in result:
        d.mkdir()
    return result


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_strips_quotes_comments_and_whitespace() -> None:
    text = (
        "# comment\n; other comment\n\n"
        'layout="bls"\n'
        "initrd_generator = 'mkosi-initrd'\n"
        "export BOOT_ROOT=/efi\n"
        "uki_generator=\n"
        "[Section]\n"
        "not a setting\n"
        "MACHINE_ID=\"unbalanced'\n"
    )
    assert installconf.parse(text) == {
        "layout": "bls",
        "initrd_generator": "mkosi-initrd",
        "BOOT_ROOT": "/efi",
        "uki_generator": "",
        "MACHINE_ID": "\"unbalanced'",
    }


def test_first_install_conf_in_search_order_wins(dirs: tuple[Path, ...]) -> None:
    etc, run, _, usr_lib = dirs
    write(usr_lib / "install.conf", "layout=other\ninitrd_generator=dracut\n")
    write(run / "install.conf", "layout=bls\n")
    values, files = installconf.read_install_conf(None, dirs)
    # /run's file hides /usr/lib's entirely: settings are not merged across main files.
    assert values == {"layout": "bls"}
    assert files == (run / "install.conf",)
    write(etc / "install.conf", "layout=uki\n")
    assert installconf.read_install_conf(None, dirs)[0] == {"layout": "uki"}


def test_dropins_sorted_by_name_and_masked_by_earlier_directories(dirs: tuple[Path, ...]) -> None:
    etc, run, usr_local, usr_lib = dirs
    write(usr_lib / "install.conf", "layout=other\ninitrd_generator=dracut\nuki_generator=ukify\n")
    write(usr_lib / "install.conf.d/50-gen.conf", "initrd_generator=from-usr-lib\n")
    write(etc / "install.conf.d/50-gen.conf", "initrd_generator=mkosi-initrd\n")
    write(usr_local / "install.conf.d/90-uki.conf", "uki_generator=mkosi-initrd\n")
    write(run / "install.conf.d/10-layout.conf", "layout=bls\n")
    write(run / "install.conf.d/ignored.txt", "layout=ignored\n")
    values, files = installconf.read_install_conf(None, dirs)
    assert values == {"layout": "bls", "initrd_generator": "mkosi-initrd", "uki_generator": "mkosi-initrd"}
    assert files == (
        usr_lib / "install.conf",
        run / "install.conf.d/10-layout.conf",
        etc / "install.conf.d/50-gen.conf",
        usr_local / "install.conf.d/90-uki.conf",
    )


def test_conf_root_replaces_the_search_path(dirs: tuple[Path, ...], tmp_path: Path) -> None:
    write(dirs[0] / "install.conf", "initrd_generator=dracut\n")
    root = tmp_path / "conf-root"
    write(root / "install.conf", "layout=other\n")
    write(root / "install.conf.d/x.conf", "initrd_generator=mkosi-initrd\n")
    env = {"KERNEL_INSTALL_CONF_ROOT": str(root)}
    s = installconf.settings(env, dirs)
    assert (s.layout, s.initrd_generator, s.uki_generator) == ("other", "mkosi-initrd", "")
    assert s.files == (root / "install.conf", root / "install.conf.d/x.conf")


def test_empty_conf_root_reads_nothing(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert installconf.settings({"KERNEL_INSTALL_CONF_ROOT": str(root)}) == installconf.InstallSettings()


def test_environment_wins_where_it_has_a_value(dirs: tuple[Path, ...]) -> None:
    write(
        dirs[0] / "install.conf", "layout=other\ninitrd_generator=mkosi-initrd\nuki_generator=mkosi-initrd\n"
    )
    env = {
        "KERNEL_INSTALL_LAYOUT": "uki",
        "KERNEL_INSTALL_INITRD_GENERATOR": "dracut",
        # Exported empty by kernel-install when unset in the files it read (older ones skip drop-ins).
        "KERNEL_INSTALL_UKI_GENERATOR": "",
    }
    s = installconf.settings(env, dirs)
    assert (s.layout, s.initrd_generator, s.uki_generator) == ("uki", "dracut", "mkosi-initrd")


def test_nothing_configured_anywhere(dirs: tuple[Path, ...]) -> None:
    assert installconf.settings({}, dirs) == installconf.InstallSettings()
