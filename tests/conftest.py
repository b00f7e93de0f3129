"""Shared pytest fixtures and the CI rules. Slow fixtures are built by tests/fixtures/*.py and cached
outside the repo.

Under CI=true a skipped test fails unless its reason is in tests/prereq.py's EXPECTED_SKIPS, and the
run records how many QEMU boot tests and real kernel-install tests passed (`boot` and
`kernel_install` markers) in $MKOSI_INITRD_TEST_COUNTS (JSON) for .ci/run to check.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fixtures.kernel import HostKernel, require_host_kernel
from prereq import in_ci, is_expected, require

if TYPE_CHECKING:
    from fixtures.trixie import TrixieRoot

COUNTED = ("boot", "kernel_install")
_passed: Counter[str] = Counter()


@pytest.fixture(scope="session")
def rpm_sysroot() -> Path:
    """A usrmerged root whose rpmdb (/usr/lib/sysimage/rpm) describes the host's own packages and
    kernel, repackaged with rpmbuild (tests/fixtures/rpmsysroot.py). Read-only: copy it to modify.
    Cold ~1.5 min, warm ~0 s."""
    from fixtures import rpmsysroot

    return rpmsysroot.rpm_sysroot()


@pytest.fixture(scope="session")
def host_kernel() -> HostKernel:
    """The test kernel (tests/fixtures/kernel.py decides which); a missing one skips, or fails in CI."""
    return require_host_kernel()


@pytest.fixture(scope="session")
def trixie() -> TrixieRoot:
    """A Debian 13 root (debootstrap; systemd 257, kernel 6.12 with .ko.xz modules), cached by its
    package versions (tests/fixtures/trixie.py). Read-only: `trixie.chroot()` gives a writable view.
    Cold ~2.5 min, warm ~1.5 s (one index check)."""
    from fixtures import trixie as fixture

    missing = fixture.missing_tools()
    require(not missing, f"{' '.join(missing)} for the Debian 13 fixture", "apt-get install debootstrap")
    return fixture.trixie_root()


@pytest.fixture(scope="session", autouse=True)
def _build_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Builds in tests (CLI, kernel-install plugin) cache into a temp dir, never /var/cache."""
    os.environ["MKOSI_INITRD_CACHE_DIR"] = str(tmp_path_factory.mktemp("build-cache"))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not is_expected(reason):
            report.outcome = "failed"
            report.longrepr = f"CI=true: a test must not skip unless tests/prereq.py expects it: {reason}"
    if report.when == "call" and report.passed:
        for marker in COUNTED:
            if item.get_closest_marker(marker):
                _passed[marker] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = {marker: _passed[marker] for marker in COUNTED}
    terminalreporter.write_line(
        f"passed: {counts['boot']} QEMU boot tests, {counts['kernel_install']} real kernel-install tests"
    )
    if path := os.environ.get("MKOSI_INITRD_TEST_COUNTS"):
        Path(path).write_text(json.dumps(counts) + "\n")
