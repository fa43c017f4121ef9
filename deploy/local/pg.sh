#!/usr/bin/env bash
# pg.sh - the local PostgreSQL 15 cluster: N nodes pg-1..pg-N, each run by its own Patroni
# agent, one etcd member as Patroni's store (DCS), synchronous replication, automatic failover.
#
#   pg.sh up                  create what is missing and start etcd and every node; waits until a
#                             leader takes writes and (N >= 2) a standby is synchronous
#   pg.sh down                stop every node cleanly (SIGTERM to each Patroni), then etcd
#   pg.sh destroy             down, then remove the run directory (data and passwords)
#   pg.sh start NAME          start a node (it rejoins as a standby by itself: pg_rewind) or etcd
#   pg.sh stop NAME           stop a node cleanly (SIGTERM to its Patroni), or etcd
#   pg.sh kill NAME           SIGKILL a node's Patroni and its PostgreSQL together (a host crash),
#                             or etcd
#   pg.sh kill-postgres NAME  SIGKILL the node's postmaster only (Patroni stays and reacts)
#   pg.sh switchover [NAME]   planned change of leader (patronictl switchover); NAME, if given,
#                             must be the synchronous standby (Patroni's rule in sync mode)
#   pg.sh sync strict|off     replication mode: strict (the default: a commit is acknowledged
#                             once a standby has it; none in sync -> writes wait) or off
#                             (asynchronous: faster, a leader crash may lose the last commits)
#   pg.sh status              each node: port, role (leader, sync standby, replica), state,
#                             timeline, lag; and etcd
#   pg.sh leader              the current leader's name
#   pg.sh url [NAME]          the libpq URL: without NAME the multi-host write URL, else one node's
#   pg.sh psql [NAME] [ARG..] psql as the superuser on a node (default: the leader), db postgres
#   pg.sh resolve NAME        the node a name or role alias means now; pg.sh check NAME: it runs
#   pg.sh backup [full|diff|incr]  a pgBackRest backup (default incr; full when none is) into the
#                             repository TESSERA_PG_BACKUP_DIR (default RUN/backup); every WAL
#                             segment is archived there continuously (archive_command), so any
#                             moment since the first backup can be restored
#   pg.sh backups             pgBackRest's info: backups and the archived WAL range
#   pg.sh archive             close the current WAL segment and wait until it is archived
#                             (pgbackrest check): every commit so far can be restored
#   pg.sh time                the leader's clock now, a point to restore to
#
# A new cluster from a backup, up to a point in time: TESSERA_PG_RESTORE_FROM=OLD_RUN_DIR (its
# pgbackrest.conf names the repository; its secrets.env is reused: the roles come with the data)
# and TESSERA_PG_RESTORE_TIME='YYYY-MM-DD HH:MM:SS.uuuuuu+00' (default: the end of the archive)
# with `pg.sh up` in an empty run directory: pg-1 bootstraps by restoring the backup and replaying
# the archive to that point, then leads; the other nodes copy it. Refused if the run directory
# holds a database already.
#
# NAME: pg-1..pg-N, or a role resolved when the command runs: pg-primary (the current leader),
# pg-replica-1, pg-replica-2.. (the other nodes in name order); etcd for start/stop/kill.
#
# Environment: TESSERA_PG_DIR (run directory, default ./run/pg), TESSERA_PG_NODES (1-8, default
# 3), TESSERA_PG_PORT (default 54320). Ports, from P = TESSERA_PG_PORT: PostgreSQL of pg-i on
# P+i-1, etcd client P+8 and peer P+9, Patroni REST of pg-i on P+10+i-1 (all below P+18).
set -euo pipefail

PGBIN=${TESSERA_PG_BIN:-/usr/lib/postgresql/15/bin}
DIR=$(realpath -m "${TESSERA_PG_DIR:-./run/pg}")
BASE=${TESSERA_PG_PORT:-54320}
# TESSERA_PG_REPLICAS is the former knob (replicas besides the primary); still understood.
N=${TESSERA_PG_NODES:-$((${TESSERA_PG_REPLICAS:-2} + 1))}
[[ $N =~ ^[1-8]$ ]] || { echo "pg.sh: TESSERA_PG_NODES must be 1-8" >&2; exit 2; }
NODES=()
for ((i = 1; i <= N; i++)); do NODES+=("pg-$i"); done
ETCD_PORT=$((BASE + 8))
ETCD_PEER=$((BASE + 9))
SCOPE=tessera
STANZA=tessera
REPO=$(realpath -m "${TESSERA_PG_BACKUP_DIR:-$DIR/backup}")
BR_CONF=$DIR/pgbackrest.conf
RESTORE_FROM=${TESSERA_PG_RESTORE_FROM:+$(realpath -m "$TESSERA_PG_RESTORE_FROM")}
RESTORE_TIME=${TESSERA_PG_RESTORE_TIME:-}
APP_USER=tessera
APP_DB=tessera
PGPASS=$DIR/pgpass # the clients' password file (libpq passfile=)
ME=$(id -u)

