#!/usr/bin/python3
"""S3 against storage nodes, same run: `tessera serve` on a Swift bucket (s3api, started by
deploy/local/s3.sh; R=1, Swift keeps the copies) and on three `tessera storage` nodes (R=2, W=2).

Prints, for each backend:
  1. GET throughput of a ~100 KB image through serve with the local blob cache off (every
     request fetches, hashes and sends the blob: a miss) and on (a hit), wrk -t2 -c8;
  2. upload throughput: distinct 1x1 PNGs over 4 connections;
then 3. `tessera ring migrate` of the nodes' blobs to the bucket: blobs/s and MB/s.

Usage: bench/s3_bench.py [--blobs N] [--seconds S]   (loopback only; bounded; short by default
because the machine is shared)
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from storage_bench import BIN, IMG, ROOT, free_port, png, wait, wrk  # noqa: E402

S3SH = os.path.join(ROOT, "deploy", "local", "s3.sh")


def port_run(n):
    """The first of n consecutive free loopback ports (s3.sh uses PORT..PORT+4), below the
    kernel's ephemeral range: a port there may be taken meanwhile by the local side of any
    outgoing connection (Swift's own, this benchmark's), and Swift binds after this check."""
    for _ in range(500):
        base = random.randrange(20000, 32000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of %d free ports" % n)


def uploads(port, first, n, conns=4):
    counter = iter(range(first, first + n))
    lock = threading.Lock()
    failed = []

    def uploader():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
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
    ts = [threading.Thread(target=uploader) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0, len(failed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=4)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-s3bench-")
    s3env = dict(os.environ, TESSERA_S3_DIR=os.path.join(work, "s3"),
                 TESSERA_S3_PORT=str(port_run(5)))
    procs = []

    def spawn(name, argv):
        log = open(os.path.join(work, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        procs.append(p)
        return p

    def stop(p):
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)

    try:
        subprocess.run([S3SH, "up"], env=s3env, check=True, stdout=subprocess.DEVNULL)
        bucket = subprocess.run([S3SH, "url"], env=s3env, check=True, capture_output=True,
                                text=True).stdout.strip()
        creds = os.path.join(work, "s3", "credentials")
        ports = [free_port() for _ in range(3)]
        for i, p in enumerate(ports):
            spawn("s%d" % (i + 1), [BIN, "storage", "--listen", "127.0.0.1:%d" % p,
                                    "--storage.data_dir", os.path.join(work, "s%d" % (i + 1)),
                                    "--log.access=false"])
        for p in ports:
            wait(p)
        nodes = ", ".join("s%d=http://127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(ports))
        backends = [
            ("storage nodes (R=2)", "nodes", ["--storage.shards=" + nodes, "--storage.replicas=2",
                                              "--storage.write_quorum=2"]),
            ("S3 bucket (R=1)", "s3", ["--storage.shards=main=%s/bench" % bucket,
                                       "--storage.replicas=1", "--storage.write_quorum=1",
                                       "--storage.s3_credentials_file=" + creds]),
        ]
        size = os.path.getsize(IMG)
        print("GET of a %d-byte image (wrk -t2 -c8 -d%ds) and %d uploads of 1x1 PNGs over 4 "
              "connections, 2 shared cores" % (size, args.seconds, args.blobs))
        for label, name, extra in backends:
            def serve(tag, more):
                port = free_port()
                p = spawn(name + "-" + tag, [BIN, "serve", "--listen", "127.0.0.1:%d" % port,
                                             "--storage.data_dir", os.path.join(work, name),
                                             "--log.access=false", "--log.level=warn",
                                             "--jobs.workers=0", *extra, *more])
                wait(port)
                return p, port
            sp, sport = serve("nocache", ["--storage.cache_bytes=0"])
            c = http.client.HTTPConnection("127.0.0.1", sport)
            c.request("POST", "/api/v1/images", body=open(IMG, "rb").read())
            img = json.loads(c.getresponse().read())
            c.close()
            url = "http://127.0.0.1:%d/i/%s.jpg" % (sport, img["id"])
            miss = wrk(url, args.seconds, conns=8)
            stop(sp)
            sp, sport = serve("cache", [])
            url = "http://127.0.0.1:%d/i/%s.jpg" % (sport, img["id"])
            hit = wrk(url, args.seconds, conns=8)
            dt, failed = uploads(sport, 1, args.blobs)
            stop(sp)
            print("  %-20s GET miss %7.0f req/s p99 %-8s  hit %7.0f req/s p99 %-8s  "
                  "uploads %5.1f/s (%d failed)" % (label, miss[0], miss[1], hit[0], hit[1],
                                                   args.blobs / dt, failed))

        # 3. the nodes' blobs (images of step 2, R=2 copies each) migrated to the bucket
        r = subprocess.run([BIN, "ring", "migrate", "--to", "main=%s/migrated" % bucket,
                            "--storage.data_dir", os.path.join(work, "nodes"),
                            "--storage.s3_credentials_file=" + creds, "--storage.ring_poll=200ms",
                            "--log.level=warn"], capture_output=True, text=True, timeout=1800)
        m = re.search(r"(\d+) copies made and verified \(SHA-256\) in ([\d.]+) s "
                      r"\(([\d.]+) blobs/s, ([\d.]+) MB/s\)", r.stdout)
        if r.returncode != 0 or m is None:
            print("ring migrate failed (exit %d):\n%s" % (r.returncode, (r.stdout + r.stderr)[-2000:]))
            return 1
        print("  ring migrate nodes -> S3: %s blobs in %s s: %s blobs/s, %s MB/s" % m.groups())
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([S3SH, "destroy"], env=s3env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
