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
run_dir=$(realpath -m "${TESSERA_RUN:-run/cluster}")
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

# run NAME URL [LABEL:PID,PID...]: wrk against URL; with perf installed, also the CPU time
# wrk and each group of processes spent per request (perf stat task-clock over the run), which
# says where the time goes even when other work shares the cores.
run() {
    local name=$1 url=$2 i reqs cpu="" labels=() waits=()
    shift 2
    if command -v perf >/dev/null; then
        i=0
        for g in "$@"; do
            perf stat -x, -e task-clock -p "${g#*:}" -o "$work/cpu.$i" -- sleep "$dur" 2>/dev/null &
            waits+=($!)
            labels+=("${g%%:*}")
            i=$((i + 1))
        done
        perf stat -x, -e task-clock -o "$work/cpu.wrk" -- \
            wrk -t2 -c"$conns" -d"${dur}s" --latency "$url" >"$work/$name.txt"
        [ ${#waits[@]} -eq 0 ] || wait "${waits[@]}" # (a bare wait would wait for nginx too)
        reqs=$(awk '/requests in/ {print $1}' "$work/$name.txt")
        cpu=$(awk -F, -v n="$reqs" '/task-clock/ {printf "wrk %.0f", $1 * 1000 / n}' "$work/cpu.wrk")
        for i in "${!labels[@]}"; do
            cpu+=$(awk -F, -v n="$reqs" -v l="${labels[$i]}" \
                '/task-clock/ {printf ", %s %.0f", l, $1 * 1000 / n}' "$work/cpu.$i")
        done
        cpu="$cpu us/request"
    else
        wrk -t2 -c"$conns" -d"${dur}s" --latency "$url" >"$work/$name.txt"
    fi
    printf '%-34s %12s %10s  %s\n' "$name" "$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")" \
        "$(awk '/ 99%/ {print $2}' "$work/$name.txt")" "$cpu"
}

pids() { # the pids of the named components, comma-separated (nginx: its workers)
    local n out=""
    for n in "$@"; do
        if [ "$n" = lb ]; then
            out+=$(pgrep -P "$(cat "$run_dir/pids/lb.pid")" | paste -sd,),
        else
            out+=$(cat "$run_dir/pids/$n.pid"),
        fi
    done
    echo "${out%,}"
}

echo "image: $(stat -c %s "$work/www/img.jpg") bytes; wrk -t2 -c$conns -d${dur}s; all on this machine's 2 cores"
printf '%-34s %12s %10s\n' what 'requests/s' p99
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$lb/i/$id.jpg" >/dev/null # warm-up
run "nginx static (same bytes)" "http://127.0.0.1:$nport/img.jpg" "nginx:$(pgrep -P "$npid" | paste -sd,)"
run "read-1 directly (no balancer)" "http://127.0.0.1:$read1/i/$id.jpg" "read-1:$(pids read-1)"
run "balancer, 3 read services" "http://127.0.0.1:$lb/i/$id.jpg" "nginx:$(pids lb)" \
    "reads:$(pids read-1 read-2 read-3)"
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
