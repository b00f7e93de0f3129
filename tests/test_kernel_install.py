"""The kernel-install plugin, run by the real /usr/bin/kernel-install (systemd 252 here).

Everything kernel-install touches is redirected to temporary directories: KERNEL_INSTALL_CONF_ROOT
(install.conf), BOOT_ROOT, MACHINE_ID and KERNEL_INSTALL_PLUGINS (our install.d script, systemd's own
90-loaderentry.install, and a probe that records the staging area). Nothing under the real /boot or
/etc is written.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from fixtures.kernel import HostKernel
from mkosi_initrd.kernel_install import plugin, policy, rivals

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "install.d/50-mkosi-initrd.install"
KERNEL_INSTALL = Path("/usr/bin/kernel-install")
LOADERENTRY = Path("/usr/lib/kernel/install.d/90-loaderentry.install")
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
MACHINE_ID = "0123456789abcdef0123456789abcdef"
MISSING_KVER = "0.0.0-no-such-kernel"


def needs_kernel_install(test: Callable[..., None]) -> Callable[..., None]:
    """Runs the real systemd kernel-install (.ci/run counts these tests)."""
    missing = pytest.mark.skipif(
        not KERNEL_INSTALL.exists(),
        reason=f"missing prerequisite: {KERNEL_INSTALL} (apt-get install systemd)",
    )
    return pytest.mark.kernel_install(missing(test))  # type: ignore[no-any-return]


# Records what the plugins before it left in the staging area, and that it ran at all (a plugin exiting
# 77 would stop kernel-install before it).
PROBE = """#!/bin/sh
mkdir -p "$PROBE_DIR/staging"
cp -a "$KERNEL_INSTALL_STAGING_AREA/." "$PROBE_DIR/staging/"
echo "$1 $2" >>"$PROBE_DIR/ran"
"""

# Stands in for mkosi's own plugin: it writes $STAGING/initrd after us.
FAKE_MKOSI = """#!/bin/sh
[ "$1" = add ] && echo mkosi >"$KERNEL_INSTALL_STAGING_AREA/initrd"
exit 0
"""


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@dataclass
class KernelInstall:
    tmp: Path
    conf_root: Path
    boot: Path
    probe: Path
    plugins: list[Path]

    def configure(self, text: str) -> None:
        (self.conf_root / "install.conf").write_text(text)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_INSTALL_", "MKOSI_INITRD"))}
        env.pop("BOOT_ROOT", None)
        env.update(
            KERNEL_INSTALL_CONF_ROOT=str(self.conf_root),
            KERNEL_INSTALL_PLUGINS=" ".join(map(str, self.plugins)),
            BOOT_ROOT=str(self.boot),
            MACHINE_ID=MACHINE_ID,
            MKOSI_INITRD_PYTHON=sys.executable,
            PYTHONPATH=str(REPO / "src"),
            PROBE_DIR=str(self.probe),
            TMPDIR=str(self.tmp),  # kernel-install's staging area
        )
        env.update(extra)
        return env

    def run(self, *args: str | Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KERNEL_INSTALL), *map(str, args)],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=600,
        )

    @property
    def staged(self) -> list[str]:
        staging = self.probe / "staging"
        return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []

    @property
    def probe_ran(self) -> bool:
        return (self.probe / "ran").exists()

    def entry(self, kver: str) -> Path:
        return self.boot / "loader/entries" / f"{MACHINE_ID}-{kver}.conf"

    def entry_dir(self, kver: str) -> Path:
        return self.boot / MACHINE_ID / kver

    def initrd_line(self, path: Path) -> str:
        """How 90-loaderentry names a file in an entry: relative to the mount point holding $BOOT_ROOT."""
        mount = subprocess.run(
            ["stat", "-c", "%m", self.boot], capture_output=True, text=True
        ).stdout.strip()
        shown = path if mount == "/" else Path("/") / path.relative_to(mount)
        return f"initrd     {shown}"


@pytest.fixture
def kinst(tmp_path: Path) -> KernelInstall:
    conf_root, boot, probe = tmp_path / "conf", tmp_path / "boot", tmp_path / "probe"
    for d in (conf_root, boot, probe):
        d.mkdir()
    plugins = [PLUGIN, LOADERENTRY, script(tmp_path / "99-probe.install", PROBE)]
    return KernelInstall(tmp_path, conf_root, boot, probe, plugins)


@pytest.fixture
def vmlinuz(tmp_path: Path) -> Path:
    """A kernel image for tests that must not build: kernel-install only checks that it is a file."""
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"MZ not really a kernel")
    return path


@pytest.fixture
def uki(tmp_path: Path) -> Path:
    """A unified kernel image: systemd's stub with a .linux section."""
    if not STUB.exists() or not shutil.which("objcopy"):
        pytest.skip("needs systemd-boot's EFI stub and objcopy")
    linux = tmp_path / "linux"
    linux.write_bytes(b"kernel")
    out = tmp_path / "uki.efi"
    subprocess.run(
        [
            "objcopy",
            "--add-section",
            f".linux={linux}",
            "--change-section-vma",
            ".linux=0x2000000",
            STUB,
            out,
        ],
        check=True,
    )
    return out


