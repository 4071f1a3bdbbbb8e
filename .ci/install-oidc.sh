#!/usr/bin/env bash
# Installs the test OpenID Provider (tests/oidc: panva's oidc-provider, pinned by
# tests/oidc/package-lock.json) when tests/oidc/node_modules is missing. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f tests/oidc/node_modules/oidc-provider/package.json ]; then
    echo "install-oidc: tests/oidc/node_modules already installed"
    exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install-oidc: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

npm ci --prefix tests/oidc --no-audit --no-fund
echo "install-oidc: oidc-provider $(node -p "require('./tests/oidc/node_modules/oidc-provider/package.json').version")"
