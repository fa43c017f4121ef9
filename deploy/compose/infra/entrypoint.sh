#!/usr/bin/env bash
# tessera-infra ROLE - one server of the Compose topology (deploy/compose/docker-compose.yml),
# configured from the environment and the secret files Compose mounts in /run/secrets. It
# renders the role's configuration (mode 600 where it holds a password, never on a command
# line), then execs the server as its own unprivileged user; tini (compose `init: true`) is
# PID 1 and reaps what the servers leave.
#
#   etcd        Patroni's store: ETCD_PORT (clients), ETCD_PEER_PORT
#   pg-node     PostgreSQL 15 run by Patroni: PG_NAME, PG_PORT, PATRONI_PORT, ETCD_PORT;
#               secrets pg_superuser, pg_replication, pg_rewind
#   pg-setup    one shot: waits for a leader with a synchronous standby, creates the role and
#               database tessera (idempotent): PG_PORTS, PATRONI_PORTS; secrets pg_superuser, pg_app
#   redis-node  a Redis Cluster node: REDIS_PORT; secret redis_password
#   redis-init  one shot: creates the cluster once (idempotent): REDIS_NODES
#   lb          nginx from deploy/nginx/tessera.conf.in (mounted at /etc/tessera/nginx.conf.in):
#               LB_ADDR, LB_PORT, READ_PORT, WRITE_PORTS, MAX_UPLOAD_BYTES; web/ at /srv/tessera-web
#   edge        Varnish from deploy/varnish/tessera.vcl (mounted at /etc/tessera/tessera.vcl):
#               EDGE_ADDR, EDGE_PORT, EDGE_ADMIN_PORT, LB_PORT
#   health ROLE the container's health check for ROLE (exit 0 when ready)
set -euo pipefail

die() {
    echo "tessera-infra: $*" >&2
    exit 1
}
need() { # need VAR..: the role's settings must be given
    local v
    for v in "$@"; do [ -n "${!v:-}" ] || die "$ROLE needs $v in the environment"; done
}
secret() { # secret NAME: the content of /run/secrets/NAME (one line)
    [ -r "/run/secrets/$1" ] || die "$ROLE needs the secret $1 (/run/secrets/$1)"
    head -n 1 "/run/secrets/$1"
}
as() { # as USER CMD..: exec CMD as USER
    local u=$1
    shift
    exec setpriv --reuid="$u" --regid="$u" --init-groups env HOME=/tmp "$@"
}
# private DIR USER: a directory only USER reads
private() { install -d -o "$2" -g "$(id -gn "$2")" -m 700 "$1"; }
wait_for() { # wait_for WHAT SECONDS CMD..: poll a state every 0.5 s
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 2; i++)); do
        "$@" && return 0
        sleep 0.5
    done
    die "$what: not after $secs s"
}

etcd_role() {
    need ETCD_PORT ETCD_PEER_PORT
    local c=http://127.0.0.1:$ETCD_PORT p=http://127.0.0.1:$ETCD_PEER_PORT
    as etcd etcd --name e1 --data-dir /var/lib/tessera-etcd/data --logger zap \
        --listen-client-urls "$c" --advertise-client-urls "$c" \
        --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "e1=$p"
}

