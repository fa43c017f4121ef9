#!/usr/bin/python3
"""The CDN path: the Varnish edge of the local cluster, origin headers, purge on delete.

Part 1 brings the local cluster up (deploy/local/cluster, with the edge) in a
temporary run directory on ports moved by TESSERA_TEST_CDN_PORT_OFFSET (default
40, so it runs beside a cluster on the default ports and beside test_cluster),
then through the edge: public URLs name the edge (cdn.base_url); a second GET of
image bytes and of a variant is a hit (X-Cache: HIT, X-Varnish with two numbers)
and reaches no read service (their per-instance counters unchanged); API JSON is
never cached; surrogate keys reach the edge but not the client; a delete makes
the edge answer 404 once the purge job ran (the time is printed), variants too;
with the edge stopped during a delete, the purge job fails, is retried, and the
edge answers 404 once back.

Part 2 runs `tessera serve` with the cloudflare purger pointed at a local HTTP
stub that answers 429, then 500, then success: the request shape (POST
zones/{zone}/purge_cache, Bearer token, JSON {"files":[...]} naming the image
and its variants), the retries, and the purge metrics.
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "deploy", "local", "cluster")
BIN = tf.tessera_bin()
DATA = tf.testdata_dir()
OFF = int(os.environ.get("TESSERA_TEST_CDN_PORT_OFFSET", "40"))
EDGE, LB = 8000 + OFF, 8080 + OFF
READS = {"read-1": 8101 + OFF, "read-2": 8102 + OFF, "read-3": 8103 + OFF}
PG = 25432 + OFF  # below the ephemeral port range, where a client connection cannot hold it
RUN = None

C = tf.Checks("cdn")


def cluster(*args, check_rc=True, timeout=300):
    env = dict(os.environ, TESSERA_RUN=RUN, TESSERA_BIN=BIN, TESSERA_NO_BUILD="1",
               TESSERA_PORT_OFFSET=str(OFF), TESSERA_CLUSTER_PG_PORT=str(PG))
    p = subprocess.run([CLUSTER, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        print(p.stdout + p.stderr, file=sys.stderr)
        raise RuntimeError("cluster %s failed (%d)" % (" ".join(args), p.returncode))
    return p


def request(method, path, body=None, headers=None, port=EDGE, timeout=30):
    if path == "/metrics":  # the cluster's token (deploy/local/cluster make_secrets)
        with open(os.path.join(RUN, "secrets", "metrics.token")) as f:
            headers = dict(headers or {}, Authorization="Bearer " + f.read().strip())
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def upload(data, port=EDGE):
    b = "tesseracdnboundary"
    body = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n" % b).encode() + data +
            ("\r\n--%s--\r\n" % b).encode())
    st, h, out = request("POST", "/api/v1/images", body=body, port=port,
                         headers={"Content-Type": "multipart/form-data; boundary=" + b})
    return st, json.loads(out) if st == 201 else out


def served_by_reads(route):
    """Sum over the read services of 200s counted for a route."""
    total = 0
    for port in READS.values():
        st, _, body = request("GET", "/metrics", port=port)
        want = 'tessera_http_requests_total{route="%s",status="200"} ' % route
        for line in body.decode().splitlines():
            if line.startswith(want):
                total += int(line.split()[-1])
    return total


def path_of(url):
    return re.sub(r"^https?://[^/]+", "", url)


def wait_404(path, limit=30):
    """Seconds until the edge answers 404 for path (None if not within limit)."""
    t0 = time.monotonic()
    if tf.wait_for(lambda: request("GET", path)[0] == 404, limit,
                   "the edge to answer 404 for %s" % path, interval=0.02):
        return time.monotonic() - t0
    return None


def psql(sql):
    """One answer from the current leader, as the application role (deploy/local/pg.sh url)."""
    env = dict(os.environ, TESSERA_PG_DIR=os.path.join(RUN, "pg"), TESSERA_PG_PORT=str(PG))
    url = subprocess.run([os.path.join(ROOT, "deploy", "local", "pg.sh"), "url"], env=env,
                         capture_output=True, text=True, timeout=20).stdout.strip()
    return subprocess.run(["psql", url, "-XAt", "-c", sql], capture_output=True, text=True,
                          timeout=20).stdout.strip()


def corpus(n):
    manifest = [l.rstrip("\n").split("\t") for l in open(os.path.join(DATA, "manifest.tsv"))]
    names = [r[0] for r in manifest[1:] if r[5] == "accept" and r[0].endswith((".jpg", ".png"))]
    return [open(os.path.join(DATA, f), "rb").read() for f in names[:n]]


def part_edge():
    imgs = corpus(3)
    print("---- cluster with the edge")
    out = cluster("up").stdout
    C.check("edge cache" in out, "the launcher started the edge", out)
    st, _, _ = request("GET", "/lb/healthz")
    C.eq(st, 200, "the edge passes /lb/healthz to nginx")

    st, img = upload(imgs[0])
    if not C.eq(st, 201, "upload through the edge"):
        return
    C.check(img["url"].startswith("http://127.0.0.1:%d/i/" % EDGE), "url names the edge (cdn.base_url)",
            img["url"])
    C.check(all(v.startswith("http://127.0.0.1:%d/" % EDGE) for v in img["variants"].values()),
            "variant URLs name the edge")
    path = path_of(img["url"])
    thumb = path_of(img["variants"]["thumb"])

    print("---- hits")
    base = served_by_reads("bytes")
    st, h1, b1 = request("GET", path)
    C.check(st == 200 and h1.get("x-cache") == "MISS", "first GET: 200, X-Cache MISS",
            "%s %s" % (st, h1.get("x-cache")))
    C.check("surrogate-key" not in h1 and "cache-tag" not in h1 and "xkey" not in h1,
            "surrogate keys are not sent to clients")
    # a read service counts a request when it completes, a moment after the client has the answer
    tf.wait_for(lambda: served_by_reads("bytes") > base, 30, "the miss to be counted")
    before = served_by_reads("bytes")
    for _ in range(5):
        st, h2, b2 = request("GET", path)
    C.check(st == 200 and h2.get("x-cache") == "HIT" and b2 == b1, "second GET: a hit, same bytes",
            str(h2))
    C.check(len(h2.get("x-varnish", "").split()) == 2, "X-Varnish carries two numbers on a hit",
            h2.get("x-varnish"))
    C.eq(served_by_reads("bytes"), before, "hits reach no read service (per-instance counters)")
    st, h, _ = request("GET", path + "?x=1")
    C.check(st == 200 and h.get("x-cache") == "HIT", "a query string does not split the object")
    st, h, _ = request("GET", path, headers={"Range": "bytes=0-9"})
    C.check(st == 206 and h.get("x-cache") == "HIT", "a range is served from the cached object")

    base = served_by_reads("variant")
    st, h, tb = request("GET", thumb)
    C.eq(st, 200, "variant through the edge")
    tf.wait_for(lambda: served_by_reads("variant") > base, 30, "the variant miss to be counted")
    before = served_by_reads("variant")
    st, h, _ = request("GET", thumb)
    C.check(st == 200 and h.get("x-cache") == "HIT", "second GET of the variant is a hit")
    C.eq(served_by_reads("variant"), before, "variant hits reach no read service")

    print("---- origin headers")
    st, h, _ = request("GET", path, port=LB)
    C.eq(h.get("cache-control"), "public, max-age=31536000, immutable", "image bytes immutable")
    C.eq(h.get("surrogate-key"), "img-" + img["id"], "Surrogate-Key img-{id} on the image")
    C.eq(h.get("cache-tag"), "img-" + img["id"], "Cache-Tag img-{id} on the image")
    C.check(re.fullmatch(r'"[0-9a-f]{64}"', h.get("etag", "")) is not None, "strong ETag")
    C.check("vary" not in h, "no Vary on image bytes (they do not vary)")
    st, h, _ = request("GET", thumb, port=LB)
    C.eq(h.get("surrogate-key"), "img-" + img["id"], "Surrogate-Key img-{id} on the variant")
    C.eq(h.get("cache-control"), "public, max-age=31536000, immutable", "variant bytes immutable")
    request("GET", "/api/v1/images/" + img["id"])
    st, h, _ = request("GET", "/api/v1/images/" + img["id"])
    C.check(st == 200 and h.get("x-cache") == "MISS" and h.get("cache-control") == "no-store",
            "API JSON: no-store, never a hit", str(h))

    print("---- purge on delete")
    st, _, _ = request("DELETE", "/api/v1/images/" + img["id"],
                       headers={"X-Delete-Token": img["delete_token"]})
    C.eq(st, 204, "delete through the edge")
    took = wait_404(path)
    C.check(took is not None, "the edge answers 404 once purged (%.3f s after the delete)"
            % (took or -1))
    C.check(wait_404(thumb) is not None, "the variant too")
    st, h, _ = request("GET", path)
    C.check(st == 404 and h.get("x-cache") == "MISS", "a 404 is not cached")

    print("---- edge stopped during a delete")
    st, img2 = upload(imgs[1])
    p2 = path_of(img2["url"])
    request("GET", p2)
    st, h, _ = request("GET", p2)
    C.eq(h.get("x-cache"), "HIT", "image 2 cached at the edge")
    cluster("stop", "edge")
    st, _, _ = request("DELETE", "/api/v1/images/" + img2["id"], port=LB,
                       headers={"X-Delete-Token": img2["delete_token"]})
    C.eq(st, 204, "delete while the edge is down")
    log = os.path.join(RUN, "logs", "worker-1.log")
    failed = tf.wait_for(
        lambda: re.search(r"\(purge %s:[a-z]+\) attempt \d+ failed" % re.escape(img2["id"]),
                          open(log).read()) is not None,
        60, "a failed purge attempt in the worker log", interval=0.1)
    C.check(failed, "the purge job failed while the edge was down (worker log)")
    q = psql("SELECT count(*) FROM jobs WHERE kind = 'purge' AND payload LIKE '%s:%%'" % img2["id"])
    C.eq(q, "1", "the purge job is queued for a retry")
    time.sleep(1.0)  # the scenario: the edge stays down a while longer (no check depends on it)
    cluster("start", "edge")
    st, _, _ = request("GET", p2)
    C.eq(st, 404, "the edge serves 404 once it is back")
    q = "SELECT count(*) FROM jobs WHERE kind = 'purge' AND payload LIKE '%s:%%'" % img2["id"]
    tf.wait_for(lambda: psql(q) == "0", 60, "the retried purge job to leave the queue",
                interval=0.2)
    C.eq(psql(q), "0", "the retried purge job succeeded once the edge was back")

    part_transforms(imgs[2])

    print("---- purges only from the ACL")
    st, h, _ = request("PURGE", "/", headers={"xkey": "img-none"})
    C.check(st == 200 and "x-xkey-purged" in h, "xkey purge from loopback accepted", str(h))


def signed(key, image_id, canonical):
    mac = hmac.new(key.encode(), ("/i/%s/t/%s" % (image_id, canonical)).encode(),
                   hashlib.sha256).digest()
    return "/i/%s/t/%s?s=%s" % (image_id, canonical,
                                base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32])


def part_transforms(data):
    print("---- transforms through the edge")
    with open(os.path.join(RUN, "secrets", "transform.keys")) as f:
        key = f.read().rstrip("\n")
    st, img = upload(data)
    if not C.eq(st, 201, "upload for transforms"):
        return
    iid = img["id"]
    webp = signed(key, iid, "w:64.webp")
    base = served_by_reads("transform")
    st, h, body = request("GET", webp)
    C.check(st == 200 and h.get("x-cache") == "MISS" and body[8:12] == b"WEBP",
            "a signed rendition through the edge: 200 WebP", "%d %s" % (st, h))
    st, h, _ = request("GET", webp + "&utm=1")
    C.check(st == 200 and h.get("x-cache") == "HIT", "again, with another parameter: a hit")
    st, h, _ = request("GET", "/i/%s/t/w:64.webp" % iid)
    C.check(st == 403 and h.get("x-cache") == "MISS", "unsigned through the edge: 403, not cached")
    auto = signed(key, iid, "w:48.auto")
    tf.wait_for(lambda: served_by_reads("transform") > base, 30, "the miss to be counted")
    base = served_by_reads("transform")
    classes = [("image/avif,image/webp,*/*", "image/avif"), ("image/webp,*/*", "image/webp"),
               ("*/*", "image/jpeg")]
    for accept, ctype in classes:
        st, h, _ = request("GET", auto, headers={"Accept": accept})
        C.check(st == 200 and h.get("content-type") == ctype and h.get("vary") == "Accept",
                "auto for %s: %s, Vary: Accept" % (accept, ctype), str(h))
    # other spellings of the same three classes: hits, no new copy
    for accept, ctype in [("image/avif", "image/avif"),
                          ("text/html,image/webp;q=0.9,*/*;q=0.8", "image/webp"),
                          ("image/png,image/jpeg", "image/jpeg"), (None, "image/jpeg")]:
        st, h, _ = request("GET", auto, headers={"Accept": accept} if accept else None)
        C.check(st == 200 and h.get("x-cache") == "HIT" and h.get("content-type") == ctype,
                "auto for %r: a hit of its class (%s)" % (accept, ctype), str(h))
    tf.wait_for(lambda: served_by_reads("transform") >= base + 3, 30, "the misses to be counted")
    C.eq(served_by_reads("transform") - base, 3, "auto: at most three edge copies (three misses)")
    st, _, _ = request("DELETE", "/api/v1/images/" + iid,
                       headers={"X-Delete-Token": img["delete_token"]})
    C.eq(st, 204, "delete the transformed image")
    C.check(wait_404(webp) is not None, "a deleted image's rendition: 404 at the edge once purged")
    for accept, _ in classes:
        st, _, _ = request("GET", auto, headers={"Accept": accept})
        C.eq(st, 404, "... and its auto copy for %s" % accept)


class Stub(http.server.BaseHTTPRequestHandler):
    """The Cloudflare API stand-in: answers from a script, records every request."""
    script = []
    seen = []
    lock = threading.Lock()

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        with Stub.lock:
            Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                              "ctype": self.headers.get("Content-Type"), "body": body,
                              "t": time.monotonic()})
            status = Stub.script.pop(0) if Stub.script else 200
        out = json.dumps({"success": status == 200, "errors": [], "messages": [],
                          "result": {"id": "x"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def queued_purges(srv):
    """Purge jobs in the queue of a `tessera serve` (its SQLite database)."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(srv.data_dir, "meta.db"), uri=True,
                         timeout=10)
    try:
        return db.execute("SELECT count(*) FROM jobs WHERE kind = 'purge'").fetchone()[0]
    finally:
        db.close()


