#!/usr/bin/python3
"""Fault drills: a bounded mixed load on the local cluster, one fault at a time, a ledger.

Brings the local cluster up in a temporary run directory (ports moved by
TESSERA_CHAOS_PORT_OFFSET, default 60), then for each drill runs a mixed load
through the balancer (uploads of corpus images, GETs of uploaded ones,
listings, deletes) at a bounded rate, injects the fault, recovers, and prints:
requests by outcome, errors during the fault window, time to recover. At the
end the ledger is checked: every upload that got 201 and was not deleted reads
back byte-exact; every delete that got 204 is 404 everywhere (the balancer and
each read service directly); no 5xx other than the 503s the design allows
during a fault.

Usage: drills.py [DRILL ...]   (default: all; --list prints them)
Environment: TESSERA_BIN, TESSERA_TESTDATA, TESSERA_CHAOS_SECONDS (load per drill, default 12),
TESSERA_CHAOS_RATE (requests/s, default 150).
"""
import hashlib
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "deploy", "local", "cluster")
BIN = os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "tessera"))
DATA = os.environ.get("TESSERA_TESTDATA", os.path.join(ROOT, "..", "shared", "testdata", "images"))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import tessera_fixture as tf  # noqa: E402

OFF = int(os.environ.get("TESSERA_CHAOS_PORT_OFFSET", "60"))
SECONDS = float(os.environ.get("TESSERA_CHAOS_SECONDS", "12"))
RATE = float(os.environ.get("TESSERA_CHAOS_RATE", "150"))
THREADS = 4  # client threads of the load: at most this many requests in flight
LB = 8080 + OFF
PG = 25432 + OFF  # below the ephemeral port range
PG_NODES = ["pg-1", "pg-2", "pg-3"]  # each run by Patroni; the leader is pg-primary
PG_SH = os.path.join(ROOT, "deploy", "local", "pg.sh")
READS = [8101 + OFF, 8102 + OFF, 8103 + OFF]
RUN = None
UP = ["up"]  # how main brings the cluster up (tests/chaos/hosts.py: up --hosts)


