# shellcheck shell=bash
# hosts.sh - sourced by deploy/local/cluster: the cluster's hosts as network namespaces.
#
# `cluster up --hosts` (remembered in $RUN/hosts) puts hosts in network namespaces of their
# own, each with one address on a private bridge; the other components stay in the root
# namespace, which reaches the bridge at its first address. This first part namespaces the
# storage hosts: store-1..store-3 run storage-1..storage-3. The bridge, subnet and namespace
# names come from TESSERA_HOSTS_NET (N, default 77): bridge tsr-brN, subnet 10.N.0.0/24 (the
# root namespace 10.N.0.1, store-K 10.N.0.(10+K)), namespaces tsrN-HOST, so two clusters with
# different N do not meet. Needs root (ip netns, veth, iptables inside the namespaces).
#
# Verbs (cluster NAME where NAME is a host or a component on it):
#   partition NAME       cut the host off from all others (its link to the bridge goes down)
#   heal NAME            link up again
#   slow NAME 0 LOSS     drop LOSS % of the packets the host receives (iptables' statistic
#                        match inside the host's namespace; this kernel has no netem). A delay
#                        other than 0 is refused: not built yet.
# `down` removes every namespace and the bridge (the rules live in the namespaces and go too).

HOSTS_NET=${TESSERA_HOSTS_NET:-77}
if ! [[ $HOSTS_NET =~ ^[0-9]+$ ]] || ((HOSTS_NET < 1 || HOSTS_NET > 254)); then
    echo "cluster: TESSERA_HOSTS_NET must be 1..254" >&2
    exit 2
fi
HOSTS_BR=tsr-br$HOSTS_NET
HOSTS_ROOT_ADDR=10.$HOSTS_NET.0.1
declare -A HOST_OF=([storage-1]=store-1 [storage-2]=store-2 [storage-3]=store-3)
declare -A HOST_ADDR=([store-1]=10.$HOSTS_NET.0.11 [store-2]=10.$HOSTS_NET.0.12 [store-3]=10.$HOSTS_NET.0.13)
HOSTS=(store-1 store-2 store-3)

hosts_on() { [ -f "$RUN/hosts" ]; }
host_ns() { echo "tsr$HOSTS_NET-$1"; }
# the root end of a host's veth pair (interface names: at most 15 characters)
host_if() { echo "tsr${HOSTS_NET}h${1//[^0-9a-z]/}"; }

# host_of NAME: the host a component runs on when hosts are on (nothing: the root namespace).
host_of() { if hosts_on; then echo "${HOST_OF[$1]:-}"; fi; }
# addr_of NAME: the address a component listens on and is reached at.
addr_of() {
    local h
    h=$(host_of "$1")
    if [ -n "$h" ]; then echo "${HOST_ADDR[$h]}"; else echo 127.0.0.1; fi
}
# in_host NAME: the command prefix that runs a program on the component's host.
in_host() {
    local h
    h=$(host_of "$1")
    [ -z "$h" ] || echo "ip netns exec $(host_ns "$h")"
}

# host_name NAME: the host NAME means (a host, or a component placed on one).
host_name() {
    if [ -n "${HOST_ADDR[$1]:-}" ]; then
        echo "$1"
    elif [ -n "${HOST_OF[$1]:-}" ]; then
        echo "${HOST_OF[$1]}"
    else
        echo "cluster: \"$1\" is no host (hosts: ${HOSTS[*]}; or a component on one: ${!HOST_OF[*]})" >&2
        return 1
    fi
}

hosts_up() {
    local h ns if
    [ "$(id -u)" = 0 ] || { echo "cluster: --hosts needs root (ip netns, veth)" >&2; return 1; }
    touch "$RUN/hosts"
    if ! ip link show "$HOSTS_BR" >/dev/null 2>&1; then
        ip link add "$HOSTS_BR" type bridge
        ip addr add "$HOSTS_ROOT_ADDR/24" dev "$HOSTS_BR"
    fi
    ip link set "$HOSTS_BR" up
    for h in "${HOSTS[@]}"; do
        ns=$(host_ns "$h")
        if=$(host_if "$h")
        ip netns list | grep -qx "$ns\( .*\)\?" && continue
        ip netns add "$ns"
        ip link add "$if" type veth peer name eth0 netns "$ns"
        ip link set "$if" master "$HOSTS_BR" up
        ip -n "$ns" addr add "${HOST_ADDR[$h]}/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    done
}

hosts_down() {
    local h
    for h in "${HOSTS[@]}"; do
        ip netns del "$(host_ns "$h")" 2>/dev/null || true
    done
    ip link del "$HOSTS_BR" 2>/dev/null || true
}

# The host verbs. partition takes the root end of the host's link down: the host keeps its
# processes and its address but reaches no one and no one reaches it.
host_cmd() {
    local verb=$1 h
    hosts_on || { echo "cluster: $verb needs a cluster made with \`up --hosts\`" >&2; return 1; }
    h=$(host_name "$2") || return 1
    case "$verb" in
    partition) ip link set "$(host_if "$h")" down ;;
    heal) ip link set "$(host_if "$h")" up ;;
    slow)
        [ "$3" = 0 ] || { echo "cluster: slow: a delay is not built yet (give 0)" >&2; return 1; }
        if ! [[ $4 =~ ^[0-9]+$ ]] || (($4 > 100)); then
            echo "cluster: slow: LOSS is a percentage 0..100" >&2
            return 1
        fi
        ip netns exec "$(host_ns "$h")" iptables -F INPUT
        (($4 == 0)) || ip netns exec "$(host_ns "$h")" iptables -A INPUT -m statistic --mode random \
            --probability "$(printf '0.%02d' "$4" | sed 's/^0\.100$/1/')" -j DROP
        ;;
    esac
}
