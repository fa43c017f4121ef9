#!/usr/bin/env bash
# Installs every Debian package Tessera needs to build, run and test.
# Idempotent: only packages that are missing are installed.
set -euo pipefail

pkgs=(
    # build
    build-essential cmake pkg-config clang-format
    # libraries
    libmicrohttpd-dev libjansson-dev libinih-dev libvips-dev libsqlite3-dev
    libssl-dev libcurl4-openssl-dev libpq-dev libhiredis-dev
    # tests
    libcmocka-dev curl python3 libimage-exiftool-perl
    # fuzzing (tests/fuzz, -DTESSERA_FUZZ=ON): clang 14 with libFuzzer and the sanitizers
    clang libclang-rt-14-dev
    # browser test of the web page (npm tools: scripts/npm-deps.sh)
    chromium
    # runtime of the image pipeline (BMP loads through ImageMagick's loader in libvips 8.14)
    libvips-tools imagemagick
    # servers of the cluster (started by the tests and the local cluster launcher)
    postgresql postgresql-client redis-server redis-tools nginx varnish varnish-modules
    # PostgreSQL failover: a Patroni agent per node, etcd as its store; jq reads their JSON
    patroni etcd-server etcd-client jq
    # continuous archiving and point-in-time recovery of the metadata (deploy/local/pg.sh backup)
    pgbackrest
    # the S3 endpoint of deploy/local/s3.sh: OpenStack Swift with s3api, and its memcached
    swift swift-proxy swift-object swift-container swift-account python3-swift memcached
    # fault drills: network namespaces (ip), tmpfs mounts (mount); pkill (procps); packet loss
    # inside a host's namespace (iptables, the nft backend on Debian 12)
    iproute2 util-linux procps iptables
    # the launchers generate secrets with `openssl rand` (libssl-dev does not bring the command)
    openssl
    # monitoring of the local cluster: Prometheus and promtool (alert rules and their tests)
    prometheus
    # benchmarks
    wrk
    # containers (tests/container, deploy/docker/docker.sh): the daemon, Compose 1.29, the
    # offline base image's debootstrap
    docker.io docker-compose debootstrap
)
# kubectl renders the Kubernetes manifests (lint.deploy_schemas); Debian 12 has no package of
# it, so it comes from whatever apt source provides one (the machine image has it)
if apt-cache show kubectl >/dev/null 2>&1; then pkgs+=(kubectl); fi
# node and npm from Debian, unless a node with its own npm is there already
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#pkgs[@]} packages present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
