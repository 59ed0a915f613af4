"""`kb fetch`: harvest seed papers, their references and (optionally) their citers from PubMed.

Hop by hop: efetch the papers of the hop (batches of 200, parsed with kb.parse), then, unless it is the
last hop, collect their references (the records' ReferenceList PMIDs, completed by elink
``pubmed_pubmed_refs``) and, with ``cited_by``, their citers (elink ``pubmed_pubmed_citedin``, which
only knows citing papers in PMC). The next hop is every linked paper not yet fetched, de-duplicated;
``max_papers`` keeps the most linked ones first (then the lowest PMIDs), so the choice is deterministic.

Everything comes through kb.eutils, which caches every answer: a harvest killed at any moment and run
again answers what it already fetched from the cache, sends the same requests in the same order and,
because records carry the cached retrieval times, writes byte-identical records. The records go to
DIR/records/harvest.jsonl (merged with the ones of earlier harvests, sorted, written atomically) while
DIR/kb.lock keeps a second `kb fetch` out of the same directory.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import click
from filelock import FileLock, Timeout

from .cache import Cache
from .errors import KbError, ParseError
from .ids import resolve_all
from .records import paper_key, read_records, write_records

RECORDS_FILE = "harvest.jsonl"
CITED_BY_NOTE = ("Note: PubMed's cited-by (elink pubmed_pubmed_citedin) only covers citing papers that are in "
                 "PubMed Central (PMC); citers outside PMC are missing.")
TYPE_ORDER = {"seed": 0, "paper": 1, "deleted": 2, "citation": 3, "coverage": 4, "similar": 5, "mesh": 6}


def _pmid_order(pmid: str):
    return (int(pmid), pmid) if str(pmid).isdigit() else (float("inf"), str(pmid))


def _key_order(key: str | None) -> tuple:
    """Sort kb keys with PMIDs in numeric order: ``pmid:9`` before ``pmid:10``, then other keys."""
    if key is None:
        return (2, 0, "")
    if key.startswith("pmid:") and key[5:].isdigit():
        return (0, int(key[5:]), key)
    return (1, 0, key)


def record_identity(record: dict) -> tuple:
    """What makes a record unique: a newer record with the same identity replaces an older one."""
    t = record.get("type")
    if t == "paper":
        return ("paper", record["id"])
    if t == "seed":
        return ("seed", record["id"], record.get("query") or "")
    if t == "similar":
        return ("similar", record.get("paper"), record.get("similar"))
    if t == "mesh":
        return ("mesh", record.get("ui"))
    if t == "deleted":
        return ("deleted", str(record["pmid"]))
    if t == "coverage":
        return ("coverage", record.get("paper"), record.get("source"))
    return ("citation", record.get("citing"), record.get("cited") or "", record.get("source") or "",
            record.get("raw") or "")


def record_order(record: dict) -> tuple:
    """The order records are written in: seeds, papers, deletions, citations, each by key."""
    t = record.get("type")
    if t == "deleted":
        return (TYPE_ORDER[t], _pmid_order(str(record["pmid"])))
    if t == "similar":
        return (TYPE_ORDER[t], _key_order(record.get("paper")), _key_order(record.get("similar")))
    if t == "mesh":
        return (TYPE_ORDER[t], record.get("ui") or "")
    if t == "coverage":
        return (TYPE_ORDER[t], _key_order(record.get("paper")), record.get("source") or "")
    if t == "citation":
        return (TYPE_ORDER[t], _key_order(record.get("citing")), _key_order(record.get("cited")),
                record.get("source") or "", record.get("raw") or "")
    return (TYPE_ORDER.get(t, 9), _key_order(record.get("id")), record.get("query") or "")


def _citation(citing, cited_pmid, source, provenance, raw=None, cited_doi=None) -> dict:
    cited = paper_key(cited_pmid, cited_doi) if (cited_pmid or cited_doi) else None
    return {"type": "citation", "citing": citing, "cited": cited, "raw": raw, "cited_pmid": cited_pmid,
            "cited_doi": cited_doi, "source": source, "resolved": cited is not None, "provenance": provenance}


class _Progress:
    """A tqdm bar (papers; requests and cache hits as postfix), silent when stderr is not a terminal."""

    def __init__(self):
        from tqdm import tqdm

        self.counts = {"request": 0, "cache_hit": 0, "retry": 0}
        self.bar = tqdm(desc="kb fetch", unit=" papers", file=sys.stderr, disable=not sys.stderr.isatty(),
                        dynamic_ncols=True, leave=False)

    def event(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        self._postfix()

    def papers(self, n: int) -> None:
        self.bar.update(n)

    def _postfix(self):
        self.bar.set_postfix(requests=self.counts["request"], cache_hits=self.counts["cache_hit"],
                             retries=self.counts["retry"], refresh=False)
        self.bar.refresh()

    def close(self):
        self.bar.close()


def harvest(identifiers: Iterable[str], data_dir, depth: int = 1, cited_by: bool = False,
            max_papers: int | None = None, client=None, *, email=None, api_key=None, offline=False,
            refresh=False, echo: Callable[[str], None] | None = None, sources=None, query: str | None = None,
            similar: int = 0, mesh_trees: bool = False) -> dict:
    """Harvest `identifiers` into DIR/records/harvest.jsonl; returns a summary dict (see summary_line).
    `sources`: citation sources to ask at every hop (kb.sources; default PubMed's elink only).
    `query`: a PubMed search whose papers are seeds too; `similar`: keep the top N PubMed similar articles
    of each seed; `mesh_trees`: "mesh" records for every descriptor of the harvested papers."""
    identifiers = list(identifiers)
    if depth < 0:
        raise KbError("--depth must be 0 or more")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(data_dir / "kb.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise KbError(f"another kb fetch is already running on {data_dir} (it holds {data_dir / 'kb.lock'}); "
                      "wait for it to finish, or use another --data directory") from None
    _remove_leftovers(data_dir)
    progress = _Progress()
    try:
        if client is None:
            from .eutils import Eutils

            client = Eutils(data_dir / "cache", email=email, api_key=api_key, offline=offline, refresh=refresh)
        previous_progress = getattr(client, "progress", None)
        client.progress = progress.event
        try:
            return _harvest(identifiers, data_dir, depth, cited_by, max_papers, client, progress, echo,
                            sources=_sources(sources, data_dir, client, email, offline, refresh, progress),
                            extra={"query": query, "similar": similar, "mesh_trees": mesh_trees})
        finally:
            client.progress = previous_progress
    finally:
        progress.close()
        lock.release()


def _remove_leftovers(data_dir: Path) -> None:
    """Delete temporary files a killed harvest left behind: its records file (only a harvest writes it,
    and we hold the lock) and cache entries whose writing process is gone."""
    for path in (data_dir / "records").glob(f"{RECORDS_FILE}.*.tmp"):
        try:
            path.unlink()
        except OSError:
            pass
    Cache(data_dir / "cache").remove_stale_temporaries()


def _sources(names, data_dir, client, email, offline, refresh, progress) -> list:
    from .sources import open_sources

    return open_sources(names or ["pubmed"], data_dir / "cache", eutils=client, email=email, offline=offline,
                        refresh=refresh, progress=progress.event)


def _harvest(identifiers, data_dir, depth, cited_by, max_papers, client, progress, echo, sources=(),
             extra=None) -> dict:
    from .parse import parse_pubmed_xml
    from .sources import gather

    started = time.monotonic()
    stats_before = dict(client.stats)
    resolved, errors = resolve_all(identifiers, client)
    for message in errors:
        if echo:
            echo(f"Error: {message}")
    extra = extra or {}
    notes: list[str] = []
    if extra.get("query"):
        resolved += query_seeds(client, extra["query"], max_papers, notes)

    papers: dict[str, dict] = {}
    deleted: dict[str, dict] = {}
    missing: set[str] = set()
    citations: dict[tuple, dict] = {}
    coverage: dict[tuple, dict] = {}
    down: dict[str, str] = {}  # open sources that failed for good in this run
    open_before = {s.name: dict(s.stats) for s in sources if not s.fatal}

    def add(record: dict) -> None:
        citations[record_identity(record)] = record

    def fetch(pmids: list[str]) -> list[str]:
        got = []
        for body, prov in client.efetch_xml(pmids):
            try:
                for record in parse_pubmed_xml(body, prov):
                    pmid = str(record.get("pmid") or "")
                    if record["type"] == "deleted":
                        deleted.setdefault(pmid, record)
                    elif record["type"] == "paper" and pmid and pmid not in papers:
                        papers[pmid] = record
                        got.append(pmid)
            except ParseError as exc:
                raise KbError(f"efetch answer ({prov.get('request', '')[:80]}...) could not be parsed: {exc}") from None
        progress.papers(len(got))
        missing.update(p for p in pmids if p not in papers and p not in deleted)
        return got

    seed_pmids = sorted({pmid for _, pmid in resolved}, key=_pmid_order)
    frontier = seed_pmids
    for hop in range(depth + 1):
        todo = [p for p in frontier if p not in papers and p not in deleted and p not in missing]
        if hop and max_papers is not None:
            todo = todo[:max(0, max_papers - len(papers))]
        todo.sort(key=_pmid_order)
        new = fetch(todo) if todo else []
        if hop == depth or not new:
            break
        linked: dict[str, set[str]] = defaultdict(set)  # candidate PMID -> papers of this hop linking to it
        for pmid in new:
            for ref in papers[pmid].get("references") or []:
                if ref.get("pmid"):
                    linked[str(ref["pmid"])].add(pmid)
        # PubMed's elink and the open citation sources (kb.sources), each source once per hop
        found = gather(sources, [papers[p] for p in new], cited_by, down)
        for record in found.citations:
            add(record)
        for record in found.coverage:
            coverage[record_identity(record)] = record
        for pmid, hop_pmids in found.candidates.items():
            linked[pmid].update(hop_pmids)
        frontier = sorted((p for p in linked if p not in papers and p not in deleted and p not in missing),
                          key=lambda p: (-len(linked[p]), _pmid_order(p)))

    extra_records = []  # --similar, --mesh-trees (after the hops: similar papers are fetched, not expanded)
    if extra.get("similar"):
        extra_records += similar_articles(
            client, [p for _, p in resolved if p in papers], extra["similar"],
            lambda ids: fetch(sorted({i for i in ids if i not in papers and i not in deleted and i not in missing},
                                     key=_pmid_order)), papers)
    if extra.get("mesh_trees"):
        from .mesh import fetch_mesh_records

        extra_records += fetch_mesh_records(client, papers.values())

    # Every fetched paper's own reference list, including the last hop's (references without PMID too).
    for pmid, paper in papers.items():
        for ref in paper.get("references") or []:
            add(_citation(paper["id"], ref.get("pmid"), "pubmed-reflist", paper.get("provenance"),
                          raw=ref.get("citation"), cited_doi=ref.get("doi")))

    seeds = []
    for query, pmid in resolved:
        if pmid in papers:
            seeds.append({"type": "seed", "id": papers[pmid]["id"], "query": query})
        elif pmid in deleted:
            errors.append(f"{query}: PMID {pmid} was deleted from PubMed")
            if echo:
                echo(f"Error: {errors[-1]}")
        else:
            errors.append(f"{query}: PMID {pmid} is not in PubMed")
            if echo:
                echo(f"Error: {errors[-1]}")

    new_records = (seeds + list(papers.values()) + list(deleted.values()) + list(citations.values())
                   + list(coverage.values()))
    new_records += extra_records
    path = data_dir / "records" / RECORDS_FILE
    written = write_merged(path, new_records) if (papers or deleted) else 0
    stats = {k: client.stats.get(k, 0) - stats_before.get(k, 0) for k in ("requests", "cache_hits", "retries")}
    return {
        "papers": len(papers), "citations": len(citations), "seeds": len(seeds), "deleted": len(deleted),
        "missing": sorted(missing - set(seed_pmids), key=_pmid_order), "errors": errors,
        "requests": stats["requests"], "cache_hits": stats["cache_hits"], "retries": stats["retries"],
        "elapsed": time.monotonic() - started, "path": str(path), "records": written, "cited_by": cited_by,
        "similar": sum(1 for r in extra_records if r["type"] == "similar"),
        "mesh": sum(1 for r in extra_records if r["type"] == "mesh"), "notes": notes,
        "sources": _source_stats(sources, open_before, citations.values()),
        "source_errors": _source_errors(coverage.values()),
    }


def _source_stats(sources, before, records) -> dict:
    """Per open source: links it gave in this run, requests, cache hits, retries."""
    out = {}
    for s in sources:
        if s.fatal:
            continue
        out[s.name] = {k: s.stats.get(k, 0) - before[s.name].get(k, 0) for k in ("requests", "cache_hits", "retries")}
        out[s.name]["links"] = sum(1 for r in records if r.get("source") == s.name)
    return out


def _source_errors(coverage) -> dict:
    """{source: first failure message} for the sources that failed for some paper in this run."""
    errors: dict[str, str] = {}
    for record in sorted(coverage, key=record_order):
        if record.get("status") == "failed":
            errors.setdefault(record["source"], record.get("message") or "failed")
    return errors


def query_seeds(client, query: str, max_papers: int | None, notes: list[str]) -> list[tuple[str, str]]:
    """[(query, PMID)] of the papers a PubMed search finds (esearch through the history server, in pages),
    at most `max_papers`; says in `notes` when the search finds more than is taken or can be retrieved."""
    found = client.esearch_history(query, limit=max_papers)
    if not found["ids"]:
        raise KbError(f"--query {query!r}: PubMed finds no papers")
    count, taken = found["count"], len(found["ids"])
    if found["capped"] and (max_papers is None or max_papers >= found["retrievable"]):
        notes.append(f"Note: the query matches {count:,} papers, but PubMed's esearch serves only the first "
                     f"{found['retrievable']:,} (NCBI's limit): those are the seeds; narrow the query (e.g. by "
                     "year) to reach the others.")
    elif found["capped"]:
        notes.append(f"Note: the query matches {count:,} papers (PubMed's esearch serves only the first "
                     f"{found['retrievable']:,}); the first {taken:,} (--max-papers) are the seeds.")
    elif count > taken:
        notes.append(f"Note: the query matches {count:,} papers; the first {taken:,} (--max-papers) are the seeds.")
    return [(query, pmid) for pmid in found["ids"]]


def similar_articles(client, pmids: list[str], top: int, fetch: Callable, papers: dict) -> list[dict]:
    """"similar" records: the `top` best PubMed similar articles of each of `pmids` (elink pubmed_pubmed,
    cmd=neighbor_score) with their scores; the ones not harvested yet are efetched (`fetch`) so that they are
    papers of the KB (a neighbour PubMed no longer has is left out)."""
    found = []
    for links, prov in client.elink_scores(sorted(set(pmids), key=_pmid_order), "pubmed_pubmed"):
        for pmid, neighbours in links.items():
            found.extend((pmid, other, score, prov) for other, score in neighbours[:top])
    fetch([other for _, other, _, _ in found])
    return [{"type": "similar", "paper": paper_key(pmid), "similar": paper_key(other), "score": score,
             "provenance": prov} for pmid, other, score, prov in found if other in papers]


def write_merged(path: Path, records: list[dict]) -> int:
    """Merge `records` into the records file at `path` (newer wins per identity), sorted, atomically."""
    merged: dict[tuple, dict] = {}
    if path.exists():
        try:
            for record in read_records([path]):
                merged[record_identity(record)] = record
        except ParseError as exc:
            raise KbError(f"{exc}: move the damaged file away and run kb fetch again (the cache keeps "
                          "everything fetched)") from None
    for record in records:
        merged[record_identity(record)] = record
    return write_records(path, sorted(merged.values(), key=record_order))


def summary_line(summary: dict) -> str:
    """The one-line summary of a harvest."""
    extra = ""
    if summary["deleted"]:
        extra += f", {summary['deleted']} deleted"
    if summary["missing"]:
        extra += f", {len(summary['missing'])} not in PubMed"
    if summary.get("similar"):
        extra += f", {summary['similar']} similar-article links"
    if summary.get("mesh"):
        extra += f", {summary['mesh']} MeSH descriptors"
    return (f"{summary['papers']} papers, {summary['citations']} citations{extra}; {summary['requests']} requests, "
            f"{summary['cache_hits']} cache hits, {summary['retries']} retries, {summary['elapsed']:.1f} s"
            f" -> {summary['path']}")


def harvest_command(identifiers, *, data_dir, depth=1, cited_by=False, max_papers=None, email=None,
                    api_key=None, offline=False, refresh=False, client=None, sources=None, query=None,
                    similar=0, mesh_trees=False) -> dict:
    """`kb fetch`: run the harvest, print the summary, fail (exit 1) if any identifier could not be harvested
    or a citation source failed (the others' links are kept; a re-run asks the failed source again)."""
    from .sources import parse_sources, sources_line

    sources = parse_sources(sources)
    summary = harvest(identifiers, data_dir, depth=depth, cited_by=cited_by, max_papers=max_papers,
                      client=client, email=email, api_key=api_key, offline=offline, refresh=refresh,
                      echo=lambda line: click.echo(line, err=True), sources=sources, query=query,
                      similar=similar, mesh_trees=mesh_trees)
    click.echo(summary_line(summary))
    for note in summary.get("notes") or ():
        click.echo(note)
    if summary["sources"]:
        click.echo(sources_line(summary["sources"], summary["source_errors"]))
    if cited_by and not any(s in sources for s in ("europepmc", "opencitations", "icite")):
        click.echo(CITED_BY_NOTE)
    if not email and summary["requests"]:
        click.echo("Note: no --email (or NCBI_EMAIL) given; NCBI asks for a contact address with E-utilities "
                   "requests.", err=True)
    failed = "; ".join(f"citation source {n} failed ({m})" for n, m in summary["source_errors"].items())
    if failed and not summary["errors"]:
        raise KbError(f"{failed}; the other sources' links were harvested: run the same command again to "
                      "fill the gap")
    if failed:
        click.echo(f"Error: {failed}", err=True)
    if summary["errors"]:
        n = len(summary["errors"])
        asked = f"{len(list(identifiers))} identifiers" if not query else \
            f"{summary['seeds'] + n} seeds (identifiers and --query results)"
        raise KbError(f"{n} of {asked} could not be harvested (see above)"
                      + ("; the others were harvested" if summary["papers"] else ""))
    return summary
