"""layout=uki + uki_generator=mkosi-initrd through the real kernel-install: $STAGING/uki.efi is our UKI.

systemd 252's kernel-install neither knows uki_generator nor ships 90-uki-copy.install: the plugin reads
uki_generator from install.conf itself, and a probe plugin after ours records the staging area (where
90-uki-copy would pick uki.efi up). Everything is redirected to temporary directories via
KERNEL_INSTALL_CONF_ROOT, BOOT_ROOT and KERNEL_INSTALL_PLUGINS, which also makes $CONF_ROOT/cmdline and
$CONF_ROOT/uki.conf the ones that count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.kernel import kernel_under_test
from fixtures.uki_inputs import make_keypair, sbverify
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki.describe import describe

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "install.d/50-mkosi-initrd.install"
KERNEL_INSTALL = Path("/usr/bin/kernel-install")
MACHINE_ID = "0123456789abcdef0123456789abcdef"
KERNEL, KVER = kernel_under_test().image, kernel_under_test().kver
PROBE = """#!/bin/sh
mkdir -p "$PROBE_DIR/staging"
cp -a "$KERNEL_INSTALL_STAGING_AREA/." "$PROBE_DIR/staging/"
echo "$1 $2 layout=$KERNEL_INSTALL_LAYOUT" >>"$PROBE_DIR/ran"
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kernel_install,
    pytest.mark.skipif(
        not KERNEL_INSTALL.exists(),
        reason=f"missing prerequisite: {KERNEL_INSTALL} (apt-get install systemd)",
    ),
    pytest.mark.usefixtures("host_kernel"),
]


def kernel_install(
    tmp: Path, install_conf: str, **files: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    conf_root, boot, probe = tmp / "conf", tmp / "boot", tmp / "probe"
    for d in (conf_root, boot, probe):
        d.mkdir()
    (conf_root / "install.conf").write_text(install_conf)
    for name, text in files.items():
        (conf_root / name.replace("_", ".")).write_text(text)
    probe_script = tmp / "99-probe.install"
    probe_script.write_text(PROBE)
    probe_script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_INSTALL_", "MKOSI_INITRD"))}
    env.pop("BOOT_ROOT", None)
    env.update(
        KERNEL_INSTALL_CONF_ROOT=str(conf_root),
        KERNEL_INSTALL_PLUGINS=f"{PLUGIN} {probe_script}",
        BOOT_ROOT=str(boot),
        MACHINE_ID=MACHINE_ID,
        MKOSI_INITRD_PYTHON=sys.executable,
        PYTHONPATH=str(REPO / "src"),
        PROBE_DIR=str(probe),
        TMPDIR=str(tmp),
    )
    result = subprocess.run(
        [str(KERNEL_INSTALL), "-v", "add", KVER, str(KERNEL)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return result, probe / "staging"


def test_uki_generator_stages_a_uki_of_the_installed_kernel(tmp_path: Path) -> None:
    result, staging = kernel_install(
        tmp_path, "layout=uki\nuki_generator=mkosi-initrd\n", cmdline="root=UUID=1234 ro quiet\n"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in staging.iterdir()) == ["uki.efi"]
    efi = staging / "uki.efi"
    d = describe(efi)
    assert d["cmdline"] == "root=UUID=1234 ro quiet"  # $KERNEL_INSTALL_CONF_ROOT/cmdline
    assert d["uname"] == KVER and d["signed"] is False
    # Our initrd (zstd, the default compression) is the last .initrd segment; early microcode may lead.
    assert d["initrd"]["segments"][-1]["compression"] == "zstd"
    assert "/usr/lib/os-release" in d["initrd"]["files"]
    kernel = KERNEL.read_bytes()
    linux = pemod.find_section(pemod.parse(efi.read_bytes(), "uki"), ".linux")
    assert linux is not None
    assert efi.read_bytes()[linux.PointerToRawData : linux.PointerToRawData + len(kernel)] == kernel


def test_uki_conf_in_conf_root_signs_the_staged_uki(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key, cert = make_keypair(keys)
    result, staging = kernel_install(
        tmp_path,
        "layout=uki\nuki_generator=mkosi-initrd\n",
        uki_conf=f"[UKI]\nSecureBootPrivateKey={key}\nSecureBootCertificate={cert}\n",
        cmdline="root=/dev/vda\n",
    )
    assert result.returncode == 0, result.stderr
    assert sbverify(cert, staging / "uki.efi").returncode == 0


def test_half_signing_setup_fails_kernel_install_without_output(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key, _ = make_keypair(keys)
    result, staging = kernel_install(
        tmp_path, "layout=uki\nuki_generator=mkosi-initrd\n", uki_conf=f"[UKI]\nSecureBootPrivateKey={key}\n"
    )
    assert result.returncode != 0
    assert "private key is set" in result.stderr and "but no certificate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not staging.exists()  # kernel-install stopped at our failure: the probe never ran