def run_plugin(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The install.d script called directly, as a misbehaving caller might."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_INSTALL_")}
    base.update(MKOSI_INITRD_PYTHON=sys.executable, PYTHONPATH=str(REPO / "src"), **env)
    return subprocess.run([str(PLUGIN), *args], env=base, capture_output=True, text=True, timeout=120)


# ---- decisions (pure) --------------------------------------------------------------------------------


def ctx(**kw: object) -> policy.Context:
    base: dict[str, object] = dict(
        layout="bls",
        initrd_generator="mkosi-initrd",
        image_type="pe",
        staging=Path("/stage"),
        boot_root=Path("/b"),
        staging_microcode=True,
    )
    base.update(kw)
    return policy.Context(**base)  # type: ignore[arg-type]


def add(*initrds: str, image: str = "/k/vmlinuz") -> policy.Request:
    return policy.Request("add", "6.1.0", Path("/b/tok/6.1.0"), Path(image), tuple(map(Path, initrds)))


STAGE, BOOT_IMG = Path("/stage"), Path("/b/initramfs-6.1.0.img")


@pytest.mark.parametrize(
    ("request_", "context", "expected"),
    [
        pytest.param(add(), {}, ("build", STAGE / "initrd", STAGE / "microcode", "cpio"),
                     id="bls-stages-initrd-and-separate-microcode"),
        # systemd < 254 has no `microcode` staging file: its 90-loaderentry would ignore a separate one.
        pytest.param(add(), {"staging_microcode": False}, ("build", STAGE / "initrd", None, "cpio"),
                     id="old-kernel-install-gets-microcode-prepended"),
        pytest.param(add(), {"layout": "other"}, ("build", BOOT_IMG, None, "cpio"),
                     id="other-layout-writes-grubs-initramfs-name"),
        pytest.param(add(), {"layout": "uki", "uki_generator": "ukify"},
                     ("build", STAGE / "initrd", STAGE / "microcode", "cpio"),
                     id="uki-layout-stages-the-initrd-for-another-uki-builder"),
        pytest.param(add(), {"layout": "uki", "initrd_generator": "", "uki_generator": "mkosi-initrd"},
                     ("build", STAGE / "uki.efi", None, "uki"),
                     id="uki-generator-builds-a-uki-in-uki-layout"),
        pytest.param(add(), {"layout": "bls", "initrd_generator": "", "uki_generator": "mkosi-initrd"},
                     ("skip", None, None, "cpio"), id="uki-generator-alone-is-nothing-outside-uki-layout"),
        pytest.param(add("/x/initrd"), {}, ("skip", None, None, "cpio"), id="given-initrds-are-used"),
        pytest.param(add("/x/initrd"), {"layout": "uki"},
                     ("build", STAGE / "initrd", STAGE / "microcode", "cpio"),
                     id="given-initrds-do-not-count-in-uki-layout"),
    ],
)  # fmt: skip
def test_what_add_does_for_each_layout_and_generator(
    request_: policy.Request, context: dict[str, object], expected: tuple[object, ...]
) -> None:
    action = policy.decide(request_, ctx(**context))
    assert (action.kind, action.output, action.microcode_output, action.format) == expected


