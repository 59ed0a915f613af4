"""kb export: every format written through the CLI and read back with the tool's own parser."""

import csv
import io
import json
from pathlib import Path

import bibtexparser
import networkx as nx
import pytest
import rispy
from click.testing import CliRunner

from kb.cli import cli
from kb.records import record_files
from kb.store import build
from serving import started_datasette

FIXTURE = Path(__file__).parent / "fixtures" / "build"


@pytest.fixture(scope="module")
def db_path(fixture_db):
    return fixture_db


def export(db_path, tmp_path, fmt, *extra):
    out = tmp_path / f"out.{fmt}"
    result = CliRunner().invoke(cli, ["export", fmt, "--db", str(db_path), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def test_graphml_reads_back(db_path, tmp_path):
    g = nx.read_graphml(export(db_path, tmp_path, "graphml"))
    assert g.is_directed() and g.number_of_nodes() == 8 and g.number_of_edges() == 10
    assert g.nodes["pmid:1"]["title"].startswith("Magnetic resonance imaging")
    assert g.nodes["pmid:1"]["pagerank"] > 0 and g.nodes["pmid:1"]["year"] == 2011
    c = nx.read_graphml(export(db_path, tmp_path, "graphml", "--graph", "concepts"))
    assert not c.is_directed() and c.number_of_nodes() == 5
    assert c.edges["bone-marrow", "mri"]["papers"] == 2


def test_gexf_reads_back(db_path, tmp_path):
    g = nx.read_gexf(export(db_path, tmp_path, "gexf"))
    assert g.number_of_nodes() == 8 and g.number_of_edges() == 10
    c = nx.read_gexf(export(db_path, tmp_path, "gexf", "--graph", "concepts"))
    assert c.number_of_edges() == 4


def test_node_link_json(db_path, tmp_path):
    data = json.loads(export(db_path, tmp_path, "json").read_text())
    g = nx.node_link_graph(data, edges="links")
    assert g.number_of_nodes() == 8 and g.has_edge("pmid:5", "pmid:1")
    assert g.edges["pmid:5", "pmid:1"]["origin"] == "elink:pubmed_pubmed_citedin"


def test_csv_edge_lists(db_path, tmp_path):
    rows = list(csv.DictReader(io.StringIO(export(db_path, tmp_path, "csv").read_text())))
    assert len(rows) == 10 and rows[0]["citing_id"] == "pmid:1" and rows[0]["cited_title"]
    rows = list(csv.DictReader(io.StringIO(export(db_path, tmp_path, "csv", "--graph", "concepts").read_text())))
    assert {(r["concept_a"], r["concept_b"], r["papers"]) for r in rows} >= {("bone-marrow", "mri", "2")}


def test_bibtex_parses_with_stable_keys(db_path, tmp_path):
    text = export(db_path, tmp_path, "bibtex").read_text()
    lib = bibtexparser.parse_string(text)
    assert not lib.failed_blocks
    keys = [e.key for e in lib.entries]
    assert len(keys) == 7 and len(set(keys)) == 7                 # resolved papers only, keys unique
    assert "Kato2011magnetic" in keys and "Two2005hodgkin" in keys
    seed = next(e for e in lib.entries if e.key == "Kato2011magnetic")
    assert seed.fields_dict["pages"].value == "787--790"
    assert seed.fields_dict["doi"].value == "10.1000/seed1"
    assert "Kato, Motohiro and Koh, Katsuyoshi" in seed.fields_dict["author"].value
    group = next(e for e in lib.entries if e.fields_dict["title"].value.startswith("{ALL"))
    assert group.fields_dict["author"].value == "{Fixture Study Group}"
    assert text == export(db_path, tmp_path, "bibtex").read_text()    # deterministic


def test_bibtex_escapes_special_characters(db_path, tmp_path):
    import sqlite3

    copy = tmp_path / "kb.db"
    copy.write_bytes(Path(db_path).read_bytes())
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE papers SET title = 'Costs & 50% of {braces} in $ and #_ cases' WHERE id = 'pmid:2'")
    conn.commit()
    conn.close()
    lib = bibtexparser.parse_string(export(copy, tmp_path, "bibtex").read_text())
    assert not lib.failed_blocks
    entry = next(e for e in lib.entries if e.key == "Two2005costs")
    assert entry.fields_dict["title"].value == r"{Costs \& 50\% of \{braces\} in \$ and \#\_ cases}"


def test_ris_parses(db_path, tmp_path):
    entries = rispy.loads(export(db_path, tmp_path, "ris").read_text())
    assert len(entries) == 7
    seed = next(e for e in entries if e.get("doi") == "10.1000/seed1")
    assert seed["type_of_reference"] == "JOUR"
    assert seed["authors"][:2] == ["Kato, Motohiro", "Koh, Katsuyoshi"]
    assert (seed["start_page"], seed["end_page"], seed["year"]) == ("787", "790", "2011")


def test_csl_json(db_path, tmp_path):
    items = json.loads(export(db_path, tmp_path, "csl-json").read_text())
    assert len(items) == 7
    seed = next(i for i in items if i["id"] == "pmid:1")
    assert seed["type"] == "article-journal" and seed["issued"] == {"date-parts": [[2011]]}
    assert seed["author"][0] == {"family": "Kato", "given": "Motohiro"} and seed["page"] == "787-790"
    assert next(i for i in items if i["id"] == "pmid:5")["author"] == [{"literal": "Fixture Study Group"}]


def test_stdout_and_missing_db(db_path, tmp_path):
    result = CliRunner().invoke(cli, ["export", "csv", "--db", str(db_path)])
    assert result.exit_code == 0 and result.output.startswith("citing_id,cited_id")
    result = CliRunner().invoke(cli, ["export", "ris", "--db", str(tmp_path / "none.db")])
    assert result.exit_code != 0 and "kb build" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------- journals, incomplete author lists (issue 11)

from kb.paths import default_dataset  # noqa: E402
from kb.records import normalize_doi, read_records  # noqa: E402


@pytest.fixture(scope="module")
def default_db(tmp_path_factory):
    """The embedded default (the Kato 2011 seed and its five references)."""
    path = tmp_path_factory.mktemp("default") / "kb.db"
    build(record_files(default_dataset()), path)
    return path


def default_papers():
    return {r["id"]: r for r in read_records(record_files(default_dataset())) if r["type"] == "paper"}


def test_journal_abbreviation_fills_the_journal_and_et_al_is_kept(default_db, tmp_path):
    """ref:Kwee2010 has only the journal's abbreviation and an author list cut by "et al." in the seed's
    reference list: every bibliography names its journal and says the list is incomplete."""
    papers = default_papers()
    kwee = papers["ref:Kwee2010"]
    assert kwee["authors_complete"] is False and not kwee["journal"]["title"]
    truncated = {k for k, p in papers.items() if p.get("authors_complete") is False}

    lib = bibtexparser.parse_string(export(default_db, tmp_path, "bibtex").read_text())
    assert not lib.failed_blocks and len(lib.entries) == len(papers)
    for entry in lib.entries:
        fields = {k: f.value for k, f in entry.fields_dict.items()}
        assert fields.get("journal"), entry.key                 # every paper of the default has a journal
        assert fields["author"].endswith(" and others") == (entry.key == "Kwee2010whole")
    entry = next(e for e in lib.entries if e.key == "Kwee2010whole")
    assert entry.fields_dict["journal"].value == kwee["journal"]["iso"]
    names = entry.fields_dict["author"].value.split(" and ")
    assert len(names) == len(kwee["authors"]) + 1 and names[0] == "Kwee, TC"

    entries = rispy.loads(export(default_db, tmp_path, "ris").read_text())
    noted = {e.get("doi") or e["title"] for e in entries if any("et al." in n for n in e.get("notes", []))}
    assert noted == {kwee["title"]}
    ris = next(e for e in entries if e["title"] == kwee["title"])
    assert ris["secondary_title"] == "Br J Haematol" and len(ris["authors"]) == len(kwee["authors"])

    items = json.loads(export(default_db, tmp_path, "csl-json").read_text())
    assert {i["id"] for i in items if "et al." in i.get("note", "")} == truncated
    item = next(i for i in items if i["id"] == "ref:Kwee2010")
    assert item["container-title"] == "Br J Haematol"


PUBMED_INCOMPLETE = b"""<?xml version="1.0"?>
<PubmedArticleSet><PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">900001</PMID>
<Article PubModel="Print"><Journal><JournalIssue><Volume>3</Volume><PubDate><Year>1985</Year></PubDate>
</JournalIssue><Title>Journal of Long Author Lists</Title><ISOAbbreviation>J Long Auth Lists</ISOAbbreviation></Journal>
<ArticleTitle>A multicentre trial.</ArticleTitle><Pagination><MedlinePgn>1-9</MedlinePgn></Pagination>
<AuthorList CompleteYN="N"><Author ValidYN="Y"><LastName>Alpha</LastName><ForeName>Ann</ForeName><Initials>A</Initials>
</Author><Author ValidYN="Y"><LastName>Beta</LastName><ForeName>Bob</ForeName><Initials>B</Initials></Author></AuthorList>
</Article></MedlineCitation></PubmedArticle>
<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">900002</PMID>
<Article PubModel="Print"><Journal><JournalIssue><PubDate><Year>1986</Year></PubDate></JournalIssue>
<Title>Journal of Long Author Lists</Title></Journal><ArticleTitle>A complete list.</ArticleTitle>
<AuthorList CompleteYN="Y"><Author ValidYN="Y"><LastName>Gamma</LastName><Initials>G</Initials></Author></AuthorList>
</Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"""


def test_pubmed_complete_n_is_exported_as_et_al(tmp_path):
    """PubMed's AuthorList CompleteYN="N" reaches the record, the database and the exports."""
    from kb.parse import parse_pubmed_xml
    from kb.records import write_records

    records = list(parse_pubmed_xml(PUBMED_INCOMPLETE))
    assert [r.get("authors_complete") for r in records] == [False, None]
    write_records(tmp_path / "records.jsonl", records)
    db = tmp_path / "kb.db"
    build([tmp_path / "records.jsonl"], db)
    lib = bibtexparser.parse_string(export(db, tmp_path, "bibtex").read_text())
    authors = {e.fields_dict["pmid"].value: e.fields_dict["author"].value for e in lib.entries}
    assert authors == {"900001": "Alpha, Ann and Beta, Bob and others", "900002": "Gamma, G"}


# --------------------------------------------------------------------------------------- subsets (issue 11)

def fixture_papers():
    """Resolved papers of the build fixture, from its records, keyed as kb keys them: PMID first, and a DOI-keyed
    record whose DOI a PMID-keyed record has is that paper."""
    records = list(read_records(record_files(FIXTURE)))
    deleted = {f"pmid:{r['pmid']}" for r in records if r["type"] == "deleted"}
    pmid_dois = {normalize_doi(r["doi"]) for r in records if r["type"] == "paper" and r.get("pmid") and r.get("doi")}
    papers = {}
    for r in records:
        if r["type"] == "paper":
            key = f"pmid:{r['pmid']}" if r.get("pmid") else r["id"]
            if key not in deleted and not (key.startswith("doi:") and normalize_doi(r.get("doi")) in pmid_dois):
                papers.setdefault(key, r)
    return records, papers


def test_where_selects_papers(db_path, tmp_path):
    _, papers = fixture_papers()
    expected = sorted(k for k, p in papers.items() if p.get("year") and p["year"] >= 2005)
    assert expected and len(expected) < len(papers)
    items = json.loads(export(db_path, tmp_path, "csl-json", "--where", "year >= 2005").read_text())
    assert [i["id"] for i in items] == expected
    lib = bibtexparser.parse_string(export(db_path, tmp_path, "bibtex", "--where", "year >= 2005").read_text())
    assert len(lib.entries) == len(expected)
    entries = rispy.loads(export(db_path, tmp_path, "ris", "--where", "journal like '%Fixtures%' and year < 2005")
                          .read_text())
    assert sorted(e["year"] for e in entries) == sorted(str(p["year"]) for p in papers.values() if p["year"] < 2005)


def test_where_on_the_citation_graph(db_path, tmp_path):
    """A graph export of a subset is the subgraph the selected papers induce."""
    full = nx.read_graphml(export(db_path, tmp_path, "graphml"))
    part = nx.read_graphml(export(db_path, tmp_path, "graphml", "--where", "year >= 2005 or id = 'pmid:3'"))
    chosen = {n for n, d in full.nodes(data=True) if d.get("year", 0) >= 2005} | {"pmid:3"}
    assert set(part.nodes) == chosen
    assert set(part.edges) == {(a, b) for a, b in full.edges if a in chosen and b in chosen}
    assert part.number_of_edges() > 0
    rows = list(csv.DictReader(io.StringIO(export(db_path, tmp_path, "csv", "--where", "year >= 2005").read_text())))
    assert {(r["citing_id"], r["cited_id"]) for r in rows} == {
        (a, b) for a, b in full.edges if full.nodes[a].get("year", 0) >= 2005 and full.nodes[b].get("year", 0) >= 2005}


def test_query_selects_papers(db_path, tmp_path):
    """--query runs a canned query of metadata.yml with -p parameters (and kb's SQL functions)."""
    records, papers = fixture_papers()
    citers = {f"pmid:{p['pmid']}" if p.get("pmid") else p["id"] for p in papers.values()
              for ref in p.get("references") or () if isinstance(ref, dict) and str(ref.get("pmid")) == "1"}
    citers |= {r["citing"] for r in records if r["type"] == "citation" and r.get("cited") == "pmid:1"}
    assert citers
    for given in ("pmid:1", "https://pubmed.ncbi.nlm.nih.gov/1/"):
        items = json.loads(export(db_path, tmp_path, "csl-json", "--query", "citing_papers", "-p", "paper", given)
                           .read_text())
        assert {i["id"] for i in items} == citers & set(papers)
    # a query without parameters, in its own order
    items = json.loads(export(db_path, tmp_path, "csl-json", "--query", "top_pagerank").read_text())
    g = nx.read_graphml(export(db_path, tmp_path, "graphml"))
    ranks = [g.nodes[i["id"]]["pagerank"] for i in items]
    assert len(items) == len(papers) and ranks == sorted(ranks, reverse=True)


# ------------------------------------------------------------------- from a Datasette result page (issue 11)

@pytest.fixture
async def ds(db_path):
    return await started_datasette(db_path)


async def test_result_pages_link_bibliographies(ds):
    papers = (await ds.client.get("/kb/papers")).text
    for ext in ("bib", "ris", "csljson"):
        assert f'href="/kb/papers.{ext}' in papers
    assert 'href="/kb/citing_papers.ris?paper=pmid:1"' in (await ds.client.get("/kb/citing_papers?paper=pmid:1")).text
    assert ".bib" not in (await ds.client.get("/kb/concepts")).text       # no papers in these rows: no link
    response = await ds.client.get("/kb/concepts.bib")
    assert response.status_code == 400 and "name no papers" in response.text


async def test_table_page_exports_every_page(ds, db_path, tmp_path):
    """A table page's bibliography holds all its rows, not only the page shown, with the page's filters."""
    _, papers = fixture_papers()
    response = await ds.client.get("/kb/papers.bib?_size=2")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-bibtex")
    lib = bibtexparser.parse_string(response.text)
    assert not lib.failed_blocks and len(lib.entries) == len(papers)
    response = await ds.client.get("/kb/papers.ris?year__gte=2005&_size=1")
    years = sorted(e["year"] for e in rispy.loads(response.text))
    assert years == sorted(str(p["year"]) for p in papers.values() if p["year"] >= 2005)


async def test_query_pages_export_their_papers(ds, db_path, tmp_path):
    response = await ds.client.get("/kb/citing_papers.csljson?paper=pmid:1")
    assert response.headers["content-type"].startswith("application/vnd.citationstyles.csl+json")
    cli = export(db_path, tmp_path, "csl-json", "--query", "citing_papers", "-p", "paper", "pmid:1").read_text()
    assert response.json() == json.loads(cli)
    response = await ds.client.get("/kb.bib?sql=select+id,+title+from+papers+where+year+<+2005+order+by+id")
    keys = [e.fields_dict["pmid"].value for e in bibtexparser.parse_string(response.text).entries]
    _, papers = fixture_papers()
    assert keys == sorted((p["pmid"] for p in papers.values() if p["year"] < 2005 and p.get("pmid")),
                          key=lambda pmid: f"pmid:{pmid}")


async def test_a_paper_page_exports_that_paper(ds):
    response = await ds.client.get("/kb/papers/pmid~3A1")
    assert 'href="/kb/papers/pmid~3A1.ris"' in response.text
    entries = rispy.loads((await ds.client.get("/kb/papers/pmid~3A1.ris")).text)
    assert [e["doi"] for e in entries] == ["10.1000/seed1"]
