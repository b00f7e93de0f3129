"""The pre-flight check (build/check.py) on real plans of this host's packages and kernel: what it accepts,
what it rejects and how a rejected build ends (nothing written), and --no-check."""

from __future__ import annotations

import os
import random
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from fixtures.kernel import HostKernel
from mkosi_initrd.build import check
from mkosi_initrd.cli import main, make_config, parse_args
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.cpioread import read_segments
from mkosi_initrd.plan.model import Entry, Plan
from mkosi_initrd.planner import dlopen, needs
from mkosi_initrd.planner.steps import make_plan


@pytest.fixture(scope="module")
def kver(host_kernel: HostKernel) -> str:
    return host_kernel.kver


@pytest.fixture(scope="module")
def generic(kver: str) -> Plan:
    return make_plan(make_config(parse_args(["plan", "--generic", "-k", kver])))


def without(plan: Plan, *paths: str) -> Plan:
    """The plan without the entries of `paths` (what it read of their files stays, as it would)."""
    return replace(plan, entries=tuple(e for e in plan.entries if e.path not in paths))


def replaced(plan: Plan, entry: Entry) -> Plan:
    return replace(plan, entries=tuple(entry if e.path == entry.path else e for e in plan.entries))


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--generic",),
        ("--generic", *(a for p in ("lvm", "raid", "nfs", "network") for a in ("--profile", p))),
    ],
    ids=["host-only", "generic", "generic-with-profiles"],
)
def test_plans_of_this_host_pass(kver: str, args: tuple[str, ...]) -> None:
    plan = make_plan(make_config(parse_args(["plan", "-k", kver, *args])))
    assert plan.needs is not None and sum(n.elf for n in plan.needs.values()) > 100
    assert check.problems(plan) == []


def runpath(path: Path) -> list[str]:
    """DT_RUNPATH (else DT_RPATH) directories as pyelftools reads them: the oracle for elfdyn.py."""
    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
        except ELFError:
            return []
        dyn = elf.get_section_by_name(".dynamic")
        if not isinstance(dyn, DynamicSection):
            return []
        tags: list[Any] = list(dyn.iter_tags())
        paths = [str(t.runpath) for t in tags if t.entry.d_tag == "DT_RUNPATH"]
        paths = paths or [str(t.rpath) for t in tags if t.entry.d_tag == "DT_RPATH"]
    return [d for p in paths for d in p.split(":") if d]


def test_what_the_plan_read_of_each_elf_file_is_what_pyelftools_reads(generic: Plan) -> None:
    assert generic.needs is not None
    files = [e for e in generic.entries if e.source is not None and needs.wanted(e)]
    read = {e.path: generic.needs.get(e.path) for e in files}
    elf = [e for e in files if read[e.path] is not None and read[e.path].elf]  # type: ignore[union-attr]
    assert len(elf) > 100
    for e in files:
        got = read[e.path]
        assert e.source is not None
        want_needed, want_runpath = dlopen.needed(e.source), runpath(e.source)
        if got is None or not got.elf:
            assert want_needed == [], e.path
            continue
        assert (list(got.needed), list(got.runpath)) == (want_needed, want_runpath), e.path


def test_a_plan_without_libsystemd_shared_is_rejected_naming_it(generic: Plan) -> None:
    lib = next(e.path for e in generic.entries if "/libsystemd-shared-" in e.path and not e.is_symlink)
    found = check.problems(without(generic, lib))
    soname = os.path.basename(lib)
    assert len(found) == 1 and found[0].startswith(
        f"{soname} is not in the image; needed by {check.SYSTEMD}, "
    )
    with pytest.raises(InitrdError, match=f"would not boot; nothing was written:\n  - .*{soname}"):
        check.require_bootable(without(generic, lib))


def test_a_plan_without_scsi_id_is_rejected_naming_the_rule_that_runs_it(generic: Plan) -> None:
    found = check.problems(without(generic, "/usr/lib/udev/scsi_id"))
    assert found and all("runs /usr/lib/udev/scsi_id, which is not in the image" in p for p in found)
    assert any(p.startswith("/usr/lib/udev/rules.d/") and p.split()[0].endswith(".rules") for p in found)


