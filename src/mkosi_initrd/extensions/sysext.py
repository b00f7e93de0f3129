"""`mkosi-initrd sysext NAME`: a system extension for the initrd made from installed packages.

The base is the plan for the same root, kernel and configuration (or an existing initrd, --base);
the extension is the plan with NAME's packages, modules and files added, minus what the base holds
as it is (content.py). /usr and /opt go into NAME.sysext.raw, /etc into a companion NAME.confext.raw
(systemd >= 255 merges confexts from the UKI's .extra.d too). Images are DDIs (ddi.py); a directory
is for local, trusted use (/run/extensions)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.extensions.content import BaseFile, Content, base_from_plan, extension_content
from mkosi_initrd.extensions.ddi import make_ddi
from mkosi_initrd.extensions.release import release_path, release_text
from mkosi_initrd.extensions.tree import write_tree
from mkosi_initrd.osrelease import parse
from mkosi_initrd.plan.model import Plan
from mkosi_initrd.scratch import ScratchDir

FORMATS = ("raw", "directory")
RELEASE_FILES = ("/usr/lib/os-release", "/etc/initrd-release", "/etc/os-release")


@dataclass(frozen=True)
class SysextRequest:
    name: str
    config: Config  # the base's configuration
    output: Path
    packages: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # SRC[:DEST]
    fmt: str = "raw"
    key: Path | None = None
    cert: Path | None = None
    base: Path | None = None  # an existing initrd instead of the base's plan


@dataclass(frozen=True)
class Made:
    path: Path
    kind: str  # "sysext" or "confext"
    files: tuple[str, ...]
    signed: bool

    def size(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file() and not f.is_symlink())


def _check(req: SysextRequest) -> None:
    if not req.name or "/" in req.name or req.name.startswith("."):
        raise InitrdError(f"bad extension name {req.name!r}", hint="a plain name such as sshd")
    if (req.key is None) != (req.cert is None):
        raise InitrdError(
            "--verity-key and --verity-certificate go together",
            hint="give both to sign the image, or neither for an unsigned one",
        )
    for p in (req.key, req.cert, req.base):
        if p is not None and not p.is_file():
            raise InitrdError(f"{p} does not exist", hint="check the path")
    if req.fmt == "directory" and req.key is not None:
        raise InitrdError(
            "a directory extension cannot be signed",
            hint="use --format raw for a signed image, or drop the verity key",
        )
    if not req.output.parent.is_dir():
        raise InitrdError(f"output directory {req.output.parent} does not exist", hint="create it first")


def _planner(req: SysextRequest) -> Callable[[Config], Plan]:
    """Without added modules, the kernel part of base and extension is the same: the package plans
    alone tell them apart, at half the cost."""
    from mkosi_initrd.planner.steps import make_package_plan, make_plan

    return (lambda c: make_plan(c, read_needs=False)) if req.modules else make_package_plan


def base_files(req: SysextRequest) -> dict[str, BaseFile]:
    if req.base is not None:
        from mkosi_initrd.image.cpioread import iter_members, read_segments

        segments, contents = read_segments(req.base, want=lambda p: True)
        members = list(iter_members(segments))
        # newc hardlinks: the data comes with one member of the group (the last), the others are empty
        linked = {m.ino: contents[m.path] for m in members if m.nlink > 1 and m.size and m.path in contents}
        return {
            m.path: BaseFile(m.mode, m.linkto, linked.get(m.ino, contents.get(m.path)) if m.nlink > 1
                             else contents.get(m.path), None, m.size)
            for m in members
        }  # fmt: skip
    return base_from_plan(_planner(req)(req.config).entries)


def full_config(req: SysextRequest) -> Config:
    c = req.config
    return dataclasses.replace(
        c,
        packages=(*c.packages, *req.packages),
        added_packages=(*c.added_packages, *req.packages),
        modules=(*c.modules, *req.modules),
    )


def _base_release(base: dict[str, BaseFile]) -> dict[str, str]:
    for path in RELEASE_FILES:
        f = base.get(path)
        if f is not None and (f.data is not None or f.source is not None):
            text = f.data if f.data is not None else f.source.read_bytes()  # type: ignore[union-attr]
            return parse(text.decode(errors="replace"))
    raise InitrdError("the base initrd has no os-release", hint="pass an initrd built by mkosi-initrd")


def _extra_files(specs: tuple[str, ...]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for spec in specs:
        src, _, dest = spec.partition(":")
        dest = dest or src
        if not dest.startswith(("/usr/", "/opt/", "/etc/")):
            raise InitrdError(
                f"--files {spec}: {dest} is outside /usr, /opt and /etc",
                hint="an extension carries /usr and /opt (and /etc in its confext)",
            )
        try:
            out[dest] = Path(src).read_bytes()
        except OSError as e:
            raise InitrdError(
                f"--files {spec}: cannot read {src}: {e.strerror}", hint="check the path"
            ) from e
    return out


def content_of(req: SysextRequest) -> tuple[Content, dict[str, bytes], dict[str, str]]:
    base = base_files(req)
    full = _planner(req)(full_config(req))
    if full.errors:
        raise InitrdError(
            f"the extension {req.name}: {'; '.join(full.errors)}",
            hint="reinstall the packages named, or leave them out",
        )
    content = extension_content(full.entries, base)
    extra = _extra_files(req.files)
    if not content.usr and not any(p.startswith(("/usr/", "/opt/")) for p in extra):
        raise InitrdError(
            f"the extension {req.name} would be empty: the base initrd already holds "
            f"{' '.join(req.packages + req.modules) or 'everything asked for'}",
            hint="name packages or modules the base initrd lacks",
        )
    return content, extra, _base_release(base)


def build_sysext(req: SysextRequest) -> list[Made]:
    """Write NAME's sysext (and its confext where it has /etc files); what was made."""
    _check(req)
    content, extra, os_release = content_of(req)
    arch = os.uname().machine
    made: list[Made] = []
    with ScratchDir("mkosi-initrd-sysext-") as scratch:
        parts = [
            (
                "sysext",
                content.usr,
                {k: v for k, v in extra.items() if not k.startswith("/etc/")},
                req.output,
            )
        ]
        if content.etc or any(k.startswith("/etc/") for k in extra):
            parts.append(
                (
                    "confext",
                    content.etc,
                    {k: v for k, v in extra.items() if k.startswith("/etc/")},
                    confext_path(req.output, req.name, req.fmt),
                )
            )
        for kind, entries, files, out in parts:
            files = {**files, release_path(req.name, kind): release_text(os_release, arch, kind).encode()}
            tree = scratch / kind
            listing = write_tree(entries, tree, files, req.config.source_date_epoch)
            _place(tree, kind, out, req, listing)
            made.append(Made(out, kind, tuple(listing), req.key is not None))
    return made


def confext_path(output: Path, name: str, fmt: str) -> Path:
    return output.with_name(f"{name}.confext.raw" if fmt == "raw" else f"{name}.confext")


def _place(tree: Path, kind: str, out: Path, req: SysextRequest, listing: list[str]) -> None:
    if req.fmt == "raw":
        make_ddi(
            tree,
            kind,
            out,
            name=req.name,
            listing=listing,
            epoch=req.config.source_date_epoch,
            key=req.key,
            cert=req.cert,
        )
        return
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(tree, tmp, symlinks=True)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
