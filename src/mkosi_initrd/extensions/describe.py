"""`mkosi-initrd inspect` of an extension: a DDI's partitions, root hash, signature (verified against
a certificate when given), extension-release and files; a directory extension's release and files."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.osrelease import parse

SECTOR = 512
# Discoverable Partitions Specification, x86-64 and arm64 (the architectures we build for).
TYPES = {
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "root-x86-64",
    "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5": "root-x86-64-verity",
    "41092b05-9fc8-4523-994f-2def0408b176": "root-x86-64-verity-sig",
    "8484680c-9521-48c6-9c11-b0720656f69e": "usr-x86-64",
    "77ff5f63-e7b6-4633-acf4-1565b864c0e6": "usr-x86-64-verity",
    "e7bb33fb-06cf-4e81-8273-e543b413e2e2": "usr-x86-64-verity-sig",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "root-arm64",
    "df3300ce-d69f-4c92-978c-9bfb0f38d820": "root-arm64-verity",
    "6db69de6-29f4-4758-a7a5-962190f00ce3": "root-arm64-verity-sig",
}


def is_ddi(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(SECTOR)
        return f.read(8) == b"EFI PART"


def partitions(path: Path) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        f.seek(SECTOR)
        header = f.read(92)
        entries_lba, count, size = struct.unpack_from("<QII", header, 72)
        f.seek(entries_lba * SECTOR)
        table = f.read(count * size)
    out = []
    for i in range(count):
        e = table[i * size : (i + 1) * size]
        kind = str(uuid.UUID(bytes_le=e[:16]))
        if kind == "00000000-0000-0000-0000-000000000000":
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        out.append({
            "type": TYPES.get(kind, kind), "uuid": str(uuid.UUID(bytes_le=e[16:32])),
            "label": e[56:128].decode("utf-16-le").rstrip("\0"),
            "offset": first * SECTOR, "size": (last - first + 1) * SECTOR,
        })  # fmt: skip
    return out


def _read(path: Path, part: dict[str, Any]) -> bytes:
    with open(path, "rb") as f:
        f.seek(part["offset"])
        return f.read(part["size"])


def verify(root_hash: str, signature: bytes, cert: Path) -> bool:
    """The PKCS#7 signature over the hex root hash, checked against `cert` (openssl)."""
    with tempfile.TemporaryDirectory() as tmp:
        content, sig = Path(tmp) / "roothash", Path(tmp) / "sig"
        content.write_text(root_hash)
        sig.write_bytes(signature)
        done = subprocess.run(
            ["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", str(sig), "-content",
             str(content), "-certfile", str(cert), "-nointern", "-noverify"],
            capture_output=True, check=False,
        )  # fmt: skip
    return done.returncode == 0


def tree_info(top: Path) -> dict[str, Any]:
    releases = sorted(top.glob("usr/lib/extension-release.d/extension-release.*")) + sorted(
        top.glob("etc/extension-release.d/extension-release.*")
    )
    files = sorted("/" + str(p.relative_to(top)) for p in top.rglob("*") if not p.is_dir())
    release = parse(releases[0].read_text()) if releases else {}
    return {"extension_release": release, "files": files}


def _erofs_tree(data: bytes, tmp: Path) -> dict[str, Any]:
    fsck = shutil.which("fsck.erofs")
    if fsck is None:
        return {"extension_release": {}, "files": [], "note": "install erofs-utils to list the files"}
    (tmp / "root.img").write_bytes(data)
    done = subprocess.run([fsck, f"--extract={tmp / 'tree'}", str(tmp / "root.img")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        return {"extension_release": {}, "files": [], "note": f"fsck.erofs: {done.stderr.strip()[-200:]}"}
    return tree_info(tmp / "tree")


def describe_extension(path: Path, cert: Path | None = None) -> dict[str, Any]:
    if path.is_dir():
        return {"path": str(path), "format": "directory", "signed": False, **tree_info(path)}
    parts = partitions(path)
    info: dict[str, Any] = {"path": str(path), "format": "ddi", "size": path.stat().st_size,
                            "partitions": parts, "signed": False}  # fmt: skip
    sig = next((p for p in parts if p["type"].endswith("-verity-sig")), None)
    if sig is not None:
        blob = _read(path, sig)
        payload = json.loads(blob[: blob.index(b"\0")] if b"\0" in blob else blob)
        info["root_hash"], info["signed"] = payload["rootHash"], True
        if cert is not None:
            info["signature_verifies"] = verify(
                payload["rootHash"], base64.b64decode(payload["signature"]), cert
            )
    root = next(
        (p for p in parts if p["type"].startswith(("root-", "usr-")) and "-verity" not in p["type"]), None
    )
    if root is None:
        raise InitrdError(f"{path}: a GPT without a root or usr partition", hint="not an extension image")
    with tempfile.TemporaryDirectory() as tmp:
        info.update(_erofs_tree(_read(path, root), Path(tmp)))
    return info


def format_extension(info: dict[str, Any], list_files: bool) -> str:
    lines = [f"Extension: {info['path']} ({info['format']})"]
    for p in info.get("partitions", []):
        lines.append(f"  partition {p['type']} {p['label']!r}: {p['size']} bytes at {p['offset']}")
    if "root_hash" in info:
        lines.append(f"Root hash: {info['root_hash']}")
    verified = info.get("signature_verifies")
    state = "unsigned" if not info["signed"] else (
        "signed, not checked (give --certificate)" if verified is None
        else "signed, verifies against the certificate" if verified
        else "signed, DOES NOT verify against the certificate"
    )  # fmt: skip
    lines.append(f"Signature: {state}")
    release = info.get("extension_release") or {}
    lines.append("extension-release: " + " ".join(f"{k}={v}" for k, v in release.items()))
    if info.get("note"):
        lines.append(info["note"])
    lines.append(f"{len(info.get('files', []))} files")
    if list_files:
        lines += [f"  {f}" for f in info.get("files", [])]
    return "\n".join(lines) + "\n"
