"""The rebuild cache: real builds of the rpm fixture root (librpm reads a real rpmdb), a real
dpkg database for the dpkg state, and the CLI in separate processes for concurrent builders."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fixtures.debroot import deb_root
from fixtures.host import FakeHost
from fixtures.kernel import HostKernel
from fixtures.rpmspecs import rpm_root
from mkosi_initrd.build import cache, inputs, store
from mkosi_initrd.cli import build_setup, main, parse_args
from prereq import require_file

KVER = "1.0"
DBPATH = "/usr/lib/sysimage/rpm"
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A private copy of the rpm fixture root (its database and files get changed)."""
    dst = tmp_path / "root"
    shutil.copytree(rpm_root(), dst, symlinks=True)
    return dst


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(store.ENV_DIR, str(d))
    monkeypatch.delenv(store.ENV_MAX, raising=False)
    return d


def args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "-k", KVER, "-o", str(out), *extra]


def build(root: Path, out: Path, *extra: str) -> bytes:
    assert main(args(root, out, *extra)) == 0
    return out.read_bytes()


def lookup(root: Path, out: Path, *extra: str) -> cache.Hit | None:
    """What a build with these arguments would find in the cache (it copies to `out` on a hit)."""
    c = cache.BuildCache.open(*build_setup(parse_args(args(root, out, *extra))))
    assert c is not None
    return c.lookup()


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if not p.name.startswith("."))


