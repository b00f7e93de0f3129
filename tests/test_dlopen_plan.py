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
