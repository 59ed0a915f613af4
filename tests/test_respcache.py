"""kb.publish.respcache: repeated GETs of an immutable knowledge base answered from a bounded memory cache, and
nothing answered from it that could differ (other requests, cookies, writes, errors, mutable databases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb.publish import make_datasette
from kb.publish.respcache import ResponseCache, cache_key

RECORDS = Path(__file__).parent / "fixtures" / "publish" / "records.jsonl"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    from kb.store import build

    path = tmp_path_factory.mktemp("respcache") / "kb.db"
    build([RECORDS], path)
    return path


async def started(db_path, **options):
    datasette = make_datasette(db_path, **options)
    await datasette.invoke_startup()
    return datasette


def scope(path="/kb/papers", query=b"", method="GET", headers=()):
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
            "scheme": "http", "root_path": "", "headers": [(b"host", b"example.org")] + list(headers)}


def test_lru_bounded_by_bytes():
    cache = ResponseCache(max_bytes=100, max_entry=60)
    cache.put("a", 200, [], b"x" * 40)
    cache.put("b", 200, [], b"y" * 40)
    assert cache.get("a") is not None          # a is now the most recently used
    cache.put("c", 200, [], b"z" * 40)         # 120 bytes: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.size == 80 <= cache.max_bytes
    cache.put("big", 200, [], b"w" * 61)       # over max_entry: never stored
    assert cache.get("big") is None and cache.size == 80
    assert (cache.hits, cache.stored) == (3, 3)


def test_cache_key():
    base = cache_key(scope())
    assert base is not None
    assert cache_key(scope(query=b"_search=x")) != base                      # the query string is part of it
    assert cache_key(scope(headers=[(b"host", b"other.org")])) != cache_key(scope(headers=[]))  # absolute URLs
    assert cache_key(scope("/-/kb/citations.json")) is not None              # kb's graph data
    for uncached in (scope(method="POST"), scope(method="HEAD"), scope(headers=[(b"cookie", b"ds_actor=x")]),
                     scope(headers=[(b"authorization", b"Bearer x")]), scope(headers=[(b"if-none-match", b'"v"')]),
                     scope(query=b"_trace=1"), scope("/-/versions.json"), scope("/-/actor.json"),
                     scope("/-/kb/publish/static/kb.css")):
        assert cache_key(uncached) is None, uncached


async def test_repeated_get_is_answered_from_memory(db_path):
    ds = await started(db_path, cache_mb=8)
    cache = ds._kb_response_cache
    for path in ("/kb/papers", "/kb/papers.json?_search=leukemia&_shape=objects", "/-/kb/citations.json",
                 "/kb/papers?year=2011"):
        first = await ds.client.get(path)
        again = await ds.client.get(path)
        assert first.status_code == again.status_code == 200
        assert "x-kb-cache" not in first.headers and again.headers["x-kb-cache"] == "hit", path
        assert again.content == first.content
        assert again.headers["content-type"] == first.headers["content-type"]
    # another query string is another page
    other = await ds.client.get("/kb/papers?year=2010")
    assert "x-kb-cache" not in other.headers and "2010" in other.text
    # errors, cookies and writes never come from (or go into) the cache
    for _ in range(2):
        missing = await ds.client.get("/kb/no_such_table")
        assert missing.status_code == 404 and "x-kb-cache" not in missing.headers
        with_cookie = await ds.client.get("/kb/papers", cookies={"ds_actor": "someone"})
        assert "x-kb-cache" not in with_cookie.headers
    post = await ds.client.post("/kb/papers", data={})
    assert post.status_code == 405
    assert cache.size <= cache.max_bytes and cache.stored >= 4


async def test_an_incomplete_page_is_never_kept(db_path, monkeypatch):
    """A page whose facets ran out of time (being counted in the background) is sent with no-store and not cached;
    once they are counted, the page is cached as usual."""
    from kb.publish import facetpass, plugin

    ds = await started(db_path, cache_mb=8)
    plugin._facet_cache.clear()
    monkeypatch.setattr(facetpass, "LATER_MAX", 0)           # nothing finishes them in the background here
    # the pass would run out of time
    monkeypatch.setattr(facetpass, "_doomed", lambda facet, limit_ms, attempt=None: True)
    path = "/kb/papers?_search=marrow"
    for _ in range(2):
        page = await ds.client.get(path)
        assert page.status_code == 200 and "facets timed out" in page.text
        assert "being counted in the background" not in page.text   # nothing counts them: no promise made
        assert page.headers["cache-control"] == "no-store" and "x-kb-cache" not in page.headers
    monkeypatch.undo()
    plugin._facet_cache.clear()
    facetpass._out_of_time.clear()                           # (as a server started again would)
    counted = await ds.client.get(path)
    assert "facets timed out" not in counted.text and counted.headers["cache-control"] != "no-store"
    assert (await ds.client.get(path)).headers["x-kb-cache"] == "hit"


async def test_off_by_default_and_for_mutable_databases(db_path, tmp_path):
    plain = await started(db_path)
    await plain.client.get("/kb/papers")
    assert "x-kb-cache" not in (await plain.client.get("/kb/papers")).headers
    copy = tmp_path / "kb.db"
    copy.write_bytes(db_path.read_bytes())
    mutable = await started(copy, immutable=False, cache_mb=8)
    await mutable.client.get("/kb/papers")
    assert "x-kb-cache" not in (await mutable.client.get("/kb/papers")).headers


async def test_schema_questions_answered_once_for_an_immutable_database(db_path, tmp_path, monkeypatch):
    """kb.publish.immutable: Datasette's per-request schema questions (columns, keys, schema_version...) go to SQLite
    once; the pages are the same as without it (compared with a mutable copy, which asks every time)."""
    from datasette.database import Database

    ds = await started(db_path)
    copy = tmp_path / "kb.db"
    copy.write_bytes(db_path.read_bytes())
    plain = await started(copy, immutable=False)
    trips = []
    original = Database.execute_fn

    async def spy(self, fn):
        trips.append(self.name)
        return await original(self, fn)

    monkeypatch.setattr(Database, "execute_fn", spy)
    paths = ("/kb/papers.json?_shape=objects&_search=leukemia", "/kb/papers.json?year=2011&_facet=journal",
             "/kb/citations.json?_shape=objects&_size=50", "/kb/papers/pmid~3A21400001.json?_shape=objects")
    for path in paths:
        await ds.client.get(path)
        trips.clear()
        memo = await ds.client.get(path)
        memo_trips = len(trips)
        trips.clear()
        asked = await plain.client.get(path)
        assert memo.status_code == asked.status_code == 200, path
        for data in (memo.json(), asked.json()):
            data.pop("query_ms", None)
            data.pop("database", None)
        assert memo.json().get("rows") == asked.json().get("rows"), path
        assert memo_trips < len(trips), (path, memo_trips, len(trips))
    await ds.client.get("/kb/papers")
    trips.clear()
    await ds.client.get("/kb/papers")
    assert len(trips) <= 4, trips  # the page's own queries: rows, count, facets; no schema questions


async def test_time_limits_still_stop_queries(db_path):
    """kb.publish.immutable checks a query's time limit every 50,000 SQLite instructions instead of 1,000: a query
    past its limit is still stopped."""
    from datasette.database import QueryInterrupted

    ds = await started(db_path)
    slow = ("with recursive n(i) as (select 1 union all select i + 1 from n where i < 50000000) "
            "select count(*) from n")
    with pytest.raises(QueryInterrupted):
        await ds.get_database("kb").execute(slow, custom_time_limit=100)


async def test_paper_details_in_one_trip_equal_query_by_query(db_path):
    """plugin.paper_details runs its queries in one query-thread trip (pages.in_one_trip): the same details as the
    same code awaiting Datasette's execute query by query."""
    import sqlite3

    from kb.publish import plugin

    ds = await started(db_path)
    db = ds.get_database("kb")
    ids = [r[0] for r in sqlite3.connect(db_path).execute("select id from papers order by citation_count_kb desc limit 5")]
    for paper_id in ids + ["pmid:1"]:
        assert await plugin.paper_details(ds, paper_id) == await plugin._paper_details(ds, db, paper_id), paper_id


