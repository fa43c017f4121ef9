#!/usr/bin/python3
"""Benchmark: PostgreSQL failover times under Patroni, and the price of synchronous replication.

Starts deploy/local/pg.sh (three nodes under Patroni + etcd) in a temporary directory, then:

1. RUNS times each: kill -9 of the leader's postmaster, and kill -9 of the leader's Patroni and
   postmaster together (a host crash). Measured: seconds from the kill until another node is
   the leader and accepts a write (an INSERT through the multi-host read-write URL commits).
   After each run the killed node rejoins (started again after a host crash) and the next run
   waits until both standbys stream.
2. Upload throughput and latency of a write service (`tessera write`, 4 client threads, small
   PNGs, SECONDS each) with synchronous_mode on (strict) and off (asynchronous), same run.

Prints the runs, medians, and a Markdown table for docs/BENCHMARKS.md. Not part of the test
suite (it takes a few minutes). Environment: RUNS (default 5), SECONDS (default 15),
TESSERA_BIN.
Usage: bench/pg_failover.py [failover|sync]   (default both)
"""
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import tessera_fixture as tf  # noqa: E402

PG_SH = os.path.join(ROOT, "deploy", "local", "pg.sh")
RUNS = int(os.environ.get("RUNS", "5"))
SECONDS = float(os.environ.get("SECONDS", "15"))
NODES = ["pg-1", "pg-2", "pg-3"]


def free_base():
    for _ in range(200):
        base = random.randint(20000, 31000)
        ok = True
        for p in range(base, base + 18):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port block")


class Topology:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tessera-bench-pg-")
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, TESSERA_PG_DIR=self.dir, TESSERA_PG_PORT=str(free_base()),
                        TESSERA_PG_NODES="3")

    def sh(self, *args, check=True):
        r = subprocess.run([PG_SH] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=180)
        if check and r.returncode != 0:
            raise RuntimeError("pg.sh %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout.strip()

    def leader(self):
        name = self.sh("leader", check=False)
        return name if name in NODES else None

    def psql(self, url, sql, timeout=5):
        try:
            r = subprocess.run(["psql", url, "-XAtq", "-c", sql], capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    def healthy(self):
        return tf.pg_healthy(self.sh("status", check=False), NODES)


def wait(cond, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def failover(topo):
    url = topo.sh("url") + "&connect_timeout=1"
    topo.psql(url, "CREATE TABLE IF NOT EXISTS bench_failover (t timestamptz)")
    results = {"postmaster kill": [], "host crash": []}
    for how in ("postmaster kill", "host crash"):
        for i in range(RUNS):
            wait(topo.healthy, 180, "a healthy cluster")
            old = topo.leader()
            t0 = time.monotonic()
            topo.sh("kill-postgres" if how == "postmaster kill" else "kill", old)
            wait(lambda: topo.leader() not in (None, old), 120, "a new leader")
            t_leader = time.monotonic() - t0
            wait(lambda: topo.psql(url, "INSERT INTO bench_failover VALUES (now())",
                                   timeout=3) is not None, 120, "a write")
            t_write = time.monotonic() - t0
            print("%s %d: %s -> %s: leader after %.2f s, first write after %.2f s"
                  % (how, i + 1, old, topo.leader(), t_leader, t_write), flush=True)
            results[how].append((t_leader, t_write))
            if how == "host crash":
                topo.sh("start", old)
    return results


def upload_load(writer, seconds, threads=4):
    lat, errors = [], 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    seq = [random.randint(0, 1 << 20)]

    def worker():
        nonlocal errors
        while time.monotonic() < stop:
            with lock:
                seq[0] += 1
                n = seq[0]
            body = tf.tiny_png(n)
            t = time.monotonic()
            try:
                st = tf.upload(writer, body)[0]
            except OSError:
                st = 0
            dt = time.monotonic() - t
            with lock:
                if st == 201:
                    lat.append(dt)
                else:
                    errors += 1
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0  # noqa: E731
    return len(lat) / seconds, p(0.50), p(0.99), errors


def sync_cost(topo):
    url = topo.sh("url")
    wait(topo.healthy, 180, "a healthy cluster")
    mig = subprocess.run([tf.tessera_bin(), "migrate", "--db.url", url], capture_output=True,
                         text=True, timeout=120)
    if mig.returncode != 0:
        raise RuntimeError("tessera migrate: " + mig.stderr[-400:])
    data = os.path.join(topo.dir, "blobs")
    os.makedirs(data, exist_ok=True)
    writer = tf.Server(["--db.url", url], data_dir=data, command="write").start()
    rows = []
    try:
        for mode in ("strict", "off", "strict"):
            topo.sh("sync", mode)  # returns once applied (strict: once a standby is in sync)
            upload_load(writer, 3)  # warm up
            r = upload_load(writer, SECONDS)
            print("synchronous %s: %.0f uploads/s, p50 %.1f ms, p99 %.1f ms, %d errors"
                  % ((mode,) + r), flush=True)
            rows.append((mode,) + r)
    finally:
        writer.stop()
    return rows


def main(what):
    topo = Topology()
    try:
        topo.sh("up")
        wait(topo.healthy, 180, "a healthy cluster")
        if what in ("", "failover"):
            res = failover(topo)
            print("\n| fault | runs | new leader (median, min–max) | first write (median, min–max) |")
            print("| --- | ---: | ---: | ---: |")
            for how, runs in res.items():
                ld = [a for a, _ in runs]
                wr = [b for _, b in runs]
                print("| %s | %d | %.1f s (%.1f–%.1f) | %.1f s (%.1f–%.1f) |"
                      % (how, len(runs), statistics.median(ld), min(ld), max(ld),
                         statistics.median(wr), min(wr), max(wr)))
        if what in ("", "sync"):
            rows = sync_cost(topo)
            print("\n| replication | uploads/s | p50 | p99 | errors |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for mode, rate, p50, p99, err in rows:
                print("| %s | %.0f | %.1f ms | %.1f ms | %d |"
                      % ("synchronous (strict)" if mode == "strict" else "asynchronous", rate, p50,
                         p99, err))
    finally:
        topo.sh("destroy", check=False)
        shutil.rmtree(topo.dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
