"""The explorer's pages (kb/publish/pages.py and kb/publish/templates): paper links from canned queries, identifiers as people
type them, the paper page (the paper first, then its neighbourhood), the concept page, readable table pages,
the start page's search, the 404 page and page titles.

Three knowledge bases: the embedded default (six papers, keyed by DOI and local keys), the publish fixture
(PMIDs and a PMCID) and the generated large KB of tests/largekb.py (4,800 papers, 85% reference-only stubs).
Expected values come from the records or from the database tables, not from the pages under test.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections import Counter
from html import unescape
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urlencode

import pytest
import yaml
from datasette.utils import tilde_encode
from largekb import large_kb  # noqa: F401  (session fixture)

from kb.ids import identifier_part
from kb.paths import default_dataset, metadata_file
from kb.publish import make_datasette, pages, plugin
from kb.records import read_records, record_files, write_records
from kb.store import build

PUBLISH_RECORDS = Path(__file__).parent / "fixtures" / "publish" / "records.jsonl"
KATO = "doi:10.1007/s12185-011-0842-7"
TAKEMOTO = "doi:10.1111/j.1442-200x.2004.01921.x"
QUERIES = yaml.safe_load(metadata_file().read_text())["databases"]["kb"]["queries"]


def row_path(pk: str) -> str:
    return "/kb/papers/" + tilde_encode(pk)


@pytest.fixture(scope="module")
def default_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("pages-default") / "kb.db"
    build(record_files(default_dataset()), path)
    return path


@pytest.fixture(scope="module")
def publish_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("pages-publish") / "kb.db"
    build([PUBLISH_RECORDS], path)
    return path


async def _ds(path):
    datasette = make_datasette(path)
    await datasette.invoke_startup()
    return datasette


@pytest.fixture
async def default_ds(default_db):
    return await _ds(default_db)


@pytest.fixture
async def publish_ds(publish_db):
    return await _ds(publish_db)


@pytest.fixture
async def large_ds(large_kb):  # noqa: F811
    return await _ds(large_kb.db)


async def rows_of(ds, name, **params):
    response = await ds.client.get(f"/kb/{name}.json?_shape=objects&" + urlencode(params))
    assert response.status_code == 200, (name, response.text[:300])
    return response.json()["rows"]


def title_of(html: str) -> str:
    return unescape(re.search(r"<title>(.*?)</title>", html, re.S).group(1)).strip()


# ------------------------------------------------------------------------------------------ canned query links

async def test_paper_links_in_canned_queries_open_paper_pages(default_ds, large_ds, large_kb):  # noqa: F811
    for ds, name, params in ((default_ds, "seed_references", {}),
                             (large_ds, "citing_papers", {"paper": large_kb.seed}),
                             (large_ds, "most_cited", {})):
        rows = await rows_of(ds, name, **params)
        assert rows, name
        html = (await ds.client.get(f"/kb/{name}?" + urlencode(params))).text
        for row in rows[:10]:
            link = f'<a class="kb-paper-link" href="{row_path(row["paper"])}">'
            assert link in html, (name, row["paper"])
        # The link lands on the paper's page, headed by the paper's title.
        first = rows[0]["paper"]
        page = await ds.client.get(row_path(first))
        assert page.status_code == 200
        title = sqlite3.connect(ds.databases["kb"].path).execute(
            "select title from papers where id = ?", [first]).fetchone()[0]
        assert f'<h1 class="kb-title">{escape(title)}</h1>' in page.text


def escape(text: str) -> str:
    from markupsafe import escape as e

    return str(e(text))


def test_render_cell_links_only_paper_keys_and_escapes():
    class Urls:
        @staticmethod
        def row(db, table, pk):
            return f"/{db}/{table}/{pk}"

    class Fake:
        urls = Urls()
        databases = {"_internal": SimpleNamespace(name="_internal", is_memory=True),
                     "kb": SimpleNamespace(name="kb", is_memory=False)}

    link = pages.render_cell('pmid:1"><script>', "paper", None, "kb", Fake())
    assert "<script>" not in link and "&lt;script&gt;" in link
    assert pages.render_cell("pmid:123", "paper", None, "kb", Fake()).startswith(
        '<a class="kb-paper-link" href="/kb/papers/pmid~3A123">')
    assert pages.render_cell("Some title", "paper", None, "kb", Fake()) is None   # not a key
    assert pages.render_cell("pmid:123", "title", None, "kb", Fake()) is None     # not a paper column
    assert pages.render_cell("pmid:123", "citing_id", "citations", "kb", Fake()) is None  # tables link FKs themselves
    assert pages.render_cell("pmid:123", "paper", None, "other", Fake()) is None  # another attached database


# ------------------------------------------------------------------------------------------------ identifiers

@pytest.mark.parametrize("typed,kind,value", [
    ("21547618", "pmid", "21547618"), ("PMID: 21547618", "pmid", "21547618"),
    ("https://pubmed.ncbi.nlm.nih.gov/21547618/", "pmid", "21547618"),
    ("10.1007/S12185-011-0842-7", "doi", "10.1007/s12185-011-0842-7"),
    ("https://doi.org/10.1007/s12185-011-0842-7", "doi", "10.1007/s12185-011-0842-7"),
    ("PMC1000002", "pmcid", "PMC1000002"), ("https://pmc.ncbi.nlm.nih.gov/articles/PMC1000002/", "pmcid", "PMC1000002"),
    ("nonsense", "pmid", None), ("21547618", "doi", None), (None, "pmid", None),
])
def test_identifier_part(typed, kind, value):
    assert identifier_part(typed, kind) == value


async def test_bare_identifiers_and_links_work_in_canned_queries(large_ds, large_kb):  # noqa: F811
    seed_pmid = large_kb.seed.split(":", 1)[1]
    conn = sqlite3.connect(large_kb.db)
    expected = sorted(r[0] for r in conn.execute("select citing_id from citations where cited_id = ?", [large_kb.seed]))
    assert expected
    for typed in (large_kb.seed, seed_pmid, f"PMID: {seed_pmid}", f"https://pubmed.ncbi.nlm.nih.gov/{seed_pmid}/",
                  "10.1007/s12185-011-0842-7", "https://doi.org/10.1007/S12185-011-0842-7", " doi:10.1007/s12185-011-0842-7 "):
        assert sorted(r["paper"] for r in await rows_of(large_ds, "citing_papers", paper=typed)) == expected, typed
    # similar_papers and citation_path read identifiers the same way.
    by_key = await rows_of(large_ds, "similar_papers", paper=large_kb.seed)
    assert by_key and await rows_of(large_ds, "similar_papers", paper=f"https://doi.org/10.1007/s12185-011-0842-7") == by_key
    citer = expected[0]
    path = await rows_of(large_ds, "citation_path", from_paper=citer.split(":", 1)[1],
                         to_paper="https://doi.org/10.1007/s12185-011-0842-7", max_steps="")
    assert [r["paper"] for r in path] == [citer, large_kb.seed]


async def test_doi_keyed_papers_and_pmcids(default_ds, publish_ds):
    # The default KB keys papers by DOI: a doi.org link (any case) finds Takemoto 2004, cited by the seed.
    rows = await rows_of(default_ds, "citing_papers", paper="https://doi.org/10.1111/J.1442-200X.2004.01921.X")
    assert [r["paper"] for r in rows] == [KATO]
    # A PMCID (pmid:9900002 has PMC1000002 in the publish fixture).
    by_key = await rows_of(publish_ds, "citing_papers", paper="pmid:9900002")
    assert by_key and await rows_of(publish_ds, "citing_papers", paper="PMC1000002") == by_key
    assert await rows_of(publish_ds, "citing_papers",
                         paper="https://www.ncbi.nlm.nih.gov/pmc/articles/PMC1000002/") == by_key


async def test_unknown_identifier_is_explained(large_ds):
    assert await rows_of(large_ds, "citing_papers", paper="99999999") == []
    html = (await large_ds.client.get("/kb/citing_papers?paper=99999999")).text
    assert "No paper in this knowledge base matches <strong>99999999</strong>" in html
    html = (await large_ds.client.get("/kb/citing_papers?paper=not+an+id")).text
    assert "No paper in this knowledge base matches <strong>not an id</strong>" in html
    html = (await large_ds.client.get("/kb/citing_papers")).text
    assert "Give <strong>paper</strong>" in html
    html = (await large_ds.client.get("/kb/papers_about_concept?concept=astrology")).text
    assert "No concept is called <strong>astrology</strong>" in html and "Leukemia" in html


async def test_seed_references_without_a_seed_explains(tmp_path):
    records = [r for r in read_records([PUBLISH_RECORDS]) if r["type"] != "seed"]
    write_records(tmp_path / "records.jsonl", records)
    build([tmp_path / "records.jsonl"], tmp_path / "kb.db")
    ds = await _ds(tmp_path / "kb.db")
    assert await rows_of(ds, "seed_references") == []
    html = (await ds.client.get("/kb/seed_references")).text
    assert "This knowledge base has no seed paper" in html and "kb build --seed ID" in html
    assert "No seed paper" in (await ds.client.get("/")).text


# ---------------------------------------------------------------------------------------------- the paper page

async def test_paper_page_puts_the_paper_first(large_ds, large_kb):  # noqa: F811
    conn = sqlite3.connect(large_kb.db)
    for pk in (large_kb.seed, large_kb.big):
        html = (await large_ds.client.get(row_path(pk))).text
        title, journal, year = conn.execute("select title, journal, year from papers where id = ?", [pk]).fetchone()
        authors = [r[0] for r in conn.execute(
            """select a.name from paper_authors pa join authors a on a.id = pa.author_id
               where pa.paper_id = ? order by pa.position""", [pk])]
        assert authors
        assert title_of(html).startswith(title[:40])
        positions = [html.index(f'<h1 class="kb-title">{escape(title)}</h1>'), html.index(escape(authors[0])),
                     html.index(escape(journal)), html.index("References ("), html.index("Cited by ("),
                     html.index("Similar papers ("), html.index("Prior works ("), html.index("Derivative works ("),
                     html.index('id="kb-raw"')]
        assert positions == sorted(positions), pk
        assert f'href="https://pubmed.ncbi.nlm.nih.gov/{pk.split(":")[1]}/"' in html
        assert "seed paper" in html if pk == large_kb.seed else True
        # Datasette's key heading ("papers: pmid:…") is folded away below, not at the top.
        assert html.index("<details class=\"kb-raw\"") < html.index(f"papers: {pk}")


async def test_stub_page_is_marked(large_ds, large_kb):  # noqa: F811
    stub = sqlite3.connect(large_kb.db).execute("select id from papers where resolved = 0 order by id limit 1").fetchone()[0]
    html = (await large_ds.client.get(row_path(stub))).text
    assert "Known only from a reference list" in html


async def test_prior_and_derivative_works(large_ds, large_kb):  # noqa: F811
    conn = sqlite3.connect(large_kb.db)
    edges = list(conn.execute("select citing_id, cited_id from citations"))
    refs, citers = {}, {}
    for a, b in edges:
        refs.setdefault(a, set()).add(b)
        citers.setdefault(b, set()).add(a)
    for pk in (large_kb.seed, large_kb.big):
        data = (await large_ds.client.get("/-/kb/paper.json?id=" + quote(pk))).json()
        neighbourhood = refs.get(pk, set()) | citers.get(pk, set())
        assert len(neighbourhood) <= pages.NEIGHBOURHOOD_CAP
        prior = Counter(b for n in neighbourhood for b in refs.get(n, ()) if b != pk)
        derivative = Counter(a for n in neighbourhood for a in citers.get(n, ()) if a != pk)
        for listed, counts in ((data["prior"], prior), (data["derivative"], derivative)):
            expected = {k: n for k, n in counts.items() if n >= 2}
            assert all(item["n"] == expected[item["id"]] for item in listed), pk
            assert [item["n"] for item in listed] == sorted(expected.values(), reverse=True)[:len(listed)]
            assert len(listed) == min(len(expected), pages.LIST_CAP)
        assert data["prior"], pk
        assert data["authors"] and data["title"]
    seed_page = (await large_ds.client.get(row_path(large_kb.seed))).text
    assert "cited by " in seed_page[seed_page.index('id="kb-prior"'):]


async def test_similar_papers_from_citations_and_pubmed(default_db, tmp_path):
    copy = tmp_path / "kb.db"
    shutil.copy(default_db, copy)
    conn = sqlite3.connect(copy)
    expected = {r[0] for r in conn.execute(
        "select paper_b from paper_similarity where paper_a = ? union select paper_a from paper_similarity where paper_b = ?",
        [TAKEMOTO, TAKEMOTO])}
    ds = await _ds(copy)
    data = (await ds.client.get("/-/kb/paper.json?id=" + quote(TAKEMOTO))).json()
    assert {s["id"] for s in data["similar"]} == expected and expected  # co-cited with the seed's other references
    assert data["pubmed_similar"] == []
    assert "PubMed's similar articles" not in (await ds.client.get(row_path(TAKEMOTO))).text
    # With helper MESH-SIMILAR's table: PubMed's neighbours are listed, best rank first.
    conn.execute("create table if not exists similar_articles (paper_id text, similar_id text, score integer, rank integer, "
                 "primary key (paper_id, similar_id))")
    conn.execute("delete from similar_articles")
    conn.executemany("insert into similar_articles values (?, ?, ?, ?)",
                     [(TAKEMOTO, "ref:Kwee2010", 300, 2), (TAKEMOTO, "ref:Shih2009", 500, 1)])
    conn.commit()
    conn.close()
    ds = await _ds(copy)
    data = (await ds.client.get("/-/kb/paper.json?id=" + quote(TAKEMOTO))).json()
    assert [s["id"] for s in data["pubmed_similar"]] == ["ref:Shih2009", "ref:Kwee2010"]
    html = (await ds.client.get(row_path(TAKEMOTO))).text
    assert "PubMed's similar articles (2)" in html and "score 500" in html
    similar = html[html.index('id="kb-similar"'):]
    assert "cited together 1×" in similar and "0×" not in similar  # the seed cites both: co-cited once


# ---------------------------------------------------------------------------------------------- concept page

async def test_concept_page(large_ds, large_kb, default_ds, default_db):  # noqa: F811
    for ds, path in ((large_ds, large_kb.db), (default_ds, default_db)):
        conn = sqlite3.connect(path)
        papers = {r[0]: r[1] for r in conn.execute(
            """select p.id, p.title from paper_concepts pc join papers p on p.id = pc.paper_id
               where pc.concept_id = 'leukemia'""")}
        response = await ds.client.get("/kb/concepts/leukemia")
        assert response.status_code == 200
        html = response.text
        assert title_of(html) == "Concept: Leukemia"
        section = html[html.index('id="kb-concept-papers"'):]
        shown = re.findall(r'<li[^>]*><a href="/kb/papers/([^"]+)"', section[:section.index("</ol>")])
        assert len(shown) == min(len(papers), pages.CONCEPT_PAPERS_CAP)
        listed = [unquote_tilde(s) for s in shown]
        assert set(listed) <= set(papers)
        resolved = dict(conn.execute("select id, resolved from papers"))
        flags = [resolved[p] for p in listed]
        assert flags == sorted(flags, reverse=True)  # papers with their own record first
        assert f"Papers ({len(papers):,})" in html
        # Definition in words: synonyms as a list, MeSH heading named, patterns folded.
        assert "“leukaemia”" in html and "D007938" in html and '<details class="kb-patterns">' in html
        # Papers per year: integer counts that add up to the dated papers.
        years = dict(conn.execute("""select p.year, count(*) from paper_concepts pc join papers p on p.id = pc.paper_id
                                     where pc.concept_id = 'leukemia' and p.year is not null group by p.year"""))
        got = {int(y): int(n) for y, n in re.findall(r"<tr><td>(\d{4})</td><td class=\"kb-num\">(\d+)</td>", html)}
        assert got == years
        # Co-occurring concepts with their strength.
        others = {r[0] for r in conn.execute(
            "select concept_b from concept_edges where concept_a = 'leukemia' union select concept_a from concept_edges where concept_b = 'leukemia'")}
        for other in others:
            assert f'href="/kb/concepts/{tilde_encode(other)}"' in html


def unquote_tilde(text: str) -> str:
    from datasette.utils import tilde_decode

    return tilde_decode(text)


# ---------------------------------------------------------------------------------------------- table pages

async def test_papers_table_is_readable(large_ds, large_kb):  # noqa: F811
    conn = sqlite3.connect(large_kb.db)
    html = (await large_ds.client.get("/kb/papers?_search=leukemia")).text
    abstracts = [r[0] for r in conn.execute("select abstract from papers where abstract is not null")]
    long = [a for a in abstracts if len(a) > pages.ABSTRACT_CHARS]
    assert long and not any(escape(a) in html for a in long)     # shortened…
    assert 'class="kb-short"' in html and "…" in html             # …and marked as such
    # Column descriptions folded; Datasette's unfolded list hidden by kb.css.
    assert '<details class="kb-columns">' in html
    assert "dl.column-descriptions { display: none; }" in (plugin.STATIC_DIR / "kb.css").read_text()
    # Readable columns by default, every column one click away.
    assert ".table-papers .rows-and-columns td:not(.col-id, .col-title" in html
    assert "show every column" in html
    every = (await large_ds.client.get("/kb/papers?_search=leukemia&_kb_cols=all")).text
    assert "td:not(.col-id" not in every and "Back to the readable set" in every
    # The readable columns are the only ones selected and rendered (not merely hidden): every column on request.
    shown = set(re.findall(r'<td class="col-(\w+)', html))
    assert shown == set(pages.PAPER_DISPLAY_COLUMNS), shown
    assert {"mesh_text", "authors_text", "journal_id", "community"} <= set(re.findall(r'<td class="col-(\w+)', every))
    # JSON lists read as lists; facet headings without kb's facet type names.
    assert 'class="kb-list"' in html and "(kb_list)" not in html and "(kb_column)" not in html
    # JSON is untouched.
    data = (await large_ds.client.get("/kb/papers.json?_search=leukemia&_shape=objects&_size=5")).json()
    assert any(len(r["abstract"] or "") > pages.ABSTRACT_CHARS for r in data["rows"])


# ---------------------------------------------------------------------------------- start page, search, 404

async def test_start_page_search(large_ds, large_kb):  # noqa: F811
    home = (await large_ds.client.get("/")).text
    assert '<form class="kb-search" action="/-/kb/search"' in home
    seed_pmid = large_kb.seed.split(":")[1]
    for typed in (seed_pmid, f"https://pubmed.ncbi.nlm.nih.gov/{seed_pmid}/", "10.1007/s12185-011-0842-7"):
        response = await large_ds.client.get("/-/kb/search?" + urlencode({"q": typed}))
        assert response.status_code == 302 and response.headers["location"] == row_path(large_kb.seed), typed
    kato = (await large_ds.client.get("/-/kb/search?q=Kato")).text
    assert f'href="{row_path(large_kb.seed)}"' in kato and "matched an author" in kato
    words = (await large_ds.client.get("/-/kb/search?q=pediatric+acute+leukemia")).text
    assert f'href="{row_path(large_kb.seed)}"' in words
    data = (await large_ds.client.get("/-/kb/search.json?q=leukaemia")).json()
    assert [c["id"] for c in data["concepts"]] == ["leukemia"]
    nothing = (await large_ds.client.get("/-/kb/search?q=zzzxqy")).text
    assert "Nothing in this knowledge base matches" in nothing


async def test_not_found_pages_have_navigation(default_ds):
    for path in ("/nope", "/kb/nope", row_path("pmid:1")):
        response = await default_ds.client.get(path)
        assert response.status_code == 404, path
        html = response.text
        for link in ('href="/"', 'href="/-/kb/citations"', 'href="/-/kb/concepts"', 'action="/-/kb/search"'):
            assert link in html, (path, link)
        assert "kb.css" in html and title_of(html) == "Not found"
    assert (await default_ds.client.get("/kb/nope.json")).headers["content-type"].startswith("application/json")


async def test_page_titles_are_readable(default_ds):
    for name, query in QUERIES.items():
        html = (await default_ds.client.get(f"/kb/{name}")).text
        assert title_of(html) == query["title"], name
    papers = title_of((await default_ds.client.get("/kb/papers")).text)
    assert "kb: papers" not in papers and papers.startswith("Papers (6)")
    assert title_of((await default_ds.client.get("/kb/papers?_search=marrow")).text).startswith("Papers matching “marrow”")
    assert title_of((await default_ds.client.get(row_path(KATO))).text).startswith("Case series of pediatric acute leukemia")
    assert title_of((await default_ds.client.get("/kb/citing_papers?paper=" + quote(TAKEMOTO)))
                    .text) == f"Papers citing a given paper · {TAKEMOTO}"


async def test_page_queries_use_indexes(large_ds, large_kb, tmp_path, monkeypatch):  # noqa: F811
    """The paper page, the concept page, the search and the query notes read through indexes (no full scan of
    a large table), so they stay fast at 100,000 papers."""
    from datasette.database import Database
    from test_publish import _planner_db, full_scans

    seen = []
    original = Database.execute

    async def spy(self, sql, params=None, *args, **kwargs):
        seen.append((sql, params or {}))
        return await original(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(Database, "execute", spy)
    for path in (row_path(large_kb.seed), row_path(large_kb.big), "/kb/concepts/leukemia", "/-/kb/search?q=Kato",
                 "/-/kb/search?q=marrow+leukemia", "/-/kb/search?q=21547618", "/kb/citing_papers?paper=99999999"):
        assert (await large_ds.client.get(path)).status_code in (200, 302), path
    monkeypatch.undo()
    conn = _planner_db(large_kb.db, tmp_path)
    checked = 0
    for sql, params in seen:
        if "sqlite_master" in sql or "pragma" in sql.lower() or not any(
                t in sql for t in ("papers", "citations", "paper_concepts", "paper_authors", "authors")):
            continue
        if re.fullmatch(r"select count\(\*\) from \[?\w+\]?( p)?\s*", sql.strip()) or "facet" in sql:
            continue
        if "sum(resolved)" in sql:
            continue  # the start page's counts: one pass over the resolved index
        checked += 1
        assert full_scans(conn, sql, params) == [], sql
    assert checked >= 12
