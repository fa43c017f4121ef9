#!/usr/bin/env bash
# Installs the npm tools the tests use (package.json: the OpenAPI validator,
# ajv, playwright-core for the browser test) into ./node_modules.
# Idempotent: runs `npm ci` only when node_modules is missing or older than
# package-lock.json. Needs node and npm (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    echo "npm-deps: node_modules up to date"
    exit 0
fi
echo "npm-deps: installing the test tools of package.json"
npm ci --no-audit --no-fund --loglevel=error
