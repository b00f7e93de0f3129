#!/bin/bash
# The main job: set up this machine (tools/setup.sh), build an initrd for an installed kernel with
# mkosi-initrd, and boot it in QEMU (TCG) to a small ext4 root whose init prints a marker.
#   tools/demo.sh [KVER]        env: DEMO_DIR (default /var/tmp/mkosi-initrd-demo), DEMO_ARGS (extra build flags)
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh

kernel_image() {  # Debian keeps the image in /boot, Fedora in the modules directory
    for k in "/usr/lib/modules/$1/vmlinuz" "/boot/vmlinuz-$1"; do
        if [ -f "$k" ]; then echo "$k"; return 0; fi
    done
    return 1
}

installed_kernels() {
    for d in /usr/lib/modules/*/; do
        kver=$(basename "$d")
        if [ -f "$d/modules.dep" ] && kernel_image "$kver" >/dev/null; then echo "$kver"; fi
    done | sort -V
}

kver=${1:-$(installed_kernels | tail -n 1)}
if [ -z "$kver" ]; then
    echo "no kernel installed: installing the distribution's kernel package"
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    if command -v apt-get >/dev/null; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-amd64
    else
        as_root dnf install -y kernel-core
    fi
    kver=$(installed_kernels | tail -n 1)
fi
kimg=$(kernel_image "$kver")
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
