"""The trixie generic build at full speed (kernel/modprefix.py reads .modinfo from the start of each
.ko.xz) must build the same image as before: the same firmware wants as the section headers give, and
byte-identical images cold (--no-cache), again cold, and from the build cache."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.trixie import TrixieRoot
from mkosi_initrd.kernel.index import load_index
from mkosi_initrd.kernel.modinfo import decompress, modinfo_section, parse_modinfo
from mkosi_initrd.kernel.selection import close, read_all

SRC = str(Path(__file__).parents[1] / "src")
pytestmark = pytest.mark.slow


def cli(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    if cache is not None:
        env["MKOSI_INITRD_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_plan_wants_the_firmware_the_section_headers_name(trixie: TrixieRoot) -> None:
    shown = cli("plan", "--json", "--root", str(trixie.root), "-k", trixie.kver, "--generic")
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)
    by_headers = {
        (m["name"], fw)
        for m in plan["modules"]
        for fw in parse_modinfo(
            modinfo_section(decompress((trixie.modules / m["path"]).read_bytes()))
        ).firmware
    }
    assert by_headers, "the generic set of the trixie kernel has modules that want firmware"
    planned = {(mod, fw.split(" (wanted by ")[0]) for fw in plan["missing_firmware"] for mod in _wanters(fw)}
    planned |= {(mod, f["path"]) for f in plan["firmware"] for mod in f["reason"].split(", ")}
    assert planned == by_headers


def _wanters(missing: str) -> list[str]:
    return missing.rsplit(" (wanted by ", 1)[1].rstrip(")").split(", ")


def test_cold_and_warm_builds_of_the_trixie_root_are_byte_identical(
    trixie: TrixieRoot, tmp_path: Path
) -> None:
    args = ["--root", str(trixie.root), "-k", trixie.kver, "--generic"]
    cache = tmp_path / "cache"
    images = {}
    for name, extra in (("cold", ["--no-cache"]), ("again", ["--no-cache"]), ("fill", []), ("warm", [])):
        images[name] = tmp_path / f"{name}.img"
        built = cli(*args, *extra, "-v", "-o", str(images[name]), cache=cache)
        assert built.returncode == 0, built.stderr
        assert ("cached result" in built.stderr) == (name == "warm"), (name, built.stderr[-500:])
    data = {name: path.read_bytes() for name, path in images.items()}
    assert len(data["cold"]) > 10_000_000
    assert data["cold"] == data["again"] == data["fill"] == data["warm"]


def test_the_closure_from_trixies_index_files_equals_the_one_from_modinfo(trixie: TrixieRoot) -> None:
    # kmod 34's depmod wrote the modules' softdep= and weakdep= into the index files: the closure
    # reads no .modinfo there, and must choose what reading every module's .modinfo chooses.
    index = load_index(trixie.modules, trixie.kver)
    assert index.modinfo_indexed
    chosen = sorted((n, "test") for n in index.paths if n.startswith(("virtio", "ext4", "nvme", "snd_sof")))
    fast = close(index, chosen)
    slow = close(dataclasses.replace(index, modinfo_indexed=False), chosen)
    assert fast.modules == slow.modules and fast.builtin == slow.builtin
    assert not fast.info and set(slow.info) == set(slow.modules)
    names = sorted(slow.modules)
    assert read_all(index, names) == [slow.info[n] for n in names]
    assert any(slow.info[n].softdep_pre or slow.info[n].weakdep for n in names)  # the case is covered
