"""Which kernel the tests use: the newest one a kernel package installed, whatever else is around."""

from __future__ import annotations

import os
from pathlib import Path

from fixtures.kernel import ENV_KVER, host_kernel, installed_kernels, kernel_image


def _kernel(root: Path, kver: str, *, dep: bool = True, image: str | None = "boot") -> None:
    moddir = root / "modules" / kver
    (moddir / "kernel").mkdir(parents=True)
    if dep:
        (moddir / "modules.dep").write_text("kernel/x.ko:\n")
    if image == "boot":
        (root / "boot").mkdir(exist_ok=True)
        (root / "boot" / f"vmlinuz-{kver}").write_bytes(b"MZ")
    elif image == "moddir":
        (moddir / "vmlinuz").write_bytes(b"MZ")


def test_the_newest_packaged_kernel_wins_by_version_not_by_name(tmp_path: Path) -> None:
    _kernel(tmp_path, "6.1.0-9-amd64")
    _kernel(tmp_path, "6.1.0-10-amd64", image="moddir")  # Fedora's place for the image
    _kernel(tmp_path, "6.1.0-11-amd64", dep=False)  # removed by an update: leftovers only
    _kernel(tmp_path, "6.1.0-12-amd64", image=None)  # modules without an image
    _kernel(tmp_path, "6.1.0-13-amd64")  # built by hand: no package owns it
    unowned = tmp_path / "boot/vmlinuz-6.1.0-13-amd64"

    kernels = installed_kernels(
        tmp_path / "modules", tmp_path / "boot", lambda paths: set(paths) - {unowned}
    )

    assert [k.kver for k in kernels] == ["6.1.0-9-amd64", "6.1.0-10-amd64"]
    assert kernels[-1].image == tmp_path / "modules/6.1.0-10-amd64/vmlinuz"
    assert kernel_image("6.1.0-9-amd64", tmp_path / "modules", tmp_path / "boot") == (
        tmp_path / "boot/vmlinuz-6.1.0-9-amd64"
    )


def test_no_kernel_at_all_is_none_not_an_error(tmp_path: Path) -> None:
    assert installed_kernels(tmp_path / "nothing", tmp_path / "boot") == []


def test_this_machine_uses_the_named_or_else_its_newest_installed_kernel() -> None:
    kernel = host_kernel()
    installed = installed_kernels()
    assert kernel is not None and installed, "tools/setup.sh installs linux-image-amd64"
    if named := os.environ.get(ENV_KVER):
        assert kernel.kver == named
    else:
        assert kernel == installed[-1]
    assert kernel.image.is_file() and (kernel.moddir / "modules.dep").is_file()
