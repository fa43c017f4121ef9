#!/usr/bin/env python3
"""System test: the HTTP contract of API.md on a single `tessera serve`.

Byte-serving headers, conditional and range requests, extensions and ids, metadata,
keyset listing under concurrent uploads/deletes, dedup and delete, variants, concurrent
first variant requests, size limits, malformed multipart, API keys and the CDN base URL.
"""
import os
import random
import sys
import threading
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_api")

JPEG_FILE = "accept_jpeg_progressive_chelsea_451x300.jpg"
PNG_FILE = "accept_png_truecolor_astronaut_512x512.png"

UPLOAD_KEY = "0123456789abcdef0123456789"
ADMIN_KEY = "fedcba9876543210fedcba9876"

_counter = [0]
_counter_lock = threading.Lock()


def next_png():
    """A new distinct tiny PNG each call (one pixel encodes a counter)."""
    with _counter_lock:
        _counter[0] += 1
        n = _counter[0] + random.randint(0, 1 << 20) * 1000
    return tf.tiny_png(n)


def up(srv, data, what, headers=None, use_multipart=False):
    st, h, body, j = tf.upload(srv, data, use_multipart=use_multipart, headers=headers)
    C.eq(st, 201, "%s: upload 201" % what, body[:300].decode("utf-8", "replace"))
    if st != 201 or not isinstance(j, dict):
        raise RuntimeError("%s: upload failed with %s %r" % (what, st, body[:300]))
    return j


def err(body, code, what, status_ctx=""):
    C.check(tf.is_error_body(body, code), "%s: JSON error body with code %s" % (what, code),
            "%sbody %r" % (status_ctx, body[:300]))


