"""Benchmark `kb import` against pubmed_parser and a raw lxml iterparse (run by hand, not a test).

    .venv/bin/python benchmarks/bench_import.py [--records 30000] [--sample PATH] [--skip-pubmed-parser]
        [--repeat 3] [--baseline DIR]

Builds a PubmedArticleSet file in a temporary directory by replicating the shared MEDLINE sample
(../shared/realdata/medline16n0902-sample.xml.gz) with renumbered PMIDs, gzips it (pubmed_parser only
reads .gz), then times, on that same file, each in a fresh subprocess (so peak RSS is its own):
`kb import` (every field, records written as JSON Lines), pubmed_parser.parse_medline_xml (every
option on), an lxml iterparse that extracts nothing, kb's single-process parser, and `kb import` of
the uncompressed file. Each is run --repeat times: the median run is shown with the min and max
records/s, the CPU seconds and CPU microseconds per record (all processes: steadier than wall time when
the machine is shared). Then it imports a file twice as large to show that kb's memory stays flat.
--baseline DIR (a checkout of the previous code, e.g. a git worktree) adds kb's rows run with that code,
each run alternating with the current code's on the same file, for a before/after on the same machine state.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DEFAULT_SAMPLE = PROJECT.parent / "shared" / "realdata" / "medline16n0902-sample.xml.gz"

HEADER = (b'<?xml version="1.0" encoding="utf-8"?>\n'
          b'<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
          b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n<PubmedArticleSet>\n')


def build_file(sample: Path, target: Path, records: int) -> int:
    """Write a PubmedArticleSet of `records` articles: the sample's MedlineCitations, repeated, each
    wrapped as a PubmedArticle with a PubmedData ArticleIdList, PMIDs renumbered from 40,000,000."""
    with gzip.open(sample, "rb") as fh:
        data = fh.read()
    citations = re.findall(rb"<MedlineCitation[ >].*?</MedlineCitation>", data, flags=re.S)
    pmid_re = re.compile(rb"<PMID Version=\"\d+\">\d+</PMID>")
    n = 0
    with open(target, "wb") as out:
        out.write(HEADER)
        while n < records:
            for cit in citations:
                if n >= records:
                    break
                pmid = 40_000_000 + n
                body = pmid_re.sub(f'<PMID Version="1">{pmid}</PMID>'.encode(), cit, count=1)
                out.write(b"<PubmedArticle>\n" + body + b"\n<PubmedData>\n<ArticleIdList>\n"
                          + f'<ArticleId IdType="pubmed">{pmid}</ArticleId>\n'.encode()
                          + b"</ArticleIdList>\n</PubmedData>\n</PubmedArticle>\n")
                n += 1
        out.write(b"</PubmedArticleSet>\n")
    return n


# Each runner is a small program run in its own interpreter; it prints one JSON line.
RUNNERS = {
    "kb import": """
import json, resource, sys, tempfile, time
from kb.parse import import_files
t = time.perf_counter()
with tempfile.TemporaryDirectory() as d:
    s = import_files([sys.argv[1]], d, progress=False)
    out = s["outputs"][0]
    import os
    size = os.path.getsize(out)
    el = time.perf_counter() - t
print(json.dumps({"records": s["records"] + s["deleted"], "seconds": el, "output_bytes": size,
                  "cpu": sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                              for f in ("ru_utime", "ru_stime")),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
""",
    "kb parse_pubmed_xml (1 core, dicts only)": """
import json, resource, sys, time
from kb.parse import parse_pubmed_xml
t = time.perf_counter()
n = sum(1 for _ in parse_pubmed_xml(sys.argv[1]))
print(json.dumps({"records": n, "seconds": time.perf_counter() - t,
                  "cpu": sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                              for f in ("ru_utime", "ru_stime")),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "children_maxrss_kb": 0}))
""",
    "pubmed_parser.parse_medline_xml": """
import json, resource, sys, time
import pubmed_parser as pp
t = time.perf_counter()
n = sum(1 for _ in pp.parse_medline_xml(sys.argv[1], year_info_only=False, nlm_category=True, author_list=True,
                                        reference_list=True, parse_downto_mesh_subterms=True))
print(json.dumps({"records": n, "seconds": time.perf_counter() - t,
                  "cpu": sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                              for f in ("ru_utime", "ru_stime")),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "children_maxrss_kb": 0}))
""",
    "raw lxml iterparse (extracts nothing)": """
