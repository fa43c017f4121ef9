#!/usr/bin/env python3
"""System test of the S3 blob backend: `tessera serve` whose one shard is a bucket of a real
S3 server (OpenStack Swift with s3api, started by deploy/local/s3.sh on free loopback ports).

Covers: corpus round trip byte-exact (every accepted corpus file), ranged reads, variants,
delete; /readyz naming the bucket when it is wrong; Swift stopped -> uploads 503 with
Retry-After and nothing answered 201 lost, blobs in the local cache still served; Swift
started again -> uploads work; Swift killed and started under an uploader -> only 201s and
503s with Retry-After; a restart with an empty local cache reads every upload answered 201
back from the bucket. Then a ring of two prefixes (R=2): a copy overwritten with wrong bytes is
never served, `tessera repair` (listing with ListObjectsV2) rewrites it; `tessera gc`
removes an orphan object. Skips (exit 77)
with the reason when Swift is not installed.
"""
import http.client
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tessera_fixture as tf  # noqa: E402

S3SH = os.path.join(tf.REPO, "deploy", "local", "s3.sh")


def free_port_run(n):
    """The first of n consecutive free loopback ports (s3.sh uses PORT..PORT+4), below the
    kernel's ephemeral range: a port there may be taken meanwhile by the local side of any
    outgoing connection (Swift's own, this test's), and Swift binds after this check."""
    for _ in range(500):
        base = random.randrange(20000, 32000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of %d free ports" % n)


class Swift:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tessera-s3-")
        self.env = dict(os.environ, TESSERA_S3_DIR=self.dir,
                        TESSERA_S3_PORT=str(free_port_run(5)))

    def sh(self, *args):
        return subprocess.run([S3SH] + list(args), env=self.env, check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip()

    @property
    def credentials(self):
        return os.path.join(self.dir, "credentials")

    def swift_api(self, method, path, body=None):
        """A request to Swift's own API (token auth): to look at or spoil an object behind the
        S3 API's back. path is BUCKET/OBJECT."""
        port = int(self.env["TESSERA_S3_PORT"])
        creds = dict(l.split(" = ", 1) for l in open(self.credentials).read().splitlines()
                     if " = " in l)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/auth/v1.0", headers={"X-Storage-User": creds["aws_access_key_id"],
                                                "X-Storage-Pass": creds["aws_secret_access_key"]})
        r = c.getresponse()
        r.read()
        token, url = r.getheader("X-Auth-Token"), r.getheader("X-Storage-Url")
        c.request(method, url.split(str(port), 1)[1] + "/" + path, body=body,
                  headers={"X-Auth-Token": token})
        r = c.getresponse()
        out = r.status, r.read()
        c.close()
        return out

    def destroy(self):
        subprocess.run([S3SH, "destroy"], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def serve_args(swift, url):
    return ["--storage.shards", "main=" + url, "--storage.replicas", "1",
            "--storage.write_quorum", "1", "--storage.s3_credentials_file", swift.credentials,
            "--storage.down_backoff", "200ms", "--log.access=false"]


def corpus():
    rows = [r for r in tf.load_manifest() if r["expected"] == "accept"]
    return [(r["file"], tf.corpus_bytes(r["file"])) for r in rows]


def main():
    if shutil.which("swift-proxy-server") is None or shutil.which("memcached") is None:
        print("skipped: OpenStack Swift or memcached is not installed (scripts/deps.sh)")
        return 77
    c = tf.Checks("test_s3")
    swift = Swift()
    srv = None
    try:
        swift.sh("up")
        url = swift.sh("url") + "/systest"

        # a bucket that does not exist: the service does not become ready, and says why
        bad = tf.Server(serve_args(swift, swift.sh("url") + "-nope"))
        bad.start()
        st, _, body = tf.request(bad, "GET", "/readyz")
        c.eq(st, 503, "readyz with a missing bucket")
        c.check(b"does not exist" in body, "readyz names the missing bucket", body[:200].decode())
        bad.stop()

        srv = tf.Server(serve_args(swift, url))
        srv.start()
        c.check(tf.wait_for(lambda: tf.request(srv, "GET", "/readyz")[0] == 200, 30,
                            "readyz on the bucket"), "readyz on the bucket",
                tf.request(srv, "GET", "/readyz")[2][:200].decode())

        # corpus round trip, byte-exact
        # id -> (sha256 of the stored bytes, delete token, url, variants) of every upload
        # answered 201; what is stored may differ from what was sent (metadata stripped)
        ledger, served = {}, {}
        for name, data in corpus():
            st, _, body, j = tf.upload(srv, data)
            if not c.check(st == 201, "upload " + name, "%s %s" % (st, body[:200])):
                continue
            st, _, got = tf.request(srv, "GET", tf.path_of(j["url"]))
            if c.check(st == 200 and tf.sha256(got) == j["sha256"],
                       "read back %s byte-exact" % name):
                ledger[j["id"]] = (j["sha256"], j["delete_token"], j["url"], j["variants"])
                served[j["id"]] = got
        first = next(iter(ledger))
        _, token, url_, variants = ledger[first]
        data = served[first]
        st, h, got = tf.request(srv, "GET", tf.path_of(url_), headers={"Range": "bytes=10-99"})
        c.check(st == 206 and got == data[10:100], "range 10-99", "%s %d" % (st, len(got)))
        for name, vurl in variants.items():
            st, h, got = tf.request(srv, "GET", tf.path_of(vurl))
            c.check(st == 200 and len(got) > 0, "variant " + name, str(st))

        # delete: gone from the service
        victim = list(ledger)[-1]
        st, _, _ = tf.request(srv, "DELETE", "/api/v1/images/" + victim,
                              headers={"X-Delete-Token": ledger[victim][1]})
        c.check(st in (200, 204), "delete", str(st))
        st, _, _ = tf.request(srv, "GET", tf.path_of(ledger[victim][2]))
        c.eq(st, 404, "deleted image is gone")
        del ledger[victim]

        # Swift stopped: uploads 503 + Retry-After, cached blobs still served
        swift.sh("stop")
        fresh = tf.tiny_png(77, size=9)
        st, h, body, _ = tf.upload(srv, fresh)
        c.eq(st, 503, "upload while the bucket is down", body[:200].decode())
        c.check("retry-after" in {k.lower() for k in h}, "503 has Retry-After")
        st, _, body = tf.request(srv, "GET", "/readyz")
        c.check(st == 503 and b"unreachable" in body, "readyz says the endpoint is unreachable",
                body[:200].decode())
        st, _, got = tf.request(srv, "GET", tf.path_of(url_))
        c.check(st == 200 and got == data, "cached blob served while the bucket is down", str(st))

        # started again: uploads work (once the shard's back-off is over: a state, not a sleep)
        swift.sh("start")

        def upload_ok():
            st, _, _, j = tf.upload(srv, fresh)
            if st == 201:
                ledger[j["id"]] = (j["sha256"], j["delete_token"], j["url"], j["variants"])
            return st == 201

        c.check(tf.wait_for(upload_ok, 30, "an upload after Swift came back"),
                "upload after Swift came back")

        # the drill under load: Swift killed (SIGKILL) and started while an uploader runs;
        # every answer is 201 or 503 + Retry-After, and every 201 is in the ledger
        answers, stop = [], threading.Event()

        def uploader():
            n = 3000
            while not stop.is_set():
                n += 1
                try:
                    st, h, _, j = tf.upload(srv, tf.tiny_png(n, size=5))
                except OSError as e:
                    answers.append(("error", str(e)))
                    continue
                answers.append((st, "retry-after" in {k.lower() for k in h}))
                if st == 201:
                    ledger[j["id"]] = (j["sha256"], j["delete_token"], j["url"], j["variants"])

        t = threading.Thread(target=uploader)
        t.start()
        try:
            tf.wait_for(lambda: sum(a[0] == 201 for a in answers) >= 5, 30, "5 uploads")
            swift.sh("kill")
            tf.wait_for(lambda: sum(a[0] == 503 for a in answers) >= 5, 30, "5 answers 503")
            swift.sh("start")
            n201 = sum(a[0] == 201 for a in answers)
            tf.wait_for(lambda: sum(a[0] == 201 for a in answers) >= n201 + 5, 60,
                        "5 uploads after the restart")
        finally:
            stop.set()
            t.join()
        odd = [a for a in answers if a[0] not in (201, 503) or (a[0] == 503 and not a[1])]
        print("  drill: %d uploads answered 201, %d 503" % (sum(a[0] == 201 for a in answers),
                                                          sum(a[0] == 503 for a in answers)))
        c.check(not odd, "Swift killed and started under load: only 201s and 503s with "
                "Retry-After", str(odd[:5]))
        c.check(sum(a[0] == 503 for a in answers) >= 5 and
                sum(a[0] == 201 for a in answers) >= 10, "uploads fail while Swift is down and "
                "work again after", str(answers[-10:]))

        # nothing acknowledged lost: a restart with an empty local cache reads from the bucket
        srv.terminate()
        shutil.rmtree(os.path.join(srv.data_dir, "blobcache"), ignore_errors=True)
        srv.start()
        lost = [iid for iid, (sha, _, u, _) in ledger.items()
                if tf.sha256(tf.request(srv, "GET", tf.path_of(u))[2]) != sha]
        c.check(not lost, "every upload answered 201 is read back from S3 (%d)" % len(ledger),
                ", ".join(lost[:5]))
        srv.stop()
        srv = None

        # two prefixes as two shards (R=2), no local cache: every read goes to the bucket
        base = swift.sh("url")
        ring = ["--storage.shards", "a=%s/rep-a,b=%s/rep-b" % (base, base),
                "--storage.replicas", "2", "--storage.write_quorum", "2",
                "--storage.s3_credentials_file", swift.credentials]
        srv = tf.Server(ring + ["--storage.cache_bytes", "0", "--log.access=false"])
        srv.start()
        stored = {}
        for n in range(5):
            st, _, _, j = tf.upload(srv, tf.tiny_png(500 + n, size=7))
            if c.check(st == 201, "upload to the two-shard ring"):
                stored[j["sha256"]] = (tf.path_of(j["url"]),
                                       tf.request(srv, "GET", tf.path_of(j["url"]))[2])
        key = next(iter(stored))
        bucket = base.rsplit("/", 1)[1]
        st, _ = swift.swift_api("PUT", "%s/rep-a/%s" % (bucket, key), b"rotten bytes")
        c.check(st == 201, "one copy overwritten with wrong bytes", str(st))
        bad = [k for k, (p, d) in stored.items() if tf.request(srv, "GET", p)[2] != d]
        c.check(not bad, "reads stay correct with a rotten copy (never served)", str(bad))
        r = subprocess.run([tf.tessera_bin(), "repair", "--data-dir", srv.data_dir,
                            "--log.level=warn"] + ring, capture_output=True, text=True,
                           timeout=300)
        out = r.stdout + r.stderr
        c.check(r.returncode == 0 and "1 corrupt rewritten" in out,
                "repair finds the rotten copy in the listing and rewrites it", out[-1200:])
        st, body = swift.swift_api("GET", "%s/rep-a/%s" % (bucket, key))
        c.check(st == 200 and tf.sha256(body) == key, "the copy in the bucket is right again")

        # gc walks the bucket's listing too: an orphan (bytes no image references) goes
        orphan = b"orphan bytes nobody references"
        okey = tf.sha256(orphan)
        swift.swift_api("PUT", "%s/rep-b/%s" % (bucket, okey), orphan)
        # gc compares whole seconds of LastModified with now - grace (0): let the second end
        t_put = time.time()
        tf.wait_for(lambda: time.time() >= int(t_put) + 1.01, 5, "the next second")
        r = subprocess.run([tf.tessera_bin(), "gc", "--apply", "--json", "--data-dir",
                            srv.data_dir, "--storage.repair_grace", "0", "--log.level=warn"] + ring,
                           capture_output=True, text=True, timeout=300)
        c.check(r.returncode == 0 and '"orphans":{"count":1' in r.stdout,
                "gc --apply finds the orphan in the bucket's listing", (r.stdout + r.stderr)[-800:])
        st, _ = swift.swift_api("GET", "%s/rep-b/%s" % (bucket, okey))
        c.eq(st, 404, "the orphan is gone from the bucket")
        bad = [k for k, (p, d) in stored.items() if tf.request(srv, "GET", p)[2] != d]
        c.check(not bad, "every image still reads back after gc", str(bad))
    finally:
        if srv is not None:
            srv.stop()
        swift.destroy()
    c.finish()  # exits


if __name__ == "__main__":
    sys.exit(main())