def created_ts(j):
    return datetime.strptime(j["created_at"][:19], "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=timezone.utc).timestamp()


# --------------------------------------------------------------------------- bytes


def t_bytes_headers(srv):
    data = tf.corpus_bytes(JPEG_FILE)
    j = up(srv, data, "headers image")
    iid, size, sha = j["id"], j["bytes"], j["sha256"]
    st, full_h, full = tf.request(srv, "GET", "/i/%s" % iid)
    C.eq(st, 200, "GET /i/{id} status")
    C.eq(tf.sha256(full), sha, "GET /i/{id} bytes match sha256")

    for path in ("/i/%s" % iid, "/i/%s.jpg" % iid):
        tag = "HEAD %s" % path.replace(iid, "{id}")
        st, h, body = tf.raw_request(srv, "HEAD", path)
        C.eq(st, 200, "%s: status" % tag)
        C.eq(body, b"", "%s: no body" % tag)
        C.eq(h.get("Content-Length"), str(size), "%s: Content-Length is the image size" % tag)
        C.eq(h.get("Content-Type"), "image/jpeg", "%s: Content-Type" % tag)
        check_blob_headers(tag, h, iid, sha, j)

    check_blob_headers("GET /i/{id}", full_h, iid, sha, j)
    C.eq(full_h.get("Content-Length"), str(size), "GET /i/{id}: Content-Length")

    # conditional
    etag = '"%s"' % sha
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"If-None-Match": etag})
    C.eq(st, 304, "If-None-Match with the ETag: 304")
    C.eq(body, b"", "304: no body")
    C.eq(h.get("ETag"), etag, "304: carries the ETag")
    st, _, _ = tf.request(srv, "GET", "/i/%s" % iid, headers={"If-None-Match": '"nope", %s' % etag})
    C.eq(st, 304, "If-None-Match with a list containing the ETag: 304")
    st, _, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"If-None-Match": '"%s"' % ("0" * 64)})
    C.check(st == 200 and body == full, "If-None-Match with another ETag: 200 with the bytes",
            "status %s" % st)
    st, _, body = tf.raw_request(srv, "HEAD", "/i/%s" % iid, headers={"If-None-Match": etag})
    C.eq(st, 304, "HEAD with If-None-Match: 304")

    # ranges
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"Range": "bytes=0-99"})
    C.eq(st, 206, "Range bytes=0-99: 206")
    C.eq(h.get("Content-Range"), "bytes 0-99/%d" % size, "Range bytes=0-99: Content-Range")
    C.check(body == full[:100], "Range bytes=0-99: exactly the first 100 bytes", "%d bytes" % len(body))
    C.eq(h.get("Content-Length"), "100", "Range bytes=0-99: Content-Length 100")
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"Range": "bytes=100-199"})
    C.check(st == 206 and body == full[100:200], "Range bytes=100-199: 206 with those bytes",
            "status %s, %d bytes" % (st, len(body)))
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"Range": "bytes=-10"})
    C.eq(st, 206, "Range bytes=-10 (suffix): 206")
    C.eq(h.get("Content-Range"), "bytes %d-%d/%d" % (size - 10, size - 1, size), "Range bytes=-10: Content-Range")
    C.check(body == full[-10:], "Range bytes=-10: exactly the last 10 bytes", "%d bytes" % len(body))
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"Range": "bytes=%d-" % (size - 5)})
    C.check(st == 206 and body == full[-5:], "Range bytes=size-5-: 206 with the last 5 bytes",
            "status %s, %d bytes" % (st, len(body)))
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid, headers={"Range": "bytes=%d-" % size})
    C.eq(st, 416, "Range bytes=size-: 416")
    C.check(tf.error_code(body) is not None and tf.parse_json(body)["error"].get("message"),
            "416: JSON error body", repr(body[:200]))
    C.eq(h.get("Content-Range"), "bytes */%d" % size, "416: Content-Range bytes */size")
    st, h, body = tf.request(srv, "GET", "/i/%s" % iid,
                             headers={"Range": "bytes=0-99", "If-Range": '"%s"' % ("0" * 64)})
    C.check(st == 200 and body == full, "Range with a stale If-Range: 200 with the whole image",
            "status %s, %d bytes" % (st, len(body)))

    # extensions
    for ext in ("jpg", "jpeg"):
        st, h, body = tf.request(srv, "GET", "/i/%s.%s" % (iid, ext))
        C.check(st == 200 and body == full, "GET /i/{id}.%s of a jpeg: 200 same bytes" % ext, "status %s" % st)
    for ext in ("png", "webp", "gif", "exe"):
        st, h, body = tf.request(srv, "GET", "/i/%s.%s" % (iid, ext))
        C.eq(st, 404, "GET /i/{id}.%s of a jpeg: 404" % ext)
        err(body, "not_found", "GET /i/{id}.%s" % ext)

    # unknown and malformed ids
    unknown = "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                      for _ in range(16))
    for path in ("/i/%s" % unknown, "/i/%s.jpg" % unknown, "/i/%s/thumb.webp" % unknown,
                 "/api/v1/images/%s" % unknown):
        st, h, body = tf.request(srv, "GET", path)
        C.eq(st, 404, "GET %s (unknown id): 404" % path.replace(unknown, "{unknown}"))
        err(body, "not_found", "GET %s" % path.replace(unknown, "{unknown}"))
        C.check((h.get("Content-Type") or "").startswith("application/json"),
                "GET %s: error Content-Type json" % path.replace(unknown, "{unknown}"),
                repr(h.get("Content-Type")))
    bad_ids = ["a", "..%2Fetc%2Fpasswd", "..%2F..%2Fetc", "A" * 40, "abcdefghij", "abc$efghijkl",
               iid + "A" * (41 - len(iid)), iid[:10]]
    for bid in bad_ids:
        for path in ("/i/%s" % bid, "/api/v1/images/%s" % bid, "/i/%s/thumb.webp" % bid):
            st, h, body = tf.request(srv, "GET", path)
            C.eq(st, 404, "GET %s (malformed id): 404" % path)
            err(body, "not_found", "GET %s" % path)
    st, h, body = tf.request(srv, "GET", "/i/../etc/passwd")
    C.check(st == 404 and b"root:" not in body, "GET /i/../etc/passwd: 404", "status %s" % st)

    # metadata endpoint
    st, h, body = tf.request(srv, "GET", "/api/v1/images/%s" % iid)
    mj = tf.parse_json(body)
    C.eq(st, 200, "GET /api/v1/images/{id}: 200")
    C.check(isinstance(mj, dict) and "delete_token" not in mj, "GET /api/v1/images/{id}: no delete_token",
            repr(body[:300]))
    want = dict(j)
    want.pop("delete_token")
    C.eq(mj, want, "GET /api/v1/images/{id}: the image object of the upload")
    C.check((h.get("Content-Type") or "").startswith("application/json"),
            "GET /api/v1/images/{id}: Content-Type json", repr(h.get("Content-Type")))

    # methods
    for method, path in (("DELETE", "/i/%s" % iid), ("POST", "/i/%s" % iid), ("PUT", "/api/v1/images"),
                         ("PUT", "/api/v1/images/%s" % iid)):
        st, h, body = tf.request(srv, method, path, body=b"" if method in ("POST", "PUT") else None)
        C.eq(st, 405, "%s %s: 405" % (method, path.replace(iid, "{id}")))
        C.check(bool(h.get("Allow")), "%s %s: Allow header" % (method, path.replace(iid, "{id}")),
                repr(h.get("Allow")))
        err(body, "method_not_allowed", "%s %s" % (method, path.replace(iid, "{id}")))