def test_not_selected_skips_add_and_remove() -> None:
    for generator in ("", "dracut", "mkosi"):
        assert policy.decide(add(), ctx(initrd_generator=generator)).kind == "skip"
        remove = policy.Request("remove", "6.1.0", Path("/b/tok/6.1.0"))
        assert policy.decide(remove, ctx(layout="other", initrd_generator=generator)).kind == "skip"


def test_remove_deletes_only_the_other_layout_file() -> None:
    remove = policy.parse_argv(["remove", "6.1.0", "/b/tok/6.1.0"])
    assert policy.decide(remove, ctx(layout="other")) == policy.Action(
        "remove", "layout=other", output=Path("/b/initramfs-6.1.0.img")
    )
    assert policy.decide(remove, ctx(layout="bls")).kind == "skip"


def test_image_type_from_environment_or_from_the_image(uki: Path, vmlinuz: Path) -> None:
    assert policy.decide(add(), ctx(image_type="uki")).kind == "skip"
    # systemd 252 does not export KERNEL_INSTALL_IMAGE_TYPE: the image itself is looked at.
    assert policy.decide(add(image=str(uki)), ctx(image_type="")).kind == "skip"
    assert policy.decide(add(image=str(vmlinuz)), ctx(image_type="")).kind == "build"


def test_parse_argv_tolerates_any_argument_count() -> None:
    assert policy.parse_argv([]) == policy.Request()
    assert policy.parse_argv(["remove", "6.1"]) == policy.Request("remove", "6.1")
    req = policy.parse_argv(["add", "6.1", "/e", "/k", "/i1", "/i2"])
    assert req == policy.Request("add", "6.1", Path("/e"), Path("/k"), (Path("/i1"), Path("/i2")))


def test_plugin_found_unless_masked(tmp_path: Path) -> None:
    etc, usr = tmp_path / "etc", tmp_path / "usr"
    etc.mkdir()
    usr.mkdir()
    mkosi = script(usr / "50-mkosi.install", FAKE_MKOSI)
    assert rivals.active_plugins((etc, usr)) == [mkosi]
    (etc / "50-mkosi.install").symlink_to("/dev/null")
    assert rivals.active_plugins((etc, usr)) == []
    # An explicit plugin list is what kernel-install runs, whatever the directories hold.
    assert rivals.active_plugins((etc, usr), (PLUGIN, mkosi)) == [PLUGIN, mkosi]


DEBIAN_12_PLUGIN = Path("/usr/lib/kernel/install.d/85-initrd.install")


@pytest.mark.skipif(not DEBIAN_12_PLUGIN.exists(), reason="not Debian 12's systemd packaging")
def test_debians_initrd_plugin_is_a_rival_by_its_code_when_its_initrd_exists_and_ours_is_staged(
    tmp_path: Path,
) -> None:
    plugins, boot = tmp_path / "install.d", tmp_path / "boot"
    plugins.mkdir()
    boot.mkdir()
    # Debian's own plugin under another name: what it does counts, not what it is called.
    debian = script(plugins / "70-renamed.install", DEBIAN_12_PLUGIN.read_text())
    bls = ctx(staging=tmp_path / "stage")
    assert rivals.rival_warnings(add(), bls, policy.decide(add(), bls), (plugins,), boot) == []
    (boot / "initrd.img-6.1.0").write_bytes(b"initramfs-tools")
    [warning] = rivals.rival_warnings(add(), bls, policy.decide(add(), bls), (plugins,), boot)
    assert warning.startswith(f"{debian} stages {boot}/initrd.img-6.1.0, also under initrd_generator=")
    assert warning.endswith(f"Mask it with: remove {debian} from $KERNEL_INSTALL_PLUGINS")
    # Layout other writes /boot/initramfs-KVER.img: what Debian's plugin stages is then not our concern.
    other = ctx(layout="other")
    assert rivals.rival_warnings(add(), other, policy.decide(add(), other), (plugins,), boot) == []


