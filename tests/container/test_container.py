#!/usr/bin/python3
"""The container image and the Compose topology, built and run (label container).

Starts the private Docker daemon (deploy/docker/docker.sh; stopped again at the end when this
test started it), makes the base image when it is missing (debootstrap, cached in the daemon's
data root with the build layers), builds the tessera image and the servers' image, then:

1. `tessera serve` alone (deploy/compose/serve.yml): runs as uid 10001 with no compiler in the
   image, Docker's health check turns healthy, an upload reads back byte-exact, and survives
   `down` and `up` in its named volume.
2. The whole topology (deploy/compose/docker-compose.yml, ports of API.md + 750): every service
   healthy, the one-shots done; the corpus round trip and a delete through the balancer (and
   the edge: cached, then purged); read scaled from 3 to 5 and back under a GET loop with zero
   failed requests; one read container killed (SIGKILL) under a GET loop with zero failed
   requests; `down` and `up` again with every image still there.

Exit 77 (skipped, never passed) where Docker cannot run: not root, or no dockerd, docker-compose
or debootstrap (scripts/deps.sh installs them).
"""
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "system"))
import tessera_fixture as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER_SH = os.path.join(ROOT, "deploy", "docker", "docker.sh")
COMPOSE_DIR = os.path.join(ROOT, "deploy", "compose")
DATA = os.environ.get("TESSERA_TESTDATA", os.path.join(ROOT, "..", "shared", "testdata", "images"))
# Ports of API.md moved by an offset of this test's own (other tests use 20-699), PostgreSQL's
# below the ephemeral range, as in test_cluster.
OFF = int(os.environ.get("TESSERA_TEST_CONTAINER_PORT_OFFSET", "750"))
PG = 25432 + OFF
EDGE, LB = 8000 + OFF, 8080 + OFF
SERVE = LB + 1
IMAGE, INFRA = "tessera:test", "tessera-infra:test"
PROJECT = "tessera-test"
T0 = time.monotonic()

C = tf.Checks("test_container")
check = C.check


def say(msg):
    print("[%6.1f s] %s" % (time.monotonic() - T0, msg), flush=True)


def run(cmd, timeout=600, env_extra=None, ok=True):
    env = dict(os.environ, DOCKER_HOST=DOCKER_HOST, TESSERA_IMAGE=IMAGE, TESSERA_INFRA_IMAGE=INFRA)
    env.update(env_extra or {})
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        print(p.stdout[-3000:] + p.stderr[-3000:], file=sys.stderr)
        raise RuntimeError("%s failed (%d)" % (" ".join(cmd[:4]), p.returncode))
    return p


def docker(*args, **kw):
    return run(["/usr/bin/docker", *args], **kw)


def compose(*args, **kw):
    return run(["docker-compose", "--env-file", os.path.join(STATE, ".env"), "-f",
                os.path.join(COMPOSE_DIR, "docker-compose.yml"), *args], **kw)


def serve_compose(*args, **kw):
    return run(["docker-compose", "-p", PROJECT + "-serve", "-f", os.path.join(COMPOSE_DIR, "serve.yml"),
                *args], env_extra={"TESSERA_PORT": str(SERVE),
                                   "TESSERA_PUBLIC_URL": "http://127.0.0.1:%d" % SERVE}, **kw)


def request(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except OSError:
        return 0, {}, b""
    finally:
        c.close()


def containers(project, service=None, all_=False):
    """{name: (state, health)} of a Compose project's containers (of one service)."""
    flt = ["--filter", "label=com.docker.compose.project=" + project]
    if service:
        flt += ["--filter", "label=com.docker.compose.service=" + service]
    ids = docker("ps", "-q", *(["-a"] if all_ else []), *flt).stdout.split()
    out = {}
    if ids:
        fmt = "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}"
        for line in docker("inspect", "-f", fmt, *ids).stdout.splitlines():
            name, state, health, code = line.split()
            out[name.lstrip("/")] = (state, health, int(code))
    return out


def all_healthy(project, service, n):
    cs = containers(project, service)
    return len(cs) == n and all(s == "running" and h == "healthy" for s, h, _ in cs.values())


class GetLoop:
    """GETs through the balancer from `threads` keep-alive clients until stopped; counts answers."""

    def __init__(self, paths, threads=4, after=50):
        self.paths, self.ok, self.failed, self.stop_flag = paths, 0, [], False
        self.after = after  # answers to see after the change before the loop stops
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(threads)]

    def loop(self, i):
        c = None
        k = i
        deadline = time.monotonic() + 300  # bounded even if never stopped
        while not self.stop_flag and time.monotonic() < deadline:
            path = self.paths[k % len(self.paths)]
            k += 1
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", LB, timeout=10)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append("%s %d" % (path, r.status))
            except OSError as e:
                with self.lock:
                    self.failed.append("%s %s" % (path, e))
                c = None

    def __enter__(self):
        for t in self.threads:
            t.start()
        # the loop runs before the change it is to observe
        tf.wait_for(lambda: self.ok >= 50, 60, "the GET loop to start")
        return self

    def __exit__(self, *exc):
        n = self.ok
        tf.wait_for(lambda: self.ok >= n + self.after, 60, "the GET loop to go on after the change")
        self.stop_flag = True
        for t in self.threads:
            t.join()


