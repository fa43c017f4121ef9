#!/usr/bin/env python3
"""Hostile HTTP against `tessera serve` and `tessera storage` (issue 9, "Hostile HTTP").

Each attack must end in a clean 4xx with a JSON error body, or a closed
connection; never a 5xx, never a hang past its bound, never bytes from the
file system. Between attacks another client must get /healthz (the service
keeps answering), and the resident memory (VmRSS) after everything must stay
within a bound of what it was before. Bounded: about a minute per role.

Run: TESSERA_BIN=build/tessera python3 tests/system/test_hostile.py
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_fixture import Checks, free_port, tessera_bin, testdata_dir  # noqa: E402

IDLE_S = 3              # server.idle_timeout for the test: bounds the Content-Length lie
MAX_UPLOAD = 1 << 20    # limits.max_upload_bytes for the test: bounds the endless body
RSS_BOUND_KB = 96 * 1024
SLOWLORIS_CONNS = 60
SLOWLORIS_SECONDS = 10

C = Checks("test_hostile")

# Answers libmicrohttpd makes itself (malformed request line or header, a head
# over twice server.max_header_bytes): a fixed HTML body, then it closes.
MHD_OWN = (400, 431)


# --------------------------------------------------------------------------- processes


class Role:
    """One tessera process (serve or storage) on a free loopback port."""

    def __init__(self, root, name, extra=(), role=None):
        role = role or name
        self.role = role
        self.port = free_port()
        self.data = os.path.join(root, name)
        self.log = os.path.join(root, name + ".log")
        logf = open(self.log, "wb")
        self.p = subprocess.Popen(
            [tessera_bin(), role, "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data,
             "--log.access=false", "--server.idle_timeout=%ds" % IDLE_S,
             "--limits.max_upload_bytes=%d" % MAX_UPLOAD] + list(extra),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("%s exited at start:\n%s" % (role, self.tail()))
            if healthz(self.port, 1.0):
                return
            time.sleep(0.05)
        raise RuntimeError("%s did not start:\n%s" % (role, self.tail()))

    def tail(self, n=30):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def rss_kb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


# --------------------------------------------------------------------------- raw HTTP


def parse_answer(buf):
    """(status, headers dict lowercased, body) of the first answer in buf; status None if none."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n", buf)
    if not m or b"\r\n\r\n" not in buf:
        return None, {}, b""
    head, _, rest = buf.partition(b"\r\n\r\n")
    hdrs = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        hdrs[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    n = int(hdrs.get("content-length", len(rest)))
    return int(m.group(1)), hdrs, rest[:n]


def read_answer(s, timeout):
    """Reads one answer (or until close/timeout). Returns (buf, closed)."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return buf, True
            buf += chunk
            st, hdrs, body = parse_answer(buf)
            if st is not None:
                head_len = buf.index(b"\r\n\r\n") + 4
                if len(buf) - head_len >= int(hdrs.get("content-length", "0")):
                    return buf, False
    except socket.timeout:
        return buf, False
    except OSError:
        return buf, True
    return buf, False


def exchange(port, data, timeout=10, half_close=True):
    """Sends raw bytes (send errors ignored: the server may answer and close first), reads an answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        buf, closed = read_answer(s, timeout)
        return parse_answer(buf) + (closed,)
    finally:
        s.close()


def req(method, path, headers=(), body=b"", cl=True):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1", "Connection: close"]
    lines += list(headers)
    if cl and body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def healthz(port, timeout=3.0):
    try:
        st, _, body, _ = exchange(port, req("GET", "/healthz"), timeout=timeout)
        return st == 200 and json.loads(body).get("status") == "ok"
    except (OSError, ValueError):
        return False


def clean(what, answer, allow_close=True, statuses=None, role=None):
    """The answer is a 4xx with a JSON error body, or (allow_close) a closed connection."""
    st, hdrs, body, closed = answer
    if st is None:
        C.check(allow_close and closed, what + ": closed without an answer", "no answer, still open")
    else:
        ok = 400 <= st < 500 and (statuses is None or st in statuses)
        err = None
        try:
            err = json.loads(body).get("error", {}).get("code")
        except (ValueError, AttributeError):
            pass
        if err is None and st in MHD_OWN and body.startswith(b"<html><head><title>Request"):
            # refused inside libmicrohttpd before tessera sees the request (its fixed
            # HTML answer; docs/security.md, "Known gaps")
            C.check(ok, what + ": %d from libmicrohttpd (connection: %s)"
                    % (st, hdrs.get("connection", "?")))
        else:
            C.check(ok and err is not None
                    and hdrs.get("content-type", "").startswith("application/json"),
                    what + ": %d %s" % (st, err), "body %r" % body[:200])
        C.check(b"root:" not in body, what + ": no file bytes in the answer")
    if role is not None:
        C.check(healthz(role.port), what + ": %s still answers /healthz" % role.role)


# --------------------------------------------------------------------------- attacks


def header_flood(r):
    hs = ["X-Flood-%d: %d" % (i, i) for i in range(3000)]
    clean("header flood (3000 headers)", exchange(r.port, req("GET", "/healthz", hs)), role=r)
    hs = ["X-F: %d" % i for i in range(100)]
    st, _, _, _ = exchange(r.port, req("GET", "/healthz", hs))
    C.eq(st, 200, "100 small headers are fine")


def huge_headers(r):
    clean("one 1 MiB header", exchange(r.port, req("GET", "/healthz", ["X-Big: " + "a" * (1 << 20)])),
          role=r)
    clean("30 KiB header", exchange(r.port, req("GET", "/healthz", ["X-Big: " + "a" * 30000])), role=r)
    clean("8 KiB request target", exchange(r.port, req("GET", "/healthz?" + "a" * 8192)), role=r)
    clean("header line without a colon", exchange(r.port, req("GET", "/healthz", ["NoColonHere"])),
          role=r)


def endless_chunked(r, path, method):
    """Chunks until the server answers or closes; at most 24 MiB or 20 s."""
    s = socket.create_connection(("127.0.0.1", r.port), timeout=10)
    sent = 0
    head = ("%s %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/octet-stream\r\n\r\n" % (method, path)).encode()
    chunk = b"%x\r\n" % 65536 + b"\xff" * 65536 + b"\r\n"
    deadline = time.time() + 20
    try:
        s.sendall(head)
        s.settimeout(5)
        while sent < (24 << 20) and time.time() < deadline:
            s.sendall(chunk)
            sent += 65536
    except OSError:
        pass
    buf, closed = read_answer(s, 5)
    s.close()
    ans = parse_answer(buf) + (closed,)
    clean("endless chunked %s %s (stopped after %d MiB)" % (method, path, sent >> 20), ans,
          statuses={413}, role=r)
    C.check(sent < (24 << 20), "endless chunked %s: the server stopped reading" % path,
            "it took all %d bytes" % sent)


def slowloris(r):
    """SLOWLORIS_CONNS connections each send a byte of a request every 2 s; others are served."""
    socks = []
    stop = time.time() + SLOWLORIS_SECONDS
    for _ in range(SLOWLORIS_CONNS):
        try:
            s = socket.create_connection(("127.0.0.1", r.port), timeout=2)
            s.sendall(b"G")
            socks.append(s)
        except OSError:
            break
    C.check(len(socks) == SLOWLORIS_CONNS, "slowloris: %d connections opened" % len(socks))
    text = b"ET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    i, served, probes, dropped = 0, 0, 0, 0
    while time.time() < stop:
        for s in list(socks):
            try:
                s.sendall(text[i % len(text):i % len(text) + 1])
            except OSError:
                socks.remove(s)
                dropped += 1
        i += 1
        t_end = time.time() + 2
        while time.time() < t_end:
            probes += 1
            served += healthz(r.port, 2.0)
            time.sleep(0.25)
    for s in socks:
        s.close()
    C.check(served == probes, "slowloris: %d/%d /healthz probes answered during it (%d slow "
            "connections dropped by the server)" % (served, probes, dropped))
    C.check(healthz(r.port), "slowloris: %s answers after it" % r.role)


def body_larger_than_announced(r, path, method):
    body = b"\x89PNG\r\n\x1a\n" + b"x" * 4000
    data = req(method, path, ["Content-Length: 10", "Content-Type: application/octet-stream"],
               cl=False).replace(b"Connection: close\r\n", b"") + body
    s = socket.create_connection(("127.0.0.1", r.port), timeout=10)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        buf, closed = read_answer(s, 10)
        first = parse_answer(buf) + (closed,)
        clean("body larger than announced (%s %s): first answer" % (method, path), first)
        # the excess is read as the next request: garbage, so a 400 or a close
        rest, closed2 = b"", closed
        if not closed:
            head_len = buf.index(b"\r\n\r\n") + 4 + int(first[1].get("content-length", "0"))
            more, closed2 = read_answer(s, 10)
            rest = buf[head_len:] + more
        st2 = parse_answer(rest)[0] if rest else None
        C.check(st2 is None or 400 <= st2 < 500,
                "body larger than announced: the excess is not a request (%s)" % (st2 or "closed"))
    finally:
        s.close()
    C.check(healthz(r.port), "body larger than announced: %s still answers" % r.role)


def content_length_lie(r, path, method):
    """Announce 1 MiB, send 10 bytes, go idle: the idle timeout ends it, others are served."""
    s = socket.create_connection(("127.0.0.1", r.port), timeout=10)
    t0 = time.time()
    s.sendall(req(method, path, ["Content-Length: 1000000"], cl=False) + b"0123456789")
    C.check(healthz(r.port), "content-length lie: others served while it idles")
    buf, closed = read_answer(s, IDLE_S + 8)
    took = time.time() - t0
    s.close()
    ans = parse_answer(buf) + (closed,)
    C.check(closed or ans[0] is not None, "content-length lie (%s %s): ended after %.1f s"
            % (method, path, took), "still open after %.1f s" % took)
    if ans[0] is not None:
        clean("content-length lie answer", ans)
    C.check(took < IDLE_S + 6, "content-length lie: ended within the idle timeout + slack")


def smuggling(r, path, method):
    """Ambiguous message lengths (the shapes of request smuggling) straight to a service: 400,
    the connection closed (where a next request would start is unknown), nothing smuggled."""
    inner = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    shapes = {
        "two different Content-Length": ["Content-Length: 5", "Content-Length: %d" % (5 + len(inner))],
        "two equal Content-Length": ["Content-Length: 5", "Content-Length: 5"],
        "Content-Length and Transfer-Encoding": ["Content-Length: 5",
                                                 "Transfer-Encoding: chunked"],
        "Transfer-Encoding and Content-Length": ["Transfer-Encoding: chunked",
                                                 "Content-Length: 5"],
    }
    # refused by libmicrohttpd itself while it parses the headers (its own HTML 400, not ours)
    mhd = {
        "Content-Length with a sign": ["Content-Length: +5"],
        "Content-Length list": ["Content-Length: 5, 5"],
    }
    shapes.update(mhd)
    for what, hdrs in shapes.items():
        # keep-alive (no Connection: close): the server itself must end the connection
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n\r\n" % (method, path,
                                                                   "\r\n".join(hdrs))
        sock = socket.create_connection(("127.0.0.1", r.port), timeout=10)
        try:
            sock.sendall(head.encode("latin-1") + b"0\r\n\r\n" + inner)
            buf, closed = read_answer(sock, 10)
            st, _, body = parse_answer(buf)
            rest, closed = (b"", True) if closed else read_answer(sock, 5)
        finally:
            sock.close()
        C.eq(st, 400, "%s (%s %s): 400" % (what, method, path))
        if what not in mhd:
            C.check(b'"bad_request"' in body, "%s: the JSON error" % what, repr(body[:200]))
        C.check(closed, "%s: the server closes the connection after the answer" % what)
        C.check(b"HTTP/1.1 200" not in buf + rest,
                "%s: nothing after the body was taken as a request" % what, repr(rest[:200]))
    C.check(healthz(r.port), "smuggling shapes: the service still answers")


