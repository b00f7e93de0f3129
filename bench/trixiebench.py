"""bench_all.py's Debian 13 cases: our generic build of the trixie root (kernel 6.12, .ko.xz modules)
cold and warm, and trixie's own dracut building the same kernel inside that root.

dracut is not in the fixture's root: trixie's dracut packages are unpacked (tests/fixtures/trixie.py
unpacked_packages) into a throw-away overlay chroot of it, with /proc /sys /dev bound, and run there
as the distribution runs it (`dracut --no-hostonly --zstd`), writing into the chroot's /tmp.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fixtures import trixie as fixture  # benchkernel put tests/ on sys.path
from fixtures.trixie_ko import trixie_ko_root

DRACUT_PACKAGES = ("dracut", "dracut-core", "dracut-install")
DRACUT_OUT = "/tmp/bench-dracut.img"
COLD, WARM, DRACUT = "trixie generic", "trixie cached", "dracut trixie chroot"
KO = "trixie .ko generic"


@dataclass(frozen=True)
class TrixieBench:
    root: fixture.TrixieRoot
    ko_root: fixture.TrixieRoot  # the same with `.ko` modules
    chroot: fixture.Chroot | None  # with dracut installed; None without dracut

    def cases(self) -> list[tuple[str, str, str, Callable[[Path], list[str]]]]:
        """(name, tool, mode, command) for bench_all's Case."""
        t = self.root

        def ours(root: Path, *extra: str) -> Callable[[Path], list[str]]:
            return lambda out: [
                sys.executable, "-m", "mkosi_initrd", "--root", str(root), "-k", t.kver, "--generic",
                "-o", str(out), *extra,
            ]  # fmt: skip

        out = [
            (COLD, "ours", "trixie", ours(t.root, "--no-cache")),
            (KO, "ours", "trixie", ours(self.ko_root.root, "--no-cache")),
            (WARM, "ours", "cached", ours(t.root)),
        ]
        if self.chroot is not None:
            c = self.chroot
            dracut = [
                "dracut",
                "--quiet",
                "--no-hostonly",
                "--zstd",
                "--force",
                "--kver",
                t.kver,
                DRACUT_OUT,
            ]
            enter = ["nsenter", f"--mount=/proc/{c.pid}/ns/mnt", "chroot", str(c.merged)]
            env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"]
            out.append((DRACUT, "dracut", "trixie", lambda _out: [*enter, *env, *dracut]))
        return out

    def fetch(self, name: str, out: Path) -> None:
        """The chroot's dracut image is copied out to `out`, where the sizes are read."""
        if name == DRACUT and self.chroot is not None:
            shutil.copyfile(self.chroot.path / DRACUT_OUT.lstrip("/"), out)

    def report(
        self, times: dict[str, list[float]], sizes: dict[str, tuple[int, int]]
    ) -> dict[str, tuple[float, float]]:
        """Prints the trixie ratios; returns them (min, median) for the JSON."""

        def ratio(a: str, b: str) -> tuple[float, float]:
            return min(times[a]) / min(times[b]), statistics.median(times[a]) / statistics.median(times[b])

        out = {
            "trixie cold/trixie .ko cold": ratio(COLD, KO),
            "trixie cold/host generic": ratio(COLD, "ours generic"),
            "trixie .ko cold/host generic": ratio(KO, "ours generic"),
            "trixie warm/host generic": ratio(WARM, "ours generic"),
        }
        if DRACUT in times:
            out["dracut trixie/trixie cold"] = ratio(DRACUT, COLD)
        print()
        print(
            f"trixie ({self.root.kver}, .ko.xz) against the same root with .ko modules, and against our"
            " host generic build (uncompressed .ko):"
        )
        for name, (lo, med) in out.items():
            print(f"  {name:28}: min {lo:5.2f}x, median {med:5.2f}x")
        if DRACUT in sizes:
            o, d = sizes[COLD], sizes[DRACUT]
            print(
                f"  size ours/dracut (trixie)   : {o[0] / d[0]:.2f} compressed,"
                f" {o[1] / max(d[1], 1):.2f} uncompressed"
            )
        return out


@contextmanager
def trixie_bench(enabled: bool, skip_dracut: bool) -> Iterator[TrixieBench | None]:
    if not enabled:
        yield None
        return
    missing = fixture.missing_tools()
    if missing:
        sys.exit(f"the Debian 13 cases need {' '.join(missing)}")
    root = fixture.trixie_root()
    ko_root = trixie_ko_root()
    with ExitStack() as stack:
        chroot = None
        if not skip_dracut:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-trixie-")))
            chroot = stack.enter_context(fixture.chroot(root, tmp))
            fixture.install_tree(chroot, [(fixture.unpacked_packages(*DRACUT_PACKAGES), "/")])
        yield TrixieBench(root, ko_root, chroot)
