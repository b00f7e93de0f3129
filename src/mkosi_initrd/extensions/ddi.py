"""A Discoverable Disk Image of an extension tree: systemd-repart --make-ddi=sysext|confext (systemd
>= 255 on the building machine) writes the GPT with the erofs root partition, its dm-verity hash
partition and, given a key, the signature partition ({"rootHash": ..., "signature": PKCS#7 over the
hex root hash}); elsewhere verity.py assembles the same layout."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.extensions.verity import build_verity_ddi

MIN_SYSTEMD = 255  # --make-ddi=


def repart_version(program: str) -> int:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return 0
    found = re.match(r"systemd (\d+)", out)
    return int(found.group(1)) if found else 0


def find_repart() -> str | None:
    """systemd-repart of the machine that builds, if it can make DDIs (else verity.py makes them)."""
    program = shutil.which("systemd-repart")
    return program if program and repart_version(program) >= MIN_SYSTEMD else None


def seed(tree_listing: list[str], name: str) -> str:
    """A fixed seed from the image's name and contents: the same inputs give the same partition UUIDs."""
    digest = hashlib.sha256("\0".join([name, *tree_listing]).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16]))


def make_ddi(
    tree: Path, kind: str, out: Path, *, name: str, listing: list[str], epoch: int,
    key: Path | None, cert: Path | None,
) -> None:  # fmt: skip
    """Write the DDI of `tree` to `out` (a temporary name beside it, renamed when complete)."""
    program = find_repart()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    if program is None or os.environ.get("MKOSI_INITRD_OWN_DDI") == "1":  # the latter: for tests
        try:
            with tempfile.TemporaryDirectory(dir=tree.parent) as work:
                build_verity_ddi(tree, tmp, Path(work), seed=seed(listing, f"{kind}:{name}"), epoch=epoch,
                                 key=key, cert=cert)  # fmt: skip
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return
    cmd = [program, f"--make-ddi={kind}", f"--copy-source={tree}", f"--seed={seed(listing, name)}"]
    if key is not None and cert is not None:
        cmd += [f"--private-key={key}", f"--certificate={cert}"]
    cmd.append(str(tmp))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    try:
        made = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if made.returncode != 0:
            raise InitrdError(
                f"systemd-repart could not make the {kind} image {out}: {made.stderr.strip()[-600:]}",
                hint="the message above is systemd-repart's (mkfs.erofs comes from erofs-utils)",
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
