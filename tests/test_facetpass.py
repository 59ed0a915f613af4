"""kb/publish/facetpass.py: every facet of a page from one query gives exactly what the per-facet SQL gives."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from test_load import generate_records

from kb.publish.facetpass import column_counts, list_counts
from kb.records import write_records

COLUMN_FACETS = ("year", "journal_id", "hop", "is_seed", "resolved")
LIST_FACETS = ("publication_types", "concepts", "mesh_major")


@pytest.fixture(scope="module")
def kb_db(tmp_path_factory):
    from kb.store import build

    tmp = tmp_path_factory.mktemp("facetpass")
    write_records(tmp / "records" / "papers.jsonl", generate_records(400))
    build([tmp / "records" / "papers.jsonl"], tmp / "kb.db")
    return tmp / "kb.db"


FILTERS = [
    ("select * from papers", {}),
    ("select * from papers where rowid in (select rowid from papers_fts where papers_fts match :s)", {"s": "marrow"}),
    ("select * from papers where year >= :y", {"y": 2010}),
    ("select * from papers where year = :y", {"y": 1700}),  # nothing matches
]


@pytest.mark.parametrize("sql,params", FILTERS)
def test_counts_equal_the_sql_of_each_facet(kb_db, sql, params):
    conn = sqlite3.connect(kb_db)
    rows = conn.execute(f"select {', '.join(COLUMN_FACETS + LIST_FACETS)} from ({sql})", params).fetchall()
    for i, col in enumerate(COLUMN_FACETS):
        expected = conn.execute(f"select {col} as value, count(*) as count from ({sql}) where {col} is not null "
                                f"group by {col} order by count desc, value", params).fetchall()
        assert column_counts(r[i] for r in rows) == expected, col
    for i, col in enumerate(LIST_FACETS, len(COLUMN_FACETS)):
        expected = conn.execute(f"select j.value as value, count(*) as count from ({sql}) as kb_rows, "
                                f"json_each(kb_rows.{col}) as j where json_valid(kb_rows.{col}) "
                                f"group by j.value order by count(*) desc, j.value", params).fetchall()
        assert list_counts(r[i] for r in rows) == expected, col


@pytest.mark.parametrize("sql,params", FILTERS[1:3])
def test_background_counts_by_sqlite_equal_the_sql_of_each_facet(kb_db, sql, params):
    """counts_over_pass (a background pass: the facet columns in a temporary table, each facet's SQL over it) gives
    what each facet's SQL over the filtered table gives; out of time, it leaves no table behind."""
    from types import SimpleNamespace

    from kb.publish.facetpass import PASS_TABLE, _PASS_ROWS, counts_over_pass
    from kb.publish.plugin import CachedColumnFacet, ListFacet

    conn = sqlite3.connect(f"file:{kb_db}?mode=ro&immutable=1", uri=True)   # as served: read-only
    page = SimpleNamespace(sql=sql)
    queries = [(cls.facet_sql(page, col, 21), cls.facet_sql(_PASS_ROWS, col, 21))
               for cls, cols in ((CachedColumnFacet, COLUMN_FACETS), (ListFacet, LIST_FACETS)) for col in cols]
    work = counts_over_pass(f"select {', '.join(COLUMN_FACETS + LIST_FACETS)} from ({sql})", params, queries)
    counts = work(conn)
    assert len(counts) == 8 and any(rows for _, rows in counts)
    for facet_sql, got in counts:
        assert got == [tuple(r) for r in conn.execute(facet_sql, params)], facet_sql
    steps = iter(range(60))      # out of time while the rows go into the table (~500 SQLite steps after the start)
    conn.set_progress_handler(lambda: next(steps, None) is None, 10)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        work(conn)
    assert not conn.execute("select name from temp.sqlite_master where name = ?", (PASS_TABLE,)).fetchall()
    assert work(conn) == counts                                         # and the connection counts again


def test_ties_are_ordered_like_sqlite():
    conn = sqlite3.connect(":memory:")
    conn.execute("create table t (v, l)")
    values = ["b", "a", "é", "B", "a", "Z", "b", None, "é"]
    lists = [json.dumps(x) for x in (["x", "y"], ["y"], [], ["É", "x"], ["x", "x"])] + [None, "not json"]
    conn.executemany("insert into t values (?, ?)", [(v, lists[i % len(lists)]) for i, v in enumerate(values)])
    assert column_counts(r[0] for r in conn.execute("select v from t")) == conn.execute(
        "select v, count(*) from t where v is not null group by v order by count(*) desc, v").fetchall()
    rows = [r[0] for r in conn.execute("select l from t")]
    if "not json" in rows:  # json_valid() decides about invalid text: the facet is left to SQL
        assert list_counts(rows) is None
    valid = [r for r in rows if r != "not json"]
    assert list_counts(valid) == conn.execute(
        "select j.value, count(*) from t, json_each(t.l) as j where json_valid(t.l) and t.l != 'not json' "
        "group by j.value order by count(*) desc, j.value").fetchall()


def test_unusual_values_are_left_to_sql():
    assert column_counts([1, "1", None]) is None          # mixed types: SQLite's order differs from Python's
    assert column_counts([b"blob"]) is None
    assert list_counts(['{"a": 1}']) is None               # json_each of an object yields its values
    assert list_counts(["[1, 2]"]) is None                 # numbers in a list
    assert list_counts([7]) is None                        # not text
    assert column_counts([]) == [] and list_counts([None]) == []


def test_table_page_facets_unchanged(kb_db):
    """The papers page of a search gives the same facets with the one-query pass as with one query per facet."""
    from kb.publish import facetpass, plugin
    from kb.publish import make_datasette

    async def facets(path):
        ds = make_datasette(kb_db)
        await ds.invoke_startup()
        plugin._facet_cache.clear()
        response = await ds.client.get(path)
        assert response.status_code == 200
        data = response.json()
        return data["facet_results"], data.get("facets_timed_out")

    path = "/kb/papers.json?_search=marrow&_size=5"
    one_pass = asyncio.run(facets(path))
    original = facetpass.count_all

    async def never(*args, **kwargs):
        return False

    facetpass.count_all = never
    try:
        per_facet = asyncio.run(facets(path))
    finally:
        facetpass.count_all = original
    assert one_pass == per_facet
    assert len(one_pass[0]) >= 5


async def _passes_out_of_time(kb_db, monkeypatch, passes: list):
    """A started Datasette over kb_db whose one-query facet passes all run out of time (each put in `passes`)."""
    from datasette.database import QueryInterrupted

    from kb.publish import make_datasette, plugin

    ds = make_datasette(kb_db)
    await ds.invoke_startup()
    plugin._facet_cache.clear()
    db = ds.get_database("kb")
    execute = type(db).execute

    async def slow_pass(self, sql, params=None, *args, **kwargs):
        head = sql.split(" from (", 1)[0]
        if " from (" in sql and " as value" not in head:  # the pass: facet columns of every matching row
            passes.append(sql)
            raise QueryInterrupted(None, sql, params)
        return await execute(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(type(db), "execute", slow_pass)
    return ds


def test_a_pass_out_of_time_is_finished_in_the_background(kb_db, monkeypatch):
    """When the one-query pass runs out of time, the page lists its facets as timed out at once (no facet tries
    again on its own), says so, and is not cached; the pass goes on in the background and the next visit has every
    facet, the same as counting them one by one."""
    from kb.publish import facetpass, make_datasette, plugin

    passes, later = [], []
    path = "/kb/papers?_search=marrow&_size=5"

    async def visits():
        ds = await _passes_out_of_time(kb_db, monkeypatch, passes)

        async def long(ds, database, work, limit_ms, background=False):
            later.append((limit_ms, background))
            return await run_long(ds, database, work, limit_ms, background)

        run_long = facetpass.run_long
        monkeypatch.setattr(facetpass, "run_long", long)
        first = await ds.client.get(path + "&_extra=facet_results")
        await asyncio.gather(*facetpass._later.values())
        second = await ds.client.get(path.replace("papers?", "papers.json?"))
        return first, second

    first, second = asyncio.run(visits())
    assert first.status_code == 200 and "being counted in the background" in first.text
    assert first.headers["cache-control"] == "no-store"
    assert "These facets timed out: year, journal_id" in first.text
    # no facet tried on its own; one background pass
    assert len(passes) == 1 and later == [(facetpass.LATER_LIMIT_MS, True)]
    assert len(second.json()["facet_results"]) == 8
    assert "no-store" not in second.headers.get("cache-control", "")

    plugin._facet_cache.clear()
    monkeypatch.undo()

    async def per_facet():
        original = facetpass.count_all

        async def never(*args, **kwargs):
            return False

        facetpass.count_all = never
        try:
            ds = make_datasette(kb_db)
            await ds.invoke_startup()
            return (await ds.client.get(path.replace("papers?", "papers.json?"))).json()["facet_results"]
        finally:
            facetpass.count_all = original

    assert second.json()["facet_results"] == asyncio.run(per_facet())


def test_a_pass_sure_to_run_out_of_time_is_not_tried(kb_db, monkeypatch):
    """Once passes have shown their time per row, a page with more matching rows than the time limit allows does not
    wait for a pass: its facets go to the background at once; smaller pages are still counted on the spot."""
    from kb.publish import facetpass, make_datasette, plugin

    facetpass._learn("kb", 0.5, 1000, at_least=True)       # 0.5 ms per row: "marrow" (hundreds of rows) is too many
    assert facetpass._seconds_per_row["kb"] == 0.0005
    monkeypatch.setattr(facetpass, "LATER_MAX", 0)

    async def visit(path):
        ds = make_datasette(kb_db)
        await ds.invoke_startup()
        plugin._facet_cache.clear()
        passes = []
        execute = type(ds.get_database("kb")).execute

        async def counting(self, sql, params=None, *args, **kwargs):
            if " from (" in sql and " as value" not in sql.split(" from (", 1)[0]:
                passes.append(sql)
            return await execute(self, sql, params, *args, **kwargs)

        monkeypatch.setattr(type(ds.get_database("kb")), "execute", counting)
        page = await ds.client.get(path)
        monkeypatch.setattr(type(ds.get_database("kb")), "execute", execute)
        return page, passes

    try:
        page, passes = asyncio.run(visit("/kb/papers?_search=marrow"))
        assert passes == [] and "These facets timed out" in page.text
        page, passes = asyncio.run(visit("/kb/papers?_search=marrow&year=2011"))  # a few rows: under the limit
        assert len(passes) == 1 and "These facets timed out" not in page.text
    finally:
        facetpass._seconds_per_row.clear()


def test_a_pass_that_ran_out_of_time_is_not_tried_again(kb_db, monkeypatch):
    """A page whose pass ran out of time, and whose background count has not finished it (the one slot busy), does not
    wait for a pass again on the next visit: its facets go to the background at once."""
    from kb.publish import facetpass

    monkeypatch.setattr(facetpass, "LATER_MAX", 0)           # the background slot taken
    passes = []

    async def visits():
        ds = await _passes_out_of_time(kb_db, monkeypatch, passes)
        return [await ds.client.get("/kb/papers?_search=marrow") for _ in range(3)]

    try:
        pages = asyncio.run(visits())
    finally:
        facetpass._seconds_per_row.clear()
    assert all("These facets timed out" in page.text for page in pages)
    assert len(passes) == 1


def test_calibrate_learns_a_time_per_row_before_any_search(kb_db, monkeypatch):
    """kb serve's warm-up times a pass over rows spread through a large table, so the first search of a common word
    is judged by it; small tables are left to learn from their own passes."""
    from kb.publish import facetpass, make_datasette

    async def calibrated():
        ds = make_datasette(kb_db)
        await ds.invoke_startup()
        return await facetpass.calibrate(ds, "kb")

    facetpass._seconds_per_row.clear()
    try:
        assert asyncio.run(calibrated()) is None and "kb" not in facetpass._seconds_per_row   # 400 papers: too few
        monkeypatch.setattr(facetpass, "CALIBRATION_MIN", 100)
        monkeypatch.setattr(facetpass, "CALIBRATION_ROWS", 1000)
        monkeypatch.setattr(facetpass, "_learn", lambda database, seconds, rows, at_least=False:
                            facetpass._seconds_per_row.__setitem__(database, (seconds, rows)))
        seconds, rows = asyncio.run(calibrated())
        assert rows == 200 and 0 < seconds < 5                 # every 2nd of 400 rows: the step is at least 2
    finally:
        facetpass._seconds_per_row.clear()
