#!/usr/bin/python3
"""System test: trust between machines, played by an outsider on the same network.

Topology: one `tessera storage` node and one `tessera serve` using it as its ring (both with
storage.secret_file and metrics.token_file), the serve also on a real 3-node Redis Cluster
(deploy/local/redis.sh, with its generated password) with cache.secret_file, its LRU off so
every lookup reaches Redis. Checks (docs/security.md names them):
- every storage node verb (GET, HEAD, PUT, DELETE, listing) unsigned, wrongly signed, signed
  for another request, stale (either way), or with the old secret after a rotation -> 401,
  nothing changed on disk, counted in the node's metrics, logged without the secret; a
  rotation with both secrets accepted keeps the service working; /healthz and /readyz open;
- Redis without the password: refused;
- a tampered cached record (another image's record, an edited blob key, an unsealed one) and
  forged invalidation messages -> not served, not trusted, counted;
- a polyglot of each accepted format -> 422, or 201 with the payload gone (re-encoded);
- a forged or altered listing cursor -> 400;
- /metrics without the token, or with a wrong one -> 401, on the service and the node;
- a path with %0a -> one log line, on the service and on the node;
- auth.list_requires_key: the listing needs a key, the images stay readable.
"""
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402
from test_cache import Redis  # noqa: E402 - the Redis Cluster launcher of test_cache

C = tf.Checks("test_trust")
EMPTY = hashlib.sha256(b"").hexdigest()


def write_secret(path):
    """A new secret file (mode 600) of 32 random bytes written as hex; returns the key bytes."""
    key = os.urandom(32).hex()
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(key + "\n")
    return key.encode()


def signed(key, method, target, sha=EMPTY, date=None):
    """The headers of a storage node request signed with key (src/store/node_auth.h)."""
    date = str(int(time.time()) if date is None else date)
    msg = "TESSERA-HMAC-SHA256\n%s\n%s\n%s\n%s" % (method, target, date, sha)
    mac = hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()
    return {"X-Tessera-Date": date, "X-Tessera-Content-SHA256": sha,
            "Authorization": "Tessera-HMAC-SHA256 " + mac}


class Role(tf.Server):
    """A tessera role other than serve (here: storage) in the fixture's process handling."""

    def __init__(self, role, args):
        super().__init__(args=args)
        self.role = role

    def start(self, timeout=20):
        if self.role == "serve":
            return super().start(timeout)
        self.port = self.port or tf.free_port()
        self._nstart += 1
        self.log_path = os.path.join(self.root, "%s-%d.log" % (self.role, self._nstart))
        self._log = open(self.log_path, "wb")
        cmd = [tf.tessera_bin(), self.role, "--listen", "127.0.0.1:%d" % self.port,
               "--data-dir", self.data_dir] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        ok = tf.wait_for(lambda: self.proc.poll() is not None or self.healthy(), 20,
                         "%s to answer /healthz" % self.role)
        if self.proc.poll() is not None or not ok:
            raise RuntimeError("%s did not start:\n%s" % (self.role, self.log_tail()))
        return self

    def healthy(self):
        try:
            return tf.request(self, "GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False


def metric(srv, token, name):
    """The sum of a metric's samples whose line starts with name (labels included in name)."""
    st, _, body = tf.request(srv, "GET", "/metrics", headers={"Authorization": "Bearer " + token})
    if st != 200:
        raise RuntimeError("/metrics: %d" % st)
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.split()[-1])
    return total


def disk(node):
    """What the node holds: every blob file with its size and mtime (temporaries left out)."""
    out = {}
    root = os.path.join(node.data_dir, "blobs")
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "tmp"]
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def upload(srv, data):
    st, _, body = tf.request(srv, "POST", "/api/v1/images", body=data,
                             headers={"Content-Type": "application/octet-stream"})
    C.eq(st, 201, "upload through the service (signed PUT to the node)")
    return json.loads(body)


