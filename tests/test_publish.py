"""The published Datasette: tables, rows, facets, search, canned queries, kb's plugin pages and read-only-ness.

The database is built with the real `kb.store.build` from tests/fixtures/publish/records.jsonl; expected
values are worked out from those records, not read back from the database.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasette.utils import tilde_encode

from kb.ids import register_sql_functions
from kb.paths import metadata_file
from kb.publish import load_metadata, make_datasette, pages, plugin, serve_command
from kb.records import read_records
from serving import free_port

RECORDS = Path(__file__).parent / "fixtures" / "publish" / "records.jsonl"
SEED = "pmid:21400001"
BIG_TABLES = {"papers", "citations", "paper_concepts", "paper_similarity", "paper_mesh", "paper_authors",
              "keywords", "publication_types", "authors", "mesh_descriptors"}


@pytest.fixture(scope="module")
def records():
    return list(read_records([RECORDS]))


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    from kb.store import build

    path = tmp_path_factory.mktemp("publish") / "kb.db"
    build([RECORDS], path)
    return path


@pytest.fixture
async def ds(db_path):
    datasette = make_datasette(db_path)
    await datasette.invoke_startup()
    return datasette


def edges_of(records):
    return {(r["citing"], r["cited"]) for r in records if r["type"] == "citation" and r["cited"]}


def row_path(pk):
    return "/kb/papers/" + tilde_encode(pk)


def metadata():
    return yaml.safe_load(metadata_file().read_text())


# --------------------------------------------------------------------------------------------------- metadata

def test_metadata_describes_the_real_schema(db_path):
    """Every table and column named in metadata.yml exists, and every non-obvious papers column is described."""
    tables = metadata()["databases"]["kb"]["tables"]
    conn = sqlite3.connect(db_path)
    existing = {r[0] for r in conn.execute("select name from sqlite_master where type in ('table', 'view')")}
    for table, spec in tables.items():
        assert table in existing, f"metadata.yml describes a missing table {table}"
        columns = {r[1] for r in conn.execute(f"pragma table_info([{table}])")}
        for column in (spec.get("columns") or {}):
            assert column in columns, f"{table}.{column} is described but does not exist"
        for facet in spec.get("facets", []):
            name = next(iter(facet.values())) if isinstance(facet, dict) else facet
            assert name in columns, f"{table}: facet on missing column {name}"
        if "label_column" in spec:
            assert spec["label_column"] in columns
    for table in existing - set(tables):
        assert table.startswith("papers_fts"), f"table {table} has no description in metadata.yml"
    obvious = {"title", "abstract", "year", "volume", "issue", "pages"}
    paper_columns = {r[1] for r in conn.execute("pragma table_info(papers)")}
    assert paper_columns - obvious - set(tables["papers"]["columns"]) == set()


def test_load_metadata_renames_the_database_section():
    assert "kb" in load_metadata()["databases"]
    renamed = load_metadata("library")
    assert "library" in renamed["databases"] and "kb" not in renamed["databases"]
    assert renamed["databases"]["library"]["queries"].keys() == load_metadata()["databases"]["kb"]["queries"].keys()


# ----------------------------------------------------------------------------------------- tables and rows

async def test_home_and_database_pages_link_to_the_graphs(ds):
    for path in ("/", "/kb"):
        response = await ds.client.get(path)
        assert response.status_code == 200
        for link in ("/-/kb/citations", "/-/kb/concepts", "/-/kb/timeline"):
            assert f'href="{link}"' in response.text
    home = (await ds.client.get("/")).text
    assert metadata()["title"] not in home        # not built from the embedded default: titled by its kb_meta
    database = (await ds.client.get("/kb")).text
    assert "The knowledge base: papers, the citations between them" in database
    for name in metadata()["databases"]["kb"]["queries"]:
        assert f'href="/kb/{name}"' in database


async def test_title_and_description_come_from_kb_meta(ds, db_path, tmp_path):
    """A KB not built from the embedded default is titled by its kb_meta (written by kb build), or generically
    when that has none; never by metadata.yml's text about the Kato 2011 seed paper."""
    from kb.publish.serve import GENERIC_DESCRIPTION, GENERIC_TITLE

    meta = dict(sqlite3.connect(db_path).execute("select key, value from kb_meta"))
    shown = (await ds.client.get("/-/metadata.json")).json()
    assert shown["title"] == (meta.get("title") or GENERIC_TITLE) != metadata()["title"]
    from html import escape

    assert escape(meta.get("description") or GENERIC_DESCRIPTION) in shown["description_html"]
    assert "grown outward from one" not in shown["description_html"] and "about_url" not in shown
    bare = tmp_path / "bare.db"
    shutil.copy(db_path, bare)
    conn = sqlite3.connect(bare)
    conn.execute("delete from kb_meta where key in ('title', 'description')")
    conn.commit()
    conn.close()
    other = make_datasette(bare)
    await other.invoke_startup()
    shown = (await other.client.get("/-/metadata.json")).json()
    assert shown["title"] == GENERIC_TITLE and GENERIC_DESCRIPTION in shown["description_html"]
    assert GENERIC_TITLE in (await other.client.get("/")).text


