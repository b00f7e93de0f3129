"""The module index files of the initrd, regenerated for the selected subset.

`depmod -b TMP KVER` runs over a tree of symlinks to the selected module files (depmod reads through
them), with an empty configuration directory so the host's depmod.d cannot change the result.
Measured (bench/bench_modules.py): ~0.1 s for ~400 modules, on another core while the package step
runs. With compressed modules depmod decodes every one of them (0.56-0.61 s of CPU for Debian 13's
276 generic `.ko.xz`, which the build waited 0.14-0.4 s for): there the subset's index is written
from the kernel's own instead (subsetindex.py: the same bytes as depmod's, tested), whenever that
index is there, fresh and of a known depmod; depmod runs otherwise.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel.index import KernelIndex, strip_module_suffix
from mkosi_initrd.kernel.modinfo import COMPRESSED_SUFFIXES
from mkosi_initrd.kernel.subsetindex import subset_index, usable
from mkosi_initrd.log import log
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


@functools.cache
def kmod_version() -> int | None:
    """depmod's version (`kmod version 30`), None when it does not say: its output format."""
    try:
        p = subprocess.run([find_depmod(), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError, InitrdError):
        return None
    words = p.stdout.split()
    if len(words) >= 3 and words[:2] == ["kmod", "version"] and words[2].isdigit():
        return int(words[2])
    return None


class Regeneration:
    """The subset's index, depmod running while the caller goes on; `result()` waits for it.

    The planner starts it before the package step, so the subprocess runs on another core while
    Python plans the packages (~0.03-0.05 s of depmod off the build's wall time). `cancel()` (or
    `result()`) removes the scratch tree. Given the kernel's `index` and compressed modules, no
    depmod starts: `result()` writes the files from the kernel's index (or runs depmod after all,
    where that index does not serve)."""

    def __init__(
        self,
        moddir: Path,
        kver: str,
        modules: Iterable[tuple[str, Path | bytes]],
        index: KernelIndex | None = None,
    ) -> None:
        self.kver, self.moddir = kver, moddir
        self._modules = list(modules)
        self._proc: subprocess.Popen[str] | None = None
        self._tmp: ScratchDir | None = None
        self._own = _own_index(index, self._modules)
        if self._own is None:
            self._start()

    def _start(self) -> None:
        # In /dev/shm (scratch.py): a memory file system; the tree is hundreds of symlinks.
        self._tmp = ScratchDir(DEPMOD)
        try:
            self._base = self._tmp.path / "lib/modules" / self.kver
            self._order = _tree(self._base, self.moddir, self._modules)
            confdir = self._tmp.path / "depmod.d"
            confdir.mkdir()
            cmd = [*_with_parent(), find_depmod(), "-C", str(confdir), "-b", str(self._tmp.path), self.kver]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except BaseException:
            self._tmp.cleanup()
            raise

    def result(self) -> dict[str, bytes]:
        """Index file name → content."""
        if self._own is not None:
            index, kmod = self._own
            self._own = None
            rels = [rel for rel, _ in self._modules]
            files = subset_index(index, rels, kmod)
            if files is not None:
                copied = {n: (self.moddir / n).read_bytes() for n in _COPIED}
                return files | copied | {"modules.order": _order(self.moddir, set(rels)).encode()}
            log.debug(
                "kernel %s: the kernel's module index does not serve the subset: depmod runs", self.kver
            )
            self._start()
        try:
            assert self._proc is not None
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
        self._own = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _own_index(
    index: KernelIndex | None, modules: list[tuple[str, Path | bytes]]
) -> tuple[KernelIndex, int] | None:
    """(index, depmod's version) where the subset's index can come from the kernel's: compressed
    modules as shipped (uncompressed ones cost depmod ~0.03 s on another core, less than this on
    the planner's), and the cheap checks of subsetindex.usable."""
    if index is None or not modules:
        return None
    paths = [source for _, source in modules if isinstance(source, Path)]
    if len(paths) != len(modules) or not any(rel.endswith(COMPRESSED_SUFFIXES) for rel, _ in modules):
        return None
    kmod = kmod_version()
    if kmod is None or not usable(index.moddir, kmod, paths):
        return None
    return index, kmod


def regenerate(
    moddir: Path, kver: str, modules: Iterable[tuple[str, Path | bytes]], index: KernelIndex | None = None
) -> dict[str, bytes]:
    """Index file name → content, for `modules`: (relative path, host file or the module's bytes)."""
    return Regeneration(moddir, kver, modules, index).result()


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
