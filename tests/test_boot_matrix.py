"""Our initrd (built by our CLI, host-only) boots every kind of root to the marker.

Core cases (plain, LVM, LUKS2 with the key from the host's crypttab, RAID1) always run; the rest with
MKOSI_INITRD_BOOT_MATRIX=1 or under CI=true (.ci/run sets both). `make boot-matrix` runs all cases
through the same code (tests/boot/matrix.py) with dracut's initrd next to ours and records the table in
docs/BOOT-MATRIX.md.
A failure keeps the serial log and the initrd's manifest (`*.initrd.json`) under /var/tmp/mkosi-initrd-boot.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boot import matrix
from prereq import in_ci

FULL = os.environ.get("MKOSI_INITRD_BOOT_MATRIX") == "1" or in_ci()

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("host_kernel")]


def _params() -> list[object]:
    out: list[object] = []
    for name, case in matrix.CASES.items():
        marks = [] if case.core or FULL else [pytest.mark.skip(reason="set MKOSI_INITRD_BOOT_MATRIX=1")]
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_our_initrd_boots_the_root(name: str, tmp_path: Path) -> None:
    case = matrix.CASES[name]
    outcome = matrix.run_case(case, "ours", tmp_path)
    # run_case also fails the boot when the marker names another file system type, disk or device.
    assert outcome.passed, outcome.boot.explain() + "\n" + "\n".join(outcome.notes)
    assert outcome.boot.facts["src"] == case.expect_src or not case.expect_src


@pytest.mark.skipif(not FULL, reason="set MKOSI_INITRD_BOOT_MATRIX=1")
def test_our_initrd_resumes_from_hibernation_configured_on_the_host(tmp_path: Path) -> None:
    # The resume device is only in the host's /etc/kernel/cmdline, not on the booted command line:
    # the initrd resumes because hostconfig carried it as a systemd-hibernate-resume@ unit.
    outcome = matrix.run_hibernate("ours", tmp_path)
    assert outcome.hibernate.passed, outcome.hibernate.explain()
    assert outcome.resume is not None, outcome.hibernate.explain()
    assert outcome.resume.passed, outcome.resume.explain()
    log = outcome.resume.log_path.read_text(errors="replace")
    assert "resume=" not in log.split("Command line:", 1)[1].splitlines()[0]
    assert "PM: hibernation: resume from hibernation" in log
