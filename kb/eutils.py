"""NCBI E-utilities client on Bio.Entrez, with kb's cache, rate limit and retry policy.

Bio.Entrez builds every request (parameters, id joining, GET/POST choice, ECitMatch's bdata) but its
URLs are fixed to NCBI and its ``_open`` sleeps and retries on its own. kb keeps the building and takes
over the sending: :func:`_install_capture` replaces ``Bio.Entrez._open`` once with a dispatcher that,
only inside :func:`_entrez_request` (a thread-local flag), returns the built ``urllib.request.Request``
instead of opening it; outside kb the original ``_open`` runs as before. kb then rewrites the URL prefix
to the base URL (``base_url=`` or ``KB_EUTILS_URL``, default NCBI's) and sends the request itself:

- at most 3 requests/s without an API key, 10 with one, across all clients and threads of the process;
- retries with exponential backoff and jitter on 429 (honouring Retry-After), 5xx, connection errors,
  timeouts, truncated bodies, malformed XML and XML whose root holds an ``<ERROR>``; then one-line KbError;
- every answer is cached (kb.cache) under a key without the API key; ``offline`` never sends anything;
- ids are sent in batches of at most 200 (POST when the list is long); elink gets one ``id=`` per PMID,
  so NCBI answers with one LinkSet per input id.

The API key is sent to NCBI and nowhere else: not in cache keys, cache files, provenance, logs or errors.
Tuning (for tests and slow links): ``KB_EUTILS_TIMEOUT`` (seconds per request, default 60) and
``KB_EUTILS_BACKOFF`` (first retry delay in seconds, default 1; doubled per try).
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import socket
import threading
import time
import warnings
from email.utils import parsedate_to_datetime
from typing import Callable, Iterable, Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qsl, urlencode, urlsplit
from urllib.request import Request, urlopen

from Bio import Entrez
from lxml import etree

from . import __version__
from .cache import Cache, cache_key, key_params, utc_now
from .errors import KbError, NotFound
from .records import provenance

log = logging.getLogger("kb.eutils")

NCBI_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
BATCH = 200           # ids per efetch/elink request (NCBI's recommendation)
ECITMATCH_BATCH = 100  # citations per ECitMatch request
ESEARCH_PAGE = 5000     # ids per esearch page through the history server (NCBI allows up to 10,000)
ESEARCH_PUBMED_MAX = 9999  # PubMed's esearch serves only the first 9,999 ids of a search (retstart <= 9998)
MAX_TRIES = 6
MAX_WAIT = 120.0       # longest single wait, whatever Retry-After says
PERMANENT_ERRORS = ("nothing todo", "invalid", "unknown", "not supported", "too long")


# ------------------------------------------------------------------------------------------------
# Bio.Entrez request capture
# ------------------------------------------------------------------------------------------------

_capture = threading.local()


def _install_capture() -> None:
    """Replace Bio.Entrez._open with a dispatcher that hands kb the built Request (see module docstring)."""
    original = Entrez._open
    if getattr(original, "_kb_capture", False):
        return

    def _open(request):
        if getattr(_capture, "active", False):
            return request
        return original(request)

    _open._kb_capture = True
    _open.previous = getattr(original, "previous", 0)  # the original reads and writes `_open.previous`
    Entrez._open = _open


_install_capture()


def _entrez_request(func: Callable, **params) -> Request:
    """The urllib Request that Bio.Entrez's `func` (efetch, esearch, elink, ecitmatch) would send."""
    _capture.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Biopython warns when no e-mail is set; kb says so once itself
            request = func(**params)
    finally:
        _capture.active = False
    if not isinstance(request, Request):  # pragma: no cover - a Biopython change
        raise KbError("Bio.Entrez did not return a request: this Biopython version is not supported")
    return request


# ------------------------------------------------------------------------------------------------
# Rate limit
# ------------------------------------------------------------------------------------------------

