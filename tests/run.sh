#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian's
# chromium and chromium-driver for the real-browser test), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-browser.sh
cargo test "$@"
