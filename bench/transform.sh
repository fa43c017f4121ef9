#!/usr/bin/env bash
# First and second request of a transform (/i/{id}/t/w:1024.webp and .avif) of a
# 24-megapixel JPEG from `tessera serve`, beside the `vipsthumbnail` command and
# ImageMagick `convert` doing the same resize on the same file. Each first request
# is a distinct rendition (q varies), so it is really made: blob read, decode with
# shrink-on-load, encode, blob write, metadata row. Prints one line per run.
# Usage: bench/transform.sh [RUNS]   (TESSERA_BIN, BENCH_IMAGE override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bin=${TESSERA_BIN:-build/tessera}
src=${BENCH_IMAGE:-../shared/testdata/images/accept_jpeg_large_seeding_4000x3000.jpg}
work=$(mktemp -d /tmp/tessera-bench.XXXXXX)
(umask 077 && openssl rand -hex 32 >"$work/transform.key") # a key file: never on a command line
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
secs() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }

big=$work/big.jpg
vips thumbnail "$src" "$big[Q=90]" 6000 --height 4000 --size force
port=$(free_port)
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --log.access=false \
    --log.level=warn --jobs.workers=0 --transforms.keys_file="$work/transform.key" &
pid=$!
wait_http "http://127.0.0.1:$port/healthz"
id=$(curl -fs --data-binary @"$big" "http://127.0.0.1:$port/api/v1/images" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
url() { "$bin" sign --listen "127.0.0.1:$port" --transforms.keys_file="$work/transform.key" "/i/$id/t/$1"; }
get() { curl -fs -o /dev/null -w '%{time_total}' "$1"; }

echo "source: 6000x4000 JPEG, $(stat -c %s "$big") bytes; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$runs"); do
    u=$(url "w:1024,q:$((80 - i)).webp")
    echo "run $i: tessera first webp $(get "$u") s, second $(get "$u") s;" \
        "vipsthumbnail $(secs vipsthumbnail "$big" -s 1024 -o "$work/v.webp[Q=80,strip]") s;" \
        "convert $(secs convert "$big" -thumbnail 1024x1024 -quality 80 "$work/m.webp") s;" \
        "tessera first avif $(get "$(url "w:1024,q:$((55 - i)).avif")") s"
done