async def test_the_embedded_default_keeps_its_title(tmp_path):
    from kb.paths import default_dataset
    from kb.records import record_files
    from kb.store import build

    db = tmp_path / "kb.db"
    build(record_files(default_dataset()), db)
    datasette = make_datasette(db)
    await datasette.invoke_startup()
    shown = (await datasette.client.get("/-/metadata.json")).json()
    assert shown["title"] == metadata()["title"] and shown["description_html"] == metadata()["description_html"]


async def test_every_table_page(ds, db_path):
    conn = sqlite3.connect(db_path)
    tables = [r[0] for r in conn.execute("select name from sqlite_master where type in ('table', 'view') order by name")]
    for table in tables:
        response = await ds.client.get(f"/kb/{table}.json?_shape=objects&_size=max")
        assert response.status_code == 200, table
        expected = conn.execute(f"select count(*) from [{table}]").fetchone()[0]
        if table not in ("sqlite_stat1",):
            assert len(response.json()["rows"]) == expected, table
        html = await ds.client.get(f"/kb/{table}")
        assert html.status_code == 200, table
    index = (await ds.client.get("/kb.json")).json()
    hidden = {t["name"] for t in index["tables"] if t["hidden"]}
    assert {"papers_fts", "sqlite_stat1"} <= hidden and "papers" not in hidden


async def test_foreign_keys_show_labels(ds, records):
    titles = {r["id"]: r["title"] for r in records if r["type"] == "paper"}
    response = await ds.client.get("/kb/citations.json?_labels=on&_shape=objects&citing_id=" + SEED)
    rows = response.json()["rows"]
    assert rows and all(row["citing_id"]["label"] == titles[SEED] for row in rows)
    html = (await ds.client.get("/kb/paper_concepts")).text
    assert ">MRI</a>" in html  # concept_id shown by its label


async def test_paper_row_page_has_references_citers_concepts_and_mesh(ds, records):
    response = await ds.client.get(row_path(SEED))
    assert response.status_code == 200
    html = response.text
    section = html[html.index('id="kb-paper"'):]
    titles = {r["id"]: r["title"] for r in records if r["type"] == "paper"}
    edges = edges_of(records)
    references = sorted(cited for citing, cited in edges if citing == SEED)
    citers = sorted(citing for citing, cited in edges if cited == SEED)
    assert f"References ({len(references) + 1})" in section  # + the unresolved reference
    assert f"Cited by ({len(citers)})" in section
    for pk in references + citers:
        assert titles[pk] in section
        assert 'href="%s"' % row_path(pk) in section
    assert "An unresolved reference" in section and "unresolved reference" in section
    seed = next(r for r in records if r["type"] == "paper" and r["id"] == SEED)
    for heading in seed["mesh"]:
        assert heading["name"] in section
    assert "<strong><a" in section  # major MeSH topics in bold
    assert ">Leukemia</a>" in section and ">MRI</a>" in section
    assert 'href="/-/kb/citations?focus=pmid:21400001"' in section
    assert "seed paper" in section


async def test_paper_page_caps_long_citer_lists(ds, monkeypatch):
    monkeypatch.setattr(plugin, "PAPER_LIST_CAP", 2)
    html = (await ds.client.get(row_path("pmid:9800001"))).text
    section = html[html.index('id="kb-paper"'):]
    assert "Cited by (5)" in section and "the 2 most central here" in section
    assert 'href="/kb/citing_papers?paper=pmid:9800001">all 5</a>' in section
    data = (await ds.client.get("/-/kb/paper.json?id=pmid:9800001")).json()
    assert data["citer_count"] == 5 and len(data["citers"]) == 2
    # the two with the highest PageRank among the five citers
    conn_rows = (await ds.client.get("/kb/citing_papers.json?_shape=objects&paper=pmid:9800001")).json()["rows"]
    top2 = sorted(conn_rows, key=lambda r: (-r["pagerank"], r["paper"]))[:2]
    assert {c["id"] for c in data["citers"]} == {r["paper"] for r in top2}


async def test_paper_json(ds, records):
    data = (await ds.client.get("/-/kb/paper.json?id=pmid:9800001")).json()
    citers = sorted(a for a, b in edges_of(records) if b == "pmid:9800001")
    assert sorted(c["id"] for c in data["citers"]) == citers
    assert data["references"] == [] and data["is_seed"] is False
    assert (await ds.client.get("/-/kb/paper.json?id=pmid:1")).status_code == 404
    assert (await ds.client.get("/-/kb/paper.json")).status_code == 400


# ------------------------------------------------------------------------------------------- facets, search

