#!/bin/sh
# `make image-test`: the image test (tests/image, README "Container"). It builds the image from the
# Dockerfile with Debian's podman and runs it as its user, which needs Linux, root (podman's chroot
# isolation, debootstrap for the stand-in base, mount and chroot) and new mount/PID namespaces.
# podman and debootstrap are installed from Debian's packages when missing.
# On a machine that cannot, it says why in a banner; with IMAGE_TEST_OPTIONAL=1 (as `make test` calls it)
# it then exits 0, otherwise 1.
#   run-tests.sh PYTHON [PYTEST_ARGS...]
set -eu
python=$1
shift
cd "$(dirname "$0")/../.."

cannot() {
    printf '\n' >&2
    printf '*** image test NOT RUN: %s\n' "$1" >&2
    printf '*** %s\n\n' "$2" >&2
    if [ "${IMAGE_TEST_OPTIONAL:-0}" = 1 ]; then
        exit 0
    fi
    exit 1
}

[ "$(uname -s)" = Linux ] || cannot "it needs Linux (podman, mount and PID namespaces)" \
    "run it on Linux: make image-test"
[ "$(id -u)" = 0 ] || cannot "it needs root (podman build --isolation chroot, debootstrap, mount, chroot)" \
    "run it as root: sudo make image-test"
missing=""
command -v podman >/dev/null 2>&1 || missing="$missing podman"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    command -v apt-get >/dev/null 2>&1 || cannot "$missing not installed, and no apt-get to install them" \
        "install$missing, then: make image-test"
    echo "image-test: installing$missing (Debian packages)"
    # shellcheck disable=SC2086 # a list of package names
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null; } || cannot "installing$missing failed" "install$missing, then: make image-test"
fi
unshare --mount --pid --fork true 2>/dev/null || cannot "this machine does not allow new mount and PID namespaces" \
    "run it where \`unshare --mount --pid --fork true\` works"

echo "image-test: building the image from the Dockerfile and running it (cache: ${NUVIOT_IMAGE_CACHE:-$HOME/.cache/nuviot-image})"
NUVIOT_IMAGE_TEST=1 exec "$python" -m pytest tests/image -p no:randomly --timeout 1800 "$@"
