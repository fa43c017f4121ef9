#!/usr/bin/python3
"""System test: tessera serve on the real PostgreSQL cluster (3 nodes under Patroni, etcd).

deploy/local/pg.sh starts the cluster in a temporary directory on free ports: a leader, a
synchronous standby and a replica (strict synchronous mode). Checks: reads are served by the
replicas (per-replica counters in /metrics), read-your-writes (upload then GET x100, never 404),
a replica stopped during a read loop costs no read, both standbys down -> reads from the primary
and uploads 503 (no standby can confirm a commit), a worker killed holding a job -> another runs
it after the lease with no double effect, etcd stopped -> the leader keeps taking writes
(failsafe_mode), the leader stopped -> a Patroni failover (uploads 201 again, or a fast 503
meanwhile, reads 200 throughout), then a `pg.sh switchover`; never a restart of tessera.
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
SMALL = None  # a small JPEG of the corpus, chosen at start
STATEMENT_TIMEOUT_S = 3  # db.statement_timeout: bounds a commit that waits for a standby


def free_base():
    import random
    import socket
    # below the ephemeral range: a busy machine's outgoing connections cannot take them
    for _ in range(100):
        base = random.randint(20000, 32000)
        ok = True
        for p in range(base, base + 18):  # PostgreSQL, etcd, Patroni (see pg.sh)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no 18 free consecutive ports")


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


def wait_state(what, cond, timeout):
    """Polls cond() until it returns a true value; returns it, or None after timeout s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    print("  gave up after %d s waiting for: %s" % (timeout, what))
    return None


def replayed(topo, ids):
    """Waits until both replicas have replayed the rows of ids."""
    q = "SELECT count(*) FROM images WHERE id IN (%s)" % ",".join("'%s'" % i for i in ids)
    for node in ("pg-replica-1", "pg-replica-2"):
        C.check(wait_state("%s replays the uploads" % node,
                           lambda: topo.sql(q, node) == str(len(ids)), 60),
                "%s replayed the uploads" % node)


def t_replica_reads(srv, topo, ids):
    replayed(topo, ids)
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
    wait_state("the read loop runs", lambda: res["n"] >= 20, 60)
    topo.sh("stop", "pg-replica-1")
    n0 = res["n"]
    # the load goes on for a number of reads after the stop, not for a guessed time
    wait_state("200 reads after the stop", lambda: res["n"] >= n0 + 200 or not th.is_alive(), 120)
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
    try:
        t_no_standby(srv, ids)
    finally:  # the later tests need a standby in sync: every commit waits for one
        topo.sh("start", "pg-replica-1")
        topo.sh("start", "pg-replica-2")
    ok = wait_state("an upload succeeds once a standby is back in sync",
                    lambda: up(srv, SMALL)[0] == 201, 60)
    C.check(ok, "standbys back: uploads 201 again")


def t_no_standby(srv, ids):
    # Strict synchronous mode: with no standby to confirm it, no commit is acknowledged. The
    # upload's commit waits until tessera cuts the wait (db.statement_timeout): 503.
    t0 = time.time()
    try:
        st, h, _, _ = tf.upload(srv, SMALL, timeout=STATEMENT_TIMEOUT_S + 10)
    except OSError as e:  # no answer at all: the commit wait was not cut
        st, h = "no answer (%s)" % e, {}
    dt = time.time() - t0
    print("  upload with both standbys stopped: %s in %.2f s" % (st, dt))
    C.eq(st, 503, "both standbys stopped: upload 503 (strict synchronous mode)")
    C.check(h.get("Retry-After") is not None, "both standbys stopped: 503 has Retry-After")
    C.check(dt < STATEMENT_TIMEOUT_S + 5, "both standbys stopped: the 503 comes after at most "
            "about db.statement_timeout", "%.2f s" % dt)
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


def blob_path(root, key):
    for d, _, files in os.walk(root):
        if key in files:
            return os.path.join(d, key)
    return None


LEASE_S = 3


