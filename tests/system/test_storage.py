#!/usr/bin/env python3
"""System test of the storage ring: 3 (then 4) real `tessera storage` nodes on loopback and a
`tessera serve` using them (R=2, W=2). Python stdlib only; bounded to a few minutes.

Covers: corpus upload and read; one node down (reads, uploads hinted, /readyz); restart +
`tessera repair` -> every blob on exactly its R homes (node listings); two nodes down -> 503 +
Retry-After and no row; a corrupt copy -> correct reads, repair rewrites it; a fourth node +
`tessera ring rebalance` while a read loop runs -> zero failed reads, blobs on their new homes.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import struct
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tessera_fixture as tf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("TESSERA_BIN") or os.path.join(REPO, "build", "tessera")
DATA = os.environ.get("TESSERA_TESTDATA") or os.path.join(REPO, "..", "shared", "testdata",
                                                          "images")

failures = []


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else ": " + detail),
          flush=True)
    if not cond:
        failures.append(what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def request(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


class Proc:
    """One tessera process (storage node or serve) with its own data dir and log."""

    def __init__(self, root, name, args):
        self.name, self.args = name, args
        self.port = free_port()
        self.data = os.path.join(root, name)
        self.log = os.path.join(root, name + ".log")
        self.p = None

    def start(self, extra=()):
        logf = open(self.log, "a")
        self.p = subprocess.Popen([BIN] + self.args + ["--listen", "127.0.0.1:%d" % self.port,
                                                       "--data-dir", self.data,
                                                       "--log.access=false"] + list(extra),
                                  stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        for _ in range(200):
            try:
                if request(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("%s did not start: %s" % (self.name, open(self.log).read()[-2000:]))

    def stop(self):
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p = None


def listing(node):
    keys, after = [], ""
    while True:
        st, _, body = request(node.port, "GET", "/blobs?limit=1000&after=" + after)
        j = json.loads(body)
        keys += [e["key"] for e in j["blobs"]]
        if not j["next"]:
            return set(keys)
        after = j["next"]


def jobs_pending(serve):
    """Jobs queued (due or backing off) or running in serve's SQLite database."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(serve.data, "meta.db"), uri=True,
                         timeout=10)
    try:
        return db.execute("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
                          ).fetchone()[0]
    finally:
        db.close()


