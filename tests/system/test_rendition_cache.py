#!/usr/bin/env python3
"""System test: the renditions' disk budget and auto's WebP stand-in, on `tessera serve`.

Budget (transforms.cache_bytes): six renditions of nearly one size against a budget that
holds three. A rendition used again (after transforms.touch_interval) outlives older ones
that were not; the least recently used go (row and blob), the preset `thumb` stays, an
evicted rendition is made again on request, and a purge job names each evicted rendition.
Edge: with a real Varnish (deploy/local/edge.sh, the shipped VCL, on 127.0.0.1:8000 +
TESSERA_TEST_PORT_OFFSET, default 470) in front and the varnish purger, an evicted rendition
is purged from the edge (its next request there misses).
Stand-in (transforms.auto_standin): `.auto` for an AVIF client first answers the WebP
rendition with a short max-age, then, once the background job made it, the AVIF, immutable.
"""
import os
import shutil
import sqlite3
import subprocess
import tempfile
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_rendition_cache")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OFF = int(os.environ.get("TESSERA_TEST_PORT_OFFSET", "470"))
KEY = "rendition-cache-test-key-0123456789"
IMAGE = "accept_jpeg_baseline_rocket_640x427.jpg"
OPS = ["w:300,q:%d.webp" % q for q in (60, 61, 62, 63, 64, 65)]


def tpath(image_id, canonical):
    return tf.signed_rendition_path(KEY, image_id, canonical)


def metric(srv, name):
    return tf.metric_value(srv, name)


def db(srv, sql, *args):
    with sqlite3.connect(os.path.join(srv.data_dir, "meta.db"), timeout=10) as c:
        return c.execute(sql, args).fetchall()


def row_key(srv, image_id, name):
    r = db(srv, "SELECT key FROM variants WHERE image_id = ? AND name = ?", image_id, name)
    return r[0][0] if r else None


def blob_exists(srv, key):
    return os.path.exists(os.path.join(srv.data_dir, "blobs", key[:2], key[2:4], key))


def next_second():
    """Waits until the wall clock enters a new second (rows record whole seconds)."""
    s = int(time.time())
    tf.wait_for(lambda: int(time.time()) > s, 5, "the next second", interval=0.02)


def sizes():
    """The bytes of each rendition of OPS, made by a server without a budget."""
    with tf.Server(["--transforms.keys=" + KEY]) as srv:
        _, _, _, j = tf.upload(srv, tf.corpus_bytes(IMAGE))
        out = []
        for o in OPS:
            st, _, body = tf.request(srv, "GET", tpath(j["id"], o))
            C.eq(st, 200, "sizing %s" % o)
            out.append(len(body))
        return out


def t_budget():
    size = sizes()
    budget = sum(sorted(size)[-3:]) + 1  # any three fit
    C.check(sum(sorted(size)[:4]) > budget, "setup: no four renditions fit", str(size))
    args = ["--transforms.keys=" + KEY, "--transforms.cache_bytes=%d" % budget,
            "--transforms.touch_interval=2s", "--transforms.evict_interval=200ms"]
    with tf.Server(args) as srv:
        st, _, _, j = tf.upload(srv, tf.corpus_bytes(IMAGE))
        C.eq(st, 201, "upload")
        iid = j["id"]
        st, _, _ = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid)
        C.eq(st, 200, "the preset thumb")

        def get(o):
            st, h, _ = tf.request(srv, "GET", tpath(iid, o))
            C.eq(st, 200, "GET %s" % o)
            return h

        get(OPS[0])
        next_second()  # OPS[0] is older than the next two...
        get(OPS[1])
        get(OPS[2])
        keys = {o: row_key(srv, iid, o) for o in OPS[:3]}
        C.check(all(keys.values()), "three renditions recorded", str(keys))
        # ...but used again once its use is over touch_interval old (a batched write)
        for _ in range(3):
            next_second()
        touches = metric(srv, "tessera_renditions_touches_total")
        get(OPS[0])
        C.check(tf.wait_for(lambda: metric(srv, "tessera_renditions_touches_total") > touches,
                            30, "the touch written"), "a use of a stale rendition is written")
        used = db(srv, "SELECT used_at FROM variants WHERE image_id = ? AND name = ?", iid,
                  OPS[0])
        C.check(used and used[0][0], "used_at recorded", str(used))
        # GETs of a rendition used within touch_interval write nothing
        touches = metric(srv, "tessera_renditions_touches_total")
        for _ in range(5):
            get(OPS[0])
        get(OPS[3])  # four: over budget
        C.check(tf.wait_for(lambda: metric(srv, "tessera_renditions_evicted_total") >= 1, 30,
                            "an eviction"), "over budget: a rendition evicted")
        C.eq(metric(srv, "tessera_renditions_touches_total"), touches,
             "GETs of a rendition used within touch_interval write nothing")
        gone = [o for o in OPS[:4] if row_key(srv, iid, o) is None]
        C.check(len(gone) == 1 and gone[0] in (OPS[1], OPS[2]),
                "the least recently used went (one of the two not used again), not the "
                "older one used again", str(gone))
        if gone:
            C.check(tf.wait_for(lambda: not blob_exists(srv, keys[gone[0]]), 30,
                                "the evicted blob released"), "the evicted rendition's blob is gone")
        for o in OPS[4:]:
            get(o)
        C.check(tf.wait_for(lambda: db(srv, "SELECT coalesce(sum(bytes), 0) FROM variants"
                                            " WHERE name LIKE '%:%'")[0][0] <= budget, 30,
                            "renditions within budget"), "renditions kept within the budget")
        total = db(srv, "SELECT count(*) FROM variants WHERE name LIKE '%:%'")[0][0]
        C.eq(total, 3, "three renditions left")
        C.check(row_key(srv, iid, "thumb") is not None, "the preset thumb is never evicted")
        # an evicted rendition is made again on request
        made = metric(srv, "tessera_renditions_made_total")
        again = gone[0] if gone else OPS[1]
        st, h, body = tf.request(srv, "GET", tpath(iid, again))
        C.check(st == 200 and len(body) > 0, "an evicted rendition is served again", "%d" % st)
        C.eq(metric(srv, "tessera_renditions_made_total") - made, 1, "... made once more")
        C.check(row_key(srv, iid, again) is not None, "... and recorded again")
        C.check(srv.alive(), "server alive", srv.death_note())


