"""The rpm backend on real RHEL-family databases (CentOS 5 to 8, Debian's go-rpmdb testdata), with rpm
itself as the oracle: our closure against a walk done with rpm's own queries (tests/fixtures/rpmoracle.py).

These databases are headers without files (container images' rpmdbs) and Berkeley DBs without index
files: the closure is compared through the packages-only plan and the closure step itself, both on
the database as shipped and on rpm's rebuild of it (sqlite, with rpm's indexes); a build of such a
root stops with one error per package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fixtures import rpmdbs, rpmoracle
from fixtures.kernel import SYN_KVER, install_kernel
from mkosi_initrd.cli import main
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages import closure
from mkosi_initrd.packages.database import open_db
from mkosi_initrd.packages.model import Dep
from mkosi_initrd.packages.rpm import RpmDB
from mkosi_initrd.planner import steps as planner
from prereq import require

FAMILY = "fedora"
NAMES = rpmdbs.names() or ["not-installed"]


def real_db(name: str) -> rpmdbs.RealDB:
    require(name != "not-installed", f"the rpm databases of {rpmdbs.PACKAGE}", rpmdbs.INSTALL)
    return rpmdbs.real_db(name)


def readable_db(name: str) -> rpmdbs.RealDB:
    db = real_db(name)
    assert db.readable, f"rpm 4.18 cannot read {name}"
    return db


def start_list(root: Path) -> list[closure.Request]:
    """The generic start list of the family (base list and every file system's tools)."""
    return planner.requests(Config(root=root, generic=True), FAMILY)


@cache
def oracle(name: str) -> rpmoracle.Walk:
    db = rpmdbs.real_db(name)
    return rpmoracle.walk(db.indexed, [(r.entry, r.optional) for r in start_list(db.root)])


def patterns() -> list[str]:
    return planner.exclusions(FAMILY)


def closure_json(root: Path) -> dict[str, Any]:
    """Our closure step from the start list with every entry optional (CentOS 5-7 lack some of it;
    that a required one is missing is test_packages_only_plan's), in the plan's JSON form."""
    db = open_db(root)
    reqs = [closure.Request(r.entry, r.origin, optional=True) for r in start_list(root)]
    c = closure.resolve(db, reqs, closure.Excluder(patterns()))
    return {
        "packages": [
            {"name": x.package.name, "nevra": x.package.nevra, "reason": x.reason} for x in c.packages
        ],
        "cut_edges": [vars(e) for e in c.cut_edges],
        "missing": list(c.missing),
        "warnings": list(c.warnings),
    }


def assert_explained(name: str, plan: dict[str, Any]) -> rpmoracle.Comparison:
    w = oracle(name)
    ours = rpmoracle.Ours.from_plan_json(plan)
    result = rpmoracle.explain(w, ours, patterns())
    assert result.unexplained == []
    for d in result.explained:  # one by one: each difference has its rule(s)
        assert d.rules, f"{d.package}: no rule explains it"
    print(f"\n{name}: rpm {len(w.packages)}, ours {len(ours.packages)}, {result.rule_counts()}")
    for d in result.explained:
        print(f"  {d.package}: {'; '.join(d.rules)}")
    return result


def plan_packages_only(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, dict[str, Any], str]:
    rc = main(["plan", "--packages-only", "--generic", "--json", "--root", str(root)])
    out = capsys.readouterr()
    return rc, json.loads(out.out) if out.out.strip() else {}, out.err


# --- the closure, against rpm's walk


@pytest.mark.parametrize("variant", ["as-shipped", "rebuilt"])
@pytest.mark.parametrize("name", NAMES)
def test_closure_equals_rpm_walk_up_to_documented_rules(name: str, variant: str) -> None:
    db = readable_db(name)
    root = db.root if variant == "as-shipped" else db.indexed
    assert_explained(name, closure_json(root))


@pytest.mark.parametrize("name", NAMES)
def test_packages_only_plan_shows_the_closure_and_the_missing_files(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A root that has the whole start list plans its packages (rc 1: their files are not there, one
    error per package); one that lacks a required entry (CentOS 5-7) is refused naming it."""
    db = readable_db(name)
    w = oracle(name)
    rc, plan, err = plan_packages_only(capsys, db.root)
    absent = [e for e, ps in w.start.items() if not ps and not w.optional[e]]
    assert rc == 1
    if absent:
        assert plan == {}
        assert f"package or provide {absent[0]!r} (from list) is not installed" in err
        return
    assert plan["packages_only"] is True and plan["kernel_version"] is None
    assert plan["modules"] == [] and plan["files"] < 20  # the few directories a bare root has
    assert_explained(name, plan)
    assert len(plan["errors"]) >= len(plan["packages"]) - 5
    for e in plan["errors"]:
        assert "are not in the root" in e and "the root is incomplete or its database is stale" in e
    assert "a build would stop" in err
    # Generic: the file-system tools the root has (none, in a container), one warning for the rest.
    assert any(
        w.startswith("no tools for ext2, ext3, ext4 (e2fsprogs); xfs (xfsprogs)") for w in plan["warnings"]
    )
    assert {"e2fsprogs", "xfsprogs"} <= set(plan["missing"])


def test_plan_of_a_root_without_a_kernel_names_the_packages_only_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = readable_db("centos8-modularitylabel")
    assert main(["plan", "--generic", "--root", str(db.root)]) == 1
    err = capsys.readouterr().err
    assert "no kernel installed in" in err and "plan --packages-only" in err


def test_packages_only_text_plan_says_the_kernel_part_is_absent(capsys: pytest.CaptureFixture[str]) -> None:
    db = readable_db("centos8-modularitylabel")
    assert main(["plan", "--packages-only", "--generic", "--root", str(db.root)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"root {db.root}  kernel absent (packages only)  backend rpm  os centos 8\n")
    assert "not planned (packages only)" in out
    assert "crypto-policies requires /usr/libexec/platform-python  ✂ platform-python" in out
    assert re.search(r"errors \(\d+: a build stops here\):\n  \d+ of \d+ files of systemd-239", out)


def test_host_only_still_requires_the_tools_of_the_root_file_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = readable_db("centos8-modularitylabel")
    root = tmp_path / "root"
    shutil.copytree(db.root, root, symlinks=True)
    (root / "etc/fstab").write_text("UUID=0b7e5a2c / ext4 defaults 0 1\n")
    rc, _plan, err = plan_packages_only_host(capsys, root)
    assert rc == 1 and "package or provide 'e2fsprogs' (from fs ext4) is not installed" in err


def plan_packages_only_host(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, str, str]:
    rc = main(["plan", "--packages-only", "--json", "--root", str(root)])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --- rpm's database handling on these roots


@pytest.mark.parametrize("name", NAMES)
def test_database_is_read_in_full_with_the_file_index_built_from_headers(name: str) -> None:
    db = readable_db(name)
    ours = RpmDB(db.root)
    rebuilt = RpmDB(db.indexed)
    gpg = len(rpmdbs.rpm_q(db.root, "-a", "gpg-pubkey*").stdout.splitlines())
    assert len(ours.packages()) == db.packages - gpg == len(rebuilt.packages())
    assert ours.dbpath == "/var/lib/rpm" and any("no file index" in n for n in ours.notes)
    assert not any("no file index" in n for n in rebuilt.notes)
    assert sorted(os.listdir(db.root / "var/lib/rpm")) == ["Packages"]  # reading wrote nothing
    # Every file requirement of every package: the same owners through our index as through rpm's.
    by_key = {p.key: p for p in ours.packages()}
    paths = sorted({d.name for p in by_key.values() for d in p.requires if d.name.startswith("/")})
    shipped, indexed = closure_json(db.root), closure_json(db.indexed)
    assert {p["nevra"] for p in shipped["packages"]} == {p["nevra"] for p in indexed["packages"]}
    assert shipped["cut_edges"] == indexed["cut_edges"] and shipped["warnings"] == indexed["warnings"]
    theirs = rpmoracle.Rpm(db.indexed).whatprovides(paths)
    assert len(paths) > 10
    for path in paths:
        mine = [rpmoracle.nvra(p.name, p.nevra) for p in ours.providers(Dep(path))]
        assert sorted(mine) == sorted(theirs[path]), path


def test_an_empty_sqlite_database_rpm_made_does_not_shadow_var_lib_rpm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = readable_db("centos8-modularitylabel" if "centos8-modularitylabel" in NAMES else NAMES[-1])
    root = tmp_path / "root"
    shutil.copytree(db.root, root, symlinks=True)
    # What happens on a RHEL 8 system: rpm queried with the newer location creates an empty database.
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/lib/sysimage/rpm", "-qa"], check=True)
    assert (root / "usr/lib/sysimage/rpm/rpmdb.sqlite").is_file()
    opened = RpmDB(root)
    assert opened.dbpath == "/var/lib/rpm" and len(opened.packages()) > 100
    rc, plan, _err = plan_packages_only(capsys, root)
    assert any("usr/lib/sysimage/rpm lists no packages, using" in w for w in plan["warnings"])
    assert len(plan["packages"]) > 50


def test_an_empty_database_alone_is_an_error_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID="centos"\nVERSION_ID="8"\n')
    subprocess.run(["rpm", "--root", str(root), "--dbpath", "/usr/lib/sysimage/rpm", "-qa"], check=True)
    with pytest.raises(InitrdError, match=r"usr/lib/sysimage/rpm lists no packages"):
        RpmDB(root)


# --- what the family's rules do on RHEL 8


def test_rhel8_platform_python_is_a_cut_edge_not_in_the_initrd(capsys: pytest.CaptureFixture[str]) -> None:
    db = readable_db("centos8-modularitylabel")
    plan = closure_json(db.root)
    names = {p["name"] for p in plan["packages"]}
    assert not names & {"platform-python", "platform-python-setuptools", "chkconfig", "popt", "python3-libs"}
    assert {
        "package": "crypto-policies",
        "requires": "/usr/libexec/platform-python",
        "excluded": "platform-python",
    } in plan["cut_edges"]
    # rpm's walk reaches them: only the exclusion keeps them out.
    reached = {oracle(db.name).names[p] for p in oracle(db.name).packages}
    assert {"platform-python", "chkconfig", "popt"} <= reached


def test_interpreter_requirements_are_not_followed() -> None:
    """Requires(interp) of triggers (no pre/post bit) exist in these databases: none is followed."""
    db = readable_db("centos8-modularitylabel")
    w = oracle(db.name)
    interp_only = [e for e in w.edges if e.req.deptype == "interp"]
    assert interp_only, "the database has no interp-only requirement any more"
    ours = RpmDB(db.root)
    by_nvra = {rpmoracle.nvra(p.name, p.nevra): p for p in ours.packages()}
    for e in interp_only:
        deps = [d for d in by_nvra[e.source].requires if d.name == e.req.name and not closure.runtime(d)]
        assert deps, f"{e.source}: {e.req.text} (interp) is taken as a runtime requirement"


def test_rhel8_package_list_resolves_to_rhel_names() -> None:
    """RHEL 8 names: udev is systemd-udev's provide, util-linux-core does not exist (util-linux comes
    with systemd), libfdisk and cryptsetup-libs are packages of their own."""
    db = readable_db("centos8-modularitylabel")
    w = oracle(db.name)
    names = {e: sorted(w.names[p] for p in ps) for e, ps in w.start.items()}
    assert names["udev"] == ["systemd-udev"]
    assert names["util-linux-core"] == [] and w.optional["util-linux-core"]
    assert {"libfdisk", "cryptsetup-libs", "systemd", "bash"} <= {n for ns in names.values() for n in ns}
    plan = closure_json(db.root)
    chosen = {p["name"]: p["reason"] for p in plan["packages"]}
    assert chosen["util-linux"][:2] == ("list:systemd", "systemd")
    assert [e for e, ps in names.items() if not ps and not w.optional[e]] == []  # nothing required is absent


def test_rhel7_lacks_entries_of_the_list_and_is_refused_naming_the_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = readable_db("centos7-plain")
    rc, _plan, err = plan_packages_only(capsys, db.root)
    assert rc == 1 and "package or provide 'less' (from list) is not installed" in err
    assert oracle(db.name).start["less"] == ()


# --- the build


def test_build_of_a_root_without_its_files_stops_with_one_error_per_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = readable_db("centos8-modularitylabel")
    root = tmp_path / "root"
    shutil.copytree(db.root, root, symlinks=True)
    install_kernel(root, SYN_KVER)  # the kernel part is fine: the packages' files are what is missing
    out = tmp_path / "initrd"
    rc = main(["build", "--generic", "--no-cache", "-k", SYN_KVER, "--root", str(root), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists() and list(tmp_path.glob(".*")) == []
    lines = [line for line in err.splitlines() if "are not in the root" in line]
    systemd = [line for line in lines if " files of systemd-239" in line]
    assert len(systemd) == 1 and "the root is incomplete or its database is stale" in systemd[0]
    assert len(lines) == len({line.split(" files of ")[1].split()[0] for line in lines}) > 50
    assert "packages of the initrd have files that are not in" in err and "Traceback" not in err
