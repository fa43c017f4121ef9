#!/usr/bin/python3
"""Storage ring benchmarks: 3 `tessera storage` nodes and `tessera serve` on them (R=2, W=2).

Prints:
  1. GET throughput of a ~100 KB image through serve, read from the storage nodes
     (local blob cache off) and with the local blob cache on, against nginx serving
     the same bytes statically (wrk, same run);
  2. upload throughput with R=2 (distinct small PNGs, 4 threads);
  3. repair time to restore full replication after one node's data is wiped,
     per 10,000 blobs.

Usage: bench/storage_bench.py [--blobs N] [--seconds S]   (loopback only; bounded)
"""
import argparse
import http.client
import json
import os
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "tessera"))
IMG = os.environ.get("BENCH_IMAGE", os.path.join(
    ROOT, "..", "shared", "testdata", "images", "accept_jpeg_baseline_rocket_640x427.jpg"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait(port, path="/healthz", timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("port %d never answered" % port)


def png(n):
    """A distinct valid 1x1 RGB PNG for each n < 2^24."""
    raw = b"\x00" + bytes([(n >> 16) & 255, (n >> 8) & 255, n & 255])

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wrk(url, seconds, conns=32):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "--latency", url],
                         capture_output=True, text=True).stdout
    rps = next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec"))
    p99 = next(l.split()[1] for l in out.splitlines() if l.strip().startswith("99%"))
    return float(rps), p99


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=10000)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-sbench-")
    os.chmod(work, 0o755)
    procs = []

    def spawn(name, argv):
        log = open(os.path.join(work, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        procs.append(p)
        return p

    try:
        ports = [free_port() for _ in range(3)]
        for i, p in enumerate(ports):
            spawn("s%d" % (i + 1), [BIN, "storage", "--listen", "127.0.0.1:%d" % p,
                                    "--storage.data_dir", os.path.join(work, "s%d" % (i + 1)),
                                    "--log.access=false"])
        for p in ports:
            wait(p)
        shards = ", ".join("s%d=http://127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(ports))

        def serve(name, extra):
            port = free_port()
            p = spawn(name, [BIN, "serve", "--listen", "127.0.0.1:%d" % port,
                             "--storage.data_dir", os.path.join(work, "serve"),
                             "--storage.shards=" + shards, "--storage.replicas=2",
                             "--storage.write_quorum=2", "--log.access=false",
                             "--log.level=warn", "--jobs.workers=0", *extra])
            wait(port)
            return p, port

        sp, sport = serve("serve-nocache", ["--storage.cache_bytes=0"])
        c = http.client.HTTPConnection("127.0.0.1", sport)
        c.request("POST", "/api/v1/images", body=open(IMG, "rb").read())
        img = json.loads(c.getresponse().read())
        path = "/i/%s.jpg" % img["id"]
        www = os.path.join(work, "www")
        os.makedirs(www)
        c.request("GET", path)
        open(os.path.join(www, "img.jpg"), "wb").write(c.getresponse().read())
        c.close()
        nport = free_port()
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(work, "nginx", d), exist_ok=True)
        open(os.path.join(work, "nginx", "nginx.conf"), "w").write(
            "daemon off; worker_processes 1; pid %(w)s/nginx/pid; error_log %(w)s/nginx/err;\n"
            "events {} http { access_log off; sendfile on; tcp_nodelay on;\n"
            "client_body_temp_path %(w)s/nginx/body; proxy_temp_path %(w)s/nginx/proxy;\n"
            "fastcgi_temp_path %(w)s/nginx/fastcgi; uwsgi_temp_path %(w)s/nginx/uwsgi;\n"
            "scgi_temp_path %(w)s/nginx/scgi; types { image/jpeg jpg; }\n"
            "server { listen 127.0.0.1:%(p)d; root %(w)s/www; } }\n" % {"w": work, "p": nport})
        spawn("nginx", ["nginx", "-c", os.path.join(work, "nginx", "nginx.conf"),
                        "-p", os.path.join(work, "nginx")])
        time.sleep(0.5)
        size = os.path.getsize(os.path.join(www, "img.jpg"))
        print("1. GET of a %d-byte image, wrk -t2 -c32 -d%ds (2 shared cores)" % (size, args.seconds))
        r = wrk("http://127.0.0.1:%d/img.jpg" % nport, args.seconds)
        print("   nginx static                       %10.0f req/s  p99 %s" % r)
        r = wrk("http://127.0.0.1:%d%s" % (sport, path), args.seconds)
        print("   serve, from the storage nodes      %10.0f req/s  p99 %s" % r)
        sp.send_signal(signal.SIGTERM)
        sp.wait(timeout=20)
        sp, sport = serve("serve-cache", [])
        r = wrk("http://127.0.0.1:%d%s" % (sport, path), args.seconds)
        print("   serve, local blob cache on         %10.0f req/s  p99 %s" % r)

        print("2. uploads with R=2, W=2: %d distinct 1x1 PNGs over 4 connections" % args.blobs)
        counter = iter(range(args.blobs))
        lock = threading.Lock()
        failed = []

        def uploader():
            c = http.client.HTTPConnection("127.0.0.1", sport, timeout=30)
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    break
                c.request("POST", "/api/v1/images", body=png(n + 1))
                r = c.getresponse()
                r.read()
                if r.status != 201:
                    failed.append(r.status)
            c.close()
        t0 = time.monotonic()
        ts = [threading.Thread(target=uploader) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.monotonic() - t0
        print("   %d uploads in %.1f s: %.0f uploads/s, %d failed" %
              (args.blobs, dt, args.blobs / dt, len(failed)))

        print("3. repair after wiping storage node s3")
        procs[2].send_signal(signal.SIGTERM)
        procs[2].wait(timeout=20)
        shutil.rmtree(os.path.join(work, "s3"))
        spawn("s3b", [BIN, "storage", "--listen", "127.0.0.1:%d" % ports[2],
                      "--storage.data_dir", os.path.join(work, "s3"), "--log.access=false"])
        wait(ports[2])
        t0 = time.monotonic()
        rep = subprocess.run([BIN, "repair", "--storage.data_dir", os.path.join(work, "serve"),
                              "--storage.shards=" + shards, "--storage.replicas=2",
                              "--storage.write_quorum=2", "--log.level=warn"],
                             capture_output=True, text=True, timeout=1800)
        dt = time.monotonic() - t0
        summary = [l for l in rep.stdout.splitlines() if l.strip()][-3:]
        total = args.blobs + 1
        print("   repair: exit %d in %.1f s for %d blobs: %.1f s per 10,000 blobs" %
              (rep.returncode, dt, total, dt * 10000 / total))
        for l in summary:
            print("   | " + l)
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
    sys.exit(main())
