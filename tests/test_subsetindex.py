"""The subset's module index written from the kernel's own (kernel/subsetindex.py) is byte for byte
what real depmod writes over a tree of just that subset: on the test kernel (uncompressed, so
depmod is quick) and on the trixie kernel (.ko.xz), for the generic selection, modules with many
dependencies, seeded random closed subsets and the whole kernel. And where the kernel's index
cannot be trusted (changed order, a module out of modules.order, a module newer than the index,
an unknown depmod), it is not used."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.kernel import HostKernel
from fixtures.trixie import TrixieRoot
from mkosi_initrd.kernel import depmod, subsetindex
from mkosi_initrd.kernel.depmod import Regeneration, kmod_version, regenerate
from mkosi_initrd.kernel.index import KernelIndex, load_index
from mkosi_initrd.kernel.subsetindex import subset_index, usable

SRC = str(Path(__file__).parents[1] / "src")
# Copied by both ways alike: not what is compared.
_COPIED = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


def _closure(index: KernelIndex, names: list[str]) -> list[str]:
    """Relative paths of `names` and all they depend on (modules.dep)."""
    out = set(names)
    for n in names:
        out.update(index.deps[n])
    return sorted(index.paths[n] for n in out)


def _generic(root: Path, kver: str) -> list[str]:
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkosi_initrd",
            "plan",
            "--json",
            "--root",
            str(root),
            "-k",
            kver,
            "--generic",
        ],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert shown.returncode == 0, shown.stderr
    return [m["path"] for m in json.loads(shown.stdout)["modules"]]


def _subsets(index: KernelIndex, generic: list[str]) -> dict[str, list[str]]:
    rng = random.Random(16)
    names = sorted(index.paths)
    by_deps = sorted(names, key=lambda n: -len(index.deps[n]))
    out = {"generic": generic, "most dependencies": _closure(index, by_deps[:12])}
    for i in range(4):
        out[f"random {i}"] = _closure(index, rng.sample(names, 40 * (i + 1)))
    return out


def _depmod(index: KernelIndex, rels: list[str]) -> dict[str, bytes]:
    files = regenerate(index.moddir, index.kver, [(r, index.moddir / r) for r in rels])
    return {n: b for n, b in files.items() if n not in _COPIED}


def _assert_same(index: KernelIndex, rels: list[str], what: str) -> None:
    ours = subset_index(index, rels, _kmod())
    assert ours is not None, f"{what}: the kernel's index should serve"
    theirs = _depmod(index, rels)
    assert sorted(ours) == sorted(theirs), what
    for name in sorted(theirs):
        assert ours[name] == theirs[name], f"{what}: {name} differs from depmod's"


def _kmod() -> int:
    version = kmod_version()
    if version is None or version not in subsetindex.KMOD_VERSIONS:
        pytest.fail(f"depmod version {version}: the tests need one subsetindex.py reproduces")
    return version


class _Counting:
    """needed_symbols with a count: the subsets must reach the symbol-table case too."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = subsetindex.needed_symbols

    def __call__(self, elf: bytes) -> list[str] | None:
        self.calls += 1
        return self.real(elf)


