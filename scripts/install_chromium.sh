#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (and its driver) for the browser tests.
# A no-op when /usr/bin/chromium is already there; needs root (CI and the dev machines run as root).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_chromium.sh: /usr/bin/chromium is missing and this is not root; run: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# `make test` runs two test workers: another install may hold the package lock; wait for it.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version
