#!/usr/bin/env bash
# GET throughput of one ~100 KB image: `tessera serve` against nginx serving the
# same bytes statically with sendfile, on the same machine in the same run.
# Each server is pinned to core 0 with one worker; wrk runs on core 1.
# Usage: bench/get_throughput.sh [DURATION_S] [CONNECTIONS]   (prints a table)
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
conns=${2:-32}
bin=${TESSERA_BIN:-build/tessera}
img=${BENCH_IMAGE:-../shared/testdata/images/accept_jpeg_baseline_rocket_640x427.jpg}
work=$(mktemp -d /tmp/tessera-bench.XXXXXX)
chmod 755 "$work" # nginx workers run as nobody
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

tport=$(free_port)
taskset -c 0 "$bin" serve --listen "127.0.0.1:$tport" --data-dir "$work/data" --log.access=false \
    --log.level=warn ${TESSERA_ARGS:-} &
pids+=($!)
wait_http "http://127.0.0.1:$tport/healthz"
id=$(curl -fs --data-binary @"$img" "http://127.0.0.1:$tport/api/v1/images" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
mkdir -p "$work/www"
curl -fs -o "$work/www/img.jpg" "http://127.0.0.1:$tport/i/$id.jpg"
size=$(stat -c %s "$work/www/img.jpg")

nport=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    types { image/jpeg jpg; }
    server {
        listen 127.0.0.1:$nport;
        root $work/www;
        location / { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
wait_http "http://127.0.0.1:$nport/img.jpg"

run() { taskset -c 1 wrk -t1 -c"$conns" -d"${dur}s" --latency "$1" > "$work/$2.txt"; }
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.txt"; }
p99() { awk '/ 99%/ {print $2}' "$work/$1.txt"; }

# warm-up, then the measured runs, interleaved
taskset -c 1 wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$tport/i/$id.jpg" >/dev/null
taskset -c 1 wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$nport/img.jpg" >/dev/null
run "http://127.0.0.1:$tport/i/$id.jpg" tessera
run "http://127.0.0.1:$nport/img.jpg" nginx

t=$(rps tessera)
n=$(rps nginx)
echo "image: $size bytes; wrk -t1 -c$conns -d${dur}s; servers pinned to core 0, wrk to core 1"
printf '%-10s %12s %10s\n' server 'requests/s' 'p99'
printf '%-10s %12s %10s\n' tessera "$t" "$(p99 tessera)"
printf '%-10s %12s %10s\n' nginx "$n" "$(p99 nginx)"
/usr/bin/python3 -c "print(f'tessera/nginx = {float(\"$t\")/float(\"$n\"):.3f}')"