pg_node() {
    need PG_NAME PG_PORT PATRONI_PORT ETCD_PORT
    local d=/run/tessera-pg
    private "$d" postgres
    private "$d/sock" postgres
    (
        umask 077
        # the same settings as deploy/local/pg.sh (the comments there say why)
        cat >"$d/patroni.yml" <<YML
scope: tessera
name: $PG_NAME
log: {level: INFO}
restapi:
  listen: 127.0.0.1:$PATRONI_PORT
  connect_address: 127.0.0.1:$PATRONI_PORT
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    ttl: 12
    loop_wait: 2
    retry_timeout: 5
    primary_start_timeout: 0
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: true
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
    - data-checksums
postgresql:
  listen: 127.0.0.1:$PG_PORT
  connect_address: 127.0.0.1:$PG_PORT
  data_dir: /var/lib/tessera-pg/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: $d/pgpass
  authentication:
    superuser: {username: postgres, password: '$(secret pg_superuser)'}
    replication: {username: replicator, password: '$(secret pg_replication)'}
    rewind: {username: rewinder, password: '$(secret pg_rewind)'}
  parameters:
    unix_socket_directories: '$d/sock'
    shared_buffers: 64MB
    logging_collector: off
  pg_hba:
    - local all postgres peer
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}
YML
    )
    chown postgres:postgres "$d/patroni.yml"
    cd /var/lib/tessera-pg
    as postgres patroni "$d/patroni.yml"
}

