#!/usr/bin/python3
"""Lint: the layers of src/ (docs/internals/architecture.md) hold.

A folder includes only its own headers and those of folders below it:
main.c -> cli/ -> services/ -> app/ -> the machinery (meta store image cache cdn prom jobs http)
-> config/ -> core/. Inside the machinery a folder may use another, but the folder graph
has no cycle, and no module below services/ includes http/ (the HTTP server is the
services' business). Prints every violation with the file and line; exit 1 if any.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
RANK = {"core": 0, "config": 1, "meta": 2, "store": 2, "image": 2, "cache": 2, "cdn": 2, "prom": 2,
        "jobs": 2, "http": 2, "app": 3, "services": 4, "cli": 5, "": 6}
INC = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"', re.M)


def main():
    bad = []
    edges = {}
    for d, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(d, f)
            folder = os.path.relpath(d, SRC)
            folder = "" if folder == "." else folder
            if folder not in RANK:
                bad.append("%s: folder %s/ has no place in the layers (tests/lint/layers.py)"
                           % (os.path.relpath(path, SRC), folder))
                continue
            text = open(path, encoding="utf-8").read()
            for m in INC.finditer(text):
                to = m.group(1)
                line = text.count("\n", 0, m.start()) + 1
                where = "src/%s:%d" % (os.path.relpath(path, SRC), line)
                if to == folder:
                    continue
                if to not in RANK:
                    bad.append("%s: includes %s/, which has no place in the layers" % (where, to))
                    continue
                edges.setdefault(folder, {}).setdefault(to, where)
                if RANK[to] > RANK[folder]:
                    bad.append("%s: %s/ includes %s/, a layer above it" % (where, folder, to))
                if to == "http" and RANK[folder] < RANK["services"]:
                    bad.append("%s: %s/ includes http/ (only services/ and above may)"
                               % (where, folder))
    # cycles among folders (depth-first search)
    state = {}

    def visit(n, stack):
        state[n] = 1
        for m in edges.get(n, {}):
            if state.get(m) == 1:
                cyc = stack[stack.index(m):] + [m] if m in stack else [n, m]
                bad.append("include cycle %s (first edge at %s)"
                           % (" -> ".join(c or "main" for c in cyc), edges[n][m]))
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    for b in bad:
        print("layers: " + b)
    nfiles = sum(len(fs) for _, _, fs in os.walk(SRC))
    print("layers: %d files, %d folder edges, %d violations" % (
        nfiles, sum(len(v) for v in edges.values()), len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
