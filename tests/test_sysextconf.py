"""Extension definitions (/etc/mkosi-initrd/sysext.d/NAME.conf, config/sysextconf.py): read and checked
before anything is built; the base initrd trusts each one's certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.trixie import TrixieRoot
from fixtures.uki_inputs import make_keypair
from mkosi_initrd.cli import make_config, parse_args
from mkosi_initrd.config.model import Config
from mkosi_initrd.config.sysextconf import SysextDef, read_definitions
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.plan.model import Plan
from mkosi_initrd.planner import sysext
from mkosi_initrd.planner.steps import make_plan


@pytest.fixture
def root(tmp_path: Path) -> Path:
    keys = tmp_path / "etc/mkosi-initrd"
    (keys / "sysext.d").mkdir(parents=True)
    make_keypair(keys, "verity")
    return tmp_path


def define(root: Path, name: str, text: str) -> Path:
    path = root / "etc/mkosi-initrd/sysext.d" / f"{name}.conf"
    path.write_text(text)
    return path


SIGNED = "VerityKey=/etc/mkosi-initrd/verity.key\nVerityCertificate=/etc/mkosi-initrd/verity.crt\n"


def test_a_definition_gives_its_packages_modules_files_and_keys(root: Path) -> None:
    path = define(
        root, "sshd", f"[Extension]\nPackages=openssh-server\nPackages=less\nModules=wireguard\n{SIGNED}"
    )
    assert read_definitions(root) == [
        SysextDef(
            "sshd", path, ("openssh-server", "less"), ("wireguard",), (),
            Path("/etc/mkosi-initrd/verity.key"), Path("/etc/mkosi-initrd/verity.crt"),
        )
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("sshd", "[Extension]\nPackages=openssh-server\n", "is not signed"),
        ("sshd", f"[Extension]\n{SIGNED}", "carries nothing"),
        ("sshd", f"[Extension]\nPackage=openssh-server\n{SIGNED}", "unknown setting [Extension] Package="),
        ("sshd", f"[Sysext]\nPackages=x\n{SIGNED}", "unknown setting [Sysext] Packages="),
        ("sshd", "[Extension]\nPackages=x\nVerityKey=k.pem\nVerityCertificate=/c\n", "must be absolute"),
        ("sshd", "[Extension]\nPackages=x\n" + SIGNED.replace("/etc/mkosi-initrd/verity.key", "/nope.key"),
         "VerityKey=/nope.key does not exist"),
        ("-bad", f"[Extension]\nPackages=x\n{SIGNED}", "is not an extension name"),
        ("sshd.sysext", f"[Extension]\nPackages=x\n{SIGNED}", "is not an extension name"),
    ],
)  # fmt: skip
def test_a_bad_definition_is_refused_naming_the_file(root: Path, name: str, text: str, message: str) -> None:
    path = define(root, name, text)
    with pytest.raises(InitrdError) as err:
        read_definitions(root)
    assert str(path) in err.value.message and message in err.value.message, err.value.message


def test_the_base_trusts_each_definitions_certificate_and_a_bad_one_stops_the_plan(
    root: Path, trixie_support_plan: Plan
) -> None:
    define(root, "sshd", f"[Extension]\nPackages=openssh-server\n{SIGNED}")
    entries = {e.path: e for e in sysext.sysext_entries(Config(root=root), trixie_support_plan, 257)}
    assert entries["/usr/lib/verity.d/sshd.crt"].data == (root / "etc/mkosi-initrd/verity.crt").read_bytes()
    define(root, "broken", "[Extension]\nPackages=x\n")
    with pytest.raises(InitrdError, match="broken.conf"):
        sysext.sysext_entries(Config(root=root), trixie_support_plan, 257)


@pytest.fixture(scope="module")
def trixie_support_plan(trixie: TrixieRoot) -> Plan:
    argv = ["plan", "--root", str(trixie.root), "-k", trixie.kver, "--generic", "--sysext-support"]
    return make_plan(make_config(parse_args(argv)), read_needs=False)
