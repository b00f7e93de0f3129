"""`mkosi-initrd --format uki` and `mkosi-initrd inspect` on the result, building from this host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.kernel import kernel_under_test
from fixtures.uki_inputs import make_keypair, sbverify
from mkosi_initrd import cli

KERNEL, KVER = kernel_under_test().image, kernel_under_test().kver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("host_kernel"),
]


def build(out: Path, *extra: str) -> int:
    args = ["--format", "uki", "-k", KVER, "--kernel-image", str(KERNEL), "-o", str(out), "--no-cache"]
    return cli.main([*args, *extra])


def test_format_uki_builds_a_signed_uki_that_inspect_describes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, cert = make_keypair(tmp_path)
    out = tmp_path / "uki.efi"
    assert build(out, "--cmdline", "root=/dev/vda ro", "--secureboot-private-key", str(key),
                 "--secureboot-certificate", str(cert)) == 0  # fmt: skip
    assert sbverify(cert, out).returncode == 0
    capsys.readouterr()

    assert cli.main(["inspect", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cmdline"] == "root=/dev/vda ro" and info["uname"] == KVER and info["signed"] is True
    assert info["linux"]["signed"] is True  # the distro-signed kernel kept its own signature
    assert info["initrd"]["segments"][-1]["compression"] == "zstd"

    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cmdline: root=/dev/vda ro" in text and ".linux" in text and "uki,1,UKI" in text


def test_format_uki_with_key_but_no_certificate_fails_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = make_keypair(tmp_path)
    out = tmp_path / "uki.efi"
    assert build(out, "--secureboot-private-key", str(key)) == 1
    err = capsys.readouterr().err
    assert "private key is set but no certificate" in err and "hint:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.crt", "db.key"]
