#!/usr/bin/env python3
"""The whole benchmark in one command: our generic and host-only builds, the cached rebuild, a UKI, and
dracut's generic and host-only builds of the same kernel, in this process tree, N runs each,
interleaved (run 1 of every case, then run 2 ...) so that a change in machine load hits all cases
alike. Prints min/median wall time per case, the ratios to dracut, and the image sizes
(compressed, uncompressed) with the biggest contributors of ours.

    bench/bench_all.py [-k KVER] [--runs N] [--skip-dracut] [--trixie | --trixie-only] [--json FILE]

Every build is a fresh process (Python start-up included for ours, byte-compiled as when installed).
Ours use --no-cache except the cached case, which builds once to fill a scratch cache and then times
hits; each of our other cases is built once untimed first, so that no case's first run reads its
inputs from disk while the others' come from the page cache.

--trixie adds the Debian 13 root (tests/fixtures/trixie.py: kernel 6.12 with .ko.xz modules): our
generic build of it cold (--no-cache) and warm (cache hits), the same root with its modules decompressed
(tests/fixtures/trixie_ko.py) cold, and trixie's own dracut building the same kernel in that root
(installed into a throw-away overlay chroot), with the ratios to the decompressed root and to our
generic build of the host's uncompressed kernel in the same run. --trixie-only runs those and that one
host case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchkernel import bench_kernel
from trixiebench import TrixieBench, trixie_bench

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass(frozen=True)
class Case:
    name: str
    tool: str  # "ours" or "dracut"
    mode: str  # "generic", "host-only" or "cached"
    command: Callable[[Path], list[str]]


def _ours(kver: str, *extra: str) -> Callable[[Path], list[str]]:
    return lambda out: [sys.executable, "-m", "mkosi_initrd", "-k", kver, "-o", str(out), *extra]


def _dracut(kver: str, hostonly: bool) -> Callable[[Path], list[str]]:
    mode = "--hostonly" if hostonly else "--no-hostonly"
    return lambda out: ["dracut", "--quiet", mode, "--zstd", "--force", "--kver", kver, str(out)]


def cases(kver: str, dracut: bool) -> list[Case]:
    out = [
        Case("ours generic", "ours", "generic", _ours(kver, "--generic", "--no-cache")),
        Case("ours host-only", "ours", "host-only", _ours(kver, "--no-cache")),
        Case("ours cached", "ours", "cached", _ours(kver)),
        Case("ours generic UKI", "ours", "uki", _ours(kver, "--generic", "--no-cache", "--format", "uki")),
        # What the pre-flight check costs: the generic build without it (and without reading what
        # each file needs, which only the check uses).
        Case(
            "ours generic no-check",
            "ours",
            "unchecked",
            _ours(kver, "--generic", "--no-cache", "--no-check"),
        ),
    ]
    if dracut:
        out += [
            Case("dracut generic", "dracut", "generic", _dracut(kver, False)),
            Case("dracut host-only", "dracut", "host-only", _dracut(kver, True)),
        ]
    return out


# CPU time (user + system) of every run, by case: on a machine other jobs load, the wall time of a
# small difference drowns in their noise, the CPU time much less.
CPU: dict[str, list[float]] = {}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], env: dict[str, str], case: str = "") -> float:
    start, cpu = time.monotonic(), _cpu_seconds()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    CPU.setdefault(case, []).append(_cpu_seconds() - cpu)
    return elapsed


# --- sizes


def uncompressed_size(path: Path) -> int:
    """Sum of the uncompressed segments, via inspect's JSON (it knows every compressor)."""
    p = subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", "inspect", "--json", str(path)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return 0
    info = json.loads(p.stdout)
    return int(sum(s.get("uncompressed") or s.get("size", 0) for s in info.get("segments", [])))


