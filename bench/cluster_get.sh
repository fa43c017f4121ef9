#!/usr/bin/env bash
# GET throughput through the local cluster's nginx balancer over 1, 2 and 3 read
# services, a read service directly (the cost of the balancer hop), and nginx
# serving the same bytes statically; then upload throughput through the balancer.
# Needs the cluster up (deploy/local/cluster up). Stops and restarts read-2 and
# read-3 on the way. Usage: bench/cluster_get.sh [DURATION_S] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
conns=${2:-32}
off=${TESSERA_PORT_OFFSET:-0}
lb=$((8080 + off))
read1=$((8101 + off))
cluster=deploy/local/cluster
img=${BENCH_IMAGE:-../shared/testdata/images/accept_jpeg_baseline_rocket_640x427.jpg}
work=$(mktemp -d /tmp/tessera-cbench.XXXXXX)
chmod 755 "$work"
npid=
cleanup() {
    [ -n "$npid" ] && kill "$npid" 2>/dev/null
    $cluster start read-2 >/dev/null 2>&1 || true
    $cluster start read-3 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

id=$(curl -fs --data-binary @"$img" "http://127.0.0.1:$lb/api/v1/images" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
mkdir -p "$work/www"
curl -fs -o "$work/www/img.jpg" "http://127.0.0.1:$lb/i/$id.jpg"

nport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000;
    client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
    types { image/jpeg jpg; }
    server { listen 127.0.0.1:$nport; root $work/www; }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
npid=$!
sleep 0.5

run() { # name url
    wrk -t2 -c"$conns" -d"${dur}s" --latency "$2" >"$work/$1.txt"
    printf '%-34s %12s %10s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")" \
        "$(awk '/ 99%/ {print $2}' "$work/$1.txt")"
}

echo "image: $(stat -c %s "$work/www/img.jpg") bytes; wrk -t2 -c$conns -d${dur}s; all on this machine's 2 cores"
printf '%-34s %12s %10s\n' what 'requests/s' p99
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$lb/i/$id.jpg" >/dev/null # warm-up
run "nginx static (same bytes)" "http://127.0.0.1:$nport/img.jpg"
run "read-1 directly (no balancer)" "http://127.0.0.1:$read1/i/$id.jpg"
run "balancer, 3 read services" "http://127.0.0.1:$lb/i/$id.jpg"
$cluster stop read-3 >/dev/null
sleep 1
run "balancer, 2 read services" "http://127.0.0.1:$lb/i/$id.jpg"
$cluster stop read-2 >/dev/null
sleep 1
run "balancer, 1 read service" "http://127.0.0.1:$lb/i/$id.jpg"
$cluster start read-2 >/dev/null
$cluster start read-3 >/dev/null

# uploads: the same image, multipart, through the balancer (dedup: one blob, many rows)
cat >"$work/upload.lua" <<LUA
local f = io.open("$img", "rb")
local data = f:read("*a")
f:close()
local b = "tesserabenchboundary"
wrk.method = "POST"
wrk.body = "--" .. b .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n\r\n" .. data .. "\r\n--" .. b .. "--\r\n"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. b
LUA
wrk -t2 -c4 -d"${dur}s" --latency -s "$work/upload.lua" "http://127.0.0.1:$lb/api/v1/images" >"$work/up.txt"
printf '%-34s %12s %10s\n' "uploads via balancer (c4)" "$(awk '/Requests\/sec/ {print $2}' "$work/up.txt")" \
    "$(awk '/ 99%/ {print $2}' "$work/up.txt")"
grep -E 'Non-2xx|Socket errors' "$work/up.txt" || true
