"""Benchmark `kb serve` (not a test): p50/p95 latency of the published knowledge base over HTTP.

Serves a database (by default the 100,000-paper KB that benchmarks/bench_build.py --keep DIR leaves in
DIR/bench.db) with a real `kb serve` on 127.0.0.1 and times, per endpoint: the papers table with its facets,
row pages, full-text searches, every canned query of metadata.yml with varied parameters, and the graph pages'
JSON endpoints. Each request uses different parameters where the endpoint takes any, so that caches do not flatter
the figures; the first request of each endpoint is reported apart ("first") since it also warms SQLite's page
cache. Target: p95 < 150 ms for each.

    .venv/bin/python benchmarks/bench_serve.py --db /tmp/bench/bench.db [--requests 40] [--clients 1]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import random
import re
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import yaml
from datasette.utils import tilde_encode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serving import kb_serve  # noqa: E402  (tests/serving.py: kb serve in a child process)

TARGET_MS = 150.0


def endpoints(db: Path, n: int, seed: int = 7) -> dict[str, list[str]]:
    """Endpoint name -> n request paths with varied parameters."""
    name = db.stem
    conn = sqlite3.connect(db)
    rng = random.Random(seed)
    total = conn.execute("select max(rowid) from papers").fetchone()[0]

    def some_papers(k, where="1"):
        rows = []
        while len(rows) < k:
            rowid = rng.randint(1, total)
            row = conn.execute(f"select id from papers where rowid = ? and {where}", (rowid,)).fetchone()
            if row:
                rows.append(row[0])
        return rows

    papers = some_papers(n, "resolved = 1")
    others = some_papers(n, "resolved = 1")
    cited = [r[0] for r in conn.execute("select id from papers order by citation_count_kb desc limit 500")]
    cited = rng.sample(cited, min(n, len(cited)))
    concepts = [r[0] for r in conn.execute("select id from concepts order by id")]
    words = sorted({w.lower() for (t,) in conn.execute("select title from papers where rowid < 3000")
                    for w in re.findall(r"[A-Za-z]{5,}", t or "")})
    terms = rng.sample(words, min(n, len(words)))
    years = [r[0] for r in conn.execute("select distinct year from papers where year is not null order by year")]
    queries = yaml.safe_load((ROOT / "metadata.yml").read_text())["databases"]["kb"]["queries"]

    def pk(paper):
        return tilde_encode(paper)  # Datasette's own row-URL encoding (a DOI's "/" becomes ~2F, no redirect)

    out = {
        "papers table + facets (html)": [f"/{name}/papers"] * n,
        "papers table + facets (json)": [f"/{name}/papers.json?year={rng.choice(years)}" if i % 2 else
                                         f"/{name}/papers.json" for i in range(n)],
        "row page": [f"/{name}/papers/{pk(p)}" for p in papers],
        "FTS search (page, facets)": [f"/{name}/papers?_search={quote(t)}" for t in terms],
        "FTS search (json, no facets)": [f"/{name}/papers.json?_search={quote(t)}&_nofacet=1" for t in terms],
        "citations.json (top-N)": [f"/-/kb/citations.json?limit={rng.choice([100, 150, 300])}" for _ in range(n)],
        "citations.json?focus": [f"/-/kb/citations.json?focus={quote(p)}" for p in cited],
        "citations.json?concept&years": [f"/-/kb/citations.json?concept={rng.choice(concepts)}&year_min={rng.choice(years)}"
                                         for _ in range(n)],
        "concepts.json": ["/-/kb/concepts.json"] * n,
        "concepts.json?year_min": [f"/-/kb/concepts.json?year_min={rng.choice(years)}" for _ in range(n)],
        "timeline.json": ["/-/kb/timeline.json"] * n,
        "paper.json": [f"/-/kb/paper.json?id={quote(p)}" for p in papers],
        "citation graph page": ["/-/kb/citations"] * n,
    }
    for qname, query in queries.items():
        paths = []
        for i in range(n):
            values = {"paper": cited[i % len(cited)], "concept": rng.choice(concepts), "min_papers": "",
                      "concept_a": concepts[i % len(concepts)], "concept_b": concepts[(i + 1) % len(concepts)],
                      "from_paper": papers[i], "to_paper": cited[i % len(cited)] if i % 2 else others[i],
                      "max_steps": ""}
            params = {p: values[p] for p in dict.fromkeys(re.findall(r":(\w+)", query["sql"]))}
            paths.append(f"/{name}/{qname}.json?_shape=objects&" + urlencode(params))
        out[f"canned: {qname}"] = paths
    return out


def timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int]:
    t = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "identity"})
    response = conn.getresponse()
    response.read()
    return (time.perf_counter() - t) * 1000, response.status


def pct(values, q):
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="knowledge base to serve (e.g. DIR/bench.db of bench_build)")
    ap.add_argument("--requests", type=int, default=40, help="requests per endpoint")
    ap.add_argument("--clients", type=int, default=1, help="concurrent clients per endpoint")
    args = ap.parse_args()
    if not args.db.is_file():
        sys.exit(f"no database at {args.db}: run benchmarks/bench_build.py --keep DIR first")
    conn = sqlite3.connect(args.db)
    print(f"{args.db}: {conn.execute('select count(*) from papers').fetchone()[0]:,} papers, "
          f"{conn.execute('select count(*) from citations').fetchone()[0]:,} citations")
    conn.close()
    t = time.perf_counter()
    server = contextlib.ExitStack()
    _, port = server.enter_context(kb_serve(args.db, cwd=ROOT, timeout=120))
    print(f"kb serve answered after {time.perf_counter() - t:.1f}s; {args.requests} requests per endpoint, "
          f"{args.clients} client(s)")
    plan = endpoints(args.db, args.requests)
    failures = 0
    try:
        print(f"{'endpoint':38} {'first':>8} {'p50':>8} {'p95':>8} {'max':>8}  ms")
        for label, paths in plan.items():
            first_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            first, status = timed_get(first_conn, paths[0])
            first_conn.close()
            times, statuses = [], [status]
            lock = threading.Lock()

            def worker(chunk):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                for path in chunk:
                    ms, st = timed_get(c, path)
                    with lock:
                        times.append(ms)
                        statuses.append(st)
                c.close()

            chunks = [paths[1:][k::args.clients] for k in range(args.clients)]
            threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            bad = [s for s in statuses if s != 200]
            failures += len(bad)
            times.sort()
            p95 = pct(times, 95)
            flag = "" if p95 < TARGET_MS else "  <-- over target"
            print(f"{label:38} {first:8.1f} {pct(times, 50):8.1f} {p95:8.1f} {times[-1]:8.1f}{flag}"
                  + (f"  ({len(bad)} non-200: {sorted(set(bad))})" if bad else ""))
    finally:
        server.close()
    print(f"target: p95 < {TARGET_MS:.0f} ms per endpoint; {failures} failed requests")


if __name__ == "__main__":
    main()