def contributors(kver: str, generic: bool, top: int = 8) -> dict[str, list[tuple[str, int]]]:
    """Our plan's biggest packages, modules (by directory) and firmware, in bytes uncompressed."""
    args = ["plan", "--json", "-k", kver] + (["--generic"] if generic else [])
    p = subprocess.run(
        [sys.executable, "-m", "mkosi_initrd", *args],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(p.stdout)
    packages = sorted(((x["name"], int(x["bytes"])) for x in plan["packages"]), key=lambda t: -t[1])
    moddir = Path("/usr/lib/modules") / kver
    by_dir: dict[str, int] = {}
    for m in plan["modules"]:
        d = "/".join(m["path"].split("/")[:3])
        by_dir[d] = by_dir.get(d, 0) + _size(moddir / m["path"])
    firmware = [(f["path"], _size(Path("/usr/lib/firmware") / f["path"])) for f in plan["firmware"]]
    total = {
        "packages": sum(b for _, b in packages),
        "modules": sum(by_dir.values()),
        "firmware": sum(b for _, b in firmware),
    }
    return {
        "totals": sorted(total.items(), key=lambda t: -t[1]),
        "packages": packages[:top],
        "modules": sorted(by_dir.items(), key=lambda t: -t[1])[:top],
        "firmware": sorted(firmware, key=lambda t: -t[1])[:top],
    }


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


# --- report


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB, {platform.platform()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--kver", help="kernel version (default: the tests' kernel, the newest installed)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-dracut", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--trixie", action="store_true", help="add the Debian 13 cases (.ko.xz modules)")
    ap.add_argument("--trixie-only", action="store_true", help="only those and our host generic build")
    args = ap.parse_args()
    args.kver = bench_kernel(args.kver).kver
    with trixie_bench(args.trixie or args.trixie_only, args.skip_dracut) as trixie:
        return _bench(args, trixie)


def _bench(args: argparse.Namespace, trixie: TrixieBench | None) -> int:
    dracut = not args.skip_dracut and not args.trixie_only and shutil.which("dracut") is not None
    todo = cases(args.kver, dracut)
    if args.trixie_only:
        todo = [c for c in todo if c.name == "ours generic"]
    if trixie is not None:
        todo += [Case(n, t, m, cmd) for n, t, m, cmd in trixie.cases()]
    times: dict[str, list[float]] = {c.name: [] for c in todo}
    sizes: dict[str, tuple[int, int]] = {}
    started = datetime.datetime.now(datetime.UTC)
    loads = [os.getloadavg()[0]]
    # Byte-compiled, as an installed package is (pip and the rpm's %pyproject_install compile it):
    # without .pyc files every run would compile our sources first (~0.08 s here, where the
    # environment sets PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(SRC / "mkosi_initrd")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(SRC), "MKOSI_INITRD_CACHE_DIR": f"{tmp}/cache"}
        outs = {c.name: Path(tmp) / (c.name.replace(" ", "-") + ".img") for c in todo}
        for cached in (c for c in todo if c.mode == "cached"):
            run(cached.command(outs[cached.name]), env)  # fills the cache (not timed)
        # One untimed build of each of our other cases first: its inputs in the page cache, as they
        # are for every later run (the decompressed trixie root's 100 MB of modules took 3.8 s to
        # read cold the first time, against ~1 s after).
        for c in todo:
            if c.tool == "ours" and c.mode != "cached":
                run(c.command(outs[c.name]), env)
        for i in range(args.runs):
            for c in todo:
                times[c.name].append(run(c.command(outs[c.name]), env, c.name))
                print(f"run {i + 1}: {c.name:21} {times[c.name][-1]:7.2f} s", file=sys.stderr)
            loads.append(os.getloadavg()[0])
        for c in todo:
            if trixie is not None:
                trixie.fetch(c.name, outs[c.name])
            if c.mode not in ("cached", "uki", "unchecked"):
                sizes[c.name] = (outs[c.name].stat().st_size, uncompressed_size(outs[c.name]))
    finished = datetime.datetime.now(datetime.UTC)

    print(f"mkosi-initrd bench_all, {started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC")
    print(f"machine: {machine()}")
    print(f"kernel {args.kver}, {args.runs} runs per case, load average {min(loads):.1f}-{max(loads):.1f}")
    print()
    print(f"{'case':21} {'min s':>7} {'median s':>9} {'CPU min s':>10} {'size MB':>8} {'uncompr. MB':>12}")
    for c in todo:
        t = times[c.name]
        size, raw = sizes.get(c.name, (0, 0))
        sz = f"{size / 1e6:8.1f} {raw / 1e6:12.1f}" if size else f"{'':8} {'':12}"
        print(f"{c.name:21} {min(t):7.2f} {statistics.median(t):9.2f} {min(CPU[c.name]):10.2f} {sz}")
    ratios = {}
    if dracut:
        print()
        for ours_case, mode in (("ours generic", "generic"), ("ours host-only", "host-only")):
            d, o = times[f"dracut {mode}"], times[ours_case]
            ratios[mode] = (min(d) / min(o), statistics.median(d) / statistics.median(o))
            s_o, s_d = sizes[ours_case], sizes[f"dracut {mode}"]
            print(
                f"{mode:9}: dracut/ours time min {ratios[mode][0]:5.1f}x, median {ratios[mode][1]:5.1f}x;"
                f" size ours/dracut {s_o[0] / s_d[0]:.2f} compressed,"
                f" {s_o[1] / max(s_d[1], 1):.2f} uncompressed"
            )
        d, o = times["dracut host-only"], times["ours cached"]
        ratios["cached"] = (min(d) / min(o), statistics.median(d) / statistics.median(o))
        print(f"cached   : dracut host-only/ours cached min {ratios['cached'][0]:5.1f}x")
    if trixie is not None:
        ratios.update(trixie.report(times, sizes))
    if args.trixie_only:
        return _write_json(args, started, loads, times, sizes, ratios, {})
    u, g = times["ours generic UKI"], times["ours generic"]
    extra = (min(u) - min(g), statistics.median(u) - statistics.median(g))
    print(f"UKI      : --format uki adds {extra[0]:+.2f} s (min), {extra[1]:+.2f} s (median)")
    n = times["ours generic no-check"]
    check = (min(g) - min(n), statistics.median(g) - statistics.median(n))
    gc, nc = CPU["ours generic"], CPU["ours generic no-check"]
    check_cpu = (min(gc) - min(nc), statistics.median(gc) - statistics.median(nc))
    print(
        f"check    : the pre-flight check adds {check[0]:+.3f} s (min), {check[1]:+.3f} s (median) of wall"
        f" time, {check_cpu[0]:+.3f} s (min), {check_cpu[1]:+.3f} s (median) of CPU time"
    )
    report: dict[str, object] = {}
    for mode in ("generic", "host-only"):
        contrib = contributors(args.kver, mode == "generic")
        report[mode] = contrib
        print()
        print(f"ours {mode}, biggest contributors (uncompressed MB):")
        print("  " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in contrib["totals"]))
        for kind in ("packages", "modules", "firmware"):
            items = contrib[kind]
            if items:
                print(f"  {kind}: " + ", ".join(f"{n} {b / 1e6:.2f}" for n, b in items))
    return _write_json(args, started, loads, times, sizes, ratios, report)


def _write_json(
    args: argparse.Namespace,
    started: datetime.datetime,
    loads: list[float],
    times: dict[str, list[float]],
    sizes: dict[str, tuple[int, int]],
    ratios: dict[str, tuple[float, float]],
    report: dict[str, object],
) -> int:
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "machine": machine(),
                    "kernel": args.kver,
                    "runs": args.runs,
                    "load": [min(loads), max(loads)],
                    "times": times,
                    "cpu": CPU,
                    "sizes": sizes,
                    "ratios": ratios,
                    "contributors": report,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