import gzip, json, resource, sys, time
from lxml import etree
t = time.perf_counter()
n = 0
src = gzip.open(sys.argv[1], "rb") if sys.argv[1].endswith(".gz") else sys.argv[1]
for _, el in etree.iterparse(src, events=("end",), tag="PubmedArticle", resolve_entities=False,
                             no_network=True, load_dtd=False):
    n += 1
    el.clear()
    while el.getprevious() is not None:
        del el.getparent()[0]
print(json.dumps({"records": n, "seconds": time.perf_counter() - t,
                  "cpu": sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                              for f in ("ru_utime", "ru_stime")),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "children_maxrss_kb": 0}))
""",
}


def compiled_reader(code: Path) -> str:
    """Whether that tree's kb reads PubMed fields with its compiled module (kb/parse/_pubmed_fields.pyx, built by
    `pip install -e .`): a run without it measures the Python reader, ~1.4x slower."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from kb.parse import pubmed_xml; "
             "print('compiled field reader' if getattr(pubmed_xml, '_compiled_article', None) else "
             "'Python field reader (kb/parse/_pubmed_fields.pyx not built)')")
    out = subprocess.run([sys.executable, "-c", probe, str(code)], capture_output=True, text=True)
    return out.stdout.strip() or f"kb not importable from {code}"


def run(name: str, path: Path, repeat: int = 1, code: Path = PROJECT) -> dict:
    """Median of `repeat` runs (by records/s), each in a fresh interpreter, with the min and max rates and the
    median CPU time per record (all processes: steadier than wall time on a shared machine); peak memory is the
    largest seen."""
    return summarize([run_once(name, path, code) for _ in range(repeat)])


def run_alternating(name: str, path: Path, repeat: int, codes: list[Path]) -> list[dict]:
    """run() for each code tree, their runs interleaved (a, b, a, b...) so that both see the same load."""
    runs: list[list[dict]] = [[] for _ in codes]
    for _ in range(repeat):
        for i, code in enumerate(codes):
            runs[i].append(run_once(name, path, code))
    return [summarize(r) for r in runs]