def cluster(*args, check=True, timeout=300, env_extra=None):
    env = dict(os.environ, TESSERA_RUN=RUN, TESSERA_BIN=BIN, TESSERA_NO_BUILD="1",
               TESSERA_PORT_OFFSET=str(OFF), TESSERA_CLUSTER_PG_PORT=str(PG))
    env.update(env_extra or {})
    p = subprocess.run([CLUSTER, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("cluster %s: %s" % (" ".join(args), (p.stdout + p.stderr)[-800:]))
    return p


def pgsh(*args, check=True):
    """deploy/local/pg.sh on the cluster's PostgreSQL nodes; its output."""
    env = dict(os.environ, TESSERA_PG_DIR=os.path.join(RUN, "pg"), TESSERA_PG_PORT=str(PG))
    p = subprocess.run([PG_SH, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise RuntimeError("pg.sh %s: %s" % (" ".join(args), (p.stdout + p.stderr)[-800:]))
    return p.stdout.strip()


def request(method, path, body=None, headers=None, port=LB, timeout=15):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Ledger:
    """What the clients were told: the truth the cluster must keep."""

    def __init__(self):
        self.lock = threading.Lock()
        self.live = {}      # id -> (sha256, delete_token): got 201, no 204 yet
        self.deleted = set()  # got 204
        self.unknown = set()  # a delete whose answer was lost or 5xx: either state is fine
        self.tried = {}       # id -> status of the delete sent for it

    def add(self, id_, sha, token):
        with self.lock:
            self.live[id_] = (sha, token)

    def pick(self):
        with self.lock:
            if not self.live:
                return None
            return random.choice(list(self.live.items()))


class Load:
    """A mixed load at a bounded rate from a few threads, counting outcomes per window."""

    def __init__(self, ledger, images):
        self.ledger = ledger
        self.images = images
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.window = "before"
        self.counts = {}  # (window, op, outcome) -> n
        self.bad = []     # unexpected answers: (window, op, status)
        self.sample503 = []  # (window, op) of 503 answers
        self.drill = ""

    def note(self, msg):
        print("   " + msg, flush=True)

    def fail(self, msg):
        with self.lock:
            self.bad.append((self.window, "drill", msg))

    def count(self, op, outcome):
        with self.lock:
            k = (self.window, op, outcome)
            self.counts[k] = self.counts.get(k, 0) + 1

    def one(self):
        r = random.random()
        try:
            if r < 0.25:
                name, data = random.choice(self.images)
                st, body = request("POST", "/api/v1/images", body=data)
                if st == 201:
                    j = json.loads(body)
                    self.ledger.add(j["id"], j["sha256"], j["delete_token"])
                op = "upload"
            elif r < 0.80:
                item = self.ledger.pick()
                if item is None:
                    return
                id_, (sha, _) = item
                st, body = request("GET", "/i/" + id_)
                op = "get"
                if st == 200 and hashlib.sha256(body).hexdigest() != sha:
                    with self.lock:
                        self.bad.append((self.window, "get", "wrong bytes for " + id_))
                if st == 404:
                    with self.ledger.lock:
                        gone = id_ not in self.ledger.live
                    if gone:
                        st = 200  # deleted by another thread meanwhile: fine
            elif r < 0.92:
                st, _ = request("GET", "/api/v1/images?limit=20")
                op = "list"
            else:
                item = self.ledger.pick()
                if item is None:
                    return
                id_, (sha, token) = item
                with self.ledger.lock:
                    if id_ not in self.ledger.live:
                        return
                    del self.ledger.live[id_]
                    self.ledger.unknown.add(id_)
                st, _ = request("DELETE", "/api/v1/images/" + id_,
                                headers={"X-Delete-Token": token})
                with self.ledger.lock:
                    self.ledger.tried[id_] = st
                    if st in (502, 503, 504):
                        pass  # outcome unknown: a 503 may follow a local commit no standby confirmed
                    elif st == 204:
                        self.ledger.unknown.discard(id_)
                        self.ledger.deleted.add(id_)
                    elif st == 404:
                        self.ledger.unknown.discard(id_)
                    else:
                        self.ledger.unknown.discard(id_)
                        self.ledger.live[id_] = (sha, token)  # refused: still live
                op = "delete"
        except (OSError, http.client.HTTPException):
            self.count("any", "connection error")
            return
        outcome = "%dxx" % (st // 100) if st not in (503,) else "503"
        self.count(op, outcome)
        if st == 503 and len(self.sample503) < 400:
            with self.lock:
                self.sample503.append((self.window, op))
        if st >= 500 and st != 503:
            with self.lock:
                self.bad.append((self.window, op, st))

    def run(self, threads=THREADS):
        def worker():
            gap = threads / RATE
            while not self.stop.is_set():
                t = time.monotonic()
                self.one()
                left = gap - (time.monotonic() - t)
                if left > 0:
                    self.stop.wait(left)
        self.threads = [threading.Thread(target=worker) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def wait_ok(path="/api/v1/images?limit=1", method="GET", body=None, timeout=60):
    """Seconds until the balancer answers 2xx again (a write when method is POST)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            st, _ = request(method, path, body=body, timeout=5)
            if 200 <= st < 300:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.1)
    return None


URLS = {}


def psql(node, sql):
    """One answer of node (pg-1..pg-3) in Tessera's database, or None when it cannot answer."""
    if node not in URLS:
        URLS[node] = pgsh("url", node)
    p = subprocess.run(["psql", URLS[node], "-XAtq", "-c", sql], capture_output=True, text=True,
                       timeout=20)
    return p.stdout.strip() if p.returncode == 0 else None


def wait_rejoined(node, timeout=90):
    """Waits until node runs again as a standby and a synchronous standby is chosen (until
    then a leader crash would have no successor)."""
    def rejoined():
        text = pgsh("status", check=False)
        role = tf.pg_status(text).get(node, ("",))[0]
        return role in ("replica", "sync standby") and tf.pg_healthy(text, PG_NODES)
    tf.wait_for(rejoined, timeout, "%s to rejoin as a standby" % node, interval=0.2)


def settle():
    """Waits until the workers have run every job that is due (a wrong blob release would
    show in the ledger), then until every running replica has replayed the primary's WAL
    (no read service can answer from a replica that misses a write of the load)."""
    roles = {n: psql(n, "SELECT pg_is_in_recovery()") for n in PG_NODES}
    primary = [n for n, r in roles.items() if r == "f"]
    if len(primary) != 1:
        print("   (primaries %s: not waiting for jobs and replicas)" % primary)
        return
    due = ("SELECT count(*) FROM jobs WHERE state = 'running' OR (state = 'queued'"
           " AND run_after <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint)")
    tf.wait_for(lambda: psql(primary[0], due) == "0", 60, "the workers to run every due job",
                interval=0.1)
    lsn = psql(primary[0], "SELECT pg_current_wal_lsn()")
    if lsn is None:
        return
    q = "SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn" % lsn
    tf.wait_for(lambda: all(psql(n, q) == "t" for n, r in roles.items() if r == "t"), 60,
                "the replicas to replay the primary's WAL up to %s" % lsn, interval=0.1)


def tiny_png():
    return open(os.path.join(DATA, "accept_png_tiny_1x1.png"), "rb").read()


# --- the drills: each returns the time to recover (s) or None when it did not ---
# Their time.sleep(SECONDS / k) is how long the fault lasts under the load: the scenario.


def drill_kill_read(load):
    cluster("kill", "read-1")
    time.sleep(SECONDS / 3)
    cluster("start", "read-1")
    return 0.0


def first_upload(t0):
    """Seconds from t0 (the fault) to the first upload answered 201; None if none in 60 s."""
    rec = wait_ok("/api/v1/images", "POST", tiny_png())
    return None if rec is None else time.monotonic() - t0


def drill_kill_write(load):
    """write-2 takes every upload while write-1 is dead: only requests in flight on it fail."""
    t0 = time.monotonic()
    cluster("kill", "write-1")
    took = first_upload(t0)
    time.sleep(SECONDS / 4)
    cluster("start", "write-1")
    return took


def drill_kill_worker(load):
    cluster("kill", "worker-1")
    time.sleep(SECONDS / 4)
    cluster("start", "worker-1")
    return 0.0


def repair():
    """Runs tessera repair on the cluster; its time in seconds, None if it failed."""
    t0 = time.monotonic()
    p = subprocess.run([BIN, "repair", "--config", os.path.join(RUN, "cluster.ini"),
                        "--storage.data_dir", os.path.join(RUN, "repair")],
                       capture_output=True, text=True, timeout=600)
    print("   repair: " + (p.stdout.strip().splitlines() or ["(no output)"])[-1])
    return time.monotonic() - t0 if p.returncode == 0 else None


def drill_storage_wipe(load):
    cluster("stop", "storage-2")
    time.sleep(SECONDS / 4)
    shutil.rmtree(os.path.join(RUN, "storage-2"), ignore_errors=True)
    cluster("start", "storage-2")
    return repair()


def drill_stop_replica(load):
    cluster("stop", "pg-replica-1")
    time.sleep(SECONDS / 3)
    cluster("start", "pg-replica-1")
    return 0.0


def leader():
    name = pgsh("leader")
    if name not in PG_NODES:
        raise RuntimeError("no leader: %r" % name)
    return name


def drill_stop_primary(load):
    """The leader stopped cleanly: Patroni hands over; reads never fail."""
    old = leader()
    t0 = time.monotonic()
    cluster("stop", old)
    took = first_upload(t0)
    time.sleep(SECONDS / 6)
    cluster("start", old)
    wait_rejoined(old)
    return took


def drill_kill_postmaster(load):
    """kill -9 of the leader's postmaster: its Patroni sees it, a standby leads."""
    old = leader()
    t0 = time.monotonic()
    pgsh("kill-postgres", old)
    took = first_upload(t0)
    print("   new leader %s (was %s)" % (pgsh("leader", check=False), old))
    wait_rejoined(old)  # the old leader's Patroni brings it back as a standby
    return took


def drill_host_crash(load):
    """kill -9 of the leader's Patroni and postmaster together: the leader key expires."""
    old = leader()
    t0 = time.monotonic()
    cluster("kill", old)
    took = first_upload(t0)
    print("   new leader %s (was %s)" % (pgsh("leader", check=False), old))
    cluster("start", old)
    wait_rejoined(old)
    return took


def drill_stop_etcd(load):
    """etcd down: failsafe mode keeps the leader leading while it reaches every member."""
    t0 = time.monotonic()
    cluster("stop", "etcd")
    took = first_upload(t0)
    time.sleep(SECONDS / 3)
    cluster("start", "etcd")
    return took


def drill_stop_standbys(load):
    """Both standbys down: strict synchronous mode refuses to acknowledge a write (503)."""
    stopped = [n for n in PG_NODES if n != leader()]
    t0 = time.monotonic()
    for n in stopped:
        cluster("stop", n)
    st, _ = request("POST", "/api/v1/images", body=tiny_png(), timeout=30)
    load.note("upload with no standby: %d" % st)
    if st != 503:
        load.fail("an upload with no standby answered %d, not 503" % st)
    for n in stopped:
        cluster("start", n)
    return first_upload(t0)


def drill_stop_redis(load):
    cluster("stop", "redis-2")
    time.sleep(SECONDS / 3)
    cluster("start", "redis-2")
    return 0.0


def drill_stop_all_redis(load):
    for n in ("redis-1", "redis-2", "redis-3"):
        cluster("stop", n)
    time.sleep(SECONDS / 3)
    for n in ("redis-1", "redis-2", "redis-3"):
        cluster("start", n)
    return 0.0


def drill_disk_full(load):
    """storage-3's data directory on a 4 MiB tmpfs: it fills, answers 507, writes go elsewhere."""
    d = os.path.join(RUN, "storage-3")
    cluster("stop", "storage-3")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", d]).returncode != 0:
        print("   (cannot mount a tmpfs here: drill skipped)")
        cluster("start", "storage-3")
        return 0.0
    try:
        # min_free 0: ready on a file system smaller than the default free-space floor
        cluster("start", "storage-3", env_extra={"TESSERA_STORAGE_MIN_FREE": "0"})
        big = open(os.path.join(DATA, "accept_jpeg_large_seeding_4000x3000.jpg"), "rb").read()
        for _ in range(3):  # 2 MB each: the node fills
            request("POST", "/api/v1/images", body=big, timeout=60)
        time.sleep(SECONDS / 3)
        cluster("stop", "storage-3")
    finally:
        subprocess.run(["umount", "-l", d])
    cluster("start", "storage-3")
    return repair()


DRILLS = [
    ("kill-read", drill_kill_read, "kill -9 read-1, start it again"),
    ("kill-write", drill_kill_write, "kill -9 write-1 (write-2 goes on), start it again"),
    ("kill-worker", drill_kill_worker, "kill -9 worker-1 (holding jobs), start it again"),
    ("storage-wipe", drill_storage_wipe, "stop storage-2, wipe its data, start it empty, repair"),
    ("stop-replica", drill_stop_replica, "stop pg-replica-1, start it again"),
    ("stop-primary", drill_stop_primary, "stop the PostgreSQL leader: Patroni fails over"),
    ("kill-postmaster", drill_kill_postmaster, "kill -9 the leader's postmaster"),
    ("host-crash", drill_host_crash, "kill -9 the leader's Patroni and postmaster together"),
    ("stop-etcd", drill_stop_etcd, "stop etcd (failsafe mode), start it again"),
    ("stop-standbys", drill_stop_standbys, "stop both standbys: writes 503, reads go on"),
    ("stop-redis", drill_stop_redis, "stop redis-2, start it again"),
    ("stop-all-redis", drill_stop_all_redis, "stop every Redis node, start them again"),
    ("disk-full", drill_disk_full, "storage-3 on a 4 MiB file system: it fills"),
]
# What a fault may cost, by drill, in its window: 503 for these operations (writes while
# no primary can commit them; reads never). kill-write: only the requests in flight on the
# killed process, at most one per client thread (the balancer answers them 503 JSON).
WRITES = {"upload", "delete"}
ALLOWED_503 = {"stop-replica": WRITES, "stop-primary": WRITES, "kill-postmaster": WRITES,
               "host-crash": WRITES, "stop-standbys": WRITES, "kill-write": WRITES}
MAX_503 = {"kill-write": THREADS}


def check_ledger(ledger):
    problems = []
    for id_, (sha, _) in list(ledger.live.items()):
        st, body = request("GET", "/i/" + id_)
        if st != 200 or hashlib.sha256(body).hexdigest() != sha:
            problems.append("upload %s (201) now answers %d%s" % (
                id_, st, " (a delete of it answered %d)" % ledger.tried[id_]
                if id_ in ledger.tried else ""))
    for id_ in ledger.deleted:
        for port in [LB] + READS:
            st, _ = request("GET", "/i/" + id_, port=port)
            if st != 404:
                problems.append("delete %s (204) answers %d on port %d" % (id_, st, port))
    return problems


def main(names):
    global RUN
    manifest = [l.rstrip("\n").split("\t") for l in open(os.path.join(DATA, "manifest.tsv"))]
    images = [(r[0], open(os.path.join(DATA, r[0]), "rb").read()) for r in manifest[1:]
              if r[5] == "accept" and os.path.getsize(os.path.join(DATA, r[0])) < 200000]
    RUN = tempfile.mkdtemp(prefix="tessera-chaos-")
    os.chmod(RUN, 0o755)
    results = []
    failed = False
    try:
        t0 = time.monotonic()
        cluster(*UP)
        print("cluster up in %.1f s (port offset %d)" % (time.monotonic() - t0, OFF), flush=True)
        for name, fn, what in DRILLS:
            if names and name not in names:
                continue
            print("---- drill %s: %s" % (name, what), flush=True)
            ledger = Ledger()
            load = Load(ledger, images)
            load.drill = name
            load.run()
            time.sleep(SECONDS / 3)  # the load runs before, during and after the fault
            load.window = "fault"  # from the first moment of the fault
            try:
                rec = fn(load)
            except Exception as e:  # noqa: BLE001 - the drill failed to run: report it
                rec = None
                print("   the drill raised %r" % e)
            load.window = "after"
            time.sleep(SECONDS / 3)
            load.finish()
            # let jobs settle (releases, variants) and the replicas catch up, then the ledger
            settle()
            problems = check_ledger(ledger)
            bad = [b for b in load.bad]
            not_allowed_503 = sum(n for (w, op, o), n in load.counts.items()
                                  if o == "503" and (w != "fault" or
                                                     op not in ALLOWED_503.get(name, ())))
            errs_fault = sum(n for (w, op, o), n in load.counts.items()
                             if w == "fault" and o not in ("2xx", "4xx"))
            total = sum(load.counts.values())
            by = {}
            for (w, op, o), n in load.counts.items():
                by[o] = by.get(o, 0) + n
            allowed_503 = sum(n for (w, op, o), n in load.counts.items()
                              if o == "503" and w == "fault" and op in ALLOWED_503.get(name, ()))
            if allowed_503 > MAX_503.get(name, allowed_503):
                bad.append(("fault", "writes", "%d answered 503, more than the %d in flight"
                            % (allowed_503, MAX_503[name])))
            ok = not problems and not bad and not_allowed_503 == 0 and rec is not None
            failed |= not ok
            results.append((name, total, by, errs_fault, rec, len(ledger.live),
                            len(ledger.deleted), problems, ok))
            print("   requests %d by outcome %s; errors in the fault window %d; "
                  "recovery %s; ledger: %d live, %d deleted, %d problems%s -> %s" %
                  (total, json.dumps(by, sort_keys=True), errs_fault,
                   "%.1f s" % rec if rec is not None else "FAILED", len(ledger.live),
                   len(ledger.deleted), len(problems), "; unexpected: %s" % bad[:3] if bad else "",
                   "ok" if ok else "FAIL"), flush=True)
            for p in problems[:5]:
                print("   problem: " + p)
            if not_allowed_503:
                seen = {}
                for w, op in load.sample503:
                    seen[(w, op)] = seen.get((w, op), 0) + 1
                print("   %d 503s outside the allowed window: %s" % (not_allowed_503, seen))
    finally:
        if os.environ.get("TESSERA_CHAOS_KEEP") == "1":
            cluster("down", check=False)
            print("run directory kept: " + RUN)
        else:
            cluster("destroy", check=False)
            shutil.rmtree(RUN, ignore_errors=True)
    print("\n| drill | requests | outcomes | errors in fault window | recovery | live / deleted "
          "checked | lost |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for name, total, by, ef, rec, live, dele, problems, ok in results:
        print("| %s | %d | %s | %d | %s | %d / %d | %d |" %
              (name, total, ", ".join("%s %d" % kv for kv in sorted(by.items())), ef,
               "%.1f s" % rec if rec is not None else "-", live, dele, len(problems)))
    print("%d passed, %d failed" % (sum(r[-1] for r in results), sum(not r[-1] for r in results)))
    return 1 if failed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["--list"]:
        for n, _, w in DRILLS:
            print("%-16s %s" % (n, w))
        sys.exit(0)
    sys.exit(main(set(args)))