def test_image():
    say("image: user, contents, size")
    out = docker("run", "--rm", "--network", "host", "--entrypoint", "sh", IMAGE, "-c",
                 "id -u; command -v cc gcc clang postgres redis-server nginx varnishd || true").stdout.split()
    check(out[:1] == ["10001"] and len(out) == 1, "the image runs as uid 10001 with no compiler or "
          "server besides tessera (%s)" % out)
    insp = json.loads(docker("image", "inspect", IMAGE).stdout)[0]
    cfg = insp["Config"]
    check("/var/lib/tessera" in (cfg.get("Volumes") or {}), "data volume /var/lib/tessera declared")
    check(cfg.get("StopSignal") == "SIGTERM" and cfg.get("Healthcheck") is not None,
          "STOPSIGNAL SIGTERM and a HEALTHCHECK")
    say("image %s: %.0f MB" % (IMAGE, insp["Size"] / 1e6))


def test_serve():
    say("tessera serve alone (serve.yml) on 127.0.0.1:%d" % SERVE)
    serve_compose("down", "-v", ok=False)
    serve_compose("up", "-d")
    check(tf.wait_for(lambda: all_healthy(PROJECT + "-serve", "serve", 1), 90,
                      "Docker's health check of serve"), "serve: Docker's health check turns healthy")
    data = open(os.path.join(DATA, "accept_jpeg_baseline_rocket_640x427.jpg"), "rb").read()
    st, _, body = request(SERVE, "POST", "/api/v1/images", data)
    if not check(st == 201, "serve: upload answers 201 (%d)" % st):
        return
    img = json.loads(body)
    st, _, got = request(SERVE, "GET", "/i/%s" % img["id"])
    check(st == 200 and hashlib.sha256(got).hexdigest() == img["sha256"], "serve: reads back byte-exact")
    say("serve: down and up again")
    serve_compose("down")
    serve_compose("up", "-d")
    tf.wait_for(lambda: request(SERVE, "GET", "/healthz")[0] == 200, 60, "serve to answer again")
    st, _, got = request(SERVE, "GET", "/i/%s" % img["id"])
    check(st == 200 and hashlib.sha256(got).hexdigest() == img["sha256"],
          "serve: the image survives down and up (named volume)")
    t = time.monotonic()
    serve_compose("down", "-v")
    check(time.monotonic() - t < 10, "serve: stops on SIGTERM without waiting for SIGKILL (%.1f s)"
          % (time.monotonic() - t))


def test_topology():
    global STATE
    STATE = tempfile.mkdtemp(prefix="tessera-compose-")
    run([os.path.join(COMPOSE_DIR, "setup")],
        env_extra={"TESSERA_COMPOSE_STATE": STATE, "TESSERA_PORT_OFFSET": str(OFF),
                   "TESSERA_COMPOSE_PG_PORT": str(PG), "COMPOSE_PROJECT_NAME": PROJECT,
                   "TESSERA_BASE": "local/debian:12"})
    try:
        topology()
    finally:
        say("topology: down -v")
        compose("down", "-v", "--remove-orphans", ok=False, timeout=300)
        shutil.rmtree(STATE, ignore_errors=True)


def up_and_ready(what):
    t = time.monotonic()
    p = compose("up", "-d", timeout=600, ok=False)
    check(p.returncode == 0, "%s: up -d succeeds%s" % (what, "" if p.returncode == 0 else "\n" + p.stderr[-2000:]))
    ok = tf.wait_for(lambda: request(EDGE, "GET", "/lb/healthz")[0] == 200, 60, "the edge")
    say("%s: up in %.1f s" % (what, time.monotonic() - t))
    return ok


