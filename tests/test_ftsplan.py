"""kb.publish.ftsplan: search pages of an immutable KB planned for the search's size, with the same rows."""

import asyncio
import sqlite3
from types import SimpleNamespace

import pytest
from datasette.utils import escape_fts

from kb.publish import ftsplan

SEARCH = "rowid in (select rowid from papers_fts where papers_fts match escape_fts(:search))"


def planner_for(path):
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    conn.create_function("escape_fts", 1, escape_fts)

    async def run(sql, params=None):
        return SimpleNamespace(rows=conn.execute(sql, params or []).fetchall())

    return ftsplan.Planner(run), conn


def rewrite(planner, sql, params):
    return asyncio.run(planner.rewrite(sql, params))


@pytest.mark.parametrize("word", ["marrow", "imaging", "leukemia", "nosuchwordanywhere"])
def test_a_search_count_is_the_full_text_index_count(fixture_db, word):
    planner, conn = planner_for(fixture_db)
    sql = f"select count(*) from papers where {SEARCH} "
    new = rewrite(planner, sql, {"search": word})
    assert new == "select count(*) from papers_fts where papers_fts match escape_fts(:search)"
    assert conn.execute(new, {"search": word}).fetchall() == conn.execute(sql, {"search": word}).fetchall()


def test_a_count_with_another_filter_is_left_alone(fixture_db):
    planner, _conn = planner_for(fixture_db)
    sql = f"select count(*) from papers where year = :p0 and {SEARCH} "
    assert rewrite(planner, sql, {"search": "marrow", "p0": 2009}) == sql
    sql = "select count(*) from papers where title like :search"
    assert rewrite(planner, sql, {"search": "match"}) == sql


@pytest.mark.parametrize("limit", [3, 1000])
def test_a_common_search_walks_the_sort_index_for_the_same_rows(fixture_db, monkeypatch, limit):
    planner, conn = planner_for(fixture_db)
    monkeypatch.setattr(ftsplan, "WALK_SHARE", 0.0)          # every search counts as common here
    sql = f"select id, pagerank from papers where {SEARCH} order by pagerank desc limit {limit}"
    new = rewrite(planner, sql, {"search": "marrow"})
    assert new == sql.replace("where rowid in", "where +rowid in")
    plan = " ".join(r[3] for r in conn.execute("explain query plan " + new, {"search": "marrow"}))
    assert "USING INDEX idx_papers_pagerank" in plan
    before = conn.execute(sql, {"search": "marrow"}).fetchall()
    after = conn.execute(new, {"search": "marrow"}).fetchall()
    assert before and [r[1] for r in after] == [r[1] for r in before]   # equal sort values may swap places
    if limit > len(before):
        assert sorted(after) == sorted(before)


@pytest.mark.parametrize("limit", [3, 1000])
def test_a_very_common_search_asks_the_index_row_by_row_for_the_same_rows(fixture_db, monkeypatch, limit):
    planner, conn = planner_for(fixture_db)
    monkeypatch.setattr(ftsplan, "WALK_SHARE", 0.0)
    monkeypatch.setattr(ftsplan, "PROBE_COST", 0.0)          # every search counts as very common here
    sql = f"select id, pagerank from papers where {SEARCH} order by pagerank desc limit {limit}"
    new = rewrite(planner, sql, {"search": "marrow"})
    assert new == sql.replace(SEARCH, "exists (select 1 from papers_fts where papers_fts match escape_fts(:search) "
                                      "and papers_fts.rowid = papers.rowid)")
    plan = " ".join(r[3] for r in conn.execute("explain query plan " + new, {"search": "marrow"}))
    assert "USING INDEX idx_papers_pagerank" in plan and "CORRELATED" in plan
    before = conn.execute(sql, {"search": "marrow"}).fetchall()
    after = conn.execute(new, {"search": "marrow"}).fetchall()
    assert before and [r[1] for r in after] == [r[1] for r in before]
    if limit > len(before):
        assert sorted(after) == sorted(before)
    monkeypatch.setattr(ftsplan, "PROBE_COST", 1e9)          # the list of matches is cheaper: the walk keeps it
    planner, conn = planner_for(fixture_db)
    assert rewrite(planner, sql, {"search": "marrow"}) == sql.replace("where rowid in", "where +rowid in")


def test_a_rare_search_or_an_unindexed_sort_keeps_sqlites_plan(fixture_db, monkeypatch):
    planner, _conn = planner_for(fixture_db)
    sql = f"select id from papers where {SEARCH} order by pagerank desc limit 51"
    monkeypatch.setattr(ftsplan, "WALK_SHARE", 2.0)          # no search matches twice the table
    assert rewrite(planner, sql, {"search": "marrow"}) == sql
    monkeypatch.setattr(ftsplan, "WALK_SHARE", 0.0)
    unindexed = f"select id from papers where {SEARCH} order by title limit 51"
    assert rewrite(planner, unindexed, {"search": "marrow"}) == unindexed


def test_a_full_text_table_of_its_own_rows_is_left_alone(tmp_path, monkeypatch):
    # an FTS table that is not an index of the table's rows (no content=): its count may differ
    path = tmp_path / "own.db"
    conn = sqlite3.connect(path)
    conn.executescript("create table papers (id text, pagerank real); create index idx_p on papers (pagerank);"
                       "create virtual table papers_fts using fts5 (title);"
                       "insert into papers values ('a', 1); insert into papers_fts (title) values ('marrow'), ('marrow');")
    conn.commit()
    conn.close()
    planner, conn = planner_for(path)
    monkeypatch.setattr(ftsplan, "WALK_SHARE", 0.0)
    for sql in (f"select count(*) from papers where {SEARCH} ",
                f"select id from papers where {SEARCH} order by pagerank desc limit 51"):
        assert rewrite(planner, sql, {"search": "marrow"}) == sql