def traversal(r, paths):
    for method, p in paths:
        ans = exchange(r.port, req(method, p))
        clean("traversal %s %r" % (method, p), ans)
    C.check(healthz(r.port), "traversal: %s still answers" % r.role)


def bad_bytes(r, paths):
    for method, p in paths:
        ans = exchange(r.port, req(method, p.decode("latin-1") if isinstance(p, bytes) else p))
        clean("bad bytes %s %r" % (method, p), ans)
    C.check(healthz(r.port), "bad bytes: %s still answers" % r.role)


def wrong_methods(r, cases):
    for method, p, want in cases:
        st, hdrs, body, closed = exchange(r.port, req(method, p))
        clean("method %s %s" % (method, p), (st, hdrs, body, closed), allow_close=False,
              statuses={want} if want else None)
        if st == 405:
            C.check(hdrs.get("allow", "") != "", "method %s %s: Allow header (%s)"
                    % (method, p, hdrs.get("allow")))


def absurd_params(r, paths):
    for p in paths:
        clean("params %r" % p, exchange(r.port, req("GET", p)), allow_close=False)
    C.check(healthz(r.port), "absurd params: %s still answers" % r.role)


# --------------------------------------------------------------------------- roles


def upload_one(r):
    png = open(os.path.join(testdata_dir(), "accept_png_tiny_1x1.png"), "rb").read()
    st, _, body, _ = exchange(r.port, req("POST", "/api/v1/images",
                                          ["Content-Type: image/png"], png))
    C.eq(st, 201, "serve: a real upload works")
    return json.loads(body)["id"] if st == 201 else "AAAAAAAAAAAAAAAA"


