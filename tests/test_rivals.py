"""Plugins that stage another generator's initrd, found by their code: the real plugins of Debian 13's
systemd, systemd-ukify, dracut and mkosi packages, and of this Debian 12 host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures import trixie as trixie_fixture
from fixtures.trixie import TrixieRoot
from mkosi_initrd.kernel_install import rivals

HOST_PLUGINS = Path("/usr/lib/kernel/install.d")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged() -> Path:
    """install.d of trixie's dracut, mkosi and systemd-ukify packages (unpacked, not installed)."""
    return (
        trixie_fixture.unpacked_packages("dracut-core", "mkosi", "systemd-ukify")
        / "usr/lib/kernel/install.d"
    )


def verdicts(plugins: list[Path], kver: str, boot: Path) -> dict[str, str | None]:
    return {p.name: rivals.classify(p.read_text(), kver, boot) for p in plugins}


def test_trixies_systemd_plugins_only_55_initrd_stages_initramfs_tools_image(trixie: TrixieRoot) -> None:
    plugins = sorted((trixie.root / "usr/lib/kernel/install.d").iterdir())
    boot = trixie.root / "boot"  # initramfs-tools made initrd.img-KVER when the kernel was installed
    assert verdicts(plugins, trixie.kver, boot) == {
        "50-depmod.install": None,
        "55-initrd.install": f"stages {boot}/initrd.img-{trixie.kver}",
        "90-loaderentry.install": None,  # reads initrd* from the staging area: the consumer
        "90-uki-copy.install": None,
    }
    # No image for this kernel: the plugin stages nothing, nothing to warn about.
    assert (
        rivals.classify(
            (trixie.root / "usr/lib/kernel/install.d/55-initrd.install").read_text(), "0.0", boot
        )
        is None
    )


def test_dracut_and_ukify_step_aside_mkosi_acts_on_our_generator_name(
    packaged: Path, tmp_path: Path
) -> None:
    assert verdicts(sorted(packaged.iterdir()), "6.12", tmp_path) == {
        "50-dracut.install": None,  # ${KERNEL_INSTALL_INITRD_GENERATOR:-dracut} = dracut, else exit 0
        "51-dracut-rescue.install": None,
        "50-mkosi.install": "runs mkosi",  # initrd_generator in ("mkosi", "mkosi-initrd")
        "51-mkosi-addon.install": None,  # builds an addon, no initrd
        "60-ukify.install": None,
    }


def test_a_dracut_that_ignores_the_generator_setting_is_a_rival(packaged: Path, tmp_path: Path) -> None:
    # dracut before 057 did not look at initrd_generator: the same plugin without that test.
    code = (packaged / "50-dracut.install").read_text()
    lines = code.splitlines()
    start = next(i for i, line in enumerate(lines) if "KERNEL_INSTALL_INITRD_GENERATOR" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "fi")
    old_dracut = "\n".join(lines[:start] + ['IMAGE="initrd"'] + lines[end + 1 :])
    assert "INITRD_GENERATOR" not in old_dracut
    assert rivals.classify(old_dracut, "6.12", tmp_path) == "runs dracut"


@pytest.mark.skipif(not (HOST_PLUGINS / "85-initrd.install").exists(), reason="not Debian 12's systemd")
def test_debian_12s_85_initrd_is_the_same_rival_under_its_old_name(tmp_path: Path) -> None:
    (tmp_path / "initrd.img-6.1.0-x").write_bytes(b"initramfs-tools")
    found = verdicts(sorted(HOST_PLUGINS.glob("*.install")), "6.1.0-x", tmp_path)
    assert found["85-initrd.install"] == f"stages {tmp_path}/initrd.img-6.1.0-x"
    assert [name for name, why in found.items() if why] == ["85-initrd.install"]


def test_found_by_code_not_name_with_the_command_that_masks_each(
    trixie: TrixieRoot, packaged: Path, tmp_path: Path
) -> None:
    etc, usr = tmp_path / "etc", tmp_path / "usr"
    etc.mkdir()
    usr.mkdir()
    debian = (trixie.root / "usr/lib/kernel/install.d/55-initrd.install").read_text()
    for d, name, text in (
        (usr, "20-renamed.install", debian),  # Debian's plugin under another name
        (usr, "50-mkosi.install", (packaged / "50-mkosi.install").read_text()),
        (etc, "60-local.install", debian),  # the admin's own copy
        (
            usr,
            "90-loaderentry.install",
            (trixie.root / "usr/lib/kernel/install.d/90-loaderentry.install").read_text(),
        ),
    ):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    found = rivals.find(trixie.kver, (etc, usr), boot=trixie.root / "boot")
    assert [(r.plugin.name, r.evidence.split()[0]) for r in found] == [
        ("20-renamed.install", "stages"),
        ("50-mkosi.install", "runs"),
        ("60-local.install", "stages"),
    ]
    # Outside the standard directories only the plugin list names it; in them, the usual masks.
    assert found[0].masking_command == f"remove {usr}/20-renamed.install from $KERNEL_INSTALL_PLUGINS"
    std = [rivals.Rival(Path("/usr/lib/kernel/install.d/55-initrd.install"), "x"),
           rivals.Rival(Path("/etc/kernel/install.d/60-local.install"), "x")]  # fmt: skip
    assert [r.masking_command for r in std] == [
        "ln -s /dev/null /etc/kernel/install.d/55-initrd.install",
        "mv /etc/kernel/install.d/60-local.install /etc/kernel/install.d/60-local.install.disabled",
    ]
    assert std[0].warning().endswith("Mask it with: ln -s /dev/null /etc/kernel/install.d/55-initrd.install")
    # Masked the way the warning says (a link to /dev/null in the directory searched first): gone.
    (etc / "20-renamed.install").symlink_to("/dev/null")
    os.rename(etc / "60-local.install", etc / "60-local.install.disabled")
    assert [r.plugin.name for r in rivals.find(trixie.kver, (etc, usr), boot=trixie.root / "boot")] == [
        "50-mkosi.install"
    ]


def test_initrds_staged_before_ours_are_named(tmp_path: Path) -> None:
    for name in ("initrd", "microcode", "initrd.img-6.12", "linux"):
        (tmp_path / name).write_bytes(b"x")
    assert rivals.foreign_staged(tmp_path, ["initrd", "microcode"]) == [tmp_path / "initrd.img-6.12"]
