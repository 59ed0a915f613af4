"""Benchmark `kb serve` (not a test): p50/p95 latency of the published knowledge base over HTTP.

Serves a database (by default the 100,000-paper KB that benchmarks/bench_build.py --keep DIR leaves in
DIR/bench.db) with a real `kb serve` on 127.0.0.1 and times, per endpoint: the papers table with its facets,
row pages, full-text searches, every canned query of metadata.yml with varied parameters, and the graph pages'
JSON endpoints. Each request uses different parameters where the endpoint takes any, so that caches do not flatter
the figures; the first request of each endpoint is reported apart ("first") since it also warms SQLite's page
cache. Target: p95 < 150 ms for each.

    .venv/bin/python benchmarks/bench_serve.py --db /tmp/bench/bench.db [--requests 40] [--clients 1]
        [--load-clients 20 --load-seconds 30] [--processes 2] [--skip-endpoints]

--load-clients N adds a load test: N concurrent clients, each with its own keep-alive connection, request paths
drawn at random from every endpoint above for --load-seconds; it prints throughput, p50/p95/max over all requests
and p95 per endpoint under that load, and counts errors (non-200 answers, timeouts, refused connections).
--processes N serves with `kb serve --processes N` (N server processes over the same immutable file).
kb serve answers repeated GETs from memory (kb.publish.respcache; `--cache-mb`, 0 turns it off): --unique adds a
distinct, ignored `_u=N` parameter to every request of the load test so that none is a repeat (the cache is then
no help, only a cost); answers that came from it are counted. --code DIR serves with another checkout's kb (e.g. a
`git worktree` of the previous commit) for before/after runs on the same database.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
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
            params = {p: values.get(p, "") for p in dict.fromkeys(re.findall(r":(\w+)", query["sql"]))}
            paths.append(f"/{name}/{qname}.json?_shape=objects&" + urlencode(params))
        out[f"canned: {qname}"] = paths
    return out


def timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int]:
    ms, status, _ = timed_get_hit(conn, path)
    return ms, status


def timed_get_hit(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, str]:
    """(milliseconds, status, "hit" when kb serve answered from its response cache, "incomplete" for a page whose
    facets were still being counted in the background (Cache-Control: no-store), else "")."""
    t = time.perf_counter()
    conn.request("GET", path, headers={"Accept-Encoding": "identity"})
    response = conn.getresponse()
    response.read()
    ms = (time.perf_counter() - t) * 1000
    if response.getheader("x-kb-cache") == "hit":
        return ms, response.status, "hit"
    return ms, response.status, "incomplete" if response.getheader("cache-control") == "no-store" else ""


def pct(values, q):
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def server_cpu_seconds(port: int) -> float | None:
    """CPU seconds used so far by the `kb serve` listening on `port` and its worker processes (Linux /proc):
    steadier than latency when other work shares the machine."""
    clk = os.sysconf("SC_CLK_TCK")
    stats = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(d.name)] = (cmd, int(fields[1]), (int(fields[11]) + int(fields[12])) / clk)
    roots = {pid for pid, (cmd, _, _) in stats.items() if b"serve" in cmd and str(port).encode() in cmd}
    if not roots:
        return None
    tree = set(roots)
    while True:
        more = {pid for pid, (_, ppid, _) in stats.items() if ppid in tree} - tree
        if not more:
            break
        tree |= more
    return sum(stats[pid][2] for pid in tree)


def load_test(port: int, plan: dict[str, list[str]], clients: int, seconds: float, seed: int = 11,
              unique: bool = False) -> int:
    """`clients` threads issue requests drawn from every endpoint for `seconds`; prints the figures, returns errors.
    With `unique`, every request gets its own `_u=N` parameter (ignored by the server): no two are the same."""
    pool = [(label, path) for label, paths in plan.items() for path in paths]
    results: list[tuple[str, float, int]] = []
    hits: list[int] = []
    counter = iter(range(10**9))
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k):
        rng = random.Random(seed + k)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            label, path = rng.choice(pool)
            if unique:
                with lock:
                    n = next(counter)
                path += ("&" if "?" in path else "?") + f"_u={n}"
            try:
                ms, st, kind = timed_get_hit(conn, path)
                hit = kind == "hit"
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(f"{label}: {type(exc).__name__}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            with lock:
                results.append((label, ms, st))
                hits.append(hit)
        conn.close()

    cpu0 = server_cpu_seconds(port)
    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    cpu1 = server_cpu_seconds(port)
    times = sorted(ms for _, ms, _ in results)
    bad = [st for _, _, st in results if st != 200]
    print(f"\nload: {clients} concurrent clients for {elapsed:.1f}s, requests drawn from every endpoint"
          f"{', every one unique' if unique else ' (the mix repeats paths)'}: "
          f"{len(results):,} answered ({len(results) / elapsed:.0f}/s), {len(bad)} non-200, {len(errors)} failed; "
          f"{sum(hits):,} from the response cache; load average {os.getloadavg()[0]:.1f}")
    if cpu0 is not None and cpu1 is not None and results:
        print(f"  server CPU: {cpu1 - cpu0:.1f} s in {elapsed:.1f} s ({(cpu1 - cpu0) / elapsed:.2f} cores busy), "
              f"{(cpu1 - cpu0) / len(results) * 1000:.1f} ms per request")
    if times:
        print(f"  all requests: p50 {pct(times, 50):.0f} ms, p95 {pct(times, 95):.0f} ms, max {times[-1]:.0f} ms "
              f"(target p95 < 400 ms)")
        print(f"  {'endpoint':38} {'n':>5} {'p50':>8} {'p95':>8}  ms")
        for label in plan:
            ts = sorted(ms for lb, ms, _ in results if lb == label)
            if ts:
                print(f"  {label:38} {len(ts):5d} {pct(ts, 50):8.1f} {pct(ts, 95):8.1f}")
    for e in sorted(set(errors))[:10]:
        print(f"  error: {e}")
    return len(bad) + len(errors)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="knowledge base to serve (e.g. DIR/bench.db of bench_build)")
    ap.add_argument("--requests", type=int, default=40, help="requests per endpoint")
    ap.add_argument("--clients", type=int, default=1, help="concurrent clients per endpoint")
    ap.add_argument("--load-clients", type=int, default=0, help="then a mixed load test with this many clients")
    ap.add_argument("--load-seconds", type=float, default=30.0, help="duration of the load test")
    ap.add_argument("--processes", type=int, default=1, help="server processes (kb serve --processes)")
    ap.add_argument("--skip-endpoints", action="store_true", help="only the load test")
    ap.add_argument("--unique", action="store_true", help="load test: every request unique (no cache hits)")
    ap.add_argument("--cache-mb", type=int, default=None, help="kb serve --cache-mb (default: kb serve's)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose kb serves (default: this one)")
    args = ap.parse_args()
    if not args.db.is_file():
        sys.exit(f"no database at {args.db}: run benchmarks/bench_build.py --keep DIR first")
    conn = sqlite3.connect(args.db)
    print(f"{args.db}: {conn.execute('select count(*) from papers').fetchone()[0]:,} papers, "
          f"{conn.execute('select count(*) from citations').fetchone()[0]:,} citations")
    conn.close()
    t = time.perf_counter()
    server = contextlib.ExitStack()
    extra = ("--processes", str(args.processes)) if args.processes != 1 else ()
    if args.cache_mb is not None:
        extra += ("--cache-mb", str(args.cache_mb))
    _, port = server.enter_context(kb_serve(args.db.resolve(), *extra, cwd=args.code.resolve(), timeout=300))
    print(f"kb serve ({args.processes} process{'es' if args.processes > 1 else ''}) answered after "
          f"{time.perf_counter() - t:.1f}s; {args.requests} requests per endpoint, {args.clients} client(s); "
          f"code {args.code.resolve()}; load average {os.getloadavg()[0]:.1f}")
    plan = endpoints(args.db, args.requests)
    failures = 0
    try:
        print(f"{'endpoint':38} {'first':>8} {'p50':>8} {'p95':>8} {'max':>8}  ms")
        for label, paths in ({} if args.skip_endpoints else plan).items():
            first_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            first, status = timed_get(first_conn, paths[0])
            first_conn.close()
            times, statuses, hits = [], [status], []
            lock = threading.Lock()

            def worker(chunk):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                for path in chunk:
                    ms, st, kind = timed_get_hit(c, path)
                    with lock:
                        times.append(ms)
                        statuses.append(st)
                        hits.append(kind)
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
                  + (f"  ({len(bad)} non-200: {sorted(set(bad))})" if bad else "")
                  + (f"  ({hits.count('hit')} of {len(hits)} from the response cache)" if "hit" in hits else "")
                  + (f"  ({hits.count('incomplete')} of {len(hits)} with facets still being counted)"
                     if "incomplete" in hits else ""))
        if args.load_clients:
            failures += load_test(port, plan, args.load_clients, args.load_seconds, unique=args.unique)
    finally:
        server.close()
    print(f"target: p95 < {TARGET_MS:.0f} ms per endpoint; {failures} failed requests")


if __name__ == "__main__":
    main()
