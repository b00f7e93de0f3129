"""Sysext support in the base initrd (planner/sysext.py, build/sysextcheck.py), planned from the Debian 13
root (systemd 257, kernel 6.12): what merging extensions needs goes in when asked for or when extensions
are configured, the unit is enabled for initrd.target with its drop-in, the trust certificate lands in
/usr/lib/verity.d/, and the pre-flight check fails an image that lacks any of it.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from fixtures.host import FakeHost
from fixtures.trixie import TrixieRoot
from fixtures.uki_inputs import make_keypair
from mkosi_initrd.build import check
from mkosi_initrd.cli import make_config, parse_args
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.plan.model import Entry, Plan
from mkosi_initrd.planner import sysext
from mkosi_initrd.planner.steps import make_plan

UNIT_LINK = "/usr/lib/systemd/system/initrd.target.wants/systemd-sysext.service"
DROPIN = "/usr/lib/systemd/system/systemd-sysext.service.d/10-mkosi-initrd.conf"
SYSEXT_MODULES = {"loop", "dm_mod", "dm_verity", "erofs", "squashfs", "overlay"}


def plan_of(trixie: TrixieRoot, *flags: str, root: Path | None = None) -> Plan:
    inv = parse_args(["plan", "--root", str(root or trixie.root), "-k", trixie.kver, *flags])
    return make_plan(make_config(inv))


def paths(plan: Plan) -> dict[str, object]:
    return {e.path: e for e in plan.entries}


@pytest.fixture(scope="module")
def with_support(trixie: TrixieRoot) -> Plan:
    return plan_of(trixie, "--generic", "--sysext-support")


def test_sysext_support_enables_systemd_sysext_for_initrd_target_on_systemd_257(with_support: Plan) -> None:
    entries = {e.path: e for e in with_support.entries}
    link = entries[UNIT_LINK]
    assert link.is_symlink and link.linkto == "../systemd-sysext.service"
    assert "/usr/lib/systemd/system/systemd-sysext.service" in entries  # systemd 257's one unit
    assert "/usr/lib/systemd/system/systemd-sysext-initrd.service" not in entries  # 258's
    dropin = entries[DROPIN].data or b""
    assert b"ExecStartPost=systemctl --no-block start initrd.target" in dropin
    assert b"ExecStop=systemd-sysext unmerge --no-reload" in dropin  # systemd >= 255
    assert "/usr/bin/systemd-sysext" in entries
    assert any(p.endswith("/libcryptsetup.so.12") for p in entries)
    assert "sysext" in with_support.profiles
    assert check.problems(with_support) == []


def test_sysext_support_takes_the_modules_merging_needs(with_support: Plan) -> None:
    chosen = {m.name: m.reason for m in with_support.modules}
    assert SYSEXT_MODULES <= set(chosen)
    assert chosen["dm_verity"] == "profile sysext: dm-verity"  # the profile's list, not only the default


def test_without_extensions_nothing_of_it_is_added(trixie: TrixieRoot) -> None:
    plan = plan_of(trixie, "--generic")
    entries = paths(plan)
    assert UNIT_LINK not in entries and DROPIN not in entries and "sysext" not in plan.profiles
    assert not any(p.startswith(sysext.VERITY_D) for p in entries)
    assert "/usr/bin/systemd-sysext" in entries  # the systemd package has it anyway: only not enabled


def test_the_verity_certificate_is_trusted_in_verity_d(trixie: TrixieRoot, tmp_path: Path) -> None:
    _key, cert = make_keypair(tmp_path, "verity")
    plan = plan_of(trixie, "--generic", "--verity-certificate", str(cert))  # turns support on by itself
    entry = {e.path: e for e in plan.entries}[f"{sysext.VERITY_D}/{sysext.CERT_NAME}"]
    assert entry.data == cert.read_bytes() and entry.mode & 0o777 == 0o644
    assert "sysext" in plan.profiles and UNIT_LINK in paths(plan)


@pytest.mark.parametrize("content", [None, b"not a certificate\n"], ids=["missing", "not-pem"])
def test_a_bad_verity_certificate_stops_the_plan_naming_it(
    trixie: TrixieRoot, tmp_path: Path, content: bytes | None
) -> None:
    cert = tmp_path / "verity.crt"
    if content is not None:
        cert.write_bytes(content)
    with pytest.raises(InitrdError) as err:
        plan_of(trixie, "--generic", "--verity-certificate", str(cert))
    assert str(cert) in err.value.message and err.value.hint


def test_extensions_declared_in_sysext_d_turn_support_on(tmp_path: Path) -> None:
    conf = tmp_path / "etc/mkosi-initrd/sysext.d/sshd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[Extension]\nPackages=openssh-server\n")
    config = sysext.with_sysext_profile(Config(root=tmp_path))
    assert config.profiles == ("sysext",) and config.sysext_support
    conf.unlink()
    assert sysext.with_sysext_profile(Config(root=tmp_path)).profiles == ()


def test_host_only_keeps_erofs_and_squashfs_with_sysext_support(trixie: TrixieRoot, tmp_path: Path) -> None:
    fake = FakeHost(tmp_path / "host")
    fake.mount(os.path.realpath(trixie.root), "0:99", "ext4", "/dev/vda")

    def modules(*flags: str) -> set[str]:
        cfg = fake.config(
            make_config(parse_args(["plan", "--root", str(trixie.root), "-k", trixie.kver, *flags]))
        )
        return {m.name for m in make_plan(cfg, read_needs=False).modules}

    plain, supported = modules(), modules("--sysext-support")
    assert not {"erofs", "squashfs"} & plain  # host-only omits them for a machine that does not mount them
    assert SYSEXT_MODULES <= supported


@pytest.mark.parametrize(
    ("drop", "problem"),
    [
        ("/libcryptsetup.so.12", "libcryptsetup.so.12 is not in the image"),
        ("/usr/bin/systemd-sysext", "/usr/bin/systemd-sysext is not in the image"),
        (UNIT_LINK, "is enabled for initrd.target"),
        ("/dm-verity.ko.xz", "module dm_verity is neither in the image"),
        ("/squashfs.ko.xz", ""),  # erofs is enough
    ],
)
def test_the_check_fails_an_image_that_cannot_merge(with_support: Plan, drop: str, problem: str) -> None:
    entries = tuple(e for e in with_support.entries if not e.path.endswith(drop))
    found = check.problems(dataclasses.replace(with_support, entries=entries))
    sysext_lines = [p for p in found if p.startswith("sysext support")]
    if problem:
        assert any(problem in p for p in sysext_lines), found
    else:
        assert sysext_lines == []


def test_the_check_does_not_ask_a_plain_initrd_for_any_of_it(trixie: TrixieRoot) -> None:
    plan = plan_of(trixie, "--generic")
    entries = tuple(e for e in plan.entries if not e.path.endswith("/libcryptsetup.so.12"))
    assert not [p for p in check.problems(dataclasses.replace(plan, entries=entries)) if "sysext" in p]


def test_the_setting_is_read_from_the_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "etc/mkosi-initrd/mkosi-initrd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[Extensions]\nSysextSupport=yes\n")
    config = make_config(parse_args(["plan", "--root", str(tmp_path), "-k", "1.0"]))
    assert config.sysext_support and sysext.wanted(config)
    assert not sysext.wanted(Config(root=tmp_path / "none"))


def test_systemd_258s_static_initrd_unit_gets_the_drop_in_and_no_symlink(with_support: Plan) -> None:
    unit = f"{sysext.UNIT_DIR}/{sysext.INITRD_UNIT}"
    static = Entry(
        f"{sysext.WANTS}/{sysext.INITRD_UNIT}", stat.S_IFLNK | 0o777, linkto=f"../{sysext.INITRD_UNIT}"
    )
    entries = (*with_support.entries, Entry(unit, stat.S_IFREG | 0o644, data=b"[Unit]\n", size=7), static)
    plan = dataclasses.replace(with_support, entries=tuple(e for e in entries if e.path != UNIT_LINK))
    added = {e.path: e for e in sysext.sysext_entries(Config(root=Path("/nonexistent")), plan, 258)}
    assert set(added) == {f"{unit}.d/{sysext.DROPIN_NAME}"}
    assert [p for p in check.problems(plan) if p.startswith("sysext support")] == []