def check_blob_headers(tag, h, iid, sha, j):
    C.eq(h.get("ETag"), '"%s"' % sha, "%s: ETag is the quoted sha256" % tag)
    C.eq(h.get("Cache-Control"), "public, max-age=31536000, immutable", "%s: Cache-Control" % tag)
    C.eq(h.get("Accept-Ranges"), "bytes", "%s: Accept-Ranges" % tag)
    C.eq(h.get("X-Content-Type-Options"), "nosniff", "%s: X-Content-Type-Options" % tag)
    C.eq(h.get("Surrogate-Key"), "img-%s" % iid, "%s: Surrogate-Key" % tag)
    C.eq(h.get("Cache-Tag"), "img-%s" % iid, "%s: Cache-Tag" % tag)
    C.check(bool(h.get("Content-Security-Policy")), "%s: Content-Security-Policy present" % tag,
            repr(h.get("Content-Security-Policy")))
    lm = h.get("Last-Modified")
    ok = False
    try:
        ok = lm is not None and abs(parsedate_to_datetime(lm).timestamp() - created_ts(j)) <= 1
    except (TypeError, ValueError):
        ok = False
    C.check(ok, "%s: Last-Modified is an HTTP date at created_at" % tag,
            "Last-Modified %r, created_at %r" % (lm, j.get("created_at")))


# --------------------------------------------------------------------------- listing


def list_page(srv, limit, cursor=None):
    path = "/api/v1/images?limit=%d" % limit + ("&cursor=%s" % cursor if cursor else "")
    st, h, body = tf.request(srv, "GET", path)
    j = tf.parse_json(body)
    if st != 200 or not isinstance(j, dict):
        raise RuntimeError("GET %s: %s %r" % (path, st, body[:300]))
    return j


def t_list_walk():
    srv = tf.Server().start()
    try:
        initial = []  # upload order: oldest first
        for i in range(25):
            initial.append(up(srv, next_png(), "list image %d" % i))
        tokens = {j["id"]: j["delete_token"] for j in initial}
        # ids are newest first in the listing; equal created_at seconds keep upload order
        st, _, body = tf.request(srv, "GET", "/api/v1/images")
        j = tf.parse_json(body)
        C.check(st == 200 and len(j.get("items", [])) == 25 and j.get("next_cursor") is None,
                "GET /api/v1/images (default limit 50): all 25, next_cursor null",
                "status %s, %s items, next_cursor %r" % (st, len(j.get("items", [])) if j else None,
                                                         j.get("next_cursor") if j else None))
        full_order = [it["id"] for it in j.get("items", [])]
        C.eq(full_order, [x["id"] for x in reversed(initial)], "listing is newest first (reverse upload order)")
        for it in j.get("items", []):
            if "delete_token" in it:
                C.check(False, "listing items carry no delete_token", it["id"])
                break
        else:
            C.check(True, "listing items carry no delete_token")
        by_id = {x["id"]: x for x in initial}
        same = all(it == {k: v for k, v in by_id[it["id"]].items() if k != "delete_token"}
                   for it in j.get("items", []))
        C.check(same, "listing items are the image objects of the uploads")

        live_all_walk = set(by_id)
        deleted = {}  # id -> page index after which it was deleted
        new_ids = []
        seen = []
        cursor = None
        page = 0
        rng = random.Random(7)
        while True:
            pj = list_page(srv, 7, cursor)
            items = pj.get("items", [])
            C.check(len(items) <= 7, "list page %d: at most 7 items" % page, "%d items" % len(items))
            for it in items:
                seen.append(it["id"])
                if it["id"] in deleted:
                    C.check(False, "list page %d: deleted image %s does not appear" % (page, it["id"]),
                            "deleted before page %d" % deleted[it["id"]])
            cursor = pj.get("next_cursor")
            if cursor is None:
                break
            C.check(isinstance(cursor, str) and cursor != "", "list page %d: next_cursor is a string" % page,
                    repr(cursor))
            page += 1
            if page > 20:
                C.check(False, "list walk ends", "more than 20 pages of 7 for ~31 images")
                break
            # between pages: 3 new uploads, 3 deletes of not yet visited images
            for _ in range(3):
                new_ids.append(up(srv, next_png(), "upload during walk")["id"])
            # the image the cursor points at (last one seen) goes too: the cursor must still work
            anchor = items[-1]["id"] if items else None
            if anchor in tokens and anchor not in deleted:
                st, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % anchor,
                                         headers={"X-Delete-Token": tokens[anchor]})
                C.eq(st, 204, "delete of the cursor's image during walk: 204", body[:200].decode("utf-8", "replace"))
                deleted[anchor] = page
            candidates = [i for i in by_id if i not in seen and i not in deleted]
            for victim in rng.sample(candidates, min(3, len(candidates))):
                st, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % victim,
                                         headers={"X-Delete-Token": tokens[victim]})
                C.eq(st, 204, "delete during walk: 204", body[:200].decode("utf-8", "replace"))
                deleted[victim] = page
                live_all_walk.discard(victim)
        dups = sorted({i for i in seen if seen.count(i) > 1})
        C.check(not dups, "list walk: no image appears twice", ", ".join(dups))
        missing = sorted(live_all_walk - set(seen))
        C.check(not missing, "list walk: every image live during the whole walk appears",
                "missing %s" % missing)
        C.check(len(deleted) > 0, "list walk: deletes happened during the walk", "none")
        order = [i for i in seen if i in live_all_walk]
        C.eq(order, [x["id"] for x in reversed(initial) if x["id"] in live_all_walk],
             "list walk: newest first")
        unexpected = sorted(set(seen) - set(by_id) - set(new_ids))
        C.check(not unexpected, "list walk: only known images appear", repr(unexpected))

        # final state: a fresh walk sees exactly the live images
        final = []
        cursor = None
        for _ in range(50):
            pj = list_page(srv, 7, cursor)
            final += [it["id"] for it in pj.get("items", [])]
            cursor = pj.get("next_cursor")
            if cursor is None:
                break
        want = set(by_id) - set(deleted) | set(new_ids)
        C.check(sorted(final) == sorted(want) and len(final) == len(set(final)),
                "fresh walk after the changes: exactly the live images, once each",
                "got %d (%d distinct), want %d" % (len(final), len(set(final)), len(want)))

        # parameters
        for q in ("limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=1.5", "limit=", "limit=7x"):
            st, _, body = tf.request(srv, "GET", "/api/v1/images?" + q)
            C.eq(st, 400, "GET /api/v1/images?%s: 400" % q)
            err(body, "bad_request", "GET /api/v1/images?%s" % q)
        for q in ("limit=1", "limit=1000"):
            st, _, body = tf.request(srv, "GET", "/api/v1/images?" + q)
            C.eq(st, 200, "GET /api/v1/images?%s: 200" % q)
        pj = list_page(srv, 1)
        C.eq(len(pj.get("items", [])), 1, "limit=1: one item")
        good = pj.get("next_cursor")
        C.check(isinstance(good, str) and len(good) >= 2, "limit=1: a next_cursor", repr(good))
        st, _, _ = tf.request(srv, "GET", "/api/v1/images?limit=1&cursor=%s" % good)
        C.eq(st, 200, "the cursor given by the server is accepted")
        bad = ["garbage", "notacursorAAAAAAAA", "c1" + "A" * 16, "%00", "c1", "x" * 300]
        if isinstance(good, str) and len(good) > 4:
            mid = len(good) // 2
            for k in (mid, 2, len(good) - 1):
                ch = good[k]
                repl = "B" if ch != "B" else "C"
                bad.append(good[:k] + repl + good[k + 1:])
            bad.append(good + "A")
            bad.append(good[:-1])
        for b in bad:
            st, _, body = tf.request(srv, "GET", "/api/v1/images?limit=5&cursor=%s" % b)
            C.eq(st, 400, "GET /api/v1/images?cursor=%s: 400" % b[:40])
            err(body, "bad_request", "bad cursor %s" % b[:40])
    finally:
        srv.stop()