patroni_ok() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$1$2"; }
# the Patroni port of the node that leads now
pg_leader() {
    local p
    for p in ${PATRONI_PORTS//,/ }; do
        patroni_ok "$p" /leader && { echo "$p"; return 0; }
    done
    return 1
}
pg_writable() {
    local p
    pg_leader >/dev/null || return 1
    for p in ${PATRONI_PORTS//,/ }; do patroni_ok "$p" /sync && return 0; done
    return 1
}

pg_setup() {
    need PG_PORTS PATRONI_PORTS
    local app pass hosts="" p
    wait_for "a PostgreSQL leader with a synchronous standby" 180 pg_writable
    app=$(secret pg_app)
    pass=$(mktemp)
    # the superuser's password in a passfile, the application's through stdin: no command line
    printf '127.0.0.1:*:*:postgres:%s\n' "$(secret pg_superuser)" >"$pass"
    for p in ${PG_PORTS//,/ }; do hosts+="${hosts:+,}127.0.0.1:$p"; done
    PGPASSFILE=$pass psql "postgresql://postgres@$hosts/postgres?target_session_attrs=read-write" \
        -XAtq -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT 'CREATE ROLE tessera LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tessera')
\gexec
ALTER ROLE tessera PASSWORD '$app';
SELECT 'CREATE DATABASE tessera OWNER tessera' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tessera')
\gexec
SQL
    rm -f "$pass"
    echo "pg-setup: role and database tessera ready"
}

redis_node() {
    need REDIS_PORT
    local d=/run/tessera-redis
    private "$d" redis
    (
        umask 077
        # the ACL of deploy/local/redis.sh: user tessera may do everything, the default user
        # (no password) only PING, for health checks
        cat >"$d/redis.conf" <<CONF
protected-mode yes
user default on nopass resetchannels -@all +ping
user tessera on >$(secret redis_password) ~* &* +@all
masteruser tessera
masterauth $(secret redis_password)
CONF
    )
    chown redis:redis "$d/redis.conf"
    cd /var/lib/tessera-redis
    as redis redis-server "$d/redis.conf" --bind 127.0.0.1 --port "$REDIS_PORT" \
        --cluster-enabled yes --cluster-config-file "/var/lib/tessera-redis/nodes-$REDIS_PORT.conf" \
        --cluster-node-timeout 5000 --cluster-require-full-coverage no \
        --cluster-allow-reads-when-down yes --dir /var/lib/tessera-redis --save '' --appendonly no \
        --daemonize no
}

rcli() { REDISCLI_AUTH=$(secret redis_password) redis-cli --no-auth-warning --user tessera "$@"; }
redis_created() {
    rcli -h 127.0.0.1 -p "${REDIS_NODES##*:}" cluster info 2>/dev/null | grep -q '^cluster_slots_assigned:16384'
}
redis_ok() {
    local n
    for n in ${REDIS_NODES//,/ }; do
        rcli -h "${n%:*}" -p "${n##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
}

redis_init() {
    need REDIS_NODES
    if ! redis_created; then
        # shellcheck disable=SC2086
        rcli --cluster create ${REDIS_NODES//,/ } --cluster-replicas 0 --cluster-yes
    fi
    wait_for "cluster_state:ok on every Redis node" 60 redis_ok
    echo "redis-init: cluster ready"
}

lb() {
    need LB_PORT READ_PORT WRITE_PORTS
    local d=/run/tessera-lb t reads="" writes="" p i max
    # the master stays root (it opens the container's standard streams, which only root may),
    # its workers run as nobody (no user directive), as in the local cluster
    install -d -m 755 "$d"
    for i in client_body proxy fastcgi uwsgi scgi; do private "$d/$i" nobody; done
    # The read replicas share READ_PORT (SO_REUSEPORT: the kernel spreads connections over
    # them). nginx retries a read only on another server of the upstream, so the one address
    # is listed once per try (proxy_next_upstream_tries 3): a retry opens a new connection,
    # which the kernel hands to a live replica. Never marked down (max_fails=0): the address
    # is the group, not one replica.
    for i in 1 2 3; do reads+="        server 127.0.0.1:$READ_PORT max_fails=0;"$'\n'; done
    for p in ${WRITE_PORTS//,/ }; do writes+="        server 127.0.0.1:$p max_fails=1 fail_timeout=5s;"$'\n'; done
    max=$((${MAX_UPLOAD_BYTES:-52428800} + 65536))
    t=$(</etc/tessera/nginx.conf.in)
    t=${t//@PREFIX@/$d}
    t=${t//@LISTEN@/${LB_ADDR:-127.0.0.1}:$LB_PORT}
    t=${t//@BALANCE@/least_conn;}
    t=${t//@READ_SERVERS@/${reads%$'\n'}}
    t=${t//@WRITE_SERVERS@/${writes%$'\n'}}
    t=${t//@WEB_ROOT@//srv/tessera-web}
    t=${t//@MAX_BODY@/$max}
    # a container logs to its standard streams
    t=${t//error_log $d\/error.log/error_log \/dev\/stderr}
    t=${t//access_log $d\/access.log/access_log \/dev\/stdout}
    printf '%s\n' "$t" >"$d/nginx.conf"
    exec nginx -c "$d/nginx.conf" -p "$d"
}

edge() {
    need EDGE_PORT EDGE_ADMIN_PORT LB_PORT
    local d=/var/lib/varnish/tessera v
    install -d -m 755 "$d"
    v=$(</etc/tessera/tessera.vcl)
    v=${v//@LB_HOST@/127.0.0.1}
    v=${v//@LB_PORT@/$LB_PORT}
    v=${v//@PURGE_ACL@/}
    printf '%s\n' "$v" >"$d/tessera.vcl"
    # the manager stays root and runs the cache process as vcache (Varnish's own jail)
    exec varnishd -F -n "$d/work" -a "${EDGE_ADDR:-127.0.0.1}:$EDGE_PORT" \
        -T "127.0.0.1:$EDGE_ADMIN_PORT" -f "$d/tessera.vcl" -s malloc,256m -p default_grace=0s
}

health() {
    case "${1:-}" in
    etcd) [[ $(curl -fs --max-time 2 "http://127.0.0.1:$ETCD_PORT/health") == *'"true"'* ]] ;;
    pg-node) patroni_ok "$PATRONI_PORT" /health ;;
    redis-node) [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping)" = PONG ] ;;
    lb) curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$LB_PORT/lb/healthz" ;;
    edge) curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$EDGE_PORT/lb/healthz" ;;
    *) die "health: unknown role \"${1:-}\"" ;;
    esac
}

ROLE=${1:-}
case "$ROLE" in
etcd) etcd_role ;;
pg-node) pg_node ;;
pg-setup) pg_setup ;;
redis-node) redis_node ;;
redis-init) redis_init ;;
lb) lb ;;
edge) edge ;;
health) health "${2:-}" ;;
*)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
