#!/bin/bash
# Source tarball and rpms of this repository's HEAD (committed state only: `git archive`).
#
#   packaging/make-srpm.sh [OUTDIR]            tarball + source rpm in OUTDIR (default ./rpmbuild)
#   packaging/make-srpm.sh --binary [OUTDIR]   also the binary rpm (rpmbuild -ba)
#
# Extra rpmbuild arguments go in $RPMBUILD_ARGS (e.g. "--nodeps" where the build dependencies are
# not in an rpm database, as on Debian).
set -euo pipefail
mode=-bs
if [ "${1:-}" = "--binary" ]; then mode=-ba; shift; fi
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out=$(realpath -m "${1:-rpmbuild}")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml")
spec_version=$(sed -n 's/^Version:[[:space:]]*//p' "$repo/packaging/mkosi-initrd.spec")
if [ "$version" != "$spec_version" ]; then
    echo "make-srpm: pyproject.toml says $version, the spec says $spec_version" >&2
    exit 1
fi
mkdir -p "$out/SOURCES"
git -C "$repo" archive --format=tar.gz --prefix="mkosi-initrd-$version/" \
    -o "$out/SOURCES/mkosi-initrd-$version.tar.gz" HEAD
args=(--define "_topdir $out")
# rpm's brp-compress (gzips the man page) uses `read -d`, a bashism: where /bin/sh is not bash (Debian's
# dash) it fails quietly and leaves the page uncompressed. Run it with bash there.
if [ "$(basename "$(readlink -f /bin/sh)")" != bash ]; then
    args+=(--define "__brp_compress bash $(rpm --eval '%{_rpmconfigdir}')/brp-compress %{_prefix}")
fi
# shellcheck disable=SC2086 # RPMBUILD_ARGS is a list of words
rpmbuild $mode "${args[@]}" ${RPMBUILD_ARGS:-} "$repo/packaging/mkosi-initrd.spec"