def test_a_garbage_module_index_in_the_image_is_rejected(generic: Plan, kver: str) -> None:
    dep = f"/usr/lib/modules/{kver}/modules.dep"
    garbage = Entry(dep, stat.S_IFREG | 0o644, data=b"\x00garbage\xff\n" * 3, size=30, origin="kernel")
    (found,) = check.problems(replaced(generic, garbage))
    assert found.startswith(f"/usr/lib/modules/{kver}/modules.dep in the image is not a module index: ")


def test_a_module_file_the_image_index_does_not_list_is_rejected(generic: Plan, kver: str) -> None:
    dep = next(e for e in generic.entries if e.path == f"/usr/lib/modules/{kver}/modules.dep")
    assert dep.data is not None
    first, rest = dep.data.split(b"\n", 1)
    rel = first.split(b":")[0].decode()
    found = check.problems(replaced(generic, replace(dep, data=rest, size=len(rest))))
    assert (
        f"/usr/lib/modules/{kver}/modules.dep in the image does not list {rel}: modprobe cannot load it"
        in found
    )


def test_a_selected_module_that_is_not_in_the_image_is_rejected(generic: Plan, kver: str) -> None:
    ext4 = next(m for m in generic.modules if m.name == "ext4")
    found = check.problems(without(generic, f"/usr/lib/modules/{kver}/{ext4.path}"))
    kdir = f"/usr/lib/modules/{kver}"
    assert f"module ext4 ({ext4.reason}) was selected, but {kdir}/{ext4.path} is not in the image" in found
    assert f"generic: fs ext4: module ext4 is neither in the image nor built into kernel {kver}" in found


def test_init_must_lead_to_systemd(generic: Plan) -> None:
    elsewhere = Entry("/init", stat.S_IFLNK | 0o777, linkto="usr/bin/bash", origin="generated")
    assert check.problems(replaced(generic, elsewhere)) == [
        "/init leads to /usr/bin/bash, not to systemd (/usr/lib/systemd/systemd)"
    ]
    assert check.problems(without(generic, "/init"))[0].startswith("/init is missing")


def test_a_program_a_rule_runs_must_be_executable_and_its_interpreter_there(generic: Plan) -> None:
    rules = Entry(
        "/usr/lib/udev/rules.d/99-test.rules",
        stat.S_IFREG | 0o644,
        data=b'ACTION=="add", RUN+="test-helper $kernel"\n# RUN+="/not/read"\n',
        size=1,
        origin="generated",
    )
    script = Entry("/usr/lib/udev/test-helper", stat.S_IFREG | 0o644, data=b"#!/usr/bin/perl\n", size=16)
    plan = replace(generic, entries=(*generic.entries, rules, script))
    plan = replace(plan, needs={**(generic.needs or {}), **needs.scan([rules, script])})
    assert check.missing_programs(plan.needs or {}, check.InPlan(plan.entries)) == [
        f"{rules.path} runs /usr/lib/udev/test-helper, which is not an executable file in the image"
    ]
    plan = replaced(plan, replace(script, mode=stat.S_IFREG | 0o755))
    assert check.missing_programs(plan.needs or {}, check.InPlan(plan.entries)) == [
        "/usr/lib/udev/test-helper is a script for /usr/bin/perl, which is not in the image"
    ]


def test_unit_programs_skip_ignored_failures_and_units_whose_condition_fails() -> None:
    unit = """[Unit]
ConditionPathExists=/etc/never
ConditionPathExists=!/etc/initrd-release
[Service]
ExecStartPre=-/bin/plymouth quit
ExecStart=@/usr/bin/foo foo-name --opt \\
    "quoted ; arg" ; /usr/bin/bar
ExecStop=%h/specifier
ExecReload=
"""
    assert needs.unit_programs(unit) == ["/usr/bin/foo", "/usr/bin/bar"]
    assert needs.unit_conditions(unit) == ["/etc/never", "!/etc/initrd-release"]
    entry = Entry("/usr/lib/systemd/system/t.service", stat.S_IFREG | 0o644, data=unit.encode(), size=1)
    image = check.InPlan([entry])
    assert check.run_programs(needs.scan([entry]), image) == []  # /etc/never is not in the image


