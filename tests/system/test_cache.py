#!/usr/bin/python3
"""System test: the metadata cache on a real 3-node Redis Cluster (deploy/local/redis.sh).

Topology: `tessera serve` (writes, deletes) and two `tessera read` services on one SQLite
data directory (WAL: several processes may read it), all with cache.redis set; read-2 has no
LRU so every lookup reaches Redis. Checks: cache hits after the first GET (per-layer counters
in /metrics); 50 deletes in a row, each followed at once by 404 from all three services
(pub/sub invalidation + tombstone); redis-2 stopped, then all three, during a GET loop -> zero
failed requests, bounded latency, /readyz 200; a delete while Redis is down is still honoured;
Redis restarted -> hits again; a slot range resharded during a GET loop -> MOVED/ASK followed,
zero failed requests and no Redis errors.
"""
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REDIS_SH = os.path.join(ROOT, "deploy", "local", "redis.sh")
C = tf.Checks("test_cache")
P99_BOUND = 0.5  # s: the GET loops' p99 with Redis down (printed; a few ms on a quiet machine)


def free_base():
    # three consecutive ports and their cluster-bus ports (+10000), all below the ephemeral
    # range (32768-): a node restarted mid-test must find its bus port still free, not taken
    # by some outgoing connection meanwhile
    for _ in range(200):
        base = random.randint(20000, 22700)
        ok = True
        for p in (base, base + 1, base + 2, base + 10000, base + 10001, base + 10002):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free ports")


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tessera-redis-")
        self.base = free_base()
        self.env = dict(os.environ, TESSERA_REDIS_DIR=self.dir, TESSERA_REDIS_PORT=str(self.base))

    def sh(self, *args):
        r = subprocess.run([REDIS_SH] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError("redis.sh %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout.strip()

    def password_file(self):
        return os.path.join(self.dir, "redis.pass")

    def auth_env(self):
        """redis-cli's environment: the password in REDISCLI_AUTH, never on the command line."""
        with open(self.password_file()) as f:
            return dict(os.environ, REDISCLI_AUTH=f.read().strip())

    def cli(self, *args, port=None):
        r = subprocess.run(["redis-cli", "--no-auth-warning", "--user", "tessera", "-h",
                            "127.0.0.1", "-p", str(port or self.base)] + list(args),
                           capture_output=True, text=True, timeout=120, env=self.auth_env())
        return r.stdout.strip()

    def client_args(self, secret_file):
        """The settings a tessera role needs to use this cluster: its nodes, user, password."""
        return ["--cache.redis=%s" % self.sh("nodes"), "--cache.redis_user=tessera",
                "--cache.redis_password_file=%s" % self.password_file(),
                "--cache.secret_file=%s" % secret_file]

    def destroy(self):
        try:
            self.sh("destroy")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Role(tf.Server):
    """A tessera role (serve, read, write) on a shared data directory."""

    def __init__(self, role, args, data_dir):
        super().__init__(args=args, data_dir=data_dir)
        self.role = role

    def start(self, timeout=20):
        if self.role == "serve":
            return super().start(timeout)
        self.port = self.port or tf.free_port()
        self._nstart += 1
        self.log_path = os.path.join(self.root, "%s-%d.log" % (self.role, self._nstart))
        self._log = open(self.log_path, "wb")
        cmd = [tf.tessera_bin(), self.role, "--listen", "127.0.0.1:%d" % self.port,
               "--data-dir", self.data_dir] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at start:\n%s" % (self.role, self.log_tail()))
            try:
                if tf.request(self, "GET", "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("%s did not start:\n%s" % (self.role, self.log_tail()))


def cache_metrics(srv):
    _, _, body = tf.request(srv, "GET", "/metrics")
    text = body.decode()
    out = {}
    for m in re.finditer(r'^tessera_cache_lookups_total\{layer="(\w+)",result="(\w+)"\} (\d+)$',
                         text, re.M):
        out[m.group(1) + "_" + m.group(2)] = int(m.group(3))
    m = re.search(r"^tessera_cache_subscribed (\d)$", text, re.M)
    out["subscribed"] = int(m.group(1)) if m else -1
    return out


def delta(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in b}


def wait_subscribed(srv, timeout=60):
    return tf.wait_for(lambda: cache_metrics(srv)["subscribed"] == 1, timeout,
                       "%s on port %d to subscribe to invalidations" % (srv.role, srv.port))


def get_status(srv, path):
    return tf.request(srv, "GET", path, timeout=10)[0]


def t_hits(w, r1, r2, ids):
    a1, a2 = cache_metrics(r1), cache_metrics(r2)
    for i in ids:
        for _ in range(3):
            C.eq(get_status(r1, "/api/v1/images/%s" % i), 200, "read-1 GET live image", i)
    for i in ids:
        C.eq(get_status(r2, "/api/v1/images/%s" % i), 200, "read-2 GET live image", i)
    d1, d2 = delta(a1, cache_metrics(r1)), delta(a2, cache_metrics(r2))
    print("  read-1 (LRU + Redis): %s" % d1)
    print("  read-2 (Redis only):  %s" % d2)
    n = len(ids)
    C.check(d1["lru_hit"] >= 2 * n, "read-1: the 2nd and 3rd GETs are LRU hits", str(d1))
    C.check(d1["db_hit"] + d1["redis_hit"] <= n, "read-1: at most one lookup per image below the LRU",
            str(d1))
    C.check(d2["redis_hit"] >= n, "read-2: every lookup is a Redis hit (read-1 filled Redis)", str(d2))
    C.eq(d2.get("db_hit", 0), 0, "read-2: no database lookup")
    C.eq(d1.get("redis_error", 0) + d2.get("redis_error", 0), 0, "no Redis errors")


def t_delete_everywhere(w, r1, r2, ids):
    fails = []
    for i, (img, token) in enumerate(ids):
        for s in (w, r1, r2):  # warm every layer of every service
            get_status(s, "/api/v1/images/%s" % img)
        st = tf.request(w, "DELETE", "/api/v1/images/%s" % img,
                        headers={"X-Delete-Token": token})[0]
        if st != 204:
            fails.append((img, "delete %s" % st))
            continue
        for name, s in (("serve", w), ("read-1", r1), ("read-2", r2)):
            for path in ("/api/v1/images/%s" % img, "/i/%s" % img):
                st = get_status(s, path)
                if st != 404:
                    fails.append((img, "%s %s -> %s" % (name, path, st)))
    C.eq(fails, [], "%d deletes: each answered 404 at once by all three services" % len(ids))


def loop(targets, ids, stop, res):
    """GETs metadata and bytes of live images until stop; records failures and latencies."""
    rnd = random.Random()
    while not stop.is_set():
        s = rnd.choice(targets)
        img = rnd.choice(ids)
        t0 = time.monotonic()
        try:
            st = get_status(s, "/api/v1/images/%s" % img)
        except OSError as e:
            st = repr(e)
        res["lat"].append(time.monotonic() - t0)
        res["n"] += 1
        if st != 200:
            res["fail"].append(st)


def run_loop(targets, ids, during, threads=4):
    stop = threading.Event()
    res = {"n": 0, "fail": [], "lat": []}
    ts = [threading.Thread(target=loop, args=(targets, ids, stop, res)) for _ in range(threads)]
    for t in ts:
        t.start()
    try:
        during()
    finally:
        stop.set()
        for t in ts:
            t.join(30)
    lat = sorted(res["lat"]) or [0]
    res["p99"] = lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0]
    res["max"] = lat[-1]
    return res


def t_redis_down(rd, w, r1, r2, live, doomed):
    targets = [w, r1, r2]

    def one_down():  # the scenario: the loop runs 1 s with Redis up, then 3 s with redis-2 down
        time.sleep(1)
        rd.sh("stop", "redis-2")
        time.sleep(3)

    res = run_loop(targets, live, one_down)
    print("  redis-2 down: %d GETs, p99 %.1f ms, max %.1f ms" % (res["n"], res["p99"] * 1e3,
                                                                 res["max"] * 1e3))
    C.eq(res["fail"][:5], [], "redis-2 stopped during a GET loop: zero failed requests")
    # a bound for a busy machine: it catches requests that wait on the dead nodes (several
    # cache timeouts, the cluster's 5 s node timeout), not scheduling noise
    C.check(res["p99"] < P99_BOUND, "redis-2 down: p99 latency under %.0f ms" % (P99_BOUND * 1e3),
            "%.3f" % res["p99"])
    C.eq(get_status(r1, "/readyz"), 200, "/readyz stays 200 with redis-2 down")

    def all_down():  # the scenario: 0.5 s more with redis-2 down, then 3 s with every node down
        time.sleep(0.5)
        rd.sh("down")
        time.sleep(3)

    res = run_loop(targets, live, all_down)
    print("  all down: %d GETs, p99 %.1f ms, max %.1f ms" % (res["n"], res["p99"] * 1e3,
                                                             res["max"] * 1e3))
    C.eq(res["fail"][:5], [], "every Redis node stopped during a GET loop: zero failed requests")
    C.check(res["p99"] < P99_BOUND, "all down: p99 latency under %.0f ms" % (P99_BOUND * 1e3),
            "%.3f" % res["p99"])
    for s in targets:
        C.eq(get_status(s, "/readyz"), 200, "/readyz stays 200 with Redis down")
    a = cache_metrics(r2)
    for i in live[:10]:
        get_status(r2, "/api/v1/images/%s" % i)
    d = delta(a, cache_metrics(r2))
    C.check(d["db_hit"] >= 10, "Redis down: lookups answered by the database", str(d))
    # a delete while Redis is down is still honoured everywhere: the LRUs are off while unsubscribed
    img, token = doomed
    C.eq(tf.request(w, "DELETE", "/api/v1/images/%s" % img, headers={"X-Delete-Token": token})[0],
         204, "delete with Redis down: 204")
    C.eq([get_status(s, "/api/v1/images/%s" % img) for s in targets], [404, 404, 404],
         "delete with Redis down: 404 from every service")

    rd.sh("up")
    ok = all(wait_subscribed(s) for s in targets)
    C.check(ok, "Redis back: every service subscribed again")
    d = {}

    def redis_hits():
        a = cache_metrics(r2)
        for i in live:
            get_status(r2, "/api/v1/images/%s" % i)
        d.update(delta(a, cache_metrics(r2)))
        return d["redis_hit"] >= len(live)

    tf.wait_for(redis_hits, 60, "read-2's lookups to hit Redis again", interval=0.3)
    C.check(d.get("redis_hit", 0) >= len(live), "Redis back: Redis hits again without a restart",
            str(d))


def t_reshard(rd, w, r1, r2, live):
    ids = {}
    for line in rd.cli("cluster", "nodes").splitlines():
        f = line.split()
        ids[int(f[1].split(":")[1].split("@")[0])] = f[0]
    src, dst = ids[rd.base], ids[rd.base + 1]
    before = cache_metrics(r2)

    def reshard():  # the scenario: the loop runs 0.5 s before and after the reshard
        time.sleep(0.5)
        r = subprocess.run(["redis-cli", "--no-auth-warning", "--user", "tessera", "--cluster",
                            "reshard", "127.0.0.1:%d" % rd.base,
                            "--cluster-from", src, "--cluster-to", dst, "--cluster-slots", "2000",
                            "--cluster-yes"], capture_output=True, text=True, timeout=300,
                           env=rd.auth_env())
        C.eq(r.returncode, 0, "redis-cli --cluster reshard of 2000 slots", r.stderr[-300:])
        time.sleep(0.5)

    res = run_loop([r2], live, reshard)
    d = delta(before, cache_metrics(r2))
    print("  reshard: %d GETs, p99 %.1f ms; read-2 %s" % (res["n"], res["p99"] * 1e3, d))
    C.eq(res["fail"][:5], [], "resharding during a GET loop: zero failed requests")
    C.eq(d.get("redis_error", 0), 0, "resharding: MOVED/ASK followed, no Redis errors")
    C.check(d.get("redis_hit", 0) >= res["n"] * 0.9, "resharding: lookups still hit Redis", str(d))


def main():
    rd = Redis()
    try:
        rd.sh("up")
        nodes = rd.sh("nodes")
        data = tempfile.mkdtemp(prefix="tessera-cache-data-")
        secret = os.path.join(data, "cache.secret")
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(32).hex())
        common = rd.client_args(secret) + ["--cache.down_backoff=200ms", "--log.access=false"]
        w = Role("serve", common, data).start()
        r1 = Role("read", common, data).start()
        r2 = Role("read", common + ["--cache.lru_entries=0"], data).start()
        for s in (w, r1, r2):
            C.check(wait_subscribed(s), "service subscribed to invalidations")
        imgs = []
        for n in range(120):
            st, _, _, j = tf.upload(w, tf.tiny_png(n + 1, size=8))
            if st == 201:
                imgs.append((j["id"], j["delete_token"]))
        C.eq(len(imgs), 120, "120 uploads")
        live = [i for i, _ in imgs[:60]]
        C.run(t_hits, w, r1, r2, live)
        C.run(t_delete_everywhere, w, r1, r2, imgs[60:110])
        C.run(t_reshard, rd, w, r1, r2, live)
        C.run(t_redis_down, rd, w, r1, r2, live, imgs[110])
        shutil.rmtree(data, ignore_errors=True)
    finally:
        tf.stop_all_servers()
        rd.destroy()
    C.finish()


if __name__ == "__main__":
    main()
