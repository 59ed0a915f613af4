"""Fake open citation sources for kb's tests: Europe PMC, OpenCitations, Crossref and iCite on 127.0.0.1.

One ThreadingHTTPServer serves the four under path prefixes, each speaking its documented paths,
parameters and JSON (sample answers written for these tests):

- ``/europepmc/webservices/rest/MED/{pmid}/references|citations?format=json&page=&pageSize=`` (paged, hitCount)
- ``/opencitations/index/v2/references|citations/{doi:...|pmid:...}`` (a JSON list; ids "omid:... doi:... pmid:...")
- ``/crossref/works/{doi}`` (``message.reference`` and ``reference-count``; 404 "Resource not found.") and
  ``/crossref/works?filter=doi:A,doi:B&rows=N`` (``message.items``, the works it knows)
- ``/icite/api/pubs?pmids=...&fl=...`` (``data`` list; ``shape="2025"`` drops ``references``/``cited_by``)

The truth is a fake_eutils Corpus (the same papers the fake E-utilities serve): each paper's ``refs``.
``coverage`` ({source: percent}) hides a deterministic share of edges from a source; ``closed`` DOIs
have no open Crossref reference list (only the stated count). Faults: :meth:`FakeSources.fail` (400, 429 with
Retry-After, 500, 503, timeout, truncated or malformed JSON) for the next requests of a source, ``down``
(a set of source names answering 503 to everything), ``hitcount_lie`` (Europe PMC counts more than it
lists: paging past the end). Every request is logged with its arrival time and source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from fake_eutils import Corpus, Paper, Ref, small_corpus, JOURNALS
from localserver import LocalServer

try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

SOURCES = ("europepmc", "opencitations", "crossref", "icite")
PREFIX = {"europepmc": "/europepmc/webservices/rest/", "opencitations": "/opencitations/index/v2/",
          "crossref": "/crossref/", "icite": "/icite/api/"}
ENV = {"europepmc": "KB_EUROPEPMC_URL", "opencitations": "KB_OPENCITATIONS_URL", "crossref": "KB_CROSSREF_URL",
       "icite": "KB_ICITE_URL"}
FAULTS = ("400", "429", "500", "503", "timeout", "truncate", "malformed")


def sources_corpus() -> Corpus:
    """The small corpus as PubMed really sees a paper like the seed (Springer, 2011, not in PMC): no PMC
    copy, no ReferenceList, so PubMed links none of its references; plus a citer outside PMC whose record
    has no ReferenceList (30000014), which only the open sources know."""
    base = small_corpus()
    papers = []
    for p in sorted(base.papers.values(), key=lambda p: int(p.pmid)):
        if p.pmid == "30000001":
            p = dataclasses.replace(p, pmcid=None, reflist_in_xml=False)
        papers.append(p)
    papers.append(Paper("30000014", "Whole-body MRI of the marrow in children with leukemia.", JOURNALS[1], 2015, 4,
                        "62", "4", "700-6", doi="10.5555/kb.2015.0014",
                        authors=[("Novak", "Maria", "M", None, "Department of Radiology, Example Hospital.")],
                        abstract=[(None, None, "A cohort imaged before diagnosis.")],
                        refs=[Ref("30000001"), Ref("30000003")], reflist_in_xml=False))
    return Corpus(papers, deleted=base.deleted)


def pubmed_poor_network(n=400, seed=11, pmc_share=0.3) -> Corpus:
    """The benchmark's network: fake_eutils.generate_network, but PubMed knows only PMC links (~30% of
    papers in PMC, no ReferenceList in any record), like much of the real literature."""
    import random

    from fake_eutils import generate_network

    rng = random.Random(seed)
    base = generate_network(n, seed=seed)
    papers = [dataclasses.replace(p, reflist_in_xml=False,
                                  pmcid=f"PMC{9000000 + i}" if rng.random() < pmc_share else None)
              for i, p in enumerate(sorted(base.papers.values(), key=lambda p: int(p.pmid)))]
    return Corpus(papers)


def _omid(value: str) -> str:
    return "omid:br/0610" + str(int(hashlib.sha1(value.encode()).hexdigest()[:8], 16))


class Truth:
    """Who cites whom, and what each source may say about it."""

    def __init__(self, corpus: Corpus, coverage=None, closed=(), seed="kb"):
        self.corpus = corpus
        self.coverage = {s: 100 for s in SOURCES}
        self.coverage.update(coverage or {})
        self.closed = {d.lower() for d in closed}
        self.seed = seed
        self.citers: dict[str, list[str]] = {}
        for p in sorted(corpus.papers.values(), key=lambda p: int(p.pmid)):
            for r in p.refs:
                if r.pmid:
                    self.citers.setdefault(r.pmid, []).append(p.pmid)

    def knows(self, source: str, citing: str, cited: str) -> bool:
        pct = self.coverage.get(source, 100)
        if pct >= 100:
            return True
        h = int(hashlib.sha1(f"{self.seed}|{source}|{citing}|{cited}".encode()).hexdigest()[:8], 16)
        return h % 100 < pct

    def paper(self, pmid):
        return self.corpus.papers.get(str(pmid))

    def by_doi(self, doi):
        pmid = self.corpus.by_doi.get(str(doi).lower())
        return self.corpus.papers.get(pmid) if pmid else None

    @staticmethod
    def ref_key(ref: Ref) -> str:
        return ref.pmid or (ref.doi or "").lower() or (ref.citation or "")

    def refs(self, source: str, p: Paper) -> list[Ref]:
        return [r for r in p.refs if self.knows(source, p.pmid, self.ref_key(r))]

    def citing(self, source: str, pmid: str) -> list[Paper]:
        return [self.corpus.papers[c] for c in self.citers.get(pmid, []) if self.knows(source, c, pmid)
                and c in self.corpus.papers]

    def ref_fields(self, r: Ref) -> dict:
        """Title, journal, year, DOI and text of a reference."""
        cited = self.paper(r.pmid) if r.pmid else None
        if cited:
            return {"pmid": cited.pmid, "doi": cited.doi, "title": cited.title.rstrip("."), "journal": cited.journal.iso,
                    "year": cited.year, "text": cited.citation_text(), "authors": _authors(cited)}
        text = r.citation or ""
        parts = [s.strip() for s in text.split(". ")]   # authors. title. journal. year;volume:pages.
        title = parts[1] if len(parts) > 2 else None
        journal = parts[2] if len(parts) > 3 else None
        year = next((int(w[:4]) for w in text.replace(";", " ").split() if w[:4].isdigit() and 1900 < int(w[:4]) < 2100),
                    None)
        return {"pmid": r.pmid, "doi": r.doi, "title": title, "journal": journal, "year": year, "text": text,
                "authors": parts[0] if parts else None}


def _authors(p: Paper) -> str:
    names = [a if isinstance(a, str) else f"{a[0]} {a[2]}" for a in p.authors]
    return ", ".join(names) + "."


# ------------------------------------------------------------------------------------------------
# Answers
# ------------------------------------------------------------------------------------------------

def europepmc(truth: Truth, fake, path: str, params: dict):
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "MED" or parts[2] not in ("references", "citations"):
        return 404, {"errCode": 404, "errMsg": "Not found"}
    pmid, what = parts[1], parts[2]
    page = max(1, int((params.get("page") or ["1"])[0] or 1))
    size = min(int((params.get("pageSize") or ["25"])[0] or 25), fake.max_page_size, 1000)
    p = truth.paper(pmid)
    items = []
    if p and what == "references":
        for i, r in enumerate(truth.refs("europepmc", p), 1):
            f = truth.ref_fields(r)
            entry = {"citedOrder": i, "match": "Y" if f["pmid"] else "N", "title": f["title"] or f["text"],
                     "authorString": f["authors"]}
            if f["pmid"]:
                entry.update(id=f["pmid"], source="MED", citationType="JOURNAL ARTICLE")
            if f["doi"]:
                entry["doi"] = f["doi"]
            if f["year"]:
                entry["pubYear"] = f["year"]
            if f["journal"]:
                entry["journalAbbreviation"] = f["journal"]
            items.append(entry)
    elif p and what == "citations":
        for c in truth.citing("europepmc", pmid):
            items.append({"id": c.pmid, "source": "MED", "title": c.title, "authorString": _authors(c),
                          "journalAbbreviation": c.journal.iso, "pubYear": c.year, "citedByCount": 0})
    total = len(items) + (fake.hitcount_lie if items else 0)
    chunk = items[(page - 1) * size: page * size]
    key = ("referenceList", "reference") if what == "references" else ("citationList", "citation")
    body = {"version": "6.9", "hitCount": total,
            "request": {"id": pmid, "source": "MED", "page": page, "pageSize": size}}
    if chunk or page == 1:
        body[key[0]] = {key[1]: chunk}
    return 200, body


def _oc_ids(truth: Truth, pmid=None, doi=None) -> str:
    p = truth.paper(pmid) if pmid else truth.by_doi(doi) if doi else None
    doi = (p.doi if p else doi) or None
    pmid = p.pmid if p else pmid
    ids = [_omid(pmid or doi)]
    if doi:
        ids.append(f"doi:{doi.lower()}")
    if pmid:
        ids.append(f"pmid:{pmid}")
    return " ".join(ids)


def opencitations(truth: Truth, fake, path: str, params: dict):
    what, _, ident = path.strip("/").partition("/")
    ident = unquote(ident).lower()
    scheme, _, value = ident.partition(":")
    if what not in ("references", "citations") or scheme not in ("doi", "pmid", "omid"):
        return 400, {"error": f"HTTP status code 400: unsupported id {ident}"}
    p = truth.paper(value) if scheme == "pmid" else truth.by_doi(value) if scheme == "doi" else None
    rows = []
    if p:
        me = _oc_ids(truth, p.pmid)
        if what == "references":
            for r in truth.refs("opencitations", p):
                f = truth.ref_fields(r)
                if not (f["doi"] or f["pmid"]):
                    continue          # the index holds identified works only
                cited = _oc_ids(truth, f["pmid"], f["doi"])
                rows.append({"oci": f"{me.split()[0][9:]}-{cited.split()[0][9:]}", "citing": me, "cited": cited,
                             "creation": f"{p.year}-{p.month:02d}", "timespan": "P1Y", "journal_sc": "no",
                             "author_sc": "no"})
        else:
            for c in truth.citing("opencitations", p.pmid):
                citing = _oc_ids(truth, c.pmid)
                rows.append({"oci": f"{citing.split()[0][9:]}-{me.split()[0][9:]}", "citing": citing, "cited": me,
                             "creation": f"{c.year}-{c.month:02d}", "timespan": "P1Y", "journal_sc": "no",
                             "author_sc": "no"})
    return 200, rows


def crossref(truth: Truth, fake, path: str, params: dict):
    if path.strip("/") == "works":          # a list: filter=doi:A,doi:B (values of one filter are ORed)
        values = [v for f in params.get("filter", []) for v in f.split(",") if v]
        if any(not v.startswith("doi:") for v in values):
            return 400, {"status": "failed", "message-type": "validation-failure",
                         "message": [{"type": "filter-not-available", "value": v} for v in values]}
        rows = int((params.get("rows") or ["20"])[0])
        if rows > 1000:
            return 400, {"status": "failed", "message-type": "validation-failure", "message": "rows > 1000"}
        found = [truth.by_doi(v[4:].lower()) for v in values]
        items = [_crossref_work(truth, p) for p in sorted({p.doi: p for p in found if p}.values(),
                                                             key=lambda p: p.doi)]
        return 200, {"status": "ok", "message-type": "work-list", "message-version": "1.0.0",
                     "message": {"total-results": len(items), "items": items[:rows], "items-per-page": rows}}
    if not path.startswith("works/"):
        return 404, "Resource not found."
    p = truth.by_doi(unquote(path[len("works/"):]).lower())
    if p is None:
        return 404, "Resource not found."
    return 200, {"status": "ok", "message-type": "work", "message-version": "1.0.0",
                 "message": _crossref_work(truth, p)}


def _crossref_work(truth: Truth, p) -> dict:
    """A work's message as Crossref gives it: the reference list unless the publisher keeps it closed."""
    refs = truth.refs("crossref", p)
    message = {"DOI": p.doi, "type": "journal-article", "title": [p.title.rstrip(".")],
               "container-title": [p.journal.title], "reference-count": len(p.refs),
               "references-count": len(p.refs), "is-referenced-by-count": len(truth.citers.get(p.pmid, []))}
    if p.doi.lower() not in truth.closed:
        listed = []
        for i, r in enumerate(refs, 1):
            f = truth.ref_fields(r)
            entry = {"key": f"{p.doi}_ref{i}", "unstructured": f["text"]}
            if f["doi"]:
                entry.update({"DOI": f["doi"], "doi-asserted-by": "crossref"})
            if f["title"]:
                entry["article-title"] = f["title"]
            if f["journal"]:
                entry["journal-title"] = f["journal"]
            if f["year"]:
                entry["year"] = str(f["year"])
            listed.append(entry)
        message["reference"] = listed
    return message