def test_a_unit_that_never_runs_in_an_initrd_needs_nothing_there() -> None:
    # systemd 257's quotaon-root.service: ExecStart=/usr/sbin/quotaon, but not where initrd-release is.
    unit = "[Unit]\nConditionPathExists=!/etc/initrd-release\n[Service]\nExecStart=/usr/sbin/quotaon -ug /\n"
    entry = Entry("/usr/lib/systemd/system/q.service", stat.S_IFREG | 0o644, data=unit.encode(), size=1)
    release = Entry("/etc/initrd-release", stat.S_IFREG | 0o644, data=b"ID=x\n", size=5)
    found = needs.scan([entry])
    assert check.run_programs(found, check.InPlan([entry, release])) == []
    # Without /etc/initrd-release the unit would run: its program is then needed.
    assert check.run_programs(found, check.InPlan([entry])) == [(entry.path, "/usr/sbin/quotaon")]


def test_the_index_of_the_kernel_is_not_taken_for_a_program(generic: Plan) -> None:
    # Modules, firmware and /usr/share are not read (nothing there runs).
    assert not any(
        p.startswith(("/usr/lib/modules/", "/usr/lib/firmware/", "/usr/share/")) for p in generic.needs or {}
    )


# --- a build that fails the check


def removable_owner(plan: Plan, path_part: str) -> str:
    nevra = next(e.origin for e in plan.entries if path_part in e.path)
    name = next(p.name for p in plan.packages if p.nevra == nevra)
    if name == "systemd":
        pytest.skip("libsystemd-shared is systemd's own here: removing it removes systemd")
    return name


def test_a_build_that_fails_the_check_writes_nothing_and_no_check_writes_and_says_so(
    generic: Plan, kver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = removable_owner(generic, "/libsystemd-shared-")
    out = tmp_path / "initrd"
    out.write_bytes(b"previous initrd")
    args = ["-k", kver, "--generic", "--remove-package", owner, "-o", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"the image for kernel {kver} would not boot; nothing was written:" in err
    assert "  - libsystemd-shared-" in err and f"needed by {check.SYSTEMD}, " in err
    assert "Traceback" not in err
    assert out.read_bytes() == b"previous initrd" and sorted(os.listdir(tmp_path)) == ["initrd"]
    cache = Path(os.environ["MKOSI_INITRD_CACHE_DIR"])
    before = set(os.listdir(cache)) if cache.is_dir() else set()

    assert main([*args, "--no-check"]) == 0
    captured = capsys.readouterr()
    assert "NOT checked: --no-check or Check=no" in captured.out
    assert "pre-flight check is off" in captured.err
    assert read_segments(out)[0]  # a whole image
    assert (set(os.listdir(cache)) if cache.is_dir() else set()) == before  # unchecked: not cached


def test_a_directory_is_not_a_program(generic: Plan) -> None:
    # /usr/lib/udev is a directory: udev cannot run it (and the check must not trip over it).
    rules = Entry(
        "/usr/lib/udev/rules.d/99-dir.rules", stat.S_IFREG | 0o644, data=b'RUN+="/usr/lib/udev"\n', size=1
    )
    image = check.InPlan((*generic.entries, rules))
    udev = image.entry("/usr/lib/udev")
    assert udev is None or udev.is_dir
    found = check.missing_programs(needs.scan([rules]), image)
    assert found == [f"{rules.path} runs /usr/lib/udev, which is not an executable file in the image"]


def test_damaged_elf_headers_are_read_without_an_error(tmp_path: Path) -> None:
    # Every field of the first 4 KiB of a real program garbled in turn (seeded): the reader gives an
    # answer or none, never an exception, and never reads beyond its limits.
    rng = random.Random(14)
    program = Path(check.SYSTEMD).read_bytes()[: 1 << 16]
    for i in range(300):
        data = bytearray(program)
        for _ in range(rng.randrange(1, 9)):
            at = rng.randrange(4096)
            data[at : at + 8] = rng.randbytes(8)
        path = tmp_path / f"elf{i}"
        path.write_bytes(bytes(data))
        entry = Entry(f"/usr/bin/elf{i}", stat.S_IFREG | 0o755, source=path, size=len(data))
        found = needs.file_needs(entry)
        assert found is None or isinstance(found.needed, tuple)
