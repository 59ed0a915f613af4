"""Citation sources for `kb fetch`: who cites what, from PubMed and from open citation indexes.

PubMed's elink only links papers in PubMed Central; the open sources fill the gap. Each source is a
small module with one interface (:class:`Source`): ``references(works)`` and ``citers(works)`` take the
papers of one harvest hop (:class:`Work`: kb key, PMID, DOI, PMCID) and return an :class:`Answer`:
citation records (``source`` = the source's name) and, per paper, what the source knew (coverage).

=============  =========================================================================================
pubmed         NCBI elink ``pubmed_pubmed_refs`` / ``pubmed_pubmed_citedin`` (PMC only), batches of 200
europepmc      Europe PMC REST ``/MED/{pmid}/references`` and ``/citations`` (JSON, paged)
opencitations  OpenCitations Index API v2 ``/references/{id}`` and ``/citations/{id}`` (doi:/pmid:)
crossref       Crossref ``/works?filter=doi:...`` (50 a request): publisher-deposited references, ``reference-count``
icite          NIH iCite ``/api/pubs?pmids=...`` (batches of 200): ``references`` and ``cited_by`` PMIDs
=============  =========================================================================================

:func:`gather` asks every chosen source about one hop (the open sources in parallel threads, each at
its own rate), merges identifiers (a DOI that another source or PubMed knows the PMID of becomes that
PMID), and says which sources failed: a failed source never stops the others.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import KbError
from ..records import normalize_doi, paper_key

SOURCE_NAMES = ("pubmed", "europepmc", "opencitations", "crossref", "icite")
DEFAULT_SOURCES = SOURCE_NAMES          # all of them are free and need no key
OPEN_SOURCES = SOURCE_NAMES[1:]


@dataclass(frozen=True)
class Work:
    """A paper a source is asked about."""
    key: str
    pmid: str | None = None
    doi: str | None = None
    pmcid: str | None = None
    reflist: tuple = ()                 # PubMed's own reference list: ((pmid, doi, text), ...)

    @classmethod
    def from_paper(cls, record: dict) -> "Work":
        refs = tuple((r.get("pmid"), r.get("doi"), r.get("citation")) for r in record.get("references") or ()
                     if isinstance(r, dict))
        return cls(record["id"], str(record["pmid"]) if record.get("pmid") else None,
                   normalize_doi(record.get("doi")), record.get("pmcid") or None, refs)


@dataclass
class Answer:
    """Citation records and per-paper coverage (paper key -> {references, citers, stated_references,
    status, message}) from one source."""
    citations: list = field(default_factory=list)
    coverage: dict = field(default_factory=dict)

    def note(self, key: str, **fields) -> None:
        """Merge coverage fields for one paper (counts add up; a worse status wins)."""
        have = self.coverage.setdefault(key, {"references": None, "citers": None, "stated_references": None,
                                              "status": "ok", "message": None})
        for name in ("references", "citers", "stated_references"):
            if fields.get(name) is not None:
                have[name] = (have[name] or 0) + fields[name] if name != "stated_references" else fields[name]
        status = fields.get("status")
        if status and STATUS_RANK[status] > STATUS_RANK[have["status"]]:
            have["status"] = status
            have["message"] = fields.get("message")
        elif fields.get("message") and not have["message"]:
            have["message"] = fields["message"]


STATUS_RANK = {"ok": 0, "no-links": 1, "not-found": 2, "failed": 3}


class Source:
    """One citation source. Subclasses set ``name``, ``licence``, ``limits`` and implement
    :meth:`references` / :meth:`citers` (a source that cannot give citers leaves ``gives_citers`` False)."""

    name = ""
    licence = ""
    limits = ""
    gives_citers = True
    fatal = False          # True: an error stops the harvest (PubMed, the backbone); else the source is skipped

    def __init__(self, client):
        self.client = client

    @property
    def stats(self) -> dict:
        return self.client.stats

    def references(self, works: list[Work]) -> Answer:  # pragma: no cover - interface
        raise NotImplementedError

    def citers(self, works: list[Work]) -> Answer:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def headers(cls) -> dict:
        """Extra request headers (an access token from the environment); never cached or logged."""
        return {}

    def each(self, works: list[Work], ask, answer: Answer | None = None) -> Answer:
        """Call ``ask(work, answer)`` per work; a request refused for one work (HTTP 4xx, an --offline cache
        miss) fails that work only, a source that keeps failing (SourceDown) stops the source."""
        from .http import SourceDown

        answer = answer or Answer()
        for w in works:
            try:
                ask(w, answer)
            except SourceDown:
                raise
            except KbError as exc:
                answer.note(w.key, status="failed", message=str(exc))
        return answer


def citation_record(citing: str, cited_pmid=None, cited_doi=None, source: str = "", prov=None, raw=None,
                    cited_title=None, cited_year=None, cited_journal=None) -> dict:
    """A citation record (see docs/records.md); the cited_title/year/journal fields only when known."""
    cited_pmid = str(cited_pmid).strip() if cited_pmid not in (None, "") else None
    cited_doi = normalize_doi(cited_doi)
    cited = paper_key(cited_pmid, cited_doi) if (cited_pmid or cited_doi) else None
    record = {"type": "citation", "citing": citing, "cited": cited, "raw": raw, "cited_pmid": cited_pmid,
              "cited_doi": cited_doi, "source": source, "resolved": cited is not None, "provenance": prov}
    for name, value in (("cited_title", cited_title), ("cited_year", cited_year), ("cited_journal", cited_journal)):
        if value not in (None, ""):
            record[name] = int(value) if name == "cited_year" and str(value).isdigit() else value
    return record


def parse_sources(text) -> list[str]:
    """``--sources pubmed,europepmc,...`` as a list in the canonical order; ``all`` means every source."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return list(DEFAULT_SOURCES)
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names = [str(i).strip().lower() for i in items if str(i).strip()]
    if "all" in names:
        return list(SOURCE_NAMES)
    unknown = [n for n in names if n not in SOURCE_NAMES]
    if unknown:
        raise KbError(f"unknown citation source {unknown[0]!r}: choose from {', '.join(SOURCE_NAMES)} (or all)")
    return [n for n in SOURCE_NAMES if n in names]


