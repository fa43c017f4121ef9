#!/usr/bin/env python3
"""System test: `tessera gc --apply` runs in a loop beside a live `tessera serve`.

One data dir, one SQLite database: the server takes uploads (distinct PNGs and
duplicate uploads of the same bytes), deletes and re-uploads of deleted bytes
for ~20 s while a separate `tessera gc --apply` process runs again and again
with storage.repair_grace=1s. Before the race the blob dir gets planted
garbage: orphan files no row names (old mtime), blobs with stale pins (rows
pinned two hours ago), a dead job; and, for a few PNGs uploaded then deleted,
their exact stored bytes are planted back as old orphans while the uploaders
keep uploading those same PNGs: the gc-lists-K / upload-pins-K race.
Afterwards every acknowledged live image must serve its exact bytes (sha256
of the upload answer), and the planted garbage must be gone.
"""
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_gc")

RACE_SECONDS = 20.0
MAX_UPLOADS = 600  # per uploader thread
N_ORPHANS = 20
N_STALE_PINS = 5
N_RACED = 6  # deleted PNGs planted back as orphans and uploaded again during the race
GC_FLAGS = ["--storage.repair_grace=1s", "--storage.pin_grace=60s"]


def blob_path(data_dir, key):
    return os.path.join(data_dir, "blobs", key[:2], key[2:4], key)


def plant(data_dir, data, age_s=3600):
    key = hashlib.sha256(data).hexdigest()
    p = blob_path(data_dir, key)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    t = time.time() - age_s
    os.utime(p, (t, t))
    return key


def db(data_dir):
    c = sqlite3.connect(os.path.join(data_dir, "meta.db"), timeout=10)
    c.isolation_level = None
    return c


def run_gc(data_dir, extra=()):
    cmd = [tf.tessera_bin(), "gc", "--apply", "--json", "--data-dir", data_dir] + GC_FLAGS + list(extra)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    summary = None
    for line in p.stdout.decode().splitlines():
        try:
            summary = json.loads(line)
        except ValueError:
            pass
    return p.returncode, summary, p.stderr.decode()[-800:]


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.uploaded = {}  # id -> (sha256, bytes, token)
        self.deleted = set()
        self.uncertain = set()
        self.errors = []
        self.gc_runs = 0
        self.gc_totals = {}


