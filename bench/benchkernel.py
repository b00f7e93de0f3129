"""The benchmarks' kernel: the tests' kernel (tests/fixtures/kernel.py decides), unless -k names one."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures.kernel import HostKernel, host_kernel, kernel_image, missing_kernel_reason  # noqa: E402


def bench_kernel(kver: str | None = None) -> HostKernel:
    """`kver` if given and installed, else the test kernel; exits with the reason when there is none."""
    if kver:
        image = kernel_image(kver)
        if image is None or not Path(f"/usr/lib/modules/{kver}/modules.dep").exists():
            sys.exit(f"kernel {kver} is not installed (no modules.dep or image)")
        return HostKernel(kver, image)
    kernel = host_kernel()
    if kernel is None:
        sys.exit(missing_kernel_reason())
    return kernel
