#!/usr/bin/env python3
"""System test: nothing acknowledged is lost when the server is killed -9 mid-stream.

Three cycles on one data dir: start; 2 threads upload (small corpus files and distinct
generated PNGs, so blobs are both shared and unique), a third asks for thumbnails and
deletes some images; after ~3 s SIGKILL; restart. Every upload answered 201 must then
serve its exact bytes, show in the metadata and the listing; every delete answered 204
stays deleted (while other images sharing its bytes stay); the tmp/ folder holds no
upload-* bodies.
"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_crash")

CYCLES = 3
RUN_SECONDS = 3.0
MAX_CORPUS_BYTES = 120000


def small_accept_files():
    rows = [r for r in tf.load_manifest() if r["expected"] == "accept"]
    out = []
    for r in rows:
        data = tf.corpus_bytes(r["file"])
        if len(data) <= MAX_CORPUS_BYTES:
            out.append((r["file"], data))
    return out


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.uploaded = {}  # id -> (sha256, bytes, delete_token, source)
        self.deleted = set()  # answered 204
        self.uncertain = set()  # delete sent, no answer (crash): either outcome is fine
        self.errors = []  # unexpected answers while the server was up
        self.thumbs_made = set()


def guarded(fn):
    """A client thread that dies of a bug in the test is a failure, not silence."""
    def run(srv, st, *args):
        try:
            fn(srv, st, *args)
        except Exception as e:  # noqa: BLE001
            import traceback
            with st.lock:
                st.errors.append("client thread %s died: %r\n%s" % (fn.__name__, e, traceback.format_exc()))
    run.__name__ = fn.__name__
    return run


@guarded
def uploader(srv, st, stop, files, seed):
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        n += 1
        if n % 2 == 0:
            name, data = rng.choice(files)
        else:
            name, data = "generated png", tf.tiny_png(seed * 1000000 + n, size=8)
        try:
            status, h, body, j = tf.upload(srv, data, use_multipart=(n % 3 == 0), timeout=30)
        except Exception:  # noqa: BLE001 - the server was killed under us
            continue
        if status == 201 and isinstance(j, dict):
            with st.lock:
                st.uploaded[j["id"]] = (j["sha256"], j["bytes"], j["delete_token"], name)
        elif not stop.is_set():
            with st.lock:
                st.errors.append("upload of %s: %s %r" % (name, status, body[:200]))


@guarded
def reader_deleter(srv, st, stop, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        with st.lock:
            live = [i for i in st.uploaded if i not in st.deleted and i not in st.uncertain]
        if not live:
            time.sleep(0.01)  # back-off until the uploaders have something
            continue
        iid = rng.choice(live)
        if rng.random() < 0.3:
            with st.lock:
                token = st.uploaded[iid][2]
                st.uncertain.add(iid)
            try:
                status, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % iid,
                                             headers={"X-Delete-Token": token}, timeout=30)
            except Exception:  # noqa: BLE001
                continue  # stays uncertain
            with st.lock:
                if status == 204:
                    st.uncertain.discard(iid)
                    st.deleted.add(iid)
                else:
                    st.errors.append("delete of %s: %s %r" % (iid, status, body[:200]))
        else:
            try:
                status, _, body = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid, timeout=30)
            except Exception:  # noqa: BLE001
                continue
            with st.lock:
                if status == 200:
                    st.thumbs_made.add(iid)
                elif not stop.is_set() and iid not in st.deleted:
                    st.errors.append("thumb of %s: %s %r" % (iid, status, body[:200]))


def verify(srv, st, cycle):
    tag = "cycle %d" % cycle
    tmp = os.path.join(srv.data_dir, "tmp")
    left = sorted(f for f in os.listdir(tmp) if f.startswith("upload-")) if os.path.isdir(tmp) else []
    C.check(not left, "%s: tmp/ holds no upload-* files after restart" % tag, repr(left[:10]))
    with st.lock:
        uploaded = dict(st.uploaded)
        deleted = set(st.deleted)
        uncertain = set(st.uncertain)
    must_live = {i: v for i, v in uploaded.items() if i not in deleted and i not in uncertain}
    C.check(len(must_live) > 0, "%s: some uploads were acknowledged" % tag, "none")
    bad_bytes, bad_meta = [], []
    for iid, (sha, size, _, name) in sorted(must_live.items()):
        status, h, body = tf.request(srv, "GET", "/i/%s" % iid)
        if status != 200 or tf.sha256(body) != sha or len(body) != size:
            bad_bytes.append("%s (%s): status %s, %d bytes, sha %s; expected %d bytes sha %s"
                             % (iid, name, status, len(body), tf.sha256(body)[:16], size, sha[:16]))
        status, h, body = tf.request(srv, "GET", "/api/v1/images/%s" % iid)
        j = tf.parse_json(body) if status == 200 else None
        if not isinstance(j, dict) or j.get("sha256") != sha or j.get("bytes") != size:
            bad_meta.append("%s: status %s %r" % (iid, status, body[:150]))
    C.check(not bad_bytes, "%s: all %d acknowledged live uploads GET 200 with their sha256"
            % (tag, len(must_live)), "%d bad: %s" % (len(bad_bytes), "; ".join(bad_bytes[:8])))
    C.check(not bad_meta, "%s: all acknowledged live uploads have their metadata" % tag,
            "%d bad: %s" % (len(bad_meta), "; ".join(bad_meta[:8])))
    back = []
    for iid in sorted(deleted):
        for p in ("/i/%s" % iid, "/api/v1/images/%s" % iid, "/i/%s/thumb.webp" % iid):
            status, _, _ = tf.request(srv, "GET", p)
            if status != 404:
                back.append("%s -> %s" % (p, status))
    C.check(not back, "%s: all %d acknowledged deletes stay deleted" % (tag, len(deleted)),
            "; ".join(back[:8]))
    # the listing
    listed = []
    cursor = None
    for _ in range(1000):
        path = "/api/v1/images?limit=100" + ("&cursor=%s" % cursor if cursor else "")
        status, _, body = tf.request(srv, "GET", path)
        j = tf.parse_json(body)
        if status != 200 or not isinstance(j, dict):
            C.check(False, "%s: listing answers" % tag, "GET %s: %s %r" % (path, status, body[:200]))
            break
        listed += [it.get("id") for it in j.get("items", [])]
        cursor = j.get("next_cursor")
        if cursor is None:
            break
    missing = sorted(set(must_live) - set(listed))
    C.check(not missing, "%s: the listing contains every acknowledged live upload" % tag,
            "%d missing: %s" % (len(missing), missing[:10]))
    dups = sorted({i for i in listed if listed.count(i) > 1})
    C.check(not dups, "%s: no id listed twice" % tag, repr(dups[:10]))
    ghosts = sorted(set(listed) & deleted)
    C.check(not ghosts, "%s: no deleted image listed" % tag, repr(ghosts[:10]))
    # every listed image (also ones whose 201 was lost in the crash) serves its bytes
    unknown = [i for i in listed if i not in uploaded]
    broken = []
    for iid in unknown:
        status, _, body = tf.request(srv, "GET", "/api/v1/images/%s" % iid)
        j = tf.parse_json(body) or {}
        status2, _, b2 = tf.request(srv, "GET", "/i/%s" % iid)
        if status != 200 or status2 != 200 or tf.sha256(b2) != j.get("sha256"):
            broken.append("%s: meta %s, bytes %s" % (iid, status, status2))
    C.check(not broken, "%s: listed images whose answer was lost (%d) serve their bytes" % (tag, len(unknown)),
            "; ".join(broken[:8]))
    # thumbnails (some were being made when the server died)
    sample = sorted(i for i in must_live)
    random.Random(cycle).shuffle(sample)
    sample = sorted(set(sample[:10]) | (st.thumbs_made & set(must_live)))[:40]
    bad_thumbs = []
    for iid in sample:
        status, h, body = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid, timeout=60)
        ok = status == 200 and h.get("ETag") == '"%s"' % tf.sha256(body)
        if ok:
            try:
                info = tf.webp_info(body)
                ok = 1 <= info["width"] <= 256 and 1 <= info["height"] <= 256
            except ValueError:
                ok = False
        if not ok:
            bad_thumbs.append("%s: %s %d bytes" % (iid, status, len(body)))
    C.check(not bad_thumbs, "%s: thumbnails of %d surviving uploads are valid WebP (ETag = sha256)"
            % (tag, len(sample)), "; ".join(bad_thumbs[:8]))


def main():
    files = small_accept_files()
    st = State()
    srv = tf.Server()
    try:
        for cycle in range(1, CYCLES + 1):
            srv.port = None  # a fresh port each start
            srv.start()
            stop = threading.Event()
            threads = [threading.Thread(target=uploader, args=(srv, st, stop, files, cycle * 10 + k))
                       for k in range(2)]
            threads.append(threading.Thread(target=reader_deleter, args=(srv, st, stop, cycle)))
            with st.lock:
                before = len(st.uploaded)
            for t in threads:
                t.start()
            time.sleep(RUN_SECONDS)  # the scenario: the load runs this long before the kill
            # ...and has had at least one upload acknowledged, however slow the machine
            tf.wait_for(lambda: len(st.uploaded) > before or not srv.alive(), 60,
                        "an acknowledged upload this cycle")
            C.check(srv.alive(), "cycle %d: server alive under load until the kill" % cycle, srv.death_note())
            srv.kill()  # SIGKILL mid-stream
            print("cycle %d: killed -9 after %.1f s (%d acknowledged uploads this cycle, %d deletes so far)"
                  % (cycle, RUN_SECONDS, len(st.uploaded) - before, len(st.deleted)), flush=True)
            stop.set()
            for t in threads:
                t.join(60)
            C.check(not any(t.is_alive() for t in threads), "cycle %d: client threads finished" % cycle)
            with st.lock:
                errs = list(st.errors)
                st.errors.clear()
            C.check(not errs, "cycle %d: no unexpected answers while running" % cycle, "; ".join(errs[:8]))
            srv.port = None
            srv.start()
            C.check(srv.alive(), "cycle %d: restarted on the same data dir" % cycle, srv.log_tail())
            verify(srv, st, cycle)
            if cycle < CYCLES:
                srv.kill()
        st_ok, _, _ = tf.request(srv, "GET", "/healthz")
        C.eq(st_ok, 200, "healthz after the last restart")
        srv.terminate()
        C.eq(srv.proc.returncode, 0, "SIGTERM: clean exit after the crash cycles")
        if C.failures:
            print("---- server log (tail)\n" + srv.log_tail(40))
    finally:
        srv.stop()
    C.finish()


if __name__ == "__main__":
    main()
