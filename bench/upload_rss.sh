#!/usr/bin/env bash
# Peak resident memory of `tessera serve` while it takes the largest accepted
# corpus file and every decompression bomb, and the time each upload took.
# Usage: bench/upload_rss.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
bin=${TESSERA_BIN:-build/tessera}
corpus=${TESSERA_TESTDATA:-../shared/testdata/images}
work=$(mktemp -d /tmp/tessera-rss.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data" --log.access=false --log.level=warn &
pid=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
rss() { awk '/^'"$1"':/ {print $2}' "/proc/$pid/status"; }
echo "after start: VmRSS $(rss VmRSS) kB, VmHWM $(rss VmHWM) kB"
for f in accept_jpeg_large_seeding_4000x3000.jpg reject_bomb_png_30000x30000_1bit.png \
    reject_bomb_webp_lossless_16000x16000.webp reject_bomb_gif_screen_65535x65535.gif \
    reject_bomb_gif_frames_1000x1000x1500.gif reject_jpeg_huge_declared_50000x50000.jpg; do
    for _ in $(seq "$reps"); do
        out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --data-binary @"$corpus/$f" \
            "http://127.0.0.1:$port/api/v1/images")
    done
    printf '%-48s status %s s (last of %d); VmRSS %s kB, VmHWM %s kB\n' "$f" "$out" "$reps" \
        "$(rss VmRSS)" "$(rss VmHWM)"
done
