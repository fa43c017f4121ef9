#!/usr/bin/python3
"""Fault drill: a network partition of one storage node (alive, but unreachable).

Three `tessera storage` nodes, the third in a network namespace of its own
joined to this one by a veth pair (10.251.0.1/30 here, 10.251.0.2 there: test
hosts this drill creates and removes). `tessera serve` runs on the ring of the
three (R=2, W=2, connect timeout 300 ms) under a bounded mixed load of uploads
and byte-exact GETs. The partition takes the namespace's side of the link
down: the node keeps running, its packets are dropped, connections to it time
out instead of being refused. Then the link comes back and `tessera repair`
runs. The ledger: every upload answered 201 reads back byte-exact, during the
partition and after; no 5xx at all; after repair every blob is on exactly two
nodes (serve runs no job threads here, so no variant is written while repair
and the listings run).

Needs root (ip netns, veth). Prints requests by outcome, errors during the
partition, latency, and the repair result; exits non-zero on any failure.
"""
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "tessera"))
NS = "tessera-part-%d" % os.getpid()
HOST_IF, NS_IF = "tpv%d" % (os.getpid() % 100000), "tpn%d" % (os.getpid() % 100000)
HOST_IP, NS_IP = "10.251.0.1", "10.251.0.2"
SECONDS = float(os.environ.get("TESSERA_CHAOS_SECONDS", "12"))


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


SECRET = os.urandom(32).hex()  # storage.secret_file of every process (s3 listens beyond loopback)


def signed(method, path):
    """The headers of a storage node request signed with SECRET (src/store/node_auth.h)."""
    date, sha = str(int(time.time())), hashlib.sha256(b"").hexdigest()
    msg = "TESSERA-HMAC-SHA256\n%s\n%s\n%s\n%s" % (method, path, date, sha)
    mac = hmac.new(SECRET.encode(), msg.encode(), hashlib.sha256).hexdigest()
    return {"X-Tessera-Date": date, "X-Tessera-Content-SHA256": sha,
            "Authorization": "Tessera-HMAC-SHA256 " + mac}