def topology():
    say("topology: up (ports +%d)" % OFF)
    compose("down", "-v", "--remove-orphans", ok=False, timeout=300)
    up_and_ready("topology")
    oneshot = ("pg-setup", "migrate", "redis-init", "ring-apply")

    def not_ready():
        """The containers not (yet) as they should be: servers running and healthy (the worker
        has no health check), one-shots exited 0; all 22 present."""
        cs = containers(PROJECT, all_=True)
        bad = {n: s for n, s in cs.items()
               if (any("_%s_" % o in n for o in oneshot) and (s[0], s[2]) != ("exited", 0))
               or (not any("_%s_" % o in n for o in oneshot)
                   and (s[0] != "running" or s[1] not in ("healthy", "-")))}
        return bad if bad or len(cs) != 22 else None

    tf.wait_for(lambda: not_ready() is None, 60, "every container healthy or done")
    bad = not_ready()
    check(bad is None, "22 containers: every server running and healthy, every one-shot done%s"
          % ("" if bad is None else " (not so: %s)" % bad))

    say("topology: the corpus through the balancer")
    accepted = [r["file"] for r in tf.load_manifest() if r["expected"] == "accept"]
    images = {}
    for f in accepted:
        data = open(os.path.join(DATA, f), "rb").read()
        st, _, body = request(LB, "POST", "/api/v1/images", data)
        if not check(st == 201, "upload %s: %d" % (f, st)):
            continue
        img = json.loads(body)
        images[img["id"]] = img
        st, _, got = request(LB, "GET", "/i/%s" % img["id"])
        check(st == 200 and hashlib.sha256(got).hexdigest() == img["sha256"],
              "%s reads back byte-exact through the balancer" % f)
    if not check(len(images) >= 2, "%d images uploaded" % len(images)):
        return
    ids = list(images)

    say("topology: the edge caches, a delete purges it")
    gone = images.pop(ids[0])
    path = "/i/%s" % gone["id"]
    request(EDGE, "GET", path)
    st, h, _ = request(EDGE, "GET", path)
    check(st == 200 and h.get("x-cache") == "HIT", "the edge serves the image from its cache")
    st, _, _ = request(LB, "DELETE", "/api/v1/images/%s" % gone["id"],
                       headers={"X-Delete-Token": gone["delete_token"]})
    check(st == 204, "delete through the balancer: 204 (%d)" % st)
    check(request(LB, "GET", path)[0] == 404, "the deleted image answers 404 through the balancer")
    check(tf.wait_for(lambda: request(EDGE, "GET", path)[0] == 404, 60, "the purge"),
          "the worker purged the edge: 404 there too")

    paths = ["/i/%s" % i for i in images] + ["/api/v1/images/%s" % i for i in images]
    say("topology: read scaled 3 -> 5 -> 3 under a GET loop")
    with GetLoop(paths) as loop:
        compose("up", "-d", "--no-deps", "--scale", "read=5", "read")
        check(tf.wait_for(lambda: all_healthy(PROJECT, "read", 5), 90, "5 read replicas"),
              "5 read replicas running and healthy")
        compose("up", "-d", "--no-deps", "--scale", "read=3", "read", timeout=120)
        check(tf.wait_for(lambda: len(containers(PROJECT, "read")) == 3, 60, "3 read replicas"),
              "back to 3 read replicas")
    check(not loop.failed, "scaling: %d GETs, %d failed %s" % (loop.ok, len(loop.failed), loop.failed[:5]))

    say("topology: one read container killed under a GET loop")
    victim = sorted(containers(PROJECT, "read"))[0]
    # long enough after the kill for every keep-alive connection nginx had to it to be tried
    with GetLoop(paths, after=3000) as loop:
        docker("kill", victim)  # SIGKILL, delivered when it returns
    state = docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}}", victim).stdout.split()
    check(state[0] != "running" or int(state[1]) > 0,
          "%s was killed (state, restarts, exit code: %s)" % (victim, " ".join(state)))
    check(not loop.failed, "kill -9 of %s: %d GETs, %d failed %s" % (victim, loop.ok, len(loop.failed), loop.failed[:5]))

    say("topology: down and up again")
    t = time.monotonic()
    compose("down", timeout=300)
    say("topology: down in %.1f s" % (time.monotonic() - t))
    check(not containers(PROJECT, all_=True), "down leaves no container")
    up_and_ready("topology again")
    kept = 0
    for i, img in images.items():
        st, _, got = request(LB, "GET", "/i/%s" % i)
        kept += st == 200 and hashlib.sha256(got).hexdigest() == img["sha256"]
    check(kept == len(images), "every image still there after down and up: %d of %d" % (kept, len(images)))
    check(request(LB, "GET", path)[0] == 404, "the deleted image is still deleted")
    data = open(os.path.join(DATA, accepted[0]), "rb").read()
    check(request(LB, "POST", "/api/v1/images", data)[0] == 201, "uploads work again after up")


def main():
    global DOCKER_HOST
    if os.geteuid() != 0:
        print("SKIP: Docker needs root here")
        sys.exit(77)
    missing = [p for p in ("/usr/sbin/dockerd", "/usr/bin/docker") if not os.access(p, os.X_OK)]
    missing += [c for c in ("docker-compose", "debootstrap") if shutil.which(c) is None]
    if missing:
        print("SKIP: not installed: %s (scripts/deps.sh)" % " ".join(missing))
        sys.exit(77)
    was_running = subprocess.run([DOCKER_SH, "status"], capture_output=True).returncode == 0
    DOCKER_HOST = subprocess.run([DOCKER_SH, "up"], capture_output=True, text=True, check=True).stdout.strip()
    say("dockerd at %s (%s)" % (DOCKER_HOST, "already running" if was_running else "started"))
    try:
        t = time.monotonic()
        p = run([DOCKER_SH, "build"], timeout=1500)
        for line in p.stderr.splitlines():
            if line.startswith("docker.sh:"):
                say(line)
        say("base and images ready in %.1f s" % (time.monotonic() - t))
        C.run(test_image)
        C.run(test_serve)
        C.run(test_topology)
    finally:
        if not was_running:
            subprocess.run([DOCKER_SH, "down"], timeout=120)
    say("done")
    C.finish()


if __name__ == "__main__":
    main()
