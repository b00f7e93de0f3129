#!/bin/bash
# The main job: set up this machine (tools/setup.sh), build an initrd for an installed kernel with
# mkosi-initrd, and boot it in QEMU (TCG) to a small ext4 root whose init prints a marker.
#   tools/demo.sh [KVER]        env: DEMO_DIR (default /var/tmp/mkosi-initrd-demo), DEMO_ARGS (extra build flags)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

# The kernel: KVER if given, else the one the tests use (tests/fixtures/kernel.py: $MKOSI_INITRD_TEST_KVER,
# or the newest kernel installed by the distribution's kernel package, with modules.dep and an image).
pick() {
    PYTHONPATH=tests .venv/bin/python - "${1:-}" <<'PY'
import sys
from fixtures.kernel import HostKernel, host_kernel, kernel_image
kver = sys.argv[1]
if kver:
    image = kernel_image(kver)
    kernel = HostKernel(kver, image) if image else None
else:
    kernel = host_kernel()
print(f"{kernel.kver} {kernel.image}" if kernel else "")
PY
}

picked=$(pick "${1:-}")
if [ -z "$picked" ] && [ -z "${1:-}" ]; then
    echo "no kernel installed: installing the distribution's kernel package"
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    if command -v apt-get >/dev/null; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-amd64
    else
        as_root dnf install -y kernel-core
    fi
    picked=$(pick)
fi
if [ -z "$picked" ]; then
    echo "demo: kernel ${1:-} is not installed (no /usr/lib/modules/KVER/modules.dep with an image)" >&2
    exit 1
fi
read -r kver kimg <<<"$picked"
out=${DEMO_DIR:-/var/tmp/mkosi-initrd-demo}
mkdir -p "$out"

echo "== building an initrd for $kver"
# shellcheck disable=SC2086
.venv/bin/mkosi-initrd -k "$kver" -o "$out/initrd-$kver" --generic -v ${DEMO_ARGS:-}
.venv/bin/mkosi-initrd inspect "$out/initrd-$kver" | cut -c1-200

echo "== booting $kimg with it in QEMU (serial log under /var/tmp/mkosi-initrd-boot)"
PYTHONPATH=tests .venv/bin/python - "$kimg" "$out/initrd-$kver" <<'PY'
import sys
from pathlib import Path

from boot.disks import marker_root
from boot.qemu import boot

result = boot(Path(sys.argv[1]), Path(sys.argv[2]), [marker_root("ext4")], "root=/dev/vda ro", timeout=180, name="demo")
if not result.passed:
    sys.exit(result.explain())
print(f"booted to the root in {result.seconds:.1f}s: {result.marker_line}")
PY