die() {
    echo "pg.sh: $*" >&2
    exit 1
}

pg_port() { echo $((BASE + ${1#pg-} - 1)); }
rest_port() { echo $((BASE + 10 + ${1#pg-} - 1)); }
rest() { # rest NODE PATH: the body of a Patroni REST answer; fails unless 200
    curl -fs --max-time 2 "http://127.0.0.1:$(rest_port "$1")$2"
}
rest_ok() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$(rest_port "$1")$2"; }
etcd_ok() { [[ $(curl -fs --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null) == *'"true"'* ]]; }

# AS_PG prefixes a server's command to run it as the postgres user (PostgreSQL refuses root).
# setpriv execs in place, unlike runuser, so the pid we record is the server's own.
AS_PG=()
if [ "$ME" -eq 0 ]; then
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql)
fi
# pg_dir DIR [MODE]: a directory the postgres user owns.
pg_dir() {
    if [ "$ME" -eq 0 ]; then install -d -o postgres -g postgres -m "${2:-700}" "$1"; else install -d -m "${2:-700}" "$1"; fi
}

pid_of() { # pid_of NAME: the pid of a running Patroni (pg-N) or etcd
    local f=$DIR/pids/$1.pid p
    [ -f "$f" ] || return 1
    p=$(<"$f")
    kill -0 "$p" 2>/dev/null || return 1
    echo "$p"
}
postmaster_of() { # the pid of a node's running postmaster
    local f=$DIR/$1/data/postmaster.pid p
    [ -f "$f" ] || return 1
    p=$(head -n 1 "$f")
    kill -0 "$p" 2>/dev/null || return 1
    echo "$p"
}

# wait_for WHAT SECONDS CMD..: polls a state every 0.2 s; never a guessed sleep.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    die "$what: not after $secs s (logs: $DIR/log/)"
}

leader() { # the node whose Patroni says it leads (REST /leader answers 200 only there)
    local n
    for n in "${NODES[@]}"; do
        if pid_of "$n" >/dev/null && rest_ok "$n" /leader; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

# resolve NAME: a role alias becomes a node name, now.
resolve() {
    local n l k=0
    case "$1" in
    etcd) echo etcd ;;
    pg-primary) leader || die "pg-primary: no node leads right now" ;;
    pg-replica-[0-9]*)
        l=$(leader) || die "$1: no node leads right now, so the replicas are not known"
        for n in "${NODES[@]}"; do
            [ "$n" = "$l" ] && continue
            k=$((k + 1))
            if [ "pg-replica-$k" = "$1" ]; then
                echo "$n"
                return 0
            fi
        done
        die "$1: this topology has $((N - 1)) replica(s)"
        ;;
    pg-[1-8])
        [ "${1#pg-}" -le "$N" ] || die "unknown node \"$1\" (this topology: ${NODES[*]})"
        echo "$1"
        ;;
    *) die "unknown name \"$1\" (${NODES[*]}, pg-primary, pg-replica-K, etcd)" ;;
    esac
}

# ---- secrets: generated once into the run directory, never in the repository or on a command line

secret() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; } # 24 characters, no ':' or '\'

make_secrets() {
    local f=$DIR/secrets.env
    [ -f "$f" ] && return 0
    (
        umask 077
        {
            echo "SUPERUSER_PASSWORD=$(secret)"
            echo "REPLICATION_PASSWORD=$(secret)"
            echo "REWIND_PASSWORD=$(secret)"
            echo "APP_PASSWORD=$(secret)"
        } >"$f.new"
        mv "$f.new" "$f"
    )
}

load_secrets() {
    # shellcheck source=/dev/null
    . "$DIR/secrets.env"
    # The clients' pgpass (owned by whoever runs this script, mode 600 as libpq demands): the
    # superuser for this script's own psql, the application role for tessera.
    (
        umask 077
        printf '127.0.0.1:*:*:postgres:%s\n127.0.0.1:*:*:%s:%s\n' \
            "$SUPERUSER_PASSWORD" "$APP_USER" "$APP_PASSWORD" >"$PGPASS"
    )
}

# ---- configuration

# write_patroni_yml NODE: the node's Patroni file (mode 600, owned by postgres: it holds passwords).
# Rewritten at every `up` from the same secrets, so an edit here reaches existing clusters; the
# bootstrap.dcs part only counts when the cluster is first made (then `patronictl edit-config`).
write_patroni_yml() {
    local n=$1 f=$DIR/$1/patroni.yml sync=true method=""
    # One node has no standby to wait for: strict synchronous mode would block every commit.
    [ "$N" -eq 1 ] && sync=false
    # A cluster made from a backup: pg-1's bootstrap restores it (Patroni's custom bootstrap)
    # and PostgreSQL replays the old archive up to the point, then promotes.
    if [ -n "$RESTORE_FROM" ]; then
        method="  method: pgbackrest
  pgbackrest:
    command: '$DIR/restore.sh'
    keep_existing_recovery_conf: true
    no_params: true
    recovery_conf: {recovery_target_action: promote}"
    fi
    (
        umask 077
        cat >"$f.new" <<EOF
# Written by deploy/local/pg.sh; regenerated at every "pg.sh up".
scope: $SCOPE
name: $n
log: {level: INFO}
restapi:
  listen: 127.0.0.1:$(rest_port "$n")
  connect_address: 127.0.0.1:$(rest_port "$n")
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
$method
  dcs:
    # A leader that stops renewing its key (host crash) is replaced after at most ttl s, plus
    # one loop of the standbys; a dead postmaster is seen at the next loop (loop_wait) and,
    # with primary_start_timeout 0, not restarted in place: the sync standby is promoted.
    # Patroni needs loop_wait + 2 * retry_timeout <= ttl (here 2 + 2 * 5 = 12).
    ttl: 12
    loop_wait: 2
    retry_timeout: 5
    primary_start_timeout: 0
    maximum_lag_on_failover: 1048576
    # A commit returns only once a standby has it; with no standby in sync, commits wait
    # (strict) rather than go on unprotected. Only a sync standby is promoted on failover.
    synchronous_mode: $sync
    synchronous_mode_strict: $sync
    # etcd down: the leader keeps leading if it reaches every member's REST API (they all
    # agree no one else leads); otherwise it demotes itself, as without failsafe.
    failsafe_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: on
        wal_log_hints: on
        wal_keep_size: 256MB
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 200
        hot_standby_feedback: on
        password_encryption: scram-sha-256
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
postgresql:
  listen: 127.0.0.1:$(pg_port "$n")
  connect_address: 127.0.0.1:$(pg_port "$n")
  data_dir: $DIR/$n/data
  bin_dir: $PGBIN
  pgpass: $DIR/$n/pgpass
  authentication:
    superuser: {username: postgres, password: '$SUPERUSER_PASSWORD'}
    replication: {username: replicator, password: '$REPLICATION_PASSWORD'}
    rewind: {username: rewinder, password: '$REWIND_PASSWORD'}
  parameters:
    unix_socket_directories: '$DIR/sock'
    # continuous archiving: every WAL segment to the pgBackRest repository (pg.sh backup)
    archive_mode: 'on'
    archive_command: 'pgbackrest --config=$BR_CONF --stanza=$STANZA archive-push %p'
    archive_timeout: 60
    shared_buffers: 64MB
    logging_collector: off
  pg_hba:
    - local all postgres peer
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}
EOF
        [ "$ME" -eq 0 ] && chown postgres:postgres "$f.new"
        mv "$f.new" "$f"
    )
}

