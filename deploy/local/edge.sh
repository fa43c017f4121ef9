#!/usr/bin/env bash
# edge.sh - the local cluster's edge cache: Varnish in front of the nginx balancer.
#
#   edge.sh start     render the VCL, start varnishd in the foreground (-F) in the
#                     background, wait until it answers (idempotent)
#   edge.sh stop      stop it (SIGTERM, then SIGKILL after 10 s)
#   edge.sh status    pid, port and state
#   edge.sh vcl       print the rendered VCL
#
# Environment: TESSERA_RUN (run directory, default ./run/cluster; the edge keeps
# its files in $TESSERA_RUN/edge and its pid in $TESSERA_RUN/pids/edge.pid),
# TESSERA_PORT_OFFSET (default 0): the edge listens on 127.0.0.1:8000+offset, its
# admin port is 6082+offset, the balancer is 127.0.0.1:8080+offset.
# TESSERA_EDGE_PORT / TESSERA_LB_PORT override those; TESSERA_EDGE_PURGE_ACL adds
# comma-separated addresses or networks ("10.0.0.0/8") allowed to purge.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=$(realpath -m "${TESSERA_RUN:-$ROOT/run/cluster}")
OFF=${TESSERA_PORT_OFFSET:-0}
PORT=${TESSERA_EDGE_PORT:-$((8000 + OFF))}
ADMIN=$((6082 + OFF))
LB=${TESSERA_LB_PORT:-$((8080 + OFF))}
DIR=$RUN/edge
PIDFILE=$RUN/pids/edge.pid
VMODS=$(pkg-config --variable=vmoddir varnishapi 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/varnish/vmods)

die() {
    echo "edge.sh: $*" >&2
    exit 1
}

pid() {
    local p
    p=$(cat "$PIDFILE" 2>/dev/null) || return 1
    kill -0 "$p" 2>/dev/null || return 1
    echo "$p"
}

answers() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/lb/healthz"; }

render() {
    local acl="" a net len
    if [ -n "${TESSERA_EDGE_PURGE_ACL:-}" ]; then
        IFS=, read -ra nets <<<"$TESSERA_EDGE_PURGE_ACL"
        for a in "${nets[@]}"; do
            a=${a// /}
            [ -z "$a" ] && continue
            net=${a%/*}
            if [ "$net" != "$a" ]; then len=${a#*/}; acl+="    \"$net\"/$len;"$'\n'; else acl+="    \"$net\";"$'\n'; fi
        done
    fi
    local vcl
    vcl=$(<"$ROOT/deploy/varnish/tessera.vcl")
    vcl=${vcl//@LB_HOST@/127.0.0.1}
    vcl=${vcl//@LB_PORT@/$LB}
    vcl=${vcl//@PURGE_ACL@/${acl%$'\n'}}
    if [ -e "$VMODS/libvmod_xkey.so" ]; then
        printf '%s\n' "$vcl"
    else
        # no varnish-modules: URL purges only
        printf '%s\n' "$vcl" | grep -v '# xkey$'
    fi
}

start() {
    local i p
    if pid >/dev/null; then
        return 0
    fi
    command -v varnishd >/dev/null || die "varnishd is not installed (scripts/deps.sh)"
    mkdir -p "$DIR" "$RUN/pids"
    render >"$DIR/tessera.vcl"
    # varnishd's worker runs as vcache: it must reach the work directory
    chmod 755 "$DIR"
    p=$RUN
    while [ "$p" != / ]; do
        chmod o+x "$p" 2>/dev/null || true
        p=$(dirname "$p")
    done
    setsid varnishd -F -n "$DIR/work" -a "127.0.0.1:$PORT" -T "127.0.0.1:$ADMIN" \
        -f "$DIR/tessera.vcl" -s malloc,256m -p default_grace=0s \
        >>"$DIR/varnishd.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for ((i = 0; i < 150; i++)); do
        answers && return 0
        pid >/dev/null || {
            tail -n 20 "$DIR/varnishd.log" >&2
            die "varnishd exited (log: $DIR/varnishd.log)"
        }
        sleep 0.1
    done
    die "varnishd does not answer on 127.0.0.1:$PORT after 15 s"
}

stop() {
    local p i
    p=$(pid) || {
        rm -f "$PIDFILE"
        return 0
    }
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && kill -KILL -- "-$p" 2>/dev/null
    # the cache child is in the same session: make sure it is gone with the manager
    pkill -TERM -s "$p" 2>/dev/null || true
    rm -f "$PIDFILE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
    if p=$(pid); then
        if answers; then s=ready; else s="running, not answering"; fi
        printf 'edge %s 127.0.0.1:%s %s\n' "$p" "$PORT" "$s"
    else
        printf 'edge - 127.0.0.1:%s stopped\n' "$PORT"
        exit 3
    fi
    ;;
vcl) render ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