# ---- the install.d script called directly ------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [[], ["add"], ["remove"], ["remove", "6.1.0"], ["frobnicate", "6.1.0", "/e"], ["add", "", "/e"]]
)
def test_odd_argument_counts_never_crash_when_not_selected(args: list[str]) -> None:
    result = run_plugin(*args, KERNEL_INSTALL_INITRD_GENERATOR="dracut")
    assert (result.returncode, result.stderr) == (0, "")


def test_selected_add_without_kernel_version_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = run_plugin(
        "add", KERNEL_INSTALL_INITRD_GENERATOR="mkosi-initrd", KERNEL_INSTALL_STAGING_AREA=str(tmp_path)
    )
    assert result.returncode == 1
    assert "error: add: no kernel version given" in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_prints_the_decision(tmp_path: Path) -> None:
    (tmp_path / "install.conf").write_text("layout=uki\nuki_generator=mkosi-initrd\n")
    result = run_plugin(
        "inspect",
        "6.1.0",
        KERNEL_INSTALL_CONF_ROOT=str(tmp_path),
        KERNEL_INSTALL_STAGING_AREA="/stage",
        KERNEL_INSTALL_IMAGE_TYPE="pe",
    )
    assert result.returncode == 0, result.stderr
    assert "uki_generator: mkosi-initrd" in result.stdout
    assert "output: /stage/uki.efi" in result.stdout
    assert "format: uki" in result.stdout