# --------------------------------------------------------------------------- dedup and delete


def t_dedup_delete(srv):
    data = tf.corpus_bytes(JPEG_FILE)
    a = up(srv, data, "dedup first")
    b = up(srv, data, "dedup second")
    C.check(a["id"] != b["id"], "same bytes twice: two ids", "%s %s" % (a["id"], b["id"]))
    C.eq(a["sha256"], b["sha256"], "same bytes twice: same sha256")
    C.check(a["delete_token"] != b["delete_token"], "same bytes twice: two delete tokens")
    # make a's thumb exist, so its deletion must also remove a stored variant
    st, _, thumb_a = tf.request(srv, "GET", "/i/%s/thumb.webp" % a["id"])
    C.eq(st, 200, "thumb of the first before delete: 200")
    st, _, thumb_b = tf.request(srv, "GET", "/i/%s/thumb.webp" % b["id"])
    C.eq(st, 200, "thumb of the second before delete: 200")

    path = "/api/v1/images/%s" % a["id"]
    st, _, body = tf.request(srv, "DELETE", path, headers={"X-Delete-Token": b["delete_token"]})
    C.eq(st, 403, "DELETE with another image's token: 403")
    err(body, "forbidden", "DELETE with wrong token")
    st, _, body = tf.request(srv, "DELETE", path, headers={"X-Delete-Token": "x" * 32})
    C.eq(st, 403, "DELETE with a made-up token: 403")
    err(body, "forbidden", "DELETE with made-up token")
    st, _, body = tf.request(srv, "DELETE", path)
    C.eq(st, 401, "DELETE without token: 401")
    err(body, "unauthorized", "DELETE without token")
    st, _, _ = tf.request(srv, "GET", "/i/%s" % a["id"])
    C.eq(st, 200, "failed deletes left the image alone")

    st, _, body = tf.request(srv, "DELETE", path, headers={"X-Delete-Token": a["delete_token"]})
    C.eq(st, 204, "DELETE with its token: 204")
    C.eq(body, b"", "204: empty body")
    st, _, body = tf.request(srv, "DELETE", path, headers={"X-Delete-Token": a["delete_token"]})
    C.eq(st, 404, "DELETE again: 404")
    err(body, "not_found", "DELETE again")

    for p in ("/i/%s" % a["id"], "/i/%s.jpg" % a["id"], "/i/%s/thumb.webp" % a["id"],
              "/api/v1/images/%s" % a["id"]):
        st, _, body = tf.request(srv, "GET", p)
        C.eq(st, 404, "after delete GET %s: 404" % p.replace(a["id"], "{deleted}"))
        err(body, "not_found", "after delete GET %s" % p.replace(a["id"], "{deleted}"))
    st, _, body = tf.raw_request(srv, "HEAD", "/i/%s" % a["id"])
    C.eq(st, 404, "after delete HEAD /i/{deleted}: 404")
    st, _, body = tf.request(srv, "GET", "/i/%s" % a["id"], headers={"If-None-Match": '"%s"' % a["sha256"]})
    C.eq(st, 404, "after delete GET /i/{deleted} with If-None-Match: 404 (not 304)")

    st, _, body = tf.request(srv, "GET", "/i/%s" % b["id"])
    C.check(st == 200 and tf.sha256(body) == b["sha256"], "the other copy still GETs 200 with identical bytes",
            "status %s sha %s" % (st, tf.sha256(body)))
    st, _, body = tf.request(srv, "GET", "/i/%s/thumb.webp" % b["id"])
    C.check(st == 200 and body == thumb_b, "the other copy's thumb still GETs 200 with identical bytes",
            "status %s" % st)
    st, _, body = tf.request(srv, "GET", "/api/v1/images?limit=1000")
    ids = [it["id"] for it in (tf.parse_json(body) or {}).get("items", [])]
    C.check(a["id"] not in ids and b["id"] in ids, "listing: deleted gone, the other copy present")

    # delete the second too, then upload the same bytes again: served again
    st, _, _ = tf.request(srv, "DELETE", "/api/v1/images/%s" % b["id"],
                          headers={"X-Delete-Token": b["delete_token"]})
    C.eq(st, 204, "DELETE the second copy: 204")
    st, _, _ = tf.request(srv, "GET", "/i/%s" % b["id"])
    C.eq(st, 404, "second copy gone: 404")
    c = up(srv, data, "same bytes after both deletes")
    st, _, body = tf.request(srv, "GET", "/i/%s" % c["id"])
    C.check(st == 200 and tf.sha256(body) == c["sha256"] == a["sha256"],
            "re-upload after both deletes: served with the same sha256", "status %s" % st)
    C.check(c["id"] not in (a["id"], b["id"]), "ids are never reused")


