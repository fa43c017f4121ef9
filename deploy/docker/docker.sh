#!/usr/bin/env bash
# docker.sh - Tessera's own Docker daemon and images on one machine (tests, CI, a developer).
#
#   docker.sh up          start a private dockerd (idempotent); prints the DOCKER_HOST to use
#   docker.sh down        stop it (containers stop with it; images and volumes stay)
#   docker.sh status      running or not, and its DOCKER_HOST
#   docker.sh host        the DOCKER_HOST of the private daemon
#   docker.sh base        make the base image local/debian:12 when it is missing (debootstrap)
#   docker.sh build       build the tessera image (tessera:dev) and the servers' image of the
#                         Compose topology (tessera-infra:dev) from local/debian:12
#
# The daemon keeps to its own paths and leaves the host's network alone: no docker0 bridge,
# no iptables rules, no forwarding or masquerading (--bridge=none --iptables=false ...), so
# containers run with host networking (builds with --network host). It runs at nice 10: the
# builds and containers it starts share the machine with everything else.
# Environment: TESSERA_DOCKER_ROOT (data root: images, layers, build cache, volumes; default
# /var/lib/tessera-docker, kept between runs so the base image and build layers are cached),
# TESSERA_DOCKER_RUN (socket, pid file, exec root; default /run/tessera-docker),
# TESSERA_IMAGE, TESSERA_INFRA_IMAGE (the images `build` tags; default tessera:dev and
# tessera-infra:dev).
# The base image: no registry is reachable here, so `base` makes Debian 12 with debootstrap
# (--variant=minbase, from the Debian mirror apt uses) and imports it; about a minute.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${TESSERA_DOCKER_ROOT:-/var/lib/tessera-docker}
RUNDIR=${TESSERA_DOCKER_RUN:-/run/tessera-docker}
SOCK=$RUNDIR/docker.sock
PIDFILE=$RUNDIR/dockerd.pid
LOG=$DATA/dockerd.log
IMAGE=${TESSERA_IMAGE:-tessera:dev}
INFRA_IMAGE=${TESSERA_INFRA_IMAGE:-tessera-infra:dev}
BASE=local/debian:12
# Debian's client (20.10, like the daemon): a newer docker earlier on PATH may lack the builder
# this daemon offers.
DOCKER=/usr/bin/docker
export DOCKER_HOST=unix://$SOCK

say() { printf 'docker.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

pid() {
    local p
    p=$(cat "$PIDFILE" 2>/dev/null) || return 1
    kill -0 "$p" 2>/dev/null || return 1
    echo "$p"
}
answers() { "$DOCKER" version >/dev/null 2>&1; }

cmd_up() {
    local i
    [ -x /usr/sbin/dockerd ] || die "dockerd is not installed (scripts/deps.sh installs docker.io)"
    if pid >/dev/null && answers; then
        echo "$DOCKER_HOST"
        return 0
    fi
    mkdir -p "$DATA" "$RUNDIR/exec"
    say "starting dockerd (data root $DATA, log $LOG)"
    setsid nice -n 10 /usr/sbin/dockerd --data-root "$DATA" --exec-root "$RUNDIR/exec" \
        --pidfile "$PIDFILE" -H "$DOCKER_HOST" --bridge=none --iptables=false \
        --ip-forward=false --ip-masq=false --ip6tables=false --userland-proxy=false \
        --storage-driver=overlay2 >>"$LOG" 2>&1 </dev/null &
    for ((i = 0; i < 300; i++)); do
        answers && {
            echo "$DOCKER_HOST"
            return 0
        }
        sleep 0.1
    done
    tail -n 20 "$LOG" >&2
    die "dockerd does not answer on $SOCK after 30 s (log: $LOG)"
}

cmd_down() {
    local p i
    p=$(pid) || return 0
    kill -TERM "$p"
    # dockerd stops its containers (their stop timeouts) and its containerd first
    for ((i = 0; i < 600; i++)); do
        kill -0 "$p" 2>/dev/null || return 0
        sleep 0.1
    done
    die "dockerd ($p) is still running after 60 s"
}

cmd_base() {
    local dir mirror
    answers || die "no daemon at $DOCKER_HOST (docker.sh up)"
    if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
        say "$BASE is there"
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/deps.sh)"
    # the mirror apt uses here (deb822 sources or the classic list)
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    dir=$(mktemp -d "$DATA/debootstrap.XXXXXX")
    say "making $BASE with debootstrap from $mirror (about a minute)"
    if ! nice -n 10 debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2
        rm -rf "$dir"
        die "debootstrap failed (log: $dir.log)"
    fi
    # the image's apt looks where this machine's apt does; no caches or logs in the layer
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*
    tar -C "$dir" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$dir" "$dir.log"
    say "$BASE made"
}

# build_one TAG CONTEXT: BuildKit (built into this daemon; no buildx needed), layers cached in
# the data root, apt reaching the mirror through the host's network
build_one() {
    local t0
    t0=$(date +%s.%N)
    DOCKER_BUILDKIT=1 "$DOCKER" build --network host --build-arg BASE="$BASE" -t "$1" "$2" >&2
    say "built $1 in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
}

cmd_build() {
    answers || die "no daemon at $DOCKER_HOST (docker.sh up)"
    cmd_base
    build_one "$IMAGE" "$ROOT"
    build_one "$INFRA_IMAGE" "$ROOT/deploy/compose/infra"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status)
    if pid >/dev/null && answers; then echo "running $DOCKER_HOST"; else
        echo "stopped"
        exit 3
    fi
    ;;
host) echo "$DOCKER_HOST" ;;
base) cmd_base ;;
build) cmd_build ;;
*)
    awk 'NR > 1 && /^set -euo/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