# write_backrest_conf: pgBackRest's file, every node of this cluster a pg host (it backs up from
# whichever leads), the repository local; owned by postgres, which runs archive_command.
write_backrest_conf() {
    local n i=0
    (
        umask 077
        {
            printf '[global]\nrepo1-path=%s\nrepo1-retention-full=2\nstart-fast=y\n' "$REPO"
            printf 'log-path=%s/log\nlock-path=%s/pgbackrest-lock\nlog-level-console=warn\n' "$DIR" "$DIR"
            printf 'log-level-file=info\narchive-timeout=60\n\n[%s]\n' "$STANZA"
            for n in "${NODES[@]}"; do
                i=$((i + 1))
                printf 'pg%d-path=%s/%s/data\npg%d-port=%d\npg%d-socket-path=%s/sock\n' \
                    "$i" "$DIR" "$n" "$i" "$(pg_port "$n")" "$i" "$DIR"
            done
        } >"$BR_CONF.new"
        [ "$ME" -eq 0 ] && chown postgres:postgres "$BR_CONF.new"
        mv "$BR_CONF.new" "$BR_CONF"
    )
}

# write_restore_sh: pg-1's bootstrap from the old cluster's backup (Patroni runs it as postgres).
# pgBackRest writes the recovery settings (restore_command from the old repository, the target
# time, promote at the end); Patroni keeps them (keep_existing_recovery_conf).
write_restore_sh() {
    local target="--type=default"
    [ -n "$RESTORE_TIME" ] && target="--type=time --target='$RESTORE_TIME' --target-action=promote"
    {
        echo '#!/bin/sh'
        echo "# Written by deploy/local/pg.sh: pg-1 bootstraps from the backup of $RESTORE_FROM."
        echo "exec pgbackrest --config='$RESTORE_FROM/pgbackrest.conf' --stanza=$STANZA restore \\"
        echo "    --pg1-path='$DIR/pg-1/data' $target --log-level-console=info"
    } >"$DIR/restore.sh"
    chmod 755 "$DIR/restore.sh"
}

