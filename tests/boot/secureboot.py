"""OVMF with Secure Boot enforced: a copy of the variable store with our test certificate enrolled as
PK/KEK/db (virt-firmware's virt-fw-vars, a dev dependency) and no Microsoft keys.

    keys = enroll(tmp_path, monkeypatch)   # boot() then starts every guest with Secure Boot on
    keys / "db.key", keys / "db.crt"       # sign what must run
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boot import qemu
from fixtures.uki_inputs import make_keypair

OWNER = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d"  # any GUID: the owner of our db entry


def virt_fw_vars() -> str:
    found = shutil.which("virt-fw-vars") or str(Path(sys.executable).parent / "virt-fw-vars")
    if not Path(found).exists():
        pytest.skip("virt-fw-vars (pip: virt-firmware, a dev dependency) is not installed")
    return found


def enroll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Secure Boot on, only our certificate trusted; returns the keys directory (db.key, db.crt)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    _, cert = make_keypair(keys)
    enrolled = tmp_path / "OVMF_VARS.secureboot.fd"
    subprocess.run(
        [virt_fw_vars(), "-i", str(qemu.OVMF_VARS), "-o", str(enrolled), "--enroll-cert", str(cert),
         "--add-db", OWNER, str(cert), "--no-microsoft", "--sb"],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setattr(qemu, "OVMF_VARS", enrolled)  # boot() copies this template for each guest
    return keys