async def test_configured_facets(ds, records):
    data = (await ds.client.get("/kb/papers.json?_size=0")).json()
    facets = data["facet_results"]
    assert {"year", "journal_id", "publication_types", "concepts", "mesh_major", "hop", "is_seed", "resolved"} <= set(facets)
    papers = [r for r in records if r["type"] == "paper"]
    years = Counter(p["year"] for p in papers) + Counter({1990: 0})
    got_years = {f["value"]: f["count"] for f in facets["year"]["results"]}
    assert all(got_years[y] == n for y, n in years.items() if n)
    types = Counter(t["name"] for p in papers for t in p["publication_types"])
    assert {f["value"]: f["count"] for f in facets["publication_types"]["results"]} == dict(types)
    majors = Counter(m["name"] for p in papers for m in p["mesh"] if m["major"])
    assert {f["value"]: f["count"] for f in facets["mesh_major"]["results"]} == dict(majors)
    seeds = {f["value"]: f["count"] for f in facets["is_seed"]["results"]}
    assert seeds[1] == 1
    cit = (await ds.client.get("/kb/citations.json?_size=0")).json()["facet_results"]
    sources = Counter(r["source"] for r in records if r["type"] == "citation")
    assert sum(f["count"] for f in cit["source"]["results"]) == sum(sources.values())
    assert {f["value"]: f["count"] for f in cit["resolved"]["results"]} == {1: 18, 0: 1}


async def test_list_facet_matches_datasettes_array_facet(ds):
    """kb's list facet gives the built-in array facet's counts, also on filtered tables, and caches them."""
    plugin._facet_cache.clear()
    first = {}
    for query in ("", "year__gte=2005&", "_search=marrow&"):
        ours = (await ds.client.get(f"/kb/papers.json?{query}_size=0")).json()["facet_results"]
        first[query] = ours
        builtin = (await ds.client.get(
            f"/kb/papers.json?{query}_size=0&_facet_array=concepts&_facet_array=mesh_major&_facet_array=publication_types"
        )).json()["facet_results"]
        for column in ("concepts", "mesh_major", "publication_types"):
            assert ours[column]["type"] == "kb_list"
            expected = {f["value"]: f["count"] for f in builtin[column + "_2"]["results"]}
            assert {f["value"]: f["count"] for f in ours[column]["results"]} == expected, (query, column)
    cached = len(plugin._facet_cache)
    assert cached == 3 * 8  # one entry per facet (5 columns, 3 lists) and filter
    again = (await ds.client.get("/kb/papers.json?year__gte=2005&_size=0")).json()["facet_results"]
    assert again == first["year__gte=2005&"] and len(plugin._facet_cache) == cached
    html = (await ds.client.get("/kb/papers")).text
    assert "concepts__arraycontains=MRI" in html
    selected = (await ds.client.get("/kb/papers.json?concepts__arraycontains=Neuroblastoma&_size=0")).json()
    assert selected["filtered_table_rows_count"] == 2
    journal = (await ds.client.get("/kb/papers.json?_size=0")).json()["facet_results"]["journal_id"]["results"]
    assert {f["label"] for f in journal} == {"International journal of hematology", "Radiology", "European radiology",
                                             "Pediatric radiology"}


async def test_array_facet_selection_filters(ds, records):
    papers = [r for r in records if r["type"] == "paper"]
    reviews = sorted(p["id"] for p in papers if any(t["name"] == "Review" for t in p["publication_types"]))
    data = (await ds.client.get("/kb/papers.json?_shape=objects&publication_types__arraycontains=Review")).json()
    assert sorted(r["id"] for r in data["rows"]) == reviews


@pytest.mark.parametrize("term", ["leukemia", "neuroblastoma", "diffusion", "marrow"])
async def test_full_text_search(ds, records, term):
    def text(p):
        return " ".join([p["title"] or "", p["abstract"] or "", " ".join(m["name"] for m in p["mesh"]),
                         " ".join(k["text"] for k in p["keywords"])]).lower()

    expected = sorted(p["id"] for p in records if p["type"] == "paper" and term in text(p))
    data = (await ds.client.get(f"/kb/papers.json?_search={term}&_shape=objects&_col=title")).json()
    # a search also finds papers by their authors and by the lexicon's terms of the concepts they carry
    assert set(expected) <= {r["id"] for r in data["rows"]} and expected
    html = (await ds.client.get(f"/kb/papers?_search={term}")).text
    assert 'name="_search"' in html


async def test_search_with_punctuation_is_not_an_error(ds):
    response = await ds.client.get('/kb/papers.json?_search=T1-weighted "marrow')
    assert response.status_code == 200


# ---------------------------------------------------------------------------------------------- canned queries

async def canned(ds, name, **params):
    from urllib.parse import urlencode

    response = await ds.client.get(f"/kb/{name}.json?_shape=objects&" + urlencode(params))
    assert response.status_code == 200, (name, response.text[:500])
    return response.json()["rows"]


