"""extension-release.NAME: the base initrd's os-release identity, scope initrd (systemd-sysext(8)
refuses an extension whose ID or VERSION_ID/SYSEXT_LEVEL do not match the initrd's)."""

from __future__ import annotations

ARCHITECTURES = {
    "x86_64": "x86-64",
    "aarch64": "arm64",
    "ppc64le": "ppc64-le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "i686": "x86",
}


def release_text(os_release: dict[str, str], arch: str, kind: str = "sysext") -> str:
    """The release file's text for a `kind` ("sysext" or "confext") image."""
    lines = [f"ID={os_release.get('ID', 'linux')}"]
    if os_release.get("SYSEXT_LEVEL"):
        lines.append(f"SYSEXT_LEVEL={os_release['SYSEXT_LEVEL']}")
    elif os_release.get("VERSION_ID"):
        lines.append(f"VERSION_ID={os_release['VERSION_ID']}")
    lines.append(f"ARCHITECTURE={ARCHITECTURES.get(arch, arch)}")
    lines.append(f"{kind.upper()}_SCOPE=initrd")
    return "\n".join(lines) + "\n"


def release_path(name: str, kind: str = "sysext") -> str:
    if kind == "confext":
        return f"/etc/extension-release.d/extension-release.{name}"
    return f"/usr/lib/extension-release.d/extension-release.{name}"
