"""Request count of a depth-2 harvest against the fake E-utilities server, next to the naive count.

Naive: one efetch per paper and one elink per paper and link name (what a per-paper loop over
Bio.Entrez does). kb: batches of 200 ids per efetch/elink, one LinkSet per id. Run by hand:

    .venv/bin/python benchmarks/bench_harvest.py [--papers 3000] [--seeds 20001500 ...] [--fault-rate 0.2]
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

from fake_eutils import FakeEutils, generate_network  # noqa: E402

from kb.eutils import Eutils  # noqa: E402
from kb.harvest import harvest, summary_line  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--papers", type=int, default=3000, help="size of the generated citation network")
    ap.add_argument("--seeds", nargs="+", default=["20001500"])
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--fault-rate", type=float, default=0.0, help="inject faults (429/5xx/drops/...) at this rate")
    ap.add_argument("--no-key", action="store_true", help="3 requests/s instead of 10")
    args = ap.parse_args(argv)

    corpus = generate_network(args.papers, seed=7)
    with FakeEutils(corpus, fault_rate=args.fault_rate, fault_seed=1, retry_after="0", timeout_sleep=1.0) as server, \
            tempfile.TemporaryDirectory() as tmp:
        client = Eutils(Path(tmp) / "cache", base_url=server.base_url, api_key=None if args.no_key else "bench",
                        backoff=0.05, timeout=0.5)
        started = time.perf_counter()
        summary = harvest(args.seeds, tmp, depth=args.depth, cited_by=True, client=client)
        elapsed = time.perf_counter() - started
        log = list(server.requests)
        efetch = [r for r in log if r["endpoint"] == "efetch.fcgi"]
        elink = [r for r in log if r["endpoint"] == "elink.fcgi"]
        linked_ids = sum(len(r["params"].get("id", [])) for r in elink if r["status"] == 200)
        naive = summary["papers"] + summary["deleted"] + linked_ids
        kb_requests = summary["requests"]

        server.reset()
        again = harvest(args.seeds, tmp, depth=args.depth, cited_by=True,
                        client=Eutils(Path(tmp) / "cache", base_url=server.base_url, offline=True))

    print(f"network: {args.papers} papers; seeds {' '.join(args.seeds)}; depth {args.depth} with citers"
          + (f"; faults at {args.fault_rate:.0%}" if args.fault_rate else ""))
    print(f"harvest: {summary_line(summary)}")
    print(f"kb requests:      {kb_requests:6d}  (efetch {len(efetch)}, elink {len(elink)}; "
          f"{summary['retries']} of them retries)")
    print(f"naive requests:   {naive:6d}  (one efetch per paper: {summary['papers'] + summary['deleted']}, "
          f"one elink per expanded paper and link name: {linked_ids})")
    print(f"ratio naive/kb:   {naive / max(1, kb_requests):6.1f}x")
    print(f"second run:       {again['requests']} requests, {again['cache_hits']} cache hits (offline)")
    print(f"elapsed:          {elapsed:.1f} s at {'3' if args.no_key else '10'} requests/s "
          f"(the naive loop would need at least {naive / (3 if args.no_key else 10):.0f} s)")


if __name__ == "__main__":
    main()
