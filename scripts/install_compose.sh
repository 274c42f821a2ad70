#!/usr/bin/env bash
# Installs Debian's docker-compose (1.29, Python) to validate docker-compose.yml offline in the tests
# (`docker-compose config` needs no Docker engine). A no-op when docker-compose is already there;
# needs root (CI and the dev machines run as root).
set -euo pipefail

if command -v docker-compose >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_compose.sh: docker-compose is missing and this is not root; run: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# `make test` runs two test workers: another install may hold the package lock; wait for it.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends docker-compose >/dev/null
docker-compose version --short
