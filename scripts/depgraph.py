#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""depgraph.py: which source file depends on which, and the loops among them.

Two graphs over src/ and include/herald/:
  calls:    file A -> file B when A's object references a symbol B's object defines (nm on the
            objects of the core library in a build directory: exact, macros and inlines aside);
  includes: header or source A -> header B for each #include "herald/..." or local "x.h".
A loop is a strongly connected component of more than one file. Prints each graph's loops, or
"none"; with --edges also every edge. Exits 1 when --fail-on-loops is given and a loop exists.

With --dirs, one node per directory (src/net, src/http, ...).

Usage: scripts/depgraph.py [--build DIR] [--under src/net ...] [--dirs] [--edges] [--fail-on-loops]
ctest runs it over the whole tree, by file and by directory, with --fail-on-loops
(unit.depgraph, unit.depgraph_dirs).
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def objects(build):
    objdir = os.path.join(build, "CMakeFiles", "herald_core.dir")
    for dirpath, _, names in os.walk(objdir):
        for n in names:
            if n.endswith(".c.o"):
                path = os.path.join(dirpath, n)
                src = os.path.relpath(path, objdir)[: -len(".o")]
                if os.path.exists(os.path.join(ROOT, src)):  # not a removed file's stale object
                    yield src, path


def call_graph(build):
    defined, used = {}, {}
    objs = list(objects(build))
    if not objs:
        sys.exit(f"depgraph: no object of herald_core under {build}: build it first")
    for src, obj in objs:
        out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
        used[src] = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":
                defined[parts[2]] = src
            elif len(parts) == 2 and parts[0] == "U":
                used[src].add(parts[1])
    edges = {}
    for src, syms in used.items():
        edges[src] = {}
        for s in syms:
            dst = defined.get(s)
            if dst and dst != src:
                edges[src].setdefault(dst, set()).add(s)
    return edges


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def include_graph():
    files = []
    for top in ("src", "include"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            files += [os.path.join(dirpath, n) for n in names if n.endswith((".c", ".h"))]
    edges = {}
    for f in files:
        rel = os.path.relpath(f, ROOT)
        edges[rel] = {}
        with open(f, encoding="utf-8", errors="replace") as fh:
            for inc in INCLUDE.findall(fh.read()):
                for cand in (os.path.join(ROOT, "include", inc),
                             os.path.join(os.path.dirname(f), inc)):
                    if os.path.exists(cand):
                        edges[rel][os.path.relpath(cand, ROOT)] = {inc}
                        break
    return edges


def by_dir(edges):
    out = {}
    for a, d in edges.items():
        da = os.path.dirname(a)
        out.setdefault(da, {})
        for b, syms in d.items():
            db = os.path.dirname(b)
            if db != da:
                out[da].setdefault(db, set()).update(syms)
    return out


def loops(edges):
    """Tarjan's strongly connected components with more than one node."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def report(name, edges, under, show_edges):
    prefixes = tuple(under or [""])
    sel = {a: {b: s for b, s in d.items() if b.startswith(prefixes)}
           for a, d in edges.items() if a.startswith(prefixes)}
    found = loops(sel)
    print(f"== {name} loops under {' '.join(under or ['.'])}: {len(found) or 'none'}")
    for comp in found:
        print("  " + " <-> ".join(comp))
        for a in comp:
            for b in sorted(sel[a]):
                if b in comp:
                    print(f"    {a} -> {b}: {', '.join(sorted(sel[a][b])[:6])}")
    if show_edges:
        for a in sorted(sel):
            for b in sorted(sel[a]):
                print(f"  {a} -> {b}")
    return len(found)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--under", action="append",
                    help="only files under this path (src/net, ...); may be repeated")
    ap.add_argument("--edges", action="store_true")
    ap.add_argument("--dirs", action="store_true", help="one node per directory (module)")
    ap.add_argument("--fail-on-loops", action="store_true")
    a = ap.parse_args()
    graphs = [("call", call_graph(a.build)), ("include", include_graph())]
    n = 0
    for name, edges in graphs:
        if a.dirs:
            edges = by_dir(edges)
        n += report(name, edges, a.under, a.edges)
    return 1 if a.fail_on_loops and n else 0


if __name__ == "__main__":
    sys.exit(main())
