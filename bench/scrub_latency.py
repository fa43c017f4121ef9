#!/usr/bin/env python3
"""GET latency of a storage node with its scrubber off and on (storage.scrub_bytes_per_s).

Usage: bench/scrub_latency.py [BLOBS=150] [RATE=100M]. A node on a free loopback port holds BLOBS
blobs of 1 MiB; 400 GETs of random blobs (each read to the end) are timed with the scrubber off,
then again with it re-reading continuously at RATE. Prints median and p99 in ms. Not a test.
"""
import hashlib
import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("TESSERA_BIN", os.path.join(os.path.dirname(__file__), "..", "build",
                                                 "tessera"))


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def req(p, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
    c.request(method, path, body=body)
    r = c.getresponse()
    d = r.read()
    c.close()
    return r.status, d


def node(data, p, rate):
    proc = subprocess.Popen([BIN, "storage", "--listen", "127.0.0.1:%d" % p, "--data-dir", data,
                             "--log.access=false", "--storage.scrub_bytes_per_s=" + rate,
                             "--storage.scrub_interval=100ms"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if req(p, "GET", "/healthz")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("node did not start")


def measure(p, keys):
    rng = random.Random(1)
    t = []
    for _ in range(400):
        k = rng.choice(keys)
        t0 = time.perf_counter()
        st, _ = req(p, "GET", "/blobs/" + k)
        t.append((time.perf_counter() - t0) * 1000)
        assert st == 200
    t.sort()
    return t[len(t) // 2], t[int(len(t) * 0.99)]


def metric(p, name):
    _, body = req(p, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    return 0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    rate = sys.argv[2] if len(sys.argv) > 2 else "100M"
    data = tempfile.mkdtemp(prefix="tessera-scrub-bench-")
    p = port()
    proc = node(data, p, "0")
    keys = []
    for _ in range(n):
        b = os.urandom(1 << 20)
        k = hashlib.sha256(b).hexdigest()
        assert req(p, "PUT", "/blobs/" + k, b)[0] in (200, 201)
        keys.append(k)
    off = measure(p, keys)
    proc.terminate()
    proc.wait()
    proc = node(data, p, rate)
    time.sleep(0.5)  # the scrubber is reading when the measure starts
    b0, t0 = metric(p, "tessera_storage_scrub_bytes_total"), time.time()
    on = measure(p, keys)
    mbs = (metric(p, "tessera_storage_scrub_bytes_total") - b0) / (time.time() - t0) / 1e6
    proc.terminate()
    proc.wait()
    subprocess.run(["rm", "-rf", data])
    print("scrub off: GET 1 MiB median %.2f ms, p99 %.2f ms" % off)
    print("scrub at %s/s (measured %.0f MB/s): GET 1 MiB median %.2f ms, p99 %.2f ms"
          % (rate, mbs, on[0], on[1]))


if __name__ == "__main__":
    main()
