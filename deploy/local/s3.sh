#!/usr/bin/env bash
# s3.sh - a local S3 endpoint: OpenStack Swift with s3api + tempauth, and memcached, on loopback.
#
#   s3.sh up        create what is missing (rings, configs, credentials) and start everything,
#                   then create the bucket
#   s3.sh down      stop everything cleanly
#   s3.sh destroy   stop and remove the run directory (every object with it)
#   s3.sh start     start the processes of an existing run directory (no set-up)
#   s3.sh stop      stop the processes (SIGTERM, waited for)
#   s3.sh kill      stop the processes the hard way (SIGKILL, like a crash)
#   s3.sh status    port, pid and health of each process
#   s3.sh url       the blob store URL for storage.shards: s3+http://127.0.0.1:PORT/BUCKET
#   s3.sh credentials   the path of the credentials file (storage.s3_credentials_file)
#
# Environment: TESSERA_S3_DIR (run directory, default ./run/s3), TESSERA_S3_PORT (the S3
# proxy's port; memcached, account, container and object servers on the next four;
# default 18081), TESSERA_S3_BUCKET (default tessera).
# The secret is generated once into DIR/credentials (mode 600) and into the proxy's tempauth
# line (DIR/etc, mode 700): never a fixed password, never on a command line. Swift reads
# /etc/swift/swift.conf whatever its swift_dir: it is written only when absent or still the
# packaged template, with a hash prefix and suffix generated once. workers = 0 keeps every
# server in one process (about 260 MB in all), running as the calling user.
set -euo pipefail

DIR=$(realpath -m "${TESSERA_S3_DIR:-./run/s3}")
BASE=${TESSERA_S3_PORT:-18081}
BUCKET=${TESSERA_S3_BUCKET:-tessera}
ETC=$DIR/etc
SWIFT_CONF=/etc/swift/swift.conf
ACCOUNT=tessera
USER_=s3
PROCS=(memcached account container object proxy)

die() {
    echo "s3.sh: $*" >&2
    exit 1
}

port_of() {
    case "$1" in
    proxy) echo "$BASE" ;;
    memcached) echo $((BASE + 1)) ;;
    account) echo $((BASE + 2)) ;;
    container) echo $((BASE + 3)) ;;
    object) echo $((BASE + 4)) ;;
    *) die "unknown process \"$1\"" ;;
    esac
}

pid_of() { cat "$DIR/$1.pid" 2>/dev/null || true; }

running() {
    local pid
    pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# healthy asks a process whether it serves: Swift's /healthcheck, memcached's "version".
healthy() {
    local p
    p=$(port_of "$1")
    if [ "$1" = memcached ]; then
        (
            exec 3<>"/dev/tcp/127.0.0.1/$p" || exit 1
            printf 'version\r\n' >&3
            read -r -t 1 line <&3 && [[ $line == VERSION* ]]
        ) 2>/dev/null
    else
        [ "$(curl -s -m 1 "http://127.0.0.1:$p/healthcheck" 2>/dev/null)" = OK ]
    fi
}

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# swift_conf writes /etc/swift/swift.conf once: the hash path prefix and suffix must never change
# after objects are stored (they place every object), so an existing choice is kept.
swift_conf() {
    if [ -f "$SWIFT_CONF" ] && ! grep -q '^swift_hash_path_suffix *= *changeme' "$SWIFT_CONF"; then
        return 0
    fi
    mkdir -p "$(dirname "$SWIFT_CONF")"
    umask 022
    cat >"$SWIFT_CONF.tmp" <<EOF
# Written by tessera deploy/local/s3.sh: generated once, keep it (it places every object).
[swift-hash]
swift_hash_path_suffix = $(random_hex 16)
swift_hash_path_prefix = $(random_hex 16)

[storage-policy:0]
name = Policy-0
default = yes
EOF
    mv "$SWIFT_CONF.tmp" "$SWIFT_CONF"
}

server_conf() {
    local name=$1
    cat >"$ETC/$name-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $(port_of "$name")
workers = 0
swift_dir = $ETC
devices = $DIR/srv
mount_check = false
log_name = $name
log_level = WARNING

[pipeline:main]
pipeline = healthcheck $name-server

[app:$name-server]
use = egg:swift#$name

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
    case "$name" in
    container) printf '\n[container-sync]\n' >>"$ETC/$name-server.conf" ;;
    object) printf '\n[object-replicator]\n' >>"$ETC/$name-server.conf" ;;
    esac
}

proxy_conf() {
    local secret=$1
    cat >"$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $BASE
workers = 0
swift_dir = $ETC
log_name = proxy
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
# virtual-hosted requests: BUCKET.localhost (curl resolves *.localhost to loopback itself)
storage_domain = localhost

[filter:tempauth]
use = egg:swift#tempauth
user_${ACCOUNT}_${USER_} = $secret .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$(port_of memcached)

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF
}

