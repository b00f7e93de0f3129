"""Plans follow .note.dlopen: a library an included program dlopen()s comes in with its package."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixtures.cache import cached
from fixtures.rpmspecs import SPECS, Spec, rpm_root
from mkosi_initrd.cli import main
from mkosi_initrd.plan.model import Entry
from mkosi_initrd.planner.dlopen import Fallback, dlopen_libraries
from mkosi_initrd.resources import read_list

TOOL_C = r"""
#include <stdint.h>
#define JSON "[{\"feature\":\"fx-unlock\",\"description\":\"unlocking\",\"priority\":\"recommended\"," \
             "\"soname\":[\"libfxdl.so.1\"]},{\"feature\":\"absent\",\"soname\":[\"libnowhere.so.7\"]}]"
struct __attribute__((packed)) note {
    uint32_t namesz, descsz, type; char name[4]; char desc[(sizeof(JSON) + 3) & ~3];
};
__attribute__((used, section(".note.dlopen"), aligned(4)))
static const struct note n = { 4, sizeof(JSON), 0x407c0c0a, "FDO", JSON };
int main(void) { return 0; }
"""


def _elves() -> Path:
    """The tool with the note, the dlopen()ed library and the library that one needs (cached)."""

    def build(d: Path) -> None:
        (d / "tool.c").write_text(TOOL_C)
        (d / "dep.c").write_text("int fxdep(void) { return 1; }\n")
        (d / "dl.c").write_text("int fxdep(void); int fxdl(void) { return fxdep(); }\n")
        gcc = ["gcc", "-O2"]
        subprocess.run([*gcc, "-o", d / "fx-dltool", d / "tool.c"], check=True)
        subprocess.run([*gcc, "-shared", "-fPIC", "-Wl,-soname,libfxdep.so.1", "-o", d / "libfxdep.so.1",
                        d / "dep.c"], check=True)  # fmt: skip
        subprocess.run([*gcc, "-shared", "-fPIC", "-Wl,-soname,libfxdl.so.1", "-o", d / "libfxdl.so.1",
                        d / "dl.c", "-L", d, "-l:libfxdep.so.1"], check=True)  # fmt: skip

    return cached("dlopen-elves", [TOOL_C, "1"], build)


def _spec(name: str, src: Path, dest: str) -> Spec:
    return Spec(
        name,
        # ELF files in this fixture's noarch packages; no dependencies declared on purpose: only the
        # note (and the library's DT_NEEDED) can bring the libraries in.
        deps=("%global _binaries_in_noarch_packages_terminate_build 0",),
        extra_install=f"install -D -m 0755 {src} %{{buildroot}}{dest}\n",
        extra_files=dest,
    )


@pytest.fixture(scope="module")
def root() -> Path:
    elves = _elves()
    specs = (
        _spec("fx-dltool", elves / "fx-dltool", "/usr/bin/fx-dltool"),
        _spec("fx-dllib", elves / "libfxdl.so.1", "/usr/lib64/libfxdl.so.1"),
        _spec("fx-dldep", elves / "libfxdep.so.1", "/usr/lib64/libfxdep.so.1"),
    )
    return rpm_root(SPECS + specs, name="rpmroot-dlopen")


def _plan(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["plan", "-k", "1.0", "--json", "--root", str(root), *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_dlopen_notes_bring_the_library_package_and_what_it_needs(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without = {p["name"] for p in _plan(root, capsys)["packages"]}
    assert not {"fx-dltool", "fx-dllib", "fx-dldep"} & without
    reasons = {p["name"]: p["reason"] for p in _plan(root, capsys, "--add-package", "fx-dltool")["packages"]}
    assert {"fx-dltool", "fx-dllib", "fx-dldep"} <= set(reasons)
    assert reasons["fx-dllib"][0] == "dlopen:/usr/lib64/libfxdl.so.1"
    assert reasons["fx-dldep"][0] == "dlopen:/usr/lib64/libfxdep.so.1"  # the dlopen()ed library's DT_NEEDED


# --- loaders that declare nothing: resources/dlopen.list, by soname

NOTED_LOADER_C = TOOL_C.replace("int main(void) { return 0; }", "int loader(void) { return 0; }")


def _loader_root() -> Path:
    """A root with two loaders named like systemd's shared library (one with a note, one without),
    a transport loader that only comes in as a wanted library's DT_NEEDED, and the libraries."""

    def build(d: Path) -> None:
        lib = d / "usr/lib64"
        lib.mkdir(parents=True)
        (d / "noted.c").write_text(NOTED_LOADER_C)
        (d / "plain.c").write_text("int loader(void) { return 0; }\n")
        (d / "leaf.c").write_text("int leaf(void) { return 2; }\n")
        (d / "ldr.c").write_text("int ldr(void) { return 3; }\n")
        (d / "want.c").write_text("int ldr(void); int want(void) { return ldr(); }\n")
        so = ["gcc", "-O2", "-shared", "-fPIC"]
        for name, src, extra in (
            ("libsystemd-shared-999.so", "noted.c", []),
            ("libsystemd-shared-252.so", "plain.c", []),
            ("libfxleaf.so.1", "leaf.c", []),
            ("libfxtctildr.so.0", "ldr.c", []),
            ("libfxwant.so.1", "want.c", ["-L", str(lib), "-l:libfxtctildr.so.0"]),
        ):
            subprocess.run([*so, f"-Wl,-soname,{name}", "-o", lib / name, d / src, *extra], check=True)
        for f in ("noted.c", "plain.c", "leaf.c", "ldr.c", "want.c"):
            (d / f).unlink()

    return cached("dlopen-loaders", [NOTED_LOADER_C, "1"], build)


