#!/usr/bin/python3
"""System test: tessera serve on the real PostgreSQL topology (1 primary + 2 streaming replicas).

deploy/local/pg.sh starts the topology in a temporary directory on free ports. Checks: reads
are served by the replicas (per-replica counters in /metrics), read-your-writes (upload then
GET x100, never 404), a replica stopped during a read loop costs no read, both replicas down
-> reads from the primary, a worker killed holding a job -> another runs it after the lease
with no double effect, the primary stopped -> uploads 503 fast while reads stay 200, a replica
promoted -> uploads succeed again with no restart of tessera.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG_SH = os.path.join(ROOT, "deploy", "local", "pg.sh")
C = tf.Checks("test_pg")
JPEG = "accept_jpeg_large_seeding_4000x3000.jpg"
SMALL = None  # a small JPEG of the corpus, chosen at start


def free_base():
    import random
    import socket
    # below the ephemeral range: a busy machine's outgoing connections cannot take them
    for _ in range(100):
        base = random.randint(20000, 32000)
        ok = True
        for p in (base, base + 1, base + 2):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no three free consecutive ports")


class Topology:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tessera-pg-")
        os.chmod(self.dir, 0o755)
        self.base = free_base()
        self.env = dict(os.environ, TESSERA_PG_DIR=self.dir, TESSERA_PG_PORT=str(self.base))

    def sh(self, *args):
        r = subprocess.run([PG_SH] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError("pg.sh %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout.strip()

    def url(self, node=None):
        return self.sh("url", node) if node else self.sh("url")

    def sql(self, sql, node="pg-primary"):
        r = subprocess.run(["psql", self.url(node), "-XAtq", "-c", sql], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr)
        return r.stdout.strip()

    def destroy(self):
        try:
            self.sh("destroy")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def metrics(srv):
    st, _, body = tf.request(srv, "GET", "/metrics")
    out = {}
    for m in re.finditer(r'^tessera_db_queries_total\{node="([^"]+)"[^}]*\} (\d+)$',
                         body.decode(), re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def up(srv, data):
    st, h, _, j = tf.upload(srv, data)
    return st, h, j or {}


def t_replica_reads(srv, ids):
    time.sleep(0.5)  # replayed everywhere
    before = metrics(srv)
    n = 0
    for _ in range(20):
        for i in ids:
            st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % i)
            C.check(st == 200, "read from replicas: 200", "status %s" % st)
            n += 1
    after = metrics(srv)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    print("  queries per server for %d reads: %s" % (n, d))
    C.check(d.get("replica-1", 0) >= n // 4, "replica-1 served a share of the reads", str(d))
    C.check(d.get("replica-2", 0) >= n // 4, "replica-2 served a share of the reads", str(d))
    C.check(d.get("replica-1", 0) + d.get("replica-2", 0) >= n, "every read served by a replica",
            str(d))
    C.check(d.get("primary", 0) < n // 2, "the primary served few (monitor probes only)", str(d))


def t_read_your_writes(srv, small):
    misses = 0
    for _ in range(100):
        st, _, j = up(srv, small)
        if st != 201:
            C.check(False, "upload for read-your-writes: 201", "status %s" % st)
            continue
        st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % j["id"])
        st2, _, _ = tf.request(srv, "GET", "/i/%s" % j["id"])
        misses += (st != 200) + (st2 != 200)
    C.eq(misses, 0, "upload then immediate GET x100: never a 404")


def read_loop(srv, ids, stop, result):
    while not stop.is_set():
        for i in ids:
            st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % i, timeout=10)
            result["n"] += 1
            if st != 200:
                result["failed"] += 1


def t_replica_down(srv, topo, ids):
    stop = threading.Event()
    res = {"n": 0, "failed": 0}
    th = threading.Thread(target=read_loop, args=(srv, ids, stop, res))
    th.start()
    time.sleep(0.5)
    topo.sh("stop", "pg-replica-1")
    time.sleep(2)
    stop.set()
    th.join()
    print("  reads during the stop of replica-1: %d, failed %d" % (res["n"], res["failed"]))
    C.check(res["n"] > 20, "the read loop ran", str(res))
    C.eq(res["failed"], 0, "replica-1 stopped during a read loop: zero failed reads")
    before = metrics(srv)
    for i in ids:
        tf.request(srv, "GET", "/api/v1/images/%s" % i)
    d = metrics(srv)
    C.check(d["replica-2"] - before["replica-2"] >= len(ids), "replica-2 took the reads")

    topo.sh("stop", "pg-replica-2")
    before = metrics(srv)
    ok = 0
    for i in ids:
        st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % i)
        ok += st == 200
    after = metrics(srv)
    C.eq(ok, len(ids), "both replicas stopped: reads still 200")
    C.check(after["primary"] - before["primary"] >= len(ids), "both replicas stopped: the "
            "primary served the reads", "%s -> %s" % (before, after))
    st, _, body = tf.request(srv, "GET", "/readyz")
    C.eq(st, 200, "/readyz with both replicas down: ready (the primary answers)")
    C.check(b'"reachable":false' in body, "/readyz names the unreachable replicas", body[:300])
    topo.sh("start", "pg-replica-1")
    topo.sh("start", "pg-replica-2")


def t_worker_lease(topo, small_big):
    """A worker killed holding a job: another runs it after the lease, once."""
    variants = "thumb:256x256:webp:80,big:2400x2400:avif:50,big2:2200x2200:avif:45"
    common = ["--db.url", topo.url(), "--image.variants", variants, "--log.access=false"]
    srv = tf.Server(args=common + ["--jobs.workers", "0"]).start()
    try:
        st, _, j = up(srv, small_big)
        C.eq(st, 201, "worker test: upload 201")
        iid = j["id"]
        env = dict(os.environ)
        wcmd = [tf.tessera_bin(), "worker", "--data-dir", srv.data_dir] + common
        wlog = open(os.path.join(srv.root, "worker-a.log"), "wb")
        a = subprocess.Popen(wcmd + ["--jobs.lease", "2s"], stdout=wlog, stderr=subprocess.STDOUT,
                             env=env)
        held = False
        for _ in range(500):  # up to 10 s: worker start-up and its first poll, on a busy machine
            if topo.sql("SELECT count(*) FROM jobs WHERE state = 'running' AND payload = '%s'"
                        % iid) == "1":
                held = True
                break
            time.sleep(0.02)
        C.check(held, "worker A claimed the variants job")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        wlog.close()
        C.eq(topo.sql("SELECT state FROM jobs WHERE payload = '%s'" % iid), "running",
             "after worker A died its job stays leased")
        t0 = time.time()
        blog = open(os.path.join(srv.root, "worker-b.log"), "wb")
        b = subprocess.Popen(wcmd, stdout=blog, stderr=subprocess.STDOUT, env=env)
        done = False
        for _ in range(1200):  # up to 60 s: the 2 s lease, then two large AVIF encodes
            if topo.sql("SELECT count(*) FROM jobs WHERE payload = '%s'" % iid) == "0":
                done = True
                break
            time.sleep(0.05)
        b.send_signal(signal.SIGTERM)
        b.wait(30)
        blog.close()
        print("  job done by worker B %.1f s after A died" % (time.time() - t0))
        C.check(done, "worker B ran the job after the lease expired")
        C.eq(topo.sql("SELECT count(*) FROM variants WHERE image_id = '%s'" % iid), "3",
             "every preset variant recorded once")
        C.eq(topo.sql("SELECT coalesce(max(refs), 0) FROM blobs b JOIN variants v ON v.key = b.key"
                      " WHERE v.image_id = '%s'" % iid), "1",
             "no double effect: each variant blob holds one reference")
        st, _, _ = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid)
        C.eq(st, 200, "the thumb made by the worker is served")
    finally:
        srv.stop()


def t_primary_down_and_promote(srv, topo, ids, small):
    topo.sh("stop", "pg-primary")
    t0 = time.time()
    st, h, _ = up(srv, small)
    dt = time.time() - t0
    print("  upload with the primary down: %s in %.3f s" % (st, dt))
    C.eq(st, 503, "primary down: upload 503")
    C.check(h.get("Retry-After") is not None, "primary down: 503 has Retry-After")
    C.check(dt < 3, "primary down: the 503 comes fast", "%.2f s" % dt)
    ok = sum(tf.request(srv, "GET", "/api/v1/images/%s" % i)[0] == 200 for i in ids)
    C.eq(ok, len(ids), "primary down: reads still 200")

    t0 = time.time()
    topo.sh("promote", "pg-replica-1")
    t1 = time.time()
    first = None
    while time.time() - t1 < 15:
        st, _, j = up(srv, small)
        if st == 201:
            first = time.time()
            break
        time.sleep(0.1)
    C.check(first is not None, "promoted replica-1: uploads succeed again, no tessera restart")
    if first is not None:
        print("  promote took %.2f s; first successful upload %.2f s after it returned"
              % (t1 - t0, first - t1))
        st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % j["id"])
        C.eq(st, 200, "the upload after the promotion reads back")


def main():
    global SMALL
    if not os.path.exists("/usr/lib/postgresql/15/bin/postgres"):
        print("SKIP test_pg: no PostgreSQL 15 server binaries (run scripts/deps.sh)")
        return 0
    rows = tf.load_manifest()
    small = [r["file"] for r in rows if r["format"] == "jpeg" and r["expected"] == "accept"
             and int(r["width"]) * int(r["height"]) < 400000]
    SMALL = tf.corpus_bytes(small[0])
    topo = Topology()
    srv = None
    try:
        t0 = time.time()
        topo.sh("up")
        print("  topology up in %.1f s (ports %d-%d)" % (time.time() - t0, topo.base,
                                                          topo.base + 2))
        repl = "%s,%s" % (topo.url("pg-replica-1"), topo.url("pg-replica-2"))
        srv = tf.Server(args=["--db.url", topo.url(), "--db.replicas", repl,
                              "--log.access=false"]).start()
        ids = []
        for _ in range(5):
            st, _, j = up(srv, SMALL)
            C.eq(st, 201, "upload on PostgreSQL: 201")
            ids.append(j.get("id"))
        C.run(t_replica_reads, srv, ids)
        C.run(t_read_your_writes, srv, SMALL)
        C.run(t_replica_down, srv, topo, ids)
        C.run(t_worker_lease, topo, tf.corpus_bytes(JPEG))
        C.run(t_primary_down_and_promote, srv, topo, ids, SMALL)
        C.check(srv.alive(), "tessera alive at the end", srv.death_note())
    finally:
        if srv is not None:
            srv.stop()
        topo.destroy()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