backrest() { "${AS_PG[@]}" pgbackrest --config="$BR_CONF" --stanza="$STANZA" "$@"; }

# patronictl's own file: where etcd is, no secrets.
write_ctl_yml() {
    printf 'scope: %s\netcd3:\n  hosts: 127.0.0.1:%d\n' "$SCOPE" "$ETCD_PORT" >"$DIR/patronictl.yml"
}
ctl() { patronictl -c "$DIR/patronictl.yml" "$@"; }

prepare() {
    local n
    install -d -m 755 "$DIR"
    if [ "$ME" -eq 0 ]; then
        "${AS_PG[@]}" test -x "$DIR" ||
            die "the postgres user cannot reach $DIR (a parent is not searchable)"
    fi
    install -d -m 700 "$DIR/pids"
    pg_dir "$DIR/sock"
    pg_dir "$DIR/log" 755
    pg_dir "$DIR/etcd"
    pg_dir "$REPO"
    pg_dir "$DIR/pgbackrest-lock"
    if [ -n "$RESTORE_FROM" ]; then
        [ -f "$RESTORE_FROM/pgbackrest.conf" ] || die "no pgbackrest.conf in $RESTORE_FROM"
        [ "$REPO" != "$(sed -n 's/^repo1-path=//p' "$RESTORE_FROM/pgbackrest.conf")" ] ||
            die "the new cluster needs a backup repository of its own (TESSERA_PG_BACKUP_DIR)"
        [ -f "$DIR/secrets.env" ] || install -m 600 "$RESTORE_FROM/secrets.env" "$DIR/secrets.env"
        write_restore_sh
    fi
    make_secrets
    load_secrets
    for n in "${NODES[@]}"; do
        pg_dir "$DIR/$n"
        write_patroni_yml "$n"
    done
    write_backrest_conf
    write_ctl_yml
}

# ---- processes

# spawn NAME CMD..: a server as postgres, in its own session (a kill of its group reaches all of
# it), from / (postgres may not read the caller's directory). The recorded pid is the server's:
# every step execs.
spawn() {
    local n=$1
    shift
    pid_of "$n" >/dev/null && return 0
    (cd / && exec setsid "${AS_PG[@]}" "$@" >>"$DIR/log/$n.log" 2>&1 </dev/null) &
    echo $! >"$DIR/pids/$n.pid"
}

start_etcd() {
    if ! pid_of etcd >/dev/null; then
        spawn etcd etcd --name e1 --data-dir "$DIR/etcd/data" --logger zap \
            --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
            --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
            --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
            --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
            --initial-cluster "e1=http://127.0.0.1:$ETCD_PEER"
    fi
    wait_for "etcd answers on 127.0.0.1:$ETCD_PORT" 30 etcd_ok
}

start_node() {
    local n=$1
    pid_of "$n" >/dev/null || spawn "$n" patroni "$DIR/$n/patroni.yml"
}

