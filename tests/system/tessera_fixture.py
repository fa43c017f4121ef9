"""Shared helpers for Tessera's black-box system tests (Python 3 stdlib only).

- Server: start/stop a `tessera serve` on a free 127.0.0.1 port with a temporary data
  dir; stopped in a finally/atexit, killed when it does not stop in time.
- request()/raw_request(): HTTP helpers returning (status, headers, body).
- multipart(): encode a multipart/form-data body.
- load_manifest(): the image corpus manifest (manifest.tsv) as a list of dicts.
- Checks: prints one line per check, remembers failures, exits non-zero at the end.
- wait_for(): poll a state with a generous bound instead of sleeping a guessed time.
- exif_tags(), webp_info(), ppm helpers used by several tests.
"""
import atexit
import base64
import hashlib
import hmac
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
import threading
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def tessera_bin():
    b = os.environ.get("TESSERA_BIN")
    if b:
        return b
    for cand in ("build-sys/tessera", "build/tessera"):
        p = os.path.join(REPO, cand)
        if os.path.exists(p):
            return p
    raise RuntimeError("TESSERA_BIN is not set and no built tessera binary was found")


def testdata_dir():
    d = os.environ.get("TESSERA_TESTDATA")
    if d:
        return d
    return os.path.join(REPO, "..", "shared", "testdata", "images")


# --------------------------------------------------------------------------- checks


class Checks:
    """Soft assertions: one printed line per check; failures are collected."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failures = []
        self._lock = threading.Lock()

    def check(self, cond, what, detail=""):
        with self._lock:
            if cond:
                self.passed += 1
                print("ok   %s" % what, flush=True)
            else:
                self.failures.append((what, detail))
                print("FAIL %s%s" % (what, (": " + detail) if detail else ""), flush=True)
        return bool(cond)

    def eq(self, actual, expected, what, ctx=""):
        return self.check(actual == expected, what,
                          "expected %r, got %r%s" % (expected, actual, (" (" + ctx + ")") if ctx else ""))

    def run(self, fn, *args):
        """Runs one test function; an exception counts as a failure of that test."""
        print("---- %s" % fn.__name__, flush=True)
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - report and carry on
            tb = traceback.format_exc()
            self.check(False, "%s raised %s" % (fn.__name__, type(e).__name__), "%s\n%s" % (e, tb))

    def finish(self):
        print("==== %s: %d checks passed, %d failed" % (self.name, self.passed, len(self.failures)),
              flush=True)
        for what, detail in self.failures:
            print("FAILURE %s%s" % (what, (": " + detail) if detail else ""), flush=True)
        stop_all_servers()
        sys.exit(1 if self.failures else 0)


# --------------------------------------------------------------------------- waiting


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() every interval s until it returns a true value, and returns that value.

    A test waits on a state, never on a guessed time: timeout is a generous upper bound
    (30-60 s) for a busy machine, not the expected time. After timeout s it prints what was
    awaited and returns the last (false) value, so the caller's check fails with its message.
    """
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if not v:
        print("  gave up after %.0f s waiting for %s" % (timeout, what), flush=True)
    return v


# --------------------------------------------------------------------------- server


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_servers = []
_servers_lock = threading.Lock()


def stop_all_servers():
    with _servers_lock:
        servers = list(_servers)
    for s in servers:
        try:
            s.stop()
        except Exception:  # noqa: BLE001
            pass


atexit.register(stop_all_servers)


