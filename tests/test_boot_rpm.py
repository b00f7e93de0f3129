"""Boot: an initrd built with the rpm backend, from an rpm sysroot, boots the real kernel to the root.

The sysroot (tests/fixtures/rpmsysroot.py) holds this host's own packages repackaged with
rpmbuild and installed with rpm, so its rpmdb describes real binaries. The same host packages
read through dpkg must give the same initrd, modulo how each backend names versions.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from boot.disks import marker_root
from boot.qemu import boot
from fixtures import debrpm
from fixtures.kernel import kernel_under_test
from prereq import expected_skip

SRC = str(Path(__file__).parents[1] / "src")
# The rpm sysroot packages the test kernel; without one every test here skips (fails under CI=true).
KVER, KERNEL = kernel_under_test().kver, kernel_under_test().image

pytestmark = pytest.mark.usefixtures("host_kernel")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _build(out: Path, *args: str) -> dict[str, Any]:
    built = _cli("-k", KVER, "-o", str(out), "--generic", "--no-cache", *args)
    assert built.returncode == 0, built.stderr
    shown = _cli("inspect", "--json", "--files", str(out))
    assert shown.returncode == 0, shown.stderr
    info: dict[str, Any] = json.loads(shown.stdout)
    return info


@pytest.fixture(scope="module")
def rpm_initrd(rpm_sysroot: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("rpm") / "initrd"
    return out, _build(out, "--root", str(rpm_sysroot), "--backend", "rpm")


@pytest.fixture(scope="module")
def dpkg_initrd(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("dpkg") / "initrd"
    return out, _build(out, "--root", "/", "--backend", "dpkg")


def _versions(manifest: dict[str, Any]) -> dict[str, str]:
    """name → version as rpm spells it ([E:]V-R), from the manifest's NEVRAs."""
    out = {}
    for p in manifest["packages"]:
        name, nevra = p["name"], p["nevra"]
        version = nevra[len(name) + 1 : nevra.rindex(".")]  # strip "name-" and ".arch"
        if manifest["backend"] == "dpkg":
            epoch, v, r = debrpm.rpm_evr(version)
            version = f"{epoch}:{v}-{r}" if epoch is not None else f"{v}-{r}"
        out[name] = version
    return out


@pytest.mark.slow
def test_rpm_and_dpkg_initrds_hold_the_same_packages_and_modules(
    rpm_initrd: tuple[Path, dict[str, Any]], dpkg_initrd: tuple[Path, dict[str, Any]]
) -> None:
    rpm_m, dpkg_m = rpm_initrd[1]["manifest"], dpkg_initrd[1]["manifest"]
    assert rpm_m["backend"] == "rpm" and dpkg_m["backend"] == "dpkg"
    assert {"systemd", "udev", "kmod", "libc6"} <= set(_versions(rpm_m))
    assert _versions(rpm_m) == _versions(dpkg_m)
    assert rpm_m["modules"] == dpkg_m["modules"]


@pytest.mark.slow
def test_rpm_and_dpkg_initrds_hold_the_same_files(
    rpm_initrd: tuple[Path, dict[str, Any]], dpkg_initrd: tuple[Path, dict[str, Any]]
) -> None:
    """Same regular files (path, mode, size) and symlinks; directories may differ: the rpm packages
    own their directories, dpkg's list them under the pre-usrmerge names."""

    def content(info: dict[str, Any]) -> dict[str, tuple[str, int, str]]:
        return {
            f["path"]: (f["mode"], f["size"], f.get("linkto", ""))
            for f in info["files"]
            if not stat.S_ISDIR(int(f["mode"], 8))
        }

    rpm_files, dpkg_files = content(rpm_initrd[1]), content(dpkg_initrd[1])
    manifest = "/usr/lib/mkosi-initrd/manifest.json"  # names the backend and the NEVRAs
    differ = sorted(p for p in rpm_files.keys() | dpkg_files.keys() if rpm_files.get(p) != dpkg_files.get(p))
    assert differ == [manifest]