def part_cloudflare():
    print("---- cloudflare purger against a local stub")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Stub.script = [429, 500, 200]
    api = "http://127.0.0.1:%d/client/v4" % srv.server_address[1]
    # back-off 500 ms, then 1 s: the gaps differ by far more than the 50 ms poll and a busy
    # machine's delays, so "the back-off grows" is not decided by scheduling noise
    s = tf.Server(args=["--cdn.purger", "cloudflare", "--cdn.cloudflare_api", api,
                        "--cdn.cloudflare_zone", "zone123", "--cdn.cloudflare_token", "tok-abc",
                        "--cdn.base_url", "https://img.example.com", "--jobs.backoff", "500ms",
                        "--jobs.poll", "50ms"])
    try:
        s.start()
        st, _, _, img = tf.upload(s, corpus(1)[0])
        C.eq(st, 201, "upload to serve")
        C.check(img["url"].startswith("https://img.example.com/i/"), "url names cdn.base_url")
        st, _, _ = tf.request(s, "DELETE", "/api/v1/images/" + img["id"],
                              headers={"X-Delete-Token": img["delete_token"]})
        C.eq(st, 204, "delete")
        tf.wait_for(lambda: len(Stub.seen) >= 3, 60, "three purge requests at the stub")
        # once the purge job has left the queue nothing can ask the stub again
        tf.wait_for(lambda: queued_purges(s) == 0, 60, "the purge job to leave the queue")
        C.eq(len(Stub.seen), 3, "429 and 500 retried until the purge succeeded, then no more")
        for r in Stub.seen[:1]:
            C.eq(r["path"], "/client/v4/zones/zone123/purge_cache", "POST zones/{zone}/purge_cache")
            C.eq(r["auth"], "Bearer tok-abc", "Authorization: Bearer token")
            C.eq(r["ctype"], "application/json", "JSON body")
            files = json.loads(r["body"]).get("files", [])
            C.check(img["url"] in files, "files names the image URL", str(files))
            C.check(all(v in files for v in img["variants"].values()), "and every variant URL")
        C.check(all(r["body"] == Stub.seen[0]["body"] for r in Stub.seen), "retries send the same")
        gaps = [b["t"] - a["t"] for a, b in zip(Stub.seen, Stub.seen[1:])]
        C.check(len(gaps) == 2 and gaps[1] > gaps[0] * 1.3, "back-off grows between retries",
                str(gaps))
        st, _, m = tf.request(s, "GET", "/metrics")
        text = m.decode()

        def val(name):
            mm = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
            return float(mm.group(1)) if mm else None
        C.eq(val("tessera_cdn_purge_failures_total"), 2.0, "failures counted in /metrics")
        C.eq(val("tessera_cdn_purges_total"), 1.0, "the purge counted in /metrics")
        C.eq(val("tessera_cdn_purge_seconds_count"), 3.0, "purge latency histogram")
    finally:
        s.stop()
        srv.shutdown()


