"""One polite JSON client for the open citation sources: rate limit, retries, gzip cache, base URLs.

Each source has its own spacing between requests (its documented or requested limit; see
:data:`RATES`), shared by every client and thread of the process (kb.eutils.RateLimiter). Requests are
retried with exponential backoff and jitter on 429 (honouring Retry-After), 5xx, connection errors,
timeouts and truncated or malformed JSON; a 404 is an answer ("not found") and cached like one. Every
answer goes to DIR/cache/<source>/ through kb.cache.Cache, keyed by the path and the query without
``mailto`` (the contact address does not change the answer), so a re-run sends nothing it already has.
The contact e-mail goes in the User-Agent (and as ``mailto=`` to Crossref, for its polite pool).

Base URLs: ``KB_EUROPEPMC_URL``, ``KB_OPENCITATIONS_URL``, ``KB_CROSSREF_URL``, ``KB_ICITE_URL`` (tests point
them at fakes). Tuning: ``KB_SOURCES_TIMEOUT`` (seconds per request, default 30), ``KB_SOURCES_BACKOFF``
(first retry delay, default 1 s, doubled per try), ``KB_SOURCES_TRIES`` (default 5).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from urllib.error import HTTPError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import Request

from .. import __version__
from ..cache import Cache, cache_key, utc_now
from ..errors import KbError, NotFound
from ..eutils import RateLimiter, send_with_retries
from ..records import provenance

log = logging.getLogger("kb.sources")

# name: (environment variable, default base URL)
BASE_URLS = {
    "europepmc": ("KB_EUROPEPMC_URL", "https://www.ebi.ac.uk/europepmc/webservices/rest/"),
    "opencitations": ("KB_OPENCITATIONS_URL", "https://api.opencitations.net/index/v2/"),
    "crossref": ("KB_CROSSREF_URL", "https://api.crossref.org/"),
    "icite": ("KB_ICITE_URL", "https://icite.od.nih.gov/api/"),
}
# Requests per second kb allows itself per source (see README "Citation sources" for each one's terms).
RATES = {"europepmc": 5.0, "opencitations": 3.0, "crossref": 5.0, "icite": 3.0}
NOT_CACHE_KEY = frozenset({"mailto", "email"})

_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter(name: str) -> RateLimiter:
    """The process-wide rate limiter of one source."""
    with _limiters_lock:
        return _limiters.setdefault(name, RateLimiter())


def base_url(name: str) -> str:
    """A source's base URL, from its environment variable or the default; always ends with '/'."""
    env, default = BASE_URLS[name]
    url = (os.environ.get(env) or default).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KbError(f"{env} must be an http(s) URL such as {default}, not {url!r}")
    return url if url.endswith("/") else url + "/"


class SourceDown(KbError):
    """A source that keeps failing (after every retry): the harvest carries on without it."""


class JsonClient:
    """GET JSON from one source with its rate limit, retries and cache. ``stats``: requests, cache_hits, retries."""

    def __init__(self, name: str, cache_dir, *, email=None, offline=False, refresh=False, progress=None,
                 headers=None, timeout=None, backoff=None, max_tries=None):
        self.name = name
        self.base_url = base_url(name)
        self.cache = Cache(cache_dir)
        self.email = email or None
        self.offline = offline
        self.refresh = refresh
        self.progress = progress
        self.extra_headers = dict(headers or {})  # e.g. an access token: sent, never cached or logged
        self.timeout = float(timeout or os.environ.get("KB_SOURCES_TIMEOUT") or 30)
        self.backoff = float(backoff if backoff is not None else os.environ.get("KB_SOURCES_BACKOFF") or 1.0)
        self.max_tries = max(1, int(max_tries or os.environ.get("KB_SOURCES_TRIES") or 5))
        self.interval = 1.0 / RATES.get(name, 3.0)
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}
        self._lock = threading.Lock()
        self._refreshed: set[str] = set()

    def _event(self, name: str) -> None:
        with self._lock:
            self.stats[{"request": "requests", "cache_hit": "cache_hits", "retry": "retries"}[name]] += 1
        if self.progress:
            self.progress(name)

    def get(self, path: str, params=()) -> tuple[object | None, dict]:
        """(parsed JSON, provenance) of GET base_url + path?params; (None, provenance) for a 404."""
        params = [(str(k), str(v)) for k, v in params]
        query = [(k, v) for k, v in params if k not in NOT_CACHE_KEY]
        key = cache_key(self.name, [("path", path)] + query)
        shown = self.base_url + path + ("?" + urlencode(query) if query else "")
        what = f"{self.name} {path}" + (f"?{urlencode(query)}" if query else "")
        if len(what) > 140:
            what = what[:137] + "..."
        body = header = None
        if not self.refresh or key in self._refreshed:
            hit = self.cache.get(self.name, key)
            if hit is not None:
                body, header = hit
                if header.get("status") != 404 and _json_problem(body):
                    self.cache.discard(self.name, key)
                    body = header = None
                else:
                    self._event("cache_hit")
        if header is None:
            if self.offline:
                raise NotFound(f"not in the cache: {what}; run without --offline")
            body, status = self._fetch(self.base_url + path + ("?" + urlencode(params) if params else ""), what)
            header = {"util": self.name, "params": [["path", path]] + [list(p) for p in sorted(query)],
                      "request": shown, "retrieved": utc_now(), "status": status}
            header = self.cache.put(self.name, key, body, header)
            self._refreshed.add(key)
        prov = provenance(self.name, retrieved=header.get("retrieved"), request=header.get("request"))
        if header.get("status") == 404:
            return None, prov
        return json.loads(body), prov

    def _fetch(self, url: str, what: str) -> tuple[bytes, int]:
        agent = f"kb/{__version__} (literature knowledge base; mailto:{self.email})" if self.email else \
            f"kb/{__version__} (literature knowledge base)"
        request = Request(url, headers={"Accept": "application/json", "User-Agent": agent, **self.extra_headers})
        def before_try():
            limiter(self.name).wait(self.interval)
            self._event("request")

        def not_found(exc: HTTPError):
            return (exc.read() or b"", 404) if exc.code == 404 else None

        body, status = send_with_retries(request, what, tries=self.max_tries, backoff=self.backoff,
                                         timeout=self.timeout, before_try=before_try,
                                         on_retry=lambda: self._event("retry"), check=_json_problem,
                                         http_answer=not_found, logger=log)
        if body is None:
            raise SourceDown(f"{what}: failed after {self.max_tries} tries (last: {status})")
        return body, status


def _json_problem(body: bytes) -> str | None:
    """Why a body is not usable JSON (truncated, malformed), or None."""
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"malformed or truncated JSON ({str(exc)[:60]})"
    return None


def path_id(value: str) -> str:
    """An identifier (a DOI) as a URL path segment: slashes kept, everything else unsafe escaped."""
    return quote(value, safe="/:")
