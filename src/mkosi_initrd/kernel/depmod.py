"""The module index files of the initrd, regenerated for the selected subset.

`depmod -b TMP KVER` runs over a tree of symlinks to the selected module files (depmod reads through
them), with an empty configuration directory so the host's depmod.d cannot change the result.
Measured (bench/bench_modules.py): ~0.1 s for ~400 modules. Writing the .bin tries ourselves would
save that but means maintaining libkmod's index format here; depmod writes exactly what modprobe
and udev read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel.index import strip_module_suffix
from mkosi_initrd.scratch import DEPMOD, ScratchDir

# Copied from the kernel as they are: depmod reads them, modprobe uses modules.builtin*.
_COPIED = ("modules.builtin", "modules.builtin.modinfo")
# What depmod writes (those present are kept; modules.weakdep only with newer kmod).
GENERATED = (
    "modules.alias",
    "modules.alias.bin",
    "modules.builtin.alias.bin",
    "modules.builtin.bin",
    "modules.dep",
    "modules.dep.bin",
    "modules.devname",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.weakdep",
)


def find_depmod() -> str:
    for candidate in (shutil.which("depmod"), "/usr/sbin/depmod", "/sbin/depmod"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise InitrdError("depmod not found: it regenerates the initrd's module index", hint="install kmod")


class Regeneration:
    """depmod over the subset, running while the caller goes on; `result()` waits for it.

    The planner starts it before the package step, so the subprocess runs on another core while
    Python plans the packages (~0.03-0.05 s of depmod off the build's wall time). `cancel()` (or
    `result()`) removes the scratch tree."""

    def __init__(self, moddir: Path, kver: str, modules: Iterable[tuple[str, Path | bytes]]) -> None:
        self.kver, self.moddir = kver, moddir
        # In /dev/shm (scratch.py): a memory file system; the tree is hundreds of symlinks.
        self._tmp = ScratchDir(DEPMOD)
        try:
            self._base = self._tmp.path / "lib/modules" / kver
            self._order = _tree(self._base, moddir, list(modules))
            confdir = self._tmp.path / "depmod.d"
            confdir.mkdir()
            cmd = [*_with_parent(), find_depmod(), "-C", str(confdir), "-b", str(self._tmp.path), kver]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except BaseException:
            self._tmp.cleanup()
            raise

    def result(self) -> dict[str, bytes]:
        """Index file name → content."""
        try:
            _, stderr = self._proc.communicate()
            if self._proc.returncode != 0:
                raise InitrdError(
                    f"depmod failed for kernel {self.kver}: {stderr.strip()}",
                    hint="check the kernel's module files in " + str(self.moddir),
                )
            base = self._base
            out = {n: (base / n).read_bytes() for n in (*_COPIED, *GENERATED) if (base / n).exists()}
            out["modules.order"] = self._order.encode()
            return out
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop depmod (it must not write into the tree while it is removed) and remove the tree."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._tmp.cleanup()


def regenerate(moddir: Path, kver: str, modules: Iterable[tuple[str, Path | bytes]]) -> dict[str, bytes]:
    """Index file name → content, for `modules`: (relative path, host file or the module's bytes)."""
    return Regeneration(moddir, kver, modules).result()


def _tree(base: Path, moddir: Path, modules: list[tuple[str, Path | bytes]]) -> str:
    """The subset as depmod's input below `base`; returns the subset's modules.order."""
    base.mkdir(parents=True)
    for rel, source in modules:
        link = base / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            link.write_bytes(source)
        else:
            link.symlink_to(source)
    for name in _COPIED:
        if (moddir / name).exists():
            shutil.copyfile(moddir / name, base / name)
    order = _order(moddir, {rel for rel, _ in modules})
    (base / "modules.order").write_text(order)
    return order


def _with_parent() -> list[str]:
    """A prefix that makes depmod die with the builder: a killed build's depmod must not go on
    writing into a scratch tree that the next build removes (scratch.py). setpriv (util-linux) sets
    the parent-death signal and execs depmod; a preexec_fn would do the same but makes Python fork
    the whole builder instead of vfork (3 ms here, on every build)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _order(moddir: Path, selected: set[str]) -> str:
    """modules.order restricted to the subset (depmod uses it to rank aliases).

    It names `.ko` files even when they are shipped compressed, so compare without suffixes."""
    path = moddir / "modules.order"
    if not path.exists():
        return ""
    stems = {strip_module_suffix(rel) for rel in selected}
    lines = [line for line in path.read_text().splitlines() if strip_module_suffix(line.strip()) in stems]
    return "".join(line + "\n" for line in lines)