@pytest.mark.boot
def test_initrd_from_the_rpm_sysroot_boots_to_the_root_through_systemd(
    rpm_initrd: tuple[Path, dict[str, Any]],
) -> None:
    initrd, info = rpm_initrd
    assert {"virtio_blk", "ext4"} <= {m["name"] for m in info["manifest"]["modules"]}
    result = boot(KERNEL, initrd, [marker_root("ext4")], "root=/dev/vda ro", timeout=150, name="rpm-generic")
    assert result.passed, result.explain()
    assert result.facts["fs"] == "ext4" and result.facts["src"] == "/dev/vda"
    log = result.log_path.read_text(errors="replace")
    assert "Running in initrd." in log  # systemd saw /etc/initrd-release
    assert "initrd-switch-root.target" in log


def _plan(*args: str) -> Any:
    from mkosi_initrd.cli import make_config, parse_args
    from mkosi_initrd.planner.steps import make_plan

    return make_plan(make_config(parse_args(["plan", "-k", KVER, "--generic", *args])))


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["lvm", "raid", "network", "nfs", "pkcs11", "plymouth"])
def test_rpm_and_dpkg_plans_agree_for_each_profile(rpm_sysroot: Path, profile: str) -> None:
    """Both backends pick the same packages and files, or fail alike where the host lacks a package."""
    from mkosi_initrd.errors import InitrdError

    plans, errors = {}, {}
    for backend, root in (("dpkg", Path("/")), ("rpm", rpm_sysroot)):
        try:
            plans[backend] = _plan("--root", str(root), "--backend", backend, "--profile", profile)
        except InitrdError as e:
            errors[backend] = str(e).replace(str(root), "ROOT")
    if errors:
        assert set(errors) == {"dpkg", "rpm"} and errors["dpkg"] == errors["rpm"]
        if profile in ("pkcs11", "plymouth"):
            expected_skip(f"profile {profile}", f"needs packages this host lacks: {errors['dpkg']}")
        pytest.fail(f"profile {profile} needs packages this host lacks: {errors['dpkg']}")

    def names(plan: Any) -> set[str]:
        return {p.name for p in plan.packages}

    def files(plan: Any) -> dict[str, tuple[int, int | str]]:
        # A symlink is its target (Entry.size of a link is not set alike by every step).
        return {
            e.path: (e.mode, e.linkto if stat.S_ISLNK(e.mode) else e.size)
            for e in plan.entries
            if not stat.S_ISDIR(e.mode)
        }

    rpm_only = names(plans["rpm"]) - names(plans["dpkg"])
    assert names(plans["dpkg"]) <= names(plans["rpm"])
    assert rpm_only == _soname_only_providers(rpm_sysroot, names(plans["rpm"]) - rpm_only, rpm_only)
    rpm_files, dpkg_files = files(plans["rpm"]), files(plans["dpkg"])
    only_rpm = {e.path for e in plans["rpm"].entries if e.origin.rsplit("-", 2)[0] in rpm_only}
    differ = {p for p in rpm_files.keys() | dpkg_files.keys() if rpm_files.get(p) != dpkg_files.get(p)}
    assert differ - only_rpm == {"/usr/lib/mkosi-initrd/manifest.json"}


def _soname_only_providers(root: Path, planned: set[str], candidates: set[str]) -> set[str]:
    """Those of `candidates` that provide a shared library a `planned` package requires: rpm derives
    such requirements from ELF files, where Debian may only recommend the library's package."""
    import rpm

    rpm.addMacro("_dbpath", "/usr/lib/sysimage/rpm")
    try:
        ts = rpm.TransactionSet(str(root))
        ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
        required = {
            d.N()
            for h in ts.dbMatch()
            if h["name"] in planned
            for d in rpm.ds(h, "requires")
            if ".so" in d.N()
        }
        return {
            h["name"]
            for h in ts.dbMatch()
            if h["name"] in candidates and any(d.N() in required for d in rpm.ds(h, "provides"))
        }
    finally:
        rpm.delMacro("_dbpath")
