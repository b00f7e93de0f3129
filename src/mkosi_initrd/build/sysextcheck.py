"""The pre-flight check's part for sysext support (planner/sysext.py): an initrd that is to merge
extensions must hold what merging needs, or the extensions would silently not be there at boot."""

from __future__ import annotations

from collections.abc import Callable, Set

from mkosi_initrd.plan.model import Plan
from mkosi_initrd.planner.dlopen import LIBDIRS
from mkosi_initrd.planner.sysext import INITRD_UNIT, PROFILE, UNIT, WANTS

PROGRAM = "/usr/bin/systemd-sysext"
LIBCRYPTSETUP = "libcryptsetup.so.12"  # dlopen()ed by systemd to set up dm-verity
# Each entry: any one of the names (erofs: systemd-repart's DDIs; squashfs: older tools').
MODULES = (("loop",), ("dm_mod",), ("dm_verity",), ("overlay",), ("erofs", "squashfs"))


def sysext_problems(plan: Plan, resolve: Callable[[str], str | None], modules: Set[str]) -> list[str]:
    """What keeps the image from merging extensions; [] without sysext support. `resolve`: a path in
    the image, symlinks followed (None: absent); `modules`: the module names it can load or has built in."""
    if PROFILE not in plan.profiles:
        return []
    why = "sysext support"
    out = []
    if resolve(PROGRAM) is None:
        out.append(f"{why}: {PROGRAM} is not in the image (the systemd package of the root has none)")
    if resolve(f"{WANTS}/{INITRD_UNIT}") is None and resolve(f"{WANTS}/{UNIT}") is None:
        out.append(f"{why}: neither {INITRD_UNIT} nor {UNIT} is enabled for initrd.target")
    if not any(resolve(f"{d}/{LIBCRYPTSETUP}") for d in LIBDIRS):
        out.append(
            f"{why}: {LIBCRYPTSETUP} is not in the image: systemd dlopen()s it for dm-verity "
            "(install libcryptsetup12 or cryptsetup-libs)"
        )
    for names in MODULES:
        if not any(n in modules for n in names):
            which = " or ".join(names)
            out.append(f"{why}: module {which} is neither in the image nor built into kernel {plan.kver}")
    return out
