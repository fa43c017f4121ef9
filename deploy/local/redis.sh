#!/usr/bin/env bash
# redis.sh - the local Redis Cluster: three masters (redis-1..redis-3) on loopback, no replicas.
#
#   redis.sh up             start every node and create the cluster when it is not yet created
#   redis.sh down           stop every node
#   redis.sh destroy        stop and remove the run directory
#   redis.sh start|stop NAME   one node: redis-1, redis-2, redis-3
#   redis.sh status         port, pid and cluster state of each node
#   redis.sh nodes          the seed list for cache.redis (127.0.0.1:P1,127.0.0.1:P2,...)
#   redis.sh password-file  the file holding the password of the ACL user "tessera"
#   redis.sh cli NAME ARGS  redis-cli on one node, authenticated as "tessera"
#
# Environment: TESSERA_REDIS_DIR (run directory, default ./run/redis), TESSERA_REDIS_PORT
# (redis-1's port, the others on the next two; default 7001).
# Redis is a cache here: no persistence (--save '' --appendonly no), so a restarted node
# comes back empty, which is always correct. cluster-require-full-coverage is off so the
# nodes that are up keep serving their slots while one is down. Each node's cluster
# membership lives in its nodes.conf, so a stopped node rejoins with its slots.
# Access: a password is generated at the first `up` into $DIR/redis.pass (mode 600) and
# the ACL lives in $DIR/redis.conf (mode 600, never on a command line): the user
# "tessera" may do everything; unauthenticated connections (the user "default") may only
# PING (liveness checks). redis-cli gets the password through REDISCLI_AUTH, not argv.
set -euo pipefail

DIR=$(realpath -m "${TESSERA_REDIS_DIR:-./run/redis}")
BASE=${TESSERA_REDIS_PORT:-7001}
NODES=(redis-1 redis-2 redis-3)

die() {
    echo "redis.sh: $*" >&2
    exit 1
}

port_of() {
    case "$1" in
    redis-1) echo "$BASE" ;;
    redis-2) echo $((BASE + 1)) ;;
    redis-3) echo $((BASE + 2)) ;;
    *) die "unknown node \"$1\" (redis-1, redis-2, redis-3)" ;;
    esac
}

dir_of() { echo "$DIR/$1"; }
pid_of() { cat "$(dir_of "$1")/redis.pid" 2>/dev/null || true; }
PASS_FILE=$DIR/redis.pass
ACL_CONF=$DIR/redis.conf
# rcli ARGS: redis-cli authenticated as "tessera"; the password travels in the environment
rcli() { REDISCLI_AUTH=$(cat "$PASS_FILE") redis-cli --no-auth-warning --user tessera "$@"; }
cli() { rcli -h 127.0.0.1 -p "$(port_of "$1")" "${@:2}"; }

# make_auth writes the password (once) and the ACL configuration every node includes.
make_auth() {
    local pass
    mkdir -p "$DIR"
    (
        umask 077
        [ -s "$PASS_FILE" ] || openssl rand -hex 32 >"$PASS_FILE"
        pass=$(cat "$PASS_FILE")
        cat >"$ACL_CONF.new" <<EOF
# written by deploy/local/redis.sh; holds the password: mode 600, never in the repository
protected-mode yes
user default on nopass resetchannels -@all +ping
user tessera on >$pass ~* &* +@all
masteruser tessera
masterauth $pass
EOF
        mv "$ACL_CONF.new" "$ACL_CONF"
    )
}

running() {
    local pid
    pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start_node() {
    local n=$1 p d i
    p=$(port_of "$n")
    d=$(dir_of "$n")
    running "$n" && return 0
    mkdir -p "$d"
    [ -s "$ACL_CONF" ] || make_auth
    redis-server "$ACL_CONF" --bind 127.0.0.1 --port "$p" --cluster-enabled yes \
        --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 5000 \
        --cluster-require-full-coverage no --cluster-allow-reads-when-down yes \
        --dir "$d" --save '' --appendonly no --daemonize yes --pidfile "$d/redis.pid" \
        --logfile "$d/redis.log" >/dev/null
    for ((i = 0; i < 300; i++)); do
        cli "$n" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    tail -5 "$d/redis.log" >&2 || true
    die "$n did not start on port $p (see $d/redis.log)"
}

stop_node() {
    local n=$1 pid i
    pid=$(pid_of "$n")
    running "$n" || return 0
    cli "$n" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
}

created() { [ "$(cli redis-1 cluster info 2>/dev/null | grep -c '^cluster_slots_assigned:16384')" = 1 ]; }

wait_ok() {
    local n i
    for ((i = 0; i < 200; i++)); do
        local ok=1
        for n in "${NODES[@]}"; do
            cli "$n" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
        done
        [ $ok = 1 ] && return 0
        sleep 0.05
    done
    die "the cluster did not reach cluster_state:ok"
}

nodes_list() {
    local n out=""
    for n in "${NODES[@]}"; do out="${out:+$out,}127.0.0.1:$(port_of "$n")"; done
    echo "$out"
}

cmd=${1:-}
case "$cmd" in
up)
    command -v redis-server >/dev/null || die "redis-server is not installed (scripts/deps.sh)"
    make_auth
    for n in "${NODES[@]}"; do start_node "$n"; done
    if ! created; then
        args=()
        for n in "${NODES[@]}"; do args+=("127.0.0.1:$(port_of "$n")"); done
        rcli --cluster create "${args[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 ||
            die "cluster create failed (see $DIR/create.log)"
    fi
    wait_ok
    echo "redis cluster up: $(nodes_list)"
    ;;
down)
    for n in "${NODES[@]}"; do stop_node "$n"; done
    ;;
destroy)
    for n in "${NODES[@]}"; do stop_node "$n"; done
    rm -rf "$DIR"
    ;;
start)
    [ $# -eq 2 ] || die "usage: redis.sh start NAME"
    start_node "$2"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: redis.sh stop NAME"
    port_of "$2" >/dev/null
    stop_node "$2"
    ;;
status)
    for n in "${NODES[@]}"; do
        if running "$n"; then
            st=$(cli "$n" cluster info 2>/dev/null | sed -n 's/^cluster_state:\(.*\)\r\?$/\1/p' | tr -d '\r')
            keys=$(cli "$n" dbsize 2>/dev/null || echo "?")
            printf '%-8s port %-5s pid %-7s cluster %-4s keys %s\n' "$n" "$(port_of "$n")" "$(pid_of "$n")" "$st" "$keys"
        else
            printf '%-8s port %-5s stopped\n' "$n" "$(port_of "$n")"
        fi
    done
    ;;
nodes)
    nodes_list
    ;;
password-file)
    echo "$PASS_FILE"
    ;;
cli)
    [ $# -ge 2 ] || die "usage: redis.sh cli NAME ARGS..."
    cli "${@:2}"
    ;;
*)
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