def t_ops_open(w, node, token):
    for srv, who in ((w, "service"), (node, "node")):
        for path in ("/healthz", "/readyz"):
            st, _, body = tf.request(srv, "GET", path)
            C.eq(st, 200, "%s %s: open without credentials" % (who, path))
            C.check(token.encode() not in body, "%s %s: reveals no token" % (who, path))
        st, h, body = tf.request(srv, "GET", "/metrics")
        C.eq(st, 401, "%s /metrics without a token: 401" % who)
        C.check(tf.is_error_body(body, "unauthorized"), "%s /metrics 401: the JSON error" % who,
                body[:200])
        C.check((h.get("WWW-Authenticate") or "").startswith("Bearer"),
                "%s /metrics 401: WWW-Authenticate: Bearer" % who)
        for bad in ("Bearer " + token[:-1] + "x", "Bearer " + token + "x", "Bearer ",
                    "Basic " + token, token):
            st, _, _ = tf.request(srv, "GET", "/metrics", headers={"Authorization": bad})
            C.eq(st, 401, "%s /metrics with a wrong token: 401" % who, bad[:12])
        st, _, body = tf.request(srv, "GET", "/metrics",
                                 headers={"Authorization": "Bearer " + token})
        C.check(st == 200 and b"tessera_" in body, "%s /metrics with the token: 200" % who)


def t_node_refuses(w, node, key, token, img):
    """Every verb, every way of getting the signature wrong: 401 and nothing changed."""
    k = img["sha256"]
    other = os.urandom(32)
    data = os.urandom(1000)
    nk = hashlib.sha256(data).hexdigest()
    before_disk = disk(node)
    C.check(k in "".join(before_disk), "the uploaded blob is on the node's disk")
    before = metric(node, token, "tessera_storage_unauthorized_total")
    now = int(time.time())
    verbs = [("GET", "/blobs/" + k, None, EMPTY), ("HEAD", "/blobs/" + k, None, EMPTY),
             ("DELETE", "/blobs/" + k, None, EMPTY), ("PUT", "/blobs/" + nk, data, nk),
             ("GET", "/blobs?limit=10&after=", None, EMPTY)]
    n = 0
    for method, target, body, sha in verbs:
        ways = {
            "unsigned": {},
            "wrong secret": signed(other, method, target, sha),
            "stale (-301 s)": signed(key, method, target, sha, now - 301 - 5),
            "stale (+301 s)": signed(key, method, target, sha, now + 301 + 5),
            "signed for another method": signed(key, "GET" if method != "GET" else "HEAD",
                                                target, sha),
            "signed for another target": signed(key, method, target + "0"
                                                if "?" in target else "/blobs/" + EMPTY, sha),
            "signed for another body": signed(key, method, target,
                                              EMPTY if sha != EMPTY else nk),
            "date changed after signing": dict(signed(key, method, target, sha),
                                               **{"X-Tessera-Date": str(now - 1)}),
            "malformed signature": dict(signed(key, method, target, sha),
                                        Authorization="Tessera-HMAC-SHA256 xyz"),
        }
        for how, hdrs in ways.items():
            st, _, resp = tf.request(node, method, target, body=body, headers=hdrs)
            n += 1
            C.eq(st, 401, "node %s %s, %s: 401" % (method, target.split("?")[0][:14], how))
            if method != "HEAD":
                C.check(tf.is_error_body(resp, "unauthorized"), "  the JSON error", resp[:100])
    C.eq(disk(node), before_disk, "after %d refused requests nothing changed on the disk" % n)
    C.eq(metric(node, token, "tessera_storage_unauthorized_total") - before, n,
         "every refusal counted in tessera_storage_unauthorized_total")
    # the log says what was refused, never the secret
    log = open(node.log_path, "rb").read()
    C.check(b"refused PUT /blobs/" + nk.encode() in log, "refusals are logged with the request")
    C.check(key not in log and hmac.new(key, b"", hashlib.sha256).hexdigest().encode() not in log,
            "the node's log holds no secret")
    # positive controls: the right signature is accepted; a signed PUT of bytes that do not hash
    # to the key is refused (400) and leaves nothing
    st, _, body = tf.request(node, "GET", "/blobs/" + k, headers=signed(key, "GET", "/blobs/" + k))
    C.check(st == 200 and hashlib.sha256(body).hexdigest() == k, "signed GET: 200, the bytes")
    lie = hashlib.sha256(b"other").hexdigest()
    st, _, _ = tf.request(node, "PUT", "/blobs/" + lie, body=data,
                          headers=signed(key, "PUT", "/blobs/" + lie, lie))
    C.eq(st, 400, "signed PUT whose body does not hash to its key: 400")
    st, _, _ = tf.request(node, "PUT", "/blobs/" + nk, body=data,
                          headers=signed(key, "PUT", "/blobs/" + nk, EMPTY))
    C.eq(st, 401, "signed PUT naming another body hash than its key: 401")
    C.eq(disk(node), before_disk, "nothing stored by either")
    # a %0a in a refused path is one escaped log line
    tf.request(node, "GET", "/blobs/%0aFORGED-NODE-LINE")
    tf.request(node, "GET", "/healthz")
    lines = open(node.log_path, "rb").read().decode("utf-8", "replace").splitlines()
    C.check(not any(l.startswith("FORGED-NODE-LINE") for l in lines),
            "node: a %0a in the path forges no log line")
    C.check(any("\\x0aFORGED-NODE-LINE" in l for l in lines), "node: it is written escaped")


