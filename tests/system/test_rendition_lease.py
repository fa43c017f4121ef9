#!/usr/bin/python3
"""System test: one maker per rendition across services sharing PostgreSQL (the lease).

deploy/local/pg.sh starts one PostgreSQL node (under Patroni) on ports moved by
TESSERA_TEST_PORT_OFFSET (default 460: 25432 + offset and up). Two services share it and
one blob directory: `tessera serve` (uploads) and `tessera read`. For each of K new
renditions of a 12-megapixel JPEG, N concurrent first requests are split over the two:
with the lease (transforms.lease_timeout) the two services together encode each rendition
once (tessera_renditions_made_total summed), every answer 200 with one ETag; without it
(lease_timeout = 0) each service makes its own. Prints both counts (docs/BENCHMARKS.md).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG_SH = os.path.join(ROOT, "deploy", "local", "pg.sh")
OFF = int(os.environ.get("TESSERA_TEST_PORT_OFFSET", "460"))
C = tf.Checks("test_rendition_lease")
KEY = "rendition-lease-test-key-0123456789"
K = int(os.environ.get("TESSERA_LEASE_RENDITIONS", "4"))  # distinct renditions per run
N = int(os.environ.get("TESSERA_LEASE_CLIENTS", "8"))     # concurrent first requests of each


def tpath(image_id, canonical):
    return tf.signed_rendition_path(KEY, image_id, canonical)


def metric(srv, name):
    return tf.metric_value(srv, name)


class PG:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tessera-lease-pg-")
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, TESSERA_PG_DIR=self.dir, TESSERA_PG_NODES="1",
                        TESSERA_PG_PORT=str(25432 + OFF))

    def sh(self, *args):
        r = subprocess.run([PG_SH] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=180)
        if r.returncode != 0:
            raise RuntimeError("pg.sh %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout.strip()

    def destroy(self):
        try:
            self.sh("destroy")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def run(url, data_dir, lease, image_id, widths):
    """K renditions, N concurrent first requests each over two services: (makes, answers)."""
    args = ["--db.url", url, "--transforms.keys=" + KEY, "--log.access=false",
            "--transforms.lease_timeout=%s" % lease, "--jobs.workers=0"]
    a = tf.Server(args, data_dir=data_dir).start()
    b = tf.Server(args, data_dir=data_dir, command="read").start()
    try:
        before = metric(a, "tessera_renditions_made_total") + \
            metric(b, "tessera_renditions_made_total")
        answers = []
        lock = threading.Lock()
        t0 = time.monotonic()
        for w in widths:
            path = tpath(image_id, "w:%d.webp" % w)
            barrier = threading.Barrier(N)

            def one(srv):
                barrier.wait()
                st, h, _ = tf.request(srv, "GET", path, timeout=120)
                with lock:
                    answers.append((w, st, h.get("ETag")))
            ts = [threading.Thread(target=one, args=((a, b)[i % 2],)) for i in range(N)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        dt = time.monotonic() - t0
        made = metric(a, "tessera_renditions_made_total") + \
            metric(b, "tessera_renditions_made_total") - before
        waits = metric(a, "tessera_renditions_lease_waits_total") + \
            metric(b, "tessera_renditions_lease_waits_total")
        print("  lease %s: %d renditions x %d concurrent first requests over 2 services:"
              " %d encodes, %d answered from the other's make, %.2f s" %
              (lease, len(widths), N, made, waits, dt), flush=True)
        return made, answers
    finally:
        a.stop()
        b.stop()


def main():
    if not os.path.exists("/usr/lib/postgresql/15/bin/postgres"):
        print("SKIP test_rendition_lease: no PostgreSQL 15 server binaries (run scripts/deps.sh)")
        return 0
    pg = PG()
    root = tempfile.mkdtemp(prefix="tessera-lease-")
    try:
        t0 = time.time()
        pg.sh("up")
        print("  PostgreSQL up in %.1f s" % (time.time() - t0), flush=True)
        url = pg.sh("url")
        data = os.path.join(root, "data")
        with tf.Server(["--db.url", url, "--log.access=false", "--jobs.workers=0"],
                       data_dir=data) as srv:
            st, _, _, j = tf.upload(srv, tf.corpus_bytes("accept_jpeg_large_seeding_4000x3000.jpg"))
        C.eq(st, 201, "upload")
        made, answers = run(url, data, "15s", j["id"], [600 + 10 * i for i in range(K)])
        C.check(all(st == 200 for _, st, _ in answers), "with the lease: every answer 200",
                str(sorted({st for _, st, _ in answers})))
        C.check(all(len({e for w2, _, e in answers if w2 == w}) == 1 for w, _, _ in answers),
                "... one ETag per rendition on both services")
        C.eq(made, K, "with the lease: one encode per rendition across the two services")
        made0, answers0 = run(url, data, "0", j["id"], [700 + 10 * i for i in range(K)])
        C.check(all(st == 200 for _, st, _ in answers0), "without the lease: every answer 200")
        C.check(made0 > K, "without the lease: more than one encode per rendition",
                "%d encodes for %d renditions" % (made0, K))
    finally:
        pg.destroy()
        shutil.rmtree(root, ignore_errors=True)
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
