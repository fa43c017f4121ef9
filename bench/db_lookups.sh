#!/usr/bin/env bash
# bench/db_lookups.sh - metadata lookups by id through `tessera serve` on PostgreSQL:
# two replicas vs the primary only, list page latency at 10k and 1M images. pg.sh runs 3 nodes
# under Patroni; pg-primary and pg-replica-K name whichever nodes have those roles at the time.
# Prints numbers; never pass/fail. Needs wrk, PostgreSQL 15 (scripts/deps.sh), a built tessera.
set -euo pipefail
BIN=${TESSERA_BIN:-build/tessera}
IMG=${1:-../shared/testdata/images/accept_jpeg_baseline_rocket_640x427.jpg}
export TESSERA_PG_DIR=$(mktemp -d /tmp/tessera-bench-pg-XXXXXX) TESSERA_PG_PORT=${PORT:-55460}
chmod 755 "$TESSERA_PG_DIR"
PG=deploy/local/pg.sh
DATA=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; $PG destroy >/dev/null 2>&1 || true; rm -rf "$DATA"; }
trap cleanup EXIT
$PG up >/dev/null
U=$($PG url); R="$($PG url pg-replica-1),$($PG url pg-replica-2)"
serve() { # serve PORT [replicas]
    $BIN serve --listen 127.0.0.1:$1 --data-dir "$DATA/$1" --db.url "$U" --db.replicas "${2:-}" \
        --log.access=false --log.level=warn & pids+=($!)
    for _ in $(seq 50); do curl -sf localhost:$1/healthz >/dev/null && return; sleep 0.1; done
}
serve 18101 "$R"; serve 18102 ""
ID=$(curl -s -XPOST --data-binary @"$IMG" localhost:18101/api/v1/images | sed 's/.*"id":"\([^"]*\)".*/\1/')
sleep 0.5
for p in 18101 18102; do
    echo "lookups by id, port $p ($([ $p = 18101 ] && echo '2 replicas' || echo 'primary only')):"
    wrk -t2 -c16 -d5s "http://127.0.0.1:$p/api/v1/images/$ID" | grep -E "Requests/sec|Latency"
done
for n in 10000 1000000; do
    psql "$($PG url pg-primary)" -XAtq -c "INSERT INTO images (id, key, format, width, height, frames,
      bytes, created_at, token_hash) SELECT 'bench' || lpad(g::text, 12, '0'), repeat('a', 64), 'jpeg',
      1, 1, 1, 1, 0, repeat('b', 64) FROM generate_series((SELECT count(*) FROM images) + 1, $n) g;
      ANALYZE images"
    sleep 1
    echo "list page (limit 50, newest first) at $n images, 2 replicas:"
    wrk -t2 -c8 -d5s "http://127.0.0.1:18101/api/v1/images?limit=50" | grep -E "Requests/sec|Latency"
done
