"""Prerequisites of tests, and the one list of skips that are expected.

A test whose prerequisite is missing (the kernel, QEMU, OVMF, rpm, kernel-install, dracut, a stacked
disk, ...) skips with a reason naming it and the install step: `require(ok, what, install)`. Under
`CI=true` every skip fails instead (tests/conftest.py turns the report into a failure), except the
skips listed in EXPECTED_SKIPS, which stay skips: CI never hides a test that did not run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

SETUP = "tools/setup.sh installs it"

# Skips that are right on the machines CI runs on, by the start of their reason: the profiles whose
# packages Debian 12 does not have under the names the rpm sysroot fixture uses.
EXPECTED_SKIPS: dict[str, str] = {
    "expected: profile pkcs11": "the sysroot is made of this Debian host's packages: no p11-kit there",
    "expected: profile plymouth": "the sysroot is made of this Debian host's packages: no plymouth there",
}


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def is_expected(reason: str) -> bool:
    reason = reason.removeprefix("Skipped: ")
    return any(reason.startswith(prefix) for prefix in EXPECTED_SKIPS)


def require(ok: object, what: str, install: str = SETUP) -> None:
    """Skip (fail under CI=true) unless `ok`: `what` names the missing piece, `install` the step."""
    if not ok:
        pytest.skip(f"missing prerequisite: {what} ({install})")


def expected_skip(key: str, detail: str) -> NoReturn:
    """A skip from EXPECTED_SKIPS (`key` is its entry, without the "expected: " prefix)."""
    assert f"expected: {key}" in EXPECTED_SKIPS, f"declare {key!r} in tests/prereq.py first"
    pytest.skip(f"expected: {key}: {detail}")


def require_program(name: str, package: str) -> str:
    path = shutil.which(name)
    require(path, f"the program {name}", f"apt-get install {package}; {SETUP}")
    assert path is not None
    return path


def require_file(path: Path, package: str) -> Path:
    require(path.exists(), str(path), f"apt-get install {package}; {SETUP}")
    return path
