#!/bin/bash
# Install what mkosi-initrd, its tests and its boot lab need on a fresh Debian 12 (or Fedora) machine,
# and a virtualenv in .venv with the Python dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PKGS=(
    rpm python3-rpm rpm2cpio rpmlint cpio zstd xz-utils binutils kmod udev systemd
    qemu-system-x86 ovmf systemd-boot-efi sbsigntool mtools dosfstools e2fsprogs xfsprogs btrfs-progs
    erofs-utils openssl  # system extensions: mkfs.erofs and fsck.erofs (inspect), the verity signature
    cryptsetup-bin lvm2 mdadm busybox-static libarchive13 libc6-dev gcc less gzip procps util-linux fdisk
    python3 python3-venv python3-zstandard python3-pyelftools python3-pefile python3-libarchive-c
    linux-image-amd64 dracut firmware-linux-free
    nfs-common nfs-ganesha nfs-ganesha-vfs iproute2   # NFS-root boot test: server in a namespace
    python3-pip python3-setuptools groff-base git  # packaging: rpmbuild's fallback install, man page check
    golang-github-knqyf263-go-rpmdb-dev  # its testdata: real rpm databases of CentOS 5-8 (tests/fixtures/rpmdbs.py)
    debootstrap debian-archive-keyring  # the Debian 13 (trixie) sysroot fixture (tests/fixtures/trixie.py)
)
FEDORA_PKGS=(
    rpm-build python3-rpm python3-devel cpio zstd xz binutils kmod systemd-udev qemu-system-x86 edk2-ovmf
    systemd-boot-unsigned sbsigntools mtools dosfstools e2fsprogs xfsprogs btrfs-progs cryptsetup lvm2 mdadm
    busybox glibc-static gcc python3-zstandard python3-pyelftools python3-pefile python3-libarchive-c
    kernel-core dracut nfs-utils nfs-ganesha nfs-ganesha-vfs iproute
    pyproject-rpm-macros rpmlint groff-base git erofs-utils  # packaging; erofs-utils: inspect of sysexts
)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v apt-get >/dev/null; then
    missing=()
    for p in "${DEBIAN_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
elif command -v dnf >/dev/null; then
    as_root dnf install -y "${FEDORA_PKGS[@]}"
fi

# The rpm binding is built for the system's CPython 3.11; the venv uses PyPI's `rpm` shim to load it.
PY=python3
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then PY=/usr/bin/python3; fi
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