def restart(node, args):
    node.terminate()
    node.args = args
    node.start()


def read_ok(w, img):
    st, _, body = tf.request(w, "GET", tf.path_of(img["url"]))
    return st == 200 and hashlib.sha256(body).hexdigest() == img["sha256"]


def t_rotation(w, node, node_args, dirs, keys, token, img):
    """Rotation: the node takes the new and the old secret, the service moves, the old one goes."""
    a, b = keys
    k = img["sha256"]
    target = "/blobs/" + k
    restart(node, node_args + ["--storage.secret_file=" + dirs["new"],
                               "--storage.secret_file_previous=" + dirs["old"]])
    for key, which in ((a, "old"), (b, "new")):
        st, _, _ = tf.request(node, "GET", target, headers=signed(key, "GET", target))
        C.eq(st, 200, "rotation, both secrets on the node: the %s secret accepted" % which)
    C.check(read_ok(w, img), "rotation: the service (old secret) still reads from the node")
    restart(w, w.args[:-1] + ["--storage.secret_file=" + dirs["new"]])
    C.check(read_ok(w, img), "rotation: the service on the new secret reads")
    restart(node, node_args + ["--storage.secret_file=" + dirs["new"]])
    before_disk = disk(node)
    for method in ("GET", "HEAD", "DELETE"):
        st, _, _ = tf.request(node, method, target, headers=signed(a, method, target))
        C.eq(st, 401, "after the rotation: %s with the old secret: 401" % method)
    data = os.urandom(500)
    nk = hashlib.sha256(data).hexdigest()
    st, _, _ = tf.request(node, "PUT", "/blobs/" + nk, body=data,
                          headers=signed(a, "PUT", "/blobs/" + nk, nk))
    C.eq(st, 401, "after the rotation: PUT with the old secret: 401")
    st, _, _ = tf.request(node, "GET", "/blobs?limit=5", headers=signed(a, "GET", "/blobs?limit=5"))
    C.eq(st, 401, "after the rotation: listing with the old secret: 401")
    C.eq(disk(node), before_disk, "after the rotation: the old secret changed nothing on disk")
    C.check(read_ok(w, img), "after the rotation: the service still reads")
    up = upload(w, tf.tiny_png(99))
    C.check(read_ok(w, up), "after the rotation: the service uploads and reads back")


def t_redis_password(rd):
    for args in (["GET", "tessera:img:x"], ["SET", "tessera:img:x", "1"], ["KEYS", "*"],
                 ["SPUBLISH", "tessera:invalidate", "i x 1"]):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(rd.base)] + args,
                           capture_output=True, text=True, timeout=30,
                           env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"})
        out = (r.stdout + r.stderr).strip()
        C.check(out.startswith(("NOPERM", "NOAUTH")), "Redis without the password: %s refused"
                % args[0], out[:80])
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(rd.base), "--user", "tessera",
                        "--no-auth-warning", "ping"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, REDISCLI_AUTH="not-the-password"))
    C.check("WRONGPASS" in r.stdout + r.stderr, "Redis with a wrong password: refused",
            (r.stdout + r.stderr)[:80])