async def test_canned_seed_references(ds, records):
    rows = await canned(ds, "seed_references")
    expected = sorted(b for a, b in edges_of(records) if a == SEED)
    assert sorted(r["paper"] for r in rows if r["resolved"]) == expected
    # a reference-only work's title is what its reference text gives
    assert [r["title"] for r in rows if not r["resolved"]] == ["An unresolved reference"]
    years = [r["year"] for r in rows if r["year"]]
    assert years == sorted(years)


async def test_canned_citing_papers(ds, records):
    expected = sorted(a for a, b in edges_of(records) if b == SEED)
    assert sorted(r["paper"] for r in await canned(ds, "citing_papers", paper=SEED)) == expected
    assert sorted(r["paper"] for r in await canned(ds, "citing_papers", paper="21400001")) == expected
    assert await canned(ds, "citing_papers", paper="pmid:1") == []


async def test_canned_concept_queries(ds, db_path):
    conn = sqlite3.connect(db_path)
    mri = {r[0] for r in conn.execute("select paper_id from paper_concepts where concept_id = 'mri'")}
    leuk = {r[0] for r in conn.execute("select paper_id from paper_concepts where concept_id = 'leukemia'")}
    assert {r["paper"] for r in await canned(ds, "papers_about_concept", concept="mri")} == mri
    assert {r["paper"] for r in await canned(ds, "papers_about_concept", concept="Leukemia")} == leuk  # by label
    both = await canned(ds, "papers_with_two_concepts", concept_a="mri", concept_b="leukemia")
    assert {r["paper"] for r in both} == mri & leuk and mri & leuk
    # Neuroblastoma is matched in two fixture papers, both also about MRI.
    assert len(await canned(ds, "papers_with_two_concepts", concept_a="neuroblastoma", concept_b="mri")) == 2
    pairs = await canned(ds, "concept_pairs", min_papers="")
    strengths = [r["strength"] for r in pairs]
    assert strengths == sorted(strengths, reverse=True) and len(pairs) == conn.execute(
        "select count(*) from concept_edges").fetchone()[0]
    assert all(r["shared_papers"] >= 3 for r in await canned(ds, "concept_pairs", min_papers="3"))
    per_year = await canned(ds, "papers_per_year_per_concept", concept="mri")
    assert sum(r["papers"] for r in per_year) == len(mri)
    assert [r["year"] for r in per_year] == sorted(r["year"] for r in per_year)


async def test_canned_rankings(ds, records):
    cited = Counter(b for a, b in edges_of(records))
    rows = await canned(ds, "most_cited")
    assert rows[0]["paper"] == "pmid:9800001" and rows[0]["cited_by"] == cited["pmid:9800001"] == 5
    assert [r["cited_by"] for r in rows] == sorted((r["cited_by"] for r in rows), reverse=True)
    top = await canned(ds, "top_pagerank")
    assert top[0]["paper"] == "pmid:9800001"  # cited by five papers, including the two most-cited-citing ones
    assert [r["pagerank"] for r in top] == sorted((r["pagerank"] for r in top), reverse=True)


async def test_canned_citation_path(ds, records):
    edges = edges_of(records)
    # 11800008 cites 12500007, which cites 10500005, which cites 9900002 (3 steps), but 11800008 also reaches
    # 9900002 in 2 steps (through the seed or through 12500007): the shortest path wins.
    rows = await canned(ds, "citation_path", from_paper="pmid:11800008", to_paper="9900002", max_steps="")
    path = [r["paper"] for r in rows]
    assert len(path) == 3 and path[0] == "pmid:11800008" and path[-1] == "pmid:9900002"
    assert all((a, b) in edges for a, b in zip(path, path[1:]))
    assert {r["total_steps"] for r in rows} == {2} and [r["step"] for r in rows] == [0, 1, 2]
    # Given the other way round (cited first), the path is still found, from the citing end.
    rows = await canned(ds, "citation_path", from_paper="pmid:9800001", to_paper="pmid:12300006", max_steps="")
    assert [r["paper"] for r in rows] == ["pmid:12300006", "pmid:10300004", "pmid:9800001"]
    # Bounded: with one step allowed there is no path between them.
    assert await canned(ds, "citation_path", from_paper="pmid:9800001", to_paper="pmid:12300006", max_steps="1") == []
    # Two papers that only share a citer are not on one citation chain.
    assert await canned(ds, "citation_path", from_paper="pmid:10100003", to_paper="pmid:10300004", max_steps="6") == []
    assert await canned(ds, "citation_path", from_paper="pmid:1", to_paper="pmid:2", max_steps="") == []


