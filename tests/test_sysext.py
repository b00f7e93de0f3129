"""`mkosi-initrd sysext`: extensions made from installed packages, minus what the base initrd holds.

- On this machine (Debian 12, dpkg): directory extensions (its systemd-repart 252 cannot make DDIs, and
  says so): the package's files and only those, the module index regenerated for base + extension,
  extension-release from the base's os-release, the same bytes twice.
- In the Debian 13 root (systemd-repart 257): a signed DDI of openssh-server whose signature partition
  verifies (openssl, over the hex root hash) against the certificate, reproducible; /etc goes into the
  companion confext.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures import ourpackage
from fixtures import trixie as trixie_fixture
from fixtures.kernel import HostKernel
from fixtures.trixie import TrixieRoot
from fixtures.uki_inputs import make_keypair

SRC = str(Path(__file__).parents[1] / "src")


def sysext(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", "sysext", *map(str, args)],
        capture_output=True, text=True, cwd=cwd,
        env={"PYTHONPATH": SRC, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def tree_digest(top: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(top.rglob("*")):
        h.update(str(p.relative_to(top)).encode())
        h.update(p.read_bytes() if p.is_file() and not p.is_symlink() else str(p.lstat().st_mtime).encode())
    return h.hexdigest()


def test_a_directory_extension_holds_the_package_and_modules_the_base_lacks(
    host_kernel: HostKernel, tmp_path: Path
) -> None:
    out = tmp_path / "tools"
    made = sysext("tools", "-k", host_kernel.kver, "--generic", "--package", "cpio", "--add-module", "vfio",
                  "--format", "directory", "-o", out, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "unsigned: for local trusted use only" in made.stdout
    files = {"/" + str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()}
    assert "/usr/bin/cpio" in files
    assert not {"/usr/bin/bash", "/usr/lib/systemd/systemd", "/usr/lib/mkosi-initrd/manifest.json"} & files
    assert not any(p.startswith(("/etc/", "/var/", "/run/")) for p in files)
    moddir = out / "usr/lib/modules" / host_kernel.kver
    dep = (moddir / "modules.dep").read_text()
    assert "kernel/drivers/vfio/vfio.ko" in dep and "/ext4.ko" in dep  # base + extension in one index
    assert (moddir / "kernel/drivers/vfio/vfio.ko").is_file() and not list(moddir.rglob("ext4.ko*"))
    release = (out / "usr/lib/extension-release.d/extension-release.tools").read_text().splitlines()
    base = dict(
        line.split("=", 1) for line in Path("/usr/lib/os-release").read_text().splitlines() if "=" in line
    )
    assert release == [f"ID={base['ID']}", f"VERSION_ID={base['VERSION_ID'].strip(chr(34))}",
                       "ARCHITECTURE=x86-64", "SYSEXT_SCOPE=initrd"]  # fmt: skip
    again = tmp_path / "again"
    assert sysext("tools", "-k", host_kernel.kver, "--generic", "--package", "cpio", "--add-module", "vfio",
                  "--format", "directory", "-o", again, cwd=tmp_path).returncode == 0  # fmt: skip
    assert tree_digest(again) == tree_digest(out)


@pytest.mark.slow
def test_a_signed_image_made_without_systemd_repart_verifies_and_is_reproducible(
    trixie: TrixieRoot, tmp_path: Path
) -> None:
    """This machine's systemd-repart (252) makes no DDIs: extensions/verity.py does (mkfs.erofs,
    veritysetup, openssl, our GPT), here for the Debian 13 root."""
    key, cert = make_keypair(tmp_path, "verity")
    args = ("sshd", "--root", trixie.root, "-k", trixie.kver, "--generic", "--package", "openssh-server",
            "--verity-key", key, "--verity-certificate", cert)  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    made = sysext(*args, "-o", tmp_path / "a/sshd.sysext.raw", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert sysext(*args, "-o", tmp_path / "b/sshd.sysext.raw", cwd=tmp_path).returncode == 0
    image = tmp_path / "a/sshd.sysext.raw"
    assert image.read_bytes() == (tmp_path / "b/sshd.sysext.raw").read_bytes()
    assert (tmp_path / "a/sshd.confext.raw").is_file()
    assert subprocess.run(["sfdisk", "--verify", image], capture_output=True).returncode == 0
    info = inspected(image, cert)
    assert info["signature_verifies"] is True and "/usr/sbin/sshd" in info["files"]
    root, hashes = info["partitions"][0], info["partitions"][1]
    data = image.read_bytes()
    (tmp_path / "root").write_bytes(data[root["offset"] : root["offset"] + root["size"]])
    (tmp_path / "hash").write_bytes(data[hashes["offset"] : hashes["offset"] + hashes["size"]])
    verified = subprocess.run(
        ["veritysetup", "verify", tmp_path / "root", tmp_path / "hash", info["root_hash"]],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert info["partitions"][0]["uuid"].replace("-", "") == info["root_hash"][:32]  # as repart names them


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--package", "no-such-package-x"), "no-such-package-x"),
        (("--package", "systemd"), "would be empty"),
        (("--package", "cpio", "--verity-key", "/nonexistent.key"), "go together"),
        (("--package", "cpio", "--files", "/etc/hostname:/var/x"), "outside /usr"),
    ],
)
def test_bad_requests_stop_with_a_reason(host_kernel: HostKernel, tmp_path: Path, args: tuple[str, ...],
                                         says: str) -> None:  # fmt: skip
    made = sysext("x", "-k", host_kernel.kver, "--generic", "--format", "directory", *args, "-o",
                  tmp_path / "x", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 1 and says in made.stderr and "Traceback" not in made.stderr
    assert not (tmp_path / "x").exists()


def inspected(image: Path, cert: Path) -> dict[str, Any]:
    """`mkosi-initrd inspect --json` of a signed image: its three partitions, as a DDI of x86-64 has."""
    shown = subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", "inspect", image, "--certificate", cert, "--json"],
        capture_output=True, text=True, env={"PYTHONPATH": SRC}, check=True,
    )  # fmt: skip
    info: dict[str, Any] = json.loads(shown.stdout)
    kinds = [p["type"] for p in info["partitions"]]
    assert kinds == ["root-x86-64", "root-x86-64-verity", "root-x86-64-verity-sig"]
    return info


def signature_of(image: Path) -> dict[str, str]:
    data = image.read_bytes()
    start = data.find(b'{"rootHash"')
    assert start >= 0, "no signature partition"
    payload: dict[str, str] = json.loads(data[start : data.index(b"\0", start)])
    return payload


@pytest.mark.slow
def test_a_signed_openssh_server_image_in_the_debian_13_root(trixie: TrixieRoot, tmp_path: Path) -> None:
    package = ourpackage.package_tree(tmp_path / "package")
    key, cert = make_keypair(tmp_path, "verity")
    with trixie_fixture.chroot(trixie, tmp_path / "chroot") as c:
        ourpackage.install_into(package, c.path, "/usr/lib/python3/dist-packages")
        for f in (key, cert):
            (c.path / f.name).write_bytes(f.read_bytes())
        args = ("python3", "-m", "mkosi_initrd", "sysext", "sshd", "-k", trixie.kver, "--generic",
                "--package", "openssh-server")  # fmt: skip
        signed = ("--verity-key", "/verity.key", "--verity-certificate", "/verity.crt")
        made = c.run(*args, *signed, "-o", "/sshd.sysext.raw")
        assert made.returncode == 0, made.stderr
        print(made.stdout)  # the sizes, for the record
        again = c.run(*args, *signed, "-o", "/again.sysext.raw")
        assert again.returncode == 0, again.stderr
        tree = c.run(*args, "--format", "directory", "-o", "/sshd")
        assert tree.returncode == 0, tree.stderr
        image, twin = c.path / "sshd.sysext.raw", c.path / "again.sysext.raw"
        assert image.read_bytes() == twin.read_bytes()  # reproducible
        assert (c.path / "sshd.confext.raw").is_file()  # /etc/ssh: the companion confext
        top = c.path / "sshd"
        assert (top / "usr/sbin/sshd").is_file()
        assert not (top / "usr/lib/systemd/systemd").exists() and not (top / "usr/bin/bash").exists()
        sig = signature_of(image)
        (tmp_path / "roothash").write_text(sig["rootHash"])
        (tmp_path / "sig.der").write_bytes(base64.b64decode(sig["signature"]))
        verify = subprocess.run(
            ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der",
             "-content", tmp_path / "roothash", "-certfile", cert, "-nointern", "-noverify"],
            capture_output=True, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        info = inspected(image, cert)
        assert info["root_hash"] == sig["rootHash"] and info["signature_verifies"] is True
        assert info["extension_release"]["SYSEXT_SCOPE"] == "initrd"
        assert "/usr/sbin/sshd" in info["files"] and "/usr/lib/systemd/systemd" not in info["files"]
        other_key, other_cert = make_keypair(tmp_path, "other")
        against_other = subprocess.run(
            [sys.executable, "-m", "mkosi_initrd", "inspect", image, "--certificate", other_cert],
            capture_output=True, text=True, env={"PYTHONPATH": SRC}, check=True,
        )  # fmt: skip
        assert "DOES NOT verify" in against_other.stdout
        wrong = subprocess.run(
            ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der",
             "-content", tmp_path / "roothash", "-certfile", other_cert, "-nointern", "-noverify"],
            capture_output=True, check=False,
        )  # fmt: skip
        assert wrong.returncode != 0


def test_base_takes_an_existing_initrd_instead_of_the_plan(host_kernel: HostKernel, tmp_path: Path) -> None:
    """--base INITRD (the prebuilt one, say): what that initrd holds is left out, whatever the root's
    plan would hold. A base without /usr/bin/cpio but with kmod: the extension carries cpio only."""
    base = tmp_path / "initrd"
    built = subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", "-k", host_kernel.kver, "--generic", "--no-check",
         "--no-cache", "-o", base],
        capture_output=True, text=True, env={"PYTHONPATH": SRC}, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    out = tmp_path / "x"
    made = sysext("x", "-k", host_kernel.kver, "--generic", "--package", "cpio", "--package", "kmod",
                  "--base", base, "--format", "directory", "-o", out, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    files = {"/" + str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()}
    assert "/usr/bin/cpio" in files and "/usr/bin/kmod" not in files  # kmod: in the given base
    empty = sysext("y", "-k", host_kernel.kver, "--generic", "--package", "kmod", "--base", base,
                   "--format", "directory", "-o", tmp_path / "y", cwd=tmp_path)  # fmt: skip
    assert empty.returncode == 1 and "would be empty" in empty.stderr
