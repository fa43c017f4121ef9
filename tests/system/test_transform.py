#!/usr/bin/env python3
"""System test: on-the-fly transforms (/i/{id}/t/{ops}.{ext}) on `tessera serve`.

Every op and ext on the corpus (exact output size per fit, format by magic bytes),
animation kept in WebP, `auto` by Accept with Vary, signatures (missing, wrong,
two keys, keys file, none configured, unsigned), the error order of API.md and
every 400 naming its key, the second request served without a second encode
(metric), delete -> 404 for every rendition, and a flood of distinct renditions
of a 24-megapixel JPEG against a small memory budget (200 or 503 only, peak RSS
within budget + base).
"""
import base64
import hashlib
import hmac
import math
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_transform")

KEY1 = "k3y-for-tessera-transforms-0123456789"
KEY2 = "second-key-rotated-in-abcdefghijkl"
KEY3 = "third key, from the keys file  "  # a key is the line's bytes: spaces and comma too

MAGIC = {
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "avif": lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"),
    "jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
    "png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
}
MIME = {"webp": "image/webp", "avif": "image/avif", "jpeg": "image/jpeg", "png": "image/png"}
EXT_FORMAT = {"webp": "webp", "avif": "avif", "jpg": "jpeg", "png": "png"}


def sign(key, image_id, canonical):
    mac = hmac.new(key.encode(), ("/i/%s/t/%s" % (image_id, canonical)).encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32]


def tpath(image_id, ops_ext, key=KEY1, canonical=None):
    """The URL of a rendition, signed over its canonical form (default: as written)."""
    return "/i/%s/t/%s?s=%s" % (image_id, ops_ext, sign(key, image_id, canonical or ops_ext))


def header_of(data):
    """width, height (per frame) and frames of encoded bytes, read by vipsheader."""
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        f.write(data)
        f.flush()
        out = subprocess.run(["vipsheader", "-a", f.name], capture_output=True, text=True).stdout
    fields = {}
    for line in out.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            fields.setdefault(k.strip(), v.strip())
    w = int(fields.get("width", 0))
    h = int(fields.get("page-height", fields.get("height", 0)))
    return w, h, int(fields.get("n-pages", 1))


def rnd(v):
    return max(1, int(math.floor(v + 0.5)))


def expected_size(sw, sh, w=0, h=0, fit="contain", dpr=1, up=False):
    """API.md's sizes (docs/transforms.md): the plan of image/ops.c, written again."""
    bw, bh = w * dpr, h * dpr
    if fit == "contain":
        sx = bw / sw if w else float("inf")
        sy = bh / sh if h else float("inf")
        s = min(sx, sy)
        if not up:
            s = min(s, 1)
        return rnd(sw * s), rnd(sh * s)
    over = max(bw / sw, bh / sh)
    if not up and over > 1:
        bw, bh = bw / over, bh / over
    return rnd(bw), rnd(bh)


def metric(srv, name):
    return tf.metric_value(srv, name, None)


def up(srv, name):
    st, _, body, j = tf.upload(srv, tf.corpus_bytes(name))
    C.eq(st, 201, "upload %s" % name, body[:200].decode("utf-8", "replace"))
    return j


def get(srv, path, accept=None):
    return tf.request(srv, "GET", path, headers={"Accept": accept} if accept else None)


def t_every_op_on_corpus(srv):
    rows = [r for r in tf.load_manifest() if r["expected"] == "accept"]
    cases = [("w:120.webp", dict(w=120)),
             ("h:70.png", dict(h=70)),
             ("w:90,h:90,fit:cover.jpg", dict(w=90, h=90, fit="cover")),
             ("w:80,h:50,fit:fill.webp", dict(w=80, h=50, fit="fill")),
             ("w:60,h:60,dpr:2.jpg", dict(w=60, h=60, dpr=2)),
             ("w:2000,h:1000,up:1.png", dict(w=2000, h=1000, up=True))]
    for row in rows:
        j = up(srv, row["file"])
        if not j:
            continue
        sw, sh = j["width"], j["height"]
        for ops_ext, kw in cases:
            if row["file"].startswith("accept_png_extreme") and kw.get("up"):
                continue  # 4000x1 enlarged to 2000 high is 8 Gpx: a 400, tested below
            st, h, body = get(srv, tpath(j["id"], ops_ext))
            fmt = EXT_FORMAT[ops_ext.rsplit(".", 1)[1]]
            what = "%s %s" % (row["file"], ops_ext)
            if not C.eq(st, 200, what + ": 200", body[:200].decode("utf-8", "replace")):
                continue
            C.check(MAGIC[fmt](body), what + ": %s by magic bytes" % fmt)
            C.eq(h.get("Content-Type"), MIME[fmt], what + ": Content-Type")
            C.eq(header_of(body)[:2], expected_size(sw, sh, **kw), what + ": exact size")