def t_wrong_redis_password(rd, root):
    """A service with a wrong Redis password: refused by Redis, logged without the password,
    and the reads are the database's."""
    bad = os.path.join(root, "wrong.pass")
    wrong = write_secret(bad).decode()
    args = rd.client_args(os.path.join(root, "cache"))
    args = [a if not a.startswith("--cache.redis_password_file=")
            else "--cache.redis_password_file=" + bad for a in args]
    with tf.Server(args=args + ["--cache.lru_entries=0"]) as s:
        img = upload(s, tf.tiny_png(77))
        for _ in range(3):
            C.eq(tf.request(s, "GET", "/api/v1/images/" + img["id"])[0], 200,
                 "wrong Redis password: metadata read from the database")
        C.check(read_ok(s, img), "wrong Redis password: the bytes are served")
        st, _, body = tf.request(s, "GET", "/metrics")
        errs = sum(float(l.split()[-1]) for l in body.decode().splitlines()
                   if l.startswith("tessera_cache_redis_errors_total{"))
        C.check(errs > 0, "wrong Redis password: counted as Redis errors", str(errs))
        log = open(s.log_path, "rb").read()
        C.check(b"WRONGPASS" in log, "wrong Redis password: the refusal is logged")
        C.check(wrong.encode() not in log, "wrong Redis password: the password is not logged")


def t_cache_forgery(w, rd, token, imgs):
    a, b = imgs
    ka, kb = "tessera:img:" + a["id"], "tessera:img:" + b["id"]
    for i in (a, b):
        st, _, _ = tf.request(w, "GET", "/api/v1/images/" + i["id"])
        C.eq(st, 200, "metadata read fills Redis")
    va, vb = rd.cli("-c", "GET", ka), rd.cli("-c", "GET", kb)
    C.check(re.match(r"^1\|.*\|[0-9a-f]{32}$", va or ""), "the cached record carries an HMAC", va)
    forged_a = va.rsplit("|", 1)[0].replace(a["sha256"], b["sha256"])
    tampered = {
        "another image's record (valid for its id)": vb,
        "the blob key edited, the HMAC kept": forged_a + "|" + va.rsplit("|", 1)[1],
        "an unsealed record (the old format)": forged_a,
        "a record under a made-up HMAC": forged_a + "|" + "0" * 32,
        "a forged tombstone": "0",
    }
    before = metric(w, token, 'tessera_cache_forged_total{what="record"}')
    for how, val in tampered.items():
        C.eq(rd.cli("-c", "SET", ka, val), "OK", "Redis written by an outsider: " + how)
        C.check(read_ok(w, a), "  %s: the image's own bytes are served" % how)
        st, _, body = tf.request(w, "GET", "/api/v1/images/" + a["id"])
        j = json.loads(body) if st == 200 else {}
        C.check(st == 200 and j.get("sha256") == a["sha256"], "  %s: the metadata is the "
                "database's" % how, "%d %s" % (st, j.get("sha256")))
    C.eq(metric(w, token, 'tessera_cache_forged_total{what="record"}') - before, len(tampered),
         "every tampered record counted (one drop each; the refill is sealed again)")
    C.check(re.match(r"^1\|.*\|[0-9a-f]{32}$", rd.cli("-c", "GET", ka) or ""),
            "the dropped record was replaced by the service's own")
    log = open(w.log_path, "rb").read()
    C.check(b"cached record of " + a["id"].encode() + b" fails its HMAC check" in log,
            "the dropped records are logged")

    # forged invalidation messages and acknowledgements: dropped and counted
    recv = 'tessera_cache_invalidations_total{event="received"}'
    r0 = metric(w, token, recv)
    m0 = metric(w, token, 'tessera_cache_forged_total{what="message"}')
    msgs = ["i %s 12345" % a["id"], "i %s 12345|%s" % (a["id"], "0" * 32),
            "a %s 12345|%s" % (a["id"], "f" * 32)]
    for m in msgs:
        rd.cli("-c", "SPUBLISH", "tessera:invalidate", m)
    ok = tf.wait_for(lambda: metric(w, token, 'tessera_cache_forged_total{what="message"}') - m0
                     >= len(msgs), 30, "the forged messages to be counted")
    C.check(ok, "forged invalidation messages counted in tessera_cache_forged_total")
    C.eq(metric(w, token, recv) - r0, 0, "no forged invalidation was applied")
    C.check(b"invalidation message for " + a["id"].encode() + b" fails its HMAC check"
            in open(w.log_path, "rb").read(), "the forged messages are logged")
    # the real thing still works: a delete is honoured at once
    st, _, body = tf.request(w, "POST", "/api/v1/images", body=tf.tiny_png(7),
                             headers={"Content-Type": "application/octet-stream"})
    c = json.loads(body)
    tf.request(w, "GET", "/api/v1/images/" + c["id"])
    st, _, _ = tf.request(w, "DELETE", "/api/v1/images/" + c["id"],
                          headers={"X-Delete-Token": c["delete_token"]})
    C.eq(st, 204, "a real delete")
    C.eq(tf.request(w, "GET", "/api/v1/images/" + c["id"])[0], 404,
         "its sealed tombstone and invalidation are trusted: 404 at once")
    C.check(metric(w, token, recv) - r0 >= 1, "the real invalidation was received")