# --------------------------------------------------------------------------- variants


def t_variants(srv):
    j = up(srv, tf.corpus_bytes(JPEG_FILE), "variant image")
    iid = j["id"]
    for p in ("/i/%s/nope.webp" % iid, "/i/%s/thumb.jpg" % iid, "/i/%s/thumb.png" % iid, "/i/%s/thumb" % iid,
              "/i/%s/THUMB.webp" % iid, "/i/%s.jpg/thumb.webp" % iid):
        st, _, body = tf.request(srv, "GET", p)
        C.eq(st, 404, "GET %s: 404" % p.replace(iid, "{id}"))
        err(body, "not_found", "GET %s" % p.replace(iid, "{id}"))
    st, h, body = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid)
    C.eq(st, 200, "GET /i/{id}/thumb.webp: 200")
    C.eq(h.get("Content-Type"), "image/webp", "thumb: Content-Type image/webp")
    tsha = tf.sha256(body)
    C.eq(h.get("ETag"), '"%s"' % tsha, "thumb: ETag is the quoted sha256 of its bytes")
    C.eq(h.get("Cache-Control"), "public, max-age=31536000, immutable", "thumb: Cache-Control")
    C.eq(h.get("Surrogate-Key"), "img-%s" % iid, "thumb: Surrogate-Key img-{id}")
    C.eq(h.get("Cache-Tag"), "img-%s" % iid, "thumb: Cache-Tag img-{id}")
    C.eq(h.get("X-Content-Type-Options"), "nosniff", "thumb: nosniff")
    st, h2, b2 = tf.raw_request(srv, "HEAD", "/i/%s/thumb.webp" % iid)
    C.check(st == 200 and b2 == b"" and h2.get("Content-Length") == str(len(body)),
            "HEAD thumb: 200, no body, Content-Length", "status %s, CL %r, %d body bytes"
            % (st, h2.get("Content-Length"), len(b2)))
    st, _, _ = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid, headers={"If-None-Match": '"%s"' % tsha})
    C.eq(st, 304, "thumb If-None-Match: 304")
    st, h, part = tf.request(srv, "GET", "/i/%s/thumb.webp" % iid, headers={"Range": "bytes=0-9"})
    C.check(st == 206 and part == body[:10], "thumb Range bytes=0-9: 206 with those bytes", "status %s" % st)
    info = tf.webp_info(body)
    C.check(max(info["width"], info["height"]) <= 256, "thumb fits 256x256",
            "%sx%s" % (info["width"], info["height"]))
    # a HEAD as the very first request of a variant: made, then described
    j2 = up(srv, tf.corpus_bytes("accept_webp_lossy_hubble_1000x872.webp"), "variant image for HEAD-first")
    st, h3, b3 = tf.raw_request(srv, "HEAD", "/i/%s/thumb.webp" % j2["id"])
    C.check(st == 200 and b3 == b"" and (h3.get("Content-Length") or "0") != "0",
            "HEAD as the first request of thumb.webp: 200, no body, Content-Length",
            "status %s, CL %r, %d body bytes" % (st, h3.get("Content-Length"), len(b3)))
    st, h4, b4 = tf.request(srv, "GET", "/i/%s/thumb.webp" % j2["id"])
    C.check(st == 200 and str(len(b4)) == h3.get("Content-Length") and h4.get("ETag") == h3.get("ETag"),
            "GET after the first HEAD: same length and ETag", "status %s, %d bytes, ETag %r vs %r"
            % (st, len(b4), h4.get("ETag"), h3.get("ETag")))


