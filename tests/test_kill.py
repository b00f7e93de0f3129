"""Killed builds leave nothing behind and never spoil the output.

Real builds of this host's packages and kernel (cpio and UKI, with the cache and without) are
killed at random points (seeded: MKOSI_INITRD_KILL_SEED) with SIGKILL, SIGTERM or SIGINT. After
SIGTERM/SIGINT the build has removed its own scratch directories before it exits; after SIGKILL
the next build removes them. The output is always either the old file or the complete new one, and
after a last, complete build nothing is left in the scratch space, $TMPDIR or the output's directory
but the output, nor in the cache but its entries. Each build sees a private directory as its
/dev/shm (a bind mount in its own mount namespace): what the builds leave there is all there is,
however it is named, and other builds on the machine do not disturb the count. About a minute.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fixtures.kernel import HostKernel
from prereq import require, require_file, require_program

SRC = str(Path(__file__).resolve().parents[1] / "src")
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
KILLS_PER_CASE = 8
TIME_CAP = 45.0  # seconds for the kills (most of the test); MIN_KILLS per case in any case
MIN_KILLS = 3
OLD = b"the initrd that booted last time"


@dataclass(frozen=True)
class Case:
    name: str
    output: str
    extra: tuple[str, ...]
    cached: bool


def cases(kernel: Path) -> list[Case]:
    uki = ("--format", "uki", "--kernel-image", str(kernel), "--cmdline", "root=/dev/vda ro")
    return [
        Case("cpio", "initrd", ("--no-cache",), cached=False),
        Case("cpio-cached", "initrd", (), cached=True),
        Case("uki", "uki.efi", ("--no-cache", *uki), cached=False),
        Case("uki-cached", "uki.efi", uki, cached=True),
    ]


class Builds:
    def __init__(self, tmp: Path, kver: str) -> None:
        self.tmp = tmp
        self.kver = kver
        self.shm = tmp / "shm"
        self.tmpdir = tmp / "tmpdir"
        for d in (self.shm, self.tmpdir):
            d.mkdir()

    def env(self, case: Case) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MKOSI_INITRD")}
        env.update(PYTHONPATH=SRC, TMPDIR=str(self.tmpdir), MKOSI_INITRD_CACHE_DIR=str(self.cache(case)))
        return env

    def cache(self, case: Case) -> Path:
        return self.tmp / f"cache-{case.name}"

    def out(self, case: Case) -> Path:
        return self.tmp / case.name / case.output

    def start(self, case: Case) -> subprocess.Popen[bytes]:
        build = [sys.executable, "-m", "mkosi_initrd", "-k", self.kver, "--generic", *case.extra]
        # unshare and sh exec: the pid signalled is the build's.
        private_shm = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        private_shm += ['mount --bind "$0" /dev/shm && exec "$@"', str(self.shm)]
        return subprocess.Popen(
            [*private_shm, *build, "-o", str(self.out(case))],
            env=self.env(case),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def complete(self, case: Case) -> float:
        start = time.monotonic()
        p = self.start(case)
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode(errors="replace")
        return time.monotonic() - start

    def leftovers(self, case: Case) -> list[str]:
        """Everything in the scratch space, $TMPDIR and the output's directory but the output, and
        the cache's temps (its entries are not dot files)."""
        out_dir, cache = self.out(case).parent, self.cache(case)
        found = [str(self.shm / n) for n in os.listdir(self.shm)]
        found += [str(self.tmpdir / n) for n in os.listdir(self.tmpdir)]
        found += [str(out_dir / n) for n in os.listdir(out_dir) if n != case.output]
        found += [str(cache / n) for n in (os.listdir(cache) if cache.is_dir() else ()) if n.startswith(".")]
        return found


def test_killed_builds_leave_nothing_behind_and_the_old_output_intact(
    tmp_path: Path, host_kernel: HostKernel
) -> None:
    kver, kernel = host_kernel.kver, host_kernel.image
    require_file(STUB, "systemd-boot-efi")
    require_program("unshare", "util-linux")
    require(
        os.geteuid() == 0, "root, to bind-mount a private /dev/shm for the builds", "run the tests as root"
    )
    seed = int(os.environ.get("MKOSI_INITRD_KILL_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    builds = Builds(tmp_path, kver)
    todo = cases(kernel)
    reference: dict[str, tuple[bytes, float]] = {}
    for case in todo:
        builds.out(case).parent.mkdir()
        took = builds.complete(case)  # also fills the cache of a cached case
        reference[case.name] = (builds.out(case).read_bytes(), took)
        builds.out(case).write_bytes(OLD)
    deadline = time.monotonic() + TIME_CAP
    killed: dict[str, list[str]] = {c.name: [] for c in todo}
    signals = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
    for i in range(KILLS_PER_CASE):
        if i >= MIN_KILLS and time.monotonic() > deadline:
            break
        for case in todo:
            want, took = reference[case.name]
            if case.cached and rng.random() < 0.5:
                shutil.rmtree(builds.cache(case), ignore_errors=True)  # a miss: build, then store
            sig = rng.choice(signals)
            delay = rng.uniform(0.05, took * 1.1)
            before = set(builds.leftovers(case))  # a SIGKILLed build's, until a build removes them
            p = builds.start(case)
            time.sleep(delay)
            p.send_signal(sig)
            _, stderr = p.communicate(timeout=120)
            err = stderr.decode(errors="replace")
            what = f"seed {seed}: {case.name} got {sig.name} after {delay:.2f}s (rc {p.returncode})"
            assert p.returncode in (0, -sig, 128 + sig), f"{what}: {err}"
            # A signal before the handlers are in place (Python starting) kills it by default.
            assert "Traceback" not in err or p.returncode == -sig, f"{what}: {err}"
            if sig != signal.SIGKILL:  # it cleaned up after itself before it exited
                assert set(builds.leftovers(case)) <= before, what
            assert builds.out(case).read_bytes() in (OLD, want), f"{what}: the output is neither old nor new"
            killed[case.name].append(f"{sig.name}@{delay:.2f}")
    for case in todo:
        builds.complete(case)  # the next build after the kills cleans up what SIGKILL left
        assert builds.out(case).read_bytes() == reference[case.name][0]
        assert builds.leftovers(case) == [], f"seed {seed}: {case.name} after {killed[case.name]}"
