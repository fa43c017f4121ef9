#!/usr/bin/env bash
# pg.sh - the local PostgreSQL 15 topology: one primary and two streaming replicas.
#
#   pg.sh up                 create what is missing (initdb, pg_basebackup) and start every node
#   pg.sh down               stop every node (fast shutdown: clean, no WAL lost)
#   pg.sh destroy            stop and remove the run directory
#   pg.sh start|stop NAME    one node: pg-primary, pg-replica-1, pg-replica-2
#   pg.sh kill NAME          stop a node the hard way (immediate shutdown, like a crash)
#   pg.sh promote NAME       switchover: stop the current primary cleanly, promote NAME,
#                            re-point the other nodes at it (the old primary comes back
#                            as a standby when started again)
#   pg.sh status             role, port and replication state of each node
#   pg.sh url [NAME]         the libpq URL of a node; without NAME the multi-host write URL
#
# Environment: TESSERA_PG_DIR (run directory, default ./run/pg), TESSERA_PG_PORT (primary's
# port, replicas on the next two; default 54320), TESSERA_PG_REPLICAS (0, 1 or 2; default 2),
# TESSERA_PG_BIN (default /usr/lib/postgresql/15/bin).
# Every PostgreSQL binary runs as the postgres user (PostgreSQL refuses root). A node's role
# lives in its data directory (standby.signal), so it survives restarts of this script.
set -euo pipefail

PGBIN=${TESSERA_PG_BIN:-/usr/lib/postgresql/15/bin}
DIR=$(realpath -m "${TESSERA_PG_DIR:-./run/pg}")
BASE=${TESSERA_PG_PORT:-54320}
NREPL=${TESSERA_PG_REPLICAS:-2}
NODES=(pg-primary)
for ((i = 1; i <= NREPL; i++)); do NODES+=("pg-replica-$i"); done

die() {
    echo "pg.sh: $*" >&2
    exit 1
}

# as_pg runs a command as the postgres user (directly when not root), from a directory it can read.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

port_of() {
    case "$1" in
    pg-primary) echo "$BASE" ;;
    pg-replica-1) echo $((BASE + 1)) ;;
    pg-replica-2) echo $((BASE + 2)) ;;
    *) die "unknown node \"$1\" (pg-primary, pg-replica-1, pg-replica-2)" ;;
    esac
}

known() {
    local n
    for n in "${NODES[@]}"; do [ "$n" = "$1" ] && return 0; done
    die "unknown node \"$1\" (this topology: ${NODES[*]})"
}

slot_of() { echo "${1//-/_}"; }
data_of() { echo "$DIR/$1"; }
exists() { [ -f "$(data_of "$1")/PG_VERSION" ]; }
is_standby() { [ -f "$(data_of "$1")/standby.signal" ]; }
running() { exists "$1" && as_pg "$PGBIN/pg_ctl" -D "$(data_of "$1")" status >/dev/null 2>&1; }

sql() { # sql NODE STATEMENT: one unaligned answer
    as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$(port_of "$1")" -U postgres -d postgres -XAtq \
        -v ON_ERROR_STOP=1 -c "$2"
}

