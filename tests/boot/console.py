"""Talk to a guest on its serial console: wait for text, type a line, as a person at the console would.

    steps = [Step("root password for", "secret"), Step("", "echo MKOSI-$((6*7))", delay=3.0)]
    result = converse(KERNEL, initrd, [], "rd.systemd.unit=emergency.target", steps, until="MKOSI-42")
    assert result.passed, result.explain()

The serial port is a QEMU socket chardev that we read and write; QEMU also logs it to the usual artifact
file, so a failure reads like any other boot's (`BootResult`).
"""

from __future__ import annotations

import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from boot.qemu import QEMU, BootResult, _artifact_log, _line_with, _stop, qemu_command
from prereq import require_program

# Lines after which nothing typed helps: stop early.
FAILURES = ("Kernel panic - not syncing", "Cannot open access to console, the root account is locked")


@dataclass(frozen=True)
class Step:
    expect: str  # console text to wait for (after the previous step's); "" waits for nothing
    send: str | None  # the line to type then (Enter, a carriage return, is added); None types nothing
    delay: float = 1.0  # seconds between seeing `expect` and typing: the program reads the tty by then


def converse(
    kernel: Path,
    initrd: Path,
    disks: Sequence[Path],
    cmdline: str,
    steps: Sequence[Step],
    until: str,
    *,
    timeout: int = 300,
    name: str = "console",
    failures: Sequence[str] = FAILURES,
) -> BootResult:
    """Boot, play `steps` in order, and pass when `until` shows after the last one; `reason` names the
    step that was waited for in vain."""
    require_program(QEMU, "qemu-system-x86")
    log_path = _artifact_log(name)
    with tempfile.TemporaryDirectory(prefix="mkosi-initrd-console-") as tmp:
        sock_path = Path(tmp) / "serial.sock"
        serial = [
            "-chardev",
            f"socket,id=ser0,path={sock_path},server=on,wait=on,logfile={log_path},logappend=off",
            "-serial",
            "chardev:ser0",
        ]
        cmd = qemu_command(kernel, initrd, disks, cmdline, log_path, serial=serial)
        stderr_path = log_path.with_suffix(".qemu-stderr")
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            conn = _connect(sock_path, proc)
            with conn:
                passed, reason, line = _play(conn, proc, steps, until, timeout, failures)
        finally:
            _stop(proc, grace=0.0)
    return BootResult(passed, log_path, 0.0, reason, line, tuple(cmd))


def _connect(path: Path, proc: subprocess.Popen[bytes]) -> socket.socket:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(path))
            return conn
        except OSError:
            conn.close()
            time.sleep(0.1)
    raise AssertionError(f"QEMU's serial socket {path} did not open (QEMU exit code {proc.poll()})")


def _play(
    conn: socket.socket,
    proc: subprocess.Popen[bytes],
    steps: Sequence[Step],
    until: str,
    timeout: int,
    failures: Sequence[str],
) -> tuple[bool, str, str]:
    start, text, seen = time.monotonic(), "", 0
    todo = list(steps)
    while time.monotonic() - start < timeout:
        if todo and todo[0].expect in text[seen:]:
            step = todo.pop(0)
            seen = text.index(step.expect, seen) + len(step.expect)
            text += _drain(conn, step.delay)
            if step.send is not None:
                conn.sendall(step.send.encode() + b"\r")
            continue
        if not todo and until in text[seen:]:
            return True, "marker", _line_with(text[seen:], until) or until
        failure = next((f for f in failures if f in text), None)
        if failure is not None:
            return False, f"failure: {_line_with(text, failure)}", ""
        if proc.poll() is not None:
            return False, f"exited {proc.returncode}", ""
        text += _read(conn, 0.2)
    waited = f"step {len(steps) - len(todo) + 1} ({todo[0].expect!r})" if todo else repr(until)
    return False, f"timeout waiting for {waited}", ""


def _read(conn: socket.socket, wait: float) -> str:
    ready, _, _ = select.select([conn], [], [], wait)
    if not ready:
        return ""
    data = conn.recv(65536)
    return data.decode(errors="replace")


def _drain(conn: socket.socket, seconds: float) -> str:
    """What the guest prints during `seconds`: keep reading, as a full socket would stall its console."""
    out, end = "", time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        out += _read(conn, min(left, 0.2))
    return out