def _assert_all_same(
    index: KernelIndex, subsets: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each subset's files are depmod's, and at least one needed a module's own symbol order."""
    counting = _Counting()
    monkeypatch.setattr(subsetindex, "needed_symbols", counting)
    for what, rels in subsets.items():
        _assert_same(index, rels, what)
    assert counting.calls > 0, "no subset needed a module's own symbol order: that path is untested"


def test_same_bytes_as_depmod_on_the_test_kernel(
    host_kernel: HostKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = load_index(Path("/usr/lib/modules") / host_kernel.kver, host_kernel.kver)
    subsets = _subsets(index, _generic(Path("/"), host_kernel.kver))
    subsets["whole kernel"] = sorted(index.paths.values())
    _assert_all_same(index, subsets, monkeypatch)


@pytest.mark.slow
def test_same_bytes_as_depmod_on_the_trixie_kernel(
    trixie: TrixieRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = load_index(trixie.modules, trixie.kver)
    _assert_all_same(index, _subsets(index, _generic(trixie.root, trixie.kver)), monkeypatch)


@pytest.mark.slow
def test_a_trixie_build_starts_no_depmod_and_writes_what_depmod_would(
    trixie: TrixieRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = load_index(trixie.modules, trixie.kver)
    rels = _generic(trixie.root, trixie.kver)
    expected = regenerate(index.moddir, index.kver, [(r, index.moddir / r) for r in rels])

    def no_depmod(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"depmod started: {args}")

    monkeypatch.setattr(depmod.subprocess, "Popen", no_depmod)
    got = Regeneration(index.moddir, index.kver, [(r, index.moddir / r) for r in rels], index).result()
    assert got == expected


def test_uncompressed_modules_still_get_depmod(
    host_kernel: HostKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """depmod costs ~0.03 s on another core there: less than writing the index on the planner's."""
    index = load_index(Path("/usr/lib/modules") / host_kernel.kver, host_kernel.kver)
    rels = _closure(index, sorted(index.paths)[:20])
    started = []
    real = depmod.subprocess.Popen

    def counting(*args: object, **kwargs: object) -> object:
        started.append(args)
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(depmod.subprocess, "Popen", counting)
    Regeneration(index.moddir, index.kver, [(r, index.moddir / r) for r in rels], index).result()
    assert len(started) == 1


# --- where the kernel's index is not used


def _copy_index(kernel: Path, tmp: Path) -> Path:
    """The test kernel's index files in `tmp`, its module tree linked."""
    moddir = tmp / kernel.name
    moddir.mkdir()
    for f in kernel.iterdir():
        if f.name.startswith("modules."):
            shutil.copy2(f, moddir / f.name)
    (moddir / "kernel").symlink_to(kernel / "kernel")
    return moddir


@pytest.fixture
def copied(host_kernel: HostKernel, tmp_path: Path) -> Path:
    return _copy_index(Path("/usr/lib/modules") / host_kernel.kver, tmp_path)


def _some_subset(index: KernelIndex) -> list[str]:
    with_deps = [n for n in sorted(index.paths) if len(index.deps[n]) >= 3]
    return _closure(index, with_deps[:30])


def test_the_copied_index_serves(copied: Path) -> None:
    """The baseline of the tests below: the same files, unchanged, are used."""
    index = load_index(copied, copied.name)
    assert subset_index(index, _some_subset(index), _kmod()) is not None


def test_a_modules_dep_in_another_order_is_not_used(copied: Path) -> None:
    """A line whose dependencies are not in the order depmod's replay gives (another depmod, or an
    edited file) makes the whole replay untrusted."""
    dep = copied / "modules.dep"
    lines = dep.read_text().splitlines()
    n = next(i for i, line in enumerate(lines) if len(line.split()) >= 3)
    rel, rest = lines[n].split(":")
    words = rest.split()
    lines[n] = f"{rel}: {' '.join([words[1], words[0], *words[2:]])}"
    dep.write_text("".join(line + "\n" for line in lines))
    index = load_index(copied, copied.name)
    assert subset_index(index, _some_subset(index), _kmod()) is None


def test_a_module_missing_from_modules_order_is_not_used(copied: Path) -> None:
    """Out-of-tree modules are not in modules.order: depmod sorts them by its own rules."""
    order = copied / "modules.order"
    lines = order.read_text().splitlines()
    order.write_text("".join(line + "\n" for line in lines[1:]))
    index = load_index(copied, copied.name)
    assert subset_index(index, _some_subset(index), _kmod()) is None


def test_index_files_naming_a_module_modules_dep_lacks_are_not_used(copied: Path) -> None:
    """modules.alias from another depmod run than modules.dep (or module names derived otherwise
    than here) would leave lines out silently: any such line is refused."""
    with (copied / "modules.alias").open("a") as f:
        f.write("alias pci:v0000FFFFd*sv*sd*bc*sc*i* no_such_module\n")
    index = load_index(copied, copied.name)
    assert subset_index(index, _some_subset(index), _kmod()) is None


def test_a_module_newer_than_the_index_is_not_used(copied: Path, tmp_path: Path) -> None:
    module = next((copied / "kernel").rglob("*.ko*"))
    past = module.stat().st_mtime_ns
    for f in copied.glob("modules.*"):
        os.utime(f, ns=(past, past))
    # The kernel build's own files may be older than its modules (written before they were signed
    # or compressed): only depmod's count.
    os.utime(copied / "modules.order", ns=(past - 10**9, past - 10**9))
    assert usable(copied, _kmod(), [module])
    newer = tmp_path / module.name
    shutil.copyfile(module, newer)
    os.utime(newer, ns=(past + 10**9, past + 10**9))
    assert not usable(copied, _kmod(), [module, newer])


def test_an_unknown_depmod_or_a_missing_index_file_is_not_used(copied: Path) -> None:
    module = next((copied / "kernel").rglob("*.ko*"))
    assert usable(copied, _kmod(), [module])
    assert not usable(copied, min(subsetindex.KMOD_VERSIONS) - 1, [module])
    assert not usable(copied, max(subsetindex.KMOD_VERSIONS) + 1, [module])
    (copied / "modules.symbols").unlink()
    assert not usable(copied, _kmod(), [module])
    shutil.copy2(Path("/usr/lib/modules") / copied.name / "modules.symbols", copied / "modules.symbols")
    assert usable(copied, _kmod(), [module])
    (copied / "modules.builtin").unlink()
    assert not usable(copied, _kmod(), [module])


@pytest.mark.slow
def test_the_whole_trixie_kernel_gives_back_trixies_own_index(trixie: TrixieRoot) -> None:
    """kmod 34 (trixie's, which wrote that index inside the root) lays the tries out in pre-order,
    this machine's depmod in post-order: the whole kernel as the subset, with trixie's version, must
    give back every index file trixie's depmod wrote."""
    index = load_index(trixie.modules, trixie.kver)
    ours = subset_index(index, sorted(index.paths.values()), 34)
    assert ours is not None
    theirs = {n: (trixie.modules / n).read_bytes() for n in ours}
    assert sorted(ours) == sorted(
        p.name for p in trixie.modules.glob("modules.*") if p.name not in _COPIED
    ), "trixie's depmod wrote other files"
    for name in sorted(theirs):
        assert ours[name] == theirs[name], f"{name} differs from trixie's own"
