"""Prebuilt initrds: a generic initrd a package installed for one kernel, used instead of building.

Path convention (docs/DESIGN.md, "Prebuilt initrds"): `/usr/lib/modules/KVER/initrd`, next to the
kernel image, the place dracut's plugin also looks for one. packaging/mkosi-initrd-initrd.spec builds
such a package. A file there is used only if it is ours and for this kernel:

- its manifest (`/usr/lib/mkosi-initrd/manifest.json`) says `"generator": {"name": "mkosi-initrd"}`,
  `"kernel": KVER` and `"build": {"generic": true}` (a host-only initrd describes the machine it was
  built on, at the time it was built: never reused), and
- its modules are this kernel's: it holds `/usr/lib/modules/KVER/modules.dep` and no other kernel's
  module directory.

Anything else there (another generator's initrd, one for another kernel, an unreadable file) is
passed over with a message saying why, and the caller builds as usual.
"""

from __future__ import annotations

import json
from pathlib import Path

from mkosi_initrd.errors import InitrdError
from mkosi_initrd.image.cpioread import iter_members, read_segments
from mkosi_initrd.log import log
from mkosi_initrd.planner.manifest import GENERATOR, MANIFEST
from mkosi_initrd.rootfs import resolve_in_root


def prebuilt_path(kver: str) -> str:
    """Where a package puts the prebuilt initrd of kernel `kver`, as seen inside the root."""
    return f"/usr/lib/modules/{kver}/initrd"


def prebuilt_initrd(root: Path, kver: str) -> Path | None:
    """The prebuilt initrd for `kver` in `root` if there is one that matches (see above), else None."""
    path = resolve_in_root(root, prebuilt_path(kver))
    if not path.is_file():
        return None
    try:
        problem = mismatch(path, kver)
    except (InitrdError, OSError) as e:
        log.warning("not using %s: cannot read it (%s)", path, e)
        return None
    if problem:
        log.info("not using %s: %s", path, problem)
        return None
    return path


def mismatch(path: Path, kver: str) -> str:
    """Why the initrd at `path` is not a prebuilt one for `kver`; empty if it is."""
    segments, contents = read_segments(path, want=lambda p: p == MANIFEST)
    if MANIFEST not in contents:
        return f"it has no {MANIFEST}, so it was not built by {GENERATOR}"
    try:
        manifest = json.loads(contents[MANIFEST])
    except ValueError:
        return f"its {MANIFEST} is not valid JSON"
    if not isinstance(manifest, dict):
        return f"its {MANIFEST} is not a JSON object"
    generator = manifest.get("generator")
    name = generator.get("name") if isinstance(generator, dict) else None
    if name != GENERATOR:
        return f"its manifest names generator {name!r}, not {GENERATOR!r}"
    if manifest.get("kernel") != kver:
        return f"it was built for kernel {manifest.get('kernel')!r}, not {kver!r}"
    build = manifest.get("build")
    if not isinstance(build, dict) or build.get("generic") is not True:
        return "it is a host-only initrd, not a generic one"
    kernels = {
        m.path.split("/")[4] for m in iter_members(segments) if m.path.startswith("/usr/lib/modules/")
    }
    kernels.discard("")
    if kernels - {kver}:
        return f"it holds modules of kernel {' '.join(sorted(kernels - {kver}))}"
    deps = f"/usr/lib/modules/{kver}/modules.dep"
    if not any(m.path == deps for m in iter_members(segments)):
        return f"it has no {deps}"
    return ""