# stop_proc NAME [SECONDS]: SIGTERM (Patroni then stops PostgreSQL cleanly), wait for the exit.
stop_proc() {
    local n=$1 secs=${2:-120} p
    p=$(pid_of "$n") || return 0
    kill -TERM "$p" 2>/dev/null || true
    wait_for "$n stops" "$secs" bash -c "! kill -0 $p 2>/dev/null"
    rm -f "$DIR/pids/$n.pid"
}

# kill_node NAME: a host crash: Patroni, the postmaster and its children, in one kill. Patroni
# runs in a session of its own (a group kill reaches it all); PostgreSQL's children each call
# setsid, so they are named by their parent, the postmaster.
kill_node() {
    local n=$1 victims=() p pm
    if p=$(pid_of "$n"); then victims+=("-$p"); fi
    if pm=$(postmaster_of "$n"); then
        victims+=("$pm")
        mapfile -t -O ${#victims[@]} victims < <(pgrep -P "$pm")
    fi
    [ ${#victims[@]} -eq 0 ] || kill -KILL -- "${victims[@]}" 2>/dev/null || true
    rm -f "$DIR/pids/$n.pid"
}

node_healthy() { pid_of "$1" >/dev/null && rest_ok "$1" /health; }
has_sync() {
    local n
    for n in "${NODES[@]}"; do rest_ok "$n" /sync && return 0; done
    return 1
}
# writable: a leader exists and, with standbys, one of them is synchronous (else commits wait).
writable() {
    leader >/dev/null || return 1
    [ "$N" -eq 1 ] || has_sync
}
all_healthy() {
    local n
    for n in "${NODES[@]}"; do node_healthy "$n" || return 1; done
}

super_url() { echo "postgresql://postgres@127.0.0.1:$(pg_port "$1")/${2:-postgres}?passfile=$PGPASS"; }

# app_role makes the application role and its database (idempotent). The password goes to
# psql on stdin, not on a command line.
app_role() {
    local l
    l=$(leader) || die "no leader to create the application role on"
    psql "$(super_url "$l")" -XAtq -v ON_ERROR_STOP=1 >/dev/null <<EOF
SELECT 'CREATE ROLE $APP_USER LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_USER')
\gexec
ALTER ROLE $APP_USER PASSWORD '$APP_PASSWORD';
SELECT 'CREATE DATABASE $APP_DB OWNER $APP_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$APP_DB')
\gexec
EOF
}

# ---- commands

cmd_up() {
    local n fresh=1
    # before anything is written: the run directory's files belong to the cluster it holds
    if [ -n "$RESTORE_FROM" ] && ! [ -f "$DIR/restored" ]; then
        for n in "${NODES[@]}"; do
            [ -f "$DIR/$n/data/PG_VERSION" ] &&
                die "refusing to restore into $DIR: it holds a database already (pg.sh destroy it first)"
        done
    fi
    prepare
    start_etcd
    for n in "${NODES[@]}"; do [ -f "$DIR/$n/data/PG_VERSION" ] && fresh=0; done
    if [ "$fresh" = 1 ]; then
        # A new cluster: pg-1 bootstraps alone, so the first leader is known (pg-1); the
        # others then copy it (pg_basebackup) when they start.
        start_node pg-1
        # a restore replays the archive first: more time; a failed bootstrap ends Patroni
        # shellcheck disable=SC2317
        bootstrapped() {
            pid_of pg-1 >/dev/null || die "pg-1's bootstrap failed (its log: $DIR/log/pg-1.log)"
            rest_ok pg-1 /leader
        }
        wait_for "pg-1 bootstraps and leads" "$([ -n "$RESTORE_FROM" ] && echo 600 || echo 90)" \
            bootstrapped
        [ -z "$RESTORE_FROM" ] || touch "$DIR/restored"
    fi
    for n in "${NODES[@]}"; do start_node "$n"; done
    wait_for "every node runs" 120 all_healthy
    wait_for "a leader takes writes (a standby in sync)" 60 writable
    app_role
    # the repository's stanza once (a new cluster, or one made before archiving was on)
    if ! backrest info --output=json 2>/dev/null | jq -e '.[0].status.code == 0' >/dev/null; then
        # a warning, not a stop: the cluster serves without it; `pg.sh backup` then fails loudly
        backrest stanza-create >/dev/null ||
            echo "pg.sh: warning: pgbackrest stanza-create failed ($DIR/log): no backups until it works" >&2
    fi
}

cmd_backup() {
    local type=${1:-incr}
    [[ $type =~ ^(full|diff|incr)$ ]] || die "usage: pg.sh backup [full|diff|incr]"
    writable || die "no leader takes writes: nothing to back up from"
    backrest --type="$type" --log-level-console=info backup || die "pgbackrest backup failed ($DIR/log)"
}

cmd_down() {
    local n l p pids=()
    l=$(leader 2>/dev/null) || l=""
    # Standbys first, then the leader: it keeps every commit, and no standby takes over.
    for n in "${NODES[@]}"; do
        [ "$n" = "$l" ] && continue
        if p=$(pid_of "$n"); then kill -TERM "$p"; pids+=("$n"); fi
    done
    for n in "${pids[@]}"; do stop_proc "$n"; done
    [ -n "$l" ] && stop_proc "$l"
    for n in "${NODES[@]}"; do stop_proc "$n"; done # a leaderless leftover
    stop_proc etcd
}

cmd_destroy() {
    local n
    cmd_down || true
    # Whatever survived a clean stop goes the hard way: nothing may keep the ports.
    for n in "${NODES[@]}"; do kill_node "$n"; done
    if p=$(pid_of etcd); then kill -KILL "$p"; fi
    rm -rf "$DIR"
}

cmd_start() {
    local n
    n=$(resolve "$1")
    [ -d "$DIR/pids" ] || die "run \"pg.sh up\" first"
    if [ "$n" = etcd ]; then
        start_etcd
        return
    fi
    start_node "$n"
    # A node that failed rejoins as a standby (pg_rewind when it diverged): wait for it to run.
    wait_for "$n runs" 120 node_healthy "$n"
}

cmd_stop() {
    local n
    n=$(resolve "$1")
    stop_proc "$n"
}

cmd_kill() {
    local n p
    n=$(resolve "$1")
    if [ "$n" = etcd ]; then
        if p=$(pid_of etcd); then kill -KILL "$p"; fi
        rm -f "$DIR/pids/etcd.pid"
        return
    fi
    kill_node "$n"
}

cmd_kill_postgres() {
    local n pm
    n=$(resolve "$1")
    [ "$n" != etcd ] || die "etcd has no postmaster"
    pm=$(postmaster_of "$n") || die "$n: no postmaster running"
    kill -KILL "$pm"
}

cmd_switchover() {
    local old new out args=(--force)
    old=$(leader) || die "no leader to switch over from"
    # Patroni needs a synchronous standby to hand over to; a node that just (re)joined may
    # not be one yet.
    wait_for "a standby in sync before the switchover" 60 writable
    if [ $# -gt 0 ]; then
        new=$(resolve "$1")
        [ "$new" != "$old" ] || die "$new already leads"
        # In synchronous mode Patroni hands over only to the synchronous standby (the one
        # known to have every commit); it refuses any other candidate.
        [ "$N" -eq 1 ] || rest_ok "$new" /sync ||
            die "$new is not the synchronous standby; Patroni switches over only to that one (pg.sh status)"
        args+=(--candidate "$new")
    fi
    out=$(ctl switchover "${args[@]}" "$SCOPE" 2>&1) || true
    printf '%s\n' "$out"
    # patronictl exits 0 even when Patroni refused: its last line says which.
    [[ $out == *"Successfully switched over"* ]] || die "switchover refused or failed (above)"
    # Done when another node leads, the old leader runs again (as a standby) and, with
    # standbys, one of them is in sync: writes commit again.
    # shellcheck disable=SC2317
    moved() { l=$(leader) && [ "$l" != "$old" ] && { [ -z "${new:-}" ] || [ "$l" = "$new" ]; }; }
    wait_for "a new leader" 60 moved
    wait_for "$old runs again as a standby" 60 node_healthy "$old"
    wait_for "a standby in sync" 60 writable
    leader
}

# cmd_sync changes the replication mode of the running cluster (Patroni's dynamic
# configuration in etcd); every agent applies it within a loop.
cmd_sync() {
    local on
    case "${1:-}" in
    strict) on=true ;;
    off) on=false ;;
    *) die "usage: pg.sh sync strict|off" ;;
    esac
    ctl edit-config --force --set "synchronous_mode=$on" --set "synchronous_mode_strict=$on" \
        "$SCOPE" >/dev/null || die "patronictl edit-config failed"
    # shellcheck disable=SC2317
    applied() { [ "$(rest "$(leader)" /config | jq -r .synchronous_mode)" = "$on" ]; }
    wait_for "the mode to be recorded" 30 applied
    [ "$on" = false ] || wait_for "a standby in sync" 60 writable
}

