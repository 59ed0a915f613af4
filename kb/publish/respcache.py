"""A bounded, in-memory cache of whole GET responses, for a server whose databases are all immutable.

`kb serve` publishes a read-only, immutable file: the same request always gets the same page, yet Datasette renders
it again every time (a papers table page costs ~20 ms of CPU, a search page with its facets more). Under many
clients one process is bound by that CPU. This ASGI middleware answers a repeated GET from memory instead.

What is cached, and what never is:
- only GET requests with status 200 answers, when every attached database is immutable;
- the key is the whole request as far as a page can depend on it: path, query string, Host, scheme and root path
  (absolute URLs in pages are built from them);
- never an incomplete page (its facets still being counted in the background: kb.publish.facetpass), which is
  also sent with Cache-Control: no-store so that a reload shows the counts;
- never a request that carries a Cookie or Authorization header (a page may show who is signed in or embed a
  CSRF token), nor an answer that sets a cookie, nor conditional requests, `?_trace=`, Datasette's own /-/ pages
  (live state: threads, actor, plugins...) other than kb's graph data, nor kb's static files (answered from
  memory already, with ETags);
- never an answer larger than `max_entry` bytes (a CSV stream is passed through as it comes);
- at most `max_bytes` of bodies in all, least recently used first out.

A hit is answered with the stored status, headers and body plus `x-kb-cache: hit`; the answer is the one Datasette
gave the first time, including its "queries took N ms" figures.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRY = 2 * 1024 * 1024
_SKIP_HEADERS = {b"cookie", b"authorization", b"if-none-match", b"if-modified-since", b"range"}
_CACHED_SPECIAL = ("/-/kb/",)                # kb's graph data and pages are functions of the file
_NEVER = ("/-/kb/publish/static/",)          # already served from memory with ETags


class ResponseCache:
    """LRU of (status, headers, body) by request key, bounded by the total size of the bodies."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, max_entry: int = DEFAULT_MAX_ENTRY):
        self.max_bytes = max(0, int(max_bytes))
        self.max_entry = min(max(0, int(max_entry)), self.max_bytes)
        self.entries: "OrderedDict[tuple, tuple[int, list, bytes]]" = OrderedDict()
        self.size = 0
        self.hits = self.misses = self.stored = 0

    def get(self, key):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
        return entry

    def put(self, key, status: int, headers: list, body: bytes) -> None:
        if len(body) > self.max_entry or key in self.entries:
            return
        self.entries[key] = (status, headers, body)
        self.size += len(body)
        self.stored += 1
        while self.size > self.max_bytes and self.entries:
            _, (_, _, old) = self.entries.popitem(last=False)
            self.size -= len(old)


def cache_key(scope) -> tuple | None:
    """The key of a cacheable request, or None when this request must not be answered from (or stored in) the cache."""
    if scope.get("type") != "http" or scope.get("method") != "GET":
        return None
    path = scope.get("path") or ""
    if path.startswith("/-/") and (not path.startswith(_CACHED_SPECIAL) or path.startswith(_NEVER)):
        return None
    query = scope.get("query_string") or b""
    if b"_trace=" in query:
        return None
    host = b""
    for name, value in scope.get("headers") or ():
        name = name.lower()
        if name in _SKIP_HEADERS:
            return None
        if name == b"host":
            host = value
    raw = scope.get("raw_path") or path.encode("utf-8", "surrogateescape")
    return (scope.get("scheme"), host, scope.get("root_path") or "", raw, query)


def wrap(app, datasette):
    """ASGI middleware: answer cacheable GETs from the instance's cache (`datasette._kb_response_cache`, looked up per
    request: Datasette builds its internal client's app before kb.publish.serve sets it) while every database is
    immutable. Every HTTP request gets scope["kb.response"]: a page marks itself "incomplete" there (sent with
    no-store, never cached) and lists under "after" what is to start once it has been sent."""

    async def cached_app(scope, receive, send):
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        # a page sets "incomplete" when part of it is still being made, and adds to "after" what starts once it is sent
        marks = scope["kb.response"] = {"after": []}
        send = _unless_incomplete(send, marks)
        try:
            await _cached_app(scope, receive, send, marks)
        finally:
            for start in marks["after"]:
                start()

    async def _cached_app(scope, receive, send, marks):
        cache = getattr(datasette, "_kb_response_cache", None)
        key = cache_key(scope) if cache is not None and cache.max_bytes else None
        if key is None or not all_immutable(datasette):
            await app(scope, receive, send)
            return
        entry = cache.get(key)
        if entry is not None:
            status, headers, body = entry
            await send({"type": "http.response.start", "status": status,
                        "headers": headers + [(b"x-kb-cache", b"hit")]})
            await send({"type": "http.response.body", "body": body})
            return
        start: dict = {}
        parts: list[bytes] = []
        size = 0
        keep = True

        async def capture(message):
            nonlocal size, keep
            if message["type"] == "http.response.start":
                start.update(message)
                headers = message.get("headers") or []
                if (message.get("status") != 200 or marks.get("incomplete")
                        or any(n.lower() == b"set-cookie" for n, _ in headers)):
                    keep = False
            elif message["type"] == "http.response.body" and keep:
                body = message.get("body") or b""
                size += len(body)
                if size > cache.max_entry:
                    keep = False
                    parts.clear()
                else:
                    parts.append(body)
                if not message.get("more_body", False) and keep:
                    cache.put(key, start["status"], list(start.get("headers") or []), b"".join(parts))
            await send(message)

        await app(scope, receive, capture)

    return cached_app


def _unless_incomplete(send, marks: dict):
    """`send` that makes an incomplete page (facets still being counted in the background) uncacheable by browsers
    and proxies too: Cache-Control: no-store instead of Datasette's max-age."""

    async def send_marked(message):
        if message["type"] == "http.response.start" and marks.get("incomplete"):
            headers = [(n, v) for n, v in message.get("headers") or [] if n.lower() != b"cache-control"]
            message = dict(message, headers=headers + [(b"cache-control", b"no-store")])
        await send(message)

    return send_marked


def all_immutable(datasette) -> bool:
    """Whether every database the server has is immutable (Datasette's own in-memory _internal one aside)."""
    return all(not db.is_mutable for name, db in datasette.databases.items() if name != "_internal")