PAYLOAD = b"<html><body><script>alert(document.domain)</script></body></html>"


def t_polyglots(w):
    """Each accepted format followed by an HTML document (and HEIF/AVIF with the document in a
    box of its own): 422, or 201 with the document gone from the bytes served."""
    seen = {}
    for row in tf.load_manifest():
        if row["expected"] == "accept" and row["format"] not in seen:
            seen[row["format"]] = row["file"]
    C.eq(sorted(seen), ["avif", "bmp", "gif", "heif", "jpeg", "png", "tiff", "webp"],
         "one corpus file per accepted format")
    cases = []
    for fmt, name in sorted(seen.items()):
        data = tf.corpus_bytes(name)
        cases.append(("%s + trailing HTML" % fmt, data + PAYLOAD))
        if fmt in ("avif", "heif"):
            for box in (b"free", b"skip", b"uuid", b"xxxx"):
                cases.append(("%s + a '%s' box holding HTML" % (fmt, box.decode()),
                              data + (8 + len(PAYLOAD)).to_bytes(4, "big") + box + PAYLOAD))
    for what, body in cases:
        st, _, resp = tf.request(w, "POST", "/api/v1/images", body=body,
                                 headers={"Content-Type": "application/octet-stream"})
        if st == 201:
            img = json.loads(resp)
            _, _, served = tf.request(w, "GET", tf.path_of(img["url"]))
            C.check(b"<script>" not in served, "polyglot %s: 201, re-encoded (payload gone)"
                    % what)
        else:
            C.check(st == 422 and tf.is_error_body(resp, "unprocessable_image"),
                    "polyglot %s: 422" % what, str(st))