def t_gravity_quality_avif(srv):
    j = up(srv, "accept_jpeg_baseline_rocket_640x427.jpg")
    sizes = {}
    for ops_ext in ("w:200,h:200,fit:cover,g:attention.webp", "w:200,h:200,fit:cover,g:entropy.webp",
                    "w:200,h:200,fit:cover,g:center.webp", "w:300,q:10.jpg", "w:300,q:95.jpg",
                    "w:160,h:90,fit:cover.avif", "w:1000,h:1000,fit:cover.png",
                    "w:1000,h:500,fit:fill.png"):
        canon = ops_ext.replace(",g:center", "")
        st, h, body = get(srv, tpath(j["id"], ops_ext, canonical=canon))
        fmt = EXT_FORMAT[ops_ext.rsplit(".", 1)[1]]
        C.eq(st, 200, "%s: 200" % ops_ext)
        C.check(MAGIC[fmt](body), "%s: %s bytes" % (ops_ext, fmt))
        sizes[ops_ext] = (len(body), header_of(body)[:2])
    C.eq(sizes["w:200,h:200,fit:cover,g:attention.webp"][1], (200, 200), "cover attention 200x200")
    C.eq(sizes["w:160,h:90,fit:cover.avif"][1], (160, 90), "AVIF cover 160x90")
    C.check(sizes["w:300,q:10.jpg"][0] < sizes["w:300,q:95.jpg"][0], "q:10 is smaller than q:95",
            "%d vs %d" % (sizes["w:300,q:10.jpg"][0], sizes["w:300,q:95.jpg"][0]))
    # up:0 never enlarges: the box shrinks to fit the 640x427 source, keeping its shape
    C.eq(sizes["w:1000,h:1000,fit:cover.png"][1], (427, 427), "cover without up stays in the source")
    C.eq(sizes["w:1000,h:500,fit:fill.png"][1], (640, 320), "fill without up stays in the source")


def t_animation(srv):
    for name in ("accept_gif_animated_4frames_chelsea_225x150.gif",
                 "accept_webp_animated_4frames_chelsea_225x150.webp"):
        j = up(srv, name)
        for ops_ext, frames, size in (("w:100.webp", 4, (100, 67)),
                                      ("w:60,h:60,fit:cover.webp", 4, (60, 60)),
                                      ("w:50,h:20,fit:fill.webp", 4, (50, 20)),
                                      ("w:100.jpg", 1, (100, 67)), ("w:100.png", 1, (100, 67))):
            st, _, body = get(srv, tpath(j["id"], ops_ext))
            C.eq(st, 200, "%s %s: 200" % (name, ops_ext))
            w, h, n = header_of(body)
            C.eq((w, h, n), size + (frames,), "%s %s: size and frames" % (name, ops_ext))
        st, h, body = get(srv, tpath(j["id"], "w:100.auto"), accept="image/webp,*/*")
        C.eq((h.get("Content-Type"), header_of(body)[2]), ("image/webp", 4),
             "%s: auto answered in WebP keeps the animation" % name)


def t_auto(srv):
    photo = up(srv, "accept_jpeg_progressive_chelsea_451x300.jpg")
    alpha = up(srv, "accept_png_alpha_rgba_astronaut_vignette_512x512.png")
    cases = [("image/avif,image/webp,*/*", "avif", "avif"),
             ("image/webp,*/*;q=0.8", "webp", "webp"),
             ("image/avif;q=0, image/webp", "webp", "webp"),
             ("*/*", "jpeg", "png"),
             (None, "jpeg", "png"),
             ("image/png,image/jpeg", "jpeg", "png")]
    for accept, want_photo, want_alpha in cases:
        for j, want in ((photo, want_photo), (alpha, want_alpha)):
            st, h, body = get(srv, tpath(j["id"], "w:64.auto"), accept=accept)
            what = "auto, Accept %r, %s" % (accept, j["format"])
            C.eq(st, 200, what + ": 200")
            C.eq(h.get("Content-Type"), MIME[want], what + ": " + want)
            C.check(MAGIC[want](body), what + ": magic bytes")
            C.eq(h.get("Vary"), "Accept", what + ": Vary: Accept")
    st, h, _ = get(srv, tpath(photo["id"], "w:64.webp"))
    C.check(h.get("Vary") is None, "an explicit ext answers without Vary", str(h.get("Vary")))