def t_concurrent_thumb(srv):
    for round_ in range(2):
        j = up(srv, tf.corpus_bytes(PNG_FILE if round_ == 0 else "accept_jpeg_large_seeding_4000x3000.jpg"),
               "concurrent thumb image %d" % round_)
        path = "/i/%s/thumb.webp" % j["id"]
        barrier = threading.Barrier(8)
        results = [None] * 8

        def worker(k):
            try:
                barrier.wait(10)
                results[k] = tf.request(srv, "GET", path, timeout=120)
            except Exception as e:  # noqa: BLE001
                results[k] = (None, None, repr(e).encode())

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        statuses = [r[0] if r else None for r in results]
        C.check(all(s == 200 for s in statuses), "8 concurrent first thumb requests (%d): all 200" % round_,
                "statuses %s; %s" % (statuses, [r[2][:120] for r in results if r and r[0] != 200]))
        bodies = {tf.sha256(r[2]) for r in results if r and r[0] == 200}
        C.check(len(bodies) == 1, "8 concurrent first thumb requests (%d): identical bytes" % round_,
                "%d different bodies" % len(bodies))
        st, _, body = tf.request(srv, "GET", path)
        C.check(st == 200 and {tf.sha256(body)} == bodies,
                "thumb after the concurrent burst (%d): same bytes" % round_, "status %s" % st)


# --------------------------------------------------------------------------- limits and malformed bodies


def t_upload_limit():
    srv = tf.Server(["--limits.max_upload_bytes=100000"]).start()
    try:
        rnd = random.Random(1)
        for n in (200000, 150000, 100001):
            data = bytes(rnd.getrandbits(8) for _ in range(n))
            st, h, body = tf.raw_request(srv, "POST", "/api/v1/images", body=data,
                                         headers={"Content-Type": "application/octet-stream"})
            C.eq(st, 413, "raw upload of %d bytes over a 100000 limit: 413" % n, repr(body[:200]))
            err(body, "payload_too_large", "raw upload of %d bytes" % n)
        data = bytes(rnd.getrandbits(8) for _ in range(150000))
        mp, ct = tf.multipart([("file", "big.jpg", "image/jpeg", data)])
        st, h, body = tf.raw_request(srv, "POST", "/api/v1/images", body=mp, headers={"Content-Type": ct})
        C.eq(st, 413, "multipart upload with a 150000-byte file over a 100000 limit: 413", repr(body[:200]))
        err(body, "payload_too_large", "multipart over the limit")
        # chunked, no Content-Length
        chunks = b"".join(b"%x\r\n" % len(data[i:i + 16384]) + data[i:i + 16384] + b"\r\n"
                          for i in range(0, len(data), 16384)) + b"0\r\n\r\n"
        st, h, body = tf.raw_request(srv, "POST", "/api/v1/images", body=chunks, content_length=False,
                                     headers={"Transfer-Encoding": "chunked",
                                              "Content-Type": "application/octet-stream"})
        C.eq(st, 413, "chunked upload of 150000 bytes over a 100000 limit: 413", repr(body[:200]))
        err(body, "payload_too_large", "chunked over the limit")
        st, _, _ = tf.request(srv, "GET", "/healthz")
        C.eq(st, 200, "healthz after oversized uploads")
        j = up(srv, tf.corpus_bytes("accept_jpeg_progressive_chelsea_451x300.jpg"), "upload under the limit")
        st, _, body = tf.request(srv, "GET", "/api/v1/images?limit=1000")
        n = len((tf.parse_json(body) or {}).get("items", []))
        C.eq(n, 1, "only the upload under the limit was kept")
        left = [f for f in os.listdir(os.path.join(srv.data_dir, "tmp")) if f.startswith("upload-")]
        C.check(not left, "no upload-* temporaries left after refused uploads", repr(left))
    finally:
        srv.stop()


