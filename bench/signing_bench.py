#!/usr/bin/python3
"""The cost of signed storage node requests (storage.secret_file), signed vs unsigned, one run.

Two identical stacks side by side, each one `tessera storage` node and one `tessera serve`
using it (R=1, W=1, local blob cache off so every GET is a cache miss fetched from the
node): one with storage.secret_file on both, one without. The measurements alternate
between the two stacks, rounds times, so that drift of the shared machine hits both:
  1. cache-miss GETs of a ~100 KB JPEG through serve (wrk -t2 -c8);
  2. uploads of distinct 1x1 PNGs through serve over 4 connections.

Usage: bench/signing_bench.py [--seconds S] [--uploads N] [--rounds R]   (loopback; bounded)
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storage_bench import BIN, IMG, free_port, png, wait, wrk  # noqa: E402


def uploads(port, first, n, conns=4):
    counter = iter(range(first, first + n))
    lock = threading.Lock()
    failed = []

    def one():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                break
            c.request("POST", "/api/v1/images", body=png(k))
            r = c.getresponse()
            r.read()
            if r.status != 201:
                failed.append(r.status)
        c.close()
    t0 = time.monotonic()
    ts = [threading.Thread(target=one) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return n / (time.monotonic() - t0), len(failed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--uploads", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-signbench-")
    procs = []

    def spawn(name, argv):
        log = open(os.path.join(work, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        procs.append(p)
        return p

    try:
        secret = os.path.join(work, "storage.secret")
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(32).hex())
        stacks = {}
        for name, extra in (("unsigned", []), ("signed", ["--storage.secret_file=" + secret])):
            nport, sport = free_port(), free_port()
            spawn(name + "-node", [BIN, "storage", "--listen", "127.0.0.1:%d" % nport,
                                   "--storage.data_dir", os.path.join(work, name + "-node"),
                                   "--log.access=false", "--log.level=warn", *extra])
            wait(nport)
            spawn(name + "-serve", [BIN, "serve", "--listen", "127.0.0.1:%d" % sport,
                                    "--storage.data_dir", os.path.join(work, name + "-serve"),
                                    "--storage.shards=s1=http://127.0.0.1:%d" % nport,
                                    "--storage.replicas=1", "--storage.write_quorum=1",
                                    "--storage.cache_bytes=0", "--log.access=false",
                                    "--log.level=warn", "--jobs.workers=0", *extra])
            wait(sport)
            c = http.client.HTTPConnection("127.0.0.1", sport)
            c.request("POST", "/api/v1/images", body=open(IMG, "rb").read())
            r = c.getresponse()
            img = json.loads(r.read())
            c.close()
            stacks[name] = (sport, "/i/%s.jpg" % img["id"], img["bytes"])
        res = {n: {"get": [], "up": []} for n in stacks}
        first = 1
        for rnd in range(args.rounds):
            for name, (sport, path, _) in stacks.items():
                rps, p99 = wrk("http://127.0.0.1:%d%s" % (sport, path), args.seconds, conns=8)
                res[name]["get"].append((rps, p99))
                ups, failed = uploads(sport, first, args.uploads)
                first += args.uploads
                res[name]["up"].append((ups, failed))
                print("round %d %-8s GET %7.0f req/s p99 %-8s uploads %5.0f/s (%d failed)"
                      % (rnd + 1, name, rps, p99, ups, failed), flush=True)
        print("mean over %d rounds (GET: %d-byte JPEG, wrk -t2 -c8 -d%ds, blob cache off; "
              "uploads: %d 1x1 PNGs over 4 connections):"
              % (args.rounds, stacks["signed"][2], args.seconds, args.uploads))
        mean = {}
        for name in stacks:
            g = sum(x[0] for x in res[name]["get"]) / args.rounds
            u = sum(x[0] for x in res[name]["up"]) / args.rounds
            mean[name] = (g, u)
            print("  %-8s GET %7.0f req/s   uploads %5.0f/s" % (name, g, u))
        print("  signed / unsigned: GET %.3f, uploads %.3f"
              % (mean["signed"][0] / mean["unsigned"][0], mean["signed"][1] / mean["unsigned"][1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
