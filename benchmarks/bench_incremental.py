"""Benchmark incremental `kb build` (not a test): a KB of 100,000 papers (bench_build.py's records), then 1%
more papers in a new record file, added incrementally, against a full build of all the records.

    .venv/bin/python benchmarks/bench_incremental.py [--papers 100000] [--new 1000] [--keep DIR] [--check] [--repeat 3]
        [--code TREE]       (build with another source tree's kb, e.g. a git worktree of the previous code)

The new papers copy the real MEDLINE sample's records with new PMIDs; each cites 5-15 papers of the KB
(preferential to low PMIDs, like the base) and a few earlier new ones; 20% also cite a reference-only work.
Each build runs in a child process (wall time, CPU time and peak memory of that process). --check compares
every table of the incremental database with the full build's, sorted row by row.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from kb.records import record_files
from kb import incremental, store
files = record_files({data!r})
t = time.perf_counter()
if {incremental!r}:
    summary = incremental.build_incremental(files, {db!r}, progress=lambda m: print('  ' + m, flush=True))
else:
    summary = store.build(files, {db!r}, progress=lambda m: print('  ' + m, flush=True))
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print('RESULT ' + json.dumps({{'wall': time.perf_counter() - t, 'cpu': me.ru_utime + me.ru_stime,
      'cpu_children': kids.ru_utime + kids.ru_stime, 'maxrss_gib': me.ru_maxrss / 1024 ** 2,
      'timings': summary['timings']}}))
"""


def run(data: Path, db: Path, incremental: bool, code: Path = ROOT) -> dict:
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(code), data=str(data), db=str(db),
                                                                 incremental=incremental)],
                             stdout=subprocess.PIPE, text=True)
    result = None
    for line in child.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        else:
            print(line, end="", flush=True)
    if child.wait() or result is None:
        sys.exit(child.returncode or 1)
    print(f"  -> {'incremental' if incremental else 'full'}: {result['wall']:.1f} s wall, CPU {result['cpu']:.1f} s "
          f"(+ {result['cpu_children']:.1f} s in the graph processes), peak {result['maxrss_gib']:.2f} GiB")
    print("     phases: " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    return result


def new_papers(path: Path, n_base: int, n_new: int, seed: int = 7):
    from kb.parse import parse_pubmed_xml
    from kb.records import dumps
    from bench_build import SAMPLE

    templates = [r for r in parse_pubmed_xml(SAMPLE) if r["type"] == "paper"]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_new):
            t = dict(templates[i % len(templates)])
            pmid = str(40000000 + i)
            t.update(pmid=pmid, id=f"pmid:{pmid}", doi=None, year=2021)
            cited = {int(n_base * rng.random() ** 2) for _ in range(rng.randint(5, 15))}
            refs = [{"citation": f"Bench reference {j}.", "pmid": str(30000000 + j), "doi": None, "pmcid": None}
                    for j in sorted(cited)]
            if i:
                refs += [{"citation": "", "pmid": str(40000000 + j), "doi": None, "pmcid": None}
                         for j in sorted({rng.randrange(i) for _ in range(2)})]
            if rng.random() < 0.2:
                refs.append({"citation": f"Unindexed report {rng.randrange(50000)}. Proc Bench Soc. 1989;1:1-2.",
                             "pmid": None, "doi": None, "pmcid": None})
            t["references"] = refs
            fh.write(dumps(t) + "\n")


def tables_equal(a: Path, b: Path) -> list[str]:
    """Names of the tables whose sorted rows differ, the planner's statistics (sqlite_stat1) included but for the
    full-text index's shadow tables (their pages differ)."""
    ca, cb = sqlite3.connect(a), sqlite3.connect(b)
    names = [r[0] for r in ca.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
             if not r[0].startswith(("sqlite_stat", "papers_fts_"))]
    queries = {t: f"SELECT * FROM [{t}]" for t in names}
    queries["sqlite_stat1"] = "SELECT * FROM sqlite_stat1 WHERE tbl NOT LIKE 'papers_fts%'"
    bad = []
    for t, sql in queries.items():
        if sorted(ca.execute(sql), key=repr) != sorted(cb.execute(sql), key=repr):
            bad.append(t)
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--papers", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=None, help="new papers (default: 1%% of --papers)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder (bench_build.py's records there are reused)")
    ap.add_argument("--check", action="store_true", help="compare every table with the full build's")
    ap.add_argument("--repeat", type=int, default=1, help="incremental builds from the same base (median used)")
    ap.add_argument("--code", type=Path, default=ROOT,
                    help="build with the kb package of this source tree (e.g. a git worktree of the previous code)")
    args = ap.parse_args()
    n_new = args.new or max(1, args.papers // 100)
    work = args.keep or Path(tempfile.mkdtemp(prefix="kb-bench-inc-"))
    data = work / "records"
    try:
        if not (data / "seeds.jsonl").exists():
            from bench_build import generate
            generate(data, args.papers)
        (data / "zz-new.jsonl").unlink(missing_ok=True)
        base, full = work / "incremental.db", work / "full.db"
        print(f"full build of the base ({args.papers} papers):")
        run(data, base, incremental=False, code=args.code)
        from kb.incremental import state_path
        saved = [(f, f.with_name(f.name + ".saved")) for f in (base, state_path(base))]
        for f, copy in saved:
            shutil.copy2(f, copy)                 # mtime kept: the state file names the database by size and mtime
        new_papers(data / "zz-new.jsonl", args.papers, n_new)
        print(f"incremental build: {n_new} new papers in zz-new.jsonl")
        incs = []
        for _ in range(args.repeat):
            for f, copy in saved:
                shutil.copy2(copy, f)
            incs.append(run(data, base, incremental=True, code=args.code))
        for _f, copy in saved:
            copy.unlink()
        incs.sort(key=lambda r: r["wall"])
        inc = incs[len(incs) // 2]
        if len(incs) > 1:
            print("incremental wall s: min {:.1f}, median {:.1f}, max {:.1f}; CPU s (all processes): {}".format(
                incs[0]["wall"], inc["wall"], incs[-1]["wall"],
                ", ".join(f"{r['cpu'] + r['cpu_children']:.1f}" for r in incs)))
        print("full build of base + new:")
        ref = run(data, full, incremental=False, code=args.code)
        print(f"incremental (median) / full: {inc['wall'] / ref['wall']:.1%} of the wall time (goal < 15%), "
              f"{(inc['cpu'] + inc['cpu_children']) / (ref['cpu'] + ref['cpu_children']):.1%} of the CPU time")
        if args.check:
            bad = tables_equal(base, full)
            print("tables identical to the full build's" if not bad else f"TABLES DIFFER: {bad}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
