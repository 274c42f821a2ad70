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
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version