def t_malformed_multipart(srv):
    png = next_png()
    cases = []
    body, _ = tf.multipart([("file", "a.png", "image/png", png)], boundary="realboundary123")
    cases.append(("boundary that never appears", body, "multipart/form-data; boundary=otherboundary456"))
    body, ct = tf.multipart([("image", "a.png", "image/png", png)])
    cases.append(("no part named file", body, ct))
    body, ct = tf.multipart([("title", None, None, b"hello")])
    cases.append(("only a text field", body, ct))
    cases.append(("no boundary parameter", tf.multipart([("file", "a.png", None, png)])[0],
                  "multipart/form-data"))
    body, ct = tf.multipart([("file", "a.png", "image/png", png)])
    cases.append(("cut before the closing boundary", body[:len(body) // 2], ct))
    body, ct = tf.multipart([("file", "a.png", "image/png", png), ("file", "b.png", "image/png", next_png())])
    cases.append(("two parts named file", body, ct))
    for what, body, ct in cases:
        st, h, b = tf.request(srv, "POST", "/api/v1/images", body=body, headers={"Content-Type": ct})
        C.eq(st, 400, "malformed multipart (%s): 400" % what, b[:200].decode("utf-8", "replace"))
        err(b, "bad_request", "malformed multipart (%s)" % what)
    # well-formed with an extra field before the file: fine
    body, ct = tf.multipart([("title", None, None, b"hello"), ("file", "a.png", "image/png", png)])
    st, h, b = tf.request(srv, "POST", "/api/v1/images", body=body, headers={"Content-Type": ct})
    C.eq(st, 201, "multipart with an extra field and a file part: 201", b[:200].decode("utf-8", "replace"))
    j = tf.parse_json(b) or {}
    st, _, served = tf.request(srv, "GET", "/i/%s" % j.get("id", "none"))
    C.check(st == 200 and tf.sha256(served) == j.get("sha256"), "that upload serves its bytes", "status %s" % st)
    # raw body with a misleading Content-Type: the content decides
    st, h, b = tf.request(srv, "POST", "/api/v1/images", body=png, headers={"Content-Type": "text/plain"})
    C.eq(st, 201, "raw PNG with Content-Type text/plain: 201 (content decides)", b[:200].decode("utf-8", "replace"))
    C.eq((tf.parse_json(b) or {}).get("format"), "png", "raw PNG with Content-Type text/plain: format png")
    st, h, b = tf.request(srv, "POST", "/api/v1/images", body=png, headers={"Content-Type": "image/jpeg"})
    C.eq((st, (tf.parse_json(b) or {}).get("format")), (201, "png"), "raw PNG sent as image/jpeg: 201 png")


# --------------------------------------------------------------------------- auth


def t_auth():
    cdn = "https://cdn.example.test/base"
    srv = tf.Server(["--auth.upload_keys=%s" % UPLOAD_KEY, "--auth.admin_keys=%s" % ADMIN_KEY,
                     "--cdn.base_url=%s" % cdn]).start()
    try:
        png = next_png()
        st, h, body, _ = tf.upload(srv, png)
        C.eq(st, 401, "auth: upload without key: 401")
        err(body, "unauthorized", "auth: upload without key")
        st, h, body, _ = tf.upload(srv, png, use_multipart=True)
        C.eq(st, 401, "auth: multipart upload without key: 401")
        st, h, body, _ = tf.upload(srv, png, headers={"Authorization": "Bearer wrongkey0000000000000"})
        C.eq(st, 401, "auth: upload with a wrong key: 401")
        err(body, "unauthorized", "auth: upload with a wrong key")
        st, h, body, _ = tf.upload(srv, png, headers={"Authorization": "Basic %s" % UPLOAD_KEY})
        C.eq(st, 401, "auth: upload key sent as Basic: 401")
        st, h, body, _ = tf.upload(srv, png, headers={"Authorization": "Bearer %s" % UPLOAD_KEY[:-1]})
        C.eq(st, 401, "auth: upload with a prefix of the key: 401")
        j = up(srv, png, "auth: upload with the upload key", headers={"Authorization": "Bearer %s" % UPLOAD_KEY})
        j2 = up(srv, next_png(), "auth: upload with the admin key", headers={"Authorization": "Bearer %s" % ADMIN_KEY})
        j3 = up(srv, next_png(), "auth: multipart upload with the upload key",
                headers={"Authorization": "Bearer %s" % UPLOAD_KEY}, use_multipart=True)
        # cdn.base_url
        C.eq(j["url"], "%s/i/%s.png" % (cdn, j["id"]), "cdn.base_url: url uses it")
        C.eq(j["variants"].get("thumb"), "%s/i/%s/thumb.webp" % (cdn, j["id"]), "cdn.base_url: variants use it")
        # reading needs no key
        st, _, body = tf.request(srv, "GET", "/i/%s" % j["id"])
        C.check(st == 200 and tf.sha256(body) == j["sha256"], "auth: GET /i/{id} needs no key", "status %s" % st)
        st, _, _ = tf.request(srv, "GET", "/api/v1/images/%s" % j["id"])
        C.eq(st, 200, "auth: GET /api/v1/images/{id} needs no key")
        st, _, _ = tf.request(srv, "GET", "/api/v1/images")
        C.eq(st, 200, "auth: listing needs no key")
        # deletes
        p = "/api/v1/images/%s" % j["id"]
        st, _, body = tf.request(srv, "DELETE", p)
        C.eq(st, 401, "auth: delete without token or key: 401")
        st, _, body = tf.request(srv, "DELETE", p, headers={"Authorization": "Bearer %s" % UPLOAD_KEY})
        C.eq(st, 403, "auth: delete with the upload key (valid, not admin) and no token: 403")
        err(body, "forbidden", "auth: delete with the upload key")
        st, _, body = tf.request(srv, "DELETE", p, headers={"Authorization": "Bearer notakey00000000000000"})
        C.eq(st, 401, "auth: delete with an invalid key and no token: 401 (API.md: none/invalid key)")
        st, _, _ = tf.request(srv, "GET", "/i/%s" % j["id"])
        C.eq(st, 200, "auth: refused deletes left the image")
        st, _, body = tf.request(srv, "DELETE", p, headers={"Authorization": "Bearer %s" % ADMIN_KEY})
        C.eq(st, 204, "auth: delete with the admin key and no token: 204", body[:200].decode("utf-8", "replace"))
        st, _, _ = tf.request(srv, "GET", "/i/%s" % j["id"])
        C.eq(st, 404, "auth: admin-deleted image: 404")
        st, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % j2["id"],
                                 headers={"X-Delete-Token": j2["delete_token"]})
        C.eq(st, 204, "auth: delete with its token and no key: 204", body[:200].decode("utf-8", "replace"))
        st, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % j3["id"],
                                 headers={"Authorization": "Bearer %s" % ADMIN_KEY, "X-Delete-Token": "wrong"})
        C.eq(st, 204, "auth: admin key with a wrong token still deletes: 204")
        st, _, body = tf.request(srv, "DELETE", "/api/v1/images/%s" % j3["id"],
                                 headers={"Authorization": "Bearer %s" % ADMIN_KEY})
        C.eq(st, 404, "auth: admin delete of a deleted image: 404")
    finally:
        srv.stop()


def t_ops(srv):
    st, h, body = tf.request(srv, "GET", "/healthz")
    C.check(st == 200 and tf.parse_json(body) == {"status": "ok"}, "GET /healthz: 200 {status: ok}",
            "%s %r" % (st, body[:100]))
    st, h, body = tf.request(srv, "GET", "/readyz")
    C.eq(st, 200, "GET /readyz: 200")
    st, h, body = tf.request(srv, "GET", "/metrics")
    C.check(st == 200 and b"# TYPE" in body, "GET /metrics: 200 Prometheus text", "status %s" % st)
    st, h, body = tf.request(srv, "GET", "/nope")
    C.eq(st, 404, "GET /nope: 404")
    err(body, "not_found", "GET /nope")


def t_log_injection(srv):
    """A percent-encoded newline (or CR, ESC, invalid UTF-8) in a request cannot forge a log line."""
    forged = "FORGED-LINE info  access: 10.0.0.1 DELETE /api/v1/images/x 204"
    path = "/i/abc%0a" + forged.replace(" ", "%20") + "%0d%1b%ff"
    st, _, _ = tf.request(srv, "GET", path)
    C.eq(st, 404, "a path with %0a: 404")
    tf.request(srv, "GET", "/healthz")  # the access line above is written before this answer
    lines = open(srv.log_path, "rb").read().decode("utf-8", "replace").splitlines()
    C.check(not any(l.startswith("FORGED-LINE") for l in lines), "no log line of the client's",
            str([l for l in lines if "FORGED" in l][:2]))
    mine = [l for l in lines if "FORGED-LINE" in l]
    C.eq(len(mine), 1, "the request is one access line")
    C.check(mine and "/i/abc\\x0aFORGED-LINE" in mine[0] and "\\x0d\\x1b\\xff" in mine[0],
            "the control and invalid bytes are written escaped", mine[0] if mine else "")


def main():
    srv = tf.Server()
    try:
        srv.start()
        C.run(t_ops, srv)
        C.run(t_bytes_headers, srv)
        C.run(t_dedup_delete, srv)
        C.run(t_variants, srv)
        C.run(t_concurrent_thumb, srv)
        C.run(t_malformed_multipart, srv)
        C.run(t_list_walk)
        C.run(t_upload_limit)
        C.run(t_auth)
        C.run(t_log_injection, srv)
        C.check(srv.alive(), "main server alive at the end", srv.death_note())
        if C.failures:
            print("---- main server log (tail)\n" + srv.log_tail(40))
    finally:
        srv.stop()
    C.finish()


if __name__ == "__main__":
    main()
