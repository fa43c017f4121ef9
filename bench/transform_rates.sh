#!/usr/bin/env bash
# Transforms on `tessera serve`, three measures (prints them):
#  1. the second request of a rendition (a blob read) against nginx serving the same
#     bytes with sendfile: wrk, each server pinned to core 0, wrk on core 1;
#  2. renditions made per second on both cores: distinct w:{W}.webp of a 640x427 JPEG
#     and of a 24-megapixel JPEG, CONC clients at once;
#  3. AVIF (effort 2, the request path's) against WebP at the same q: first-request time,
#     bytes, and PSNR against the lossless PNG rendition (ImageMagick `compare`).
# Usage: bench/transform_rates.sh [WRK_SECONDS] [CONC]   (TESSERA_BIN overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
conc=${2:-4}
bin=${TESSERA_BIN:-build/tessera}
data=../shared/testdata/images
work=$(mktemp -d /tmp/tessera-bench.XXXXXX)
chmod 755 "$work" # nginx workers run as nobody
(umask 077 && openssl rand -hex 32 >"$work/transform.key") # a key file: never on a command line
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
now() { date +%s.%N; }

tport=$(free_port)
taskset -c 0 "$bin" serve --listen "127.0.0.1:$tport" --data-dir "$work/data" --log.access=false \
    --log.level=warn --jobs.workers=0 --transforms.keys_file="$work/transform.key" &
pids+=($!)
wait_http "http://127.0.0.1:$tport/healthz"
upload() { curl -fs --data-binary @"$1" "http://127.0.0.1:$tport/api/v1/images" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
url() { "$bin" sign --listen "127.0.0.1:$tport" --transforms.keys_file="$work/transform.key" "/i/$1/t/$2"; }
small=$(upload "$data/accept_jpeg_baseline_rocket_640x427.jpg")
vips thumbnail "$data/accept_jpeg_large_seeding_4000x3000.jpg" "$work/big.jpg[Q=90]" 6000 \
    --height 4000 --size force
big=$(upload "$work/big.jpg")
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. second request against nginx
r=$(url "$small" "w:320.webp")
mkdir -p "$work/www" "$work/nginx"
curl -fs -o "$work/www/r.webp" "$r"
echo "1. second request of a rendition ($(stat -c %s "$work/www/r.webp") bytes), wrk -t1 -c32 -d${dur}s"
nport=$(free_port)
cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    types { image/webp webp; }
    server {
        listen 127.0.0.1:$nport;
        root $work/www;
        location / { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
wait_http "http://127.0.0.1:$nport/r.webp"
rps() { taskset -c 1 wrk -t1 -c32 -d"${dur}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
t=$(rps "$r")
n=$(rps "http://127.0.0.1:$nport/r.webp")
echo "   tessera $t req/s, nginx $n req/s: $(echo "$t / $n" | bc -l | cut -c1-4)x"

# 2. renditions per second, both cores, conc at once
rate() { # rate ID PREFIX COUNT
    local i list=$work/urls
    : >"$list"
    for i in $(seq "$3"); do url "$1" "w:$(($2 + i)).webp" >>"$list"; done
    local t0 t1
    t0=$(now)
    xargs -P "$conc" -n 1 curl -fs -o /dev/null <"$list"
    t1=$(now)
    echo "$3 / ($t1 - $t0)" | bc -l | cut -c1-5
}
echo "2. renditions/s, $conc clients: 640x427 -> w:{201..260}.webp $(rate "$small" 200 60)/s;" \
    "6000x4000 -> w:{1001..1012}.webp $(rate "$big" 1000 12)/s"

# 3. AVIF against WebP at the same q (first requests of the 24 Mpx JPEG at 1024 px)
echo "3. w:1024 of the 6000x4000 JPEG: q, format, first-request s, bytes, PSNR dB vs lossless PNG"
curl -fs -o "$work/ref.png" "$(url "$big" "w:1024.png")"
for q in 50 65 80; do
    for f in webp avif; do
        t=$(curl -fs -o "$work/o.$f" -w '%{time_total}' "$(url "$big" "w:1024,q:$q.$f")")
        vips copy "$work/o.$f" "$work/o-$f.png" 2>/dev/null
        p=$(compare -metric PSNR "$work/ref.png" "$work/o-$f.png" null: 2>&1 || true)
        echo "   q $q $f ${t} s $(stat -c %s "$work/o.$f") bytes PSNR $p"
    done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
