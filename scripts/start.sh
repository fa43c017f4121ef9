#!/usr/bin/env bash
# Installs what Tessera needs, builds it and starts `tessera serve` on
# http://127.0.0.1:8080 (data in ./tessera-data). Ctrl-C stops it.
# Extra arguments go to `tessera serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh build
echo
echo "Tessera is starting: point a browser or curl at http://127.0.0.1:8080"
echo "  upload:  curl -F file=@picture.jpg http://127.0.0.1:8080/api/v1/images"
echo "  list:    curl http://127.0.0.1:8080/api/v1/images"
echo
exec ./build/tessera serve "$@"
