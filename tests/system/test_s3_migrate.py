#!/usr/bin/env python3
"""System test of `tessera ring migrate`: a running `tessera serve` on a ring of two file://
shards (R=2) has its blobs moved to a bucket of a real S3 server (Swift with s3api, started by
deploy/local/s3.sh) and then back, while a reader and an uploader run against it.

Checks: a migration killed while copying is resumed by the next run; zero failed reads and
uploads during each move; serve follows without a restart;
before --finish the old shards keep every copy, after it they hold none (so every read is
served by the bucket) and every image still reads back byte-exact; the move back puts every
blob on both file shards again. Skips (exit 77) when Swift is not installed.
"""
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tessera_fixture as tf  # noqa: E402
from test_s3 import Swift  # noqa: E402

POLL = "200ms"  # services follow a ring change within 2 polls + 1 s


def blob_files(root):
    """Keys of the blobs stored under a file:// shard's root (its tmp/ aside)."""
    keys = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "tmp"]
        keys |= {f for f in files if len(f) == 64}
    return keys


def jobs_pending(data_dir):
    """Jobs queued (due or backing off) or running in serve's SQLite database."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, "meta.db"), uri=True,
                         timeout=10)
    try:
        return db.execute("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
                          ).fetchone()[0]
    finally:
        db.close()


class Load:
    """A reader of every known image and an uploader of new ones, counting failures."""

    def __init__(self, srv, images):
        self.srv, self.images = srv, images
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stats = {"reads": 0, "failed": 0, "uploads": 0, "upload_failed": 0}
        self.threads = [threading.Thread(target=self.reader), threading.Thread(target=self.uploader)]

    def reader(self):
        i = 0
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.images)
                path, sha = self.images[ids[i % len(ids)]]
            i += 1
            try:
                st, _, body = tf.request(self.srv, "GET", path)
                ok = st == 200 and tf.sha256(body) == sha
            except OSError:
                ok = False
            self.stats["reads"] += 1
            self.stats["failed"] += not ok

    def uploader(self):
        n = 1000
        while not self.stop.is_set():
            n += 1
            try:
                st, _, _, j = tf.upload(self.srv, tf.tiny_png(n, size=6))
            except OSError:
                st, j = None, None
            self.stats["uploads"] += 1
            if st != 201:
                self.stats["upload_failed"] += 1
                continue
            with self.lock:
                self.images[j["id"]] = (tf.path_of(j["url"]), j["sha256"])

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        n0 = self.stats["reads"]
        tf.wait_for(lambda: self.stats["reads"] >= n0 + 50, 60, "50 more reads after the move")
        self.stop.set()
        for t in self.threads:
            t.join()


def main():
    if shutil.which("swift-proxy-server") is None or shutil.which("memcached") is None:
        print("skipped: OpenStack Swift or memcached is not installed (scripts/deps.sh)")
        return 77
    c = tf.Checks("test_s3_migrate")
    swift = Swift()
    root = tempfile.mkdtemp(prefix="tessera-migrate-")
    srv = None
    try:
        swift.sh("up")
        bucket = "main=" + swift.sh("url") + "/migrate"
        shards = [os.path.join(root, "n1"), os.path.join(root, "n2")]
        files = ",".join("n%d=file://%s" % (i + 1, p) for i, p in enumerate(shards))
        common = ["--storage.s3_credentials_file", swift.credentials, "--storage.ring_poll", POLL]
        srv = tf.Server(["--storage.shards", files, "--storage.replicas", "2",
                         "--storage.write_quorum", "2", "--log.access=false"] + common)
        srv.start()

        def tool(*args):
            r = subprocess.run([tf.tessera_bin()] + list(args) + ["--data-dir", srv.data_dir,
                                                                  "--log.level=warn"] + common,
                               capture_output=True, text=True, timeout=600)
            return r.returncode, r.stdout + r.stderr

        images = {}  # id -> (url path, sha256 of the stored bytes)
        rows = [r for r in tf.load_manifest() if r["expected"] == "accept"]
        for r in rows:
            st, _, _, j = tf.upload(srv, tf.corpus_bytes(r["file"]))
            if c.check(st == 201, "upload " + r["file"]):
                images[j["id"]] = (tf.path_of(j["url"]), j["sha256"])

        def read_all(what):
            bad = [iid for iid, (p, sha) in images.items()
                   if tf.sha256(tf.request(srv, "GET", p)[2]) != sha]
            c.check(not bad, what + " (%d images)" % len(images), ", ".join(bad[:5]))

        # --- a migration killed (SIGKILL) while it copies: the next run resumes it. The
        # thumbnails of the uploads above are written first, so the first plan counts them.
        tf.wait_for(lambda: jobs_pending(srv.data_dir) == 0, 120, "serve's job queue to drain")
        before = {sha for _, sha in images.values()}
        first = subprocess.Popen([tf.tessera_bin(), "ring", "migrate", "--to", bucket, "--json",
                                  "--rate", "4", "--jobs", "1", "--data-dir", srv.data_dir,
                                  "--log.level=warn"] + common,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        plan1 = None
        for line in first.stdout:  # JSON lines: the plan, then progress about once a second
            m = re.search(r"(\d+) copies to make", line)
            plan1 = int(m.group(1)) if m and plan1 is None else plan1
            if '"phase":"copying"' in line and not re.search(r'"done":0[,}]', line):
                break
        first.kill()
        first.wait()
        first.stdout.close()
        c.check(plan1 is not None and plan1 > 0, "the first run planned copies", str(plan1))

        # --- resumed, to S3, under load
        with Load(srv, images) as load:
            rc, out = tool("ring", "migrate", "--to", bucket)
        c.check(rc == 0 and "copies made and verified" in out, "ring migrate --to s3 exits 0",
                out[-1500:])
        m = re.search(r"(\d+) copies to make", out)
        # the killed run had put the new ring in force: uploads since went to S3 already
        c.check(m is not None and plan1 is not None and int(m.group(1)) < plan1,
                "the resumed run copies only what the killed one left (%s of %s)"
                % (m.group(1) if m else None, plan1))
        m = re.search(r"(\d+) copies made and verified \(SHA-256\) in ([\d.]+) s "
                      r"\(([\d.]+) blobs/s, ([\d.]+) MB/s\)", out)
        if m:
            print("  migration to S3: %s copies in %s s (%s blobs/s, %s MB/s)" % m.groups())
        print("  during the move: %r" % load.stats)
        c.check(load.stats["failed"] == 0 and load.stats["reads"] > 0,
                "zero failed reads during the move to S3", str(load.stats))
        c.check(load.stats["upload_failed"] == 0, "zero failed uploads during the move to S3",
                str(load.stats))
        st, _, body = tf.request(srv, "GET", "/metrics")
        c.check(re.search(rb"^tessera_ring_changes_total [1-9]", body, re.M) is not None,
                "serve followed the new ring without a restart")
        kept = set.intersection(*(blob_files(p) for p in shards))
        c.check(before <= kept, "before --finish the file shards keep their copies",
                "%d of %d" % (len(before & kept), len(before)))

        rc, out = tool("ring", "migrate", "--to", bucket + "-elsewhere")
        c.check(rc == 1 and "unfinished" in out,
                "a move to a third ring is refused while this one is unfinished", out[-600:])
        rc, out = tool("ring", "migrate", "--finish")
        c.check(rc == 0 and "old copies removed" in out, "ring migrate --finish exits 0",
                out[-1500:])
        left = set().union(*(blob_files(p) for p in shards))
        c.check(not left, "after --finish the file shards hold no blob", "%d left" % len(left))
        read_all("every image reads back from S3 after --finish")

        # --- and back to the file shards, under load
        with Load(srv, images) as load:
            rc, out = tool("ring", "migrate", "--to", files, "--replicas", "2")
        c.check(rc == 0, "ring migrate back to the file shards exits 0", out[-1500:])
        c.check(load.stats["failed"] == 0 and load.stats["upload_failed"] == 0,
                "zero failed reads and uploads during the move back", str(load.stats))
        rc, out = tool("ring", "migrate", "--finish")
        c.check(rc == 0, "ring migrate --finish (back) exits 0", out[-1500:])
        tf.wait_for(lambda: all(sha in blob_files(p) for p in shards
                                for _, sha in images.values()), 30, "both file shards full")
        missing = [sha for _, sha in images.values()
                   if not all(sha in blob_files(p) for p in shards)]
        c.check(not missing, "every blob on both file shards again", ", ".join(missing[:3]))
        read_all("every image reads back after the move back")
    finally:
        if srv is not None:
            srv.stop()
        swift.destroy()
        shutil.rmtree(root, ignore_errors=True)
    c.finish()  # exits


if __name__ == "__main__":
    sys.exit(main())