def png_bytes(w, h, rgb):
    """A valid RGB PNG of w x h pixels (rgb: w*h*3 bytes)."""
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xffffffff)
    raw = b"".join(b"\x00" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def blob_path(node, key):
    return os.path.join(node.data, "blobs", key[:2], key[2:4], key)


def main():
    root = tempfile.mkdtemp(prefix="tessera-ring-")
    procs = []
    try:
        run(root, procs)
    finally:
        for p in procs:
            p.stop()
        if not failures:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("logs kept in", root)
    print("==== test_storage: %d failures" % len(failures))
    sys.exit(1 if failures else 0)


def ring_text(nodes):
    return ",".join("%s=http://127.0.0.1:%d" % (n.name, n.port) for n in nodes)


def tool(args, nodes, serve_dir):
    """Runs a tessera admin command against the ring of nodes and serve's metadata."""
    r = subprocess.run([BIN] + args + ["--storage.shards=" + ring_text(nodes),
                                       "--data-dir", serve_dir, "--log.level=warn"],
                       capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def run(root, procs):
    nodes = [Proc(root, "s%d" % i, ["storage"]) for i in (1, 2, 3)]
    procs += nodes
    for n in nodes:
        n.start()
    serve = Proc(root, "serve", ["serve"])
    procs.append(serve)
    # the default epoll model: reads from remote shards run on the worker threads
    serve_args = ["--storage.shards=" + ring_text(nodes), "--storage.replicas=2",
                  "--storage.write_quorum=2",
                  "--storage.connect_timeout=300ms", "--storage.down_backoff=500ms"]
    serve.start(serve_args)

    # --- corpus upload and read
    manifest = [l.rstrip("\n").split("\t") for l in open(os.path.join(DATA, "manifest.tsv"))]
    files = [r[0] for r in manifest[1:] if r[5] == "accept"]
    images = {}  # id -> (url path, sha256 of the served bytes)

    def upload(path):
        st, h, body = request(serve.port, "POST", "/api/v1/images", open(path, "rb").read(),
                              {"Content-Type": "application/octet-stream"})
        return st, h, body

    def read_all(what, subset=None):
        bad = []
        for iid, (path, sha) in images.items():
            if subset is not None and iid not in subset:
                continue
            st, _, body = request(serve.port, "GET", path)
            if st != 200 or hashlib.sha256(body).hexdigest() != sha:
                bad.append((iid, st))
        check(not bad, what, "%d bad: %s" % (len(bad), bad[:3]))

    keys = {}
    for f in files:
        st, _, body = upload(os.path.join(DATA, f))
        if not check(st == 201, "upload %s" % f, "%d %s" % (st, body[:200])):
            continue
        j = json.loads(body)
        path = "/i/" + j["url"].split("/i/", 1)[1]
        st, _, data = request(serve.port, "GET", path)
        images[j["id"]] = (path, hashlib.sha256(data).hexdigest())
        keys[j["id"]] = hashlib.sha256(data).hexdigest()
    read_all("every uploaded image reads back through the ring")
    all_keys = set(keys.values())

    def placement_ok(live_nodes, what):
        # every blob on exactly its R=2 homes: ask the ring (ring show is not placement: we check
        # counts) -- each key listed on exactly 2 nodes, and on no node off its home.
        lists = {n.name: listing(n) for n in live_nodes}
        counts = {k: sum(k in l for l in lists.values()) for k in all_keys}
        bad = {k: c for k, c in counts.items() if c != 2}
        check(not bad, what, "%d keys not on exactly 2 nodes: %s" % (len(bad),
                                                                     list(bad.items())[:3]))
        return lists

    lists0 = placement_ok(nodes, "each blob is on exactly 2 of the 3 nodes after upload")

    # --- one node down: reads, hinted uploads, readiness
    nodes[2].stop()
    read_all("reads work with s3 down")
    st, _, _ = request(serve.port, "GET", "/readyz")
    check(st == 200, "/readyz of serve is 200 with s3 down", str(st))
    # a new image while s3 is down: variants of an existing file give new bytes
    extra = os.path.join(root, "extra.png")
    src = os.path.join(DATA, [f for f in files if f.endswith(".png")][0])
    with open(extra, "wb") as o:
        o.write(open(src, "rb").read())
    hinted = []
    for f in files[:6]:
        st, _, body = upload(os.path.join(DATA, f))
        check(st == 201, "upload with s3 down (%s)" % f, "%d %s" % (st, body[:200]))
    # fresh bytes: a PNG with an extra ancillary chunk before IEND is a different blob
    data = open(src, "rb").read()
    fresh = data[:-12] + b"\x00\x00\x00\x04teXt" + b"abcd" + b"\x00\x00\x00\x00" + data[-12:]
    st, _, body = request(serve.port, "POST", "/api/v1/images", fresh,
                          {"Content-Type": "application/octet-stream"})
    if check(st == 201, "a new blob uploads with s3 down (hinted)", "%d %s" % (st, body[:200])):
        j = json.loads(body)
        path = "/i/" + j["url"].split("/i/", 1)[1]
        st, _, d = request(serve.port, "GET", path)
        images[j["id"]] = (path, hashlib.sha256(d).hexdigest())
        all_keys.add(hashlib.sha256(d).hexdigest())
        hinted.append(j["id"])
    read_all("every image reads with s3 down, the new one included")

    # --- restart + repair: every blob on exactly its R homes
    nodes[2].start()
    # serve's background jobs (thumbnails) may still write hinted copies: let them drain, so
    # this repair sees the final state
    tf.wait_for(lambda: jobs_pending(serve) == 0, 60, "serve's job queue to drain")
    read_all("reads once s3 is back")
    rc, out = tool(["repair"], nodes, serve.data)
    check(rc == 0, "tessera repair exits 0", out[-1500:])
    print(out.strip().splitlines()[-1] if out.strip() else "")
    placement_ok(nodes, "after repair every blob is on exactly 2 nodes")
    rc, out = tool(["repair", "--dry-run"], nodes, serve.data)
    check(rc == 0 and "0 copies restored, 0 moved home" in out,
          "a second repair finds nothing to do", out[-800:])
    read_all("reads after repair")

    # --- two of three down: uploads 503 + Retry-After, nothing recorded; reads with a survivor
    st, _, body = request(serve.port, "GET", "/api/v1/images?limit=1000")
    before = len(json.loads(body)["items"])
    nodes[1].stop()
    nodes[2].stop()
    fresh2 = data[:-12] + b"\x00\x00\x00\x04teXt" + b"wxyz" + b"\x00\x00\x00\x00" + data[-12:]
    st, h, body = request(serve.port, "POST", "/api/v1/images", fresh2,
                          {"Content-Type": "application/octet-stream"})
    check(st == 503 and "retry-after" in h, "upload with 2 of 3 nodes down: 503 + Retry-After",
          "%d %s" % (st, h))
    st, _, body = request(serve.port, "GET", "/api/v1/images?limit=1000")
    check(len(json.loads(body)["items"]) == before, "nothing recorded by the refused upload")
    s1 = listing(nodes[0])
    survivors = {iid for iid in images if keys.get(iid, images[iid][1]) in s1}
    read_all("images with a copy on the surviving node read (%d)" % len(survivors), survivors)
    nodes[1].start()
    nodes[2].start()
    # serve reaches the nodes again (its /readyz wants W=2 of them)
    tf.wait_for(lambda: request(serve.port, "GET", "/readyz")[0] == 200, 60, "serve's /readyz 200")

    # --- a corrupt copy: reads stay correct, repair rewrites it
    victim_id = next(iter(images))
    vkey = keys.get(victim_id) or images[victim_id][1]
    holders = [n for n in nodes if os.path.exists(blob_path(n, vkey))]
    for n in holders:  # corrupt the first holder's copy (mode 0444: chmod first)
        p = blob_path(n, vkey)
        os.chmod(p, 0o644)
        b = bytearray(open(p, "rb").read())
        b[len(b) // 2] ^= 0xFF
        open(p, "wb").write(bytes(b))
        break
    read_all("reads are correct with one corrupt copy")
    rc, out = tool(["repair"], nodes, serve.data)
    check(rc == 0 and "1 corrupt rewritten" in out, "repair rewrites the corrupt copy",
          out[-1500:])
    p = blob_path(holders[0], vkey)
    check(hashlib.sha256(open(p, "rb").read()).hexdigest() == vkey,
          "the copy on disk is correct again")

    # --- add a fourth node and rebalance under a mixed load, serve never restarted: it follows
    # the ring in force (storage.ring_poll), writes going to the new placement at once
    s4 = Proc(root, "s4", ["storage"])
    procs.append(s4)
    s4.start()
    stop = threading.Event()
    stats = {"reads": 0, "failed": 0, "uploads": 0, "upload_failed": 0}
    lock = threading.Lock()
    small = [os.path.join(DATA, f) for f in files][:6]

    def reader():
        i = 0
        while not stop.is_set():
            with lock:
                ids = list(images)
            path, sha = images[ids[i % len(ids)]]
            i += 1
            try:
                st, _, body = request(serve.port, "GET", path)
                ok = st == 200 and hashlib.sha256(body).hexdigest() == sha
            except OSError:
                ok = False
            stats["reads"] += 1
            stats["failed"] += not ok

    def uploader():
        i = 0
        while not stop.is_set() and stats["uploads"] < 300:
            # new bytes (new keys placed on the ring of the moment), and every third a
            # duplicate of the corpus
            i += 1
            data = png_bytes(16, 16, os.urandom(16 * 16 * 3)) if i % 3 else \
                open(small[i % len(small)], "rb").read()
            try:
                st, _, body = request(serve.port, "POST", "/api/v1/images", data,
                                      {"Content-Type": "application/octet-stream"})
            except OSError:
                st, body = None, b""
            stats["uploads"] += 1
            if st != 201:
                stats["upload_failed"] += 1
                continue
            j = json.loads(body)
            path = "/i/" + j["url"].split("/i/", 1)[1]
            with lock:
                images[j["id"]] = (path, j["sha256"])

    threads = [threading.Thread(target=reader), threading.Thread(target=uploader)]
    for t in threads:
        t.start()
    four = nodes + [s4]
    rc, out = tool(["ring", "plan"], four, serve.data)
    check(rc == 0 and "to add" in out, "ring plan shows the move", out[-800:])
    print(out.strip().splitlines()[-1] if out.strip() else "")
    rc, out = tool(["ring", "rebalance", "--wait", "3"], four, serve.data)
    check(rc == 0, "ring rebalance exits 0", out[-1500:])
    n0 = stats["reads"] + stats["uploads"]
    # the scenario: the load runs on for 100 more requests after the move
    tf.wait_for(lambda: stats["reads"] + stats["uploads"] >= n0 + 100, 60, "100 more requests")
    stop.set()
    for t in threads:
        t.join()
    print("  during the rebalance: %d reads (%d failed), %d uploads (%d failed)"
          % (stats["reads"], stats["failed"], stats["uploads"], stats["upload_failed"]))
    check(stats["failed"] == 0 and stats["reads"] > 0,
          "zero failed reads during the rebalance (%d reads)" % stats["reads"], str(stats))
    check(stats["upload_failed"] == 0 and stats["uploads"] > 0,
          "zero failed uploads during the rebalance (%d uploads)" % stats["uploads"], str(stats))
    st, _, body = request(serve.port, "GET", "/metrics")
    m = re.search(rb"^tessera_ring_changes_total (\d+)", body, re.M)
    check(m is not None and int(m.group(1)) >= 1,
          "serve followed the new ring without a restart", body[-300:] if m is None else m.group(0))
    read_all("every image, those uploaded during the move too, reads back with no restart")
    # serve's thumbnails of the new uploads are still being written: let the jobs drain, so the
    # check sees the final state (a variant half-written to its two homes is not a lost copy)
    tf.wait_for(lambda: jobs_pending(serve) == 0, 120, "serve's job queue to drain")
    rc, out = tool(["repair", "--dry-run"], four, serve.data)
    m = re.search(r"(\d+) copies restored, (\d+) moved home", out)
    check(rc == 0 and m is not None and m.group(1) == "0" and m.group(2) == "0",
          "after the rebalance repair --dry-run finds nothing to move", out[-800:])
    lists = {n.name: listing(n) for n in four}
    check(len(lists["s4"]) > 0, "the new node holds blobs (%d)" % len(lists["s4"]))
    all_keys |= {sha for _, sha in images.values()}
    counts = {k: sum(k in l for l in lists.values()) for k in all_keys}
    check(all(c == 2 for c in counts.values()), "every blob on exactly 2 of 4 nodes after the move",
          str({k[:12]: c for k, c in counts.items() if c != 2})[:300])
    # serve restarted with the new ring reads everything
    serve.stop()
    serve_args[0] = "--storage.shards=" + ring_text(four)
    serve.start(serve_args)
    read_all("serve started on the new ring reads every image")

if __name__ == "__main__":
    main()
