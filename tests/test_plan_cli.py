"""`mkosi-initrd plan` end to end, and the configuration files it reads."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, NoReturn

import pytest

from fixtures.rpmspecs import rpm_root
from mkosi_initrd.cli import main, parse_args
from mkosi_initrd.config.load import load_config
from mkosi_initrd.errors import InitrdError


@pytest.fixture(scope="module")
def root() -> Path:
    return rpm_root()


@pytest.fixture
def own_root(root: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture root, to write config files into."""
    dst = tmp_path / "root"
    shutil.copytree(root, dst, symlinks=True)
    return dst


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["plan", "-k", "1.0", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_plan_json_has_packages_with_reasons_cut_edges_and_missing(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = plan_json(capsys, "--root", str(root), "--add-package", "fx-app")
    pkgs = {p["name"]: p for p in plan["packages"]}
    assert plan["backend"] == "rpm" and plan["kernel_version"] == "1.0"
    assert pkgs["systemd-udev"]["reason"] == ["list:udev", "systemd-udev"]
    assert pkgs["fx-lib"]["nevra"] == "fx-lib-1:2.3-4.noarch"
    assert pkgs["fx-app"]["files"] > 0 and pkgs["fx-app"]["bytes"] > 0
    assert {"package": "fx-app", "requires": "fx-python-thing", "excluded": "python3-fx"} in plan[
        "cut_edges"
    ]
    assert "tpm2-tss" in plan["missing"]
    assert plan["files"] >= sum(p["files"] for p in plan["packages"]) - 0
    assert "modules" in plan and "firmware" in plan


def test_plan_text_shows_nevra_chain_and_cut_edges(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-k", "1.0", "--root", str(root), "--add-package", "fx-app"]) == 0
    out = capsys.readouterr().out
    assert "fx-lib-1:2.3-4.noarch" in out
    assert "config:fx-app → fx-app → bash → glibc" in out or "list:systemd → systemd → glibc" in out
    assert "fx-app requires fx-python-thing" in out
    assert "missing (optional entries, not installed): tpm2-tss" in out


def test_missing_package_fails_naming_it(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-k", "1.0", "--root", str(root), "--add-package", "no-such-package"]) == 1
    err = capsys.readouterr().err
    assert "'no-such-package' (from --add-package) is not installed" in err  # not "(from config)"


def test_a_config_files_package_is_from_config(own_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(own_root / "etc/mkosi-initrd/mkosi-initrd.conf", "[Packages]\nPackages=no-such-package\n")
    assert main(["plan", "-k", "1.0", "--root", str(own_root)]) == 1
    assert "'no-such-package' (from config) is not installed" in capsys.readouterr().err


def test_unknown_distribution_fails_clearly(own_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    osr = own_root / "etc/os-release"
    osr.unlink()
    osr.write_text("ID=plan9\n")
    assert main(["plan", "-k", "1.0", "--root", str(own_root)]) == 1
    assert "no package list for this distribution: ID='plan9'" in capsys.readouterr().err


@pytest.mark.parametrize("kver", [["-k", "1.0"], []], ids=["with-k", "without-k"])
def test_missing_root_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kver: list[str]
) -> None:
    assert main(["plan", *kver, "--root", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert f"root {tmp_path / 'nope'} does not exist or is not a directory" in err  # not "no kernel"


def test_an_output_in_a_missing_directory_is_refused_before_planning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # This root has neither a package database nor a kernel: planning would fail, so the error shows
    # which came first.
    empty = tmp_path / "root"
    empty.mkdir()
    out = tmp_path / "no/such/dir/initrd"
    assert main(["--root", str(empty), "-k", "1.0", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write the output {out}: {out.parent} is not a directory" in err
    assert not (tmp_path / "no").exists()


def test_profile_entries_come_from_the_profile(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-k", "1.0", "--root", str(root), "--profile", "lvm"]) == 1
    assert "'lvm2' (from profile:lvm) is not installed" in capsys.readouterr().err


def test_remove_package_takes_out_list_entries_too(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # lvm2 is the lvm profile's entry and not installed here: naming it lets the profile build.
    plan = plan_json(capsys, "--root", str(root), "--profile", "lvm", "--remove-package", "lvm2")
    names = {p["name"] for p in plan["packages"]}
    assert "lvm2" not in plan["missing"] and "systemd" in names
    # gzip is an installed base.list entry: removed, it is neither planned nor reported missing.
    assert "gzip" in names
    plan = plan_json(capsys, "--root", str(root), "--remove-package", "gzip")
    assert "gzip" not in {p["name"] for p in plan["packages"]} and "gzip" not in plan["missing"]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_config_files_and_dropins_merge_with_precedence(own_root: Path) -> None:
    write(own_root / "usr/lib/mkosi-initrd/mkosi-initrd.conf", "[Packages]\nPackages=fx-lib\n")
    write(own_root / "etc/mkosi-initrd/mkosi-initrd.conf", "[Packages]\nPackages=fx-ver\nProfiles=raid\n")
    write(own_root / "usr/lib/mkosi-initrd/mkosi-initrd.conf.d/10-a.conf", "[Packages]\nPackages=fx-both\n")
    write(own_root / "etc/mkosi-initrd/mkosi-initrd.conf.d/10-a.conf", "[Packages]\nPackages=fx-nested\n")
    write(own_root / "run/mkosi-initrd/mkosi-initrd.conf.d/20-b.conf", "[Packages]\nRemovePackages=less\n")
    write(
        own_root / "run/mkosi-initrd/mkosi-initrd.conf.d/30-c.conf",
        "[Packages]\nWithRecommends=yes\n[Files]\nRemoveFiles=/usr/share/fx\n[Output]\nCompression=xz\n",
    )
    args = parse_args(["plan", "--add-package", "fx-app", "--profile", "lvm", "--remove-package", "gzip"])
    cfg = load_config(own_root, "1.0", args.values)
    # /etc's main file replaces /usr/lib's; /etc's 10-a.conf replaces /usr/lib's; CLI adds.
    assert cfg.packages == ("fx-ver", "fx-nested", "fx-app")
    assert cfg.profiles == ("raid", "lvm")
    assert cfg.remove_packages == ("less", "gzip")
    assert cfg.weak_deps and cfg.compression == "xz" and cfg.remove_files == ("/usr/share/fx",)


def test_empty_assignment_resets_a_list(own_root: Path) -> None:
    write(own_root / "etc/mkosi-initrd/mkosi-initrd.conf", "[Packages]\nPackages=fx-ver fx-lib\n")
    write(
        own_root / "etc/mkosi-initrd/mkosi-initrd.conf.d/50.conf",
        "[Packages]\nPackages=\nPackages=fx-both\n",
    )
    assert load_config(own_root, "1.0").packages == ("fx-both",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Packages]\nFoo=bar\n", "unknown setting"),
        ("[Packages]\nProfiles=gpu\n", "unknown profile"),
        ("Packages=x\n", "cannot parse"),
        ("[Packages]\nWithRecommends=maybe\n", "expected a boolean"),
    ],
)
def test_bad_config_is_an_error_naming_file_and_line(own_root: Path, text: str, message: str) -> None:
    write(own_root / "etc/mkosi-initrd/mkosi-initrd.conf", text)
    with pytest.raises(InitrdError, match=message) as e:
        load_config(own_root, "1.0")
    assert "etc/mkosi-initrd/mkosi-initrd.conf:" in str(e.value)


def test_config_changes_the_plan(own_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        own_root / "etc/mkosi-initrd/mkosi-initrd.conf",
        "[Packages]\nPackages=fx-app\nRemovePackages=fx-alt-b\n"
        "[Files]\nRemoveFiles=/usr/bin/fx-*\nExtraFiles=/usr/share/fx/ver:/etc/fx-version\n",
    )
    plan = plan_json(capsys, "--root", str(own_root))
    assert "fx-app" in {p["name"] for p in plan["packages"]}
    assert "fx-alt-b" not in {p["name"] for p in plan["packages"]}
    assert {"package": "fx-app", "requires": "(fx-alt-a or fx-alt-b)", "excluded": "fx-alt-b"} in plan[
        "cut_edges"
    ]


def test_config_removes_and_adds_files(own_root: Path) -> None:
    from mkosi_initrd.planner.steps import make_plan

    write(
        own_root / "etc/mkosi-initrd/mkosi-initrd.conf",
        "[Packages]\nPackages=fx-app\n[Files]\nRemoveFiles=/usr/bin/fx-*\nExtraFiles=/usr/share/fx/ver:/etc/fx-version\n",
    )
    entries = {e.path: e for e in make_plan(load_config(own_root, "1.0")).entries}
    assert (
        "/usr/bin/fx" in entries and "/usr/bin/fx-link" not in entries and "/usr/bin/fx-suid" not in entries
    )
    assert entries["/etc/fx-version"].source == own_root / "usr/share/fx/ver"
    assert list(entries) == sorted(entries)


def test_example_config_parses_with_every_setting_enabled(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "mkosi-initrd.conf.example"
    # Uncomment every setting: the example must document real keys with valid values.
    lines = example.read_text().splitlines()
    text = "\n".join(line[1:] if re.match(r"#[A-Z][A-Za-z]*=", line) else line for line in lines)
    write(tmp_path / "etc/mkosi-initrd/mkosi-initrd.conf", text)
    cfg = load_config(tmp_path, "1.0")
    assert cfg.packages == ("nvme-cli", "/usr/sbin/fsck.xfs") and cfg.profiles == ("lvm",)
    assert cfg.extra_files == (("/etc/crypttab", "/etc/crypttab"), ("/etc/mkosi-initrd/keys", "/etc/keys"))
    assert cfg.modules == ("nvme", "-/drivers/gpu/") and cfg.compression == "zstd" and cfg.level == 3


def test_package_files_absent_from_the_root_are_one_error_per_package_ghosts_excepted(
    own_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not (own_root / "var/log/fx.log").exists()  # fx-app's %ghost: never an error
    (own_root / "usr/bin/fx2").unlink()
    (own_root / "usr/bin/fx-suid").unlink()
    rc = main(["plan", "-k", "1.0", "--json", "--root", str(own_root), "--add-package", "fx-app"])
    out = capsys.readouterr()
    assert rc == 1 and "a build would stop: 1 package of the initrd has files that are not in" in out.err
    plan = json.loads(out.out)  # the plan is printed all the same
    (error,) = plan["errors"]
    assert re.fullmatch(
        rf"2 of \d+ files of fx-app-3\.0-1\.fx\.noarch are not in the root {own_root}"
        r" \(e\.g\. /usr/bin/fx-suid\): the root is incomplete or its database is stale",
        error,
    )
    assert "fx-app" in {p["name"] for p in plan["packages"]}


def test_a_deleted_config_file_alone_is_a_warning(
    own_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (own_root / "etc/fx.conf").unlink()
    plan = plan_json(capsys, "--root", str(own_root), "--add-package", "fx-app")
    assert plan["errors"] == []
    assert "fx-app-3.0-1.fx.noarch: 1 config files are not in" in "\n".join(plan["warnings"])


# --- the top-level guard: a bug is one line naming the kernel, the traceback only with --debug


def _a_bug(*args: object, **kw: object) -> NoReturn:
    raise ZeroDivisionError("division by zero\nin a generated entry")


def test_an_unexpected_error_is_one_line_naming_the_kernel_and_saying_it_is_a_bug(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mkosi_initrd.planner import steps

    monkeypatch.setattr(steps, "generated_entries", _a_bug)  # a bug at the planner's last step
    out = tmp_path / "initrd"
    out.write_bytes(b"the initrd that booted")
    build = ["--root", str(root), "-k", "1.0", "--generic", "--no-cache", "-o", str(out)]
    assert main(build) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "mkosi-initrd: error: building the initrd for kernel 1.0 failed: ZeroDivisionError: division by "
        "zero in a generated entry (this is a bug in mkosi-initrd, please report it; --debug shows the "
        "traceback)"
    ]
    assert out.read_bytes() == b"the initrd that booted" and os.listdir(tmp_path) == ["initrd"]
    assert main([*build, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and 'in _a_bug\n    raise ZeroDivisionError("' in err
    assert err.splitlines()[-1].endswith("(this is a bug in mkosi-initrd, please report it)")
    assert out.read_bytes() == b"the initrd that booted"


def test_the_kernel_is_chosen_past_the_leftovers_of_a_removed_one(tmp_path: Path) -> None:
    from mkosi_initrd.cli import default_kver

    moddir = tmp_path / "usr/lib/modules"
    for kver in ("9.9.8-test", "9.9.9-test"):
        (moddir / kver).mkdir(parents=True)
        (moddir / kver / "modules.dep").write_text("kernel/x.ko:\n")
    # Both have modules: the choice is the user's.
    (moddir / "9.9.8-test/kernel").mkdir()
    (moddir / "9.9.9-test/kernel").mkdir()
    with pytest.raises(InitrdError, match="several kernels in .*: 9.9.8-test 9.9.9-test"):
        default_kver(tmp_path)
    # The old package removed: its index files stay (Debian's postrm), its modules do not.
    (moddir / "9.9.8-test/kernel").rmdir()
    assert default_kver(tmp_path) == "9.9.9-test"