async def test_canned_similar_papers(ds, db_path):
    edges = set(sqlite3.connect(db_path).execute("select citing_id, cited_id from citations"))
    target = "pmid:9800001"
    cociting = Counter()
    for citing in {a for a, _ in edges}:
        refs = {b for a, b in edges if a == citing}
        if target in refs:
            for other in refs - {target}:
                cociting[other] += 1
    rows = await canned(ds, "similar_papers", paper=target)
    got = {r["paper"]: r["cocitations"] for r in rows if r["cocitations"]}
    assert got == dict(cociting)
    scores = [r["similarity"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def _aliases(sql: str) -> dict:
    names = {}
    for table in BIG_TABLES:
        names[table] = table
        for alias in re.findall(rf"\b{table}\s+(?:as\s+)?([a-z_][a-z0-9_]*)", sql, re.I):
            if alias.lower() not in ("where", "on", "join", "order", "group", "left", "limit", "union", "set"):
                names[alias] = table
    return names


def full_scans(conn, sql, params) -> list[str]:
    """Plan lines that read a whole large table (or a whole index of it); an index walked in order under a
    LIMIT (top-N by PageRank) is allowed."""
    plan = [r[3] for r in conn.execute("explain query plan " + sql, params)]
    aliases = _aliases(sql)
    limited = re.search(r"\blimit\s+(\d+|:\w+)\s*$", sql.strip(), re.I)
    bad = []
    for line in plan:
        m = re.match(r"SCAN (\w+)( USING (COVERING )?INDEX \w+)?$", line)
        if m and m.group(1) in aliases and not (m.group(2) and limited):
            bad.append(line)
    return bad


def _planner_db(db_path, tmp_path):
    """A copy without ANALYZE statistics: on a tiny fixture they make full scans look cheap."""
    copy = tmp_path / "plan.db"
    shutil.copy(db_path, copy)
    conn = sqlite3.connect(copy)
    conn.execute("drop table if exists sqlite_stat1")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(copy)
    register_sql_functions(conn)  # kb_ref(), which the canned queries use to read identifiers
    return conn


def test_canned_queries_use_indexes(db_path, tmp_path):
    conn = _planner_db(db_path, tmp_path)
    for name, query in metadata()["databases"]["kb"]["queries"].items():
        params = {p: "x" for p in re.findall(r":(\w+)", query["sql"])}
        assert full_scans(conn, query["sql"], params) == [], name


async def test_plugin_queries_use_indexes(ds, db_path, tmp_path, monkeypatch):
    """Every query the graph endpoints run is indexed; whole-KB aggregates (cached per process) are listed."""
    from datasette.database import Database

    seen = []
    original = Database.execute

    async def spy(self, sql, params=None, *args, **kwargs):
        seen.append((sql, params or {}))
        return await original(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(Database, "execute", spy)
    in_thread = pages.ThreadDB.execute

    async def spy_in_thread(self, sql, params=None):
        seen.append((sql, params or {}))
        return await in_thread(self, sql, params)

    monkeypatch.setattr(pages.ThreadDB, "execute", spy_in_thread)  # the paper page's queries, in one trip
    plugin._aggregate_cache.clear()
    for path in ("/-/kb/citations.json", "/-/kb/citations.json?focus=pmid:21400001",
                 "/-/kb/citations.json?concept=mri&year_min=2000&hop_max=1", "/-/kb/concepts.json?year_min=2000",
                 "/-/kb/paper.json?id=pmid:21400001", "/-/kb/citations", "/-/kb/concepts"):
        assert (await ds.client.get(path)).status_code == 200
    monkeypatch.undo()
    conn = _planner_db(db_path, tmp_path)
    checked = 0
    for sql, params in seen:
        if "sqlite_master" in sql or "pragma" in sql.lower() or "_internal" in sql or "papers" not in sql and "citations" not in sql and "paper_concepts" not in sql:
            continue
        if not any(t in sql for t in ("papers", "citations", "paper_concepts", "paper_mesh")):
            continue
        if re.match(r"\s*select (min|max)\(", sql):
            continue  # min/max of an indexed column: one index probe
        if re.fullmatch(r"select count\(\*\) from \[?\w+\]?( p)?\s*", sql.strip()):
            continue  # a whole-table count(*): SQLite's count opcode, and Datasette caches it
        checked += 1
        assert full_scans(conn, sql, params) == [], sql
    assert checked >= 10


async def test_whole_kb_aggregates_run_once(ds, monkeypatch):
    """The timeline and the year-filtered concept graph read all concept links: once per process and filter."""
    from datasette.database import Database

    seen = []
    original = Database.execute

    async def spy(self, sql, params=None, *args, **kwargs):
        seen.append(sql)
        return await original(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(Database, "execute", spy)
    plugin._aggregate_cache.clear()
    for path in ("/-/kb/timeline.json", "/-/kb/concepts.json?year_min=2001"):
        first = (await ds.client.get(path)).json()
        reads = sum("paper_concepts" in sql for sql in seen)
        assert reads >= 1
        assert (await ds.client.get(path)).json() == first
        assert sum("paper_concepts" in sql for sql in seen) == reads
        seen.clear()


# --------------------------------------------------------------------------------------------- plugin pages

async def test_citation_graph_json(ds, records, db_path):
    data = (await ds.client.get("/-/kb/citations.json")).json()
    papers = [r for r in records if r["type"] == "paper"]
    assert data["total"] == len(papers) + 1 and data["shown"] == data["total"] and not data["capped"]
    ids = {n["id"] for n in data["nodes"]}
    assert {(e["from"], e["to"]) for e in data["edges"]} == {e for e in edges_of(records)} | {
        (SEED, n["id"]) for n in data["nodes"] if n["id"].startswith("ref:")}
    seed = next(n for n in data["nodes"] if n["id"] == SEED)
    assert seed["is_seed"] and seed["url"] == row_path(SEED) and seed["in_degree"] == 3
    ranks = [n["pagerank"] for n in data["nodes"]]
    assert ranks == sorted(ranks, reverse=True)
    assert {c["id"] for c in data["concepts"]} == {"bone-marrow", "leukemia", "lymphoma", "mri", "neuroblastoma"}
    assert all(n["concept"] in (None, *[c["id"] for c in data["concepts"]]) for n in data["nodes"])
    assert ids


async def test_citation_graph_cap_and_filters(ds, records):
    capped = (await ds.client.get("/-/kb/citations.json?limit=3")).json()
    assert capped["shown"] == 3 and capped["capped"] and capped["total"] == 11
    full = (await ds.client.get("/-/kb/citations.json")).json()
    assert [n["id"] for n in capped["nodes"]] == [n["id"] for n in full["nodes"][:3]]
    assert all(e["from"] in {n["id"] for n in capped["nodes"]} for e in capped["edges"])
    recent = (await ds.client.get("/-/kb/citations.json?year_min=2010&year_max=2015")).json()
    years = {r["id"]: r["year"] for r in records if r["type"] == "paper"}
    assert sorted(n["id"] for n in recent["nodes"]) == sorted(k for k, y in years.items() if 2010 <= y <= 2015)
    hop0 = (await ds.client.get("/-/kb/citations.json?hop_max=0")).json()
    assert [n["id"] for n in hop0["nodes"]] == [SEED]
    nb = (await ds.client.get("/-/kb/citations.json?concept=neuroblastoma")).json()
    assert sorted(n["id"] for n in nb["nodes"]) == ["pmid:10300004", "pmid:12300006"]


async def test_citation_graph_focus(ds, records):
    focus = "pmid:9900002"
    data = (await ds.client.get("/-/kb/citations.json?focus=" + focus)).json()
    edges = edges_of(records)
    neighbours = {b for a, b in edges if a == focus} | {a for a, b in edges if b == focus}
    assert data["nodes"][0]["id"] == focus
    assert {n["id"] for n in data["nodes"]} == neighbours | {focus}
    assert data["focus"] == focus and data["total"] == len(neighbours) + 1
    assert (await ds.client.get("/-/kb/citations.json?focus=pmid:1")).status_code == 404
    page = (await ds.client.get("/-/kb/citations?focus=" + focus)).text
    assert "MR imaging of acute myeloid leukemia in the marrow" in page and "focus on one paper" in page


async def test_concept_graph_json(ds, db_path):
    conn = sqlite3.connect(db_path)
    data = (await ds.client.get("/-/kb/concepts.json")).json()
    counts = dict(conn.execute("select concept_id, count(*) from paper_concepts group by concept_id"))
    assert {n["id"]: n["papers"] for n in data["nodes"]} == {**{c: 0 for c, in conn.execute("select id from concepts")}, **counts}
    assert len(data["edges"]) == conn.execute("select count(*) from concept_edges").fetchone()[0]
    assert max(e["weight"] for e in data["edges"]) == 1.0
    assert all(n["community"] is not None for n in data["nodes"])
    # Filtered by year, counts come from the papers of those years only.
    recent = (await ds.client.get("/-/kb/concepts.json?year_min=2010")).json()
    expected = dict(conn.execute("""select pc.concept_id, count(*) from paper_concepts pc join papers p on p.id = pc.paper_id
                                    where p.year >= 2010 group by pc.concept_id"""))
    assert {n["id"]: n["papers"] for n in recent["nodes"] if n["papers"]} == expected
    pair = next(e for e in recent["edges"] if (e["from"], e["to"]) == ("leukemia", "mri"))
    assert pair["papers"] == 2  # the seed (2011) and 12500007 (2015)
    # observed / expected co-occurrence among the 4 papers of 2011-2018: 4 * 2 / (leukemia 2 * mri 4)
    assert (expected["leukemia"], expected["mri"]) == (2, 4) and pair["strength"] == 1.0


async def test_timeline_json(ds, records, db_path):
    data = (await ds.client.get("/-/kb/timeline.json")).json()
    papers = [r for r in records if r["type"] == "paper"]
    years = Counter(p["year"] for p in papers) + Counter({1990: 0})
    assert dict((y, n) for y, n in data["total"]) == {y: n for y, n in years.items() if n}
    conn = sqlite3.connect(db_path)
    mri = next(s for s in data["series"] if s["concept"] == "mri")
    assert sum(n for _, n in mri["points"]) == conn.execute(
        "select count(*) from paper_concepts where concept_id = 'mri'").fetchone()[0]
    span = [y for y, _ in mri["points"]]
    assert span == list(range(min(years), max(years) + 1))  # zero-filled years


async def test_plugin_pages_render(ds):
    for path, marker in (("/-/kb/citations", 'data-kind="citations"'), ("/-/kb/concepts", 'data-kind="concepts"'),
                         ("/-/kb/timeline", 'id="kb-timeline"')):
        response = await ds.client.get(path)
        assert response.status_code == 200, path
        assert marker in response.text
        assert "How to read" in response.text or "Click a concept" in response.text
    page = (await ds.client.get("/-/kb/citations?year_min=2000&concept=mri")).text
    assert 'data-src="/-/kb/citations.json?year_min=2000&amp;concept=mri"' in page
    assert '<option value="mri" selected>' in page
    low, high, hops = (await ds.get_database("kb").execute("select min(year), max(year), max(hop) from papers")).first()
    for path in ("/-/kb/citations", "/-/kb/concepts"):           # the controls' hints: the papers' span
        page = (await ds.client.get(path)).text
        assert f'placeholder="{low}"' in page and f'placeholder="{high}"' in page and f'placeholder="{hops}"' in page


SRC_RE = re.compile(r'<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)="([^"]*)"', re.I)


async def test_no_external_urls_in_plugin_pages(ds):
    for path in ("/-/kb/citations", "/-/kb/concepts", "/-/kb/timeline", "/-/kb/citations?focus=" + SEED,
                 row_path(SEED), "/", "/kb", "/kb/papers"):
        html = (await ds.client.get(path)).text
        urls = SRC_RE.findall(html)
        assert urls, path
        # Datasette's own <link rel="alternate"> is absolute but names the host the page came from.
        assert all((u.startswith("/") and not u.startswith("//")) or u.startswith("http://localhost/")
                   for u in urls), (path, urls)


async def test_static_files_come_from_installed_packages(ds):
    vendor = plugin.vendor_files()
    assert {"vis-network.min.js", "vis-network.css", "plotly.min.js"} <= set(vendor)
    assert "pyvis" in str(vendor["vis-network.min.js"]) and "plotly" in str(vendor["plotly.min.js"])
    for name in ("vis-network.min.js", "vis-network.css", "plotly.min.js", "kb-graph.js", "kb-timeline.js", "kb.css"):
        response = await ds.client.get(f"/-/kb/publish/static/{name}")
        assert response.status_code == 200, name
        assert "max-age=31536000" in response.headers["cache-control"]
        assert len(response.content) > 100
    plain = await ds.client.get("/-/kb/publish/static/vis-network.min.js")
    assert plain.content == vendor["vis-network.min.js"].read_bytes()
    gz = await ds.client.get("/-/kb/publish/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    sneaky = await ds.client.get("/-/kb/publish/static/..%2Fplugin.py")
    assert sneaky.status_code != 200 and b"hookimpl" not in sneaky.content
    assert (await ds.client.get("/-/kb/publish/static/missing.js")).status_code == 404


# ------------------------------------------------------------------------------------------------ render_cell

async def test_render_cell_links_out(ds):
    html = (await ds.client.get("/kb/papers")).text
    assert '<a class="kb-out" href="https://pubmed.ncbi.nlm.nih.gov/21400001/"' in html
    assert 'href="https://doi.org/10.1007/s12185-011-0842-7"' in html
    every = (await ds.client.get("/kb/papers?_kb_cols=all")).text  # pmcid is not one of the readable columns
    assert 'href="https://www.ncbi.nlm.nih.gov/pmc/articles/PMC1000002/"' in every
    row = (await ds.client.get(row_path("pmid:9900002"))).text
    assert "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC1000002/" in row


def test_render_cell_escapes():
    assert plugin.render_cell(value="12345", column="pmid") == (
        '<a class="kb-out" href="https://pubmed.ncbi.nlm.nih.gov/12345/" title="Open in PubMed">12345</a>')
    hostile = plugin.render_cell(value='10.1000/x"><script>alert(1)</script>', column="doi")
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile and '"><' not in hostile
    assert plugin.render_cell(value="12345<b>", column="pmid") is None  # not a PMID: Datasette's own escaping
    assert plugin.render_cell(value="pmc123", column="pmcid").startswith(
        '<a class="kb-out" href="https://www.ncbi.nlm.nih.gov/pmc/articles/PMC123/"')
    assert plugin.render_cell(value=None, column="doi") is None
    assert plugin.render_cell(value="10.1/x", column="title") is None


# ----------------------------------------------------------------------------------------------- read-only

async def test_no_write_endpoints(ds, db_path):
    before = db_path.read_bytes()
    for path in ("/kb/papers", "/kb/-/create", "/-/create", "/kb/papers/-/insert", "/kb", "/kb/seed_references",
                 row_path(SEED) + "/-/delete", "/-/kb/citations.json"):
        for method in ("post", "put", "delete", "patch"):
            response = await getattr(ds.client, method)(path) if method != "post" else await ds.client.post(path, data={"a": "b"})
            assert response.status_code == 405, (method, path, response.status_code)
    for sql in ("insert into papers (id) values ('x')", "delete from papers", "drop table papers",
                "update papers set title = 'x'", "pragma writable_schema = 1"):
        response = await ds.client.get("/kb.json?sql=" + sql)
        assert response.status_code in (400, 403), sql
    assert db_path.read_bytes() == before
    assert ds.databases["kb"].is_mutable is False


async def test_settings(ds):
    settings = (await ds.client.get("/-/settings.json")).json()
    assert settings["default_page_size"] == 50 and settings["sql_time_limit_ms"] == 3000
    assert settings["facet_time_limit_ms"] == 200
    assert settings["suggest_facets"] is False


# ---------------------------------------------------------------------------------------------- serve command

def test_serve_command_builds_when_missing(tmp_path, monkeypatch, capsys):
    import uvicorn

    calls = {}

    def fake_run(app, **kwargs):
        calls.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    from kb.errors import KbError

    port = free_port()
    data = tmp_path / "data"
    (data / "records").mkdir(parents=True)
    shutil.copy(RECORDS, data / "records" / "records.jsonl")
    db = tmp_path / "library.db"
    # a database given that does not exist is an error (a mistyped path is not built), unless --rebuild
    with pytest.raises(KbError, match="database not found"):
        serve_command(data_dir=data, db_path=db, host="127.0.0.1", port=port, rebuild=False)
    assert not db.exists() and not calls
    # none given: ./kb.db, built first
    monkeypatch.chdir(tmp_path)
    serve_command(data_dir=data, db_path=None, host="127.0.0.1", port=port, rebuild=False)
    assert (tmp_path / "kb.db").is_file() and calls["port"] == port
    db = tmp_path / "kb.db"
    assert db.is_file() and calls["host"] == "127.0.0.1" and calls["port"] == port
    assert calls["app"] is not None and calls["lifespan"] == "on"
    assert "building it first" in capsys.readouterr().err
    conn = sqlite3.connect(db)
    assert conn.execute("select count(*) from papers").fetchone()[0] == 11
    mtime = db.stat().st_mtime_ns
    serve_command(data_dir=data, db_path=db, host="127.0.0.1", port=port, rebuild=False)
    assert db.stat().st_mtime_ns == mtime  # present: not rebuilt
    serve_command(data_dir=data, db_path=db, host="127.0.0.1", port=port, rebuild=True)
    assert db.stat().st_mtime_ns != mtime
    # Records newer than the database (a `kb fetch` since the last build): rebuilt before serving.
    capsys.readouterr()
    mtime = db.stat().st_mtime_ns
    os.utime(data / "records" / "records.jsonl", ns=(mtime + 10**9, mtime + 10**9))
    serve_command(data_dir=data, db_path=db, host="127.0.0.1", port=port, rebuild=False)
    assert db.stat().st_mtime_ns != mtime
    assert "changed since" in capsys.readouterr().err


async def test_warm_up_fills_the_caches(db_path):
    from kb.publish.serve import warm_up

    plugin._facet_cache.clear()
    plugin._aggregate_cache.clear()
    datasette = make_datasette(db_path)
    await datasette.invoke_startup()
    assert [status for _, status in await warm_up(datasette)] == [200, 200, 200, 200]
    # facets, concept graph, timeline, the citation graph's default view
    assert len(plugin._facet_cache) == 8 and len(plugin._aggregate_cache) == 3
    # the HTML page of the whole table reuses the warmed counts: no facet query runs
    before = dict(plugin._facet_cache)
    assert (await datasette.client.get("/kb/papers")).status_code == 200
    assert dict(plugin._facet_cache) == before


async def test_metadata_applies_to_any_database_name(tmp_path, db_path):
    other = tmp_path / "library.db"
    shutil.copy(db_path, other)
    datasette = make_datasette(other)
    await datasette.invoke_startup()
    assert (await datasette.client.get("/library/seed_references.json")).status_code == 200
    assert (await datasette.client.get("/-/kb/citations.json")).json()["database"] == "library"
    assert "/library/papers/pmid~3A21400001" in (await datasette.client.get("/-/kb/citations.json")).text


def test_make_datasette_refuses_a_missing_file(tmp_path):
    from kb.errors import KbError

    with pytest.raises(KbError, match="database not found"):
        make_datasette(tmp_path / "nope.db")


def test_serve_on_a_busy_port_fails_with_one_line_before_building(tmp_path):
    import socket

    from click.testing import CliRunner

    from kb.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "kb.db"), "--rebuild", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                                     "choose another port with --port")
    assert not (tmp_path / "kb.db").exists()