def guarded(fn):
    def run(*args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            import traceback
            st = args[1]
            with st.lock:
                st.errors.append("thread %s died: %r\n%s" % (fn.__name__, e, traceback.format_exc()))
    run.__name__ = fn.__name__
    return run


@guarded
def uploader(srv, st, stop, seed, shared):
    rng = random.Random(seed)
    for n in range(MAX_UPLOADS):
        if stop.is_set():
            break
        r = rng.random()
        data = rng.choice(shared) if r < 0.5 else tf.tiny_png(seed * 1000000 + n, size=6)
        status, _, body, j = tf.upload(srv, data, timeout=30)
        with st.lock:
            if status == 201 and isinstance(j, dict):
                st.uploaded[j["id"]] = (j["sha256"], j["bytes"], j["delete_token"])
            else:
                st.errors.append("upload: %s %r" % (status, body[:200]))


@guarded
def deleter(srv, st, stop, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        time.sleep(0.02)
        with st.lock:
            live = [i for i in st.uploaded if i not in st.deleted and i not in st.uncertain]
        if len(live) < 5:
            continue
        iid = rng.choice(live)
        with st.lock:
            token = st.uploaded[iid][2]
            st.uncertain.add(iid)
        status, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % iid,
                                     headers={"X-Delete-Token": token}, timeout=30)
        with st.lock:
            if status == 204:
                st.uncertain.discard(iid)
                st.deleted.add(iid)
            else:
                st.errors.append("delete of %s: %s %r" % (iid, status, body[:200]))


@guarded
def collector(data_dir, st, stop):
    while not stop.is_set():
        rc, summary, err = run_gc(data_dir)
        with st.lock:
            st.gc_runs += 1
            if rc != 0 or summary is None:
                st.errors.append("gc --apply exited %s: %s" % (rc, err))
            else:
                for k in ("stale_pins", "unused", "orphans", "variants", "jobs"):
                    st.gc_totals[k] = st.gc_totals.get(k, 0) + summary[k]["count"]
                st.gc_totals["in_use"] = st.gc_totals.get("in_use", 0) + summary["in_use"]
        time.sleep(0.2)


def main():
    srv = tf.Server(args=GC_FLAGS).start()
    d = srv.data_dir
    st = State()
    rng = random.Random(13)

    # PNGs whose stored bytes are planted back as row-less orphans once deleted.
    raced = []
    for i in range(N_RACED):
        data = tf.tiny_png(900000 + i, size=7)
        status, _, body, j = tf.upload(srv, data)
        C.eq(status, 201, "setup upload %d" % i)
        _, _, stored = tf.request(srv, "GET", "/i/%s" % j["id"])
        C.eq(tf.sha256(stored), j["sha256"], "setup upload %d reads back" % i)
        st_, _, _ = tf.request(srv, "DELETE", "/api/v1/images/%s" % j["id"],
                               headers={"X-Delete-Token": j["delete_token"]})
        C.eq(st_, 204, "setup delete %d" % i)
        raced.append((data, stored, j["sha256"]))
    deadline = time.time() + 20
    while time.time() < deadline and any(os.path.exists(blob_path(d, k)) for _, _, k in raced):
        time.sleep(0.1)  # the release jobs remove the bytes
    C.check(not any(os.path.exists(blob_path(d, k)) for _, _, k in raced),
            "setup: released blobs are gone before they are planted back")
    for _, stored, key in raced:
        plant(d, stored)

    orphans = [plant(d, os.urandom(2000 + i)) for i in range(N_ORPHANS)]
    stale = []
    c = db(d)
    now = int(time.time())
    for i in range(N_STALE_PINS):
        key = plant(d, os.urandom(3000 + i))
        c.execute("INSERT INTO blobs (key, refs, pins, bytes, created_at, pinned_at)"
                  " VALUES (?, 0, 1, ?, ?, ?)", (key, 3000 + i, now - 7200, now - 7200))
        stale.append(key)
    c.execute("INSERT INTO jobs (kind, payload, state, attempts, run_after, created_at)"
              " VALUES ('purge', 'x:png', 'dead', 8, ?, ?)",
              ((now - 30 * 86400) * 1000, (now - 30 * 86400) * 1000))
    c.close()

    rc, plan, err = subprocess.run(
        [tf.tessera_bin(), "gc", "--json", "--data-dir", d] + GC_FLAGS,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60).returncode, None, ""
    C.eq(rc, 0, "dry run exits 0")
    C.check(all(os.path.exists(blob_path(d, k)) for k in orphans + stale),
            "dry run removed nothing")

    shared = [data for data, _, _ in raced] + [tf.tiny_png(800000 + i, size=5) for i in range(4)]
    stop = threading.Event()
    threads = [threading.Thread(target=uploader, args=(srv, st, stop, 1 + i, shared)) for i in range(2)]
    threads.append(threading.Thread(target=deleter, args=(srv, st, stop, 7)))
    threads.append(threading.Thread(target=collector, args=(d, st, stop)))
    for t in threads:
        t.start()
    time.sleep(RACE_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    C.check(not any(t.is_alive() for t in threads), "all client threads finished")

    with st.lock:
        errors = list(st.errors)
        uploaded = dict(st.uploaded)
        deleted = set(st.deleted)
        uncertain = set(st.uncertain)
        runs = st.gc_runs
        totals = dict(st.gc_totals)
    print("gc runs: %d, totals: %r; uploads %d, deletes %d" % (runs, totals, len(uploaded), len(deleted)))
    C.check(not errors, "no unexpected answers or gc failures", "\n".join(errors[:10]))
    C.check(runs >= 5, "gc --apply ran repeatedly during the race", "%d runs" % runs)
    C.check(len(uploaded) >= 20, "uploads were acknowledged", "%d" % len(uploaded))

    time.sleep(1.5)  # past the 1 s grace: one last pass collects what the race left
    rc, summary, err = run_gc(d)
    C.eq(rc, 0, "final gc --apply exits 0", err)

    live = {i: v for i, v in uploaded.items() if i not in deleted and i not in uncertain}
    bad = []
    for iid, (sha, size, _) in sorted(live.items()):
        status, _, body = tf.request(srv, "GET", "/i/%s" % iid)
        if status != 200 or tf.sha256(body) != sha or len(body) != size:
            bad.append("%s: status %s, %d bytes, sha %s, want %s" % (iid, status, len(body),
                                                                      tf.sha256(body)[:16], sha[:16]))
    C.check(not bad, "all %d acknowledged live images serve their exact bytes" % len(live),
            "\n".join(bad[:10]))
    for iid in sorted(deleted)[:50]:
        status, _, _ = tf.request(srv, "GET", "/i/%s" % iid)
        if status != 404:
            bad.append("deleted %s: %s" % (iid, status))
    C.check(not bad, "deleted images answer 404", "\n".join(bad[:10]))

    C.check(not any(os.path.exists(blob_path(d, k)) for k in orphans),
            "planted orphan files were collected")
    C.check(not any(os.path.exists(blob_path(d, k)) for k in stale),
            "blobs with stale pins were collected")
    c = db(d)
    rows = c.execute("SELECT count(*) FROM blobs WHERE key IN (%s)" % ",".join("?" * len(stale)),
                     stale).fetchone()[0]
    dead = c.execute("SELECT count(*) FROM jobs WHERE state = 'dead'").fetchone()[0]
    live_keys = {v[0] for v in live.values()}
    unreferenced = c.execute("SELECT count(*) FROM blobs WHERE refs = 0 AND pins = 0").fetchone()[0]
    c.close()
    C.eq(rows, 0, "stale-pinned rows are gone")
    C.eq(dead, 0, "the old dead job is gone")
    C.eq(unreferenced, 0, "no unreferenced blobs row is left after the final pass")
    on_disk = set()
    for root, _, files in os.walk(os.path.join(d, "blobs")):
        if os.path.basename(root) != "tmp" and "tmp" not in os.path.relpath(root, d).split(os.sep)[1:2]:
            on_disk.update(f for f in files if len(f) == 64)
    C.check(live_keys <= on_disk, "every live image's blob is on disk")
    srv.stop()
    C.finish()


if __name__ == "__main__":
    C.run(main)
    C.finish()
