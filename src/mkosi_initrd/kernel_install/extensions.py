"""The root's extensions (/etc/mkosi-initrd/sysext.d/NAME.conf) on `kernel-install add`: rebuilt
for the kernel being installed, before the base initrd (a failed build replaces nothing), and
delivered the way the layout allows:

- `uki`: `NAME.sysext.raw` among the UKI's companion files (kernel_install/companions.py, staged in
  one call with the addons and credentials): systemd-stub hands them to the initrd as /.extra/sysext/;
- `bls`: `$KERNEL_INSTALL_STAGING_AREA/initrd-sysext`, an extra initrd with /.extra/sysext/NAME.raw
  (kernel_install/sysextinitrd.py), which 90-loaderentry installs as a second `initrd` line
  (it takes every staged `initrd*` file);
- `other`: the same archive appended to initramfs-KVER.img (GRUB loads one file).

`remove` needs nothing of its own: the UKI's companions go with companions.remove_companions, a
type-1 entry's directory with kernel-install, initramfs-KVER.img with the plugin's removal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mkosi_initrd.config.sysextconf import SysextDef
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel_install.policy import Action, Context
from mkosi_initrd.kernel_install.sysextinitrd import append_initrd, write_sysext_initrd

STAGED_INITRD = "initrd-sysext"  # after "initrd" in 90-loaderentry's sorted initrd* glob
# (definition, kernel version, root, output file) → the signed image written there
Builder = Callable[[SysextDef, str, Path, Path], Path]


def build_extensions(
    defs: Sequence[SysextDef], kver: str, root: Path, scratch: Path, builder: Builder
) -> dict[str, Path]:
    """NAME → NAME.sysext.raw in `scratch`, one per definition, in the definitions' order, and
    NAME.confext → NAME.confext.raw where the extension has /etc files (its companion confext)."""
    images: dict[str, Path] = {}
    for d in defs:
        images[d.name] = builder(d, kver, root, scratch / f"{d.name}.sysext.raw")
        if (confext := scratch / f"{d.name}.confext.raw").is_file():
            images[f"{d.name}.confext"] = confext
    return images


def deliver_type1(ctx: Context, action: Action, images: Mapping[str, Path], scratch: Path) -> Path | None:
    """bls: the extra initrd staged beside ours; other: appended to the output. Returns what was
    written (None: no images, or the layout is uki, whose companions the plugin stages)."""
    if not images or ctx.layout == "uki":
        return None
    if ctx.layout == "other":
        assert action.output is not None
        extra = write_sysext_initrd(images, scratch / STAGED_INITRD)
        append_initrd(action.output, extra)
        return action.output
    assert ctx.staging is not None  # decide() requires it for every layout but other
    return write_sysext_initrd(images, ctx.staging / STAGED_INITRD)


def command_builder(base: Path | None) -> Builder:
    """Each extension made by `mkosi-initrd sysext` (the public command, in this process), against
    the base the plugin installs: the host-only plan of the same root and kernel, or `base` (the
    prebuilt generic initrd the plugin copies instead of building)."""

    def build(defn: SysextDef, kver: str, root: Path, out: Path) -> Path:
        from mkosi_initrd import cli

        argv = ["sysext", defn.name, "--root", str(root), "-k", kver, "-o", str(out)]
        argv += ["--verity-key", str(defn.verity_key), "--verity-certificate", str(defn.verity_certificate)]
        argv += [a for p in defn.packages for a in ("--package", p)]
        argv += [a for m in defn.modules for a in ("--add-module", m)]
        argv += [a for f in defn.files for a in ("--files", f)]
        argv += ["--base", str(base)] if base is not None else []
        if cli.main(argv) != 0 or not out.is_file():
            raise InitrdError(
                f"{defn.source}: building the extension {defn.name} for kernel {kver} failed; "
                "nothing was replaced",
                hint=f"the error above names the cause; fix {defn.source} (or remove it) and run "
                "kernel-install add again",
            )
        return out

    return build