def attack_serve(root):
    r = Role(root, "serve")
    try:
        img = upload_one(r)
        rss0 = r.rss_kb()
        C.run(header_flood, r)
        C.run(huge_headers, r)
        C.run(endless_chunked, r, "/api/v1/images", "POST")
        C.run(endless_chunked, r, "/api/v1/images/" + img, "GET")
        C.run(body_larger_than_announced, r, "/api/v1/images", "POST")
        C.run(content_length_lie, r, "/api/v1/images", "POST")
        C.run(smuggling, r, "/api/v1/images", "POST")
        C.run(traversal, r, [
            ("GET", "/i/../../etc/passwd"), ("GET", "/i/%2e%2e/%2e%2e/etc/passwd"),
            ("GET", "/i/..%2f..%2f..%2fetc%2fpasswd"), ("GET", "/i/%2e%2e%2f%2e%2e%2fmeta.db"),
            ("GET", "/i/..%5c..%5cmeta.db"), ("GET", "/i/" + img + "/..%2f..%2fmeta.db"),
            ("GET", "/i/" + img + "/../../meta.db"), ("GET", "/i/%2fetc%2fpasswd"),
            ("GET", "/api/v1/images/..%2f..%2fmeta.db"), ("GET", "/api/v1/images/../../etc/passwd"),
            ("DELETE", "/api/v1/images/..%2f" + img), ("GET", "/i/" + img + ".jpg/../../x"),
            ("GET", "/i/....//....//etc/passwd"), ("GET", "//etc/passwd"), ("GET", "/../etc/passwd"),
        ])
        C.run(bad_bytes, r, [
            ("GET", "/i/%ff%fe%fd"), ("GET", "/i/%00" + img), ("GET", "/i/" + img + "%00.png"),
            ("GET", "/i/" + img + ".%ff"), ("GET", "/i/" + img + ".%00"),
            ("GET", "/i/" + img + "/thumb.%ff%fe"), ("GET", "/i/" + img + "/%ff.webp"),
            ("GET", b"/i/\xff\xfe\xfd"), ("GET", "/api/v1/images?limit=%00"),
            ("GET", "/api/v1/images?cursor=%ff%00%fe"), ("GET", "/api/v1/images/%c0%af%c0%af"),
            ("DELETE", "/api/v1/images/" + img + "%00"),
        ])
        C.run(bad_json_fields, r, img)
        C.run(wrong_methods, r, [
            ("PATCH", "/api/v1/images", 405), ("PUT", "/i/" + img, 405), ("DELETE", "/healthz", 405),
            ("POST", "/i/" + img + ".png", 405), ("TRACE", "/api/v1/images", None),
            ("BREW", "/api/v1/images", None), ("OPTIONS", "/api/v1/images/" + img, None),
        ])
        C.run(absurd_params, r, [
            "/api/v1/images?limit=0", "/api/v1/images?limit=-1", "/api/v1/images?limit=1000000000",
            "/api/v1/images?limit=99999999999999999999999", "/api/v1/images?limit=10abc",
            "/api/v1/images?limit=", "/api/v1/images?limit=%205", "/api/v1/images?limit=0x10",
            "/api/v1/images?cursor=", "/api/v1/images?cursor=c1AAAAAAAAAAAAAAAA",
            "/api/v1/images?cursor=" + "c1" + "A" * 2000, "/api/v1/images?cursor=../../etc/passwd",
            "/api/v1/images?limit=5&cursor=%ff",
        ])
        C.run(slowloris, r)
        rss1 = r.rss_kb()
        C.check(rss1 - rss0 < RSS_BOUND_KB, "serve: VmRSS %d -> %d kB (bound +%d kB)"
                % (rss0, rss1, RSS_BOUND_KB))
        C.check(r.p.poll() is None, "serve: still running", r.tail())
    finally:
        r.stop()