def t_cursor(w):
    for i in range(3):
        upload(w, tf.tiny_png(200 + i))
    st, _, body = tf.request(w, "GET", "/api/v1/images?limit=1")
    cur = json.loads(body)["next_cursor"]
    C.check(isinstance(cur, str) and len(cur) > 10, "a listing page has a cursor")
    flip = lambda c, i: c[:i] + ("A" if c[i] != "A" else "B") + c[i + 1:]  # noqa: E731
    forged = [flip(cur, 0), flip(cur, len(cur) // 2), flip(cur, len(cur) - 1), cur[:-1],
              cur + "A", "A" * len(cur), "0"]
    for f in forged:
        st, _, body = tf.request(w, "GET", "/api/v1/images?limit=1&cursor=" + f)
        C.check(st == 400 and tf.is_error_body(body, "bad_request"),
                "forged or altered cursor: 400", "%s: %d" % (f, st))
    C.eq(tf.request(w, "GET", "/api/v1/images?limit=1&cursor=" + cur)[0], 200,
         "the real cursor: 200")


def t_log_line(w):
    path = "/i/abc%0aFORGED-LINE%20info%20access:%20x"
    C.eq(tf.request(w, "GET", path)[0], 404, "a path with %0a: 404")
    tf.request(w, "GET", "/healthz")
    lines = open(w.log_path, "rb").read().decode("utf-8", "replace").splitlines()
    C.check(not any(l.startswith("FORGED-LINE") for l in lines), "no log line of the client's")
    C.eq(len([l for l in lines if "FORGED-LINE" in l]), 1, "the request is one log line")


def t_list_key():
    """auth.list_requires_key: the listing needs a key; the images stay readable by URL."""
    key = os.urandom(18).hex()
    with tf.Server(args=["--auth.list_requires_key=true", "--auth.upload_keys=" + key]) as s:
        st, _, body = tf.request(s, "POST", "/api/v1/images", body=tf.tiny_png(5),
                                 headers={"Authorization": "Bearer " + key})
        C.eq(st, 201, "list_requires_key: an upload with the key")
        img = json.loads(body)
        for hdrs, what in (({}, "no key"), ({"Authorization": "Bearer " + key[:-1] + "x"},
                                            "a wrong key")):
            st, _, body = tf.request(s, "GET", "/api/v1/images", headers=hdrs)
            C.check(st == 401 and tf.is_error_body(body, "unauthorized"),
                    "list_requires_key: listing with %s: 401" % what, str(st))
        st, _, body = tf.request(s, "GET", "/api/v1/images",
                                 headers={"Authorization": "Bearer " + key})
        C.check(st == 200 and len(json.loads(body)["items"]) == 1,
                "list_requires_key: listing with the key: 200")
        C.eq(tf.request(s, "GET", tf.path_of(img["url"]))[0], 200,
             "list_requires_key: the image is still readable by its URL without a key")


def main():
    root = tempfile.mkdtemp(prefix="tessera-trust-")
    rd = Redis()
    node = w = None
    try:
        rd.sh("up")
        dirs = {n: os.path.join(root, n) for n in ("old", "new", "token", "cache")}
        keys = (write_secret(dirs["old"]), write_secret(dirs["new"]))
        token = write_secret(dirs["token"]).decode()
        write_secret(dirs["cache"])
        common = ["--metrics.token_file=" + dirs["token"]]
        node_args = common + ["--storage.secret_file=" + dirs["old"]]
        node = Role("storage", node_args).start()
        w = tf.Server(args=common + rd.client_args(dirs["cache"]) + [
            "--cache.lru_entries=0", "--storage.cache_bytes=0",
            "--storage.shards=s1=http://127.0.0.1:%d" % node.port, "--storage.replicas=1",
            "--storage.write_quorum=1", "--storage.secret_file=" + dirs["old"]])
        w.start()
        imgs = [upload(w, tf.tiny_png(1)), upload(w, tf.tiny_png(2))]
        C.check(all(read_ok(w, i) for i in imgs), "the service reads its uploads (signed GETs)")
        C.run(t_ops_open, w, node, token)
        C.run(t_node_refuses, w, node, keys[0], token, imgs[0])
        C.run(t_redis_password, rd)
        C.run(t_wrong_redis_password, rd, root)
        C.run(t_cache_forgery, w, rd, token, imgs)
        C.run(t_polyglots, w)
        C.run(t_cursor, w)
        C.run(t_log_line, w)
        C.run(t_rotation, w, node, node_args[:1], dirs, keys, token, imgs[0])
        C.run(t_list_key)
        # without a secret a node will not listen beyond loopback
        r = subprocess.run([tf.tessera_bin(), "storage", "--listen", "0.0.0.0:%d" % tf.free_port(),
                            "--data-dir", os.path.join(root, "open")], capture_output=True,
                           text=True, timeout=30)
        C.check(r.returncode != 0 and "storage.secret_file" in r.stderr + r.stdout,
                "a node without a secret refuses to listen on 0.0.0.0", r.stderr[-200:])
        if C.failures:
            for s in (node, w):
                print("---- %s log (tail)\n%s" % (s.log_path, s.log_tail(30)))
    finally:
        rd.destroy()
        shutil.rmtree(root, ignore_errors=True)
    C.finish()


if __name__ == "__main__":
    main()
