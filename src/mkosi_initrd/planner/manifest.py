"""The manifest in every initrd (/usr/lib/mkosi-initrd/manifest.json): what it holds and how it was
made; `inspect` shows it, the kernel-install plugin reads it to tell a prebuilt generic initrd."""

from __future__ import annotations

import json
from typing import Any

from mkosi_initrd import __version__
from mkosi_initrd.config.model import Config
from mkosi_initrd.image.compress import resolve_level
from mkosi_initrd.plan.model import Plan

MANIFEST = "/usr/lib/mkosi-initrd/manifest.json"
GENERATOR = "mkosi-initrd"  # the manifest's generator name


def build_options(config: Config) -> dict[str, Any]:
    return {
        "generic": config.generic,
        "profiles": list(config.profiles),
        "compression": config.compression,
        "level": resolve_level(config.compression, config.level),
        "microcode": config.microcode,
        "weak_deps": config.weak_deps,
        "source_date_epoch": config.source_date_epoch,
        "packages": list(config.packages),
        "remove_packages": list(config.remove_packages),
        "modules": list(config.modules),
        "firmware": list(config.firmware),
        "sysext_support": config.sysext_support,
    }


def manifest(config: Config, plan: Plan) -> bytes:
    """What this initrd holds and how it was made. No timestamps or host paths: builds stay reproducible."""
    data = {
        "generator": {"name": GENERATOR, "version": __version__},
        "kernel": plan.kver,
        "backend": plan.backend,
        "os_release": {k: plan.os_release[k] for k in ("ID", "VERSION_ID") if k in plan.os_release},
        "build": build_options(config),
        "packages": [{"name": p.name, "nevra": p.nevra} for p in plan.packages],
        "modules": [{"name": m.name, "path": m.path} for m in plan.modules],
        "firmware": [f.path for f in plan.firmware],
    }
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
