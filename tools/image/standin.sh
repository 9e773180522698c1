#!/bin/sh
# A stand-in for the official python:X-slim base, for the image test only (README "Container"): where no
# image registry answers, `debootstrap` makes a minimal Debian with Python, pip and venv, `python` is
# linked to `python3`, and the result is imported under the name the Dockerfile's FROM uses. NOT a
# release path: images for users are built on the official base.
#   standin.sh CACHE_DIR SUITE   -> prints the path of the root file system tarball, in CACHE_DIR
# (reused while it is there; the test imports it once, then deletes it). The unpacked tree is removed.
set -eu
cache=$1
suite=${2:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/standin-$suite.tar"
if [ -s "$tarball" ]; then
    printf '%s\n' "$tarball"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/standin.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
echo "image-test: making the Debian $suite stand-in base with debootstrap (once; cached in $cache)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}
ln -sf python3 "$root/usr/bin/python"
# like the official slim images: no apt lists, no caches, no docs beyond copyright
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/*/changelog* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" --numeric-owner -cf "$tarball.part" .
mv "$tarball.part" "$tarball"
printf '%s\n' "$tarball"
