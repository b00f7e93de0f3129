"""Boot a kernel + initrd (or an ESP through OVMF) in QEMU/TCG and watch the serial console for a marker.

    result = boot(KERNEL, initrd, [marker_root()], "root=/dev/vda", marker=ROOT_MARKER, timeout=240)
    assert result.passed, result.explain()

One guest at a time per caller (the machine is shared): TCG, one vCPU, 1 GiB at most. The serial log is
kept at `result.log_path` (under $MKOSI_INITRD_BOOT_ARTIFACTS, default /var/tmp/mkosi-initrd-boot) so a
failure can be read after the test is gone. Disks are attached as virtio-blk (/dev/vda, /dev/vdb, ...)
with `snapshot=on` unless `writable=True`, so a cached image is never changed by booting it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prereq import require_file, require_program

QEMU = "qemu-system-x86_64"
ROOT_MARKER = "MKOSI-INITRD-ROOT-OK"  # printed by tests/boot/marker_init.c, the test root's /sbin/init
ROOT_CMDLINE = "MKOSI-INITRD-ROOT-CMDLINE"  # its line before that: the root's /proc/cmdline
ARTIFACTS = Path(os.environ.get("MKOSI_INITRD_BOOT_ARTIFACTS", "/var/tmp/mkosi-initrd-boot"))
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Appended to every direct-kernel command line: console on the serial port we log, and a panic ends the
# guest (with -no-reboot) instead of hanging until the timeout.
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can time out and panic
# ("IO-APIC + timer doesn't work!") before the initrd runs; it says nothing about the initrd.
BASE_CMDLINE = "console=ttyS0,115200 panic=1 oops=panic no_timer_check"
# Lines after which the guest will not reach the marker by itself: stop early, save CPU.
FAIL_PATTERNS = (
    "Kernel panic - not syncing",
    "You are in emergency mode",
    "Entering emergency mode",
    "Give root password for maintenance",
    "dracut Warning: Could not boot",
    "Cannot open access to console, the root account is locked",
    "Please enter passphrase for disk",  # no test types one: the key did not reach the initrd
)


@dataclass(frozen=True)
class BootResult:
    passed: bool
    log_path: Path
    seconds: float  # wall time from QEMU start to the marker (or to the end)
    reason: str  # "marker", "timeout", "failure: <line>", "exited <code>"
    marker_line: str = ""
    command: tuple[str, ...] = field(default=(), compare=False)

    @property
    def facts(self) -> dict[str, str]:
        """key=value words of the marker line (marker_init prints fs=, src=, label=, uptime=)."""
        return dict(w.split("=", 1) for w in self.marker_line.split() if "=" in w)

    @property
    def root_cmdline(self) -> list[str] | None:
        """The words of /proc/cmdline as the root's init saw it (marker_init.c), None if not printed."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith(ROOT_CMDLINE + " "):
                return line[len(ROOT_CMDLINE) + 1 :].split()
        return None

    @property
    def guest_uptime(self) -> float | None:
        """Seconds from kernel start to the root's init (guest clock), when the marker says so."""
        value = self.facts.get("uptime")
        return float(value) if value else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def explain(self) -> str:
        tail = self.log_tail()
        return f"boot failed ({self.reason}); serial log: {self.log_path}\n--- last lines ---\n{tail}"


