#!/usr/bin/env python3
"""System test of retiring a storage node and of scrubbing: 3 real `tessera storage` nodes with
signed requests (storage.secret_file) and a `tessera serve` on them (R=2, W=2), on loopback ports
the kernel picks (no fixed port: TESSERA_TEST_PORT_OFFSET does not apply). Python stdlib only.

Scrub: bytes flipped in a blob file on one node -> its scrubber finds the copy within its bounded
time (storage.scrub_bytes_per_s), moves it to the quarantine (counted in its metrics), reads stay
correct, `tessera repair` reports it and writes a good copy back. A blob whose every copy is bad:
the scrubber keeps its copy in quarantine and repair keeps the other one (never the last copy
deleted), the blob is reported lost.
Drain: refusals (unknown shard, the node down, fewer shards left than R), then `tessera ring
drain s3` under a reader and an uploader with serve never restarted: zero failed requests, every
blob on exactly 2 of the 2 nodes left, s3 holds nothing, every image reads back with s3 stopped.
"""
import hashlib
import os
import random
import re
import sqlite3
import subprocess
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_drain_scrub")
POLL = "500ms"  # storage.ring_poll of serve and of the tools: a drain waits 2 polls + 1 s


def disk_keys(node):
    """Blob keys in a node's data directory (its listing, read from the disk)."""
    root = os.path.join(node.data_dir, "blobs")
    out = set()
    for d, _, files in os.walk(root):
        if os.path.relpath(d, root).count(os.sep) == 1:
            out |= {f for f in files if re.fullmatch(r"[0-9a-f]{64}", f)}
    return out


def blob_file(node, key):
    return os.path.join(node.data_dir, "blobs", key[:2], key[2:4], key)


def flip(path):
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


def metric(node, name):
    st, _, body = tf.request(node, "GET", "/metrics")
    m = re.search(rb"^" + name.encode() + rb" (\d+)", body, re.M)
    return int(m.group(1)) if st == 200 and m else None


def jobs_pending(serve):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(serve.data_dir, "meta.db"), uri=True,
                         timeout=10)
    try:
        return db.execute("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
                          ).fetchone()[0]
    finally:
        db.close()


def noise_png(rng):
    return tf.png_bytes(48, 48, lambda x, y: (rng.randrange(256), rng.randrange(256), 7))