# primary_node names the node without standby.signal (the writable one).
primary_node() {
    local n
    for n in "${NODES[@]}"; do
        if exists "$n" && ! is_standby "$n"; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

# set_conf appends settings to a node's postgresql.auto.conf (the last line of a key wins).
set_conf() {
    local node=$1
    shift
    printf '%s\n' "$@" | as_pg tee -a "$(data_of "$node")/postgresql.auto.conf" >/dev/null
}

prepare_dir() {
    install -d -m 755 "$DIR"
    if [ "$(id -u)" -eq 0 ]; then
        as_pg test -x "$DIR" || die "the postgres user cannot reach $DIR (a parent is not searchable)"
        install -d -o postgres -g postgres -m 700 "$DIR/sock"
        install -d -o postgres -g postgres -m 755 "$DIR/log"
    else
        install -d -m 700 "$DIR/sock"
        install -d -m 755 "$DIR/log"
    fi
}

init_primary() {
    local n=pg-primary d
    d=$(data_of "$n")
    [ "$(id -u)" -eq 0 ] && install -d -o postgres -g postgres -m 700 "$d"
    as_pg "$PGBIN/initdb" -D "$d" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 \
        >"$DIR/$n.initdb.log" 2>&1 || die "initdb failed: see $DIR/$n.initdb.log"
    set_conf "$n" "listen_addresses = '127.0.0.1'" "port = $(port_of "$n")" \
        "unix_socket_directories = '$DIR/sock'" "wal_level = replica" "max_wal_senders = 10" \
        "max_replication_slots = 10" "hot_standby = on" "wal_log_hints = on" \
        "wal_keep_size = '256MB'" "shared_buffers = '64MB'" "max_connections = 200" \
        "hot_standby_feedback = on" "logging_collector = off"
}

# init_replica copies the running primary with pg_basebackup -R and its own slot.
init_replica() {
    local n=$1 p d slot
    p=$(primary_node) || die "no primary to copy $n from"
    running "$p" || start_node "$p"
    d=$(data_of "$n")
    slot=$(slot_of "$n")
    sql "$p" "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots
              WHERE slot_name = '$slot' AND NOT active" >/dev/null
    [ "$(id -u)" -eq 0 ] && install -d -o postgres -g postgres -m 700 "$d"
    as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$(port_of "$p")" -U postgres -D "$d" \
        -X stream -c fast -C -S "$slot" -R -d "application_name=$n" \
        >"$DIR/$n.basebackup.log" 2>&1 || die "pg_basebackup of $n failed: see $DIR/$n.basebackup.log"
    set_conf "$n" "port = $(port_of "$n")"
}

start_node() {
    local n=$1
    exists "$n" || die "$n does not exist yet: run \"pg.sh up\""
    running "$n" && return 0
    as_pg "$PGBIN/pg_ctl" -D "$(data_of "$n")" -l "$DIR/log/$n.log" -w -t 60 start >/dev/null ||
        die "$n did not start: see $DIR/log/$n.log"
}

stop_node() { # stop_node NAME [fast|immediate]
    local n=$1 mode=${2:-fast}
    running "$n" || return 0
    as_pg "$PGBIN/pg_ctl" -D "$(data_of "$n")" -m "$mode" -w -t 60 stop >/dev/null
}

# wait_streaming waits (up to 15 s) until every running standby streams from the primary.
wait_streaming() {
    local p want=0 got n
    p=$(primary_node) || return 0
    running "$p" || return 0
    for n in "${NODES[@]}"; do
        if [ "$n" != "$p" ] && running "$n"; then want=$((want + 1)); fi
    done
    for ((i = 0; i < 150; i++)); do
        got=$(sql "$p" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        [ "$got" -ge "$want" ] && return 0
        sleep 0.1
    done
    echo "pg.sh: only $got of $want standbys streaming after 15 s" >&2
    return 1
}

cmd_up() {
    local n
    prepare_dir
    if ! primary_node >/dev/null; then
        exists pg-primary && die "no node is a primary (every node has standby.signal)"
        init_primary
    fi
    start_node "$(primary_node)"
    for n in "${NODES[@]}"; do
        exists "$n" || init_replica "$n"
        start_node "$n"
    done
    wait_streaming
}

cmd_down() {
    local n
    for n in "${NODES[@]}"; do stop_node "$n"; done
}

cmd_promote() {
    local t=$1 old n tport
    known "$t"
    exists "$t" || die "$t does not exist"
    is_standby "$t" || die "$t is already the primary"
    old=$(primary_node) || old=""
    # Stop the old primary first and cleanly: promoting while it runs would leave two
    # writable nodes, and its last WAL must reach the standbys before they fork.
    [ -n "$old" ] && stop_node "$old" fast
    start_node "$t"
    as_pg "$PGBIN/pg_ctl" -D "$(data_of "$t")" -w -t 60 promote >/dev/null
    tport=$(port_of "$t")
    for n in "${NODES[@]}"; do
        [ "$n" = "$t" ] && continue
        exists "$n" || continue
        local slot
        slot=$(slot_of "$n")
        sql "$t" "SELECT pg_create_physical_replication_slot('$slot') WHERE NOT EXISTS
                  (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot')" >/dev/null
        # The old primary comes back as a standby when started: never two primaries.
        is_standby "$n" || as_pg touch "$(data_of "$n")/standby.signal"
        set_conf "$n" \
            "primary_conninfo = 'host=127.0.0.1 port=$tport user=postgres application_name=$n'" \
            "primary_slot_name = '$slot'"
        if running "$n"; then sql "$n" "SELECT pg_reload_conf()" >/dev/null; fi
    done
    wait_streaming || true
}

cmd_status() {
    local n role state
    for n in "${NODES[@]}"; do
        if ! exists "$n"; then
            state="absent"
            role="-"
        else
            role=$(is_standby "$n" && echo standby || echo primary)
            running "$n" && state="running" || state="stopped"
        fi
        printf '%-13s %-6s %-8s %s\n' "$n" "$(port_of "$n")" "$role" "$state"
    done
    local p
    if p=$(primary_node) && running "$p"; then
        sql "$p" "SELECT application_name, state, coalesce(replay_lag::text, '0')
                  FROM pg_stat_replication ORDER BY 1" | sed 's/^/  replication: /'
    fi
}

cmd_url() {
    if [ $# -gt 0 ]; then
        known "$1"
        echo "postgresql://postgres@127.0.0.1:$(port_of "$1")/postgres"
        return
    fi
    local hosts="" n
    for n in "${NODES[@]}"; do hosts+="${hosts:+,}127.0.0.1:$(port_of "$n")"; done
    echo "postgresql://postgres@$hosts/postgres?target_session_attrs=read-write"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
destroy)
    cmd_down || true
    rm -rf "$DIR"
    ;;
start)
    known "${2:?NAME}"
    start_node "$2"
    ;;
stop)
    known "${2:?NAME}"
    stop_node "$2" fast
    ;;
kill)
    known "${2:?NAME}"
    stop_node "$2" immediate
    ;;
promote) cmd_promote "${2:?NAME}" ;;
status) cmd_status ;;
url) cmd_url "${@:2}" ;;
*)
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