class Server:
    """One `tessera serve` process (or another role: command "read", "write").

    data_dir: reuse a directory (restart after a crash); default: a new temp dir
    owned (and removed) by this object.
    """

    def __init__(self, args=(), data_dir=None, port=None, command="serve"):
        self.command = command
        self.args = list(args)
        self.owns_dir = data_dir is None
        self.root = tempfile.mkdtemp(prefix="tessera-systest-")
        self.data_dir = data_dir or os.path.join(self.root, "data")
        self.port = port
        self.proc = None
        self.log_path = None
        self._log = None
        self._nstart = 0
        with _servers_lock:
            _servers.append(self)

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=20):
        if self.port is None:
            self.port = free_port()
        self._nstart += 1
        self.log_path = os.path.join(self.root, "server-%d.log" % self._nstart)
        self._log = open(self.log_path, "wb")
        cmd = [tessera_bin(), self.command, "--listen", "127.0.0.1:%d" % self.port,
               "--data-dir", self.data_dir] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tessera exited with %s at start; log:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                st, _, _ = request(self, "GET", "/healthz", timeout=2)
                if st == 200:
                    return self
                last = st
            except OSError as e:
                last = e
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("tessera did not answer /healthz within %ss (last: %r); log:\n%s"
                           % (timeout, last, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def death_note(self):
        """Why the process is gone: exit status and what the log says (empty while it runs)."""
        if self.proc is None or self.proc.poll() is None:
            return ""
        rc = self.proc.returncode
        how = ("killed by signal %d" % -rc) if rc < 0 else ("exited with status %d" % rc)
        tail = self.log_tail(15)
        if "Terminated: stopping" in tail or "Interrupt: stopping" in tail:
            how += " after a SIGTERM/SIGINT this test did not send (something outside killed it)"
        return "tessera (pid %d) %s; log tail:\n%s" % (self.proc.pid, how, tail)

    def kill(self):
        """SIGKILL, no cleanup (crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def terminate(self, timeout=15):
        """SIGTERM, then SIGKILL when it does not stop within timeout."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self):
        self.terminate()
        with _servers_lock:
            if self in _servers:
                _servers.remove(self)
        if os.environ.get("TESSERA_KEEP_TMP"):
            print("(kept %s)" % self.root)
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, path):
        return self.base + path

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- HTTP


def _split(target, path):
    """target: a Server or a base URL string; path may be a full URL."""
    if path.startswith("http://"):
        m = re.match(r"http://([^/:]+):(\d+)(/.*)?$", path)
        return m.group(1), int(m.group(2)), m.group(3) or "/"
    if isinstance(target, Server):
        return "127.0.0.1", target.port, path
    m = re.match(r"http://([^/:]+):(\d+)", target)
    return m.group(1), int(m.group(2)), path


def request(target, method, path, body=None, headers=None, timeout=30):
    """One request on a fresh connection. Returns (status, headers, body bytes).

    headers is an http.client.HTTPMessage: case-insensitive .get(name)."""
    host, port, p = _split(target, path)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None and not any(k.lower() == "content-length" for k in hdrs):
            hdrs["Content-Length"] = str(len(body))
        conn.request(method, p, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.msg, data
    except (ConnectionError, http.client.HTTPException) as e:
        if isinstance(target, Server) and target.proc is not None:
            time.sleep(0.2)
            note = target.death_note()
            if note:
                raise ServerDied("%s %s: %r; %s" % (method, p, e, note)) from e
        raise
    finally:
        conn.close()


class ServerDied(ConnectionError):
    """A request failed because the tessera process is gone."""


class RawHeaders(dict):
    def get(self, k, default=None):
        return dict.get(self, k.lower(), default)


def raw_request(target, method, path, body=b"", headers=None, timeout=30, content_length=True):
    """Sends the request on a raw socket, ignoring send errors (the server may answer
    and close before reading the whole body), then reads the answer.
    Returns (status, headers, body); status None when no answer arrived."""
    host, port, p = _split(target, path)
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        lines = ["%s %s HTTP/1.1" % (method, p), "Host: %s:%d" % (host, port),
                 "Connection: close"]
        hdrs = dict(headers or {})
        if content_length and not any(k.lower() == "content-length" for k in hdrs):
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            lines.append("%s: %s" % (k, v))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            s.sendall(head)
            view = memoryview(body)
            off = 0
            while off < len(body):
                n = s.send(view[off:off + 65536])
                off += n
        except OSError:
            pass
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        buf = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                # stop once a complete answer is in (HEAD: read until the server closes)
                if method != "HEAD" and b"\r\n\r\n" in buf:
                    hdr, _, rest = buf.partition(b"\r\n\r\n")
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", hdr)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except OSError:
            pass
    finally:
        s.close()
    if b"\r\n\r\n" not in buf:
        return None, RawHeaders(), buf
    hdr, _, rest = buf.partition(b"\r\n\r\n")
    hl = hdr.decode("latin-1").split("\r\n")
    status = int(hl[0].split()[1])
    h = RawHeaders()
    for line in hl[1:]:
        k, _, v = line.partition(":")
        h[k.strip().lower()] = v.strip()
    m = h.get("content-length")
    if m is not None and method != "HEAD":
        rest = rest[:int(m)]
    return status, h, rest


def multipart(parts, boundary=None):
    """parts: list of (name, filename or None, content_type or None, bytes).
    Returns (body, content_type header value)."""
    boundary = boundary or ("tessera-" + uuid.uuid4().hex)
    out = []
    for name, filename, ctype, data in parts:
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(("Content-Disposition: %s\r\n" % disp).encode())
        if ctype:
            out.append(("Content-Type: %s\r\n" % ctype).encode())
        out.append(b"\r\n")
        out.append(data)
        out.append(b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out), "multipart/form-data; boundary=%s" % boundary


def upload(target, data, use_multipart=False, filename="upload.bin", headers=None, timeout=60):
    """POST /api/v1/images. Returns (status, headers, body, parsed JSON or None)."""
    hdrs = dict(headers or {})
    if use_multipart:
        body, ct = multipart([("file", filename, "application/octet-stream", data)])
        hdrs["Content-Type"] = ct
    else:
        body = data
        hdrs.setdefault("Content-Type", "application/octet-stream")
    st, h, b = request(target, "POST", "/api/v1/images", body=body, headers=hdrs, timeout=timeout)
    return st, h, b, parse_json(b)


def parse_json(b):
    try:
        return json.loads(b.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def error_code(body):
    j = parse_json(body) if isinstance(body, (bytes, bytearray)) else body
    if isinstance(j, dict) and isinstance(j.get("error"), dict):
        return j["error"].get("code")
    return None


def is_error_body(body, code):
    """The API.md error shape with the given code and a non-empty message."""
    j = parse_json(body)
    return (isinstance(j, dict) and isinstance(j.get("error"), dict)
            and j["error"].get("code") == code
            and isinstance(j["error"].get("message"), str) and j["error"]["message"] != "")


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def path_of(url):
    m = re.match(r"https?://[^/]+(/.*)$", url)
    return m.group(1) if m else url


# --------------------------------------------------------------------------- PostgreSQL


def pg_status(text):
    """`deploy/local/pg.sh status` parsed: {node: (role, state, timeline)}."""
    rows = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if not f or not f[0].startswith("pg-"):
            continue
        if f[2:4] == ["sync", "standby"]:
            f = f[:2] + ["sync standby"] + f[4:]
        rows[f[0]] = (f[2], f[3] if len(f) > 3 else "", f[4] if len(f) > 4 else "")
    return rows


def pg_healthy(text, nodes):
    """Every node running on one timeline with one leader and a synchronous standby: Patroni
    fails over only to the synchronous standby, so until one is chosen (a loop or two after a
    node joins) a leader crash has no successor."""
    rows = pg_status(text)
    roles = [r[0] for r in rows.values()]
    return (sorted(rows) == sorted(nodes) and roles.count("leader") == 1
            and (len(nodes) == 1 or "sync standby" in roles)
            and all(r[1] == "running" for r in rows.values())
            and len({r[2] for r in rows.values()}) == 1)


# --------------------------------------------------------------------------- corpus


def load_manifest():
    path = os.path.join(testdata_dir(), "manifest.tsv")
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            cols = line.split("\t")
            cols += [""] * (len(header) - len(cols))
            rows.append(dict(zip(header, cols)))
    return rows


def corpus_bytes(name):
    with open(os.path.join(testdata_dir(), name), "rb") as f:
        return f.read()


def upright_size(row):
    """The manifest lists EXIF-rotated files with their stored size; upright is the swap."""
    w, h = int(row["width"]), int(row["height"])
    if re.search(r"Orientation=(5|6|7|8)\b", row["why"]):
        return h, w
    return w, h


# --------------------------------------------------------------------------- images


def png_bytes(width, height, pixel_fn):
    """A minimal valid 8-bit RGB PNG; pixel_fn(x, y) -> (r, g, b)."""
    import struct
    import zlib

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = bytearray()
    for y in range(height):
        raw.append(0)
        for x in range(width):
            raw.extend(bytes(pixel_fn(x, y)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw)))
            + chunk(b"IEND", b""))


def tiny_png(n, size=4):
    """Distinct small PNGs: pixel (0,0) encodes n."""
    return png_bytes(size, size, lambda x, y: ((n >> 16) & 255, (n >> 8) & 255, n & 255)
                     if (x, y) == (0, 0) else ((x * 40) % 256, (y * 40) % 256, 128))


def webp_info(data):
    """Parses a WebP (RIFF) file: returns dict(width, height, kind, chunks, vp8x_flags)."""
    import struct
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a RIFF/WEBP file (starts %r)" % data[:16])
    chunks = []
    off = 12
    info = {"chunks": chunks, "vp8x_flags": None, "width": None, "height": None, "kind": None}
    while off + 8 <= len(data):
        fourcc = data[off:off + 4]
        size = struct.unpack("<I", data[off + 4:off + 8])[0]
        payload = data[off + 8:off + 8 + size]
        chunks.append(fourcc.decode("latin-1"))
        if fourcc == b"VP8X" and info["kind"] is None:
            info["kind"] = "VP8X"
            info["vp8x_flags"] = payload[0]
            info["width"] = 1 + int.from_bytes(payload[4:7], "little")
            info["height"] = 1 + int.from_bytes(payload[7:10], "little")
        elif fourcc == b"VP8 " and info["kind"] is None:
            info["kind"] = "VP8"
            if payload[3:6] != b"\x9d\x01\x2a":
                raise ValueError("VP8 start code missing")
            info["width"] = struct.unpack("<H", payload[6:8])[0] & 0x3FFF
            info["height"] = struct.unpack("<H", payload[8:10])[0] & 0x3FFF
        elif fourcc == b"VP8L" and info["kind"] is None:
            info["kind"] = "VP8L"
            if payload[0] != 0x2F:
                raise ValueError("VP8L signature missing")
            bits = int.from_bytes(payload[1:5], "little")
            info["width"] = (bits & 0x3FFF) + 1
            info["height"] = ((bits >> 14) & 0x3FFF) + 1
        off += 8 + size + (size & 1)
    return info


def have_exiftool():
    return shutil.which("exiftool") is not None


def exif_tags(data, suffix=".bin"):
    """exiftool -j -G0 -a -n on the bytes: {"Group:Tag": value}."""
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="tessera-exif-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        out = subprocess.run(["exiftool", "-j", "-G0", "-a", "-n", "-m", path],
                             capture_output=True, timeout=60)
        j = json.loads(out.stdout.decode("utf-8", "replace") or "[{}]")
        return j[0] if j else {}
    finally:
        os.unlink(path)