class RateLimiter:
    """Spaces request starts at least `interval` seconds apart, for every thread of the process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, interval: float) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + interval
        if start > now:
            time.sleep(start - now)


RATE_LIMITER = RateLimiter()


def min_interval(api_key: str | None) -> float:
    """Seconds between requests: NCBI allows 3/s without an API key and 10/s with one (2% margin)."""
    return 1.02 / (10 if api_key else 3)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _unique(ids: Iterable) -> list[str]:
    return list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip()))


def _xml(body: bytes):
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    return etree.fromstring(body, parser=parser)


def xml_problem(body: bytes) -> str | None:
    """Why an XML answer cannot be used (malformed, or an NCBI <ERROR>), or None when it is fine."""
    try:
        root = _xml(body)
    except etree.XMLSyntaxError as exc:
        return f"malformed or truncated XML ({str(exc).splitlines()[0][:80]})"
    errors = [root] if root.tag == "ERROR" else root.findall("ERROR")
    if errors:
        text = " ".join((errors[0].text or "").split())[:120]
        return f"NCBI error: {text or 'ERROR'}"
    return None


def _history_gone(body: bytes) -> bool:
    """An esearch answer saying the history server no longer knows the WebEnv / query_key."""
    problem = xml_problem(body) or ""
    return problem.startswith("NCBI error") and any(
        w in problem.lower() for w in ("unable to obtain query", "webenv", "query_key", "query key"))


def _history_page_problem(body: bytes) -> str | None:
    """xml_problem for a history page, except that a lost history is an answer (handled by a new search)."""
    return None if _history_gone(body) else xml_problem(body)


def describe(util: str, pairs) -> str:
    """A short, key-free description of a request for messages: ``efetch id=1,2,3... (200 ids)``."""
    parts = []
    ids = [v for k, v in pairs if k == "id"]
    for k, v in key_params(pairs):
        if k in ("db", "retmode", "cmd", "dbfrom", "tool", "email") or (k == "id" and len(ids) > 1):
            continue
        v = " ".join(str(v).split())  # ECitMatch's bdata holds line breaks: messages stay one line
        if k == "id" and "," in v:
            n = v.count(",") + 1
            v = f"{v[:40]}... ({n} ids)" if len(v) > 40 else v
        elif len(v) > 60:
            v = v[:57] + "..."
        parts.append(f"{k}={v}")
    if len(ids) > 1:
        shown = ",".join(ids[:3])
        parts.append(f"id={shown}{'...' if len(ids) > 3 else ''} ({len(ids)} ids)")
    return " ".join([util.split(".")[0]] + parts)


def network_problem(exc: BaseException, timeout: float) -> str:
    """One line for a transient network failure (timeout, truncated body, refused or dropped connection)."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return f"truncated answer ({len(exc.partial)} bytes)"
    reason = getattr(exc, "reason", None) or exc
    return f"connection failed ({type(reason).__name__}: {reason})" if str(reason) else \
        f"connection failed ({type(reason).__name__})"


TRANSIENT_ERRORS = (socket.timeout, TimeoutError, http.client.IncompleteRead, URLError, http.client.HTTPException,
                    ConnectionError, OSError)