def bad_json_fields(r, img):
    """Invalid UTF-8 and NULs in what becomes JSON: multipart field and file names, tokens."""
    png = open(os.path.join(testdata_dir(), "accept_png_tiny_1x1.png"), "rb").read()
    b = b"hostileB0undary"
    body = (b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe\x00.png"'
            b"\r\nContent-Type: image/png\r\n\r\n" + png + b"\r\n--" + b + b"--\r\n")
    st, _, out, _ = exchange(r.port, req("POST", "/api/v1/images",
                                         ["Content-Type: multipart/form-data; boundary=hostileB0undary"],
                                         body))
    C.check(st == 201 or (st is not None and 400 <= st < 500),
            "upload with an invalid UTF-8/NUL file name: %s" % st, repr(out[:200]))
    if st == 201:
        C.check(json.loads(out)["id"] != "", "its answer is JSON")
    body2 = body.replace(b'name="file"', b'name="\xff\x00"')
    clean("multipart with an invalid UTF-8 part name",
          exchange(r.port, req("POST", "/api/v1/images",
                               ["Content-Type: multipart/form-data; boundary=hostileB0undary"], body2)))
    clean("delete with an invalid UTF-8 token",
          exchange(r.port, req("DELETE", "/api/v1/images/" + img, ["X-Delete-Token: \xff\xfe"])),
          statuses={403})
    clean("delete with a bad bearer key",
          exchange(r.port, req("DELETE", "/api/v1/images/" + img, ["Authorization: Bearer \xff"])),
          statuses={401, 403})


