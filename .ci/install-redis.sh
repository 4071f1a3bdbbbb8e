#!/usr/bin/env bash
# Installs Debian's redis-server (used by tests/it/redis_backend.rs and the cluster tests,
# which start their own server on a free loopback port; no system service is used).
# Idempotent: does nothing when /usr/bin/redis-server and redis-cli are already there.
set -euo pipefail

if [ -x /usr/bin/redis-server ] && [ -x /usr/bin/redis-cli ]; then
    echo "install-redis: redis-server already installed ($(/usr/bin/redis-server --version | cut -d' ' -f3))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
# --no-install-recommends: no need for redis-tools' extras; the package does not start a
# server we need (tests start their own), so stop the packaged service if it came up.
$SUDO apt-get install -y --no-install-recommends redis-server redis-tools
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    $SUDO systemctl stop redis-server || true
fi

/usr/bin/redis-server --version