def retry_delay(attempt: int, backoff: float, wait_hint: float | None) -> float:
    """Seconds before try `attempt` + 1: exponential backoff with jitter, at least what Retry-After asked,
    never more than MAX_WAIT."""
    delay = min(MAX_WAIT, backoff * 2 ** (attempt - 1) + random.uniform(0, backoff))
    return max(delay, min(MAX_WAIT, wait_hint)) if wait_hint is not None else delay


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def send_with_retries(request: Request, what: str, *, tries: int, backoff: float, timeout: float,
                      before_try: Callable[[], None], on_retry: Callable[[], None], check: Callable,
                      http_answer: Callable[[HTTPError], tuple[bytes, int] | None] = lambda exc: None,
                      redact: Callable[[str], str] = str, logger: logging.Logger | None = None
                      ) -> tuple[bytes | None, int | str]:
    """The retry loop shared by E-utilities and the open citation sources: send `request` up to `tries`
    times (`before_try` waits for the rate limit and counts it), retrying 429, 5xx, network failures and
    bodies `check` finds unusable, with backoff honouring Retry-After. Other HTTP errors go to
    `http_answer`, which raises, or returns an answer to keep (a 404 may be one). Returns (body, status),
    or (None, the last problem) once every try failed."""
    problem = None
    for attempt in range(1, tries + 1):
        before_try()
        wait_hint = None
        try:
            with urlopen(request, timeout=timeout) as response:
                status, body = response.status, response.read()
            problem = check(body)
            if problem is None:
                return body, status
        except HTTPError as exc:
            wait_hint = _retry_after(exc.headers.get("Retry-After")) if exc.headers else None
            try:
                if exc.code != 429 and exc.code < 500:
                    answer = http_answer(exc)
                    if answer is not None:
                        return answer
                    raise KbError(redact(f"{what}: HTTP {exc.code} {exc.reason}")) from None
            finally:
                exc.close()
            problem = f"HTTP {exc.code}"
        except TRANSIENT_ERRORS as exc:
            problem = network_problem(exc, timeout)
        problem = redact(problem)
        if attempt == tries:
            break
        delay = retry_delay(attempt, backoff, wait_hint)
        (logger or log).info("%s: %s; retrying in %.1f s (try %d of %d)", what, problem, delay, attempt + 1, tries)
        on_retry()
        time.sleep(delay)
    return None, problem


# ------------------------------------------------------------------------------------------------
# The client
# ------------------------------------------------------------------------------------------------

