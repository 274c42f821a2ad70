#!/usr/bin/env bash
# Installs Debian's Redis server for the Celery end-to-end test (tests/e2e/test_celery_topology.py),
# which starts its own throwaway instance on a loopback port. A no-op when redis-server is already
# there; needs root (CI and the dev machines run as root).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_redis.sh: redis-server is missing and this is not root; run: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# `make test` runs two test workers: another install may hold the package lock; wait for it.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends redis-server >/dev/null
# Where systemd runs, the package also starts a system instance; the test needs none (it runs its own).
redis-server --version
