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
from fixtures import debrpm, rpmsysroot

SRC = str(Path(__file__).parents[1] / "src")
KVER = rpmsysroot.kernel_version()
KERNEL = Path(f"/boot/vmlinuz-{KVER}")

pytestmark = pytest.mark.skipif(not KERNEL.exists(), reason=f"needs the Debian kernel {KVER} installed")


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
