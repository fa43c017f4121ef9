#!/usr/bin/python3
"""Fault drills across hosts: the cluster made with `cluster up --hosts` (network namespaces,
deploy/local/hosts.sh), the load generator and ledger of drills.py, one host fault at a time.

Drills: partition-store (store-2 cut off from all others during uploads: writes succeed with
hinted handoff, repair makes the replication whole after healing) and lossy-store (store-1
drops 20 % of the packets it receives: requests succeed). Each prints what drills.py prints;
zero acknowledged uploads or deletes may be lost.

Usage: hosts.py [DRILL ...]. Needs root (ip netns, veth): without it, exits 77 (skipped).
Environment: as drills.py; TESSERA_CHAOS_PORT_OFFSET defaults to 880 here and
TESSERA_HOSTS_NET (the bridge tsr-brN and subnet 10.N.0.0/24) to 78.
"""
import http.client
import os
import sys
import time

os.environ.setdefault("TESSERA_CHAOS_PORT_OFFSET", "880")
os.environ.setdefault("TESSERA_HOSTS_NET", "78")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drills  # noqa: E402


def reachable(host, port):
    """True when the storage node at host:port answers /readyz within a second."""
    c = http.client.HTTPConnection(host, port, timeout=1)
    try:
        c.request("GET", "/readyz")
        return c.getresponse().status == 200
    except OSError:
        return False
    finally:
        c.close()


def drill_partition_store(load):
    """store-2 partitioned while the load uploads; healed; repair; the time of the repair."""
    drills.cluster("partition", "store-2")
    if reachable("10.%s.0.12" % os.environ["TESSERA_HOSTS_NET"], 9102 + drills.OFF):
        load.fail("store-2 still answers while partitioned")
    time.sleep(drills.SECONDS / 2)
    drills.cluster("heal", "store-2")
    drills.cluster("start", "storage-2")  # returns when it answers ready again
    return drills.repair()


def drill_lossy_store(load):
    """store-1 drops 20 % of what it receives (TCP retransmits); then no loss again."""
    drills.cluster("slow", "store-1", "0", "20")
    time.sleep(drills.SECONDS / 2)
    drills.cluster("slow", "store-1", "0", "0")
    return 0.0


drills.UP = ["up", "--hosts"]
drills.DRILLS = [
    ("partition-store", drill_partition_store,
     "store-2 partitioned during uploads, healed, repair"),
    ("lossy-store", drill_lossy_store, "store-1 drops 20 % of its packets, then none"),
]

if __name__ == "__main__":
    if os.geteuid() != 0:
        print("the host drills need root (ip netns, veth)")
        sys.exit(77)
    sys.exit(drills.main(set(sys.argv[1:])))
