#!/usr/bin/python3
"""System test of the HTTP core of `tessera serve`: the built-in routes, JSON
errors, request ids, keep-alive, the idle limit against slow clients and a
clean SIGTERM.

Runs the real binary ($TESSERA_BIN) on a free loopback port with a temporary
data directory; every server started here is killed in a finally block.
Python 3 standard library only. Exits non-zero on any failure.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

BIN = os.environ.get("TESSERA_BIN", "")
HOST = "127.0.0.1"
IDLE_S = 2  # --server.idle_timeout given to the server
DRAIN_S = 60  # --server.shutdown_timeout given to the servers of ShutdownTest
EXIT_S = 30  # they must exit well before it: a bound for a busy machine (the time is printed)
RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_started = []  # every server process this file started, killed at exit whatever happens


def say(msg):
    print("  - " + msg, flush=True)


def free_port():
    """A loopback port nobody listens on right now (the server is told it explicitly:
    with port 0 it would not report which one it got)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def clean_env():
    """The environment without TESSERA_* settings that could change the server's config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}


class Server:
    """One `tessera serve` process with its own data directory and log file."""

    def __init__(self, *extra):
        self.dir = tempfile.mkdtemp(prefix="tessera-http-core-")
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "server.log")
        self.log = open(self.log_path, "wb")
        args = [BIN, "serve", "--listen", "%s:%d" % (HOST, self.port),
                "--data-dir", os.path.join(self.dir, "data"),
                "--server.idle_timeout=%ds" % IDLE_S] + list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=clean_env())
        _started.append(self)

    def wait_healthy(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("server exited with %s before answering:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=1)
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
                last = "status %d" % r.status
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise AssertionError("no /healthz within %.0f s (%s):\n%s" % (timeout, last, self.log_tail()))

    def log_tail(self, n=30):
        self.log.flush()
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def kill(self):
        """Stops the process (SIGKILL if it lingers) and removes its directory; idempotent."""
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            if not self.log.closed:
                self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            if self in _started:
                _started.remove(self)


def request(port, method, target, headers=None, body=None, timeout=5):
    """One request on a fresh connection: (status, headers dict lowercased, body bytes)."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, target, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def raw_connect(port, timeout=5):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_response(sock, method="GET"):
    """Parses one response from a raw socket with http.client."""
    r = http.client.HTTPResponse(sock, method=method)
    r.begin()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def wait_closed(sock, limit):
    """Seconds until the peer closes sock (EOF or reset), or None if still open after limit."""
    start = time.monotonic()
    while True:
        left = limit - (time.monotonic() - start)
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if data == b"":
            return time.monotonic() - start
        # some bytes (an error answer before closing) are fine: keep reading to the close


def wait_inflight(port, n, timeout=30.0):
    """Waits until the tessera_http_inflight gauge reaches n."""
    def reached():
        _, _, body = request(port, "GET", "/metrics")
        m = re.search(r"^tessera_http_inflight (\d+)", body.decode("utf-8"), re.M)
        return m is not None and int(m.group(1)) >= n
    if not tf.wait_for(reached, timeout, "tessera_http_inflight to reach %d" % n):
        raise AssertionError("tessera_http_inflight did not reach %d" % n)