def test_remembered_growth_draws_the_same_graph(db_path):
    """graphview.whole_view with the growth order remembered (one growth to GROWTH_MAX per immutable database) draws,
    for every node budget and stubs option, what a growth to that budget draws."""
    import sqlite3

    from kb.publish import graphview

    conn = sqlite3.connect(f"file:{db_path}?immutable=1", uri=True)
    total = conn.execute("select count(*) from papers").fetchone()[0]
    growth: dict = {}
    grown = 0
    for limit in range(1, total + 2):
        for stubs in ("shared", "hide", "all"):
            remembered = graphview.whole_view(conn, {}, limit, stubs, growth=growth)
            assert remembered == graphview.whole_view(conn, {}, limit, stubs), (limit, stubs)
            grown += remembered["method"] == "grown"
    assert grown and "whole" in growth


async def test_citation_graph_json_same_with_remembered_growth(db_path, tmp_path):
    ds = await started(db_path)
    copy = tmp_path / "kb.db"
    copy.write_bytes(db_path.read_bytes())
    plain = await started(copy, immutable=False)
    for limit in (2, 5, 8, 150):
        path = f"/-/kb/citations.json?limit={limit}"
        assert (await ds.client.get(path)).json()["nodes"] == (await plain.client.get(path)).json()["nodes"], limit


@pytest.mark.parametrize("cache_mb, expect_hits", [(None, True), ("0", False)])
def test_kb_serve_cache_option(db_path, cache_mb, expect_hits):
    """`kb serve` keeps pages by default (--cache-mb 64) and not with --cache-mb 0."""
    import urllib.request

    from serving import kb_serve

    extra = ("--cache-mb", cache_mb) if cache_mb is not None else ()
    with kb_serve(db_path, *extra) as (base, _port):
        seen = []
        for _ in range(3):
            with urllib.request.urlopen(base + "/kb/papers?year=2011") as response:
                seen.append(response.headers.get("x-kb-cache"))
    assert (seen[1:] == ["hit", "hit"]) is expect_hits and seen[0] is None, seen
