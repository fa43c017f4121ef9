#!/usr/bin/env bash
# blob_s3.sh TEST_BLOB - runs the blob store contract (test_blob) against a real S3 server:
# OpenStack Swift with s3api, started here by deploy/local/s3.sh in a temporary run directory
# on five free loopback ports, and destroyed afterwards whatever happens.
# Exits 77 (ctest: skipped) with the reason when Swift is not installed.
set -euo pipefail

bin=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v swift-proxy-server >/dev/null || ! command -v memcached >/dev/null; then
    echo "skipped: OpenStack Swift or memcached is not installed (scripts/deps.sh installs them)"
    exit 77
fi
# five consecutive free ports (proxy, memcached, account, container, object)
port=$(/usr/bin/python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 32000)  # below the ephemeral range (32768-)
    socks = []
    try:
        for p in range(base, base + 5):
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
PY
)
dir=$(mktemp -d /tmp/tessera-s3-test-XXXXXX)
export TESSERA_S3_DIR=$dir TESSERA_S3_PORT=$port
trap '"$root/deploy/local/s3.sh" destroy >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
trap 'exit 143' TERM INT # a timeout's signal still runs the EXIT trap: no Swift left behind
"$root/deploy/local/s3.sh" up
TESSERA_TEST_S3_URL=$("$root/deploy/local/s3.sh" url) TESSERA_TEST_S3_CREDENTIALS=$dir/credentials "$bin"