def t_signatures(srv):
    j = up(srv, "accept_jpeg_progressive_chelsea_451x300.jpg")
    base = "/i/%s/t/w:50.webp" % j["id"]
    st, _, body = get(srv, base)
    C.check(st == 403 and tf.is_error_body(body, "forbidden"), "no signature: 403 forbidden",
            "%d %r" % (st, body[:200]))
    st, _, _ = get(srv, base + "?s=" + "A" * 32)
    C.eq(st, 403, "a wrong signature: 403")
    st, _, _ = get(srv, base + "?s=" + sign(KEY1, j["id"], "w:51.webp"))
    C.eq(st, 403, "another rendition's signature: 403")
    st, _, _ = get(srv, base + "?s=" + sign(KEY1, j["id"], "w:50.webp")[:31])
    C.eq(st, 403, "a cut signature: 403")
    for key, what in ((KEY1, "first key"), (KEY2, "second key (rotation)"), (KEY3, "keys file")):
        st, _, _ = get(srv, tpath(j["id"], "w:50.webp", key=key))
        C.eq(st, 200, "signed with the %s: 200" % what)
    # signed over the canonical form: any spelling of it is served
    st, h1, b1 = get(srv, tpath(j["id"], "h:40,w:50.webp", canonical="w:50,h:40.webp"))
    st2, h2, b2 = get(srv, tpath(j["id"], "w:50,h:40,fit:contain,dpr:1,up:0.webp",
                                 canonical="w:50,h:40.webp"))
    C.check(st == 200 and st2 == 200 and b1 == b2 and h1.get("ETag") == h2.get("ETag"),
            "two spellings of one canonical form: one rendition", "%d %d" % (st, st2))
    st, _, _ = get(srv, tpath(j["id"], "h:40,w:50.webp"))
    C.eq(st, 403, "a signature over a non-canonical spelling: 403")
    # `tessera sign` prints a URL the server accepts, on the public base, without the key
    out = subprocess.run([tf.tessera_bin(), "sign", "--transforms.keys=%s,%s" % (KEY2, KEY1),
                          "--server.public_url=" + srv.base, "/i/%s/t/h:40,w:50.webp" % j["id"]],
                         capture_output=True, text=True)
    url = out.stdout.strip()
    C.check(out.returncode == 0 and url.startswith(srv.base + "/i/%s/t/w:50,h:40.webp?s=" % j["id"])
            and KEY1 not in out.stdout + out.stderr and KEY2 not in out.stdout + out.stderr,
            "tessera sign prints the canonical signed URL, never the key", out.stdout + out.stderr)
    st, _, _ = get(srv, url)
    C.eq(st, 200, "the URL tessera sign printed is served")
    out = subprocess.run([tf.tessera_bin(), "sign", "/i/%s/t/w:50.webp" % j["id"]],
                         capture_output=True, text=True)
    C.check(out.returncode == 1 and "transforms.keys" in out.stderr,
            "tessera sign without a key: exit 1 naming transforms.keys", out.stderr)


def t_errors(srv):
    j = up(srv, "accept_jpeg_progressive_chelsea_451x300.jpg")
    bad = [("w:0.webp", "w"), ("w:4097.webp", "w"), ("w:abc.webp", "w"), ("w:1,w:2.webp", "w"),
           ("h:0.webp", "h"), ("w:5,fit:crop.webp", "fit"), ("w:5,fit:cover.webp", "fit"),
           ("w:5,h:5,g:north,fit:cover.webp", "g"), ("w:5,g:entropy.webp", "g"),
           ("w:5,q:0.webp", "q"), ("w:5,q:101.webp", "q"), ("w:5,dpr:5.webp", "dpr"),
           ("w:5,up:2.webp", "up"), ("w:5.gif", "ext"), ("w:5.jpeg", "ext"), ("q:50.webp", "w"),
           ("zoom:2,w:5.webp", "zoom"), ("w:4096,h:4096,dpr:4.webp", "w")]
    for ops_ext, key in bad:
        # 400 comes before the signature: unsigned and signed alike
        for path in ("/i/%s/t/%s" % (j["id"], ops_ext), tpath(j["id"], ops_ext)):
            st, _, body = get(srv, path)
            msg = (tf.parse_json(body) or {}).get("error", {}).get("message", "")
            C.check(st == 400 and tf.is_error_body(body, "bad_request") and
                    msg.startswith(key + ":"), "%s: 400 naming %s" % (ops_ext, key),
                    "%d %r" % (st, body[:200]))
    # 400 for an output over limits.max_pixels known only from the image (one side, enlarged)
    ext = up(srv, "accept_png_extreme_aspect_4000x1.png")
    st, _, body = get(srv, tpath(ext["id"], "h:4096,dpr:4,up:1.webp"))
    C.check(st == 400 and (tf.parse_json(body) or {}).get("error", {}).get("message", "")
            .startswith("h:"), "an enlarged output over max_pixels: 400 naming h",
            "%d %r" % (st, body[:200]))
    # 403 before 404; then an unknown image, signed, is 404
    st, _, _ = get(srv, "/i/AAAAAAAAAAAAAAAA/t/w:5.webp")
    C.eq(st, 403, "unknown image unsigned: 403 (signature first)")
    st, _, body = get(srv, tpath("AAAAAAAAAAAAAAAA", "w:5.webp"))
    C.check(st == 404 and tf.is_error_body(body, "not_found"), "unknown image signed: 404")


