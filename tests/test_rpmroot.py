"""The rpm sysroot fixture: Debian packages repackaged with rpmbuild, installed with rpm.

The translation tests are fast; the ones on the installed sysroot are slow (the fixture is cached).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import debrpm, rpmsysroot

DBPATH = "/usr/lib/sysimage/rpm"


def rpmq(root: Path, *args: str) -> list[str]:
    out = subprocess.run(
        ["rpm", "-q", "--root", str(root), "--dbpath", DBPATH, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.splitlines()


# ---- translation (fast) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("debian", "rpm"),
    [
        ("2:2.6.1-4~deb12u2", (2, "2.6.1", "4~deb12u2")),
        ("30+20221128-1", (None, "30+20221128", "1")),
        ("12.4+deb12u11", (None, "12.4+deb12u11", "0")),  # native: rpm needs a release
        ("1.2-beta-3", (None, "1.2_beta", "3")),  # rpm forbids '-' in a version
    ],
)
def test_debian_version_splits_into_epoch_version_release(debian: str, rpm: tuple[object, ...]) -> None:
    assert debrpm.rpm_evr(debian) == rpm


def test_alternatives_become_rich_deps_and_operators_are_mapped() -> None:
    field = "libc6 (>= 2.34), a (>> 1) | b:any, c (<< 2:3-1), debconf (>= 0.5) | debconf-2.0, d (= 1.0-2)"
    assert debrpm.rpm_relations(field) == [
        "libc6 >= 2.34-0",
        "(a > 1-0 or b)",
        "c < 2:3-1",
        "(debconf >= 0.5-0 or debconf-2.0)",
        "d = 1.0-2",
    ]


def test_absent_revision_compares_like_dpkg() -> None:
    """dpkg says 2.36-9 >> 2.36 and not 2.36-9 <= 2.36; librpm must agree on the translated deps."""
    import rpm

    provide = rpm.ds(("libc6", rpm.RPMSENSE_EQUAL, "2.36-9+deb12u14"), "provides")

    def matches(field: str) -> bool:
        name, op, evr = debrpm.rpm_relations(field)[0].split()
        return bool(provide.Search(rpm.ds((name, _SENSE[op], evr), "requires")) >= 0)

    assert matches("libc6 (>> 2.36)")
    assert matches("libc6 (>= 2.36)")
    assert not matches("libc6 (<= 2.36)")
    assert not matches("libc6 (<< 2.36)")
    assert matches("libc6 (<< 2.37)")


def test_files_are_canonicalised_to_usr_and_flagged() -> None:
    pkgs = debrpm.installed_packages()
    files = {f.path: f.directives for f in debrpm.package_files(pkgs["kmod"])}
    assert "/usr/bin/kmod" in files  # dpkg lists /bin/kmod
    assert not any(p == "/bin" or p.startswith(("/bin/", "/sbin/", "/lib/")) for p in files)
    assert "%doc" in files["/usr/share/man/man8/kmod.8.gz"]
    assert "%dir" in files["/usr/lib/modprobe.d"]
    udev = {f.path: f.directives for f in debrpm.package_files(pkgs["udev"])}
    assert "%config(noreplace)" in udev["/etc/udev/udev.conf"]
    assert "%license" in udev["/usr/share/doc/udev/copyright"]


def test_glob_characters_in_file_names_are_literal() -> None:
    assert debrpm._spec_path("/usr/bin/[") == '"/usr/bin/[[]"'
    assert debrpm._spec_path("/a/x*y%z") == '"/a/x[*]y%%z"'


def test_closure_follows_depends_and_virtual_provides() -> None:
    pkgs = debrpm.installed_packages()
    names = rpmsysroot.closure(pkgs, ["kmod"], recommends=False)
    assert {"kmod", "libkmod2", "libc6", "libzstd1"} <= set(names)
    assert "systemd" not in names
    assert "libatm1" in rpmsysroot.closure(pkgs, ["iproute2"])  # recommended, and installed here


def test_rebuilding_a_package_gives_the_same_bytes(tmp_path: Path) -> None:
    pkg = debrpm.installed_packages()["kmod"]
    digests = []
    for run in ("a", "b"):
        rpm = debrpm.build_rpm(pkg, tmp_path / run)
        digests.append(hashlib.sha256(rpm.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


# ---- the installed sysroot (slow, cached) -------------------------------------------------------


def _headers(root: Path) -> Iterator[object]:
    import rpm

    rpm.addMacro("_dbpath", DBPATH)
    try:
        ts = rpm.TransactionSet(str(root))
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
        yield from ts.dbMatch()
    finally:
        rpm.delMacro("_dbpath")


@pytest.mark.slow
def test_sysroot_holds_every_package_with_its_debian_version(rpm_sysroot: Path) -> None:
    installed = set(rpmq(rpm_sysroot, "-a", "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\n"))
    expected = set()
    for p in rpmsysroot.packages():
        e, v, r = debrpm.rpm_evr(p.version)
        expected.add(f"{p.name} {e or 0}:{v}-{r}")
    assert installed == expected
    assert {
        "systemd",
        "udev",
        "bash",
        "kmod",
        "util-linux",
        f"linux-image-{rpmsysroot.kernel_version()}",
    } <= {line.split()[0] for line in installed}


@pytest.mark.slow
def test_rpmdb_answers_file_and_capability_queries(rpm_sysroot: Path) -> None:
    assert rpmq(rpm_sysroot, "--qf", "%{NAME}\n", "--whatprovides", "/bin/sh") == ["dash"]
    assert rpmq(rpm_sysroot, "--qf", "%{NAME}\n", "--whatprovides", "libc.so.6()(64bit)") == ["libc6"]
    assert rpmq(rpm_sysroot, "--qf", "%{NAME}\n", "-f", "/usr/lib/systemd/systemd-udevd") == ["udev"]
    assert rpmq(rpm_sysroot, "--qf", "%{EPOCH}\n", "libcryptsetup12") == ["2"]


@pytest.mark.slow
def test_debian_relations_are_rpm_requires(rpm_sysroot: Path) -> None:
    systemd = rpmq(rpm_sysroot, "--requires", "systemd")
    assert any(r.startswith("libsystemd-shared = ") for r in systemd)  # Depends, versioned
    assert "libc.so.6()(64bit)" in systemd  # rpm's own soname deps on top
    rich = rpmq(rpm_sysroot, "--requires", "init-system-helpers")
    assert "(usrmerge or usr-is-merged)" in rich
    assert "(default-dbus-system-bus or dbus-system-bus)" in rpmq(rpm_sysroot, "--recommends", "systemd")


@pytest.mark.slow
def test_every_requirement_is_satisfied_inside_the_sysroot(rpm_sysroot: Path) -> None:
    import rpm

    rpm.addMacro("_dbpath", DBPATH)
    try:
        ts = rpm.TransactionSet(str(rpm_sysroot))
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)

        def satisfied(name: str, flags: int = 0, evr: str = "") -> bool:
            if name.startswith("/"):
                return bool(list(ts.dbMatch("basenames", name)) or list(ts.dbMatch("providename", name)))
            want = rpm.ds((name, flags, evr), "requires")
            return any(rpm.ds(h, "provides").Search(want) >= 0 for h in ts.dbMatch("providename", name))

        unsatisfied = []
        for h in ts.dbMatch():
            for d in rpm.ds(h, "requires"):
                if d.N().startswith("rpmlib("):
                    continue
                if d.IsRich():  # ours are only ever "(a or b ...)" of plain deps
                    alts = [a.split() for a in d.N()[1:-1].split(" or ")]
                    ok = any(
                        satisfied(a[0]) if len(a) == 1 else satisfied(a[0], _SENSE[a[1]], a[2]) for a in alts
                    )
                else:
                    ok = satisfied(d.N(), d.Flags(), d.EVR())
                if not ok:
                    unsatisfied.append(f"{h['name']}: {d.DNEVR()[2:]}")
    finally:
        rpm.delMacro("_dbpath")
    assert unsatisfied == []


def _sense() -> dict[str, int]:
    import rpm

    lt, gt, eq = rpm.RPMSENSE_LESS, rpm.RPMSENSE_GREATER, rpm.RPMSENSE_EQUAL
    return {"<": lt, "<=": lt | eq, "=": eq, ">=": gt | eq, ">": gt}


_SENSE = _sense()


@pytest.mark.slow
def test_every_file_rpm_lists_exists_with_its_type(rpm_sysroot: Path) -> None:
    import rpm

    missing, wrong = [], []
    count = 0
    for h in _headers(rpm_sysroot):
        for f in rpm.files(h):
            if f.fflags & rpm.RPMFILE_GHOST:
                continue
            count += 1
            try:
                st = os.lstat(rpm_sysroot / f.name.lstrip("/"))
            except FileNotFoundError:
                missing.append(f.name)
                continue
            if stat.S_IFMT(st.st_mode) != stat.S_IFMT(f.mode):
                wrong.append(f.name)
            elif stat.S_ISREG(st.st_mode) and st.st_size != f.size:
                wrong.append(f.name)
    assert count > 10000
    assert missing == [] and wrong == []


@pytest.mark.slow
def test_rpm_verify_finds_every_file_as_the_rpmdb_describes_it(rpm_sysroot: Path) -> None:
    """Digest, size, mode, owner, link target and mtime of every installed file (also proves that no
    test has changed the shared sysroot)."""
    r = subprocess.run(
        ["rpm", "-Va", "--root", str(rpm_sysroot), "--dbpath", DBPATH, "--nodeps"],
        capture_output=True,
        text=True,
    )
    assert (r.returncode, r.stdout) == (0, ""), r.stdout[-3000:] + r.stderr[-1000:]


@pytest.mark.slow
def test_sysroot_is_usrmerged_and_packages_list_only_usr_paths(rpm_sysroot: Path) -> None:
    for link in ("bin", "sbin", "lib", "lib64"):
        assert os.readlink(rpm_sysroot / link) == f"usr/{link}"
    paths = rpmq(rpm_sysroot, "-a", "--qf", "[%{FILENAMES}\n]")
    assert not [p for p in paths if p.split("/")[1] in ("bin", "sbin", "lib", "lib64")]


@pytest.mark.slow
def test_binaries_are_the_hosts_and_run(rpm_sysroot: Path) -> None:
    for path in ("usr/bin/kmod", "usr/lib/systemd/systemd"):
        assert (rpm_sysroot / path).read_bytes() == (Path("/") / path).read_bytes()
    r = subprocess.run(
        ["chroot", str(rpm_sysroot), "/usr/bin/systemctl", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("systemd "), r.stderr


@pytest.mark.slow
def test_kernel_package_owns_its_modules_and_indexes_exist(rpm_sysroot: Path) -> None:
    kver = rpmsysroot.kernel_version()
    moddir = rpm_sysroot / "usr/lib/modules" / kver
    ko = next(moddir.glob("kernel/fs/ext4/ext4.ko*"))
    owner = rpmq(rpm_sysroot, "--qf", "%{NAME}\n", "-f", f"/{ko.relative_to(rpm_sysroot)}")
    assert owner == [f"linux-image-{kver}"]
    assert (moddir / "modules.dep").stat().st_size > 0  # written by depmod, as the postinst would
    ghosts = rpmq(rpm_sysroot, "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", f"linux-image-{kver}")
    assert f"g /usr/lib/modules/{kver}/modules.dep" in ghosts
    assert (rpm_sysroot / "etc/os-release").exists()
