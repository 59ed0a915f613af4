"""Benchmark `kb build` at scale (not a test): 100,000 papers, 1,000,000+ citations.

Papers replicate the real MEDLINE sample (../shared/realdata/medline16n0902-sample.xml.gz, parsed with
kb.parse.parse_pubmed_xml) with renumbered PMIDs; each paper cites 5-15 earlier papers (mean 10) chosen by
preferential attachment (70 %: proportional to in-degree so far, 30 %: uniform), which gives the heavy-tailed
in-degree distribution of real citation networks; 2 % of the references are free text only (stub papers).
The build runs in a child process so that its peak memory (max RSS) is measured alone.

    .venv/bin/python benchmarks/bench_build.py [--papers 100000] [--keep DIR] [--repeat 3] [--code TREE]

With --keep DIR, records already generated in DIR/records are reused (same records, same seed). --code TREE
builds with another source tree's kb (a git worktree of the previous code), for before/after runs.
Prints each phase, the wall time, the CPU time of the build process and of its helper process (the graph
measures run in a spawned second process on large graphs), their peak memory (max RSS of each), and the peak
of their sum (the whole process tree's resident memory, sampled every 0.05 s; a helper between its fork and its
exec is not counted: its pages are still the build's).
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
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
summary['maxrss_kb'] = me.ru_maxrss
summary['maxrss_children_kb'] = kids.ru_maxrss
summary['cpu'] = me.ru_utime + me.ru_stime
summary['cpu_children'] = kids.ru_utime + kids.ru_stime
print('RESULT ' + json.dumps(summary))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--papers", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the records and database in this folder (records found there are reused)")
    ap.add_argument("--repeat", type=int, default=1, help="build this many times (min/median/max printed)")
    ap.add_argument("--code", type=Path, default=ROOT,
                    help="build with the kb package of this source tree (e.g. a git worktree of the previous code)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="kb-bench-"))
    data = work / "records"
    try:
        t = time.perf_counter()
        if args.keep and (data / "seeds.jsonl").exists():
            print(f"reusing the records in {data}")
        else:
            info = generate(data, args.papers)
            print(f"generated {info['papers']} papers, {info['resolved_citations']} resolved references, "
                  f"{info['text_references']} text-only references in {time.perf_counter() - t:.1f}s")
        size = sum(f.stat().st_size for f in data.iterdir())
        print(f"{size / 1e6:.0f} MB of records")
        db = work / "bench.db"
        if args.code != ROOT:
            print(f"building with the code of {args.code}")
        runs = [run_build(data, db, args.code) for _ in range(args.repeat)]
        if len(runs) > 1:
            for name, values in (("wall s", [r["timings"]["total"] for r in runs]),
                                 ("CPU s (build + helper)", [r["cpu"] + r["cpu_children"] for r in runs]),
                                 ("peak GiB (build)", [r["maxrss_kb"] / 1024 ** 2 for r in runs]),
                                 ("peak GiB (all processes)", [r["peak_tree_kb"] / 1024 ** 2 for r in runs])):
                v = sorted(values)
                print(f"{name:<24} min {v[0]:6.2f}  median {v[len(v) // 2]:6.2f}  max {v[-1]:6.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _tree_rss_kb(pid: int, each: list | None = None) -> int:
    """Resident memory (kB) of a process and all its descendants, now (Linux /proc); each process's in `each`.
    A child with its parent's command line is a fork that has not yet run exec (a spawned helper starting): its
    pages are its parent's and are not counted twice (at 1M papers that moment read as 5.2 + 5.2 GiB)."""
    total, todo = 0, [(pid, None)]
    while todo:
        p, parent_cmdline = todo.pop()
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                cmdline = fh.read()
            children = [int(c) for task in Path(f"/proc/{p}/task").iterdir()
                        for c in (task / "children").read_text().split()]
            todo.extend((c, cmdline) for c in children)
            if cmdline == parent_cmdline:
                continue
            with open(f"/proc/{p}/status") as fh:
                rss = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
            total += rss
            if each is not None:
                each.append(rss)
        except (OSError, ValueError):
            continue
    return total


def _sample_peak(pid: int, out: dict, every: float = 0.05, timeline: float = 0):
    """Keep out["peak"] = the highest sum of the process tree's resident memory seen (every `every` s); with
    `timeline`, print each process's resident memory every `timeline` seconds (where the memory goes, phase by phase)."""
    t0 = last = time.perf_counter()
    while out.get("running", True):
        each: list = []
        now = _tree_rss_kb(pid, each)
        if now > out.get("peak", 0):
            out["peak"], out["each"], out["at"] = now, each, time.perf_counter() - t0
        if timeline and time.perf_counter() - last >= timeline:
            last = time.perf_counter()
            print(f"    [memory at {last - t0:5.0f} s: {' + '.join(f'{kb / 1024 ** 2:.2f}' for kb in each)} GiB]",
                  flush=True)
        time.sleep(every)


def run_build(data: Path, db: Path, code: Path = ROOT, timeline: float = 0) -> dict:
    """One build in a child process; prints its phases (and its memory every `timeline` s) and returns its summary."""
    if True:
        import threading

        child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(code), data=str(data), db=str(db))],
                                 stdout=subprocess.PIPE, text=True)
        sampled = {}
        sampler = threading.Thread(target=_sample_peak, args=(child.pid, sampled, 0.05, timeline), daemon=True)
        sampler.start()
        result = None
        for line in child.stdout:
            if line.startswith("RESULT "):
                result = line[7:]
            else:
                print(line, end="", flush=True)
        sampled["running"] = False
        sampler.join()
        if child.wait() or result is None:
            sys.exit(child.returncode or 1)
        summary = json.loads(result)
        summary["peak_tree_kb"] = sampled.get("peak", 0)
        summary["peak_each_gib"] = [round(kb / 1024 ** 2, 2) for kb in sampled.get("each", [])]
        summary["peak_at"] = sampled.get("at")
        tm, c = summary["timings"], summary["counts"]
        print(f"papers {c['papers']} (stubs {c['stub_papers']}), citations {c['citations']}, "
              f"similar pairs {c['similar_pairs']}, communities {c['communities']}, "
              f"paper-concept links {c['paper_concepts']}, db {db.stat().st_size / 1e6:.0f} MB")
        print("phase         seconds")
        for phase in ("read", "edges", "citations", "rows", "wait_graph", "load", "graph", "concepts", "indexes",
                      "fts", "meta", "state", "total"):
            if phase in tm:
                print(f"{phase:<12} {tm[phase]:8.1f}")
        print(f"CPU: build process {summary['cpu']:.1f} s, graph helper process {summary['cpu_children']:.1f} s")
        print(f"peak memory (max RSS): build process {summary['maxrss_kb'] / 1024 / 1024:.2f} GiB, "
              f"helpers {summary['maxrss_children_kb'] / 1024 / 1024:.2f} GiB (a spawned child's max RSS counts its "
              f"parent's pages until its exec); all processes at once "
              f"{summary['peak_tree_kb'] / 1024 / 1024:.2f} GiB (sampled every 0.05 s; at {summary['peak_at'] or 0:.0f} s: "
              f"{' + '.join(map(str, summary['peak_each_gib']))} GiB, build process first)")
        print(f"target: total <= 40 s ({tm['total'] / 40:.2f} of budget), memory < 2 GiB, all processes "
              f"({summary['peak_tree_kb'] / 1024 / 1024 / 2:.2f} of budget)")
        return summary


if __name__ == "__main__":
    main()