def request(port, method, path, body=None, host="127.0.0.1", timeout=15):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body,
                  headers=signed(method, path) if path.startswith("/blobs") else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait(port, host="127.0.0.1", timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if request(port, "GET", "/healthz", host=host, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("%s:%d never answered" % (host, port))


def png(n):
    raw = b"\x00" + bytes([(n >> 16) & 255, (n >> 8) & 255, n & 255])

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def listing(port, host="127.0.0.1"):
    keys, after = set(), ""
    while True:
        st, body = request(port, "GET", "/blobs?limit=1000" + ("&after=" + after if after else ""),
                           host=host)
        if st != 200:
            raise RuntimeError("listing %s:%d: %d" % (host, port, st))
        j = json.loads(body)
        items = j.get("keys") or j.get("items") or j.get("blobs") or []
        for it in items:
            keys.add(it if isinstance(it, str) else it.get("key"))
        nxt = j.get("next") or j.get("next_after")
        if not items or not nxt:
            return keys
        after = nxt


def main():
    work = tempfile.mkdtemp(prefix="tessera-partition-")
    os.chmod(work, 0o755)
    procs = []
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            failures.append(what)

    def spawn(name, argv, netns=None):
        log = open(os.path.join(work, name + ".log"), "w")
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        p = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        procs.append(p)
        return p

    secret_file = os.path.join(work, "storage.secret")
    with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(SECRET)
    os.environ["TESSERA_STORAGE_SECRET_FILE"] = secret_file  # inherited by every process
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", HOST_IP + "/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", NS_IP + "/30", "dev", NS_IF)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")

        p1, p2, p3 = free_port(), free_port(), 9103
        for name, host, port, ns in (("s1", "127.0.0.1", p1, None), ("s2", "127.0.0.1", p2, None),
                                     ("s3", NS_IP, p3, NS)):
            spawn(name, [BIN, "storage", "--listen", "%s:%d" % (host, port),
                         "--storage.data_dir", os.path.join(work, name), "--log.access=false"],
                  netns=ns)
        wait(p1)
        wait(p2)
        wait(p3, host=NS_IP)
        shards = "s1=http://127.0.0.1:%d, s2=http://127.0.0.1:%d, s3=http://%s:%d" % (
            p1, p2, NS_IP, p3)
        # a transfer stalled by the cut fails over after 1 s, well inside the partition window
        # (with the 10 s default every client thread could sit in a stalled read all window)
        ring = ["--storage.shards=" + shards, "--storage.replicas=2", "--storage.write_quorum=2",
                "--storage.connect_timeout=300ms", "--storage.down_backoff=500ms",
                "--storage.read_timeout=1s"]
        sport = free_port()
        serve = spawn("serve", [BIN, "serve", "--listen", "127.0.0.1:%d" % sport,
                                "--storage.data_dir", os.path.join(work, "serve"),
                                "--log.access=false", "--jobs.workers=0", *ring])
        wait(sport)

        ledger = {}  # id -> sha256
        lock = threading.Lock()
        stop = threading.Event()
        window = ["before"]
        counts = {}
        slow = []
        seq = iter(range(1, 1 << 24))

        def worker():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    if random.random() < 0.4 or not ledger:
                        with lock:
                            n = next(seq)
                        st, body = request(sport, "POST", "/api/v1/images", body=png(n))
                        if st == 201:
                            j = json.loads(body)
                            with lock:
                                ledger[j["id"]] = j["sha256"]
                        op = "upload"
                    else:
                        with lock:
                            iid, sha = random.choice(list(ledger.items()))
                        st, body = request(sport, "GET", "/i/" + iid)
                        if st == 200 and hashlib.sha256(body).hexdigest() != sha:
                            st = 599  # wrong bytes: counted as a failure
                        op = "get"
                except (OSError, http.client.HTTPException):
                    st, op = 0, "connection"
                dt = time.monotonic() - t0
                with lock:
                    k = (window[0], op, st)
                    counts[k] = counts.get(k, 0) + 1
                    if window[0] == "partition":
                        slow.append(dt)
                stop.wait(0.01)  # pacing of the load

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        # the scenario: the load runs SECONDS / 3 before, SECONDS / 2 during and SECONDS / 3
        # after the partition
        time.sleep(SECONDS / 3)
        window[0] = "partition"
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "down")
        check(procs[2].poll() is None, "s3 is alive during the partition")
        time.sleep(SECONDS / 2)
        window[0] = "after"
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        time.sleep(SECONDS / 3)
        stop.set()
        for t in threads:
            t.join()
        wait(p3, host=NS_IP, timeout=60)  # the repair needs s3 reachable again

        by = {}
        for (w, op, st), n in counts.items():
            by.setdefault(w, {})
            by[w]["%s %s" % (op, st)] = by[w].get("%s %s" % (op, st), 0) + n
        for w in ("before", "partition", "after"):
            print("   %-9s %s" % (w, json.dumps(by.get(w, {}), sort_keys=True)))
        bad = sum(n for (w, op, st), n in counts.items() if st >= 500 or st == 0)
        check(bad == 0, "no 5xx or failed connection in any window (%d)" % bad)
        part_ok = sum(n for (w, op, st), n in counts.items() if w == "partition" and st in (200, 201))
        check(part_ok > 0, "requests served during the partition: %d" % part_ok)
        if slow:
            slow.sort()
            print("   latency during the partition: p50 %.0f ms, p99 %.0f ms, max %.0f ms" %
                  (slow[len(slow) // 2] * 1000, slow[int(len(slow) * 0.99)] * 1000,
                   slow[-1] * 1000))

        t0 = time.monotonic()
        rep = subprocess.run([BIN, "repair", "--storage.data_dir", os.path.join(work, "serve"),
                              *ring], capture_output=True, text=True, timeout=600)
        print("   repair: %s (%.1f s)" % ((rep.stdout.strip().splitlines() or ["?"])[-1],
                                       time.monotonic() - t0))
        check(rep.returncode == 0, "repair after the partition exits 0")

        lost = [i for i, sha in ledger.items()
                if request(sport, "GET", "/i/" + i)[0] != 200]
        check(not lost, "every one of %d uploads reads back after the partition (%d lost)"
              % (len(ledger), len(lost)))
        lists = [listing(p1), listing(p2), listing(p3, host=NS_IP)]
        keys = set().union(*lists)
        wrong = [k for k in keys if sum(k in l for l in lists) != 2]
        check(not wrong, "after repair every blob is on exactly 2 nodes (%d of %d are not)"
              % (len(wrong), len(keys)))
        serve.send_signal(signal.SIGTERM)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        sh("ip", "link", "del", HOST_IF, check=False)
        sh("ip", "netns", "del", NS, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (0 if failures else 1, 1 if failures else 0))
    return 1 if failures else 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("the partition drill needs root (ip netns, veth)")
        sys.exit(1)
    sys.exit(main())