def t_edge_purge():
    if shutil.which("varnishd") is None:
        print("SKIP t_edge_purge: no varnishd (scripts/deps.sh)")
        return
    run = tempfile.mkdtemp(prefix="tessera-edge-")
    os.chmod(run, 0o755)  # varnish's worker (vcache) reads below it
    edge = 8000 + OFF
    size = sizes()
    args = ["--transforms.keys=" + KEY, "--transforms.cache_bytes=%d" % (size[0] + size[1] - 1),
            "--transforms.evict_interval=200ms", "--jobs.poll=50ms", "--cdn.purger=varnish",
            "--cdn.purge_urls=http://127.0.0.1:%d" % edge]
    srv = tf.Server(args)
    env = None
    try:
        srv.start()
        env = dict(os.environ, TESSERA_RUN=run, TESSERA_PORT_OFFSET=str(OFF),
                   TESSERA_LB_PORT=str(srv.port))
        subprocess.run([os.path.join(ROOT, "deploy", "local", "edge.sh"), "start"], env=env,
                       check=True, capture_output=True, timeout=60)
        _, _, _, j = tf.upload(srv, tf.corpus_bytes(IMAGE))
        path = tpath(j["id"], OPS[0])

        def via_edge():
            st, h, _ = tf.request("http://127.0.0.1:%d" % edge, "GET", path)
            return st, h.get("X-Cache")
        C.eq(via_edge(), (200, "MISS"), "a rendition through the edge: a miss")
        C.eq(via_edge(), (200, "HIT"), "then a hit (cached at the edge)")
        next_second()  # older than the next one
        st, _, _ = tf.request(srv, "GET", tpath(j["id"], OPS[1]))
        C.eq(st, 200, "a second rendition: over the budget")
        C.check(tf.wait_for(lambda: metric(srv, "tessera_cdn_purges_total") >= 1, 30,
                            "the evicted rendition's purge"), "the eviction was purged at the edge")
        C.check(row_key(srv, j["id"], OPS[0]) is None, "the first rendition was the one evicted")
        C.eq(via_edge(), (200, "MISS"), "after the eviction the edge misses (made again)")
    finally:
        if env is not None:
            subprocess.run([os.path.join(ROOT, "deploy", "local", "edge.sh"), "stop"], env=env,
                           capture_output=True, timeout=60)
        srv.stop()
        shutil.rmtree(run, ignore_errors=True)


def t_standin():
    args = ["--transforms.keys=" + KEY, "--transforms.auto_standin=true",
            "--transforms.standin_max_age=30s"]
    with tf.Server(args) as srv:
        _, _, _, j = tf.upload(srv, tf.corpus_bytes(IMAGE))
        path = tpath(j["id"], "w:320.auto")
        st, h, body = tf.request(srv, "GET", path, headers={"Accept": "image/avif,image/webp"})
        C.eq((st, h.get("Content-Type")), (200, "image/webp"), "first auto for AVIF: WebP stand-in")
        C.eq(h.get("Cache-Control"), "public, max-age=30", "a stand-in: short max-age, not immutable")
        C.eq(h.get("Vary"), "Accept", "a stand-in varies on Accept")
        C.check(tf.wait_for(lambda: row_key(srv, j["id"], "w:320.avif"), 60,
                            "the AVIF made in the background"), "the AVIF is made in the background")
        st, h, body = tf.request(srv, "GET", path, headers={"Accept": "image/avif,image/webp"})
        C.check(st == 200 and h.get("Content-Type") == "image/avif" and body[4:8] == b"ftyp",
                "then auto answers the AVIF", "%d %s" % (st, h.get("Content-Type")))
        C.eq(h.get("Cache-Control"), "public, max-age=31536000, immutable", "... immutable")
        st, h, _ = tf.request(srv, "GET", path, headers={"Accept": "image/webp"})
        C.eq((h.get("Content-Type"), h.get("Cache-Control")),
             ("image/webp", "public, max-age=31536000, immutable"),
             "a WebP client gets the same WebP rendition as immutable")


def main():
    C.run(t_budget)
    C.run(t_edge_purge)
    C.run(t_standin)
    C.finish()


if __name__ == "__main__":
    main()