def test_inspect_shows_rival_plugins(tmp_path: Path) -> None:
    mkosi = script(tmp_path / "50-mkosi.install", FAKE_MKOSI)
    result = run_plugin(
        "inspect",
        "6.1.0",
        KERNEL_INSTALL_INITRD_GENERATOR="mkosi-initrd",
        KERNEL_INSTALL_LAYOUT="bls",
        KERNEL_INSTALL_STAGING_AREA="/stage",
        KERNEL_INSTALL_PLUGINS=f"{PLUGIN} {mkosi}",
        KERNEL_INSTALL_CONF_ROOT=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "output: /stage/initrd" in result.stdout
    said = f"warning: {mkosi} writes an initrd where ours is staged, also under initrd_generator="
    assert said in result.stdout


# ---- through the real kernel-install -----------------------------------------------------------------


@needs_kernel_install
@pytest.mark.parametrize("layout", ["bls", "other"])
def test_not_selected_does_nothing_and_lets_later_plugins_run(
    kinst: KernelInstall, vmlinuz: Path, layout: str
) -> None:
    kinst.configure(f"layout={layout}\ninitrd_generator=dracut\n")
    result = kinst.run("-v", "add", "6.1.0-test", vmlinuz)
    assert result.returncode == 0, result.stderr
    assert "skipping: initrd_generator=dracut" in result.stderr
    assert kinst.probe_ran and kinst.staged == []
    assert not (kinst.boot / "initramfs-6.1.0-test.img").exists()
    assert kinst.run("remove", "6.1.0-test").returncode == 0


@needs_kernel_install
def test_not_selected_remove_keeps_another_generators_initramfs(kinst: KernelInstall) -> None:
    kinst.configure("layout=other\n")
    theirs = kinst.boot / "initramfs-6.1.0-test.img"
    theirs.write_bytes(b"dracut's")
    result = kinst.run("remove", "6.1.0-test")
    assert result.returncode == 0, result.stderr
    assert theirs.read_bytes() == b"dracut's"


@needs_kernel_install
def test_remove_with_three_arguments_deletes_our_initramfs(kinst: KernelInstall) -> None:
    kinst.configure("layout=other\ninitrd_generator=mkosi-initrd\n")
    ours = kinst.boot / "initramfs-6.1.0-test.img"
    ours.write_bytes(b"ours")
    result = kinst.run("remove", "6.1.0-test")
    assert result.returncode == 0, result.stderr
    assert not ours.exists()
    assert (kinst.probe / "ran").read_text() == "remove 6.1.0-test\n"
    # Removing again (nothing left) is fine too.
    assert kinst.run("remove", "6.1.0-test").returncode == 0


@needs_kernel_install
def test_image_already_uki_is_left_alone(kinst: KernelInstall, uki: Path) -> None:
    kinst.configure("layout=bls\ninitrd_generator=mkosi-initrd\n")
    result = kinst.run("-v", "add", MISSING_KVER, uki)
    assert result.returncode == 0, result.stderr
    assert "already a unified kernel image" in result.stderr
    assert kinst.probe_ran and kinst.staged == []


@needs_kernel_install
def test_given_initrds_are_installed_instead_of_building(kinst: KernelInstall, vmlinuz: Path) -> None:
    kinst.configure("layout=bls\ninitrd_generator=mkosi-initrd\n")
    given = kinst.tmp / "initrd-given"
    given.write_bytes(b"prebuilt")
    # A kernel that does not exist: had the plugin tried to build, it would have failed.
    result = kinst.run("add", MISSING_KVER, vmlinuz, given)
    assert result.returncode == 0, result.stderr
    assert kinst.staged == []
    entry = kinst.entry(MISSING_KVER).read_text()
    assert kinst.initrd_line(kinst.entry_dir(MISSING_KVER) / "initrd-given") in entry.splitlines()


@needs_kernel_install
def test_failed_build_fails_kernel_install_and_keeps_old_initramfs(
    kinst: KernelInstall, vmlinuz: Path
) -> None:
    kinst.configure("layout=other\ninitrd_generator=mkosi-initrd\n")
    old = kinst.boot / f"initramfs-{MISSING_KVER}.img"
    old.write_bytes(b"previous initrd")
    result = kinst.run("add", MISSING_KVER, vmlinuz)
    assert result.returncode == 1
    assert f"mkosi-initrd: error: kernel {MISSING_KVER}: /usr/lib/modules/{MISSING_KVER} does not exist" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not kinst.probe_ran  # kernel-install stopped at our failure
    assert old.read_bytes() == b"previous initrd"
    assert sorted(p.name for p in kinst.boot.iterdir()) == [old.name]


def test_plugin_script_stays_a_thin_wrapper() -> None:
    mode = PLUGIN.stat().st_mode
    assert mode & stat.S_IXUSR
    lines = [line for line in PLUGIN.read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ['exec "${MKOSI_INITRD_PYTHON:-/usr/bin/python3}" -m mkosi_initrd.kernel_install "$@"']


# ---- real builds through the real kernel-install ------------------------------------------------------


def member_paths(initrd: Path) -> set[str]:
    from mkosi_initrd.image.cpioread import iter_members, read_segments

    return {m.path for m in iter_members(read_segments(initrd)[0])}


def cli_build(kver: str, output: Path) -> bytes:
    """What `mkosi-initrd -k KVER` builds by hand: builds are reproducible, so the plugin's output must
    be the same bytes (host-only, for KVER, which need not be the running kernel)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_INSTALL_", "MKOSI_INITRD"))}
    env["PYTHONPATH"] = str(REPO / "src")
    cmd = [sys.executable, "-m", "mkosi_initrd", "-k", kver, "-o", str(output)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return output.read_bytes()


@needs_kernel_install
@pytest.mark.slow
def test_bls_initrd_is_staged_and_installed_by_loaderentry_then_removed(
    kinst: KernelInstall, host_kernel: HostKernel
) -> None:
    kver, image = host_kernel.kver, host_kernel.image
    kinst.configure("layout=bls\ninitrd_generator=mkosi-initrd\n")
    result = kinst.run("-v", "add", kver, image)
    assert result.returncode == 0, result.stderr
    assert "wrote " in result.stderr  # KERNEL_INSTALL_VERBOSE=1 shows the summary
    assert "initrd" in kinst.staged
    installed = kinst.entry_dir(kver) / "initrd"
    assert (kinst.probe / "staging/initrd").read_bytes() == installed.read_bytes()
    assert kinst.initrd_line(installed) in kinst.entry(kver).read_text().splitlines()
    assert installed.read_bytes() == cli_build(kver, kinst.tmp / "by-hand")
    # Built for the kernel being installed, which here is not the running one.
    assert f"/usr/lib/modules/{kver}/modules.dep" in member_paths(installed)

    result = kinst.run("remove", kver)
    assert result.returncode == 0, result.stderr
    assert not kinst.entry(kver).exists() and not kinst.entry_dir(kver).exists()


@needs_kernel_install
@pytest.mark.slow
def test_other_layout_writes_boot_initramfs_atomically_then_removes_it(
    kinst: KernelInstall, host_kernel: HostKernel
) -> None:
    kver, image = host_kernel.kver, host_kernel.image
    kinst.configure("layout=other\ninitrd_generator=mkosi-initrd\n")
    old = kinst.boot / f"initramfs-{kver}.img"
    old.write_bytes(b"previous initrd")
    result = kinst.run("add", kver, image)
    assert result.returncode == 0, result.stderr
    assert "INFO" not in result.stderr and "wrote" not in result.stderr  # no progress unless -v
    assert kinst.staged == []
    assert sorted(p.name for p in kinst.boot.iterdir()) == [old.name]  # no temp files, no entry dir
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert old.read_bytes() == cli_build(kver, kinst.tmp / "by-hand")

    result = kinst.run("remove", kver)
    assert result.returncode == 0, result.stderr
    assert list(kinst.boot.iterdir()) == []


@needs_kernel_install
@pytest.mark.slow
def test_full_boot_partition_fails_the_install_and_keeps_the_old_initramfs(
    kinst: KernelInstall, host_kernel: HostKernel
) -> None:
    kver, image = host_kernel.kver, host_kernel.image
    kinst.configure("layout=other\ninitrd_generator=mkosi-initrd\n")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", kinst.boot])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        old = kinst.boot / f"initramfs-{kver}.img"
        old.write_bytes(b"previous initrd")
        result = kinst.run("add", kver, image)
        assert result.returncode == 1
        assert "mkosi-initrd: error:" in result.stderr and "Traceback" not in result.stderr
        assert not kinst.probe_ran
        assert old.read_bytes() == b"previous initrd"
        assert sorted(p.name for p in kinst.boot.iterdir()) == [old.name]
    finally:
        subprocess.run(["umount", kinst.boot], check=True)


@needs_kernel_install
@pytest.mark.slow
def test_warns_once_with_the_fix_when_mkosis_plugin_would_overwrite(
    kinst: KernelInstall, host_kernel: HostKernel
) -> None:
    kver, image = host_kernel.kver, host_kernel.image
    kinst.configure("layout=bls\ninitrd_generator=mkosi-initrd\n")
    mkosi = script(kinst.tmp / "50-mkosi.install", FAKE_MKOSI)
    kinst.plugins.insert(1, mkosi)
    result = kinst.run("add", kver, image)
    assert result.returncode == 0, result.stderr
    fix = f"Mask it with: remove {mkosi} from $KERNEL_INSTALL_PLUGINS"
    assert result.stderr.count(fix) == 1
    assert f"{mkosi} writes an initrd where ours is staged" in result.stderr
    # ...and it was right: the entry got mkosi's initrd, not ours.
    assert (kinst.entry_dir(kver) / "initrd").read_bytes() == b"mkosi\n"


@pytest.mark.slow
def test_packaged_generic_initrd_is_copied_instead_of_building(
    tmp_path: Path, host_kernel: HostKernel
) -> None:
    kver, image = host_kernel.kver, host_kernel.image
    root = tmp_path / "root"  # only the prebuilt initrd: building from this root would fail
    prebuilt = root / f"usr/lib/modules/{kver}/initrd"
    prebuilt.parent.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_INSTALL_", "MKOSI_INITRD"))}
    cmd = [sys.executable, "-m", "mkosi_initrd", "--generic", "-k", kver, "-o", str(prebuilt)]
    subprocess.run(cmd, env={**env, "PYTHONPATH": str(REPO / "src")}, check=True, capture_output=True)
    staging = tmp_path / "staging"
    staging.mkdir()
    action = policy.decide(add(image=str(image)), ctx(staging=staging, image_type="pe"))
    summary = plugin.build(policy.Request("add", kver, None, image), action, root=root)
    assert summary.startswith(f"copied prebuilt {prebuilt}")
    assert (staging / "initrd").read_bytes() == prebuilt.read_bytes()
    assert stat.S_IMODE((staging / "initrd").stat().st_mode) == 0o600
    assert sorted(p.name for p in staging.iterdir()) == ["initrd"]  # microcode is inside it


DEBIAN_INITRD_PLUGIN = DEBIAN_12_PLUGIN


@needs_kernel_install
@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_INITRD_PLUGIN.exists(), reason="not Debian's systemd packaging")
def test_warns_when_debians_plugin_would_add_initramfs_tools_initrd(
    kinst: KernelInstall, host_kernel: HostKernel
) -> None:
    kver, image = host_kernel.kver, host_kernel.image
    theirs = Path("/boot") / f"initrd.img-{kver}"  # only read, by Debian's plugin
    if not theirs.exists():
        pytest.skip(f"no {theirs}")
    kinst.configure("layout=bls\ninitrd_generator=mkosi-initrd\n")
    kinst.plugins.insert(1, DEBIAN_INITRD_PLUGIN)
    result = kinst.run("add", kver, image)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ln -s /dev/null /etc/kernel/install.d/85-initrd.install") == 1
    # ...and it was right: the entry loads initramfs-tools' initrd after ours.
    lines = [line for line in kinst.entry(kver).read_text().splitlines() if line.startswith("initrd ")]
    entry_dir = kinst.entry_dir(kver)
    assert lines == [kinst.initrd_line(entry_dir / "initrd"), kinst.initrd_line(entry_dir / theirs.name)]


def _a_bug(*args: object, **kw: object) -> NoReturn:
    raise KeyError("manifest")


def test_an_unexpected_error_in_the_plugin_is_one_line_naming_the_kernel_and_keeps_the_target(
    tmp_path: Path,
    host_kernel: HostKernel,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The plugin's own main, in this process, with a bug planted at the planner's last step: what
    # kernel-install would show for it on every kernel update, and what it leaves in /boot.
    from mkosi_initrd.planner import steps

    monkeypatch.setattr(steps, "generated_entries", _a_bug)
    conf, boot = tmp_path / "conf", tmp_path / "boot"
    conf.mkdir()
    boot.mkdir()
    (conf / "install.conf").write_text("layout=other\ninitrd_generator=mkosi-initrd\n")
    old = boot / f"initramfs-{host_kernel.kver}.img"
    old.write_bytes(b"previous initrd")
    env = {
        "KERNEL_INSTALL_CONF_ROOT": str(conf),
        "KERNEL_INSTALL_BOOT_ROOT": str(boot),
        "PATH": os.environ["PATH"],
    }
    argv = ["add", host_kernel.kver, str(tmp_path / "entry"), str(host_kernel.image)]
    assert plugin.main(argv, env) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"mkosi-initrd: error: kernel-install add for kernel {host_kernel.kver} failed: "
        "KeyError: 'manifest' (this is a bug in mkosi-initrd, please report it; "
        "MKOSI_INITRD_DEBUG=1 shows the traceback)"
    ]
    assert sorted(os.listdir(boot)) == [old.name] and old.read_bytes() == b"previous initrd"
    assert plugin.main(argv, {**env, "MKOSI_INITRD_DEBUG": "1"}) == 1
    assert "Traceback (most recent call last):" in capsys.readouterr().err
    assert old.read_bytes() == b"previous initrd"
