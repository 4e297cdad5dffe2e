#!/bin/sh
# Install the Debian packages kvmweb needs, and nothing when they are all there.
#
#   scripts/install-system-deps.sh [fast|demo|test|ci]
#
#   fast: what `make test-fast` needs: Redis (the session's own), libvirt's
#         library and headers (libvirt-python and its test driver) and
#         OpenSSH's client tools (ssh-keygen, ssh-keyscan), promtool (Debian's
#         prometheus: the metrics test checks /metrics with it; no server is started)
#   demo: libvirt, QEMU, Redis, supervisor, OpenSSH (kvmweb's SSH key and host
#         keys; sshd in every lab host), GnuTLS certtool (the lab's CA) and what
#         the lab of simulated hosts uses (UEFI and TPM for its guests included)
#   test: demo + Chromium for the browser tests, promtool for the metrics test
#   ci:   test + PostgreSQL
#
# Checks each package with dpkg first and runs `apt-get update` only when
# something is missing, so a second run takes a fraction of a second.
set -eu

set_name=${1:-demo}

DEMO="libvirt-daemon-system libvirt-clients libvirt-dev pkg-config qemu-system-x86 qemu-utils
redis-server supervisor tini busybox-static iproute2 bridge-utils bindfs gcc libc6-dev make ovmf swtpm swtpm-tools
openssh-client openssh-server gnutls-bin"
FAST="libvirt-dev pkg-config redis-server openssh-client prometheus"
TEST="chromium prometheus"
CI="postgresql"

case "$set_name" in
    fast) wanted="$FAST" ;;
    demo) wanted="$DEMO" ;;
    test) wanted="$DEMO $TEST" ;;
    ci) wanted="$DEMO $TEST $CI" ;;
    *) echo "usage: $0 [fast|demo|test|ci]" >&2; exit 2 ;;
esac

# The virtualenv needs a Python with venv and ensurepip. A Python built from
# source (pyenv) has them; Debian's own needs python3-venv.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    wanted="$wanted python3-venv"
fi
# libvirt-python is built from source: it needs Python's headers.
if ! python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    wanted="$wanted python3-dev"
fi

missing=""
for pkg in $wanted; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "system packages: all present ($set_name)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "system packages missing:$missing" >&2
    echo "run as root (or: sudo apt-get install$missing) and try again" >&2
    exit 1
fi

echo "system packages: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # one word per package
apt-get install -y -q $missing
