#!/bin/sh
# Runs an image's file system the way a container engine would, where `podman run` is refused (the image
# test, tests/image): started as PID 1 of new mount and PID namespaces (`unshare --mount --pid --fork`),
# it mounts /proc, a minimal /dev, a /tmp and the volume into the root file system, then becomes the
# image's command as the image's user, chrooted, in the image's working directory. Each exec keeps
# PID 1, so the program gets SIGTERM as it would from `docker stop`; when it exits the kernel ends the
# namespace, its processes and its mounts (nothing to clean up after a failure).
#   enter.sh ROOT VOLUME_DIR VOLUME_TARGET UID:GID WORKDIR COMMAND [ARG...]
# The environment is passed through unchanged: the caller sets the image's.
set -eu
root=$1
volume=$2
target=$3
user=$4
workdir=$5
shift 5

mount --make-rprivate /
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,mode=0755,size=1m dev "$root/dev"
for node in null zero full random urandom tty; do
    : >"$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -p "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmp "$root/tmp"
mkdir -p "$root$target"
mount --bind "$volume" "$root$target"
# shellcheck disable=SC2016 # $1 and $@ belong to the inner shell
exec chroot --userspec="$user" "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$workdir" "$@"