# members: Patroni's view of the cluster (GET /cluster) from the first agent that answers.
members() {
    local n
    for n in "${NODES[@]}"; do
        if pid_of "$n" >/dev/null && rest "$n" /cluster 2>/dev/null; then return 0; fi
    done
    echo '{"members": []}'
}

cmd_status() {
    local js n line
    js=$(members)
    printf '%-6s %-6s %-13s %-10s %-3s %s\n' NAME PORT ROLE STATE TL LAG
    for n in "${NODES[@]}"; do
        line=$(jq -r --arg n "$n" '.members[] | select(.name == $n)
            | [(.role | sub("_"; " ")), .state, (.timeline // "-" | tostring),
               (if .lag == null then "0 B" elif (.lag | type) == "number" then "\(.lag) B" else .lag end)]
            | @tsv' <<<"$js")
        if [ -z "$line" ] && pid_of "$n" >/dev/null; then
            # Not in the cluster view (etcd down, or the agent just started): the agent's own
            # word (GET /patroni), without the synchronous flag or lag that only etcd knows.
            line=$(rest "$n" /patroni 2>/dev/null | jq -r '[(if .role == "master" then "leader"
                else .role end), .state, (.timeline // "-" | tostring), "?"] | @tsv') ||
                line=$'-\tstarting\t-\t-'
        fi
        [ -n "$line" ] || line=$'-\tstopped\t-\t-'
        IFS=$'\t' read -r role state tl lag <<<"$line"
        printf '%-6s %-6s %-13s %-10s %-3s %s\n' "$n" "$(pg_port "$n")" "$role" "$state" "$tl" "$lag"
    done
    if etcd_ok; then state=running; elif pid_of etcd >/dev/null; then state="not answering"; else state=stopped; fi
    printf '%-6s %-6s %-13s %s\n' etcd "$ETCD_PORT" dcs "$state"
}

cmd_url() {
    local n hosts="" user=$APP_USER db=$APP_DB
    if [ $# -gt 0 ]; then
        n=$(resolve "$1")
        echo "postgresql://$user@127.0.0.1:$(pg_port "$n")/$db?passfile=$PGPASS"
        return
    fi
    for n in "${NODES[@]}"; do hosts+="${hosts:+,}127.0.0.1:$(pg_port "$n")"; done
    echo "postgresql://$user@$hosts/$db?target_session_attrs=read-write&passfile=$PGPASS"
}

cmd_psql() {
    local n
    if [ $# -gt 0 ] && [[ $1 != -* ]]; then
        n=$(resolve "$1")
        shift
    else
        n=$(leader) || die "no leader"
    fi
    psql "$(super_url "$n")" -X "$@"
}

need_name() { [ $# -ge 1 ] || die "usage: pg.sh COMMAND NAME"; }

case "${1:-}" in
up) cmd_up ;;
down) if [ -d "$DIR/pids" ]; then cmd_down; fi ;;
destroy) cmd_destroy ;;
start) need_name "${@:2}" && cmd_start "$2" ;;
stop) need_name "${@:2}" && cmd_stop "$2" ;;
kill) need_name "${@:2}" && cmd_kill "$2" ;;
kill-postgres) need_name "${@:2}" && cmd_kill_postgres "$2" ;;
switchover) cmd_switchover "${@:2}" ;;
sync) cmd_sync "${@:2}" ;;
status) cmd_status ;;
leader) leader || die "no node leads right now" ;;
url) cmd_url "${@:2}" ;;
psql) cmd_psql "${@:2}" ;;
names) printf '%s\n' "${NODES[@]}" etcd ;;
backup) cmd_backup "${@:2}" ;;
backups) backrest info ;;
archive) backrest check || die "the archive does not work (pgbackrest check; $DIR/log)" ;;
time) psql "$(super_url "$(leader)")" -XAtq -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'" ;;
# for deploy/local/cluster: the node a name or role means now; whether a node or etcd answers
resolve) need_name "${@:2}" && resolve "$2" ;;
check)
    need_name "${@:2}"
    n=$(resolve "$2")
    if [ "$n" = etcd ]; then etcd_ok; else node_healthy "$n"; fi
    ;;
*)
    sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