def have_vips():
    return shutil.which("vips") is not None


def small_rgb(data, w=48, h=32, suffix=".bin"):
    """Decodes the bytes with the vips CLI to a w x h RGB thumbnail; list of (r,g,b)."""
    d = tempfile.mkdtemp(prefix="tessera-vips-")
    try:
        src = os.path.join(d, "in" + suffix)
        dst = os.path.join(d, "out.ppm")
        with open(src, "wb") as f:
            f.write(data)
        subprocess.run(["vips", "thumbnail", src, dst, str(w), "--height", str(h),
                        "--size", "force"], check=True, capture_output=True, timeout=60)
        with open(dst, "rb") as f:
            ppm = f.read()
        return parse_ppm(ppm)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def parse_ppm(ppm):
    toks = []
    i = 0
    while len(toks) < 4:
        while ppm[i:i + 1].isspace():
            i += 1
        if ppm[i:i + 1] == b"#":
            while ppm[i:i + 1] not in (b"\n", b""):
                i += 1
            continue
        j = i
        while not ppm[j:j + 1].isspace():
            j += 1
        toks.append(ppm[i:j])
        i = j
    i += 1
    magic, w, h, mx = toks[0], int(toks[1]), int(toks[2]), int(toks[3])
    if magic not in (b"P5", b"P6") or mx not in (255, 65535):
        raise ValueError("unexpected PPM %r maxval %d" % (magic, mx))
    bands = 3 if magic == b"P6" else 1
    bps = 1 if mx == 255 else 2
    px = ppm[i:i + w * h * bands * bps]
    vals = list(px) if bps == 1 else [px[k] for k in range(0, len(px), 2)]  # high byte
    if bands == 1:
        return [(v, v, v) for v in vals]
    return [(vals[k], vals[k + 1], vals[k + 2]) for k in range(0, len(vals), 3)]


def mean_abs_diff(a, b):
    n = min(len(a), len(b))
    if n == 0:
        return 1e9
    return sum(abs(a[k][c] - b[k][c]) for k in range(n) for c in range(3)) / (3.0 * n)


def signed_rendition_path(key, image_id, canonical):
    """/i/{id}/t/{canonical}?s=...: signed with key as API.md says (HMAC-SHA256, 32 base64url)."""
    mac = hmac.new(key.encode(), ("/i/%s/t/%s" % (image_id, canonical)).encode(),
                   hashlib.sha256).digest()
    return "/i/%s/t/%s?s=%s" % (image_id, canonical,
                                base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32])


def metric_value(srv, name, default=0):
    """An unlabelled metric of srv's /metrics as an int; default when it is not there."""
    _, _, body = request(srv, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return default
