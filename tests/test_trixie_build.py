"""Builds from a Debian 13 minbase root (tests/fixtures/trixie.py): systemd 257, t64 library names,
systemd-cryptsetup and systemd-repart as packages of their own, .ko.xz modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.trixie import TrixieRoot
from mkosi_initrd.uki.describe import describe

SRC = str(Path(__file__).parents[1] / "src")
pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", *args], env=env, capture_output=True, text=True, timeout=600
    )


def plan(trixie: TrixieRoot, *args: str) -> dict:
    shown = cli("plan", "--json", "--root", str(trixie.root), "-k", trixie.kver, *args)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_generic_plan_takes_dlopened_libraries_from_systemds_notes(trixie: TrixieRoot) -> None:
    p = plan(trixie, "--generic")
    reasons = {x["name"]: x["reason"] for x in p["packages"]}
    # The t64-renamed TPM2 stack, FIDO2: by the sonames of libsystemd-shared-257's .note.dlopen.
    for name in ("libtss2-esys-3.0.2-0t64", "libtss2-mu-4.0.1-0t64", "libtss2-rc0t64", "libfido2-1"):
        assert reasons[name][0].startswith("dlopen:/usr/lib/x86_64-linux-gnu/lib"), (name, reasons[name])
    # systemd names the TPM transport at run time: dlopen.list's line brings it.
    assert reasons["libtss2-tcti-device0t64"][0].startswith("dlopen:/usr/lib/x86_64-linux-gnu/libtss2-tcti")
    # Packages of their own on trixie, named by their files.
    assert reasons["systemd-cryptsetup"][0] == "list:/usr/lib/systemd/systemd-cryptsetup"
    assert reasons["systemd-repart"][0] == "list:/usr/bin/systemd-repart"
    # minbase has no less: a convenience, reported, not an error.
    assert "less" in p["missing"] and "less" not in reasons
    # A library that unlocks disks and is not installed is reported by its soname (no p11-kit here).
    assert "libp11-kit.so.0" in p["missing"] and "libtss2-esys.so.0" not in p["missing"]
    assert p["os_release"]["VERSION_ID"] == "13" and p["backend"] == "dpkg"


def test_remove_package_drops_a_list_entry_on_trixie(trixie: TrixieRoot) -> None:
    p = plan(trixie, "--generic", "--remove-package", "less", "--remove-package", "gzip")
    assert "less" not in p["missing"] and "gzip" not in {x["name"] for x in p["packages"]}


def test_generic_initrd_of_the_trixie_kernel_holds_its_compressed_modules(
    trixie: TrixieRoot, tmp_path: Path
) -> None:
    out = tmp_path / "initrd"
    built = cli("--root", str(trixie.root), "-k", trixie.kver, "--generic", "-o", str(out))
    assert built.returncode == 0, built.stderr
    shown = cli("inspect", "--json", "--files", str(out))
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["manifest"]["kernel"] == trixie.kver
    files = {e["path"] for e in info["files"]}
    moddir = f"/usr/lib/modules/{trixie.kver}"
    assert f"{moddir}/kernel/drivers/block/virtio_blk.ko.xz" in files
    assert {f"{moddir}/modules.dep", f"{moddir}/modules.dep.bin"} <= files
    assert "/usr/lib/systemd/systemd-cryptsetup" in files
    assert "/usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so" in files


def test_uki_for_the_sysroot_without_a_command_line_file_names_both(
    trixie: TrixieRoot, tmp_path: Path
) -> None:
    # trixie's root has neither file; the build machine's /proc/cmdline must not end up in its UKI.
    out = tmp_path / "uki.efi"
    args = ["--root", str(trixie.root), "-k", trixie.kver, "--generic", "--format", "uki", "-o", str(out)]
    built = cli(*args, "--kernel-image", str(trixie.kernel))
    assert built.returncode == 1 and "Traceback" not in built.stderr
    root = trixie.root
    assert f"{root}/etc/kernel/cmdline and {root}/usr/lib/kernel/cmdline do not exist" in built.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    built = cli(*args, "--kernel-image", str(trixie.kernel), "--cmdline", "root=LABEL=t ro")
    assert built.returncode == 0, built.stderr
    d = describe(out)
    assert d["cmdline"] == "root=LABEL=t ro" and d["uname"] == trixie.kver
    assert d["stub_version"] == 257  # the root's own systemd-stub
