"""Boot: an initrd built by our CLI from this Debian host (dpkg backend) boots the real kernel.

The marker root is an ext4 image on virtio-blk; the kernel cannot mount it alone (virtio_blk and
ext4 are modules on Debian), so reaching the marker proves that systemd in our initrd loaded the
modules through udev, mounted /sysroot from root= and switched root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boot.disks import marker_root
from boot.qemu import boot
from fixtures.kernel import HostKernel
from mkosi_initrd.config.model import Config
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.image.microcode import microcode_cpio

SRC = str(Path(__file__).parents[1] / "src")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.boot
def test_our_generic_initrd_from_dpkg_boots_to_the_root_through_systemd(
    tmp_path: Path, host_kernel: HostKernel
) -> None:
    initrd = tmp_path / "initrd"
    built = _cli("-k", host_kernel.kver, "-o", str(initrd), "--generic", "-v")
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(f"wrote {initrd} (") and " packages, " in built.stdout

    shown = _cli("inspect", "--json", str(initrd))
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)["manifest"]
    assert manifest["backend"] == "dpkg" and manifest["kernel"] == host_kernel.kver
    assert {"systemd", "udev", "kmod"} <= {p["name"] for p in manifest["packages"]}
    assert {"virtio_blk", "ext4"} <= {m["name"] for m in manifest["modules"]}

    # This host has no microcode package: put an early cpio with stand-in blobs in front, as a
    # build on a machine with amd64-microcode would, to prove the kernel still unpacks what follows.
    fake = tmp_path / "ucode-root"
    (fake / "usr/lib/firmware/amd-ucode").mkdir(parents=True)
    (fake / "usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin").write_bytes(b"not a real container")
    early = microcode_cpio(Config(root=fake, generic=True))
    assert early is not None
    combined = tmp_path / "initrd-with-ucode"
    combined.write_bytes(early + initrd.read_bytes())
    assert [s.compression for s in read_segments(combined)[0]] == ["none", "zstd"]

    result = boot(
        host_kernel.image,
        combined,
        [marker_root("ext4")],
        "root=/dev/vda ro",
        timeout=150,
        name="dpkg-generic",
    )
    assert result.passed, result.explain()
    assert result.facts["fs"] == "ext4" and result.facts["src"] == "/dev/vda"
    log = result.log_path.read_text(errors="replace")
    assert "Running in initrd." in log  # systemd saw /etc/initrd-release
    assert "Mounted \x1b[0;1;39msysroot.mount" in log or "Mounted sysroot.mount" in log
    assert "initrd-switch-root.target" in log
