"""The Fedora package: built with rpmbuild from a tarball of HEAD, installed into a fresh rpm root, linted.

Debian's rpm has an empty rpm database, so build dependencies cannot be checked here (--nodeps), and
packages are installed with --nodeps --noscripts; what is checked is what the package holds.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.kernel import require_host_kernel
from fixtures.rpmtools import rpmbuild_bb, rpmlint_errors
from fixtures.uki_inputs import make_keypair

REPO = Path(__file__).resolve().parent.parent
DBPATH = "/usr/lib/sysimage/rpm"
RUNTIME_REQUIRES = {
    "python3-rpm",
    "python3-libarchive-c",
    "python3-zstandard",
    "python3-pyelftools",
    "python3-pefile",
    "kmod",
    "systemd-udev",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("rpmbuild"), reason="needs rpmbuild (tools/setup.sh installs rpm)"),
]


@dataclass(frozen=True)
class Built:
    rpm: Path
    srpm: Path
    root: Path  # a fresh rpm root with the binary package installed


def run(argv: list[str | Path], env: dict[str, str] | None = None) -> None:
    """Run a build; on failure, the end of its log is the assertion message."""
    r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = r.stdout.splitlines()
    assert r.returncode == 0, "\n".join([f"{argv[0]} failed:", *log[-40:]])


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    top = tmp_path_factory.mktemp("rpmbuild")
    env = {**os.environ, "RPMBUILD_ARGS": "--nodeps"}
    subprocess.run(
        [REPO / "packaging/make-srpm.sh", "--binary", top], env=env, check=True, capture_output=True
    )
    (rpm,) = (top / "RPMS/noarch").glob("mkosi-initrd-*.noarch.rpm")
    (srpm,) = (top / "SRPMS").glob("mkosi-initrd-*.src.rpm")
    root = tmp_path_factory.mktemp("rpmroot")
    subprocess.run(
        ["rpm", "--root", root, "--dbpath", DBPATH, "-i", "--nodeps", "--noscripts", rpm], check=True
    )
    return Built(rpm, srpm, root)


def rpm_query(package: Path, *args: str) -> list[str]:
    return subprocess.run(
        ["rpm", "-qp", *args, package], capture_output=True, text=True, check=True
    ).stdout.split("\n")[:-1]


def site_packages(root: Path) -> Path:
    (sitelib,) = root.glob("usr/lib/python3.*/site-packages")
    return sitelib


def test_installed_package_is_recorded_in_the_new_root(built: Built) -> None:
    r = subprocess.run(
        ["rpm", "--root", built.root, "--dbpath", DBPATH, "-q", "mkosi-initrd"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and r.stdout.startswith("mkosi-initrd-0.1.0-1"), r.stdout + r.stderr


def test_kernel_install_plugin_is_installed_executable_and_identical_to_the_repository(built: Built) -> None:
    hook = built.root / "usr/lib/kernel/install.d/50-mkosi-initrd.install"
    assert hook.stat().st_mode & 0o777 == 0o755
    assert hook.read_bytes() == git("show", "HEAD:install.d/50-mkosi-initrd.install").encode()


def test_every_python_module_and_data_file_of_head_is_packaged(built: Built) -> None:
    tracked = {p.removeprefix("src/") for p in git("ls-files", "src/mkosi_initrd").split()}
    assert "mkosi_initrd/cli.py" in tracked
    sitelib = site_packages(built.root)
    missing = [p for p in sorted(tracked) if not (sitelib / p).is_file()]
    assert missing == []


def test_packaged_cli_runs_from_the_installed_tree(built: Built) -> None:
    script = built.root / "usr/bin/mkosi-initrd"
    assert script.read_text().startswith("#!/usr/bin/python3\n")
    env = {**os.environ, "PYTHONPATH": str(site_packages(built.root))}
    r = subprocess.run(
        [sys.executable, script, "--version"], capture_output=True, text=True, env=env, check=True
    )
    assert r.stdout.strip() == "mkosi-initrd 0.1.0"
    r = subprocess.run(
        [sys.executable, "-c", "import mkosi_initrd; print(mkosi_initrd.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=True,
    )
    assert r.stdout.startswith(str(built.root))


def test_man_page_license_and_docs_are_installed(built: Built) -> None:
    page = gzip.decompress((built.root / "usr/share/man/man1/mkosi-initrd.1.gz").read_bytes()).decode()
    assert page.startswith(".TH MKOSI-INITRD 1 ")
    assert "\\fB\\-\\-kernel\\-version\\fR" in page
    license_text = (built.root / "usr/share/licenses/mkosi-initrd-0.1.0/LICENSE").read_text()
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in license_text and "Version 2.1" in license_text
    docs = built.root / "usr/share/doc/mkosi-initrd-0.1.0"
    assert (docs / "README.md").read_text() == git("show", "HEAD:README.md")
    for example in ("kernel-install.conf.example", "mkosi-initrd.conf.example"):
        if git("ls-files", example).strip():
            assert (docs / example).read_text() == git("show", f"HEAD:{example}")


def test_configuration_directories_are_owned(built: Built) -> None:
    files = set(rpm_query(built.rpm, "-l"))
    for d in ("/etc/mkosi-initrd/mkosi-initrd.conf.d", "/usr/lib/mkosi-initrd/mkosi-initrd.conf.d"):
        assert d in files


def test_package_requires_its_runtime_dependencies(built: Built) -> None:
    requires = {re.split(r"\s", r)[0] for r in rpm_query(built.rpm, "--requires")}
    assert RUNTIME_REQUIRES <= requires
    assert rpm_query(built.rpm, "--qf", "%{ARCH} %{LICENSE}\n") == ["noarch LGPL-2.1-or-later"]


def test_spec_version_matches_pyproject() -> None:
    spec = (REPO / "packaging/mkosi-initrd.spec").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    spec_version = re.search(r"^Version:\s*(\S+)", spec, re.M)
    py_version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert spec_version and py_version and spec_version.group(1) == py_version.group(1)


def test_rpmlint_finds_no_errors(built: Built) -> None:
    assert rpmlint_errors(built.rpm, built.srpm, REPO / "packaging/mkosi-initrd.spec") == []


@dataclass(frozen=True)
class InitrdPackage:
    rpm: Path
    root: Path
    kver: str
    verity_certificate: Path


@pytest.fixture(scope="module")
def initrd_package(tmp_path_factory: pytest.TempPathFactory) -> InitrdPackage:
    """packaging/mkosi-initrd-initrd.spec built here, from this machine's packages and kernel.

    The build root is this machine (rpmbuild runs in place, as koji runs it in its build root), and
    mkosi-initrd runs from this source tree rather than from an installed package."""
    kver = require_host_kernel().kver
    top = tmp_path_factory.mktemp("rpmbuild-initrd")
    python = f"env PYTHONPATH={REPO / 'src'} {sys.executable}"
    _key, cert = make_keypair(top, "verity")  # the distribution's extension-signing certificate
    defines = {"kver": kver, "mkosi_initrd_python": python, "verity_certificate": str(cert)}
    run([*rpmbuild_bb(REPO / "packaging/mkosi-initrd-initrd.spec", top, defines, "--nodeps")])
    (rpm,) = (top / "RPMS").glob("*/mkosi-initrd-generic-*.rpm")
    root = tmp_path_factory.mktemp("rpmroot-initrd")
    subprocess.run(
        ["rpm", "--root", root, "--dbpath", DBPATH, "-i", "--nodeps", "--noscripts", rpm], check=True
    )
    return InitrdPackage(rpm, root, kver, cert)


def test_initrd_package_installs_the_initrd_where_the_plugin_looks(initrd_package: InitrdPackage) -> None:
    from mkosi_initrd.kernel_install.prebuilt import prebuilt_initrd

    kver = initrd_package.kver
    assert rpm_query(initrd_package.rpm, "-l") == [
        f"/usr/lib/modules/{kver}/initrd",
        *docs_of(initrd_package),
    ]
    path = prebuilt_initrd(initrd_package.root, kver)
    assert path == initrd_package.root / f"usr/lib/modules/{kver}/initrd"


def docs_of(pkg: InitrdPackage) -> list[str]:
    return [f for f in rpm_query(pkg.rpm, "-l") if f.startswith("/usr/share/doc/")]


def test_initrd_package_holds_a_generic_initrd_of_this_machines_packages(
    initrd_package: InitrdPackage,
) -> None:
    from mkosi_initrd.inspect import describe_initrd

    info = describe_initrd(initrd_package.root / f"usr/lib/modules/{initrd_package.kver}/initrd")
    manifest = info["manifest"]
    assert manifest["kernel"] == initrd_package.kver
    names = {p["name"] for p in manifest["packages"]}
    assert "systemd" in names
    paths = {f["path"] for f in info["files"]}
    assert "/usr/lib/systemd/systemd" in paths
    assert f"/usr/lib/modules/{initrd_package.kver}/modules.dep" in paths
    (packages_txt,) = initrd_package.root.glob("usr/share/doc/*/packages.txt")
    assert {p["nevra"] for p in manifest["packages"]} <= set(packages_txt.read_text().splitlines())


def test_initrd_package_merges_extensions_and_trusts_the_distributions_certificate(
    initrd_package: InitrdPackage,
) -> None:
    from mkosi_initrd.image.cpioread import read_segments
    from mkosi_initrd.inspect import describe_initrd
    from mkosi_initrd.planner.sysext import CERT_NAME, INITRD_UNIT, UNIT, VERITY_D, WANTS

    image = initrd_package.root / f"usr/lib/modules/{initrd_package.kver}/initrd"
    info = describe_initrd(image)
    assert info["manifest"]["build"]["sysext_support"] is True
    assert "sysext" in info["manifest"]["build"]["profiles"]
    paths = {f["path"] for f in info["files"]}
    assert f"{WANTS}/{UNIT}" in paths or f"{WANTS}/{INITRD_UNIT}" in paths
    assert {"/usr/bin/systemd-sysext", f"{VERITY_D}/{CERT_NAME}"} <= paths
    _segments, contents = read_segments(image, lambda p: "/verity.d/" in f"/{p}")
    trusted = {p: data for p, data in contents.items() if p.endswith(".crt")}
    assert list(trusted.values()) == [initrd_package.verity_certificate.read_bytes()], trusted.keys()


def test_initrd_package_requires_its_kernel_and_is_install_only(initrd_package: InitrdPackage) -> None:
    kver = initrd_package.kver
    requires = rpm_query(initrd_package.rpm, "--requires")
    assert f"kernel-uname-r = {kver}" in requires or f"/usr/lib/modules/{kver}/modules.dep" in requires
    assert "installonlypkg(kernel-module)" in rpm_query(initrd_package.rpm, "--provides")


def test_rpmlint_finds_no_errors_in_the_initrd_package(initrd_package: InitrdPackage) -> None:
    assert rpmlint_errors(initrd_package.rpm, REPO / "packaging/mkosi-initrd-initrd.spec") == []
