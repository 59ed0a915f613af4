"""Completeness shown to users: citation_sources / paper_coverage tables, the canned queries and the
/-/kb/completeness page, from a harvest of the fakes (PubMed + the open sources, one source partly failing)."""

import sqlite3

import pytest

from fake_eutils import FakeEutils
from fake_sources import FakeSources, sources_corpus
from kb.eutils import Eutils
from kb.harvest import harvest
from kb.ids import register_sql_functions
from kb.publish import make_datasette
from kb.sources import http as source_http
from serving import started_datasette

SEED = "pmid:30000001"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    """A knowledge base harvested at depth 1 with citers from every source; Crossref has no open reference
    list for 30000010 (only its stated count) and iCite answers in its 2025 shape (no link lists)."""
    from kb.store import build

    tmp = tmp_path_factory.mktemp("completeness")
    corpus = sources_corpus()
    mp = pytest.MonkeyPatch()
    try:
        with FakeEutils(corpus) as eutils, FakeSources(corpus, closed=["10.5555/kb.2014.0010"],
                                                       icite_shape="2025") as fake:
            for k, v in fake.env().items():
                mp.setenv(k, v)
            mp.setattr(source_http, "RATES", {n: 200.0 for n in source_http.RATES})
            client = Eutils(tmp / "cache", base_url=eutils.base_url, api_key="CompletenessKey", backoff=0.01)
            harvest(["30000001"], tmp, depth=2, cited_by=True, client=client,
                    sources=["pubmed", "europepmc", "opencitations", "crossref", "icite"])
    finally:
        mp.undo()
    path = tmp / "kb.db"
    build([tmp / "records" / "harvest.jsonl"], path)
    return path


@pytest.fixture
async def ds(db_path):
    return await started_datasette(db_path)


def test_tables(db_path):
    conn = sqlite3.connect(db_path)
    seed = dict(conn.execute("select source, [references] from paper_coverage where paper_id = ?", (SEED,)).fetchall())
    assert seed == {"pubmed": 0, "europepmc": 5, "opencitations": 4, "crossref": 5, "icite": None}
    row = conn.execute("select status, message, stated_references from paper_coverage where paper_id = ? and "
                       "source = 'icite'", (SEED,)).fetchone()
    assert row[0] == "no-links" and "July 2025" in row[1]
    closed = conn.execute("select status, [references], stated_references from paper_coverage "
                          "where paper_id = 'pmid:30000010' and source = 'crossref'").fetchone()
    assert closed == ("no-links", 0, 2)
    # every citations row has its sources in citation_sources, and the same list in citations.sources
    import json

    for citing, cited, sources in conn.execute("select citing_id, cited_id, sources from citations"):
        listed = [s for (s,) in conn.execute("select source from citation_sources where citing_id = ? and "
                                             "cited_id = ? order by source", (citing, cited))]
        assert listed == json.loads(sources)


def test_canned_queries(db_path):
    import yaml

    from kb.paths import metadata_file

    queries = yaml.safe_load(metadata_file().read_text())["databases"]["kb"]["queries"]
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    register_sql_functions(conn)
    rows = [dict(r) for r in conn.execute(queries["why_missing"]["sql"], {"paper": "30000001"})]
    refs = {r["paper"]: r for r in rows if r["direction"] == "reference"}
    assert refs["pmid:30000002"]["europepmc"] == 1 and refs["pmid:30000002"]["pubmed"] == 0
    assert refs["doi:10.5555/ext.0001"]["opencitations"] == 1 and refs["doi:10.5555/ext.0001"]["icite"] == 0
    citers = {r["paper"]: r for r in rows if r["direction"] == "citer"}
    assert citers["pmid:30000014"]["pubmed"] == 0 and citers["pmid:30000010"]["pubmed"] == 1
    assert {r["stated_references"] for r in rows} == {5}
    per_paper = {r["paper"]: dict(r) for r in conn.execute(queries["paper_completeness"]["sql"])}
    assert per_paper[SEED]["stated_references"] == 5 and per_paper[SEED]["europepmc"] == "5 / 4"
    assert per_paper[SEED]["icite"] == "– / – no-links"


async def test_completeness_page(ds):
    response = await ds.client.get("/-/kb/completeness")
    assert response.status_code == 200
    html = response.text
    assert "Completeness of the citation graph" in html
    seed_row = html.split(f'data-paper="{SEED}"')[1].split("</tr>")[0]
    cells = [c.split(">", 1)[1].split("</td")[0] for c in seed_row.split("<td")[1:]]
    # stated, found, unresolved, then references per source (pubmed, europepmc, opencitations, crossref, icite)
    assert cells[1:4] == ["5", "5", "2"]   # stated 5, all 5 found, 2 known only from reference lists
    assert cells[4:9] == ["0", "5", "4", "5", "– <small>no-links</small>"]
    one = await ds.client.get("/-/kb/completeness?paper=30000001")
    assert one.status_code == 200
    text = one.text
    assert "Why is a citation missing?" in text and "Marrow imaging in children" in text
    assert 'class="kb-stated">5<' in text
    # the citer outside PMC without a ReferenceList in PubMed: found by the open sources only
    row = text.split("<code>pmid:30000014</code>")[1].split("</tr>")[0]
    assert row.strip().endswith("<td>pubmed, icite</td>")
    missing = await ds.client.get("/-/kb/completeness?paper=pmid:99")
    assert missing.status_code == 404
    home = await ds.client.get("/")
    assert 'href="/-/kb/completeness"' in home.text        # in kb's menu


async def test_default_dataset_reference_list_counts(tmp_path):
    """The embedded default was made with `kb refs`: its reference list states 5 references and all 5 resolved,
    which the completeness page shows under the "reflist" source, each reference ticked there."""
    from kb.paths import default_dataset
    from kb.records import record_files
    from kb.store import build

    path = tmp_path / "default.db"
    build(record_files(default_dataset()), path)
    conn = sqlite3.connect(path)
    assert conn.execute("select paper_id, source, [references], stated_references, status from paper_coverage").fetchall() \
        == [("doi:10.1007/s12185-011-0842-7", "reflist", 5, 5, "ok")]
    ds = make_datasette(path)
    page = (await ds.client.get("/-/kb/completeness")).text
    assert 'data-paper="doi:10.1007/s12185-011-0842-7"' in page and "No source was asked yet" not in page
    detail = (await ds.client.get("/-/kb/completeness?paper=doi:10.1007/s12185-011-0842-7")).text
    assert '<strong class="kb-stated">5</strong>' in detail and '<strong class="kb-found">5</strong>' in detail
    assert detail.count("✓") == 5
