"""Recall of a depth-2 harvest per citation source and merged, where PubMed knows only PMC links.

The network is tests/fake_sources.pubmed_poor_network: fake_eutils.generate_network with ~30% of the
papers in PMC and no ReferenceList in any PubMed record, so PubMed's elink knows only the edges of PMC
papers. The open sources (tests/fake_sources.py) know the rest, each only a share of it (``--coverage``,
hidden deterministically per edge). A depth-2 harvest with citers runs against both fakes at the
sources' real rates (kb.sources.http.RATES; NCBI at 10/s with a key); the truth is every identified
edge (both ends PMIDs) whose citing or cited paper the harvest expanded (hops 0 and 1). Prints recall per
source and merged, requests per source against the naive one-call-per-paper-and-direction count, and
wall time. Run by hand:

    .venv/bin/python benchmarks/bench_sources.py [--papers 400] [--seed-paper auto] [--rate-scale 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fake_eutils import FakeEutils  # noqa: E402
from fake_sources import FakeSources, pubmed_poor_network  # noqa: E402

from kb.eutils import Eutils  # noqa: E402
from kb.harvest import harvest, summary_line  # noqa: E402
from kb.records import read_records  # noqa: E402
from kb.sources import OPEN_SOURCES, SOURCE_NAMES, sources_line  # noqa: E402
from kb.sources import http as source_http  # noqa: E402

PUBMED = ("pubmed-reflist", "elink:pubmed_pubmed_refs", "elink:pubmed_pubmed_citedin")


def pick_seed(corpus) -> str:
    """A mid-network paper with a typical neighbourhood: the median of papers with 10-20 links."""
    citers = {}
    for p in corpus.papers.values():
        for r in p.refs:
            if r.pmid:
                citers[r.pmid] = citers.get(r.pmid, 0) + 1
    ok = sorted(p.pmid for p in corpus.papers.values()
                if 10 <= sum(1 for r in p.refs if r.pmid) + citers.get(p.pmid, 0) <= 20 and not p.pmcid)
    return ok[len(ok) // 2]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=400, help="size of the generated network")
    ap.add_argument("--seed-paper", default="auto")
    ap.add_argument("--coverage", default="europepmc=80,opencitations=70,crossref=60,icite=85",
                    help="share of the edges each open source knows, in percent")
    ap.add_argument("--rate-scale", type=float, default=1.0, help="multiply every source's rate (1 = real limits)")
    args = ap.parse_args(argv)

    coverage = {k: int(v) for k, v in (item.split("=") for item in args.coverage.split(","))}
    corpus = pubmed_poor_network(args.papers)
    seed = pick_seed(corpus) if args.seed_paper == "auto" else args.seed_paper
    source_http.RATES = {k: v * args.rate_scale for k, v in source_http.RATES.items()}
    with FakeEutils(corpus) as eutils, FakeSources(corpus, coverage=coverage) as fake, \
            tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ.update(fake.env())
        tmp = Path(tmp)
        started = time.perf_counter()
        summary = harvest([seed], tmp, depth=2, cited_by=True, sources=list(SOURCE_NAMES),
                          client=Eutils(tmp / "cache", base_url=eutils.base_url, api_key="bench"))
        elapsed = time.perf_counter() - started
        records = list(read_records([tmp / "records" / "harvest.jsonl"]))
        eutils_log = list(eutils.requests)
        source_log = list(fake.requests)

    expanded = {r["paper"] for r in records if r["type"] == "coverage" and r["source"] == "pubmed"}
    truth = set()
    for p in corpus.papers.values():
        for r in p.refs:
            if r.pmid and r.pmid in corpus.papers and ({f"pmid:{p.pmid}", f"pmid:{r.pmid}"} & expanded):
                truth.add((f"pmid:{p.pmid}", f"pmid:{r.pmid}"))
    found: dict[str, set] = {name: set() for name in SOURCE_NAMES}
    for r in records:
        if r["type"] == "citation" and r["cited"]:
            name = "pubmed" if r["source"] in PUBMED else r["source"]
            if name in found:
                found[name].add((r["citing"], r["cited"]))
    merged = set().union(*found.values())

    n = len(expanded)
    naive = {"pubmed": 2 * n, "europepmc": 2 * n, "opencitations": 2 * n, "crossref": n, "icite": 2 * n}
    sent = {"pubmed": sum(1 for r in eutils_log if r["endpoint"] == "elink.fcgi")}
    for name in OPEN_SOURCES:
        sent[name] = sum(1 for r in source_log if r["source"] == name)

    print(f"network: {args.papers} papers, {sum(1 for p in corpus.papers.values() if p.pmcid)} in PMC, no "
          f"ReferenceList in PubMed; open sources know {args.coverage} (percent of edges)")
    print(f"seed {seed}, depth 2 with citers: {n} papers expanded, {len(truth)} true edges touching them")
    print(f"harvest: {summary_line(summary)}")
    print(sources_line(summary["sources"], summary["source_errors"]))
    print()
    print(f"{'source':<14} {'recall':>7} {'edges':>6}   {'requests':>8} {'naive':>6} {'saved':>6}")
    for name in SOURCE_NAMES:
        hit = len(found[name] & truth)
        print(f"{name:<14} {hit / max(1, len(truth)):7.1%} {hit:6d}   {sent[name]:8d} {naive[name]:6d} "
              f"{naive[name] / max(1, sent[name]):5.1f}x")
    hit = len(merged & truth)
    print(f"{'merged':<14} {hit / max(1, len(truth)):7.1%} {hit:6d}   {sum(sent.values()):8d} "
          f"{sum(naive.values()):6d} {sum(naive.values()) / max(1, sum(sent.values())):5.1f}x")
    print()
    rates = ", ".join(f"{k} {v:g}/s" for k, v in source_http.RATES.items())
    print(f"wall time: {elapsed:.1f} s (sources in parallel, each at its own rate: {rates}; NCBI 10/s; "
          f"efetch requests {sum(1 for r in eutils_log if r['endpoint'] == 'efetch.fcgi')})")


if __name__ == "__main__":
    main()