def test_a_rebuild_is_a_hit_with_identical_bytes(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    fresh = build(root, tmp_path / "a")
    assert len(entries(cache_dir)) == 1
    hit = lookup(root, tmp_path / "b")
    assert hit is not None and hit.size == len(fresh) and hit.packages > 0
    assert (tmp_path / "b").read_bytes() == fresh
    assert build(root, tmp_path / "c") == fresh
    uncached = build(root, tmp_path / "d", "--no-cache")
    assert uncached == fresh
    assert oct((tmp_path / "c").stat().st_mode & 0o777) == oct(0o600)


def test_no_cache_neither_reads_nor_stores(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    fresh = build(root, tmp_path / "a", "--no-cache")
    assert not cache_dir.exists() or entries(cache_dir) == []  # nothing stored
    assert build(root, tmp_path / "b") == fresh  # a cached build stores ...
    (entry,) = entries(cache_dir)
    planted = b"planted: only a read of the cache delivers this"  # ... and reads: plant other bytes
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"]["output"] = {"sha256": hashlib.sha256(planted).hexdigest(), "size": len(planted)}
    (entry / "meta.json").write_text(json.dumps(meta))
    (entry / "output").write_bytes(planted)
    assert build(root, tmp_path / "c") == planted
    assert build(root, tmp_path / "d", "--no-cache") == fresh  # not read
    assert entries(cache_dir) == [entry] and (entry / "output").read_bytes() == planted  # nor stored


def _rpm(root: Path, *a: str) -> None:
    subprocess.run(["rpm", "--root", str(root), "--dbpath", DBPATH, *a], check=True, capture_output=True)


def test_a_package_database_change_invalidates(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    build(root, tmp_path / "a")
    _rpm(root, "-qa")  # reading the database is not a change
    assert lookup(root, tmp_path / "b") is not None
    _rpm(root, "-e", "--justdb", "--nodeps", "--noscripts", "fx-weak")
    assert lookup(root, tmp_path / "b") is None


def test_a_changed_file_of_an_included_package_invalidates(
    root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    build(root, tmp_path / "a")
    lib = root / "usr/lib64/libc.so.6"  # glibc's, in the plan
    assert lookup(root, tmp_path / "b") is not None
    lib.write_text("fxlib, rebuilt behind rpm's back\n")
    assert lookup(root, tmp_path / "b") is None
    assert build(root, tmp_path / "c") != (tmp_path / "a").read_bytes()


def test_a_config_line_invalidates(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    build(root, tmp_path / "a")
    conf = root / "etc/mkosi-initrd/mkosi-initrd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# a comment changes nothing\n")
    assert lookup(root, tmp_path / "b") is not None
    conf.write_text("[Output]\nCompressionLevel=5\n")
    assert lookup(root, tmp_path / "b") is None


def test_a_host_file_carried_in_invalidates(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    crypttab = root / "etc/crypttab"
    crypttab.write_text("luks-root UUID=1234 none luks\n")
    conf = root / "etc/mkosi-initrd/mkosi-initrd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[Files]\nExtraFiles=/etc/crypttab\n")
    build(root, tmp_path / "a")
    assert lookup(root, tmp_path / "b") is not None
    crypttab.write_text("luks-root UUID=5678 none luks\n")
    assert lookup(root, tmp_path / "b") is None


def test_the_kernel_module_index_invalidates(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    build(root, tmp_path / "a")
    dep = root / f"usr/lib/modules/{KVER}/modules.dep"
    dep.write_bytes(dep.read_bytes() + b"\n")
    assert lookup(root, tmp_path / "b") is None


@pytest.mark.parametrize(
    "option", [("--generic",), ("--level", "7"), ("--add-module", "fx*"), ("--no-microcode",)]
)
def test_an_option_invalidates(root: Path, cache_dir: Path, tmp_path: Path, option: tuple[str, ...]) -> None:
    build(root, tmp_path / "a")
    assert lookup(root, tmp_path / "b", *option) is None
    assert lookup(root, tmp_path / "b") is not None


def test_host_probes_are_part_of_a_host_only_key(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.module("fx_a")
    probes = host.flags()
    build(root, tmp_path / "a", *probes)
    assert lookup(root, tmp_path / "b", *probes) is not None
    host.modalias("pci0000:00/0000:00:01.0", "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00")
    assert lookup(root, tmp_path / "b", *probes) is None
    build(root, tmp_path / "c", *probes)
    host.module("fx_b")
    assert lookup(root, tmp_path / "b", *probes) is None
    # A generic build does not look at the host.
    build(root, tmp_path / "d", "--generic", *probes)
    host.module("fx_c")
    assert lookup(root, tmp_path / "b", "--generic", *probes) is not None


def test_a_corrupt_entry_is_rebuilt_never_shipped(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    fresh = build(root, tmp_path / "a")
    (entry,) = entries(cache_dir)
    cached = entry / "output"
    st = cached.stat()
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, same times
    cached.write_bytes(bytes(data))
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    target = tmp_path / "b"
    target.write_bytes(b"previous initrd")
    assert lookup(root, target) is None
    assert target.read_bytes() == b"previous initrd"  # the corrupt copy never replaced it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b")) == []
    assert not entry.exists()
    assert build(root, target) == fresh
    assert lookup(root, tmp_path / "c") is not None


def test_a_truncated_or_unreadable_entry_is_a_miss(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    build(root, tmp_path / "a")
    (entry,) = entries(cache_dir)
    (entry / "output").write_bytes(b"")
    assert lookup(root, tmp_path / "b") is None
    build(root, tmp_path / "a")
    (entry,) = entries(cache_dir)
    (entry / "meta.json").write_text("{")
    assert lookup(root, tmp_path / "b") is None


def test_separate_microcode_output_is_cached_too(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    ucode = root / "usr/lib/firmware/intel-ucode"
    ucode.mkdir(parents=True, exist_ok=True)
    (ucode / "06-55-04").write_bytes(b"microcode blob\n")
    extra = ("--generic", "--microcode-output", str(tmp_path / "ucode-a"))
    fresh = build(root, tmp_path / "a", *extra)
    assert (tmp_path / "ucode-a").read_bytes().startswith(b"070701")
    other = ("--generic", "--microcode-output", str(tmp_path / "ucode-b"))
    hit = lookup(root, tmp_path / "b", *other)
    assert hit is not None and hit.microcode == tmp_path / "ucode-b"
    assert (tmp_path / "b").read_bytes() == fresh
    assert (tmp_path / "ucode-b").read_bytes() == (tmp_path / "ucode-a").read_bytes()
    (ucode / "06-55-05").write_bytes(b"another blob\n")  # a new microcode file: read outside the plan
    assert lookup(root, tmp_path / "b", *other) is None


def test_the_size_bound_evicts_least_recently_used(
    root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys: dict[str, Path] = {}
    for level in ("1", "2", "3"):
        build(root, tmp_path / f"l{level}", "--level", level)
        (keys[level],) = set(entries(cache_dir)) - set(keys.values())
    sizes = {e.path: e.size for e in store.entries(cache_dir)}  # all of an entry's files count
    assert lookup(root, tmp_path / "x", "--level", "1") is not None  # level 1 is now the most recent
    bound = sizes[keys["1"]] + max(sizes.values()) * 3 // 2  # room for two entries of about this size
    monkeypatch.setenv(store.ENV_MAX, str(bound))
    build(root, tmp_path / "l4", "--level", "4")  # stores level 4, then evicts 2 and 3 (oldest)
    assert lookup(root, tmp_path / "x", "--level", "2") is None
    assert lookup(root, tmp_path / "x", "--level", "3") is None
    assert lookup(root, tmp_path / "x", "--level", "1") is not None
    assert lookup(root, tmp_path / "x", "--level", "4") is not None
    assert sum(e.size for e in store.entries(cache_dir)) <= bound


def test_an_entry_larger_than_the_bound_is_not_kept(
    root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(store.ENV_MAX, "1K")
    build(root, tmp_path / "a")
    assert entries(cache_dir) == []


def test_concurrent_builders_do_not_corrupt_the_cache(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    cmds = [
        [sys.executable, "-m", "mkosi_initrd", *args(root, tmp_path / f"out{i}", *extra)]
        for i, extra in enumerate([(), (), (), ("--generic",), ("--generic",)])
    ]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    outs = [(tmp_path / f"out{i}").read_bytes() for i in range(5)]
    assert outs[0] == outs[1] == outs[2] and outs[3] == outs[4]
    assert len(entries(cache_dir)) == 2
    assert sorted(p.name for p in cache_dir.iterdir() if p.name.startswith(".")) == []
    assert lookup(root, tmp_path / "h") is not None and (tmp_path / "h").read_bytes() == outs[0]
    assert lookup(root, tmp_path / "g", "--generic") is not None
    assert (tmp_path / "g").read_bytes() == outs[3]


def test_dpkg_state_follows_the_status_file_not_reads(tmp_path: Path) -> None:
    from mkosi_initrd.packages.database import open_db

    root = tmp_path / "root"
    shutil.copytree(deb_root(), root, symlinks=True)
    before = inputs.db_state(root)
    db = open_db(root, "dpkg")
    for pkg in db.packages():
        db.files(pkg)
    assert inputs.db_state(root) == before
    status = root / "var/lib/dpkg/status"
    text = status.read_text()
    st = status.stat()
    status.write_text(text.replace("Version: 1.0-1\n", "Version: 1.0-2\n", 1))
    os.utime(status, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and time: content decides
    assert inputs.db_state(root) != before


def test_the_code_state_covers_our_resources() -> None:
    state = inputs.code_state()
    assert state[0] and isinstance(state[1], str) and len(state[1]) == 64
    assert inputs.code_state() == state


def test_parse_size() -> None:
    assert store.parse_size("512M") == 512 << 20
    assert store.parse_size("1000") == 1000
    assert store.parse_size("2g") == 2 << 30


def test_a_hit_imports_neither_rpm_nor_the_planner(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    build(root, tmp_path / "a")
    probe = (
        "import sys\n"
        "from mkosi_initrd.cli import main\n"
        f"assert main({args(root, tmp_path / 'b')!r}) == 0\n"
        "print(sorted(m for m in ('rpm', 'mkosi_initrd.planner.steps', 'mkosi_initrd.packages.rpm',"
        " 'mkosi_initrd.image.initrd', 'zstandard') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    p = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert p.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "b").read_bytes() == (tmp_path / "a").read_bytes()


def test_a_uki_is_cached_and_its_inputs_invalidate(
    cache_dir: Path, tmp_path: Path, host_kernel: HostKernel
) -> None:
    """On this host's own packages and kernel (a UKI's kernel image must match the initrd's kernel)."""
    from fixtures.uki_inputs import STUB

    kernel, kver = host_kernel.image, host_kernel.kver
    require_file(STUB, "systemd-boot-efi")
    stub = tmp_path / "stub.efi"
    shutil.copyfile(STUB, stub)

    def uki_args(out: Path, cmdline: str = "root=/dev/vda ro") -> list[str]:
        return ["-k", kver, "--generic", "-o", str(out), "--format", "uki", "--kernel-image", str(kernel),
                "--stub", str(stub), "--cmdline", cmdline]  # fmt: skip

    def hit(out: Path, cmdline: str = "root=/dev/vda ro") -> bool:
        c = cache.BuildCache.open(*build_setup(parse_args(uki_args(out, cmdline))))
        assert c is not None
        return c.lookup() is not None

    assert main(uki_args(tmp_path / "a.efi")) == 0
    fresh = (tmp_path / "a.efi").read_bytes()
    assert fresh[:2] == b"MZ"
    assert hit(tmp_path / "b.efi") and (tmp_path / "b.efi").read_bytes() == fresh
    assert not hit(tmp_path / "c.efi", "root=/dev/vdb ro")  # another command line
    stub.write_bytes(stub.read_bytes() + b"\0")  # the stub was updated
    assert not hit(tmp_path / "c.efi")


def test_every_host_file_the_host_package_names_is_in_the_key() -> None:
    """A new host file read by host/*.py must be added to host/files.py's HOST_FILES (or PROFILE_FILES)."""
    import ast
    import re

    from mkosi_initrd import host
    from mkosi_initrd.host import files

    sources = [p.read_text() for p in Path(host.__file__).parent.glob("*.py") if p.name != "files.py"]
    named = {
        n.value.rstrip("/")
        for source in sources
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and re.fullmatch(r"/etc/[\w./-]+", n.value)
    }
    named = {p for p in named if not p.startswith("/etc/systemd/system")}  # the initrd's own units
    covered = (*files.HOST_FILES, *(p for paths in files.PROFILE_FILES.values() for p in paths))
    assert named and all(any(p == c or p.startswith(c + "/") for c in covered) for p in named), sorted(
        p for p in named if not any(p == c or p.startswith(c + "/") for c in covered)
    )


def test_host_config_files_invalidate_a_host_only_entry(root: Path, cache_dir: Path, tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.module("fx_a")
    probes = host.flags()
    (root / "etc/crypttab").write_text("data UUID=1234 none luks,x-initrd.attach\n")
    build(root, tmp_path / "a", *probes)
    assert lookup(root, tmp_path / "b", *probes) is not None
    (root / "etc/cryptsetup-keys.d").mkdir()
    (root / "etc/cryptsetup-keys.d/data.key").write_bytes(b"secret")  # the key for that line appears
    assert lookup(root, tmp_path / "b", *probes) is None
    build(root, tmp_path / "c", *probes)
    assert lookup(root, tmp_path / "b", *probes) is not None
    (root / "etc/cryptsetup-keys.d/data.key").write_bytes(b"another")
    assert lookup(root, tmp_path / "b", *probes) is None
    build(root, tmp_path / "c", *probes)
    (root / "etc/kernel").mkdir(exist_ok=True)
    (root / "etc/kernel/cmdline").write_text("root=/dev/vda resume=/dev/vdb\n")
    assert lookup(root, tmp_path / "b", *probes) is None


# --- meta.json of the wrong shape: discarded and rebuilt with a warning, before anything is written


def _meta(cache_dir: Path) -> Path:
    (entry,) = entries(cache_dir)
    return entry / "meta.json"


def _build_quietly(root: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """A cached generic build that must succeed; returns what it printed to stderr."""
    capsys.readouterr()
    rc = main(args(root, out, "--generic", *extra))
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "shape",
    [
        lambda m: [m],
        lambda m: {k: v for k, v in m.items() if k != "inputs"},
        lambda m: {**m, "files": {**m["files"], "output": None}},
        lambda m: {**m, "result": None},
        lambda m: {**m, "inputs": [["/etc/os-release"]]},
        lambda m: {**m, "files": {"output": {"sha256": "0" * 64, "size": True}}},
    ],
    ids=["a-list", "no-inputs", "output-null", "result-null", "short-input", "bool-size"],
)
def test_an_entry_of_the_wrong_shape_is_rebuilt_with_a_warning_and_nothing_written_first(
    root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: Any
) -> None:
    fresh = build(root, tmp_path / "ref", "--generic", "--no-cache")
    _build_quietly(root, tmp_path / "a", capsys)
    meta = _meta(cache_dir)
    meta.write_text(json.dumps(shape(json.loads(meta.read_text()))))
    target = tmp_path / "b"
    target.write_bytes(b"previous initrd")
    assert lookup(root, target, "--generic") is None
    assert target.read_bytes() == b"previous initrd"  # validated before anything was written
    build(root, tmp_path / "a", "--generic")  # the lookup discarded it: a fresh entry
    meta = _meta(cache_dir)
    meta.write_text(json.dumps(shape(json.loads(meta.read_text()))))
    err = _build_quietly(root, target, capsys)
    assert f"cache entry {meta.parent} is invalid (" in err and ": rebuilding" in err
    assert target.read_bytes() == fresh
    assert lookup(root, tmp_path / "d", "--generic") is not None  # stored anew


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "float", "str", "hex", "list", "dict"]
    kind = rng.choice(kinds if depth < 2 else kinds[:6])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, -1, 2**63, rng.randrange(-(10**12), 10**12)])
    if kind == "float":
        return rng.choice([0.5, -1.0, 1e300])
    if kind == "str":
        return rng.choice(["", "output", "/etc/os-release", "\u00e9\u0000", "x" * 300])
    if kind == "hex":
        return "".join(rng.choice("0123456789abcdef") for _ in range(64))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["output", "sha256", "size", "inputs", "x"]): _random_value(rng, depth + 1)}


def _mutate(rng: random.Random, meta: Any) -> bytes:
    """meta.json changed at one random place: a value replaced or removed, or the text damaged."""
    how = rng.randrange(6)
    text = json.dumps(meta).encode()
    if how == 0:
        return text[: rng.randrange(len(text))]  # truncated
    if how == 1:
        at = rng.randrange(len(text))
        return text[:at] + bytes([rng.randrange(256)]) + text[at + 1 :]  # one byte of rot
    if how == 2:
        return json.dumps(_random_value(rng)).encode()  # something else altogether
    # a value somewhere in the tree: replaced, removed, or with a key added next to it
    node: Any = meta
    while True:
        keys = (
            list(node)
            if isinstance(node, dict)
            else list(range(len(node)))
            if isinstance(node, list)
            else []
        )
        if not keys:
            break
        key = rng.choice(keys)
        child = node[key]
        if not isinstance(child, (dict, list)) or not child or rng.random() < 0.3:
            if how == 3:
                node[key] = _random_value(rng)
            elif how == 4:
                del node[key]
            elif isinstance(node, dict):
                node["unexpected"] = _random_value(rng)
            else:
                node.append(_random_value(rng))
            break
        node = child
    return json.dumps(meta).encode()


def test_fuzzed_entries_always_give_what_a_no_cache_build_gives(
    root: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A seeded generator (reproducible, no extra dependency) mutates meta.json 40 times; every
    cached build after a mutation succeeds, with no traceback, and writes the --no-cache bytes."""
    seed = int(os.environ.get("MKOSI_INITRD_FUZZ_SEED", "14"))
    rng = random.Random(seed)
    fresh = build(root, tmp_path / "ref", "--generic", "--no-cache")
    _build_quietly(root, tmp_path / "a", capsys)
    outcomes = {"hit": 0, "rebuilt": 0}
    for i in range(40):
        meta = _meta(cache_dir)
        mutated = _mutate(rng, json.loads(meta.read_text()))
        meta.write_bytes(mutated)
        out = tmp_path / f"out{i}"
        err = _build_quietly(root, out, capsys)
        assert out.read_bytes() == fresh, f"seed {seed}, mutation {i}: {mutated[:300]!r}"
        outcomes["rebuilt" if "rebuilding" in err else "hit"] += 1
        assert len(entries(cache_dir)) == 1  # rebuilt entries replace the invalid one
    assert outcomes["rebuilt"] >= 20 and sum(outcomes.values()) == 40, outcomes
