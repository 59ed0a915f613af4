"""Benchmark kb at scale (run by hand, not a test): N papers with ~10 citations each, built and served.

    .venv/bin/python benchmarks/bench_scale.py [--papers 1000000] [--keep DIR] [--requests 20] [--code TREE]
        [--skip-import] [--skip-serve] [--serve-only]

Generates the records as benchmarks/bench_build.py does (the real MEDLINE sample replicated with renumbered
PMIDs, 5-15 references per paper by preferential attachment, 2 % free-text references), then:
1. import: the time `kb import` would take for N records, from its measured rate on a 30,000-record PubMed
   XML file (benchmarks/bench_import.py; memory stays flat as the file grows, so the rate carries over);
   measured here on --import-sample records of real XML unless --skip-import;
2. build: `kb.store.build` in a child process (bench_build.run_build: phases, wall time, peak memory of all
   its processes at once); --code TREE builds with another tree's kb (the previous code, for before/after);
3. serve: `kb serve --cache-mb 0` on the result and single-client p50/p95 of the main pages (papers table with
   facets, a row page, a full-text search page with facets, the citation graph JSON and page, the timeline).

With --keep DIR the records generated there are reused (and --serve-only serves the database built before).
At 1,000,000 papers (7 GB of records, 10.6 GB database) the build needs ~9 GiB at its peak: run it with
nothing else running.
Targets of issue 10: import + build under 10 minutes, memory under 8 GiB, p95 under 150 ms on the main pages.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from bench_build import generate, run_build  # noqa: E402
from bench_serve import pct, timed_get_hit  # noqa: E402
from serving import kb_serve  # noqa: E402


def measure_import(records: int) -> dict:
    """records/s and CPU per record of `kb import` on a real-XML file of `records` articles (bench_import)."""
    import bench_import

    with tempfile.TemporaryDirectory(prefix="kb-scale-import-") as tmp:
        plain = Path(tmp) / "bench.xml"
        n = bench_import.build_file(bench_import.DEFAULT_SAMPLE, plain, records)
        gz = Path(tmp) / "bench.xml.gz"
        bench_import.gzip_file(plain, gz)
        plain.unlink()
        r = bench_import.run_once("kb import", gz)
    return {"records": n, "rate": r["rate"], "cpu_us": r["cpu"] / r["records"] * 1e6}


def serve(db: Path, n: int, seed: int = 5) -> dict[str, tuple[list[float], int]]:
    import sqlite3

    conn = sqlite3.connect(db)
    rng = random.Random(seed)
    total = conn.execute("select max(rowid) from papers").fetchone()[0]
    ids = []
    while len(ids) < n:
        row = conn.execute("select id from papers where rowid = ? and resolved = 1", (rng.randint(1, total),)).fetchone()
        if row:
            ids.append(row[0])
    words = ["imaging", "marrow", "children", "vaccines", "defects", "therapy", "receptor", "cells", "infection",
             "mutations", "cancer", "protein", "brain", "risk", "model", "patients", "treatment", "analysis", "blood",
             "response"]
    conn.close()
    name = db.stem
    plan = {
        "papers table + facets (html)": [f"/{name}/papers"] * n,
        "row page": [f"/{name}/papers/{quote(i.replace(':', '~3A'), safe='~')}" for i in ids],
        "FTS search (page, facets)": [f"/{name}/papers?_search={rng.choice(words)}" for _ in range(n)],
        "citations.json (default)": ["/-/kb/citations.json"] * n,
        "citation graph page": ["/-/kb/citations"] * n,
        "timeline.json": ["/-/kb/timeline.json"] * n,
    }
    import http.client

    out = {}
    with kb_serve(db, "--cache-mb", "0", cwd=ROOT, timeout=1800) as (_, port):   # every request answered anew
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for label, paths in plan.items():
            times, incomplete = [], 0
            for path in paths:
                ms, status, kind = timed_get_hit(conn, path)
                if status != 200:
                    print(f"  {label}: HTTP {status} for {path}")
                times.append(ms)
                incomplete += kind == "incomplete"
            out[label] = times, incomplete
        conn.close()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, default=None, help="keep the records and database in this folder")
    ap.add_argument("--requests", type=int, default=20, help="requests per page in the serve part")
    ap.add_argument("--import-sample", type=int, default=30_000, help="real-XML records for the import rate")
    ap.add_argument("--skip-import", action="store_true")
    ap.add_argument("--timeline", type=float, default=0, help="print each process's memory every N seconds")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--serve-only", action="store_true", help="with --keep: serve the database built before")
    ap.add_argument("--code", type=Path, default=ROOT,
                    help="build with the kb package of this source tree (a git worktree of the previous code)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="kb-scale-"))
    print(f"{args.papers:,} papers; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    try:
        imp = None
        if not args.skip_import:
            imp = measure_import(args.import_sample)
            print(f"import: {imp['rate']:,.0f} records/s ({imp['cpu_us']:.0f} us CPU per record) measured on "
                  f"{imp['records']:,} records -> {args.papers / imp['rate']:.0f} s for {args.papers:,} (extrapolated)")
        data = work / "records"
        t = time.perf_counter()
        if (data / "seeds.jsonl").exists():
            print(f"reusing the records in {data}")
        else:
            info = generate(data, args.papers)
            print(f"generated {info['papers']:,} papers, {info['resolved_citations']:,} citations "
                  f"in {time.perf_counter() - t:.0f}s")
        size = sum(f.stat().st_size for f in data.iterdir())
        print(f"{size / 1e6:,.0f} MB of records")
        db = work / "scale.db"
        summary = None
        if args.serve_only and db.exists():
            print(f"serving the database built before: {db}")
        else:
            if args.code != ROOT:
                print(f"building with the code of {args.code}")
            summary = run_build(data, db, args.code, args.timeline)
            summary["wall"] = summary["timings"]["total"]
            gib = summary["peak_tree_kb"] / 1024 / 1024
            print(f"build: {summary['wall']:.0f} s, peak memory of all processes {gib:.2f} GiB (target < 8 GiB), "
                  f"db {db.stat().st_size / 1e9:.2f} GB")
        if imp and summary:
            total = args.papers / imp["rate"] + summary["wall"]
            print(f"import + build: {total:.0f} s (target < 600 s)")
        if args.skip_serve:
            return
        t = time.perf_counter()
        results = serve(db, args.requests)
        print(f"serve (started and warmed up in {time.perf_counter() - t:.0f} s including the requests):")
        print(f"  {'page':32} {'first':>8} {'p50':>8} {'p95':>8}  ms")
        for label, (times, incomplete) in results.items():
            rest = sorted(times[1:]) or times
            print(f"  {label:32} {times[0]:8.0f} {pct(rest, 50):8.0f} {pct(rest, 95):8.0f}"
                  + (f"  ({incomplete} of {len(times)} with facets still being counted)" if incomplete else ""))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
