#!/usr/bin/env bash
# Make the image `debian:bookworm-slim` (the CPU variant's base) from Debian's own packages, for a
# container engine that cannot pull from a registry (air-gapped hosts, the tests' machine):
# debootstrap's minbase variant of bookworm, imported into podman (or docker) under the upstream
# name. Does nothing if the image is already there.
#   scripts/debian-base-image.sh [ENGINE]     ENGINE: podman (default) or docker
# Needs root and debootstrap; the Debian mirror is the one apt's sources name on this host
# (DEBIAN_MIRROR overrides it), about 2 minutes.
set -euo pipefail
engine=${1:-podman}
image=docker.io/library/debian:bookworm-slim   # what `FROM debian:bookworm-slim` names
if "$engine" image exists "$image" 2>/dev/null || "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "debian-base-image: $image is there"; exit 0
fi
mirror=${DEBIAN_MIRROR:-$(grep -rhoE '(URIs:|^deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | grep -oE 'https?://[^ ]+' | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /var/tmp/debian-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debian-base-image: debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | "$engine" import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "debian-base-image: $image imported"