def icite(truth: Truth, fake, path: str, params: dict):
    if path.strip("/") != "pubs":
        return 404, {"error": "not found"}
    pmids = [x for v in params.get("pmids", []) for x in v.split(",") if x.strip()]
    if len(pmids) > 200:
        return 400, {"error": "too many pmids: at most 200"}
    fl = [x for v in params.get("fl", []) for x in v.split(",") if x]
    data = []
    for pmid in pmids:
        p = truth.paper(pmid)
        if not p:
            continue
        row = {"_id": p.pmid, "pmid": int(p.pmid), "doi": p.doi, "year": p.year, "title": p.title,
               "citation_count": len(truth.citers.get(p.pmid, []))}
        if fake.icite_shape == "classic":
            row["references"] = [int(r.pmid) for r in truth.refs("icite", p) if r.pmid]
            row["cited_by"] = [int(c.pmid) for c in truth.citing("icite", p.pmid)]
        if fl:
            row = {k: v for k, v in row.items() if k in fl}
        data.append(row)
    return 200, {"meta": {"pmids": ",".join(pmids), "fl": ",".join(fl), "format": "json"},
                 "links": {"self": "/api/pubs"}, "data": data}


ANSWER = {"europepmc": europepmc, "opencitations": opencitations, "crossref": crossref, "icite": icite}


