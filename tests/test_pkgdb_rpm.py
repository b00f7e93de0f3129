"""The rpm backend on a root built with rpmbuild and installed with rpm."""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fixtures.rpmspecs import DBPATH, rpm_root
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages.database import detect_backend, open_db
from mkosi_initrd.packages.model import Dep, DepKind, FileFlag, Package
from mkosi_initrd.packages.rpm import RpmDB


@pytest.fixture(scope="module")
def root() -> Path:
    return rpm_root()


@pytest.fixture(scope="module")
def db(root: Path) -> RpmDB:
    return RpmDB(root)


def pkg(db: RpmDB, name: str) -> Package:
    return next(p for p in db.packages() if p.name == name)


def names(pkgs: list[Package]) -> list[str]:
    return [p.name for p in pkgs]


def test_detects_rpm_and_lists_installed_packages(root: Path, db: RpmDB) -> None:
    assert detect_backend(root) == "rpm"
    got = {p.name for p in db.packages()}
    assert {"fx-app", "fx-lib", "bash", "systemd-udev", "python3-fx"} <= got
    assert "fx-alt-a" not in got  # built, not installed


def test_nevra_carries_the_epoch(db: RpmDB) -> None:
    assert pkg(db, "fx-lib").nevra == "fx-lib-1:2.3-4.noarch"
    assert pkg(db, "fx-app").nevra == "fx-app-3.0-1.fx.noarch"


def test_requirement_kinds(db: RpmDB) -> None:
    reqs = {(d.name, d.kind) for d in pkg(db, "fx-app").requires}
    assert ("fx-both", DepKind.RUNTIME) in reqs and ("fx-both", DepKind.PRE) in reqs
    assert ("fx-preonly", DepKind.PRE) in reqs
    assert ("fx-postonly", DepKind.POST) in reqs
    assert ("fx-prepost", DepKind.PRE | DepKind.POST) in reqs
    assert any(d.kind & DepKind.RPMLIB for d in pkg(db, "fx-app").requires)
    rich = [d.name for d in pkg(db, "fx-app").requires if d.rich]
    assert "(fx-alt-a or fx-alt-b)" in rich
    assert [d.name for d in pkg(db, "fx-app").recommends] == ["fx-weak"]


def test_file_requirements_resolve_through_usrmerge_symlinks(db: RpmDB) -> None:
    assert names(db.providers(Dep("/bin/sh"))) == ["bash"]
    assert names(db.providers(Dep("/usr/bin/bash"))) == ["bash"]
    assert names(db.providers(Dep("/sbin/fsck.ext4"))) == ["e2fsprogs"]
    assert db.providers(Dep("/usr/bin/nonexistent")) == []


def test_versioned_provides_follow_rpm_rules(db: RpmDB) -> None:
    assert names(db.providers(Dep("fx-shell-cap", ">=", "1.0"))) == ["fx-shell-cap-provider"]
    assert db.providers(Dep("fx-shell-cap", ">=", "2.0")) == []
    assert names(db.providers(Dep("fx-lib", ">=", "1:2.0"))) == ["fx-lib"]
    assert db.providers(Dep("fx-lib", ">=", "2:0")) == []  # the epoch wins
    assert names(db.providers(Dep("fx-lib", "=", "1:2.3"))) == ["fx-lib"]  # no release: any release
    assert names(db.providers(Dep("libfx.so.1()(64bit)"))) == ["fx-lib"]
    assert names(db.providers(Dep("udev"))) == ["systemd-udev"]
    assert sorted(names(db.providers(Dep("fx-capa")))) == ["fx-capa-only", "fx-capab"]


def test_vercmp_uses_rpm_order(db: RpmDB) -> None:
    assert db.vercmp("1:1.0-1", "2.0-1") == 1
    assert db.vercmp("1.0-1", "1.0-2") == -1
    assert db.vercmp("1.10", "1.9") == 1


def test_file_metadata_and_flags(db: RpmDB) -> None:
    files = {f.path: f for f in db.files(pkg(db, "fx-app"))}
    assert files["/etc/fx.conf"].flags & FileFlag.CONFIG
    assert files["/var/log/fx.log"].flags & FileFlag.GHOST
    assert any(f.flags & FileFlag.DOC and f.path.endswith("/README") for f in files.values())
    assert any(f.flags & FileFlag.LICENSE and f.path.endswith("/COPYING") for f in files.values())
    assert files["/usr/share/man/man1/fx.1.gz"].flags & FileFlag.DOC
    assert files["/usr/share/locale/de/LC_MESSAGES/fx.mo"].lang == "de"
    assert files["/usr/bin/fx-link"].linkto == "fx" and stat.S_ISLNK(files["/usr/bin/fx-link"].mode)
    assert stat.S_IMODE(files["/usr/bin/fx-suid"].mode) == 0o4755
    fx, fx2 = files["/usr/bin/fx"], files["/usr/bin/fx2"]
    assert fx.nlink == fx2.nlink == 2 and fx.inode == fx2.inode
    assert fx.digest and fx.size == len("fx-binary")


def test_reading_never_writes_the_database(root: Path) -> None:
    dbdir = root / DBPATH.lstrip("/")

    def snapshot() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dbdir.iterdir())
            if p.is_file()
        }

    before = snapshot()
    RpmDB(root).files(pkg(RpmDB(root), "fx-app"))
    assert snapshot() == before


def test_corrupt_database_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "root"
    (bad / DBPATH.lstrip("/")).mkdir(parents=True)
    (bad / DBPATH.lstrip("/") / "rpmdb.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(InitrdError, match="rpm database"):
        open_db(bad)


def test_falls_back_to_var_lib_rpm(root: Path, tmp_path: Path) -> None:
    alt = tmp_path / "root"
    shutil.copytree(root / DBPATH.lstrip("/"), alt / "var/lib/rpm")
    assert "fx-app" in {p.name for p in RpmDB(alt).packages()}


def test_root_without_any_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InitrdError, match="no package database"):
        open_db(tmp_path)


def test_an_empty_rpm_database_beside_dpkg_falls_through_to_dpkg_with_a_note(tmp_path: Path) -> None:
    """rpm run on a Debian system (`rpm --root / --dbpath /var/lib/rpm -qa`) leaves an empty database."""
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n"
    )
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-qa"], check=True)
    assert (root / "var/lib/rpm/rpmdb.sqlite").is_file()
    db = open_db(root)
    assert db.backend == "dpkg" and [p.name for p in db.packages()] == ["base-files"]
    assert db.notes == [
        f"the rpm database {root}/var/lib/rpm lists no packages (empty or damaged);"
        f" using the dpkg database {root}/var/lib/dpkg/status"
    ]
    with pytest.raises(InitrdError, match="lists no packages"):
        open_db(root, "rpm")  # asked for rpm: no falling through