def t_worker_lease(topo, small):
    """A worker killed holding a job: another runs it once its lease ran out, exactly once.

    Deterministic: the test has a database of its own (no other process's job threads on
    its queue), worker A blocks inside the job on a blob that is a FIFO (a hung disk) until
    it is killed, and the check waits on states with generous bounds. Time is controlled
    where it matters: a short lease (3 s) and a fast poll."""
    # a database of its own, owned by the application role (which may not create one)
    topo.sh("psql", "-c", "DROP DATABASE IF EXISTS lease_test")
    topo.sh("psql", "-c", "CREATE DATABASE lease_test OWNER tessera")
    url = topo.url().replace("/tessera?", "/lease_test?")
    variants = "thumb:256x256:webp:80,small:64x64:png:90"
    common = ["--db.url", url, "--image.variants", variants, "--log.access=false",
              "--jobs.lease", "%ds" % LEASE_S, "--jobs.poll", "100ms"]
    srv = tf.Server(args=common + ["--jobs.workers", "0"]).start()
    a = b = None

    def sql(q):
        r = subprocess.run(["psql", url, "-XAtq", "-c", q], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr)
        return r.stdout.strip()

    try:
        st, _, j = up(srv, small)
        C.eq(st, 201, "worker test: upload 201")
        iid = j["id"]
        # worker A's blob store holds the image's blob as a FIFO: opening it blocks
        hung = os.path.join(srv.root, "hung-blobs")
        real = blob_path(os.path.join(srv.data_dir, "blobs"), j["sha256"])
        C.check(real is not None, "the upload's blob is on disk")
        fifo = os.path.join(hung, os.path.relpath(real, os.path.join(srv.data_dir, "blobs")))
        os.makedirs(os.path.dirname(fifo))
        os.mkfifo(fifo)
        wcmd = [tf.tessera_bin(), "worker", "--data-dir", srv.data_dir] + common
        wlog = open(os.path.join(srv.root, "worker-a.log"), "wb")
        a = subprocess.Popen(wcmd + ["--storage.blobs", "file://" + hung], stdout=wlog,
                             stderr=subprocess.STDOUT)
        q = "SELECT state, lease_token, lease_until, attempts FROM jobs WHERE payload = '%s'" % iid
        row = wait_state("worker A claims the variants job",
                         lambda: [x for x in [sql(q).split("|")] if x[0] == "running"], 60)
        C.check(row is not None, "worker A claimed the variants job")
        if row is None:
            return
        token, until0 = row[0][1], int(row[0][2])
        # A is stuck in the job for longer than a lease: it must keep it (renewals)
        renewed = wait_state("worker A renews its lease",
                             lambda: int(sql(q).split("|")[2]) > until0 + 500, 3 * LEASE_S + 30)
        row = sql(q).split("|")
        C.check(renewed, "a job running longer than its lease stays leased (renewed)")
        C.eq(row[0], "running", "worker A still holds the job after more than a lease")
        C.eq(row[1], token, "no other worker took the job while A held it")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        t0 = time.time()
        a = None
        wlog.close()
        row = sql(q).split("|")
        C.eq(row[0], "running", "after worker A died its job stays leased")
        C.eq(row[1], token, "after worker A died its job keeps A's lease token")
        left = int(row[2]) / 1000.0 - t0  # what remained of A's lease at its death
        blog = open(os.path.join(srv.root, "worker-b.log"), "wb")
        b = subprocess.Popen(wcmd, stdout=blog, stderr=subprocess.STDOUT)
        done = wait_state("worker B completes the job",
                          lambda: sql("SELECT count(*) FROM jobs WHERE payload = '%s'" % iid)
                          == "0", 60 + LEASE_S)
        dt = time.time() - t0
        b.send_signal(signal.SIGTERM)
        b.wait(30)
        b = None
        blog.close()
        print("  job done by worker B %.2f s after A died (lease %d s, %.2f s of it left)"
              % (dt, LEASE_S, left))
        C.check(done, "worker B ran the job after the lease expired")
        C.check(dt >= left - 0.2, "worker B did not take the job before A's lease ran out",
                "%.2f s < %.2f s" % (dt, left))
        C.check(dt <= left + 10, "the job ran again within a few seconds of the lease",
                "%.2f s after A died, lease left %.2f s" % (dt, left))
        C.eq(sql("SELECT count(*) FROM variants WHERE image_id = '%s'" % iid), "2",
             "every preset variant recorded once")
        C.eq(sql("SELECT coalesce(max(refs), 0) FROM blobs b JOIN variants v ON v.key = b.key"
                 " WHERE v.image_id = '%s'" % iid), "1",
             "no double effect: each variant blob holds one reference")
        st, _, _ = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid)
        C.eq(st, 200, "the thumb made by the worker is served")
    finally:
        for p in (a, b):
            if p is not None:
                p.kill()
                p.wait(10)
        srv.stop()