def t_cached_and_deleted(srv):
    st, _, body, j = tf.upload(srv, tf.corpus_bytes("accept_jpeg_baseline_rocket_640x427.jpg"))
    C.eq(st, 201, "upload for delete")
    paths = [tpath(j["id"], o) for o in ("w:111.webp", "w:64,h:64,fit:cover.jpg", "w:99.png")]
    paths.append(tpath(j["id"], "w:77.auto"))
    first = []
    for p in paths:
        st, h, body = get(srv, p, accept="image/webp")
        C.eq(st, 200, "first request %s" % p.split("?")[0])
        C.check("img-%s" % j["id"] in (h.get("Surrogate-Key") or ""), "Surrogate-Key img-{id}")
        C.eq(h.get("Cache-Control"), "public, max-age=31536000, immutable", "immutable")
        first.append((h.get("ETag"), body))
    made = metric(srv, "tessera_renditions_made_total")
    inline = metric(srv, "tessera_http_inline_answers_total")
    for p, (etag, body) in zip(paths, first):
        st, h, b2 = get(srv, p, accept="image/webp")
        C.check(st == 200 and b2 == body and h.get("ETag") == etag, "second request: same bytes")
        st, _, _ = tf.request(srv, "GET", p, headers={"If-None-Match": etag,
                                                     "Accept": "image/webp"})
        C.eq(st, 304, "If-None-Match: 304")
        st, h, b3 = tf.request(srv, "HEAD", p, headers={"Accept": "image/webp"})
        C.check(st == 200 and b3 == b"" and h.get("Content-Length") == str(len(body)), "HEAD")
    C.eq(metric(srv, "tessera_renditions_made_total"), made,
         "second requests encode nothing (tessera_renditions_made_total unchanged)")
    # recorded renditions on local disk need no worker thread: GET, 304 and HEAD of each path
    inline = metric(srv, "tessera_http_inline_answers_total") - inline
    C.check(inline >= 3 * len(paths), "second requests answered on the event thread (%d)" % inline)
    st, _, _ = tf.request(srv, "DELETE", "/api/v1/images/" + j["id"],
                          headers={"X-Delete-Token": j["delete_token"]})
    C.eq(st, 204, "delete 204")
    for p in paths + [tpath(j["id"], "w:5.webp")]:
        st, _, _ = get(srv, p, accept="image/webp")
        C.eq(st, 404, "after delete %s: 404" % p.split("?")[0])


def t_concurrent_one_encode(srv):
    j = up(srv, "accept_jpeg_large_seeding_4000x3000.jpg")
    made = metric(srv, "tessera_renditions_made_total")
    p = tpath(j["id"], "w:640.webp")
    res = []

    def one():
        st, h, _ = get(srv, p)
        res.append((st, h.get("ETag")))
    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    C.check(all(r[0] == 200 for r in res) and len({r[1] for r in res}) == 1,
            "8 concurrent first requests: 200, one ETag", str(res))
    C.eq(metric(srv, "tessera_renditions_made_total") - made, 1, "... and one encode (single flight)")


def t_srcset(srv):
    j = up(srv, "accept_jpeg_baseline_rocket_640x427.jpg")
    items = [x.strip().rsplit(" ", 1) for x in (j.get("srcset") or "").split(",")]
    C.eq([w for _, w in items], ["320w", "640w"], "upload answer: srcset of the widths up to 640",
         j.get("srcset"))
    st, _, body = tf.request(srv, "GET", "/api/v1/images/" + j["id"])
    C.eq((tf.parse_json(body) or {}).get("srcset"), j.get("srcset"), "GET image: the same srcset")
    for url, w in items:
        st, h, b = get(srv, url, accept="image/webp")
        C.check(st == 200 and header_of(b)[0] == int(w[:-1]) and h.get("Vary") == "Accept",
                "srcset %s is served at its width" % w, "%d" % st)