def wait_refused(port, timeout):
    """True once a connection to port is refused (the server stopped listening)."""
    def refused():
        try:
            socket.create_connection((HOST, port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        return False
    return tf.wait_for(refused, timeout, "port %d to refuse connections" % port)


class ErrorJson:
    """Assertions on API.md's error body."""

    def assertJsonError(self, headers, body, code):
        self.assertTrue(headers.get("content-type", "").startswith("application/json"),
                        "Content-Type is %r" % headers.get("content-type"))
        doc = json.loads(body.decode("utf-8"))
        self.assertIsInstance(doc, dict)
        self.assertIn("error", doc)
        self.assertEqual(doc["error"].get("code"), code, doc)
        self.assertIsInstance(doc["error"].get("message"), str, doc)
        self.assertTrue(doc["error"]["message"], doc)
        return doc


class HttpCoreTest(unittest.TestCase, ErrorJson):
    """Checks against one server started for the whole class."""

    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = Server()
        try:
            cls.srv.wait_healthy()
        except BaseException:
            cls.srv.kill()
            raise
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        if cls.srv is not None:
            cls.srv.kill()

    def test_healthz(self):
        say("GET /healthz answers 200 {\"status\":\"ok\"} as JSON")
        st, h, body = request(self.port, "GET", "/healthz")
        self.assertEqual(st, 200)
        self.assertTrue(h.get("content-type", "").startswith("application/json"))
        self.assertEqual(json.loads(body), {"status": "ok"})

    def test_healthz_head(self):
        say("HEAD /healthz answers 200 with no body (GET implies HEAD)")
        st, _, body = request(self.port, "HEAD", "/healthz")
        self.assertEqual(st, 200)
        self.assertEqual(body, b"")

    def test_healthz_query_ignored(self):
        say("GET /healthz?x=1 routes on the path alone")
        st, _, _ = request(self.port, "GET", "/healthz?x=1")
        self.assertEqual(st, 200)

    def test_readyz(self):
        say("GET /readyz answers 200 (the embedded stores are ready)")
        st, h, body = request(self.port, "GET", "/readyz")
        self.assertEqual(st, 200)
        self.assertTrue(h.get("content-type", "").startswith("application/json"))
        json.loads(body)

    def test_metrics(self):
        say("GET /metrics answers 200 Prometheus text with tessera_http_requests_total")
        request(self.port, "GET", "/healthz")
        st, h, body = request(self.port, "GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h.get("content-type", "").startswith("text/plain"), h)
        text = body.decode("utf-8")
        self.assertIn("tessera_http_requests_total", text)
        self.assertRegex(text, r'tessera_http_requests_total\{[^}]*route="healthz"[^}]*\} [1-9]')

    def test_unknown_path_404(self):
        say("GET /no/such/path answers 404 with the JSON error not_found")
        st, h, body = request(self.port, "GET", "/no/such/path")
        self.assertEqual(st, 404)
        self.assertJsonError(h, body, "not_found")

    def test_post_healthz_405(self):
        say("POST /healthz answers 405, Allow lists GET, JSON error method_not_allowed")
        st, h, body = request(self.port, "POST", "/healthz", body=b"x",
                              headers={"Content-Type": "text/plain"})
        self.assertEqual(st, 405)
        allow = [m.strip() for m in h.get("allow", "").split(",")]
        self.assertIn("GET", allow)
        self.assertNotIn("POST", allow)
        self.assertJsonError(h, body, "method_not_allowed")

    def test_uri_too_long_414(self):
        say("a request target of 10000 bytes answers 414 with a JSON error")
        st, h, body = request(self.port, "GET", "/" + "a" * 9999)
        self.assertEqual(st, 414)
        if body:
            self.assertJsonError(h, body, "uri_too_long")
        say("...and the server still answers afterwards")
        self.assertEqual(request(self.port, "GET", "/healthz")[0], 200)

    def test_uri_beyond_header_memory_414(self):
        say("a request target of 40000 bytes (over max_header_bytes) answers 414")
        st, _, _ = request(self.port, "GET", "/" + "a" * 39999)
        self.assertEqual(st, 414)

    def test_uri_beyond_header_memory_json(self):
        """A head over server.max_header_bytes still gets JSON (API.md: every error), up to
        the ~32 KiB that libmicrohttpd reads before answering by itself in HTML."""
        say("the 414 for a 30000-byte target has a JSON body")
        st, h, body = request(self.port, "GET", "/" + "a" * 29999)
        self.assertEqual(st, 414)
        self.assertJsonError(h, body, "uri_too_long")

    def test_request_id_echoed(self):
        say("a valid client X-Request-Id is echoed")
        for rid in ("tessera-test.rid_1", "A", "x" * 64):
            st, h, _ = request(self.port, "GET", "/healthz", headers={"X-Request-Id": rid})
            self.assertEqual(st, 200)
            self.assertEqual(h.get("x-request-id"), rid)
        say("...also on an error answer")
        st, h, _ = request(self.port, "GET", "/nope", headers={"X-Request-Id": "err-rid-1"})
        self.assertEqual(st, 404)
        self.assertEqual(h.get("x-request-id"), "err-rid-1")

    def test_request_id_generated(self):
        say("without X-Request-Id the server makes one, different per request")
        ids = set()
        for _ in range(3):
            st, h, _ = request(self.port, "GET", "/healthz")
            self.assertEqual(st, 200)
            rid = h.get("x-request-id", "")
            self.assertRegex(rid, RID_RE)
            ids.add(rid)
        self.assertEqual(len(ids), 3)

    def test_request_id_invalid_replaced(self):
        say("an invalid X-Request-Id (spaces, 100 chars, odd characters) is replaced")
        for bad in ("has space", "y" * 100, "x" * 65, "semi;colon", "a/b"):
            st, h, _ = request(self.port, "GET", "/healthz", headers={"X-Request-Id": bad})
            self.assertEqual(st, 200)
            rid = h.get("x-request-id", "")
            self.assertNotEqual(rid, bad)
            self.assertRegex(rid, RID_RE)

    def test_keep_alive(self):
        say("two requests on one connection both succeed, on the same socket")
        c = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            c.request("GET", "/healthz")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertNotEqual((r.getheader("Connection") or "").lower(), "close")
            r.read()
            sock = c.sock
            self.assertIsNotNone(sock)
            local = sock.getsockname()
            c.request("GET", "/readyz")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
            self.assertIs(c.sock, sock)
            self.assertEqual(c.sock.getsockname(), local)
            say("...and an error answer (404) keeps the connection too")
            c.request("GET", "/nope")
            r = c.getresponse()
            self.assertEqual(r.status, 404)
            r.read()
            c.request("GET", "/healthz")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
            self.assertIs(c.sock, sock)
        finally:
            c.close()

    def test_slow_client(self):
        say("a client that never finishes its headers does not block others "
            "and is closed after the idle limit")
        slow = raw_connect(self.port)
        try:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            say("...the unfinished connection stays open for a while")
            self.assertIsNone(wait_closed(slow, 0.5), "closed at once, not after the idle limit")
            say("...meanwhile another client's /healthz answers")
            st, _, _ = request(self.port, "GET", "/healthz", timeout=5)
            self.assertEqual(st, 200)
            say("...and the server closes the slow one after ~%d s (waiting up to 6 s)" % IDLE_S)
            closed = wait_closed(slow, 6.0 - (time.monotonic() - t0))
            self.assertIsNotNone(closed, "slow connection still open after 6 s")
            elapsed = time.monotonic() - t0
            self.assertGreaterEqual(elapsed, IDLE_S - 0.5)
        finally:
            slow.close()
        self.assertEqual(request(self.port, "GET", "/healthz")[0], 200)

    def test_idle_keep_alive_closed(self):
        say("an idle keep-alive connection is closed after the idle limit")
        s = raw_connect(self.port)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            st, _, body = read_response(s)
            self.assertEqual(st, 200)
            self.assertEqual(json.loads(body), {"status": "ok"})
            closed = wait_closed(s, 6.0)
            self.assertIsNotNone(closed, "idle connection still open after 6 s")
            self.assertGreaterEqual(closed, IDLE_S - 0.5)
        finally:
            s.close()

    def test_body_over_64k_on_bodyless_route(self):
        """A body over 64 KiB sent to a route that takes none (GET /healthz, POST
        /healthz, an unknown path) gets a 4xx JSON error, then the connection may close."""
        say("a 100 KB body to /healthz gets a 4xx JSON error, not a bare close")
        body = b"z" * (100 * 1024)
        for method, path in (("GET", "/healthz"), ("POST", "/healthz"), ("POST", "/nope")):
            s = raw_connect(self.port)
            try:
                head = ("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                        "Content-Type: application/octet-stream\r\n\r\n" % (method, path, len(body)))
                try:
                    s.sendall(head.encode() + body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server may stop reading once it has answered
                st, h, data = read_response(s)
                self.assertTrue(400 <= st < 500, "%s %s: status %d" % (method, path, st))
                self.assertJsonError(h, data, json.loads(data)["error"]["code"])
            finally:
                s.close()


class ShutdownTest(unittest.TestCase):
    """Each check starts its own server, since it ends it."""

    def exits(self, srv):
        """The exit status of srv within EXIT_S s; prints how long it took."""
        t0 = time.monotonic()
        rc = srv.proc.wait(timeout=EXIT_S)
        say("...exit %d after %.2f s" % (rc, time.monotonic() - t0))
        return rc

    def test_sigterm_exits_zero(self):
        say("SIGTERM on an idle server: exit code 0 within %d s (drain limit %d s)"
            % (EXIT_S, DRAIN_S))
        srv = Server("--server.shutdown_timeout=%ds" % DRAIN_S)
        try:
            srv.wait_healthy()
            srv.proc.send_signal(signal.SIGTERM)
            rc = self.exits(srv)
            self.assertEqual(rc, 0, srv.log_tail())
        finally:
            srv.kill()

    def test_sigint_exits_zero(self):
        say("SIGINT (Ctrl-C) on an idle server: exit code 0 within %d s (drain limit %d s)"
            % (EXIT_S, DRAIN_S))
        srv = Server("--server.shutdown_timeout=%ds" % DRAIN_S)
        try:
            srv.wait_healthy()
            srv.proc.send_signal(signal.SIGINT)
            rc = self.exits(srv)
            self.assertEqual(rc, 0, srv.log_tail())
        finally:
            srv.kill()

    def test_sigterm_lets_request_in_flight_finish(self):
        say("SIGTERM while a request is in flight: it is answered, then exit 0")
        srv = Server("--server.shutdown_timeout=%ds" % DRAIN_S)
        s = None
        try:
            srv.wait_healthy()
            s = raw_connect(srv.port)
            # the request is routed once its headers are in; its body is still to come
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            wait_inflight(srv.port, 2)  # ours and the /metrics request asking
            srv.proc.send_signal(signal.SIGTERM)
            say("...no new connection is accepted while it drains")
            self.assertTrue(wait_refused(srv.port, EXIT_S),
                            "still accepting %d s after SIGTERM" % EXIT_S)
            self.assertIsNone(srv.proc.poll(), "exited with a request in flight:\n" + srv.log_tail())
            say("...the request in flight completes with 200")
            s.sendall(b"hello")
            st, _, body = read_response(s)
            self.assertEqual(st, 200)
            self.assertEqual(json.loads(body), {"status": "ok"})
            rc = self.exits(srv)
            self.assertEqual(rc, 0, srv.log_tail())
        finally:
            if s is not None:
                s.close()
            srv.kill()


def main():
    if not BIN or not os.access(BIN, os.X_OK):
        print("TESSERA_BIN must name the tessera binary (got %r)" % BIN, file=sys.stderr)
        return 2
    print("tessera http core system test: %s" % BIN, flush=True)
    try:
        prog = unittest.main(exit=False, verbosity=2)
        return 0 if prog.result.wasSuccessful() else 1
    finally:
        for srv in list(_started):
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())
