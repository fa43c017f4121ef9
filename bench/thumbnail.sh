#!/usr/bin/env bash
# Thumbnail time for the 4000x3000 corpus JPEG to fit 256x256: Tessera's
# img_variant (in process, as the server runs it) against the vipsthumbnail
# command line and ImageMagick's convert -thumbnail. All single-threaded.
# Usage: bench/thumbnail.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
img=${BENCH_IMAGE:-../shared/testdata/images/accept_jpeg_large_seeding_4000x3000.jpg}
out=$(mktemp -d /tmp/tessera-thumb.XXXXXX)
trap 'rm -rf "$out"' EXIT
export VIPS_CONCURRENCY=1

./build/bench_thumb "$img" "$runs" 256 webp
./build/bench_thumb "$img" "$runs" 256 jpeg

# median wall time of a command over $runs runs, in ms
median_ms() {
    local ts=()
    for _ in $(seq "$runs"); do
        local s e
        s=$(date +%s%N)
        "$@" >/dev/null 2>&1
        e=$(date +%s%N)
        ts+=($(((e - s) / 1000)))
    done
    printf '%s\n' "${ts[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

echo "vipsthumbnail -s 256 (webp): median $(median_ms vipsthumbnail "$img" -s 256 -o "$out/v.webp[Q=80]") ms"
echo "vipsthumbnail -s 256 (jpeg): median $(median_ms vipsthumbnail "$img" -s 256 -o "$out/v.jpg[Q=80]") ms"
echo "convert -thumbnail 256x256 (jpeg): median $(median_ms convert "$img" -thumbnail 256x256 "$out/c.jpg") ms"