def t_no_key_and_unsigned():
    with tf.Server() as srv:
        j = up(srv, "accept_jpeg_progressive_chelsea_451x300.jpg")
        st, _, body = get(srv, tpath(j["id"], "w:50.webp"))
        C.check(st == 404 and tf.is_error_body(body, "not_found"), "no key configured: 404")
        C.check("srcset" not in j, "no key configured: no srcset in the upload answer")
    with tf.Server(["--transforms.unsigned=true"]) as srv:
        j = up(srv, "accept_jpeg_progressive_chelsea_451x300.jpg")
        st, _, _ = get(srv, "/i/%s/t/w:50.webp" % j["id"])
        C.eq(st, 200, "transforms.unsigned = true: served without a signature")


def vm(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def t_memory_budget():
    budget = 96 << 20
    with tempfile.TemporaryDirectory() as d:
        big = os.path.join(d, "big.jpg")
        src = os.path.join(tf.testdata_dir(), "accept_jpeg_large_seeding_4000x3000.jpg")
        subprocess.run(["vips", "thumbnail", src, big + "[Q=90]", "6000", "--height", "4000",
                        "--size", "force"], check=True)
        data = open(big, "rb").read()
    # image.max_parallel well above what the budget admits: the budget alone bounds memory
    # (with 4 decode slots the same flood stayed under 96 MiB over base even with no budget,
    # so the check could not fail; with 32 slots and no budget it reached 630 MiB here)
    args = ["--transforms.keys=" + KEY1, "--transforms.memory_budget=%d" % budget,
            "--transforms.queue_timeout=5s", "--image.max_parallel=32", "--jobs.workers=0",
            "--server.thread_pool=0"]
    with tf.Server(args) as srv:
        st, _, _, j = tf.upload(srv, data)
        C.eq(st, 201, "upload a 6000x4000 JPEG")
        st, _, _ = get(srv, tpath(j["id"], "w:32.webp"))
        C.eq(st, 200, "warm-up rendition")
        base = vm(srv.proc.pid, "VmHWM")
        widths = list(range(200, 200 + 32 * 97, 97))  # 32 distinct renditions, up to 3.2k wide
        res = []
        lock = threading.Lock()

        def one(w):
            st, h, _ = get(srv, tpath(j["id"], "w:%d.jpg" % w))
            with lock:
                res.append((st, h.get("Retry-After")))
        ts = [threading.Thread(target=one, args=(w,)) for w in widths]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        peak = vm(srv.proc.pid, "VmHWM")
        codes = sorted({r[0] for r in res})
        C.check(set(codes) <= {200, 503}, "every answer 200 or 503", str(codes))
        C.check(all(r[1] for r in res if r[0] == 503), "every 503 carries Retry-After")
        C.check(sum(r[0] == 200 for r in res) >= 8, "most renditions made within the queue timeout",
                str([r[0] for r in res]))
        print("memory: base %d MiB, peak %d MiB, budget %d MiB, %d x 200, %d x 503" % (
            base >> 20, peak >> 20, budget >> 20, sum(r[0] == 200 for r in res),
            sum(r[0] == 503 for r in res)), flush=True)
        C.check(peak <= base + budget, "peak RSS within base + budget",
                "base %d MiB, peak %d MiB" % (base >> 20, peak >> 20))


def main():
    keys_dir = tempfile.mkdtemp(prefix="tessera-keys-")
    keys_file = os.path.join(keys_dir, "keys")
    with open(keys_file, "w") as f:
        f.write("\n" + KEY3 + "\n")
    srv = tf.Server(["--transforms.keys=%s, %s" % (KEY1, KEY2),
                     "--transforms.keys_file=" + keys_file])
    try:
        srv.start()
        C.run(t_every_op_on_corpus, srv)
        C.run(t_gravity_quality_avif, srv)
        C.run(t_animation, srv)
        C.run(t_auto, srv)
        C.run(t_signatures, srv)
        C.run(t_errors, srv)
        C.run(t_cached_and_deleted, srv)
        C.run(t_concurrent_one_encode, srv)
        C.run(t_srcset, srv)
        C.check(srv.alive(), "server alive at the end", srv.death_note())
        if C.failures:
            print("---- server log (tail)\n" + srv.log_tail(40))
    finally:
        srv.stop()
    C.run(t_no_key_and_unsigned)
    C.run(t_memory_budget)
    C.finish()


if __name__ == "__main__":
    main()