def part_cloudflare_renditions():
    print("---- cloudflare purger: a deleted image's renditions by URL")
    Stub.script, Stub.seen = [], []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    api = "http://127.0.0.1:%d/client/v4" % srv.server_address[1]
    key = "cloudflare-rendition-key-0123456789"
    s = tf.Server(args=["--cdn.purger", "cloudflare", "--cdn.cloudflare_api", api,
                        "--cdn.cloudflare_zone", "zone123", "--cdn.cloudflare_token", "tok-abc",
                        "--cdn.base_url", "https://img.example.com", "--transforms.keys", key,
                        "--jobs.poll", "50ms"])
    try:
        s.start()
        st, _, _, img = tf.upload(s, corpus(1)[0])
        r = signed(key, img["id"], "w:40.webp")
        st, _, _ = tf.request(s, "GET", r)
        C.eq(st, 200, "a rendition made")
        st, _, _ = tf.request(s, "DELETE", "/api/v1/images/" + img["id"],
                              headers={"X-Delete-Token": img["delete_token"]})
        C.eq(st, 204, "delete")
        want = {"https://img.example.com" + r, "https://img.example.com" +
                signed(key, img["id"], "w:40.auto")}

        def purged():
            with Stub.lock:
                files = [f for x in Stub.seen for f in json.loads(x["body"]).get("files", [])]
            return want <= set(files)
        C.check(tf.wait_for(purged, 60, "the rendition's URLs purged"),
                "the rendition's signed URL and its .auto sibling are purged by URL",
                str([x["body"] for x in Stub.seen]))
    finally:
        s.stop()
        srv.shutdown()


def main():
    global RUN
    for p in [EDGE, LB, PG, *READS.values()]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            print("FAIL port %d is in use (TESSERA_TEST_CDN_PORT_OFFSET moves the ports)" % p)
            return 1
        finally:
            s.close()
    C.run(part_cloudflare)
    C.run(part_cloudflare_renditions)
    RUN = tempfile.mkdtemp(prefix="tessera-cdn-")
    os.chmod(RUN, 0o755)  # postgres, nginx's workers (nobody) and varnish's (vcache) read below it
    try:
        C.run(part_edge)
    finally:
        p = cluster("destroy", check_rc=False)
        if p.returncode != 0:
            print(p.stdout + p.stderr)
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())
