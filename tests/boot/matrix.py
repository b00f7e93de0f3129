"""The boot matrix: each kind of root, booted with our initrd (built by our CLI) and with dracut's.

    cd tests && python -m boot.matrix [--cases plain,lvm] [--report ../docs/BOOT-MATRIX.md]

A case is a root disk set (disks.py, stacked.py), the kernel command line that finds it, the profiles
our CLI needs, and how a LUKS key reaches the initrd: from the host's /etc/crypttab (an overlay on /etc
in a private mount namespace, so the build sees a host with that crypttab and the guest's /etc/fstab;
the host is not changed), or
from the command line (rd.luks.key=PATH, the key in a cpio appended to the initrd). dracut's initrd is
the distribution's own (/boot/initrd.img-KVER: dracut's default, non-host-only, with crypt, lvm,
mdraid and btrfs); a LUKS key is appended to it the same way. A failing boot keeps the serial log and
`mkosi-initrd inspect --json --files` of the initrd (manifest included) next to it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from boot import disks, stacked
from boot.nfs import EXPORT_PSEUDO, GUEST_SERVER, NIC, nfs_server
from boot.qemu import FAIL_PATTERNS, BootResult, boot
from fixtures.kernel import HostKernel, require_host_kernel

SRC = Path(__file__).parents[2] / "src"
KEY_PATH = "/etc/cryptsetup-keys.d/root.key"


def kernel() -> HostKernel:
    """The test kernel (tests/fixtures/kernel.py), booted with both initrds."""
    return require_host_kernel()


@dataclass(frozen=True)
class Case:
    name: str
    disks: Callable[[], Sequence[Path]]
    cmdline: str  # for our initrd (systemd reads it); dracut gets `dracut_cmdline` when set
    profiles: tuple[str, ...] = ()
    key_from: str = ""  # "crypttab" | "cmdline" | "" (no LUKS)
    dracut_cmdline: str = ""
    core: bool = False  # runs in CI; the rest under `make boot-matrix`
    # What the marker must say about /: its type, the label of the marker tree (the right disk of the
    # right layout) and, for our initrd, the device it assembled (luks-crypttab: the crypttab name).
    expect_label: str = ""
    expect_src: str = ""
    expect_fs: str = "ext4"
    timeout: int = 240
    # Root on NFS: no disks, a server in a private namespace (nfs.py). Not booted with dracut: Debian
    # ships its nfs module in dracut-network, and installing that would change the default dracut
    # image that the speed benchmarks compare against.
    nfs: bool = False

    def disk_images(self) -> list[Path]:
        return list(self.disks())


def _stacked(kind: str) -> Callable[[], Sequence[Path]]:
    return lambda: stacked.stacked_root(kind).images


ROOT = f"root=UUID={disks.ROOT_UUID} ro"
LUKS_CMDLINE = f"rd.luks.uuid={stacked.LUKS_UUID} rd.luks.key={KEY_PATH}"
CRYPTTAB = f"root UUID={stacked.LUKS_UUID} {KEY_PATH} luks,x-initrd.attach\n"

VG_ROOT = f"/dev/mapper/{stacked.VG}-root"
LUKS_BY_UUID = f"/dev/mapper/luks-{stacked.LUKS_UUID}"
CASES = {
    c.name: c
    for c in (
        Case("plain", lambda: [disks.marker_root("ext4")], ROOT, core=True, expect_label="ext4"),
        Case("xfs", lambda: [disks.marker_root("xfs")], ROOT, expect_fs="xfs", expect_label="xfs"),
        Case(
            "btrfs-subvol",
            _stacked("btrfs"),
            f"{ROOT} rootflags=subvol=root",
            expect_fs="btrfs",
            expect_label="btrfs",
        ),
        Case(
            "lvm",
            _stacked("lvm"),
            ROOT,
            ("lvm",),
            dracut_cmdline=f"{ROOT} rd.lvm.vg={stacked.VG}",
            core=True,
            expect_label="lvm",
            expect_src=VG_ROOT,
        ),
        Case(
            "luks-crypttab",
            _stacked("luks"),
            ROOT,
            key_from="crypttab",
            core=True,
            expect_label="luks",
            expect_src="/dev/mapper/root",
        ),
        Case(
            "luks-cmdline",
            _stacked("luks"),
            f"{ROOT} {LUKS_CMDLINE}",
            key_from="cmdline",
            expect_label="luks",
            expect_src=LUKS_BY_UUID,
        ),
        Case(
            "lvm-on-luks",
            _stacked("lvm-on-luks"),
            ROOT,
            ("lvm",),
            key_from="crypttab",
            dracut_cmdline=f"{ROOT} rd.lvm.vg={stacked.VG}",
            expect_label="lvm-on-luks",
            expect_src=VG_ROOT,
        ),
        Case(
            "nfs",
            lambda: [],
            f"root={GUEST_SERVER}:{EXPORT_PSEUDO} rootfstype=nfs4 ro",
            ("nfs", "network"),
            expect_fs="nfs4",
            expect_label="nfs",
            expect_src=f"{GUEST_SERVER}:{EXPORT_PSEUDO}",
            nfs=True,
        ),
        Case(
            "raid1",
            _stacked("raid1"),
            ROOT,
            ("raid",),
            dracut_cmdline=f"{ROOT} rd.md.uuid={stacked.MD_UUID}",
            core=True,
            expect_label="raid1",
            expect_src="/dev/md0",
        ),
        Case(
            "raid1-degraded",  # one of the two disks is gone: md starts the array after a timeout
            lambda: stacked.stacked_root("raid1").images[:1],
            ROOT,
            ("raid",),
            dracut_cmdline=f"{ROOT} rd.md.uuid={stacked.MD_UUID}",
            expect_label="raid1",
            expect_src="/dev/md0",
            timeout=300,
        ),
    )
}


@dataclass(frozen=True)
class Outcome:
    case: str
    initrd_kind: str  # "ours" | "dracut"
    initrd_size: int
    build_seconds: float
    boot: BootResult
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return self.boot.passed


def cli(
    *args: str, etc_overlay: dict[str, tuple[bytes, int]] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run our CLI from this tree; with `etc_overlay`, inside a private mount namespace whose /etc has
    those extra files ({path: (bytes, mode)}) on top of the host's."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "mkosi_initrd", *args]
    if not etc_overlay:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    with tempfile.TemporaryDirectory(prefix="mkosi-initrd-etc-") as tmp:
        upper, work = Path(tmp) / "upper", Path(tmp) / "work"
        work.mkdir()
        for path, (data, mode) in etc_overlay.items():
            p = upper / Path(path).relative_to("/etc")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            p.chmod(mode)
        script = (
            'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 && exec "$@"'
        )
        return subprocess.run(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                str(upper),
                str(work),
                *cmd,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )


def build_ours(case: Case, out: Path) -> tuple[Path, float, str]:
    """Our initrd for `case` (host-only, like kernel-install builds it), plus appended key if needed."""
    import time

    args = ["-k", kernel().kver, "-o", str(out), "--root", "/"]
    for p in case.profiles:
        args += ["--profile", p]
    # The guest's /etc/fstab: a host-only build takes the root's file system (module and tools) from it
    # when the build host's own root differs (xfs, btrfs guests built on an ext4 host).
    overlay: dict[str, tuple[bytes, int]] = {}
    if not case.nfs:
        overlay["/etc/fstab"] = (f"UUID={disks.ROOT_UUID} / {case.expect_fs} defaults 0 1\n".encode(), 0o644)
    if case.key_from == "crypttab":
        overlay |= {"/etc/crypttab": (CRYPTTAB.encode(), 0o644), KEY_PATH: (stacked.LUKS_KEY, 0o600)}
    start = time.monotonic()
    built = cli(*args, etc_overlay=overlay)
    seconds = time.monotonic() - start
    if built.returncode != 0:
        raise RuntimeError(f"mkosi-initrd failed for {case.name}:\n{built.stderr}")
    if case.key_from == "cmdline":
        out = disks.initrd_with(out, {KEY_PATH: stacked.LUKS_KEY}, out.with_name(out.name + "+key"))
    return out, seconds, built.stderr


def dracut_initrd(case: Case, tmp: Path) -> Path:
    if case.key_from:
        # dracut's own initrd has no key: append it where systemd-cryptsetup finds it by volume name,
        # and at rd.luks.key's path.
        by_name = f"/etc/cryptsetup-keys.d/luks-{stacked.LUKS_UUID}.key"
        key = {by_name: stacked.LUKS_KEY, KEY_PATH: stacked.LUKS_KEY}
        return disks.initrd_with(kernel().distro_initrd, key, tmp / "dracut+key")
    return kernel().distro_initrd


def dracut_cmdline(case: Case) -> str:
    cmdline = case.dracut_cmdline or case.cmdline
    if case.key_from and "rd.luks.uuid" not in cmdline:
        cmdline += f" rd.luks.uuid={stacked.LUKS_UUID}"
    return cmdline


def run_case(case: Case, initrd_kind: str, tmp: Path) -> Outcome:
    images = case.disk_images()
    notes: list[str] = []
    if initrd_kind == "ours":
        initrd, build_seconds, _ = build_ours(case, tmp / "initrd")
        cmdline = case.cmdline
    else:
        initrd, build_seconds, cmdline = dracut_initrd(case, tmp), 0.0, dracut_cmdline(case)
    name = f"{initrd_kind}-{case.name}"
    if case.nfs:
        tree = tmp / "tree"
        disks.fill_marker_tree(tree, case.name)
        with nfs_server(tree, tmp / "nfs") as server:
            result = boot(
                kernel().image,
                initrd,
                [],
                cmdline,
                timeout=case.timeout,
                name=name,
                extra_args=NIC,
                prefix=server.enter,
            )
    else:
        result = boot(kernel().image, initrd, images, cmdline, timeout=case.timeout, name=name)
    if result.passed:
        want = {"fs": case.expect_fs, "label": case.expect_label}
        if initrd_kind == "ours" and case.expect_src:
            want["src"] = case.expect_src
        wrong = {k: result.facts.get(k) for k, v in want.items() if v and result.facts.get(k) != v}
        if wrong:
            notes.append(f"expected {want}, the root says {wrong}")
            result = BootResult(False, result.log_path, result.seconds, f"wrong root: {result.marker_line}")
    if not result.passed and initrd_kind == "ours":
        save_manifest(initrd, result.log_path.with_suffix(".initrd.json"))
    return Outcome(case.name, initrd_kind, initrd.stat().st_size, build_seconds, result, tuple(notes))


HIBERNATE_CASE = "hibernate-resume"
HIBERNATING = "reboot: Power down"  # the kernel, once the image is on the swap disk
RESUMED = "MKOSI-INITRD-RESUMED"
HIBERNATE_FAILED = "MKOSI-INITRD-HIBERNATE-FAILED"


@dataclass(frozen=True)
class HibernateOutcome:
    initrd_kind: str
    initrd_size: int
    hibernate: BootResult
    resume: BootResult | None

    @property
    def passed(self) -> bool:
        return self.hibernate.passed and self.resume is not None and self.resume.passed

    def as_outcome(self) -> Outcome:
        """For the table: the resume boot (QEMU start → the resumed root says so), or what failed."""
        shown = self.resume if self.resume is not None else self.hibernate
        if self.resume is None and self.hibernate.passed:
            shown = BootResult(False, self.hibernate.log_path, self.hibernate.seconds, "hibernation failed")
        return Outcome(HIBERNATE_CASE, self.initrd_kind, self.initrd_size, 0.0, shown)


def run_hibernate(initrd_kind: str, tmp: Path) -> HibernateOutcome:
    """Boot 1: the root hibernates to /dev/vdb. Boot 2: the initrd must resume that image.

    Ours gets the resume device only from the host's /etc/kernel/cmdline (hostconfig turns it into a
    systemd-hibernate-resume@ unit), never on the booted command line; dracut gets resume=/dev/vdb."""
    # Writable disks (the swap must keep the image), so the root is a private copy of the cached one.
    root = tmp / "root.img"
    shutil.copyfile(disks.marker_root("ext4", label="hibernate", mode="hibernate"), root)
    swap = disks.swap_disk(tmp / "swap.img")
    cmdline = ROOT
    if initrd_kind == "ours":
        initrd = tmp / "initrd"
        overlay = {"/etc/kernel/cmdline": (f"{ROOT} resume=/dev/vdb\n".encode(), 0o644)}
        built = cli("-k", kernel().kver, "-o", str(initrd), "--root", "/", etc_overlay=overlay)
        if built.returncode != 0:
            raise RuntimeError(f"mkosi-initrd failed:\n{built.stderr}")
    else:
        initrd, cmdline = kernel().distro_initrd, f"{ROOT} resume=/dev/vdb"
    fails = (*FAIL_PATTERNS, HIBERNATE_FAILED)

    def run(marker: str, name: str) -> BootResult:
        image = kernel().image
        return boot(
            image, initrd, [root, swap], cmdline, marker, 300, name=name, writable=True, fail_patterns=fails
        )

    first = run(HIBERNATING, f"{initrd_kind}-hibernate")
    second = None
    if first.passed and HIBERNATE_FAILED not in first.log_path.read_text(errors="replace"):
        second = run(RESUMED, f"{initrd_kind}-resume")
    return HibernateOutcome(initrd_kind, initrd.stat().st_size, first, second)


def save_manifest(initrd: Path, dest: Path) -> None:
    shown = cli("inspect", "--json", "--files", str(initrd))
    dest.write_text(shown.stdout if shown.returncode == 0 else shown.stderr)


def report(outcomes: Sequence[Outcome], kernel_version: str) -> str:
    today = datetime.date.today().isoformat()
    header = (
        f"Last run: {today}, kernel {kernel_version}, QEMU/TCG (`-cpu qemu64`, 1 vCPU, 1 GiB), virtio-blk.\n"
        "Generated by `make boot-matrix` (tests/boot/matrix.py). *Init at*: the guest's CLOCK_BOOTTIME\n"
        "when the root's /sbin/init starts (kernel start → switch-root done). *Wall*: QEMU start → marker.\n"
        "Ours: `mkosi-initrd -k KVER --root / [--profile ...]` (host-only, zstd).\n"
        "dracut: the distribution's `/boot/initrd.img-KVER` (dracut 059 default config: non-host-only,\n"
        "with crypt, lvm, mdraid, btrfs)."
    )
    columns = ["case"] + [f"{k} {c}" for k in ("ours", "dracut") for c in ("", "size", "init at", "wall")]
    lines = ["# Boot matrix", "", header, "", "| " + " | ".join(c.strip() for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    by_case: dict[str, dict[str, Outcome]] = {}
    for o in outcomes:
        by_case.setdefault(o.case, {})[o.initrd_kind] = o
    for case, kinds in by_case.items():
        cells = [case]
        for kind in ("ours", "dracut"):
            found = kinds.get(kind)
            if found is None:
                cells += ["–"] * 4
                continue
            o = found
            # After a resume the guest clock is the hibernated kernel's: only the wall time means something.
            up = None if o.case == HIBERNATE_CASE else o.boot.guest_uptime
            cells += [
                "PASS" if o.passed else f"FAIL ({o.boot.reason[:60]})",
                f"{o.initrd_size / 2**20:.1f} MiB",
                f"{up:.1f} s" if up is not None else "–",
                f"{o.boot.seconds:.1f} s",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join([*CASES, HIBERNATE_CASE]), help="comma-separated case names")
    p.add_argument("--no-dracut", action="store_true", help="boot only our initrd")
    p.add_argument("--report", type=Path, help="write the results table (markdown) here")
    p.add_argument("--extra", type=Path, help="append this markdown file (notes) to the report")
    args = p.parse_args(argv)
    outcomes = []
    for name in args.cases.split(","):
        dracut_too = not args.no_dracut and not (name in CASES and CASES[name].nfs)
        for kind in ("ours", "dracut") if dracut_too else ("ours",):
            with tempfile.TemporaryDirectory(prefix="mkosi-initrd-matrix-") as tmp:
                o = run_hibernate(kind, Path(tmp)).as_outcome() if name == HIBERNATE_CASE else None
                o = o or run_case(CASES[name], kind, Path(tmp))
            outcomes.append(o)
            up = o.boot.guest_uptime
            print(
                f"{name:14} {kind:6} {'PASS' if o.passed else 'FAIL'} size={o.initrd_size / 2**20:.1f}MiB "
                f"init_at={up if up is not None else '-'}s wall={o.boot.seconds:.1f}s log={o.boot.log_path}"
                + ("" if o.passed else f" reason={o.boot.reason}"),
                flush=True,
            )
    text = report(outcomes, kernel().kver)
    if args.extra and args.extra.exists():
        text += "\n" + args.extra.read_text()
    if args.report:
        args.report.write_text(text)
    else:
        print(text)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