def _artifact_log(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return ARTIFACTS / f"{stamp}-{os.getpid()}-{name}.log"


def qemu_command(
    kernel: Path | None,
    initrd: Path | None,
    disks: Sequence[Path],
    cmdline: str,
    log_path: Path,
    *,
    ovmf_esp: Path | None = None,
    ovmf_vars: Path | None = None,
    memory: int = 1024,
    writable: bool = False,
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
    serial: Sequence[str] | None = None,
) -> list[str]:
    """The QEMU command line; `serial` replaces the serial port's arguments (default: log to a file)."""
    cmd = [*prefix, QEMU, "-accel", "tcg", "-cpu", "qemu64", "-m", str(memory), "-smp", "1"]
    cmd += ["-nographic", "-nodefaults", "-no-reboot", "-monitor", "none"]
    cmd += list(serial) if serial is not None else ["-serial", f"file:{log_path}"]
    cmd += ["-device", "virtio-rng-pci"]  # entropy for cryptsetup/systemd without waiting
    if ovmf_esp is not None:
        assert ovmf_vars is not None
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"]
        cmd += ["-drive", f"if=pflash,format=raw,unit=1,file={ovmf_vars}"]
        cmd += ["-drive", f"if=virtio,format=raw,snapshot=on,file={ovmf_esp}"]
    for disk in disks:
        cmd += ["-drive", f"if=virtio,format=raw,file={disk}" + ("" if writable else ",snapshot=on")]
    if kernel is not None:
        cmd += ["-kernel", str(kernel), "-append", f"{cmdline} {BASE_CMDLINE}".strip()]
        if initrd is not None:
            cmd += ["-initrd", str(initrd)]
    cmd += list(extra_args)
    return cmd


def boot(
    kernel: Path | None,
    initrd: Path | None,
    disks: Sequence[Path],
    cmdline: str = "",
    marker: str = ROOT_MARKER,
    timeout: int = 300,
    ovmf_esp: Path | None = None,
    *,
    name: str = "boot",
    log_path: Path | None = None,
    memory: int = 1024,
    writable: bool = False,
    extra_args: Sequence[str] = (),
    prefix: Sequence[str] = (),
    fail_patterns: Sequence[str] = FAIL_PATTERNS,
) -> BootResult:
    """Run one guest until `marker` appears on its serial console, a failure pattern, exit or timeout.

    Direct kernel boot when `kernel` is given; with `ovmf_esp` the firmware boots the ESP image
    (EFI/BOOT/BOOTX64.EFI) attached as the first disk, before `disks`. `prefix` runs QEMU through
    another command (nsenter into a test network namespace, say).
    """
    require_program(QEMU, "qemu-system-x86")
    if ovmf_esp is not None:
        require_file(OVMF_CODE, "ovmf")
        require_file(OVMF_VARS, "ovmf")
    log_path = log_path or _artifact_log(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(b"")
    with tempfile.TemporaryDirectory(prefix="mkosi-initrd-qemu-") as tmp:
        vars_copy = None
        if ovmf_esp is not None:
            vars_copy = Path(tmp) / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)
        cmd = qemu_command(
            kernel,
            initrd,
            disks,
            cmdline,
            log_path,
            ovmf_esp=ovmf_esp,
            ovmf_vars=vars_copy,
            memory=memory,
            writable=writable,
            extra_args=extra_args,
            prefix=prefix,
        )
        return _watch(cmd, log_path, marker, timeout, fail_patterns)


def _watch(
    cmd: list[str], log_path: Path, marker: str, timeout: int, fail_patterns: Sequence[str]
) -> BootResult:
    start = time.monotonic()
    stderr_path = log_path.with_suffix(".qemu-stderr")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    reason, marker_line, found_at = "timeout", "", None
    try:
        while True:
            text = log_path.read_bytes().decode(errors="replace")
            line = _line_with(text, marker)
            if line is not None:
                reason, marker_line, found_at = "marker", line, time.monotonic() - start
                break
            failure = next((p for p in fail_patterns if p in text), None)
            if failure is not None:
                reason = f"failure: {_line_with(text, failure)}"
                break
            if proc.poll() is not None:
                # The marker may have landed between the read and the exit.
                text = log_path.read_bytes().decode(errors="replace")
                line = _line_with(text, marker)
                if line is not None:
                    reason, marker_line, found_at = "marker", line, time.monotonic() - start
                else:
                    reason = f"exited {proc.returncode}: {stderr_path.read_text(errors='replace')[-500:]}"
                break
            if time.monotonic() - start > timeout:
                break
            time.sleep(0.1)
    finally:
        _stop(proc, grace=5.0 if reason == "marker" else 0.0)
    seconds = found_at if found_at is not None else time.monotonic() - start
    return BootResult(reason == "marker", log_path, seconds, reason, marker_line, tuple(cmd))


def _line_with(text: str, needle: str) -> str | None:
    for line in text.splitlines():
        if needle in line:
            return re.sub(r"[\x00-\x08\x0b-\x1f]", "", line).strip()
    return None


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Let a guest that printed its marker power off by itself (it does, right after); else kill it."""
    if grace:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
