#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian's
# chromium, chromium-driver and redis-server; the npm OpenID Provider), then runs every
# test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-browser.sh
bash .ci/install-redis.sh
bash .ci/install-oidc.sh
cargo test "$@"
