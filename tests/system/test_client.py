#!/usr/bin/env python3
"""System test: the command-line client (tessera upload / ls / info / rm) against `tessera serve`.

Outputs, --json, paging through more than one page, the API's error messages on
stderr, exit codes (0 ok, 1 API error, 2 usage, 3 cannot connect), --server and
TESSERA_URL, --key and TESSERA_KEY, delete by token and by admin key.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_client")
JPEG = "accept_jpeg_baseline_rocket_640x427.jpg"
PNG = "accept_png_truecolor_astronaut_512x512.png"
UPLOAD_KEY = "0123456789abcdef0123456789"
ADMIN_KEY = "fedcba9876543210fedcba9876"
TMP = tempfile.mkdtemp(prefix="tessera-client-")


def cli(*args, env=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if k not in ("TESSERA_URL", "TESSERA_KEY")}
    e.update(env or {})
    p = subprocess.run([tf.tessera_bin()] + list(args), capture_output=True, text=True,
                       env=e, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def corpus(name):
    return os.path.join(tf.testdata_dir(), name)


def tmpfile(name, data):
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


URL_RE = r"^http://127\.0\.0\.1:\d+/i/([A-Za-z0-9_-]{11,32})\.(jpg|png)$"


def t_upload(srv):
    rc, out, err = cli("upload", "--server", srv.base, corpus(JPEG), corpus(PNG))
    C.eq(rc, 0, "upload two files: exit 0", err)
    lines = out.strip().splitlines()
    C.eq(len(lines), 2, "one URL per file on stdout", out)
    C.check(all(re.match(URL_RE, u) for u in lines), "the lines are image URLs", out)
    for u in lines:
        st, h, body = tf.request(srv, "GET", tf.path_of(u))
        C.eq(st, 200, "GET %s 200" % tf.path_of(u))
    C.check("--token" in err, "stderr tells how to delete", err)

    rc, out, err = cli("upload", "--json", corpus(JPEG), env={"TESSERA_URL": srv.base})
    C.eq(rc, 0, "upload --json with TESSERA_URL: exit 0", err)
    j = json.loads(out)
    C.check(isinstance(j, dict) and j.get("delete_token") and j.get("sha256"),
            "--json prints the API's answer with the delete token", out)
    C.eq(j.get("format"), "jpeg", "--json answer format")


def t_upload_errors(srv):
    bad = tmpfile("notes.txt", b"this is not an image\n")
    rc, out, err = cli("upload", "--server", srv.base, bad)
    C.eq(rc, 1, "upload a text file: exit 1")
    C.eq(out, "", "nothing on stdout for a rejected file")
    C.check("not an accepted image type" in err and "unsupported_media_type" in err
            and "415" in err, "stderr has the API's message, code and status", err)

    rc, out, err = cli("upload", "--server", srv.base, corpus(PNG), bad)
    C.eq(rc, 1, "one good and one bad: exit 1")
    C.eq(len(out.strip().splitlines()), 1, "the good file's URL is still printed", out)

    trunc = tmpfile("trunc.jpg", tf.corpus_bytes(JPEG)[:2000])
    rc, out, err = cli("upload", "--server", srv.base, trunc)
    C.eq(rc, 1, "truncated JPEG: exit 1")
    C.check("unprocessable_image" in err, "truncated JPEG: 422 code on stderr", err)

    rc, out, err = cli("upload", "--server", srv.base, os.path.join(TMP, "missing.png"))
    C.eq(rc, 2, "missing file: exit 2")
    C.check("cannot read" in err and "missing.png" in err, "missing file named", err)
    rc, out, err = cli("upload", "--server", srv.base, TMP)
    C.eq(rc, 2, "a directory: exit 2")
    rc, out, err = cli("upload", "--server", srv.base)
    C.eq(rc, 2, "upload with no file: exit 2")
    C.check("usage" in err, "usage on stderr", err)


def t_ls_paging(srv):
    ids = set()
    for n in range(105):
        st, _, body, j = tf.upload(srv, tf.tiny_png(7000 + n))
        if st == 201:
            ids.add(j["id"])
    C.eq(len(ids), 105, "105 tiny uploads through the API")
    rc, out, err = cli("ls", "--json", "--server", srv.base)
    C.eq(rc, 0, "ls --json: exit 0", err)
    items = [json.loads(line) for line in out.splitlines() if line.strip()]
    seen = [i["id"] for i in items]
    C.check(ids <= set(seen), "ls follows the cursor past the first page (100)",
            "%d listed" % len(seen))
    C.eq(len(seen), len(set(seen)), "ls lists each image once")
    created = [i["created_at"] for i in items]
    C.check(created == sorted(created, reverse=True), "newest first")

    rc, out, err = cli("ls", "--limit", "3", "--server", srv.base)
    C.eq(rc, 0, "ls --limit 3: exit 0", err)
    lines = out.strip().splitlines()
    C.eq(len(lines), 3, "ls --limit 3 prints 3 lines", out)
    C.check(all(re.match(r"^[A-Za-z0-9_-]{11,32}\s+\w+\s+\d+x\d+\s+\d+\s+\S+Z\s+http://", line)
                for line in lines), "ls text lines: id format WxH bytes time url", out)
    rc, out, err = cli("ls", "--limit=102", "--json", "--server", srv.base)
    C.eq(len(out.strip().splitlines()), 102, "ls --limit=102 crosses a page boundary exactly")
    rc, out, err = cli("ls", "--limit", "0", "--server", srv.base)
    C.eq(rc, 2, "ls --limit 0: exit 2")
    rc, out, err = cli("ls", "extra", "--server", srv.base)
    C.eq(rc, 2, "ls with an argument: exit 2")


def t_info_rm(srv):
    rc, out, err = cli("upload", "--json", "--server", srv.base, corpus(PNG))
    j = json.loads(out)
    iid, token = j["id"], j["delete_token"]

    rc, out, err = cli("info", iid, "--server", srv.base)
    C.eq(rc, 0, "info: exit 0", err)
    C.check(("id:           %s" % iid) in out and j["sha256"] in out and "variant:      thumb" in out,
            "info prints id, sha256 and variants", out)
    rc, out, err = cli("info", "--json", iid, "--server", srv.base)
    C.eq(rc, 0, "info --json: exit 0")
    ij = json.loads(out)
    C.eq(ij.get("id"), iid, "info --json is the image object")
    C.check("delete_token" not in ij, "info has no delete token")

    rc, out, err = cli("info", "AAAAAAAAAAAAAAAA", "--server", srv.base)
    C.eq(rc, 1, "info of an unknown id: exit 1")
    C.check("no such image" in err and "not_found" in err, "404 message on stderr", err)
    for dashed in ("-AAAAAAAAAAAAAAA", "--AAAAAAAAAAAAAA"):
        rc, out, err = cli("info", dashed, "--server", srv.base)
        C.eq(rc, 1, "an id starting with '-' is an id, not an option: %s" % dashed, err)
    rc, out, err = cli("info", "../../etc", "--server", srv.base)
    C.eq(rc, 2, "info of a malformed id: exit 2")
    rc, out, err = cli("info", "--server", srv.base)
    C.eq(rc, 2, "info without an id: exit 2")

    rc, out, err = cli("rm", iid, "--server", srv.base)
    C.eq(rc, 2, "rm without a token or key: exit 2")
    rc, out, err = cli("rm", iid, "--token", "wrong-token", "--server", srv.base)
    C.eq(rc, 1, "rm with a wrong token: exit 1")
    C.check("wrong delete token" in err and "forbidden" in err, "403 message on stderr", err)
    rc, out, err = cli("rm", "--token=" + token, iid, "--server", srv.base)
    C.eq(rc, 0, "rm with the token: exit 0", err)
    C.eq(out.strip(), "deleted %s" % iid, "rm says what it deleted")
    rc, out, err = cli("info", iid, "--server", srv.base)
    C.eq(rc, 1, "info after rm: exit 1 (404)")
    rc, out, err = cli("rm", iid, "--token", token, "--server", srv.base)
    C.eq(rc, 1, "rm twice: exit 1 (404)")


def t_keys():
    srv = tf.Server(["--auth.upload_keys=%s" % UPLOAD_KEY, "--auth.admin_keys=%s" % ADMIN_KEY])
    with srv:
        rc, out, err = cli("upload", "--server", srv.base, corpus(PNG))
        C.eq(rc, 1, "upload without the needed key: exit 1")
        C.check("unauthorized" in err, "401 on stderr", err)
        rc, out, err = cli("upload", "--json", "--server", srv.base, corpus(PNG),
                           env={"TESSERA_KEY": UPLOAD_KEY})
        C.eq(rc, 0, "upload with TESSERA_KEY: exit 0", err)
        iid = json.loads(out)["id"] if rc == 0 else "AAAAAAAAAAAAAAAA"
        rc, out, err = cli("rm", iid, "--key", UPLOAD_KEY, "--server", srv.base)
        C.eq(rc, 1, "rm with an upload key (not admin): exit 1")
        rc, out, err = cli("rm", iid, "--key", ADMIN_KEY, "--server", srv.base)
        C.eq(rc, 0, "rm with an admin key: exit 0", err)


def t_connect_and_usage():
    port = tf.free_port()
    url = "http://127.0.0.1:%d" % port
    rc, out, err = cli("ls", "--server", url)
    C.eq(rc, 3, "no server: ls exit 3")
    C.check("cannot connect" in err and url in err, "no server: says so with the URL", err)
    rc, out, err = cli("upload", corpus(PNG), env={"TESSERA_URL": url})
    C.eq(rc, 3, "no server: upload exit 3")
    rc, out, err = cli("info", "AAAAAAAAAAAAAAAA", "--server", url, env={"TESSERA_URL": "http://x"})
    C.eq(rc, 3, "--server wins over TESSERA_URL")
    rc, out, err = cli("ls", "--server", "ftp://example")
    C.eq(rc, 2, "a non-HTTP server URL: exit 2")
    rc, out, err = cli("ls", "--bogus")
    C.eq(rc, 2, "unknown option: exit 2")
    C.check("unknown option" in err, "unknown option named", err)
    rc, out, err = cli("ls", "--server")
    C.eq(rc, 2, "--server without a value: exit 2")
    rc, out, err = cli("rm", "--help")
    C.eq(rc, 0, "rm --help: exit 0")
    C.check("usage: tessera rm" in out and "exit status" in out, "help text on stdout", out)
    rc, out, err = cli("--help")
    C.check(all(c in out for c in ("upload", "ls", "info", "rm")), "tessera --help lists the client")


def main():
    with tf.Server() as srv:
        C.run(t_upload, srv)
        C.run(t_upload_errors, srv)
        C.run(t_ls_paging, srv)
        C.run(t_info_rm, srv)
    C.run(t_keys)
    C.run(t_connect_and_usage)
    C.finish()


if __name__ == "__main__":
    main()
