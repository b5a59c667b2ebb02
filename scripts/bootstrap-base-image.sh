#!/usr/bin/env bash
# Make a Debian bookworm base image without a registry: debootstrap from Debian's mirror,
# then `docker import`. Its python3 is 3.11, so cp311 wheels built on the host install in it.
#
#   scripts/bootstrap-base-image.sh [TAG]        # default TAG: smartbkg-base:local
#
# Environment: DOCKER_HOST (which engine), SMARTBKG_CACHE (default ~/.cache/smartbkg-prod;
# the root filesystem tarball is kept there so reruns skip debootstrap), DEBIAN_MIRROR
# (default: the first deb.debian.org-style URI in /etc/apt/sources.list*).
# Steps that are already done are skipped: an existing image, then a cached tarball.
# Needs root, debootstrap and the docker CLI (scripts/install-system-deps.sh docker.io debootstrap).
set -euo pipefail

tag=${1:-smartbkg-base:local}
suite=bookworm
cache_dir=${SMARTBKG_CACHE:-$HOME/.cache/smartbkg-prod}
tarball="$cache_dir/base-$suite-minbase-python3.tar"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "bootstrap-base-image: $tag already exists"
    exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(grep -rhoE '(URIs:|deb)\s+https?://[^ ]+/debian/?(\s|$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | awk '{print $2}' | head -n 1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || {
        echo "bootstrap-base-image: debootstrap not found (bash scripts/install-system-deps.sh debootstrap)" >&2
        exit 3
    }
    mkdir -p "$cache_dir"
    rootfs=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
    # dpkg syncs every file it unpacks: on a tmpfs that costs nothing (measured: 68 s
    # instead of several minutes on a busy disk). Plain directory where mount is refused.
    if mount -t tmpfs -o size=2g tmpfs "$rootfs" 2>/dev/null; then
        trap 'umount "$rootfs"; rmdir "$rootfs"' EXIT
    else
        trap 'rm -rf "$rootfs"' EXIT
    fi
    echo "bootstrap-base-image: debootstrap $suite from $mirror (about a minute)"
    # python3-minimal lacks json and friends; python3-venv brings ensurepip for the builder stage.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 || {
        echo "bootstrap-base-image: debootstrap failed; last lines of $cache_dir/debootstrap.log:" >&2
        tail -n 20 "$cache_dir/debootstrap.log" >&2
        exit 4
    }
    # No package caches or lists in the image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi

echo "bootstrap-base-image: importing $tarball as $tag"
docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$tag" >/dev/null
docker image inspect --format '{{.Id}} {{.Size}}' "$tag"
