#!/usr/bin/env python3
"""System test of `tessera backup` and `tessera restore` (the blobs; the metadata here is the
SQLite file of a `tessera serve`, copied with SQLite's online backup: the PostgreSQL path with
pgBackRest and point-in-time recovery is tests/chaos/restore_drill.py). Two real storage nodes
with signed requests, R=2, ports the kernel picks.

Covers: a target that does not exist -> exit 1, metric 0, nothing made; a target that fills up
(a 32 KiB tmpfs) -> exit 1, "full", what it copied stays; a full backup, then an incremental one
that copies nothing, then only what is new; a restore refused on non-empty storage; a restore
whose metadata is newer than the blob backup lists the missing blobs (exit 1), then takes them
from the live store (--live) and resumes; a serve on the restored cluster reads every image of
the restored metadata back byte for byte, and none made after it.
"""
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tessera_fixture as tf  # noqa: E402

C = tf.Checks("test_backup")


def noise_png(rng):
    return tf.png_bytes(40, 40, lambda x, y: (rng.randrange(256), rng.randrange(256), 9))


def files_under(d):
    return sum(len(f) for _, _, f in os.walk(d))


def main():
    root = tempfile.mkdtemp(prefix="tessera-backup-")
    secret = os.path.join(root, "storage.secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    signed = ["--storage.secret_file=" + secret, "--log.access=false"]
    old = [tf.Server(signed, command="storage").start() for _ in range(2)]
    new = [tf.Server(signed, command="storage").start() for _ in range(2)]

    def ring(nodes, prefix):
        return ",".join("%s%d=http://127.0.0.1:%d" % (prefix, i + 1, n.port)
                        for i, n in enumerate(nodes))

    common = signed + ["--storage.replicas=2", "--storage.write_quorum=2"]
    old_cfg = common + ["--storage.shards=" + ring(old, "a")]
    serve = tf.Server(old_cfg).start()

    def tool(args, cfg, data_dir):
        r = subprocess.run([tf.tessera_bin()] + args + cfg + ["--data-dir", data_dir,
                                                               "--log.level=warn"],
                           capture_output=True, text=True, timeout=300)
        return r.returncode, r.stdout + r.stderr

    def settled():
        """serve's thumbnail jobs done: the blobs a backup lists are all there is."""
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(serve.data_dir, "meta.db"),
                             uri=True, timeout=10)
        try:
            return db.execute("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
                              ).fetchone()[0] == 0
        finally:
            db.close()

    rng = random.Random(3)
    ledger = {}  # id -> (path, sha256)

    def upload(n):
        for _ in range(n):
            st, _, _, j = tf.upload(serve, noise_png(rng))
            if C.check(st == 201, "upload", str(st)) and j:
                ledger[j["id"]] = (tf.path_of(j["url"]), j["sha256"])
        tf.wait_for(settled, 60, "serve's thumbnail jobs")

    upload(20)
    backup = os.path.join(root, "backup")
    metrics = os.path.join(root, "backup.prom")

    # ---- a target that is not there: loud failure, nothing created
    rc, out = tool(["backup", "--to", "file://" + backup, "--metrics-file", metrics], old_cfg,
                   serve.data_dir)
    C.check(rc == 1 and "FAILED" in out and "no such directory" in out,
            "a backup to a missing directory fails (exit 1) and says why", out[-600:])
    C.check(not os.path.exists(backup), "it did not create the directory")
    C.check("tessera_backup_success 0" in open(metrics).read(), "its metric says 0")

    # ---- a target that fills up: loud failure, what it copied stays
    small = os.path.join(root, "small")
    os.mkdir(small)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", small],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            rc, out = tool(["backup", "--to", "file://" + small], old_cfg, serve.data_dir)
            C.check(rc == 1 and "full" in out, "a backup to a target that fills up fails "
                    "(exit 1, 'full')", out[-600:])
            kept = files_under(small)
            rc, out = tool(["backup", "--to", "file://" + small], old_cfg, serve.data_dir)
            C.check(rc == 1 and files_under(small) >= kept > 0,
                    "a second attempt fails again and removes none of the %d files" % kept,
                    out[-600:])
        finally:
            subprocess.run(["umount", "-l", small])
    else:
        print("(cannot mount a tmpfs here: the full-target case is skipped)")

    # ---- full, then incremental
    os.mkdir(backup)
    rc, out = tool(["backup", "--to", "file://" + backup, "--metrics-file", metrics], old_cfg,
                   serve.data_dir)
    m = re.search(r"(\d+) blobs, (\d+) already there, (\d+) copied", out)
    C.check(rc == 0 and m and int(m.group(3)) >= 20 and m.group(2) == "0",
            "a first backup copies every blob (20 images and their thumbnails)", out[-600:])
    print("  " + [ln for ln in out.splitlines() if ln.startswith("backup to")][0])
    C.check("tessera_backup_success 1" in open(metrics).read(), "its metric says 1")
    rc, out = tool(["backup", "--to", "file://" + backup], old_cfg, serve.data_dir)
    C.check(rc == 0 and " 0 copied" in out, "a second backup copies nothing", out[-400:])
    upload(3)
    before = set(ledger)
    # the metadata as restored: taken after 3 more uploads that the blob backup lacks
    upload(3)
    snap_dir = os.path.join(root, "restored")
    os.mkdir(snap_dir)
    src = sqlite3.connect(os.path.join(serve.data_dir, "meta.db"))
    dst = sqlite3.connect(os.path.join(snap_dir, "meta.db"))
    src.backup(dst)
    dst.close()
    src.close()
    in_snapshot = set(ledger)
    upload(2)  # after the metadata snapshot: must not exist in the restored cluster
    after = set(ledger) - in_snapshot
    rc, out = tool(["backup", "--to", "file://" + backup], old_cfg, serve.data_dir)
    m = re.search(r" (\d+) copied", out)
    C.check(rc == 0 and m and int(m.group(1)) == 16, "an incremental backup copies only what is "
            "new (8 images and their thumbnails)", out[-400:])
    # take back the last 3 uploads' blobs from the backup, as if it predated them
    for iid in in_snapshot - before:
        key = ledger[iid][1]
        os.unlink(os.path.join(backup, key[:2], key[2:4], key))

    # ---- restore
    new_cfg = common + ["--storage.shards=" + ring(new, "b")]
    rc, out = tool(["restore", "--from", "file://" + backup], old_cfg, serve.data_dir)
    C.check(rc == 1 and "not empty" in out, "a restore into storage that holds blobs refuses",
            out[-600:])
    rc, out = tool(["restore", "--from", "file://" + backup], new_cfg, snap_dir)
    missing = set(re.findall(r"image (\S+): blob [0-9a-f]{64} is in neither", out))
    C.check(rc == 1 and missing == in_snapshot - before,
            "a restore lists the 3 images whose blob the backup lacks (exit 1)", out[-1200:])
    live = ring(old, "a")
    rc, out = tool(["restore", "--from", "file://" + backup, "--live", live], new_cfg, snap_dir)
    m = re.search(r"(\d+) not referenced.* (\d+) from the live store.*?(\d+) blobs missing", out)
    C.check(rc == 0 and m and int(m.group(1)) == 4 and int(m.group(2)) >= 3 and m.group(3) == "0",
            "resumed with --live, it takes them from the live store, leaves out the 2 images "
            "after the snapshot, and nothing is missing",
            out[-1200:])
    print("  " + [ln for ln in out.splitlines() if ln.startswith("restore from")][-1])

    serve.stop()
    restored = tf.Server(new_cfg, data_dir=snap_dir).start()
    bad = []
    for iid in in_snapshot:
        path, sha = ledger[iid]
        st, _, body = tf.request(restored, "GET", path)
        if st != 200 or tf.sha256(body) != sha:
            bad.append((iid, st))
    C.check(not bad, "the restored cluster reads every image of its metadata back byte for byte "
            "(%d)" % len(in_snapshot), str(bad[:3]))
    gone = [iid for iid in after if tf.request(restored, "GET", ledger[iid][0])[0] != 404]
    C.check(not gone, "images made after the restored point do not exist there (404)", str(gone))
    restored.stop()
    shutil.rmtree(root, ignore_errors=True)
    C.finish()


if __name__ == "__main__":
    main()