def main():
    root = tempfile.mkdtemp(prefix="tessera-drain-")
    secret = os.path.join(root, "storage.secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    signed = ["--storage.secret_file=" + secret, "--log.access=false"]
    # s1 scrubs fast and often; the others not at all, so what is found is s1's alone
    nodes = {}
    for name in ("s1", "s2", "s3"):
        scrub = ["--storage.scrub_bytes_per_s=20M", "--storage.scrub_interval=300ms"] \
            if name == "s1" else ["--storage.scrub_bytes_per_s=0"]
        nodes[name] = tf.Server(signed + scrub, command="storage").start()

    def ring(names):
        return ",".join("%s=http://127.0.0.1:%d" % (n, nodes[n].port) for n in names)

    common = signed + ["--storage.replicas=2", "--storage.write_quorum=2",
                       "--storage.ring_poll=" + POLL, "--storage.connect_timeout=300ms",
                       "--storage.down_backoff=500ms"]
    serve = tf.Server(common + ["--storage.shards=" + ring(["s1", "s2", "s3"])]).start()

    def tool(args, names=("s1", "s2", "s3")):
        r = subprocess.run([tf.tessera_bin()] + args + common +
                           ["--storage.shards=" + ring(names), "--data-dir", serve.data_dir,
                            "--log.level=warn"], capture_output=True, text=True, timeout=300)
        return r.returncode, r.stdout + r.stderr

    rng = random.Random(22)
    ledger = {}  # id -> (path, bytes as read back after the upload)
    lock = threading.Lock()

    def upload(data):
        st, _, body, j = tf.upload(serve, data)
        if st != 201:
            return st
        path = tf.path_of(j["url"])
        with lock:
            ledger[j["id"]] = (path, j["sha256"])
        return st

    for _ in range(30):
        upload(noise_png(rng))
    C.eq(len(ledger), 30, "30 images uploaded")

    def read_all(what):
        bad = []
        with lock:
            items = list(ledger.items())
        for iid, (path, sha) in items:
            st, _, body = tf.request(serve, "GET", path)
            if st != 200 or tf.sha256(body) != sha:
                bad.append((iid, st))
        C.check(not bad, what + " (%d images)" % len(items), str(bad[:3]))

    tf.wait_for(lambda: jobs_pending(serve) == 0, 60, "thumbnails written")

    # ---------------------------------------------------------------- scrub
    s1 = nodes["s1"]
    tf.wait_for(lambda: (metric(s1, "tessera_storage_scrub_passes_total") or 0) >= 1, 30,
                "s1's first scrub pass")
    C.eq(metric(s1, "tessera_storage_scrub_corrupt_total"), 0, "a clean node: the scrubber "
         "finds nothing")
    on_s1 = sorted(k for k in disk_keys(s1) if k in {sha for _, sha in ledger.values()})
    one, both = on_s1[0], on_s1[1]
    other = [n for n in ("s2", "s3") if os.path.exists(blob_file(nodes[n], both))][0]
    good_other = open(blob_file(nodes[other], both), "rb").read()
    flip(blob_file(s1, one))
    flip(blob_file(s1, both))
    flip(blob_file(nodes[other], both))  # every copy of this one is bad now
    t0 = time.monotonic()
    found = tf.wait_for(lambda: (metric(s1, "tessera_storage_scrub_corrupt_total") or 0) >= 2,
                        30, "the scrubber to find both bad copies")
    print("  scrubber found the 2 bad copies in %.1f s (a pass every 300 ms at 20 MB/s)"
          % (time.monotonic() - t0))
    C.check(found, "the scrubber finds the flipped copies on s1 within its bounded time")
    C.eq(metric(s1, "tessera_storage_quarantined"), 2, "s1's gauge counts 2 quarantined copies")
    qdir = os.path.join(s1.data_dir, "quarantine")
    quarantined = sorted(os.listdir(qdir)) if os.path.isdir(qdir) else []
    C.check([q[:64] for q in quarantined] == sorted([one, both]),
            "both bad copies are in s1's quarantine, kept", str(quarantined))
    C.check(not os.path.exists(blob_file(s1, one)), "the bad copy is off s1's blobs: not served")
    read_all("reads stay correct while a copy is quarantined")
    rc, out = tool(["repair"])
    C.check(rc == 1 and "quarantined copy of " + one in out and "2 quarantined" in out
            and "1 lost" in out,
            "repair reports the quarantined copies and the blob with no good copy (exit 1)",
            out[-1500:])
    C.check(os.path.exists(blob_file(nodes[other], both)),
            "repair keeps the last (bad) copy of a blob with no good copy")
    C.check(tf.sha256(open(blob_file(s1, one), "rb").read()) == one,
            "repair wrote a good copy of the scrubbed blob back to s1")
    # the operator's salvage: the good bytes back where they were, the quarantine cleared
    with open(blob_file(nodes[other], both), "wb") as f:
        f.write(good_other)
    for q in quarantined:
        os.unlink(os.path.join(qdir, q))
    rc, out = tool(["repair"])
    C.check(rc == 0 and "0 lost" in out and "0 quarantined" in out,
            "after the salvage repair finds every blob whole", out[-800:])

    # ---------------------------------------------------------------- drain: refusals
    rc, out = tool(["ring", "drain", "s9"])
    C.check(rc == 1 and "s9 is not a shard" in out, "drain of an unknown shard refuses", out)
    nodes["s3"].terminate()
    rc, out = tool(["ring", "drain", "s3"])
    C.check(rc == 1 and "must all answer" in out, "drain of a node that is down refuses and "
            "says why", out[-800:])
    nodes["s3"].start()
    rc, out = tool(["ring", "plan", "--drain", "s3"])
    m = re.search(r"(\d+) copies to add \((\d+) bytes\), (\d+) to remove", out)
    C.check(rc == 0 and m and int(m.group(1)) > 0 and m.group(1) == m.group(3),
            "ring plan --drain s3: as many copies to add as s3 holds, none moved yet", out)
    print("  | " + "\n  | ".join(out.strip().splitlines()))

    # ---------------------------------------------------------------- drain under load
    stop = threading.Event()
    stats = {"reads": 0, "read_failed": 0, "uploads": 0, "upload_failed": 0}

    def reader():
        i = 0
        while not stop.is_set():
            with lock:
                ids = list(ledger)
            path, sha = ledger[ids[i % len(ids)]]
            i += 1
            try:
                st, _, body = tf.request(serve, "GET", path)
                ok = st == 200 and tf.sha256(body) == sha
            except OSError:
                ok = False
            stats["reads"] += 1
            stats["read_failed"] += not ok

    def uploader():
        r = random.Random(7)
        while not stop.is_set():
            try:
                st = upload(noise_png(r))
            except OSError:
                st = None
            stats["uploads"] += 1
            stats["upload_failed"] += st != 201

    threads = [threading.Thread(target=reader), threading.Thread(target=uploader)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    rc, out = tool(["ring", "drain", "s3", "--wait", "1"])
    took = time.monotonic() - t0
    C.check(rc == 0 and "s3 holds no blob" in out and "can be switched off" in out,
            "ring drain s3 exits 0 and says the node can be switched off", out[-1500:])
    print("  drain took %.1f s:\n  | %s" % (took, "\n  | ".join(out.strip().splitlines())))
    n0 = stats["reads"] + stats["uploads"]
    tf.wait_for(lambda: stats["reads"] + stats["uploads"] >= n0 + 50, 60, "50 more requests")
    stop.set()
    for t in threads:
        t.join()
    print("  during the drain: %s" % stats)
    C.check(stats["read_failed"] == 0 and stats["reads"] > 0,
            "zero failed reads during the drain (%d reads)" % stats["reads"], str(stats))
    C.check(stats["upload_failed"] == 0 and stats["uploads"] > 0,
            "zero failed uploads during the drain (%d uploads)" % stats["uploads"], str(stats))
    tf.wait_for(lambda: jobs_pending(serve) == 0, 120, "thumbnails written")
    C.eq(disk_keys(nodes["s3"]), set(), "s3 holds no blob after the drain")
    left = {n: disk_keys(nodes[n]) for n in ("s1", "s2")}
    keys = {sha for _, sha in ledger.values()}
    C.check(all(k in left["s1"] and k in left["s2"] for k in keys),
            "every image's blob is on both nodes left (R=2)",
            str([k[:12] for k in keys if not (k in left["s1"] and k in left["s2"])][:5]))
    nodes["s3"].terminate()
    read_all("with s3 switched off, every image reads back, serve never restarted")
    rc, out = tool(["repair", "--dry-run"], ("s1", "s2"))
    C.check(rc == 0 and "0 copies restored, 0 moved home" in out and "0 lost" in out,
            "repair --dry-run on the ring left finds nothing to do", out[-800:])

    # ---------------------------------------------------------------- too few shards left
    rc, out = tool(["ring", "drain", "s2"], ("s1", "s2"))
    C.check(rc == 1 and "would leave 1 shard for R=2" in out,
            "a drain that would leave fewer shards than R refuses and says why", out)
    rc, out = tool(["ring", "show"], ("s1", "s2"))
    C.check(rc == 0 and "(in force)" in out, "the refused drain changed nothing", out)
    shutil.rmtree(root, ignore_errors=True)
    C.finish()


if __name__ == "__main__":
    main()
