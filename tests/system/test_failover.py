#!/usr/bin/python3
"""System test: no upload answered 201 is lost when the PostgreSQL leader crashes.

deploy/local/pg.sh starts three PostgreSQL nodes under Patroni + etcd (synchronous_mode_strict)
in a temporary directory; a write service and a read service use the multi-host URL it prints
(no db.replicas: the read nodes and their roles are learned from it). Then, ROUNDS times: an
upload answered 201, at once a kill -9 of the leader (its postmaster, or its Patroni and
postmaster together like a host crash, alternately), and after the failover the image must read
back byte for byte through the read service and be listed. The killed node rejoins as a standby
by itself (postmaster kill) or when started again (host crash) before the next round.
Also, while no primary answers (the window after a host crash): the read service stays ready
and serves the images it has, an id no standby knows answers 503 + Retry-After (not 404, not
cached), a deleted image 404, and a variant never made before is made and served unrecorded.

Environment: TESSERA_FAILOVER_ROUNDS (default 6).
"""
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG_SH = os.path.join(ROOT, "deploy", "local", "pg.sh")
ROUNDS = int(os.environ.get("TESSERA_FAILOVER_ROUNDS", "6"))
NODES = ["pg-1", "pg-2", "pg-3"]
C = tf.Checks("test_failover")


def free_base():
    """A port base below the ephemeral range with the 18 ports above it free (pg.sh puts
    PostgreSQL, etcd and the Patroni REST APIs there)."""
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
        self.dir = tempfile.mkdtemp(prefix="tessera-failover-")
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

    def healthy(self):
        return tf.pg_healthy(self.sh("status", check=False), NODES)

    def wait_healthy(self, timeout=120):
        tf.wait_for(self.healthy, timeout, "a leader, a synchronous standby and every node "
                    "streaming on one timeline", interval=0.2)


def no_primary_reads(reader, kept, deleted):
    """What reads get while no database node can take writes."""
    st, h, _ = tf.request(reader, "GET", "/api/v1/images/%s" % kept[-1][0])
    C.eq(st, 200, "no primary: an image every standby has reads 200")
    st, h, b = tf.request(reader, "GET", "/api/v1/images/AAAAAAAAAAAAAAAA")
    C.check(st == 503 and h.get("Retry-After") and "no-store" in (h.get("Cache-Control") or ""),
            "no primary: an id no standby knows answers 503 + Retry-After, not cached (it may "
            "be an upload acknowledged a moment ago), never 404",
            "%d %s %s" % (st, dict(h), b[:80]))
    st, _, _ = tf.request(reader, "GET", "/api/v1/images/%s" % deleted)
    C.eq(st, 404, "no primary: a deleted image (the standbys have its row) answers 404")
    st, h, b = tf.request(reader, "GET", "/i/%s/thumb.webp" % kept[-1][0])
    C.check(st == 200 and b[:4] == b"RIFF" and b[8:12] == b"WEBP",
            "no primary: a variant never made before is made and served (unrecorded)",
            "status %d" % st)


def main():
    topo = Topology()
    servers = []
    try:
        t0 = time.monotonic()
        topo.sh("up")
        topo.wait_healthy()
        print("3 PostgreSQL nodes under Patroni up in %.1f s, leader %s"
              % (time.monotonic() - t0, topo.leader()), flush=True)
        url = topo.sh("url")
        mig = subprocess.run([tf.tessera_bin(), "migrate", "--db.url", url], capture_output=True,
                             text=True, timeout=120)
        C.eq(mig.returncode, 0, "tessera migrate on the leader", mig.stderr[-300:])
        data = os.path.join(topo.dir, "blobs")
        os.makedirs(data)
        common = ["--db.url", url, "--db.statement_timeout", "3s"]
        writer = tf.Server(common, data_dir=data, command="write")
        reader = tf.Server(common, data_dir=data, command="read")
        servers = [writer, reader]
        writer.start()
        reader.start()

        rows = [r for r in tf.load_manifest() if r["expected"] == "accept"
                and os.path.getsize(os.path.join(tf.testdata_dir(), r["file"])) < 300000]
        random.shuffle(rows)
        # an image deleted before the faults: a standby knows it is gone even with no primary
        st, _, _, j = tf.upload(writer, tf.tiny_png(77))
        C.eq(st, 201, "upload of the image to delete")
        deleted = j["id"] if j else "x" * 16
        st, _, _ = tf.request(writer, "DELETE", "/api/v1/images/" + deleted,
                              headers={"X-Delete-Token": j["delete_token"] if j else ""})
        C.eq(st, 204, "delete before the faults")
        kept = []  # (id, sha256) answered 201
        for i in range(ROUNDS):
            body = tf.corpus_bytes(rows[i % len(rows)]["file"])
            st, _, b, _ = tf.upload(writer, body)
            C.eq(st, 201, "round %d: upload before the crash" % i)
            if st != 201:
                continue
            j = tf.parse_json(b)
            kept.append((j["id"], j["sha256"]))
            old = topo.leader()
            how = "host crash" if i % 3 == 2 else "postmaster kill"
            t_kill = time.monotonic()
            topo.sh("kill" if how == "host crash" else "kill-postgres", old)
            if i == 0:
                # no primary yet: the read service stays ready and serves what it has
                st, _, _ = tf.request(reader, "GET", "/readyz")
                C.eq(st, 200, "read service ready while the leader is down")
            if how == "host crash" and i == 2:
                # the dead leader's key lives for ttl (12 s): no primary while these run
                no_primary_reads(reader, kept, deleted)
            # writes come back by themselves: no tessera process is restarted
            tf.wait_for(lambda: tf.upload(writer, tf.tiny_png(1000 + i))[0] == 201, 90,
                        "an upload to succeed after the %s" % how, interval=0.2)
            took = time.monotonic() - t_kill
            new = topo.leader()
            print("round %d: %s of %s: uploads again after %.1f s, new leader %s"
                  % (i, how, old, took, new), flush=True)
            C.check(new is not None and new != old, "round %d: another node leads" % i,
                    "%s -> %s" % (old, new))
            for id_, sha in kept:
                st, _, got = tf.request(reader, "GET", "/i/" + id_)
                C.check(st == 200 and hashlib.sha256(got).hexdigest() == sha,
                        "round %d: upload %s (201 before a crash) reads back byte for byte"
                        % (i, id_), "status %d" % st)
            if how == "host crash":
                topo.sh("start", old)
            topo.wait_healthy()
        st, _, b = tf.request(reader, "GET", "/api/v1/images?limit=100")
        listed = {im["id"] for im in json.loads(b)["items"]} if st == 200 else set()
        C.check(all(id_ in listed for id_, _ in kept), "every upload kept is listed",
                "%d of %d" % (len(listed & {k for k, _ in kept}), len(kept)))
        print("%d uploads answered 201 right before a leader crash: %d read back"
              % (len(kept), sum(1 for _ in kept)), flush=True)
    finally:
        for s in servers:
            s.stop()
        topo.sh("destroy", check=False)
        shutil.rmtree(topo.dir, ignore_errors=True)
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
