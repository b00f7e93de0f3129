"""`mkosi-initrd inspect FILE`: what an initrd (ours, dracut's, any newc one), a UKI or a system
extension (extensions/describe.py) holds."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

from mkosi_initrd import osrelease
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.cpioread import Member, Segment, iter_members, read_segments
from mkosi_initrd.planner.manifest import MANIFEST

# Files that say who built an initrd and from what; shown when present.
_INFO_FILES = (
    MANIFEST,
    "/etc/initrd-release",
    "/usr/lib/initrd-release",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/usr/lib/dracut/modules.txt",
    "/usr/lib/dracut/build-parameter.txt",
)


def _is_pe(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"MZ"


def describe_initrd(path: Path) -> dict[str, Any]:
    """Segments, members and the informational files of a newc initrd, as a JSON-able dict."""
    segments, contents = read_segments(path, want=lambda p: p in _INFO_FILES)
    release_text = next(
        (contents[p] for p in _INFO_FILES[1:5] if p in contents and contents[p]), b""
    ).decode(errors="replace")
    manifest = None
    if MANIFEST in contents:
        try:
            manifest = json.loads(contents[MANIFEST])
        except ValueError:
            manifest = {"error": "manifest is not valid JSON"}
    dracut_modules = contents.get("/usr/lib/dracut/modules.txt", b"").decode(errors="replace").split()
    dracut_args = contents.get("/usr/lib/dracut/build-parameter.txt", b"").decode(errors="replace").strip()
    members = list(iter_members(segments))
    return {
        "path": str(path),
        "size": path.stat().st_size,
        "segments": [_segment_json(s) for s in segments],
        "os_release": osrelease.parse(release_text),
        "manifest": manifest,
        "dracut_modules": dracut_modules,
        "dracut_arguments": dracut_args,
        "entries": len(members),
        "files": [_member_json(m) for m in members],
    }


def _segment_json(s: Segment) -> dict[str, Any]:
    return {
        "offset": s.offset,
        "size": s.length,
        "compression": s.compression,
        "uncompressed": s.uncompressed,
        "entries": len(s.members),
        "files": sum(1 for m in s.members if stat.S_ISREG(m.mode)),
    }


def _member_json(m: Member) -> dict[str, Any]:
    d: dict[str, Any] = {"path": m.path, "mode": oct(m.mode), "size": m.size, "nlink": m.nlink}
    if m.linkto:
        d["linkto"] = m.linkto
    if stat.S_ISCHR(m.mode) or stat.S_ISBLK(m.mode):
        d["rdev"] = list(m.rdev)
    return d


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} B"


def format_member(m: dict[str, Any]) -> str:
    mode = int(m["mode"], 8)
    size = f"{m['rdev'][0]}, {m['rdev'][1]}" if "rdev" in m else str(m["size"])
    link = f" -> {m['linkto']}" if "linkto" in m else ""
    return f"{stat.filemode(mode)} {m['nlink']:>2} {size:>10} {m['path']}{link}"


def format_initrd(info: dict[str, Any], list_files: bool) -> str:
    lines = [f"Image: {info['path']}: {_mb(info['size'])}, {info['entries']} entries"]
    osr = info["os_release"]
    if osr:
        lines.append(f"OS: {osr.get('PRETTY_NAME') or osr.get('NAME', '?')}")
    lines.append("Segments:")
    for i, s in enumerate(info["segments"]):
        ratio = f" -> {_mb(s['uncompressed'])}" if s["compression"] != "none" else ""
        lines.append(
            f"  #{i} offset {s['offset']}: {s['compression']} {_mb(s['size'])}{ratio},"
            f" {s['entries']} entries ({s['files']} files)"
        )
    m = info["manifest"]
    if m:
        lines += _format_manifest(m)
    if info.get("dracut_arguments"):
        lines.append(f"dracut arguments: {info['dracut_arguments']}")
    if info["dracut_modules"]:
        lines.append(f"dracut modules: {' '.join(info['dracut_modules'])}")
    if list_files:
        lines.append("Files:")
        lines += [f"  {format_member(f)}" for f in info["files"]]
    return "\n".join(lines) + "\n"


def _format_manifest(m: dict[str, Any]) -> list[str]:
    lines = ["Manifest:"]
    if "error" in m:
        return [*lines, f"  {m['error']}"]
    gen = m.get("generator", {})
    built = m.get("build", {})
    lines.append(
        f"  built by {gen.get('name', '?')} {gen.get('version', '')} for kernel {m.get('kernel', '?')}"
    )
    opts = ", ".join(f"{k}={v}" for k, v in sorted(built.items()) if v not in ([], (), None, ""))
    if opts:
        lines.append(f"  options: {opts}")
    pkgs = m.get("packages", [])
    lines.append(f"  {len(pkgs)} packages: {' '.join(p.get('nevra', '?') for p in pkgs)}")
    mods = m.get("modules", [])
    lines.append(f"  {len(mods)} modules: {' '.join(x.get('name', '?') for x in mods)}")
    fw = m.get("firmware", [])
    if fw:
        lines.append(f"  {len(fw)} firmware files")
    return lines


def _print(info: dict[str, Any], text: str, as_json: bool) -> None:
    if as_json:
        json.dump(info, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text)


def inspect(path: Path, *, as_json: bool = False, list_files: bool = False, cert: Path | None = None) -> int:
    from mkosi_initrd.extensions.describe import describe_extension, format_extension, is_ddi

    if path.is_dir() and (path / "usr/lib/extension-release.d").is_dir() or path.is_file() and is_ddi(path):
        info = describe_extension(path, cert)
        _print(info, format_extension(info, list_files), as_json)
        return 0
    if not path.is_file():
        raise InitrdError(f"{path} does not exist or is not a file")

    if _is_pe(path):
        from mkosi_initrd.uki.describe import describe, format_description

        info = describe(path)
        if as_json:
            json.dump(info, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(format_description(info, list_files))
        return 0
    info = describe_initrd(path)
    if as_json:
        if not list_files:
            info = {k: v for k, v in info.items() if k != "files"}
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_initrd(info, list_files))
    return 0
