"""The dpkg backend on this machine's own database, checked against apt and dpkg-query."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages.closure import Closure, Excluder, Request, resolve
from mkosi_initrd.packages.dpkg import DpkgDB, parse_depends
from mkosi_initrd.packages.files import package_entries
from mkosi_initrd.packages.model import Dep
from mkosi_initrd.plan.model import CutEdge

pytestmark = pytest.mark.skipif(
    not Path("/var/lib/dpkg/status").exists() or not shutil.which("apt-cache"), reason="needs a dpkg system"
)


def installed() -> set[str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("\t")[0] for line in out.splitlines() if line.endswith("\tinstalled")}


def apt_closure(name: str) -> set[str]:
    """`apt-cache depends --recurse --installed`: every installed package reachable by
    Depends/Pre-Depends (apt also lists uninstalled providers and every alternative)."""
    out = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--installed", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", name],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line.strip() for line in out.splitlines() if not line.startswith(" ")} & installed()


@pytest.fixture(scope="module")
def db() -> DpkgDB:
    return DpkgDB(Path("/"))


def test_parses_alternatives_versions_and_qualifiers() -> None:
    deps = parse_depends(
        "libc6 (>= 2.34), usrmerge | usr-is-merged (>> 1~), python3:any, foo [amd64] <!nocheck>"
    )
    assert deps == [
        Dep("libc6", ">=", "2.34"),
        Dep("(usrmerge or usr-is-merged > 1~)", rich=True),
        Dep("python3:any"),
        Dep("foo"),
    ]


def test_lists_exactly_the_installed_packages(db: DpkgDB) -> None:
    assert {p.name for p in db.packages()} == installed()


def test_versions_match_dpkg_query(db: DpkgDB) -> None:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}:${Architecture} ${Version}\n", "systemd", "libc6", "dmsetup"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        key, version = line.split()
        pkg = next(p for p in db.packages() if p.key == key)
        assert db.full_version(pkg) == version
        assert db.vercmp(pkg.evr, version) == 0


@pytest.mark.parametrize("name", ["systemd", "udev", "util-linux", "login"])
def test_closure_matches_apt_cache(db: DpkgDB, name: str) -> None:
    if name not in installed():
        pytest.skip(f"{name} is not installed")
    closure = resolve(db, [Request(name, "list")], Excluder([]))
    assert {c.package.name for c in closure.packages} == apt_closure(name)
    assert not closure.warnings


def test_versioned_provides_need_a_versioned_provide(db: DpkgDB) -> None:
    # perl-base provides `libfile-path-perl (= 2.18)` in Debian 12.
    prov = [
        p for p in db.packages() if any(d.name == "libfile-path-perl" and d.op == "=" for d in p.provides)
    ]
    if not prov:
        pytest.skip("no versioned provide of libfile-path-perl here")
    version = next(d.evr for d in prov[0].provides if d.name == "libfile-path-perl")
    assert db.providers(Dep("libfile-path-perl", ">=", version)) == prov
    assert db.providers(Dep("libfile-path-perl", ">", version)) == []


def test_file_entries_are_found_through_usrmerge_links(db: DpkgDB) -> None:
    owner = subprocess.run(["dpkg-query", "-S", "/bin/bash"], capture_output=True, text=True).stdout.split(
        ":"
    )[0]
    assert [p.name for p in db.providers(Dep("/usr/bin/bash"))] == [owner]
    assert [p.name for p in db.providers(Dep("/bin/bash"))] == [owner]


def test_file_lists_match_dpkg_L(db: DpkgDB) -> None:
    pkg = next(p for p in db.packages() if p.name == "kmod")
    listed = subprocess.run(["dpkg", "-L", "kmod"], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    assert {f.path for f in db.files(pkg)} == {p for p in listed if p and p != "/."}


def test_diverted_files_belong_to_the_diverter(db: DpkgDB) -> None:
    # dash diverts /bin/sh (to /bin/sh.distrib) on Debian; whoever else lists /bin/sh does not get it.
    divs = subprocess.run(["dpkg-divert", "--list"], capture_output=True, text=True).stdout
    if "/bin/sh " not in divs and "/usr/share/man/man1/sh.1.gz" not in divs:
        pytest.skip("no diversion to check")
    dash = next(p for p in db.packages() if p.name == "dash")
    assert "/bin/sh" in {f.path for f in db.files(dash)}


# --- a root made with dpkg-deb and dpkg --root (tests/fixtures/debroot.py)


@pytest.fixture(scope="module")
def fxdb() -> DpkgDB:
    from fixtures.debroot import deb_root

    return DpkgDB(deb_root())


def fx_closure(fxdb: DpkgDB, *entries: str) -> Closure:
    from mkosi_initrd.planner.steps import exclusions

    return resolve(fxdb, [Request.parse(e, "config") for e in entries], Excluder(exclusions("debian")))


def test_sysroot_closure_follows_pre_depends_versions_and_provides(fxdb: DpkgDB) -> None:
    c = fx_closure(fxdb, "fx-tool")
    reasons = {x.package.name: x.reason for x in c.packages}
    assert set(reasons) == {"fx-tool", "libfx1", "init-system-helpers", "fx-virt-provider"}
    assert reasons["libfx1"] == ("config:fx-tool", "fx-tool", "libfx1")  # Pre-Depends, 2.0~rc1 >= 2.0~
    assert (
        next(x for x in c.packages if x.package.name == "fx-tool").package.nevra == "fx-tool-1:2.0-1.amd64"
    )


def test_usrmerge_and_python_edges_are_cut_not_followed(fxdb: DpkgDB) -> None:
    c = fx_closure(fxdb, "fx-tool")
    assert CutEdge("init-system-helpers", "(usrmerge or usr-is-merged)", "usrmerge") in c.cut_edges
    assert CutEdge("fx-tool", "python3:any", "python3") in c.cut_edges
    assert not {"usrmerge", "perl", "python3"} & {x.package.name for x in c.packages}


def test_unversioned_provide_does_not_satisfy_a_versioned_dependency(fxdb: DpkgDB) -> None:
    c = fx_closure(fxdb, "fx-tool")
    assert c.warnings == ("fx-tool-1:2.0-1.amd64 requires fx-unv >= 1, which nothing installed provides",)
    assert [p.name for p in fxdb.providers(Dep("fx-unv"))] == ["fx-virt-provider"]


def test_removed_package_is_not_installed_but_named_as_a_provider(fxdb: DpkgDB) -> None:
    assert "fx-gone" not in {p.name for p in fxdb.packages()}
    with pytest.raises(InitrdError, match="'fx-ghostly'") as e:
        fx_closure(fxdb, "fx-ghostly")
    assert "install fx-gone" in e.value.hint


def test_sysroot_files_are_canonical_and_filtered(fxdb: DpkgDB) -> None:
    c = fx_closure(fxdb, "fx-tool")
    per_pkg, warnings = package_entries(fxdb.root, fxdb, c.packages, [])
    entries = {e.path: e for pf in per_pkg for e in pf.entries}
    assert not warnings
    assert entries["/usr/bin/fx-tool"].source == fxdb.root / "usr/bin/fx-tool"
    assert entries["/usr/bin/fx-tool"].hardlink == entries["/usr/bin/fx-tool2"].hardlink != ""
    assert entries["/usr/lib/x86_64-linux-gnu/libfx.so.1"].linkto == "libfx.so.1.0"
    assert entries["/bin"].linkto == "usr/bin" and entries["/lib"].linkto == "usr/lib"
    assert "/bin/fx-tool" not in entries and "/etc/fx-tool.conf" in entries
    assert not [
        p for p in entries if p.startswith(("/usr/share/doc", "/usr/share/man", "/usr/share/locale/"))
    ]


# --- a damaged status file is said to be damaged, where, and how to restore it


def _status_root(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(text)
    return root


def _host_status() -> str:
    return Path("/var/lib/dpkg/status").read_text(errors="replace")


def _garbage_inside(text: str) -> str:
    at = text.index("\n\n", len(text) // 2) + 2
    return text[:at] + "\x00\x17\x93 garbage without a field\n" + text[at:]


def _cut_mid_line(text: str) -> str:
    return text[: text.index("\nVersion: ", len(text) // 2) + 6]


def _cut_after_package_line(text: str) -> str:
    return text[: text.index("\nPackage: ", len(text) // 2) + 1] + "Package: half-written\n"


@pytest.mark.parametrize(
    "damage", [_garbage_inside, _cut_mid_line, _cut_after_package_line], ids=["garbage", "cut", "no-status"]
)
def test_a_damaged_status_file_is_an_error_naming_it_and_the_line(
    tmp_path: Path, damage: Callable[[str], str]
) -> None:
    root = _status_root(tmp_path, damage(_host_status()))
    with pytest.raises(
        InitrdError, match=f"the dpkg database {root}/var/lib/dpkg/status is damaged at line "
    ):
        DpkgDB(root)


def test_the_damaged_line_is_the_one_named(tmp_path: Path) -> None:
    text = _garbage_inside(_host_status())
    n = text[: text.index("\x00\x17")].count("\n") + 1
    with pytest.raises(InitrdError, match=f"damaged at line {n}: ") as e:
        DpkgDB(_status_root(tmp_path, text))
    assert "/var/backups/dpkg.status.0" in e.value.hint


def test_a_status_file_without_installed_packages_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InitrdError, match="lists no installed package"):
        DpkgDB(_status_root(tmp_path, ""))


def test_a_build_on_a_damaged_status_says_so_not_that_systemd_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fixtures.kernel import install_kernel
    from mkosi_initrd.cli import main

    root = _status_root(tmp_path, _cut_mid_line(_host_status()))
    (root / "etc").mkdir()
    shutil.copyfile("/etc/os-release", root / "etc/os-release")
    install_kernel(root, "1.0")
    assert main(["plan", "--root", str(root), "-k", "1.0", "--generic"]) == 1
    err = capsys.readouterr().err
    assert f"the dpkg database {root}/var/lib/dpkg/status is damaged at line" in err
    assert "not installed" not in err and "Traceback" not in err


def test_primed_owners_of_a_few_paths_are_the_full_indexs_and_dpkg_s(db: DpkgDB) -> None:
    # Paths as the planner asks for them (canonical, /usr/lib...), recorded by dpkg under /lib here.
    paths = ["/usr/lib/systemd/systemd-cryptsetup", "/usr/bin/bash", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
    primed = DpkgDB(Path("/"))
    primed.prime_files([*paths, "/usr/bin/no-such-file"])
    assert primed._file_index is None  # the whole index was never built
    for path in paths:
        owners = [p.name for p in primed.providers(Dep(path))]
        assert owners == [p.name for p in db.providers(Dep(path))]  # db: the full index
        short = path.removeprefix("/usr")
        out = subprocess.run(["dpkg-query", "-S", path, short], capture_output=True, text=True).stdout
        assert set(owners) == {w.split(":")[0] for w in out.split(": ", 1)[0].split(", ")}
    assert primed.providers(Dep("/usr/bin/no-such-file")) == []