class Eutils:
    """E-utilities with cache, rate limit and retries. ``stats``: requests sent, cache hits, retries."""

    def __init__(self, cache_dir, *, email=None, api_key=None, base_url=None, offline=False, refresh=False,
                 tool="kb", progress=None, timeout=None, max_tries=MAX_TRIES, backoff=None):
        self.cache = Cache(cache_dir)
        self.email = email or None
        self.api_key = api_key or None
        self.tool = tool
        self.offline = offline
        self.refresh = refresh
        self.progress = progress
        self.base_url = self._base_url(base_url or os.environ.get("KB_EUTILS_URL") or NCBI_URL)
        self.timeout = float(timeout or os.environ.get("KB_EUTILS_TIMEOUT") or 60)
        self.max_tries = max(1, int(max_tries))
        self.backoff = float(backoff if backoff is not None else os.environ.get("KB_EUTILS_BACKOFF") or 1.0)
        self.interval = min_interval(self.api_key)
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}
        self._lock = threading.Lock()
        self._refreshed: set[str] = set()

    @staticmethod
    def _base_url(url: str) -> str:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise KbError(f"KB_EUTILS_URL must be an http(s) URL such as {NCBI_URL}, not {url!r}")
        return url if url.endswith("/") else url + "/"

    # -- public interface --
    def esearch(self, term: str, *, db: str = "pubmed", retmax: int = 20) -> list[str]:
        """The ids (PMIDs for db=pubmed) that esearch finds for `term`, best first."""
        body, _ = self._call("esearch.fcgi", Entrez.esearch, db=db, term=term, retmax=retmax)
        return [e.text.strip() for e in _xml(body).findall("IdList/Id") if e.text and e.text.strip()]

    def efetch_xml(self, pmids) -> Iterator[tuple[bytes, dict]]:
        """Raw PubmedArticleSet XML for `pmids`, one batch of up to 200 at a time, with its provenance."""
        for chunk in _chunks(_unique(pmids), BATCH):
            body, header = self._call("efetch.fcgi", Entrez.efetch, db="pubmed", id=chunk, retmode="xml")
            yield body, self.provenance(header, "pubmed-efetch")

    def elink(self, pmids, linkname: str) -> dict[str, list[str]]:
        """Linked ids per input id (``pubmed_pubmed_refs``, ``pubmed_pubmed_citedin``, ``pmc_pubmed``...)."""
        result: dict[str, list[str]] = {}
        for links, _ in self.elink_batches(pmids, linkname):
            result.update(links)
        return result

    def elink_batches(self, ids, linkname: str) -> Iterator[tuple[dict[str, list[str]], dict]]:
        """Like :meth:`elink`, one batch at a time, each with the provenance of its request."""
        dbfrom = linkname.split("_", 1)[0]
        for chunk in _chunks(_unique(ids), BATCH):
            body, header = self._call("elink.fcgi", Entrez.elink, dbfrom=dbfrom, db="pubmed", linkname=linkname,
                                      id=chunk, cmd="neighbor")
            links = {i: [] for i in chunk}
            for linkset in _xml(body).iterfind("LinkSet"):
                set_ids = [e.text.strip() for e in linkset.findall("IdList/Id") if e.text]
                if len(set_ids) != 1:
                    continue
                found = links.setdefault(set_ids[0], [])
                for db in linkset.iterfind("LinkSetDb"):
                    if (db.findtext("LinkName") or "").strip() == linkname:
                        found.extend(e.text.strip() for e in db.findall("Link/Id") if e.text)
            yield {k: list(dict.fromkeys(v)) for k, v in links.items()}, self.provenance(header, f"elink:{linkname}")

    def ecitmatch(self, citations) -> dict[str, str | None]:
        """PMIDs for citations [{key, journal, year, volume, first_page, author}] via ECitMatch: {key: pmid or None}."""
        citations = list(citations)
        result: dict[str, str | None] = {}
        clean = lambda v: " ".join(str(v or "").replace("|", " ").split())  # noqa: E731
        for start in range(0, len(citations), ECITMATCH_BATCH):
            batch = citations[start:start + ECITMATCH_BATCH]
            keys = {f"kb{start + i}": str(c.get("key", start + i)) for i, c in enumerate(batch)}
            # NCBI's bdata format, one citation a line: journal|year|volume|first_page|author|key|
            # (a ready string: Bio.Entrez drops tool/email/api_key when given a list of dicts)
            bdata = "\r".join("|".join([clean(c.get("journal")), clean(c.get("year")), clean(c.get("volume")),
                                         clean(c.get("first_page")), clean(c.get("author")), k, ""])
                               for k, c in zip(keys, batch))
            check = lambda body, keys=keys: self._ecitmatch_problem(body, keys)  # noqa: E731
            body, _ = self._call("ecitmatch.cgi", Entrez.ecitmatch, db="pubmed", bdata=bdata, check=check)
            for key, answer in self._ecitmatch_lines(body).items():
                if key in keys:
                    result[keys[key]] = answer if answer.isdigit() else None
            for key in keys.values():
                result.setdefault(key, None)
        return result

    def esearch_history(self, term: str, *, db: str = "pubmed", limit: int | None = None,
                        page: int | None = None) -> dict:
        """Every id esearch finds for `term`, up to `limit` (and, for PubMed, the first 9,999 only: NCBI's cap),
        through the history server: the first page with ``usehistory=y``, the others by ``WebEnv`` and
        ``query_key`` with ``retstart``/``retmax``. Returns {ids, count, retrievable, capped, provenance}.
        A cached WebEnv the history server no longer knows is replaced by a fresh search."""
        if not term or not term.strip():
            raise KbError("the query is empty")
        page = max(1, int(page or ESEARCH_PAGE))
        first_max = page if limit is None else max(1, min(page, limit))
        params = dict(db=db, term=term, usehistory="y", retstart=0, retmax=first_max)
        body, header = self._call("esearch.fcgi", Entrez.esearch, **params)
        refreshed = False
        while True:
            root = _xml(body)
            count = int((root.findtext("Count") or "0").strip() or 0)
            webenv, query_key = (root.findtext("WebEnv") or "").strip(), (root.findtext("QueryKey") or "").strip()
            ids = [e.text.strip() for e in root.findall("IdList/Id") if e.text and e.text.strip()]
            cap = min(count, ESEARCH_PUBMED_MAX) if db == "pubmed" else count
            target = cap if limit is None else min(cap, limit)
            gone = False
            while len(ids) < target and webenv and query_key:
                start = len(ids)
                page_body, page_header = self._call(
                    "esearch.fcgi", Entrez.esearch, check=_history_page_problem, db=db, term=term, WebEnv=webenv,
                    query_key=query_key, retstart=start, retmax=min(page, target - start))
                if _history_gone(page_body):
                    self.cache.discard("esearch.fcgi", page_header["key"])
                    gone = True
                    break
                more = [e.text.strip() for e in _xml(page_body).findall("IdList/Id") if e.text and e.text.strip()]
                if not more:
                    break  # the result set shrank since the first page
                ids.extend(more)
            if not gone:
                break
            if refreshed:
                raise KbError(f"esearch term={term[:60]}: the history server lost the search twice; "
                              "run the same command again later")
            refreshed = True
            log.info("esearch: the history server no longer knows WebEnv %s; searching again", webenv[:20])
            body, header = self._call("esearch.fcgi", Entrez.esearch, fresh=True, **params)
        ids = _unique(ids)[:target]
        return {"ids": ids, "count": count, "retrievable": cap, "capped": count > cap,
                "provenance": self.provenance(header, "pubmed-esearch")}

    def elink_scores(self, ids, linkname: str = "pubmed_pubmed") -> Iterator[tuple[dict[str, list], dict]]:
        """Neighbours with their scores (elink ``cmd=neighbor_score``, e.g. PubMed's similar articles), one batch
        of up to 200 ids at a time: ({id: [(neighbour, score), ...] best first, the id itself left out}, provenance)."""
        dbfrom = linkname.split("_", 1)[0]
        for chunk in _chunks(_unique(ids), BATCH):
            body, header = self._call("elink.fcgi", Entrez.elink, dbfrom=dbfrom, db="pubmed", linkname=linkname,
                                      id=chunk, cmd="neighbor_score")
            links: dict[str, dict[str, int]] = {i: {} for i in chunk}
            for linkset in _xml(body).iterfind("LinkSet"):
                set_ids = [e.text.strip() for e in linkset.findall("IdList/Id") if e.text]
                if len(set_ids) != 1:
                    continue
                found = links.setdefault(set_ids[0], {})
                for db in linkset.iterfind("LinkSetDb"):
                    if (db.findtext("LinkName") or "").strip() != linkname:
                        continue
                    for link in db.iterfind("Link"):
                        other = (link.findtext("Id") or "").strip()
                        score = (link.findtext("Score") or "").strip()
                        if other and other != set_ids[0] and other not in found:
                            found[other] = int(score) if score.isdigit() else 0
            # best first; equal scores keep NCBI's order (a stable sort)
            yield ({k: sorted(v.items(), key=lambda kv: -kv[1]) for k, v in links.items()},
                   self.provenance(header, f"elink:{linkname}"))

    def mesh_summaries(self, uis) -> Iterator[tuple[dict[str, dict], dict]]:
        """Names and tree numbers of MeSH descriptors (UIs such as D008279) by esummary ``db=mesh``
        (``version=2.0``), 200 per request: ({ui: {name, tree_numbers}}, provenance) per batch."""
        from .mesh import MESH_UI_RE, mesh_uid, parse_esummary

        uis = sorted(u for u in _unique(uis) if MESH_UI_RE.match(u))
        for chunk in _chunks(uis, BATCH):
            body, header = self._call("esummary.fcgi", Entrez.esummary, db="mesh", id=[mesh_uid(u) for u in chunk],
                                      version="2.0")
            yield parse_esummary(body), self.provenance(header, "mesh-esummary")

    def provenance(self, header: dict, source: str) -> dict:
        """The provenance of an answer: its source, the cached retrieval time and the key-free request."""
        return provenance(source, retrieved=header.get("retrieved"), request=header.get("request"))

    # -- internals --
    @staticmethod
    def _ecitmatch_lines(body: bytes) -> dict[str, str]:
        out = {}
        for line in body.decode("utf-8", "replace").splitlines():
            parts = line.split("|")
            if len(parts) >= 7:
                out[parts[5].strip()] = parts[6].strip()
        return out

    def _ecitmatch_problem(self, body: bytes, keys) -> str | None:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "undecodable ECitMatch answer"
        missing = set(keys) - set(self._ecitmatch_lines(body))
        return f"incomplete ECitMatch answer ({len(missing)} of {len(keys)} lines missing)" if missing else None

    def _event(self, name: str) -> None:
        with self._lock:
            self.stats[{"request": "requests", "cache_hit": "cache_hits", "retry": "retries"}[name]] += 1
        if self.progress:
            self.progress(name)

    def _redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def _call(self, util: str, func: Callable, check: Callable | None = None, fresh: bool = False,
              **params) -> tuple[bytes, dict]:
        """One E-utilities request: from the cache when possible (not when `fresh`), else sent with retries
        and cached."""
        request = _entrez_request(func, tool=self.tool, email=self.email, api_key=self.api_key, **params)
        url = request.full_url
        if url.startswith(NCBI_URL):
            request.full_url = self.base_url + url[len(NCBI_URL):]
        request.add_header("User-Agent", f"kb/{__version__} (Biopython Bio.Entrez)")
        pairs = parse_qsl(urlsplit(request.full_url).query, keep_blank_values=True)
        if request.data:
            pairs += parse_qsl(request.data.decode("utf-8"), keep_blank_values=True)
        key = cache_key(util, pairs)
        what = describe(util, pairs)
        check = check or xml_problem
        if not (self.refresh or fresh) or key in self._refreshed:
            hit = self.cache.get(util, key)
            if hit is not None:
                body, header = hit
                if check(body) is None:
                    self._event("cache_hit")
                    return body, header
                self.cache.discard(util, key)  # a well-formed file with an unusable body: refetch
                log.warning("cache entry for %s was unusable; fetching it again", what)
        if self.offline:
            raise NotFound(f"not in the cache: {what}; run without --offline")
        body, status = self._fetch(request, util, what, check)
        header = {"util": util, "params": key_params(pairs), "method": request.get_method(),
                  "request": f"{self.base_url}{util}?{urlencode(key_params(pairs))}",
                  "retrieved": utc_now(), "status": status}
        header = self.cache.put(util, key, body, header)
        self._refreshed.add(key)
        return body, header

    def _fetch(self, request: Request, util: str, what: str, check: Callable) -> tuple[bytes, int]:
        """Send `request`, retrying transient failures with backoff; raise KbError after the last try."""
        def before_try():
            RATE_LIMITER.wait(self.interval)
            self._event("request")
            log.debug("%s %s", request.get_method(), what)

        def checked(body: bytes) -> str | None:
            problem = check(body)
            if problem and problem.startswith("NCBI error") and any(p in problem.lower() for p in PERMANENT_ERRORS):
                raise KbError(self._redact(f"{what}: {problem}"))
            return problem

        def http_answer(exc: HTTPError):
            hint = f" (is {self.base_url} an E-utilities URL? see KB_EUTILS_URL)" if exc.code == 404 else ""
            raise KbError(self._redact(f"{what}: HTTP {exc.code} {exc.reason}{hint}")) from None

        body, status = send_with_retries(request, what, tries=self.max_tries, backoff=self.backoff,
                                         timeout=self.timeout, before_try=before_try,
                                         on_retry=lambda: self._event("retry"), check=checked,
                                         http_answer=http_answer, redact=self._redact)
        if body is None:
            raise KbError(f"{what}: failed after {self.max_tries} tries (last: {status}); "
                          "run the same command again later to resume")
        return body, status