def _entry(root: Path, name: str) -> Entry:
    path = f"/usr/lib64/{name}"
    return Entry(path, 0o100755, source=root / path.lstrip("/"))


def test_a_loader_without_notes_gets_its_sonames_from_the_list() -> None:
    root = _loader_root()
    undeclared = Fallback.parse("libsystemd-shared-*.so undeclared fx libnowhere.so.9 libfxwant.so.1")
    wanted, unmet = dlopen_libraries(root, [_entry(root, "libsystemd-shared-252.so")], [undeclared])
    # The first installed alternative, and what it needs.
    assert wanted == ["/usr/lib64/libfxtctildr.so.0", "/usr/lib64/libfxwant.so.1"] and not unmet
    # A loader with notes is taken at its word: its note wants libfxdl (not installed here), not the list.
    wanted, unmet = dlopen_libraries(root, [_entry(root, "libsystemd-shared-999.so")], [undeclared])
    assert wanted == [] and {n.feature for n in unmet} == {"fx-unlock", "absent"}
    # No loader in the initrd, no line.
    assert dlopen_libraries(root, [_entry(root, "libfxleaf.so.1")], [undeclared]) == ([], [])


def test_always_lines_apply_to_noted_loaders_and_to_loaders_that_came_in_as_needed() -> None:
    root = _loader_root()
    fallbacks = [
        Fallback.parse("libsystemd-shared-*.so always fx-want libfxwant.so.1"),
        # libfxtctildr is not in the initrd: it comes as libfxwant's DT_NEEDED, then its line counts.
        Fallback.parse("libfxtctildr.so.* always fx-leaf libfxleaf.so.1"),
    ]
    wanted, _ = dlopen_libraries(root, [_entry(root, "libsystemd-shared-999.so")], fallbacks)
    libs = ("libfxleaf.so.1", "libfxtctildr.so.0", "libfxwant.so.1")
    assert wanted == [f"/usr/lib64/{name}" for name in libs]


def test_the_shipped_dlopen_list_parses() -> None:
    lines = [Fallback.parse(line) for line in read_list("dlopen.list")]
    sonames = {s for f in lines for s in f.sonames}
    assert {"libcryptsetup.so.12", "libtss2-esys.so.0", "libfido2.so.1"} <= sonames
    with pytest.raises(ValueError, match="bad line"):
        Fallback.parse("libx.so sometimes fx liby.so.1")
