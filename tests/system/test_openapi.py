#!/usr/bin/env python3
"""System test: docs/openapi.yaml is a valid OpenAPI document (swagger-parser from npm) and
a live `tessera serve` answers as it says (status codes listed per operation, JSON bodies
and headers valid against their schemas with ajv): tests/system/openapi_check.js.
"""
import os
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


def main():
    with tf.Server(["--limits.max_upload_bytes=1M"]) as srv:
        C.run(t_openapi, srv)
    C.finish()


if __name__ == "__main__":
    main()
