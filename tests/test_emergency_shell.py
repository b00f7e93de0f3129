"""The emergency shell and root's password from a `passwd.*` credential.

The initrd's /etc/passwd has no root line when systemd-sysusers runs at boot: sysusers creates root,
and only a user it creates takes `passwd.hashed-password.root` / `passwd.plaintext-password.root`.
Booted to `rd.systemd.unit=emergency.target` and typed at on the serial console:

- no credential: root is locked and sulogin --force gives the shell at Enter (before, sulogin asked
  for a password that no one could know: root was "x" in /etc/passwd with no /etc/shadow);
- a hashed password (systemd 257, Debian 13's kernel and root): a wrong password is refused, the
  credential's is let in;
- a plaintext password (systemd 252, this machine's kernel and packages: `LoadCredential=`).

Credentials come on the kernel command line (`systemd.set_credential=`); the UKI's `.extra.d/` path to
the same system credentials is booted in test_addons_trixie.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from boot.console import Step, converse
from fixtures.kernel import HostKernel
from fixtures.trixie import TrixieRoot
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.planner.accounts import accounts, passwd_group_files, sysusers_runs_at_boot
from mkosi_initrd.planner.generated import extra_trees

SRC = str(Path(__file__).parents[1] / "src")
EMERGENCY = "rd.systemd.unit=emergency.target"
PASSWORD = "s3cret-initrd"
SHELL_MARKER = "MKOSI-INITRD-SHELL-42"
# The shell expands it: the console's echo of the typed line shows $((6*7)), only the output shows 42.
TYPED = "echo MKOSI-INITRD-SHELL-$((6*7))"
REG = stat.S_IFREG | 0o644
SYSUSERS = (
    Entry("/usr/bin/systemd-sysusers", stat.S_IFREG | 0o755, data=b""),
    Entry("/usr/lib/systemd/system/systemd-sysusers.service", REG, data=b"[Service]\n"),
    Entry(
        "/usr/lib/systemd/system/sysinit.target.wants/systemd-sysusers.service",
        stat.S_IFLNK | 0o777,
        linkto="../systemd-sysusers.service",
    ),
)
BASIC = Entry("/usr/lib/sysusers.d/basic.conf", REG, data=b"g tty 5 -\nu root 0 - /root /bin/bash\n")
PACKAGED = Entry(
    "/etc/passwd", REG, data=b"root:x:0:0:Super User:/root:/bin/bash\nbin:x:1:1::/:/sbin/nologin\n"
)


def _lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


def test_root_is_left_to_sysusers_when_the_initrd_runs_it(tmp_path: Path) -> None:
    passwd, group = passwd_group_files([*SYSUSERS, BASIC, PACKAGED], tmp_path)
    assert _lines(passwd) == ["bin:x:1:1::/:/sbin/nologin"]  # the package's root line goes too
    assert "root:x:0:" in _lines(group)  # the group stays: sysusers' root uses gid 0


def test_root_stays_in_passwd_when_sysusers_does_not_run_at_boot(tmp_path: Path) -> None:
    not_wanted = [e for e in SYSUSERS if "sysinit.target.wants" not in e.path]
    for entries in ([BASIC], [*not_wanted, BASIC], [*SYSUSERS]):  # no sysusers, not started, no root line
        passwd, _ = passwd_group_files(entries, tmp_path)
        assert _lines(passwd)[0].startswith("root:x:0:0:"), entries
    assert sysusers_runs_at_boot({e.path: e for e in SYSUSERS})
    assert "root" in accounts([("basic.conf", BASIC.data or b"")]).users


def test_the_initrd_runs_sysusers_and_the_emergency_shell_waits_for_it() -> None:
    extra = {e.path: (e.data or b"").decode() for e in extra_trees(257)}
    sysusers = extra["/usr/lib/systemd/system/systemd-sysusers.service.d/mkosi-initrd.conf"]
    assert "ConditionPathExists=|/etc/initrd-release" in sysusers
    for unit in ("emergency", "rescue"):
        dropin = extra[f"/usr/lib/systemd/system/{unit}.service.d/mkosi-initrd-sulogin.conf"]
        assert "After=systemd-sysusers.service" in dropin and "Wants=systemd-sysusers.service" in dropin
        assert "Environment=SYSTEMD_SULOGIN_FORCE=1" in dropin


def _build(out: Path, *args: str) -> Path:
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "mkosi_initrd", "--generic", "-o", str(out), *args]
    built = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    return out


def _hashed(password: str) -> str:
    made = subprocess.run(["openssl", "passwd", "-6", password], capture_output=True, text=True, check=True)
    return made.stdout.strip()


def _shell_steps(*passwords: str) -> list[Step]:
    """Type each password at sulogin's prompt, then a command at the shell."""
    steps = []
    for i, password in enumerate(passwords):
        # After a wrong password sulogin says so, then asks again.
        steps.append(Step("root password for", password, delay=2.0))
        if i < len(passwords) - 1:
            steps.append(Step("Login incorrect", None, delay=0.0))
    return [*steps, Step("", TYPED, delay=3.0)]


@pytest.mark.boot
def test_without_a_credential_the_emergency_shell_opens_at_enter(trixie: TrixieRoot, tmp_path: Path) -> None:
    initrd = _build(tmp_path / "initrd", "--root", str(trixie.root), "-k", trixie.kver)
    steps = [Step("Press Enter for system maintenance", "", delay=2.0), Step("", TYPED, delay=3.0)]
    result = converse(
        trixie.kernel, initrd, [], EMERGENCY, steps, SHELL_MARKER, timeout=180, name="trixie-shell"
    )
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert "Finished systemd-sysusers.service" in log and "root password" not in log


def _password_boot(kernel: Path, initrd: Path, credential: str, name: str) -> str:
    """Boot to the emergency shell with `credential` (NAME:VALUE): a wrong password is refused, then
    PASSWORD opens the shell; returns the console log."""
    cmdline = f"{EMERGENCY} systemd.set_credential={credential}"
    steps = _shell_steps("not-the-password", PASSWORD)
    result = converse(kernel, initrd, [], cmdline, steps, SHELL_MARKER, timeout=180, name=name)
    assert result.passed, result.explain()
    log = result.log_path.read_text(errors="replace")
    assert log.count("Login incorrect") == 1 and "Finished systemd-sysusers.service" in log
    return log


@pytest.mark.boot
def test_a_hashed_password_credential_guards_the_emergency_shell(trixie: TrixieRoot, tmp_path: Path) -> None:
    initrd = _build(tmp_path / "initrd", "--root", str(trixie.root), "-k", trixie.kver)
    credential = f"passwd.hashed-password.root:{_hashed(PASSWORD)}"
    assert "systemd 257" in _password_boot(trixie.kernel, initrd, credential, "trixie-shell-password")


@pytest.mark.boot
def test_a_plaintext_password_credential_guards_the_shell_on_the_host_systemd(
    host_kernel: HostKernel, tmp_path: Path
) -> None:
    initrd = _build(tmp_path / "initrd", "-k", host_kernel.kver)
    _password_boot(
        host_kernel.image, initrd, f"passwd.plaintext-password.root:{PASSWORD}", "host-shell-password"
    )