# setup creates the run directory once: rings (one device, one replica: Swift's own redundancy
# is not what is tested here), configs, the generated secret and the credentials file.
setup() {
    local kind secret
    command -v swift-proxy-server >/dev/null && command -v memcached >/dev/null ||
        die "Swift or memcached is not installed (scripts/deps.sh)"
    swift_conf
    [ -f "$DIR/credentials" ] && [ -f "$ETC/object.ring.gz" ] && return 0
    mkdir -p "$DIR/srv/d1" "$DIR/log"
    install -d -m 700 "$ETC"
    for kind in account container object; do
        (
            cd "$ETC"
            rm -f "$kind.builder"
            swift-ring-builder "$kind.builder" create 6 1 1 >/dev/null
            swift-ring-builder "$kind.builder" add "r1z1-127.0.0.1:$(port_of "$kind")/d1" 100 >/dev/null
            swift-ring-builder "$kind.builder" rebalance >/dev/null || [ -f "$kind.ring.gz" ]
        )
        server_conf "$kind"
    done
    secret=$(random_hex 24)
    (umask 077 && proxy_conf "$secret")
    (
        umask 077
        cat >"$DIR/credentials.tmp" <<EOF
# S3 credentials of the local Swift (generated by deploy/local/s3.sh)
aws_access_key_id = $ACCOUNT:$USER_
aws_secret_access_key = $secret
EOF
    )
    mv "$DIR/credentials.tmp" "$DIR/credentials"
}

# launch starts one process in the background (no wait); a running one is left alone.
launch() {
    local n=$1
    running "$n" && return 0
    if [ "$n" = memcached ]; then
        local as=()
        [ "$(id -u)" -eq 0 ] && as=(-u nobody)
        memcached -l 127.0.0.1 -p "$(port_of memcached)" -U 0 -m 16 -c 256 "${as[@]}" \
            >>"$DIR/log/memcached.log" 2>&1 &
    else
        "swift-$n-server" "$ETC/$n-server.conf" >>"$DIR/log/$n.log" 2>&1 &
    fi
    echo $! >"$DIR/$n.pid"
}

# wait_healthy waits until every named process answers its health check (or one died).
wait_healthy() {
    local n i left
    for ((i = 0; i < 600; i++)); do
        left=0
        for n in "$@"; do
            healthy "$n" && continue
            left=1
            running "$n" && continue
            tail -5 "$DIR/log/$n.log" >&2 || true
            die "$n exited on start (see $DIR/log/$n.log)"
        done
        [ $left = 0 ] && return 0
        sleep 0.05
    done
    die "not healthy after 30 s: $* (see $DIR/log)"
}

# stop_procs signals every named process at once (each takes about 2 s to finish its
# connections), then waits for them all; SIGKILL for any still there after 10 s.
stop_procs() {
    local sig=$1 n i left
    shift
    for n in "$@"; do
        running "$n" && kill "-$sig" "$(pid_of "$n")" 2>/dev/null
    done
    for ((i = 0; i < 200; i++)); do
        left=0
        for n in "$@"; do running "$n" && left=1; done
        [ $left = 0 ] && break
        sleep 0.05
    done
    for n in "$@"; do
        running "$n" && kill -9 "$(pid_of "$n")" 2>/dev/null
        rm -f "$DIR/$n.pid"
    done
    return 0
}

start_all() {
    [ -f "$ETC/proxy-server.conf" ] || die "no run directory in $DIR: run \"s3.sh up\" first"
    # all at once: each Swift server spends a second or two loading Python
    for n in "${PROCS[@]}"; do launch "$n"; done
    wait_healthy "${PROCS[@]}"
}

stop_all() { stop_procs "${1:-TERM}" "${PROCS[@]}"; }

cred() { sed -n "s/^$1 *= *//p" "$DIR/credentials"; }

# make_bucket creates the bucket through Swift's own API (a bucket is a container): the secret
# goes to curl in a header file, never on its command line.
make_bucket() {
    local hdr tok surl code
    hdr=$(mktemp "$DIR/auth.XXXXXX")
    printf 'X-Storage-User: %s\nX-Storage-Pass: %s\n' "$(cred aws_access_key_id)" \
        "$(cred aws_secret_access_key)" >"$hdr"
    tok=$(curl -s -m 10 -D - -o /dev/null -H "@$hdr" "http://127.0.0.1:$BASE/auth/v1.0" | tr -d '\r')
    rm -f "$hdr"
    surl=$(sed -n 's/^X-Storage-Url: //Ip' <<<"$tok")
    tok=$(sed -n 's/^X-Auth-Token: //Ip' <<<"$tok")
    [ -n "$tok" ] && [ -n "$surl" ] || die "tempauth gave no token (see $DIR/log/proxy.log)"
    hdr=$(mktemp "$DIR/auth.XXXXXX")
    printf 'X-Auth-Token: %s\n' "$tok" >"$hdr"
    code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X PUT -H "@$hdr" "$surl/$BUCKET")
    rm -f "$hdr"
    case "$code" in
    201 | 202) ;;
    *) die "creating bucket $BUCKET answered $code" ;;
    esac
}

cmd=${1:-}
case "$cmd" in
up)
    setup
    start_all
    make_bucket
    echo "s3 up: s3+http://127.0.0.1:$BASE/$BUCKET (credentials in $DIR/credentials)"
    ;;
down | stop)
    stop_all TERM
    ;;
kill)
    stop_all KILL
    ;;
destroy)
    stop_all TERM
    rm -rf "$DIR"
    ;;
start)
    start_all
    ;;
status)
    for n in "${PROCS[@]}"; do
        if running "$n"; then
            h=unhealthy
            healthy "$n" && h=healthy
            printf '%-10s port %-5s pid %-7s %s\n' "$n" "$(port_of "$n")" "$(pid_of "$n")" "$h"
        else
            printf '%-10s port %-5s stopped\n' "$n" "$(port_of "$n")"
        fi
    done
    ;;
url)
    echo "s3+http://127.0.0.1:$BASE/$BUCKET"
    ;;
credentials)
    echo "$DIR/credentials"
    ;;
*)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
