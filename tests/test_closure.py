"""The closure and the file selection, on the rpmbuild-made root."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fixtures.rpmspecs import rpm_root
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.packages.closure import Closure, Excluder, Request, resolve
from mkosi_initrd.packages.files import package_entries
from mkosi_initrd.packages.rpm import RpmDB
from mkosi_initrd.plan.model import CutEdge
from mkosi_initrd.planner.steps import exclusions
from mkosi_initrd.resources import read_list


@pytest.fixture(scope="module")
def db() -> RpmDB:
    return RpmDB(rpm_root())


def closure_of(db: RpmDB, *entries: str, removed: tuple[str, ...] = (), weak: bool = False) -> Closure:
    reqs = [Request.parse(e, "config") for e in entries]
    return resolve(db, reqs, Excluder(exclusions("fedora"), removed), weak_deps=weak)


def names(c: Closure) -> set[str]:
    return {x.package.name for x in c.packages}


def test_follows_file_soname_versioned_and_rich_requirements(db: RpmDB) -> None:
    got = names(closure_of(db, "fx-app"))
    assert {"bash", "fx-lib", "fx-shell-cap-provider", "fx-alt-b", "fx-both", "fx-ver", "fx-nested"} <= got
    assert {"glibc", "fx-filesystem"} <= got  # transitively, through bash


def test_scriptlet_only_requirements_are_not_followed(db: RpmDB) -> None:
    got = names(closure_of(db, "fx-app"))
    assert not {"fx-preonly", "fx-postonly", "fx-prepost"} & got
    assert "fx-both" in got  # required at runtime as well as in %pre


def test_weak_dependencies_only_on_request(db: RpmDB) -> None:
    assert "fx-weak" not in names(closure_of(db, "fx-app"))
    assert "fx-weak" in names(closure_of(db, "fx-app", weak=True))


def test_conditionals_and_with(db: RpmDB) -> None:
    got = names(closure_of(db, "fx-app"))
    assert "fx-cond-then" in got  # (fx-cond-then if bash): bash is in the closure
    assert "fx-cond-else" in got and "fx-cond-no" not in got  # (fx-cond-no if fx-alt-a else fx-cond-else)
    assert "fx-capab" in got and "fx-capa-only" not in got  # (fx-capa with fx-capb): one package, both
    assert "systemd-udev" not in names(closure_of(db, "systemd"))  # (systemd-udev if fx-never-installed)


def test_or_prefers_an_alternative_already_in_the_closure(db: RpmDB) -> None:
    # fx-capa-only and fx-capab both provide fx-capa; with fx-capa-only in, `fx-capa` is satisfied.
    c = closure_of(db, "fx-capa-only", "fx-capa")
    assert names(c) == {"fx-capa-only"}


def test_excluded_requirement_is_a_cut_edge(db: RpmDB) -> None:
    c = closure_of(db, "fx-app")
    assert "python3-fx" not in names(c)
    assert CutEdge("fx-app", "fx-python-thing", "python3-fx") in c.cut_edges


def test_removed_package_cuts_the_edges_to_it(db: RpmDB) -> None:
    c = closure_of(db, "fx-app", removed=("fx-alt-b",))
    assert "fx-alt-b" not in names(c)
    assert CutEdge("fx-app", "(fx-alt-a or fx-alt-b)", "fx-alt-b") in c.cut_edges


def test_reasons_are_chains_from_the_list_entry(db: RpmDB) -> None:
    reasons = {x.package.name: x.reason for x in closure_of(db, "fx-app").packages}
    assert reasons["fx-app"] == ("config:fx-app", "fx-app")
    assert reasons["bash"] == ("config:fx-app", "fx-app", "bash")
    assert reasons["glibc"] == ("config:fx-app", "fx-app", "bash", "glibc")


def test_entries_may_be_provides_or_paths(db: RpmDB) -> None:
    c = closure_of(db, "udev", "/sbin/fsck.ext4")
    reasons = {x.package.name: x.reason for x in c.packages}
    assert reasons["systemd-udev"] == ("config:udev", "systemd-udev")
    assert reasons["e2fsprogs"] == ("config:/sbin/fsck.ext4", "e2fsprogs")


def test_missing_entry_is_an_error_unless_optional(db: RpmDB) -> None:
    with pytest.raises(InitrdError, match="'fx-alt-a'.*not installed"):
        closure_of(db, "fx-alt-a")
    assert closure_of(db, "fx-alt-a?").missing == ("fx-alt-a",)


def test_fedora_base_list_resolves_on_the_fixture(db: RpmDB) -> None:
    reqs = [Request.parse(e, "list") for e in read_list("packages/fedora/base.list")]
    reqs += [
        Request.parse(line.split()[1], "list") for line in read_list("packages/fedora/filesystems.list")
    ]
    c = resolve(db, reqs, Excluder(exclusions("fedora")))
    assert {"systemd", "systemd-udev", "bash", "less", "gzip", "procps-ng", "glibc"} <= names(c)
    assert "shadow-utils" not in names(c)
    assert set(c.missing) == {
        "tpm2-tss",
        "xfsprogs",
        "dosfstools",
        "btrfs-progs",
        "libfido2",
        "util-linux-core",
    }


def test_files_leave_out_docs_ghosts_locales_and_removed_paths(db: RpmDB) -> None:
    c = closure_of(db, "fx-app", "systemd-udev")
    per_pkg, warnings = package_entries(db.root, db, c.packages, read_list("remove-files.list"))
    entries = {e.path: e for pf in per_pkg for e in pf.entries}
    assert not warnings
    assert "/var/log/fx.log" not in entries  # %ghost
    assert not [
        p for p in entries if p.startswith(("/usr/share/doc", "/usr/share/licenses", "/usr/share/man"))
    ]
    assert "/usr/share/locale/de/LC_MESSAGES/fx.mo" not in entries
    assert "/usr/share/locale/C/LC_MESSAGES/fx.mo" in entries
    assert not [p for p in entries if p.startswith(("/usr/lib/systemd/catalog", "/usr/lib/udev/hwdb.d"))]
    assert "/etc/services" not in entries
    assert "/etc/fx.conf" in entries


def test_file_entries_keep_types_modes_links_and_sources(db: RpmDB) -> None:
    c = closure_of(db, "fx-app")
    per_pkg, _ = package_entries(db.root, db, c.packages, [])
    entries = {e.path: e for pf in per_pkg for e in pf.entries}
    fx, fx2 = entries["/usr/bin/fx"], entries["/usr/bin/fx2"]
    assert fx.hardlink and fx.hardlink == fx2.hardlink
    assert fx.source == db.root / "usr/bin/fx" and fx.size == len("fx-binary")
    assert fx.origin == "fx-app-3.0-1.fx.noarch"
    assert stat.S_IMODE(entries["/usr/bin/fx-suid"].mode) == 0o4755
    assert entries["/usr/bin/fx-link"].is_symlink and entries["/usr/bin/fx-link"].linkto == "fx"
    assert entries["/bin"].is_symlink and entries["/bin"].linkto == "usr/bin"
    assert entries["/usr/bin"].is_dir


def test_database_paths_are_canonicalised_inside_the_root(tmp_path: Path, db: RpmDB) -> None:
    # A database entry under /bin (a symlink to usr/bin in the root) lands at /usr/bin, once.
    from mkosi_initrd.rootfs import CanonicalPaths

    canon = CanonicalPaths(db.root)
    assert canon("/bin/bash") == "/usr/bin/bash"
    assert canon("/bin") == "/bin"
    assert canon("/lib64/libfx.so.1") == "/usr/lib64/libfx.so.1"


def test_a_seeded_closure_adds_what_resolving_everything_at_once_adds(db: RpmDB) -> None:
    # The planner resolves dlopen()ed libraries on top of the list's closure: the same packages and
    # reasons as one resolution of both, conditionals of the seed decided again.
    excluder = Excluder(exclusions("fedora"))
    first = resolve(db, [Request("bash", "list")], excluder)
    more = resolve(db, [Request("fx-app", "dlopen")], excluder, seed=first.packages)
    once = resolve(db, [Request("bash", "list"), Request("fx-app", "dlopen")], excluder)
    assert {c.package.key for c in first.packages} & {c.package.key for c in more.packages} == set()
    got = {c.package.name: c.reason for c in (*first.packages, *more.packages)}
    assert got == {c.package.name: c.reason for c in once.packages}
    assert "fx-cond-then" in got  # (fx-cond-then if bash): bash came from the seed
