"""Benchmark `kb build` at scale (not a test): 100,000 papers, 1,000,000+ citations.

Papers replicate the real MEDLINE sample (../shared/realdata/medline16n0902-sample.xml.gz, parsed with
kb.parse.parse_pubmed_xml) with renumbered PMIDs; each paper cites 5-15 earlier papers (mean 10) chosen by
preferential attachment (70 %: proportional to in-degree so far, 30 %: uniform), which gives the heavy-tailed
in-degree distribution of real citation networks; 2 % of the references are free text only (stub papers).
The build runs in a child process so that its peak memory (max RSS) is measured alone.

    .venv/bin/python benchmarks/bench_build.py [--papers 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "realdata" / "medline16n0902-sample.xml.gz"
sys.path.insert(0, str(ROOT))


def generate(out_dir: Path, n_papers: int, seed: int = 2011) -> dict:
    from kb.parse import parse_pubmed_xml
    from kb.records import dumps

    templates = [r for r in parse_pubmed_xml(SAMPLE) if r["type"] == "paper"]
    rng = random.Random(seed)
    targets: list[int] = []          # one entry per citation received: sampling it is preferential attachment
    n_cit = n_stub = 0
    per_file = 10000
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = None
    for i in range(n_papers):
        if i % per_file == 0:
            if fh:
                fh.close()
            fh = open(out_dir / f"papers-{i // per_file:04d}.jsonl", "w", encoding="utf-8")
        t = templates[i % len(templates)]
        p = copy.copy(t)
        pmid = str(30000000 + i)
        p["pmid"] = pmid
        p["id"] = f"pmid:{pmid}"
        p["doi"] = f"10.9999/bench.{i}" if t.get("doi") else None
        p["year"] = 1990 + (i * 30) // n_papers
        refs = []
        if i:
            k = min(i, rng.randint(5, 15))
            chosen = set()
            while len(chosen) < k:
                j = rng.choice(targets) if targets and rng.random() < 0.7 else rng.randrange(i)
                chosen.add(j)
            for j in sorted(chosen):
                tj = templates[j % len(templates)]
                refs.append({"citation": f"{(tj.get('title') or '')[:80]} {tj.get('journal', {}).get('iso') or ''} "
                                         f"{1990 + (j * 30) // n_papers}",
                             "pmid": str(30000000 + j), "doi": None, "pmcid": None})
                targets.append(j)
            n_cit += len(refs)
            if rng.random() < 0.2:
                refs.append({"citation": f"Unindexed report {rng.randrange(50000)}. Proc Bench Soc. 1989;1:1-2.",
                             "pmid": None, "doi": None, "pmcid": None})
                n_stub += 1
        p["references"] = refs
        fh.write(dumps(p))
        fh.write("\n")
    fh.close()
    with open(out_dir / "seeds.jsonl", "w", encoding="utf-8") as fh:
        for i in (0, n_papers // 2, n_papers - 1):
            fh.write(json.dumps({"type": "seed", "id": f"pmid:{30000000 + i}", "query": "bench"}) + "\n")
    return {"papers": n_papers, "resolved_citations": n_cit, "text_references": n_stub}


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from kb.store import build
from kb.records import record_files
summary = build(record_files({data!r}), {db!r}, progress=lambda m: print('  ' + m, flush=True))
summary['maxrss_kb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print('RESULT ' + json.dumps(summary))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--papers", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None, help="keep the records and database in this folder")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="kb-bench-"))
    data = work / "records"
    try:
        t = time.perf_counter()
        info = generate(data, args.papers)
        size = sum(f.stat().st_size for f in data.iterdir())
        print(f"generated {info['papers']} papers, {info['resolved_citations']} resolved references, "
              f"{info['text_references']} text-only references, {size / 1e6:.0f} MB of records "
              f"in {time.perf_counter() - t:.1f}s")
        db = work / "bench.db"
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), data=str(data), db=str(db))],
                                 stdout=subprocess.PIPE, text=True)
        result = None
        for line in child.stdout:
            if line.startswith("RESULT "):
                result = line[7:]
            else:
                print(line, end="", flush=True)
        if child.wait() or result is None:
            sys.exit(child.returncode or 1)
        summary = json.loads(result)
        tm, c = summary["timings"], summary["counts"]
        print(f"papers {c['papers']} (stubs {c['stub_papers']}), citations {c['citations']}, "
              f"similar pairs {c['similar_pairs']}, communities {c['communities']}, "
              f"paper-concept links {c['paper_concepts']}, db {db.stat().st_size / 1e6:.0f} MB")
        print("phase         seconds")
        for phase in ("load", "graph", "concepts", "indexes", "fts", "total"):
            print(f"{phase:<12} {tm[phase]:8.1f}")
        print(f"peak memory (max RSS of the build process): {summary['maxrss_kb'] / 1024 / 1024:.2f} GiB")
        print(f"target: total < 60 s ({tm['total'] / 60:.2f} of budget), memory < 4 GiB "
              f"({summary['maxrss_kb'] / 1024 / 1024 / 4:.2f} of budget)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
