#!/usr/bin/env python3
"""System test: docs/openapi.yaml is a valid OpenAPI document (swagger-parser from npm) and
a live `tessera serve` answers as it says (status codes listed per operation, JSON bodies
and headers valid against their schemas with ajv): tests/system/openapi_check.js.
Also docs/examples/: curl.sh runs end to end, and the ShareX uploader (tessera.sxcu)
describes a request the server accepts and answers whose {json:...} paths resolve.
"""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_openapi")
HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(tf.REPO, "docs", "openapi.yaml")


def t_openapi(srv):
    node = shutil.which("node")
    if not C.check(node is not None, "node is installed (scripts/deps.sh)"):
        return
    if not C.check(os.path.isdir(os.path.join(tf.REPO, "node_modules", "@apidevtools")),
                   "the npm tools are installed (scripts/npm-deps.sh)"):
        return
    td = tf.testdata_dir()
    out = subprocess.run([node, os.path.join(HERE, "openapi_check.js"), SPEC, srv.base,
                          os.path.join(td, "accept_jpeg_baseline_rocket_640x427.jpg"),
                          os.path.join(td, "accept_png_truecolor_astronaut_512x512.png")],
                         capture_output=True, text=True, timeout=240)
    print((out.stdout + out.stderr).rstrip())
    C.eq(out.returncode, 0, "the OpenAPI document is valid and the server answers as it says")


def t_curl_examples(srv):
    img = os.path.join(tf.testdata_dir(), "accept_jpeg_baseline_rocket_640x427.jpg")
    out = subprocess.run(["sh", os.path.join(tf.REPO, "docs", "examples", "curl.sh"), srv.base, img],
                         capture_output=True, text=True, timeout=120)
    C.eq(out.returncode, 0, "docs/examples/curl.sh runs end to end", out.stderr[-500:])
    lines = out.stdout.splitlines()
    for code in ("304", "206", "204", "404"):
        C.check(code in lines, "curl.sh shows %s" % code)


def sxcu_resolve(template, answer):
    def one(m):
        v = answer
        for k in m.group(1).split("."):
            v = v[k]
        return str(v)
    return re.sub(r"\{json:([A-Za-z0-9_.]+)\}", one, template)


def t_sharex(srv):
    with open(os.path.join(tf.REPO, "docs", "examples", "tessera.sxcu"), encoding="utf-8") as f:
        sx = json.load(f)
    C.eq(sx.get("DestinationType"), "ImageUploader", "sxcu is an image uploader")
    C.eq(sx.get("Body"), "MultipartFormData", "sxcu sends multipart")
    C.check(tf.path_of(sx["RequestURL"]) == "/api/v1/images", "sxcu posts to the upload endpoint")
    data = tf.corpus_bytes("accept_png_truecolor_astronaut_512x512.png")
    body, ctype = tf.multipart([(sx["FileFormName"], "shot.png", "image/png", data)])
    st, _, b = tf.request(srv, sx["RequestMethod"], tf.path_of(sx["RequestURL"]), body=body,
                          headers={"Content-Type": ctype})
    C.eq(st, 201, "the ShareX request is accepted")
    ans = tf.parse_json(b)
    for key in ("URL", "ThumbnailURL"):
        url = sxcu_resolve(sx[key], ans)
        st, h, _ = tf.request(srv, "GET", tf.path_of(url))
        C.check(st == 200 and (h.get("Content-Type") or "").startswith("image/"),
                "sxcu %s resolves to an image" % key, url)
    body, ctype = tf.multipart([(sx["FileFormName"], "notes.txt", "text/plain", b"hello")])
    st, _, b = tf.request(srv, "POST", "/api/v1/images", body=body, headers={"Content-Type": ctype})
    msg = sxcu_resolve(sx["ErrorMessage"], tf.parse_json(b))
    C.check(st == 415 and "image" in msg, "sxcu ErrorMessage resolves to the API's message", msg)


def main():
    with tf.Server(["--limits.max_upload_bytes=1M"]) as srv:
        C.run(t_openapi, srv)
        C.run(t_curl_examples, srv)
        C.run(t_sharex, srv)
    C.finish()


if __name__ == "__main__":
    main()