def open_sources(names, cache_dir, *, eutils=None, email=None, offline=False, refresh=False,
                 progress=None) -> list[Source]:
    """Source objects for `names` (see :func:`parse_sources`); PubMed's wraps the harvest's E-utilities client."""
    from .http import JsonClient

    out = []
    for name in parse_sources(names):
        if name == "pubmed":
            from .pubmed import PubMed

            if eutils is None:
                raise KbError("the pubmed source needs the harvest's E-utilities client")
            out.append(PubMed(eutils))
            continue
        module = __import__(f"{__name__}.{name}", fromlist=["SOURCE"])
        cls = module.SOURCE
        client = JsonClient(name, cache_dir, email=email, offline=offline, refresh=refresh, progress=progress,
                            headers=cls.headers())
        out.append(cls(client))
    return out


@dataclass
class HopLinks:
    """What the sources said about one hop: records, candidates for the next hop, failures."""
    citations: list = field(default_factory=list)
    coverage: list = field(default_factory=list)        # coverage records
    candidates: dict = field(default_factory=dict)      # PMID -> set of hop PMIDs linked to it
    failed: dict = field(default_factory=dict)          # source name -> one-line reason


def _ask(source: Source, works: list[Work], cited_by: bool, down: dict) -> Answer:
    """One source's references (and citers) for the hop; a failing source is noted in `down` and skipped."""
    from .http import SourceDown

    answer = Answer()
    if source.name in down:
        for w in works:
            answer.note(w.key, status="failed", message=down[source.name])
        return answer
    try:
        for part in [source.references(works)] + ([source.citers(works)] if cited_by and source.gives_citers else []):
            answer.citations.extend(part.citations)
            for key, fields in part.coverage.items():
                answer.note(key, **fields)
    except (KbError, ValueError, TypeError, AttributeError, KeyError) as exc:
        if source.fatal:
            raise
        if isinstance(exc, SourceDown):
            down[source.name] = str(exc)
        message = str(exc) if isinstance(exc, KbError) else \
            f"{source.name}: an answer kb could not read ({type(exc).__name__}: {str(exc)[:80]})"
        answer = Answer()
        for w in works:
            answer.note(w.key, status="failed", message=message)
    return answer


