#!/usr/bin/env python3
"""The restore drill: a Patroni cluster (deploy/local/pg.sh, one node to keep it cheap; the same
commands serve three) archiving its WAL to pgBackRest, two signed storage nodes and a serve under
a steady upload load with a ledger. A metadata backup (pg.sh backup) and a blob backup (tessera
backup) are taken while uploads go on; a point in time is noted; uploads go on past it. Then a
new cluster: `pg.sh up` with TESSERA_PG_RESTORE_FROM/TIME bootstraps a new Patroni cluster from
the backup at that point, `tessera restore` fills two new, empty storage nodes from the blob
backup and takes the blobs of images made after the blob backup from the live store. Every image
acknowledged before the point reads back byte for byte from the new cluster, none acknowledged
after it exists. Also: pg.sh refuses to restore into a run directory that holds a database.
Ports: PostgreSQL, etcd and Patroni on free bases below the ephemeral range; the rest the kernel's.
"""
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tessera_fixture as tf  # noqa: E402
from test_pg import PG_SH, free_base  # noqa: E402

C = tf.Checks("test_restore_drill")


class Pg:
    """One pg.sh cluster in its own run directory."""

    def __init__(self, root, name, **env):
        self.dir = os.path.join(root, name)
        self.env = dict(os.environ, TESSERA_PG_DIR=self.dir, TESSERA_PG_PORT=str(free_base()),
                        TESSERA_PG_NODES="1", **env)

    def sh(self, *args, check=True):
        r = subprocess.run([PG_SH] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=600)
        if check and r.returncode != 0:
            raise RuntimeError("pg.sh %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r

    def url(self):
        return self.sh("url").stdout.strip()


def noise_png(rng):
    return tf.png_bytes(32, 32, lambda x, y: (rng.randrange(256), 77, rng.randrange(256)))


def main():
    root = tempfile.mkdtemp(prefix="tessera-drill-")
    os.chmod(root, 0o755)  # the postgres user walks into it
    secret = os.path.join(root, "storage.secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    signed = ["--storage.secret_file=" + secret, "--log.access=false"]
    a, b = Pg(root, "pg-a"), None
    servers = []
    try:
        b = run(root, signed, a, servers)
    finally:
        for s in servers:
            s.stop()
        for pg in (a, b):
            if pg is not None:
                pg.sh("destroy", check=False)
        shutil.rmtree(root, ignore_errors=True)
    C.finish()


def run(root, signed, a, servers):
    t0 = time.time()
    a.sh("up")
    print("  cluster A up in %.1f s" % (time.time() - t0))

    def nodes(n):
        out = [tf.Server(signed, command="storage").start() for _ in range(n)]
        servers.extend(out)
        return out

    def shards(ns, prefix):
        return ",".join("%s%d=http://127.0.0.1:%d" % (prefix, i + 1, n.port)
                        for i, n in enumerate(ns))

    old_nodes = nodes(2)
    common = signed + ["--storage.replicas=2", "--storage.write_quorum=2"]
    cfg_a = common + ["--storage.shards=" + shards(old_nodes, "a"), "--db.url", a.url()]
    serve = tf.Server(cfg_a).start()
    servers.append(serve)

    def tool(args, cfg, data_dir):
        r = subprocess.run([tf.tessera_bin()] + args + cfg + ["--data-dir", data_dir,
                                                               "--log.level=warn"],
                           capture_output=True, text=True, timeout=600)
        return r.returncode, r.stdout + r.stderr

    # ---- the load: uploads one after another, each with when it began and was acknowledged
    ledger = []  # (t_begin, t_ack, id, path, sha256)
    failed = []
    stop = threading.Event()

    def loader():
        rng = random.Random(5)
        while not stop.is_set():
            t_begin = time.monotonic()
            try:
                st, _, _, j = tf.upload(serve, noise_png(rng))
            except OSError as e:
                failed.append(str(e))
                continue
            if st != 201:
                failed.append(st)
                continue
            ledger.append((t_begin, time.monotonic(), j["id"], tf.path_of(j["url"]), j["sha256"]))

    th = threading.Thread(target=loader)
    th.start()
    tf.wait_for(lambda: len(ledger) >= 20, 60, "20 uploads")
    r = a.sh("backup", "full")
    C.check(r.returncode == 0, "pg.sh backup full under load")
    backup = os.path.join(root, "blobs")
    os.mkdir(backup)
    rc, out = tool(["backup", "--to", "file://" + backup], cfg_a, serve.data_dir)
    C.check(rc == 0, "tessera backup under load", out[-600:])
    print("  " + "".join(ln for ln in out.splitlines() if ln.startswith("backup to")))
    n = len(ledger)
    tf.wait_for(lambda: len(ledger) >= n + 15, 60, "15 more uploads")
    # the point in time, on the database's clock; uploads in flight around it are ambiguous
    q0 = time.monotonic()
    point = a.sh("time").stdout.strip()
    q1 = time.monotonic()
    n = len(ledger)
    tf.wait_for(lambda: len(ledger) >= n + 15, 60, "15 uploads after the point")
    stop.set()
    th.join()
    C.check(not failed, "no upload failed during the backups (%d made)" % len(ledger), str(failed))
    r = a.sh("archive")
    C.check(r.returncode == 0, "pg.sh archive: the WAL past the point is archived")
    before = [e for e in ledger if e[1] < q0]
    after = [e for e in ledger if e[0] > q1]
    print("  point %s: %d uploads acknowledged before it, %d begun after it"
          % (point, len(before), len(after)))

    # ---- refusals
    r = subprocess.run([PG_SH, "up"], env=dict(a.env, TESSERA_PG_RESTORE_FROM=a.dir,
                                                 TESSERA_PG_BACKUP_DIR=os.path.join(root, "x")),
                       capture_output=True, text=True, timeout=120)
    C.check(r.returncode != 0 and "holds a database already" in r.stderr,
            "pg.sh refuses to restore into a run directory that holds a database", r.stderr)

    # ---- the new cluster at the point
    b = Pg(root, "pg-b", TESSERA_PG_RESTORE_FROM=a.dir, TESSERA_PG_RESTORE_TIME=point)
    t0 = time.time()
    b.sh("up")
    print("  cluster B restored to the point and up in %.1f s" % (time.time() - t0))
    new_nodes = nodes(2)
    cfg_b = common + ["--storage.shards=" + shards(new_nodes, "b"), "--db.url", b.url()]
    data_b = os.path.join(root, "serve-b")
    t0 = time.time()
    rc, out = tool(["restore", "--from", "file://" + backup, "--live",
                    shards(old_nodes, "a")], cfg_b, data_b)
    line = "".join(ln for ln in out.splitlines() if ln.startswith("restore from"))
    m = re.search(r" (\d+) from the live store.*?(\d+) blobs missing", line)
    C.check(rc == 0 and m and int(m.group(1)) > 0 and m.group(2) == "0",
            "tessera restore fills the new nodes; images after the blob backup come from the "
            "live store; nothing missing", out[-1500:])
    print("  %s (%.1f s)" % (line, time.time() - t0))
    serve.stop()
    restored = tf.Server(cfg_b, data_dir=data_b).start()
    servers.append(restored)
    bad = []
    for _, _, iid, path, sha in before:
        st, _, body = tf.request(restored, "GET", path)
        if st != 200 or tf.sha256(body) != sha:
            bad.append((iid, st))
    C.check(before and not bad, "every image acknowledged before the point reads back byte for "
            "byte from the restored cluster (%d)" % len(before), str(bad[:3]))
    there = [iid for _, _, iid, path, _ in after if tf.request(restored, "GET", path)[0] != 404]
    C.check(after and not there, "no image begun after the point exists there (%d checked)"
            % len(after), str(there[:3]))
    return b


if __name__ == "__main__":
    main()
