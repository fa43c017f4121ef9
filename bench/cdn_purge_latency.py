#!/usr/bin/python3
"""Delete-to-edge-404 latency: upload N images through the edge, make each a hit,
delete it, and time until the edge answers 404. Prints median, p90, max.

usage: bench/cdn_purge_latency.py [N] [EDGE_PORT]   (a cluster with the edge must be up)
"""
import http.client
import json
import os
import statistics
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
EDGE = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
IMG = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "testdata", "images",
                   "accept_jpeg_baseline_rocket_640x427.jpg")


def req(method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", EDGE, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    out = r.status, r.getheader("X-Cache"), r.read()
    c.close()
    return out


data = open(IMG, "rb").read()
lat = []
for i in range(N):
    st, _, out = req("POST", "/api/v1/images", data, {"Content-Type": "application/octet-stream"})
    assert st == 201, out
    img = json.loads(out)
    path = "/i/%s.jpg" % img["id"]
    req("GET", path)
    st, xc, _ = req("GET", path)
    assert xc == "HIT", xc
    t0 = time.monotonic()
    st, _, _ = req("DELETE", "/api/v1/images/" + img["id"], None,
                   {"X-Delete-Token": img["delete_token"]})
    assert st == 204
    while req("GET", path)[0] != 404:
        time.sleep(0.005)
    lat.append((time.monotonic() - t0) * 1000)
lat.sort()
print("deletes %d: median %.0f ms, p90 %.0f ms, max %.0f ms, min %.0f ms"
      % (N, statistics.median(lat), lat[int(0.9 * (N - 1))], lat[-1], lat[0]))
