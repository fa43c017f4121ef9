#!/usr/bin/python3
"""Every role's /metrics, the launcher's Prometheus and the status page, on one local cluster.

Brings the cluster up (deploy/local/cluster, ports moved by TESSERA_TEST_PORT_OFFSET,
default 520), then: each role's /metrics (3 read, 2 write, the worker, 3 storage nodes)
refuses a request without the token and, with it, parses as Prometheus text in which
every sample belongs to a family with HELP and TYPE and no series appears twice; an
upload through the balancer moves the uploads counter, the write route's histogram and
the worker's variants job; Prometheus has every target up and has loaded the alert
rules; a stopped storage node shows down to the services (tessera_ring_shard_up) and to
Prometheus (up == 0, TesseraInstanceDown pending); with that node and a database standby
stopped, the status page /admin in Chromium (tests/system/admin_browser.js) shows nothing
without the admin key and both failures with it; both come back; with Prometheus stopped
the status answer still carries what the service sees itself. Screenshots go to
$TESSERA_ARTEFACTS (default ./artefacts).
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "deploy", "local", "cluster")
BIN = os.environ.get("TESSERA_BIN", os.path.join(ROOT, "build", "tessera"))
OFF = int(os.environ.get("TESSERA_TEST_PORT_OFFSET", "520"))
PG = 25432 + OFF  # below the ephemeral ports
LB, PROM = 8080 + OFF, 9190 + OFF
ROLES = {"read-1": 8101, "read-2": 8102, "read-3": 8103, "write-1": 8201, "write-2": 8202,
         "worker-1": 8291, "storage-1": 9101, "storage-2": 9102, "storage-3": 9103}
ROLES = {n: p + OFF for n, p in ROLES.items()}
RUN = None
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def cluster(*args, timeout=300):
    env = dict(os.environ, TESSERA_RUN=RUN, TESSERA_BIN=BIN, TESSERA_NO_BUILD="1",
               TESSERA_PORT_OFFSET=str(OFF), TESSERA_CLUSTER_PG_PORT=str(PG))
    p = subprocess.run([CLUSTER, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        print(p.stdout + p.stderr, file=sys.stderr)
        raise RuntimeError("cluster %s failed (%d)" % (" ".join(args), p.returncode))
    return p


def request(port, method, path, body=None, headers=None, token=True):
    headers = dict(headers or {})
    if token:
        with open(os.path.join(RUN, "secrets", "metrics.token")) as f:
            headers["Authorization"] = "Bearer " + f.read().strip()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text):
    """Prometheus text format 0.0.4 -> ({(name, labels): value}, [problems])."""
    helps, types, series, problems = set(), {}, {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if name in types:
                problems.append("TYPE twice for " + name)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m is None:
            problems.append("not a sample: " + line)
            continue
        name, labels, value = m.group(1), (m.group(2) or "{}")[1:-1], m.group(3)
        pairs = LABEL.findall(labels)
        if labels and "".join('%s="%s"%s' % p for p in pairs) != labels:
            problems.append("bad labels: " + line)
        try:
            v = float(value)
        except ValueError:
            problems.append("bad value: " + line)
            continue
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
                family = base
        if family not in types or family not in helps:
            problems.append("no HELP/TYPE before " + name)
        key = (name, tuple(sorted((k, val) for k, val, _ in pairs)))
        if key in series:
            problems.append("duplicate series: " + line)
        series[key] = v
    return series, problems


def scrape(name):
    st, body = request(ROLES[name], "GET", "/metrics")
    if st != 200:
        return None
    return parse(body.decode())[0]


def values(series, name, **labels):
    """The values of the series of name that carry these labels (others may differ)."""
    return [v for (n, ls), v in series.items()
            if n == name and all((k, val) in ls for k, val in labels.items())]


def total(series, name, **labels):
    return sum(values(series, name, **labels))


def wait(what, fn, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return check(False, what + " (within %d s)" % timeout)


def prom(path, **q):
    st, body = request(PROM, "GET", "/api/v1/" + path + "?" + urllib.parse.urlencode(q),
                       token=False)
    return json.loads(body)["data"] if st == 200 else None


def browser(standby):
    """The status page in Chromium (admin_browser.js): the key comes from its file."""
    node, art = shutil.which("node"), os.environ.get("TESSERA_ARTEFACTS") or os.path.join(
        os.getcwd(), "artefacts")
    if not check(node is not None and os.path.isdir(os.path.join(ROOT, "node_modules",
                                                                  "playwright-core")),
                 "node and playwright-core are installed (scripts/deps.sh, scripts/npm-deps.sh)"):
        return
    p = subprocess.run([node, os.path.join(ROOT, "tests", "system", "admin_browser.js"),
                        "http://127.0.0.1:%d" % LB, art, os.path.join(RUN, "secrets", "admin.key"),
                        "s2", "storage-2", standby], capture_output=True, text=True, timeout=120)
    print(p.stdout + p.stderr, end="")
    check(p.returncode == 0, "the status page shows the cluster (screenshots in %s)" % art)


def main():
    print("---- up")
    t0 = time.monotonic()
    cluster("up")
    print("cluster up in %.1f s" % (time.monotonic() - t0))

    print("---- every role's /metrics: the token, HELP and TYPE, no duplicate series")
    for name, port in ROLES.items():
        st, _ = request(port, "GET", "/metrics", token=False)
        check(st == 401, "%s: /metrics without the token answers 401 (got %d)" % (name, st))
        st, body = request(port, "GET", "/metrics")
        series, problems = parse(body.decode())
        check(st == 200 and len(series) > 10, "%s: /metrics answers %d with %d series"
              % (name, st, len(series)))
        check(not problems, "%s: valid Prometheus text %s" % (name, problems[:3]))
    s = scrape("worker-1")
    check(("tessera_jobs_oldest_age_seconds", ()) in s, "the worker exports the job queue")
    check(total(s, "tessera_db_primary") >= 2, "the worker sees the write pool and a leader")
    s = scrape("read-1")
    check(total(s, "tessera_ring_shard_up") == 3, "read-1 sees 3 shards up")
    check(total(s, "tessera_cache_redis_up") == 3, "read-1 sees 3 Redis nodes up")
    check(len([k for k in s if k[0] == "tessera_db_replica_lag_seconds"]) == 2,
          "read-1 measures the lag of 2 standbys")

    print("---- an upload moves the figures")
    before = [scrape(n) for n in ("write-1", "write-2", "worker-1")]
    up = lambda ss, n, **l: sum(total(x, n, **l) for x in ss)  # noqa: E731
    img = subprocess.run(["convert", "-size", "40x30", "xc:teal", "png:-"], capture_output=True,
                         check=True).stdout
    st, body = request(LB, "POST", "/api/v1/images", body=img, token=False)
    check(st == 201, "upload through the balancer: 201 (got %d)" % st)
    after = [scrape(n) for n in ("write-1", "write-2")]
    check(up(after, "tessera_uploads_total") == up(before[:2], "tessera_uploads_total") + 1,
          "tessera_uploads_total grew by 1 over the write services")
    check(up(after, "tessera_http_request_seconds_count", route="upload", **{"class": "2xx"})
          == up(before[:2], "tessera_http_request_seconds_count", route="upload",
                **{"class": "2xx"}) + 1, "the upload route's 2xx histogram counted it")
    done0 = total(before[2], "tessera_job_runs_total", kind="variants", outcome="done")
    wait("the worker ran the upload's variants job", lambda: total(
        scrape("worker-1"), "tessera_job_runs_total", kind="variants", outcome="done") > done0)
    check(total(scrape("worker-1"), "tessera_job_run_seconds_count", kind="variants") > 0,
          "tessera_job_run_seconds counted the run")

    print("---- Prometheus: every target up, the rules loaded")
    targets = wait("Prometheus has every target up", lambda: (lambda d: d if d and len(
        d["activeTargets"]) == len(ROLES) and all(t["health"] == "up" for t in d[
            "activeTargets"]) else None)(prom("targets")), timeout=40)
    if targets:
        check(True, "%d targets up" % len(targets["activeTargets"]))
    groups = prom("rules")["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    check({"TesseraShardDown", "TesseraInstanceDown", "TesseraHigh5xxRatio"} <= names,
          "the alert rules are loaded (%d)" % len(names))

    print("---- a stopped storage node shows down")
    cluster("stop", "storage-2")
    wait("read-1 sees shard s2 down", lambda: values(
        scrape("read-1"), "tessera_ring_shard_up", shard="s2") == [0])
    wait("Prometheus sees storage-2 down", lambda: prom(
        "query", query='up{instance_name="storage-2"} == 0')["result"], timeout=20)
    wait("TesseraInstanceDown is pending for storage-2", lambda: [
        a for a in prom("alerts")["alerts"] if a["labels"]["alertname"] == "TesseraInstanceDown"
        and a["labels"].get("instance_name") == "storage-2"], timeout=20)

    print("---- uploads while storage-2 is down leave hinted copies")
    hinted0 = sum(total(scrape(n), "tessera_ring_hinted_writes_total") for n in ("write-1", "write-2"))
    for i in range(12):  # a key has s2 among its 2 homes with odds 2/3
        img = subprocess.run(["convert", "-size", "%dx9" % (10 + i), "xc:orange", "png:-"],
                             capture_output=True, check=True).stdout
        st, _ = request(LB, "POST", "/api/v1/images", body=img, token=False)
        hinted = sum(total(scrape(n), "tessera_ring_hinted_writes_total")
                     for n in ("write-1", "write-2"))
        if st != 201 or hinted > hinted0:
            break
    check(st == 201 and hinted > hinted0, "an upload with storage-2 down wrote a hinted copy "
          "(tessera_ring_hinted_writes_total %d -> %d)" % (hinted0, hinted))

    print("---- the status page, with storage-2 and a database standby stopped")
    cluster("stop", "pg-replica-1")
    status = cluster("status").stdout
    stopped = [line.split() for line in status.splitlines() if re.match(r"pg-\d .* stopped", line)]
    check(len(stopped) == 1, "one database node stopped")
    standby = "127.0.0.1:%s" % stopped[0][2] if stopped else "?"
    browser(standby)
    cluster("start", stopped[0][0] if stopped else "pg-replica-1")
    cluster("start", "storage-2")
    wait("read-1 sees shard s2 up again", lambda: values(
        scrape("read-1"), "tessera_ring_shard_up", shard="s2") == [1])

    print("---- tessera repair records what it found: copies away from home")
    check(("tessera_ring_copies_away_from_home", ()) not in scrape("read-1"),
          "no repair walk yet: no tessera_ring_copies_away_from_home")
    for args, away in ((["--dry-run"], lambda v: v >= 1), ([], lambda v: v == 0)):
        p = subprocess.run([BIN, "repair", *args, "--config", os.path.join(RUN, "cluster.ini"),
                            "--storage.data_dir", os.path.join(RUN, "repair")],
                           capture_output=True, text=True, timeout=120)
        s = scrape("read-1")
        v = s.get(("tessera_ring_copies_away_from_home", ()))
        check(p.returncode == 0 and v is not None and away(v) and
              s.get(("tessera_ring_blobs_lost", ())) == 0,
              "after tessera repair %s: %s copies away from home, none lost"
              % (" ".join(args), v))

    print("---- the status answer without Prometheus")
    cluster("stop", "prometheus")
    with open(os.path.join(RUN, "secrets", "admin.key")) as f:
        key = f.read().strip()
    st, body = request(ROLES["read-2"], "GET", "/admin/status", token=False,
                       headers={"Authorization": "Bearer " + key})
    s = json.loads(body) if st == 200 else {}
    check(st == 200 and s.get("prometheus") == "unreachable" and "instances" not in s
          and len(s.get("ring", {}).get("shards", [])) == 3,
          "Prometheus stopped: /admin/status still answers what read-2 sees (%d %s)"
          % (st, s.get("prometheus")))


if __name__ == "__main__":
    RUN = tempfile.mkdtemp(prefix="tessera-metrics-")
    os.chmod(RUN, 0o755)  # PostgreSQL (user postgres) and nginx workers (nobody) read below it
    try:
        main()
    except Exception as e:  # report, then tear down
        check(False, "exception: %r" % e)
    finally:
        subprocess.run([CLUSTER, "destroy"], env=dict(
            os.environ, TESSERA_RUN=RUN, TESSERA_BIN=BIN, TESSERA_PORT_OFFSET=str(OFF),
            TESSERA_CLUSTER_PG_PORT=str(PG)), capture_output=True, timeout=120)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)