def attack_storage(root):
    r = Role(root, "storage")
    key = "a" * 64
    try:
        rss0 = r.rss_kb()
        C.run(header_flood, r)
        C.run(huge_headers, r)
        C.run(endless_chunked, r, "/blobs/" + key, "PUT")
        C.run(body_larger_than_announced, r, "/blobs/" + key, "PUT")
        C.run(content_length_lie, r, "/blobs/" + key, "PUT")
        C.run(smuggling, r, "/blobs/" + key, "PUT")
        C.run(traversal, r, [
            ("GET", "/blobs/../x"), ("GET", "/blobs/..%2f..%2fmeta.db"), ("PUT", "/blobs/..%2fx"),
            ("DELETE", "/blobs/..%2f..%2f" + key), ("GET", "/blobs/%2e%2e"), ("GET", "/blobs/."),
            ("GET", "/blobs/" + key[:62] + "/."), ("GET", "/blobs/" + key + "/../../etc/passwd"),
            ("GET", "/blobs?after=../../etc/passwd"), ("GET", "/blobs?after=%2e%2e%2f" + key[:61]),
            ("DELETE", "/blobs/" + key.upper()),
        ])
        C.run(bad_bytes, r, [
            ("GET", "/blobs/%ff%fe"), ("GET", "/blobs/" + key + "%00"), ("GET", b"/blobs/\xff\x80"),
            ("GET", "/blobs?after=%00"), ("GET", "/blobs?limit=%ff"),
        ])
        C.run(wrong_methods, r, [
            ("POST", "/blobs/" + key, 405), ("PATCH", "/blobs", 405), ("PUT", "/blobs", 405),
            ("DELETE", "/blobs", 405), ("BREW", "/blobs", None),
        ])
        C.run(absurd_params, r, [
            "/blobs?limit=0", "/blobs?limit=-1", "/blobs?limit=10001", "/blobs?limit=18446744073709551617",
            "/blobs?limit=%205", "/blobs?limit=+5", "/blobs?limit=", "/blobs?after=" + "a" * 63,
            "/blobs?after=" + "g" * 64,
        ])
        C.run(slowloris, r)
        rss1 = r.rss_kb()
        C.check(rss1 - rss0 < RSS_BOUND_KB, "storage: VmRSS %d -> %d kB (bound +%d kB)"
                % (rss0, rss1, RSS_BOUND_KB))
        C.check(r.p.poll() is None, "storage: still running", r.tail())
    finally:
        r.stop()


