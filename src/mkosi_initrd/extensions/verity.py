"""A signed dm-verity DDI made without systemd-repart (systemd < 255 on the building machine):
mkfs.erofs (fixed UUID and timestamps), veritysetup format (salt and UUID from the seed), the PKCS#7
signature of the hex root hash by openssl, and gpt.py. The partition UUIDs are the root hash's halves,
as systemd-repart makes them and systemd's dissection looks for."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.extensions.gpt import Partition, write_gpt

# Discoverable Partitions Specification: (root, root-verity, root-verity-sig) by architecture.
TYPES = {
    "x86_64": ("x86-64", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
               "41092b05-9fc8-4523-994f-2def0408b176"),
    "aarch64": ("arm64", "b921b045-1df0-41c3-af44-4c6f280d3fae", "df3300ce-d69f-4c92-978c-9bfb0f38d820",
                "6db69de6-29f4-4758-a7a5-962190f00ce3"),
}  # fmt: skip
TOOLS = {
    "mkfs.erofs": "erofs-utils",
    "veritysetup": "cryptsetup-bin (Fedora: veritysetup)",
    "openssl": "openssl",
}


def _tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        raise InitrdError(f"{name} is not installed: it makes the extension image",
                          hint=f"install {TOOLS[name]}, or use --format directory")  # fmt: skip
    return path


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InitrdError(
            f"{Path(cmd[0]).name} failed: {done.stderr.strip()[-400:]}", hint="see its message"
        )
    return done.stdout


def _uuid(seed: str, what: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"{seed}:{what}".encode()).digest()[:16]))


def build_verity_ddi(
    tree: Path, out: Path, work: Path, *, seed: str, epoch: int, key: Path | None, cert: Path | None,
) -> str:  # fmt: skip
    """Write the DDI of `tree` to `out`; its root hash."""
    arch = os.uname().machine
    if arch not in TYPES:
        raise InitrdError(f"no partition types known for {arch}", hint="use --format directory")
    name, root_type, verity_type, sig_type = TYPES[arch]
    data, hashes, roothash = work / "root.erofs", work / "root.verity", work / "roothash"
    _run([_tool("mkfs.erofs"), "--quiet", f"-T{epoch}", f"-U{_uuid(seed, 'fs')}", "--all-root", "-x-1",
          str(data), str(tree)])  # fmt: skip
    salt = hashlib.sha256(f"{seed}:salt".encode()).hexdigest()
    _run([_tool("veritysetup"), "format", "--data-block-size=4096", "--hash-block-size=4096",
          f"--salt={salt}", f"--uuid={_uuid(seed, 'verity')}", f"--root-hash-file={roothash}",
          str(data), str(hashes)])  # fmt: skip
    root_hash = roothash.read_text().strip()
    parts = [
        Partition(root_type, str(uuid.UUID(root_hash[:32])), f"root-{name}", data),
        Partition(verity_type, str(uuid.UUID(root_hash[32:64])), f"root-{name}-verity", hashes),
    ]
    if key is not None and cert is not None:
        roothash.write_text(root_hash)  # the signed content: the hex root hash, no newline
        p7s = work / "roothash.p7s"
        _run([_tool("openssl"), "smime", "-sign", "-nocerts", "-noattr", "-binary", "-in", str(roothash),
              "-inkey", str(key), "-signer", str(cert), "-outform", "der", "-out", str(p7s)])  # fmt: skip
        signature = base64.b64encode(p7s.read_bytes()).decode()
        payload = json.dumps({"rootHash": root_hash, "signature": signature}, separators=(",", ":")).encode()
        sig = work / "root.sig"
        sig.write_bytes(payload.ljust(-(-len(payload) // 4096) * 4096, b"\0"))
        parts.append(Partition(sig_type, _uuid(root_hash, "sig"), f"root-{name}-verity-sig", sig))
    with open(out, "wb") as f:
        write_gpt(f, _uuid(seed, "disk"), parts)
    return root_hash