def upload_until_201(srv, small, timeout):
    """Uploads until one answers 201; returns (seconds it took, its JSON) or (None, None)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        st, _, j = up(srv, small)
        if st == 201:
            return time.time() - t0, j
        time.sleep(0.1)
    return None, None


def t_etcd_down(srv, topo, ids, small):
    """etcd stopped: failsafe_mode keeps the leader leading (it reaches every member)."""
    import json
    import urllib.request
    leader = topo.sh("leader")
    rest = "http://127.0.0.1:%d/patroni" % (topo.base + 10 + int(leader.split("-")[1]) - 1)

    def failsafe():
        try:
            with urllib.request.urlopen(rest, timeout=2) as r:
                return json.load(r).get("failsafe_mode_is_active", False)
        except OSError:
            return False

    topo.sh("stop", "etcd")
    try:
        # Patroni notices at its next call to etcd (loop_wait 2 s, retry_timeout 5 s)
        C.check(wait_state("the leader runs in failsafe mode", failsafe, 30),
                "etcd stopped: %s keeps leading in failsafe mode" % leader)
        st, _, _ = up(srv, small)
        C.eq(st, 201, "etcd stopped: uploads still 201 (failsafe mode)")
        ok = sum(tf.request(srv, "GET", "/api/v1/images/%s" % i)[0] == 200 for i in ids)
        C.eq(ok, len(ids), "etcd stopped: reads still 200")
    finally:
        topo.sh("start", "etcd")
    C.check(wait_state("failsafe mode ends", lambda: not failsafe(), 30),
            "etcd back: failsafe mode ends")
    C.eq(topo.sh("leader"), leader, "etcd back: the same node leads")


def t_leader_down_failover_switchover(srv, topo, ids, small):
    old = topo.sh("leader")
    # A clean stop of the leader: Patroni hands over to the synchronous standby at once.
    topo.sh("stop", "pg-primary")
    t0 = time.time()
    st, h, _ = up(srv, small)
    dt = time.time() - t0
    print("  upload right after the leader (%s) stopped: %s in %.3f s" % (old, st, dt))
    C.check(st in (201, 503), "leader stopped: upload 201 (new leader already) or 503",
            "status %s" % st)
    if st == 503:
        C.check(h.get("Retry-After") is not None, "leader stopped: 503 has Retry-After")
        C.check(dt < 3, "leader stopped: the 503 comes fast", "%.2f s" % dt)
    ok = sum(tf.request(srv, "GET", "/api/v1/images/%s" % i)[0] == 200 for i in ids)
    C.eq(ok, len(ids), "leader stopped: reads still 200")
    took, j = upload_until_201(srv, small, 60)
    C.check(took is not None, "leader stopped: Patroni fails over, uploads succeed again with "
            "no tessera restart")
    if took is not None:
        new = topo.sh("leader")
        print("  new leader %s; first 201 %.2f s after the stop" % (new, took))
        C.check(new != old, "a new node leads (%s -> %s)" % (old, new))
        st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % j["id"])
        C.eq(st, 200, "the upload after the failover reads back")
    topo.sh("start", old)  # it rejoins as a standby by itself
    C.check(topo.sh("leader") != old, "the old leader came back as a standby, not a leader")

    # A planned switchover (patronictl switchover): to the synchronous standby, the only
    # candidate Patroni accepts in synchronous mode.
    before = topo.sh("leader")
    t0 = time.time()
    topo.sh("switchover")
    t1 = time.time()
    after = topo.sh("leader")
    C.check(after != before, "pg.sh switchover: another node leads (%s -> %s)" % (before, after))
    took, j = upload_until_201(srv, small, 60)
    C.check(took is not None, "after the switchover uploads succeed again, no tessera restart")
    if took is not None:
        print("  switchover took %.2f s; first 201 %.2f s after it returned" % (t1 - t0, took))
        st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % j["id"])
        C.eq(st, 200, "the upload after the switchover reads back")
    ok = sum(tf.request(srv, "GET", "/api/v1/images/%s" % i)[0] == 200 for i in ids)
    C.eq(ok, len(ids), "after the switchover every earlier image reads back")


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
        print("  cluster up in %.1f s (ports %d-%d)" % (time.time() - t0, topo.base,
                                                         topo.base + 17))
        repl = "%s,%s" % (topo.url("pg-replica-1"), topo.url("pg-replica-2"))
        srv = tf.Server(args=["--db.url", topo.url(), "--db.replicas", repl,
                              "--db.statement_timeout", "%ds" % STATEMENT_TIMEOUT_S,
                              "--log.access=false"]).start()
        ids = []
        for _ in range(5):
            st, _, j = up(srv, SMALL)
            C.eq(st, 201, "upload on PostgreSQL: 201")
            ids.append(j.get("id"))
        C.run(t_replica_reads, srv, topo, ids)
        C.run(t_read_your_writes, srv, SMALL)
        C.run(t_replica_down, srv, topo, ids)
        C.run(t_worker_lease, topo, SMALL)
        C.run(t_etcd_down, srv, topo, ids, SMALL)
        C.run(t_leader_down_failover_switchover, srv, topo, ids, SMALL)
        C.check(srv.alive(), "tessera alive at the end", srv.death_note())
    finally:
        if srv is not None:
            srv.stop()
        topo.destroy()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