def gather(sources: list[Source], papers: list[dict], cited_by: bool, down: dict | None = None) -> HopLinks:
    """Ask every source about `papers` (paper records of one hop); `down` (name -> reason) carries the
    sources that failed earlier in the run, which are not asked again."""
    from ..records import provenance

    down = {} if down is None else down
    works = [Work.from_paper(p) for p in papers]
    answers: dict[str, Answer] = {}
    errors: list[BaseException] = []

    def run(source):
        try:
            answers[source.name] = _ask(source, works, cited_by, down)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = []
    for source in sources:
        if source.fatal:
            continue
        t = threading.Thread(target=run, args=(source,), name=f"kb-source-{source.name}", daemon=True)
        t.start()
        threads.append(t)
    for source in sources:          # PubMed in this thread, meanwhile
        if source.fatal:
            run(source)
    for t in threads:
        while t.is_alive():
            t.join(0.2)              # short joins: Ctrl-C still reaches this thread
    if errors:
        raise errors[0]

    out = HopLinks()
    hop = {w.key: w for w in works}
    # One identity per work: a DOI that any answer (or a hop paper) pairs with a PMID means that PMID.
    doi_pmid = {w.doi: w.pmid for w in works if w.doi and w.pmid}
    for name in SOURCE_NAMES:
        for c in answers.get(name, Answer()).citations:
            if c.get("cited_doi") and c.get("cited_pmid"):
                doi_pmid.setdefault(c["cited_doi"], c["cited_pmid"])
    for name in SOURCE_NAMES:
        answer = answers.get(name)
        if answer is None:
            continue
        for c in answer.citations:
            if c.get("cited_doi") and not c.get("cited_pmid") and c["cited_doi"] in doi_pmid:
                c["cited_pmid"] = doi_pmid[c["cited_doi"]]
                c["cited"] = paper_key(c["cited_pmid"])
            if c.get("citing", "").startswith("doi:") and c["citing"][4:] in doi_pmid:
                c["citing"] = paper_key(doi_pmid[c["citing"][4:]])
            out.citations.append(c)
            citing, cited = c.get("citing"), c.get("cited")
            if citing in hop and hop[citing].pmid and c.get("cited_pmid"):
                out.candidates.setdefault(c["cited_pmid"], set()).add(hop[citing].pmid)
            elif cited in hop and hop[cited].pmid and citing and citing.startswith("pmid:"):
                out.candidates.setdefault(citing[5:], set()).add(hop[cited].pmid)
        for key in sorted(answer.coverage):
            f = answer.coverage[key]
            out.coverage.append({"type": "coverage", "paper": key, "source": name, "references": f["references"],
                                 "citers": f["citers"] if cited_by else None,
                                 "stated_references": f["stated_references"], "status": f["status"],
                                 "message": f["message"], "provenance": provenance(name)})
    for record in out.coverage:
        if record["status"] == "failed":
            out.failed.setdefault(record["source"], record["message"])
    return out


def sources_line(stats: dict, failed: dict) -> str:
    """One line of per-source numbers for the harvest summary: links found, requests, cache hits."""
    parts = []
    for name in SOURCE_NAMES:
        s = stats.get(name)
        if not s:
            continue
        text = f"{name} {s['links']} links ({s['requests']} requests, {s['cache_hits']} cache hits"
        text += f", {s['retries']} retries)" if s.get("retries") else ")"
        if name in failed:
            text += " FAILED"
        parts.append(text)
    return "Sources: " + "; ".join(parts)