def summarize(runs: list[dict]) -> dict:
    runs = sorted(runs, key=lambda r: r["rate"])
    mid = dict(runs[len(runs) // 2])
    mid["peak_mb"] = max(r["peak_mb"] for r in runs)
    mid["worker_mb"] = max(r["worker_mb"] for r in runs)
    mid["all_rates"] = [r["rate"] for r in runs]
    cpu_us = sorted(r["cpu"] / r["records"] * 1e6 for r in runs)
    mid["cpu_us"] = cpu_us[len(cpu_us) // 2]
    mid["loads"] = [r["load"] for r in runs]
    return mid


def run_once(name: str, path: Path, code: Path = PROJECT) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    proc = subprocess.run([sys.executable, "-c", RUNNERS[name], str(path)], capture_output=True, text=True,
                          env=env, cwd=code)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rate"] = result["records"] / result["seconds"]
    result["load"] = os.getloadavg()[0]
    result["peak_mb"] = result["maxrss_kb"] / 1024
    result["worker_mb"] = result["children_maxrss_kb"] / 1024
    return result


def gzip_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fh, gzip.open(dst, "wb", compresslevel=6) as out:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            out.write(block)


def show(name: str, r: dict) -> None:
    memory = f"{r['peak_mb']:5.0f} MB"
    if r["worker_mb"]:
        memory += f" (+ workers {r['worker_mb']:.0f} MB each)"
    print(f"{name:60s} {r['records']:8,d} {r['seconds']:8.2f} {r['rate']:10,.0f} {r['cpu']:7.1f} "
          f"{r['cpu_us']:8.0f}   {memory}")
    if len(r["all_rates"]) > 1:
        print(f"{'':60s} (records/s min/median/max: {min(r['all_rates']):,.0f} / {r['rate']:,.0f} / "
              f"{max(r['all_rates']):,.0f}; load average after each run: {', '.join(f'{x:.1f}' for x in r['loads'])})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=30_000)
    ap.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    ap.add_argument("--skip-pubmed-parser", action="store_true")
    ap.add_argument("--skip-double", action="store_true", help="skip the memory-as-the-file-doubles run")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per measurement; the median is shown with min and max")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="a checkout of the previous code: its kb rows are run too, alternating with this code's")
    args = ap.parse_args(argv)
    if not args.sample.exists():
        raise SystemExit(f"sample not found: {args.sample}")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f} at start; "
          f"sample {args.sample.name}; median of {args.repeat} runs each; {compiled_reader(PROJECT)}")
    if args.baseline:
        print(f"previous code ({args.baseline}): {compiled_reader(args.baseline)}")
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        plain = Path(tmp) / "bench.xml"
        n = build_file(args.sample, plain, args.records)
        gz = Path(tmp) / "bench.xml.gz"
        gzip_file(plain, gz)
        print(f"file: {n:,} PubmedArticle records, {plain.stat().st_size / 1e6:.0f} MB of XML, "
              f"{gz.stat().st_size / 1e6:.0f} MB gzipped\n")
        print(f"{'':60s} {'records':>8s} {'seconds':>8s} {'records/s':>10s} {'CPU s':>7s} {'CPU us/rec':>8s}   peak RSS")
        results = {}
        plan = [("kb import", gz), ("pubmed_parser.parse_medline_xml", gz),
                ("raw lxml iterparse (extracts nothing)", gz),
                ("kb parse_pubmed_xml (1 core, dicts only)", gz), ("kb import", plain)]
        for name, path in plan:
            if args.skip_pubmed_parser and name.startswith("pubmed_parser"):
                continue
            label = f"{name} [{path.name}]"
            if args.baseline and name.startswith("kb "):
                results[label], before = run_alternating(name, path, args.repeat, [PROJECT, args.baseline])
                results[label + " previous code"] = before
                show(label, results[label])
                show(f"{label} previous code", before)
            else:
                results[label] = run(name, path, args.repeat)
                show(label, results[label])
        kb = results["kb import [bench.xml.gz]"]
        print()
        pp = results.get("pubmed_parser.parse_medline_xml [bench.xml.gz]")
        cores = min(2, os.cpu_count() or 1)
        if pp:
            lo = min(kb["all_rates"]) / max(pp["all_rates"])
            hi = max(kb["all_rates"]) / min(pp["all_rates"])
            print(f"kb import / pubmed_parser (same .gz file): {kb['rate'] / pp['rate']:5.2f}x records/s, medians "
                  f"(worst pairing {lo:.2f}x, best {hi:.2f}x; target >= 6x)")
            print(f"  CPU time per record: pubmed_parser {pp['cpu_us']:.0f} us, kb import {kb['cpu_us']:.0f} us "
                  f"(all processes): {pp['cpu_us'] / kb['cpu_us']:.2f}x less; x {cores} cores = "
                  f"{cores * pp['cpu_us'] / kb['cpu_us']:.2f}x when kb has the cores to itself")
        raw = results["raw lxml iterparse (extracts nothing) [bench.xml.gz]"]
        print(f"kb import / raw lxml iterparse:            {kb['rate'] / raw['rate']:5.2f}x records/s")
        print(f"  per core: {kb['rate'] / cores:,.0f} records/s on each of {cores} cores = "
              f"{kb['rate'] / cores / raw['rate']:.0%} of the 1-core raw iterparse ceiling (target >= 60%); "
              f"by CPU time {raw['cpu_us'] / kb['cpu_us']:.0%}")
        plain_kb = results["kb import [bench.xml]"]
        if pp:
            print(f"kb import of the uncompressed file / pubmed_parser: {plain_kb['rate'] / pp['rate']:5.2f}x")
        before = results.get("kb import [bench.xml.gz] previous code")
        if before:
            print(f"previous code: kb import {before['rate']:,.0f} records/s, {before['cpu_us']:.0f} us CPU/record"
                  + (f" = {before['rate'] / pp['rate']:.2f}x pubmed_parser" if pp else "")
                  + f"; per core {before['rate'] / cores / raw['rate']:.0%} of the raw ceiling")

        if not args.skip_double:
            double = Path(tmp) / "bench2.xml"
            n2 = build_file(args.sample, double, 2 * args.records)
            gz2 = Path(tmp) / "bench2.xml.gz"
            gzip_file(double, gz2)
            double.unlink()
            r2 = run("kb import", gz2, args.repeat)
            print("\nmemory as the file doubles (kb import of the .gz file):")
            for count, r in ((n, kb), (n2, r2)):
                print(f"  {count:7,d} records: main {r['peak_mb']:4.0f} MB, each worker <= {r['worker_mb']:4.0f} MB, "
                      f"{r['rate']:,.0f} records/s")


if __name__ == "__main__":
    main()