def upload_rate(root):
    """limits.upload_rate: 429 + Retry-After per client address; X-Forwarded-For only from a
    trusted proxy (here 127.0.0.1 is trusted, so each forwarded address has its own bucket)."""
    png = open(os.path.join(testdata_dir(), "accept_png_tiny_1x1.png"), "rb").read()
    r = Role(root, "serve-rl", ["--limits.upload_rate=6", "--limits.upload_burst=2"], role="serve")
    try:
        def up(extra=()):
            return exchange(r.port, req("POST", "/api/v1/images",
                                        ["Content-Type: image/png"] + list(extra), png))
        C.eq([up()[0] for _ in range(2)], [201, 201], "rate: the burst of 2 uploads passes")
        st, hdrs, body, _ = up(["X-Forwarded-For: 9.9.9.9"])
        clean("rate: third upload (X-Forwarded-For from an untrusted peer ignored)",
              (st, hdrs, body, False), allow_close=False, statuses={429})
        ra = hdrs.get("retry-after", "")
        C.check(ra.isdigit() and 1 <= int(ra) <= 10, "rate: Retry-After %r (1..10 s)" % ra)
        C.check(healthz(r.port), "rate: reads are not limited")
    finally:
        r.stop()
    r = Role(root, "serve-rl2", ["--limits.upload_rate=6", "--limits.upload_burst=1",
                                 "--server.trusted_proxies=127.0.0.1"], role="serve")
    try:
        def up2(xff):
            return exchange(r.port, req("POST", "/api/v1/images",
                                        ["Content-Type: image/png", "X-Forwarded-For: " + xff],
                                        png))[0]
        C.eq([up2("1.1.1.1"), up2("6.6.6.6, 2.2.2.2"), up2("1.1.1.1")], [201, 201, 429],
             "rate: behind a trusted proxy each client address has its own bucket")
    finally:
        r.stop()


def main():
    root = tempfile.mkdtemp(prefix="tessera-hostile-")
    try:
        attack_serve(root)
        attack_storage(root)
        C.run(upload_rate, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    C.finish()


if __name__ == "__main__":
    main()