# ------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeSources/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        fake: FakeSources = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        source = next((s for s, pre in PREFIX.items() if url.path.startswith(pre)), None)
        params = parse_qs(url.query, keep_blank_values=True)
        entry = {"t": time.monotonic(), "source": source, "path": url.path, "params": params, "status": None,
                 "headers": dict(self.headers)}
        fake._log(entry)
        if source is None:
            return self._send(404, b"not found", "text/plain", entry)
        fault = fake._pick_fault(source)
        rel = unquote(url.path[len(PREFIX[source]):]) if source != "opencitations" else url.path[len(PREFIX[source]):]
        if fault == "400":
            return self._send(400, b'{"status":"error","message":"bad request"}', "application/json", entry)
        if fault in ("500", "503"):
            return self._send(int(fault), b"<html><body>Service unavailable</body></html>", "text/html", entry)
        if fault == "429":
            return self._send(429, b'{"message":"rate limit exceeded"}', "application/json", entry,
                              headers={"Retry-After": fake.retry_after})
        if fault == "timeout":
            entry["status"] = "timeout"
            time.sleep(fake.timeout_sleep)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        try:
            status, body = ANSWER[source](fake.truth, fake, rel, params)
        except Exception as exc:  # a bug in the fake: say so rather than hang
            return self._send(500, f"fake server error: {exc!r}".encode(), "text/plain", entry)
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        ctype = "text/plain" if isinstance(body, str) else "application/json;charset=UTF-8"
        if fault == "truncate":      # promises the whole body, sends half, hangs up
            self._send(status, raw, ctype, entry, write=raw[: max(1, len(raw) // 2)])
            self.close_connection = True
            return None
        if fault == "malformed":     # a cut body with a matching length: only the JSON parser can tell
            raw = raw[: max(1, len(raw) // 2)]
        return self._send(status, raw, ctype, entry)

    def _send(self, status, body: bytes, ctype, entry, headers=None, write=None):
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if write is None else write)
        self.wfile.flush()


class FakeSources(LocalServer):
    """``with FakeSources(truth_corpus) as fake: monkeypatch env from fake.env() ...``."""
    handler = _Handler
    name = "fake-sources"

    def __init__(self, corpus: Corpus | None = None, *, coverage=None, closed=(), icite_shape="classic",
                 down=(), max_page_size=1000, hitcount_lie=0, retry_after="0", timeout_sleep=1.0):
        self.truth = Truth(corpus or sources_corpus(), coverage=coverage, closed=closed)
        self.icite_shape = icite_shape
        self.down = set(down)
        self.max_page_size = max_page_size
        self.hitcount_lie = hitcount_lie
        self.retry_after = retry_after
        self.timeout_sleep = timeout_sleep
        self.requests: list[dict] = []
        self._queued: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        """The environment variables that point kb's sources at this server."""
        return {ENV[s]: self.base_url + PREFIX[s] for s in SOURCES}

    def fail(self, kind: str, times: int = 1, source: str | None = None):
        if kind not in FAULTS:
            raise ValueError(kind)
        with self._lock:
            self._queued.extend([(kind, source)] * times)

    def count(self, source: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if source is None or r["source"] == source)

    def times(self, source: str) -> list[float]:
        with self._lock:
            return [r["t"] for r in self.requests if r["source"] == source]

    def reset(self):
        with self._lock:
            self.requests.clear()
            self._queued.clear()

    def _log(self, entry):
        with self._lock:
            self.requests.append(entry)

    def _pick_fault(self, source: str) -> str | None:
        with self._lock:
            if source in self.down:
                return "503"
            for i, (kind, only) in enumerate(self._queued):
                if only is None or only == source:
                    del self._queued[i]
                    return kind
        return None


if pytest is not None:
    @pytest.fixture
    def fake_sources():
        """The four open sources over :func:`sources_corpus`."""
        with FakeSources() as server:
            yield server

    @pytest.fixture
    def sources_env(fake_sources, monkeypatch):
        """The fake sources with kb's base URLs pointing at them, quick retries, every source chosen."""
        for k, v in fake_sources.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("KB_SOURCES_BACKOFF", "0.01")
        monkeypatch.setenv("KB_SOURCES_TIMEOUT", "2")
        monkeypatch.setenv("KB_SOURCES_TRIES", "3")
        monkeypatch.delenv("OPENCITATIONS_ACCESS_TOKEN", raising=False)
        monkeypatch.delenv("KB_SOURCES", raising=False)
        return fake_sources


def main(argv=None):  # pragma: no cover - a manual tool
    """Serve the fake E-utilities and the four open sources over one corpus; print the environment to use."""
    import argparse

    from fake_eutils import FakeEutils

    ap = argparse.ArgumentParser(description="fake citation sources (and E-utilities) for trying kb fetch --sources")
    ap.add_argument("--network", type=int, default=0, help="serve pubmed_poor_network(N) instead of the small corpus")
    ap.add_argument("--down", default="", help="comma-separated sources that answer 503 to everything")
    args = ap.parse_args(argv)
    corpus = pubmed_poor_network(args.network) if args.network else sources_corpus()
    eutils = FakeEutils(corpus).start()
    fake = FakeSources(corpus, down=[s for s in args.down.split(",") if s]).start()
    print(f"export KB_EUTILS_URL={eutils.base_url}")
    for k, v in fake.env().items():
        print(f"export {k}={v}")
    print(f"# {len(corpus.papers)} papers; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
        eutils.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
