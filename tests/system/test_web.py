#!/usr/bin/env python3
"""System test: the web page of `tessera serve`.

HTTP: / and /web/* with their content types, the strict CSP, nosniff, ETag and
304, 404 for unknown files. Browser: Debian's Chromium driven by playwright-core
(tests/system/web_browser.js) uploads two corpus images and one rejected file,
deletes one from the gallery with its stored token and checks it is gone.
Screenshots go to $TESSERA_ARTEFACTS (default: ./artefacts, the build's tests dir).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_web")
HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = ["accept_jpeg_baseline_rocket_640x427.jpg", "accept_png_truecolor_astronaut_512x512.png"]


def t_http(srv):
    st, h, body = tf.request(srv, "GET", "/")
    C.eq(st, 200, "GET / 200")
    C.eq(h.get("Content-Type"), "text/html; charset=utf-8", "/ is HTML")
    C.check(b"<script src=\"/web/app.js\"" in body, "the page loads its script from /web/")
    C.check(not re.search(rb"<script>|<script[^>]*>[^<]+</script>", body), "no inline script")
    csp = h.get("Content-Security-Policy") or ""
    C.check("default-src 'self'" in csp and "unsafe-inline" not in csp, "strict CSP", csp)
    C.check("frame-ancestors 'none'" in csp, "CSP forbids framing", csp)
    C.eq(h.get("X-Content-Type-Options"), "nosniff", "nosniff on the page")
    etag = h.get("ETag")
    C.check(etag is not None and etag.startswith('"'), "the page has an ETag", str(etag))
    st, h2, b2 = tf.request(srv, "GET", "/", headers={"If-None-Match": etag})
    C.eq(st, 304, "If-None-Match answers 304")
    C.eq(b2, b"", "304 has no body")
    for name, ctype in (("app.js", "text/javascript; charset=utf-8"),
                        ("app.css", "text/css; charset=utf-8"),
                        ("favicon.svg", "image/svg+xml"),
                        ("index.html", "text/html; charset=utf-8")):
        st, h, body = tf.request(srv, "GET", "/web/" + name)
        C.eq(st, 200, "GET /web/%s 200" % name)
        C.eq(h.get("Content-Type"), ctype, "/web/%s content type" % name)
        with open(os.path.join(tf.REPO, "web", name), "rb") as f:
            C.check(body == f.read(), "/web/%s is the file of web/" % name)
    st, h, body = tf.request(srv, "HEAD", "/web/app.js")
    C.eq(st, 200, "HEAD /web/app.js 200")
    st, _, body = tf.request(srv, "GET", "/web/missing.js")
    C.eq(st, 404, "unknown file 404")
    C.check(tf.is_error_body(body, "not_found"), "404 has the JSON error body")
    st, h, body = tf.request(srv, "POST", "/", body=b"x")
    C.eq(st, 405, "POST / 405")
    C.check("GET" in (h.get("Allow") or ""), "405 has Allow")


def t_csp_cdn():
    with tf.Server(args=["--cdn.base_url=https://cdn.example.test/media"]) as srv:
        st, h, _ = tf.request(srv, "GET", "/")
        csp = h.get("Content-Security-Policy") or ""
        C.check("img-src 'self' blob: data: https://cdn.example.test;" in csp,
                "img-src admits the CDN origin", csp)


def t_browser(srv):
    node = shutil.which("node")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not C.check(node is not None, "node is installed (scripts/deps.sh)"):
        return
    if not C.check(os.path.exists(chromium), "chromium is installed (scripts/deps.sh)"):
        return
    if not C.check(os.path.isdir(os.path.join(tf.REPO, "node_modules", "playwright-core")),
                   "playwright-core is installed (scripts/npm-deps.sh)"):
        return
    art = os.environ.get("TESSERA_ARTEFACTS") or os.path.join(os.getcwd(), "artefacts")
    tmp = tempfile.mkdtemp(prefix="tessera-web-")
    try:
        bad = os.path.join(tmp, "notes.txt")
        with open(bad, "w") as f:
            f.write("this is not an image\n")
        files = [os.path.join(tf.testdata_dir(), g) for g in GOOD] + [bad]
        try:
            out = subprocess.run([node, os.path.join(HERE, "web_browser.js"), srv.base, art] + files,
                                 capture_output=True, text=True, timeout=150)
            text = out.stdout + out.stderr
            rc = out.returncode
        except subprocess.TimeoutExpired as e:
            text = "%s%s" % (e.stdout or "", e.stderr or "")
            rc = "timeout"
        print(text.rstrip())
        C.check(rc == 0, "browser test passed (screenshots in %s)" % art, "exit %s" % rc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    with tf.Server() as srv:
        C.run(t_http, srv)
        C.run(t_browser, srv)
    C.run(t_csp_cdn)
    C.finish()


if __name__ == "__main__":
    main()
