"""kb build for the explorer (issue 11): parsed reference-only stubs and labels, rankings that prefer real
records, search over authors / synonyms / word variants, per-paper similarity, seeds and the KB's own title,
and concepts made from the KB's MeSH headings (--concepts auto)."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from kb import graph
from kb.cli import cli
from kb.concepts import load_lexicon, search_terms
from kb.errors import KbError, NotFound
from kb.records import provenance, write_records
from kb.store import build
from kb.stubs import label, stub_fields
from largekb import large_kb  # noqa: F401  (the generated 4,800-paper KB, a session fixture)

ROOT = Path(__file__).resolve().parent.parent
PUBMED_XML = Path(__file__).parent / "fixtures" / "pubmed" / "efetch-2025.xml"
PROV = provenance("pubmed", request="test fixture")


def paper(pmid, title, year, refs=(), authors=(("Kato", "Motohiro", "M"),), mesh=(), abstract=None, **extra):
    return {"type": "paper", "id": f"pmid:{pmid}", "pmid": str(pmid), "title": title, "year": year,
            "abstract": abstract, "doi": extra.pop("doi", None), "pmcid": extra.pop("pmcid", None),
            "authors": [{"last": la, "fore": fo, "initials": ini} for la, fo, ini in authors],
            "journal": {"title": "Journal of Tests", "iso": "J Tests"},
            "mesh": [{"ui": ui, "name": name, "major": False, "qualifiers": []} for ui, name in mesh],
            "references": [r if isinstance(r, dict) else {"citation": r, "pmid": None} for r in refs],
            "provenance": PROV, **extra}


JOURNAL_ONLY = "Nat Prod Rep. 2014 Dec;31(12):1612-61."
VANCOUVER = "Kwee TC, Fijnheer R, Ludwig I, et al. Whole-body MRI for marrow. Br J Haematol. 2010;149:628-30."


def records():
    """Three real papers and stubs: a much-cited journal-only reference with a PMID, a Vancouver one."""
    hub = {"citation": JOURNAL_ONLY, "pmid": "555"}
    return [
        paper(1, "Case series of pediatric acute leukemia detected by magnetic resonance imaging", 2011,
              refs=[hub, VANCOUVER, {"citation": "x", "pmid": "2"}], doi="10.1007/s12185-011-0842-7",
              pmcid="PMC3110398", mesh=[("D006801", "Humans")]),
        paper(2, "Bone marrow imaging in children", 2004, refs=[hub, VANCOUVER],
              authors=(("Takemoto", "Yuki", "Y"), ("Kato", "Motohiro", "M"))),
        paper(3, "Lymphoma staging", 2009, refs=[hub], authors=(("Shih", "Tiffany", "T"),),
              abstract="Patients with AML and lymphoma."),
        {"type": "seed", "id": "pmid:1", "query": "1", "provenance": PROV},
    ]


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    d = tmp_path_factory.mktemp("explorer")
    write_records(d / "papers.jsonl", [r for r in records() if r["type"] == "paper"])
    db = d / "kb.db"
    build([d / "papers.jsonl"], db)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return d, conn


# ---------------------------------------------------------------------------------------- stubs and labels

def test_stub_fields_of_a_journal_only_reference():
    f = stub_fields(JOURNAL_ONLY)
    assert (f["title"], f["journal"], f["year"], f["volume"], f["issue"], f["pages"]) == (
        None, "Nat Prod Rep", 2014, "31", "12", "1612-1661")
    f = stub_fields("Hypertension. 2001 Feb;37(2 Pt 2):381-5")
    assert (f["journal"], f["year"], f["volume"], f["issue"], f["pages"]) == ("Hypertension", 2001, "37",
                                                                              "2 Pt 2", "381-385")
    assert stub_fields("PLoS One. 2012;7(2):e31906")["pages"] == "e31906"


def test_stub_fields_of_a_vancouver_reference_and_nonsense():
    f = stub_fields(VANCOUVER)
    assert f["title"] == "Whole-body MRI for marrow" and f["journal"] == "Br J Haematol" and f["year"] == 2010
    assert [a[0] for a in f["authors"]] == ["Kwee", "Fijnheer", "Ludwig"] and f["et_al"]
    assert stub_fields("") == {} and stub_fields(None) == {}
    assert not stub_fields("see the supplementary material").get("year")


def test_labels():
    assert label("Kato M", 2011) == "Kato 2011"
    assert label("van der Berg JH", 1999) == "van der Berg 1999"
    assert label("Fixture Study Group", 2010) == "Fixture Study Group 2010"
    assert label(None, 2014, "Nat Prod Rep") == "Nat Prod Rep 2014"
    assert label(None, None, None, "A title " * 20).endswith("…")
    assert label(None, None, None, None, "ref:abc") == "ref:abc"


def test_stubs_carry_what_their_reference_text_gives(kb):
    _d, conn = kb
    hub = conn.execute("select * from papers where id = 'pmid:555'").fetchone()
    assert hub["resolved"] == 0 and hub["year"] == 2014 and hub["journal"] == "Nat Prod Rep"
    assert (hub["volume"], hub["issue"], hub["pages"], hub["label"]) == ("31", "12", "1612-1661", "Nat Prod Rep 2014")
    assert hub["journal_id"] is None                     # stubs add no journals rows
    kwee = conn.execute("select * from papers where resolved = 0 and first_author = 'Kwee TC'").fetchone()
    assert kwee["title"] == "Whole-body MRI for marrow" and kwee["label"] == "Kwee 2010"
    assert kwee["authors_display"] == "Kwee TC, Fijnheer R, Ludwig I, et al."
    assert conn.execute("select label from papers where id = 'pmid:2'").fetchone()[0] == "Takemoto 2004"
    assert conn.execute("select count(*) from authors where name = 'Kwee TC'").fetchone()[0] == 0


def canned(conn, name, **params):
    sql = yaml.safe_load((ROOT / "metadata.yml").read_text())["databases"]["kb"]["queries"][name]["sql"]
    return [dict(r) for r in conn.execute(sql, params)]


@pytest.mark.parametrize("name", ["most_cited", "top_pagerank"])
def test_rankings_prefer_papers_with_records(kb, name):
    _d, conn = kb
    default = canned(conn, name, include_stubs="")
    assert default and all(r["resolved"] == 1 for r in default)
    with_stubs = canned(conn, name, include_stubs="yes")
    assert with_stubs[0]["paper"] == "pmid:555"            # cited by all three: first once stubs are in
    assert {r["paper"] for r in default} < {r["paper"] for r in with_stubs}


# ------------------------------------------------------------------------------------------------- search

def search(conn, q):
    return sorted(r[0] for r in conn.execute(
        "select p.id from papers_fts f join papers p on p.rowid = f.rowid where papers_fts match ?", [q]))


def test_search_finds_authors_synonyms_acronyms_and_variants(kb):
    _d, conn = kb
    assert search(conn, "Takemoto") == ["pmid:2"]
    assert search(conn, "Kato") == ["pmid:1", "pmid:2"]
    assert search(conn, "Motohiro") == ["pmid:1", "pmid:2"]              # given names too
    assert search(conn, "leukaemia") == ["pmid:1", "pmid:3"]            # British spelling: the lexicon's synonym
    assert search(conn, "AML") == ["pmid:1", "pmid:3"]                  # the acronym of the concept
    assert search(conn, "leukemias") == ["pmid:1", "pmid:3"]            # stemming
    assert search(conn, "lymphomas") == ["pmid:3"]
    sql = conn.execute("select sql from sqlite_master where name = 'papers_fts'").fetchone()[0]
    assert "porter" in sql and "authors_text" in sql and "concept_terms" in sql


def test_search_terms_of_a_concept():
    leukemia = next(c for c in load_lexicon().concepts if c.id == "leukemia")
    terms = search_terms(leukemia)
    assert {"Leukemia", "leukaemia", "AML", "CML"} <= set(terms) and "ALL" not in terms


def test_papers_table_search_box_still_works(kb):
    _d, conn = kb
    meta = yaml.safe_load((ROOT / "metadata.yml").read_text())["databases"]["kb"]["tables"]["papers"]
    assert meta["fts_table"] == "papers_fts"
    new = {"label", "authors_text", "concept_terms"}
    assert new <= {r[1] for r in conn.execute("pragma table_info(papers)")} and new <= set(meta["columns"])
    assert search(conn, "pmid") == [] and search(conn, "imaging") == ["pmid:1", "pmid:2"]


# --------------------------------------------------------------------------------------------- similarity

def test_top_pairs_keeps_every_papers_best():
    n = 6
    stub = np.array([False, False, True, True, True, True])
    pairs = [(0, 1, 1), (0, 2, 5), (0, 3, 4), (0, 4, 4), (1, 5, 1), (2, 3, 9), (2, 4, 1), (3, 5, 2)]
    keys = np.array([a * n + b for a, b, _ in pairs])
    score = np.array([s for _, _, s in pairs])
    keep = graph.top_pairs(n, keys, score, stub, per_paper=2, per_stub=1)
    kept = {(a, b) for (a, b, _), k in zip(pairs, keep) if k}
    # paper 0: its best two (0-2: 5; 0-3 and 0-4 tie at 4: 0-3, the lower index); paper 1: its only pairs;
    # stubs keep their single best (2-3, 3-2, 4: 0-4, 5: 3-5)
    assert kept == {(0, 2), (0, 3), (0, 1), (1, 5), (2, 3), (0, 4), (3, 5)}
    assert not graph.top_pairs(3, np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(3, bool), 1, 1).any()


def test_ties_prefer_partners_with_records():
    stub = np.array([False, True, False])
    keys = np.array([0 * 3 + 1, 0 * 3 + 2])
    keep = graph.top_pairs(3, keys, np.array([1, 1]), stub, per_paper=1, per_stub=0)
    assert keep.tolist() == [False, True]


def test_every_paper_keeps_its_similar_papers_on_a_large_kb(large_kb):
    conn = sqlite3.connect(large_kb.db)
    for pid in (large_kb.seed, large_kb.big):
        n = conn.execute("select count(*) from paper_similarity where ? in (paper_a, paper_b)", [pid]).fetchone()[0]
        assert n >= graph.SIMILAR_PER_PAPER
    # every resolved paper that shares anything keeps up to its quota
    worst = conn.execute("""select min(n) from (select p.id, (select count(*) from paper_similarity s
                             where p.id in (s.paper_a, s.paper_b)) as n from papers p where p.resolved = 1
                             and p.reference_count_kb + p.citation_count_kb > 0)""").fetchone()[0]
    assert worst > 0
    meta = dict(conn.execute("select key, value from kb_meta"))
    assert f"{graph.SIMILAR_PER_PAPER} most similar" in meta["similarity_per_paper"]


# -------------------------------------------------------------------------------------- seeds and title

def test_seed_records_title_the_kb(kb):
    _d, conn = kb
    meta = dict(conn.execute("select key, value from kb_meta"))
    assert json.loads(meta["seeds"]) == []
    assert meta["title"] == "kb: 3 papers from papers.jsonl"
    assert "no seed paper" in meta["description"] and "kb build --seed" in meta["description"]


@pytest.mark.parametrize("seed", ["1", "PMID: 1", "pmid:1", "https://pubmed.ncbi.nlm.nih.gov/1/",
                                  "10.1007/S12185-011-0842-7", "https://doi.org/10.1007/s12185-011-0842-7",
                                  "PMC3110398"])
def test_build_seed_accepts_every_identifier(kb, tmp_path, seed):
    d, _conn = kb
    summary = build([d / "papers.jsonl"], tmp_path / "s.db", seeds=[seed])
    conn = sqlite3.connect(tmp_path / "s.db")
    meta = dict(conn.execute("select key, value from kb_meta"))
    assert json.loads(meta["seeds"]) == ["pmid:1"]
    assert meta["title"].startswith("kb: Kato 2011, Case series of pediatric acute leukemia")
    assert meta["description"].startswith("Grown from the seed paper Kato 2011 (pmid:1)")
    assert summary["title"] == meta["title"]
    assert conn.execute("select hop from papers where id = 'pmid:2'").fetchone()[0] == 1


def test_build_seed_not_in_the_records_is_an_error(kb, tmp_path):
    d, _conn = kb
    with pytest.raises(NotFound, match="seed '99999999': no paper with this PMID"):
        build([d / "papers.jsonl"], tmp_path / "s.db", seeds=["99999999"])
    with pytest.raises(KbError, match="not an identifier"):
        build([d / "papers.jsonl"], tmp_path / "s.db", seeds=["banana"])
    assert not (tmp_path / "s.db").exists()
    result = CliRunner().invoke(cli, ["build", "--data", str(d), "--db", str(tmp_path / "c.db"), "--seed", "4242"])
    assert result.exit_code != 0 and result.output.strip().splitlines()[-1].startswith("Error: seed '4242'")


def test_import_seed_marks_and_titles(tmp_path):
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(cli, ["import", str(PUBMED_XML), "--data", str(data), "--seed", "PMC9000001"])
    assert result.exit_code == 0, result.output
    assert "Seed: pmid:90000001" in result.output
    seeds = [json.loads(line) for line in (data / "records" / "seeds.jsonl").read_text().splitlines()]
    assert [s["id"] for s in seeds] == ["pmid:90000001"]
    # a second import with another seed keeps the first
    result = runner.invoke(cli, ["import", str(PUBMED_XML), "--data", str(data), "--seed", "90000002"])
    assert result.exit_code == 0, result.output
    seeds = [json.loads(line) for line in (data / "records" / "seeds.jsonl").read_text().splitlines()]
    assert [s["id"] for s in seeds] == ["pmid:90000001", "pmid:90000002"]
    result = runner.invoke(cli, ["build", "--data", str(data), "--db", str(tmp_path / "kb.db")])
    assert result.exit_code == 0, result.output
    meta = dict(sqlite3.connect(tmp_path / "kb.db").execute("select key, value from kb_meta"))
    assert json.loads(meta["seeds"]) == ["pmid:90000001", "pmid:90000002"]
    assert meta["title"].startswith("kb: 2 seed papers (")
    bad = runner.invoke(cli, ["import", str(PUBMED_XML), "--data", str(data), "--seed", "10.1234/none"])
    assert bad.exit_code != 0 and "no paper with this DOI" in bad.output and "records are kept" in bad.output
    assert "Traceback" not in bad.output
    # a seed that is no identifier at all fails before anything is imported
    other = tmp_path / "other"
    bad = runner.invoke(cli, ["import", str(PUBMED_XML), "--data", str(other), "--seed", "banana"])
    assert bad.exit_code != 0 and bad.output.startswith("Error: 'banana' is not an identifier")
    assert not (other / "records").exists()


def test_imported_kb_without_seed_says_where_it_came_from(tmp_path):
    data = tmp_path / "data"
    assert CliRunner().invoke(cli, ["import", str(PUBMED_XML), "--data", str(data)]).exit_code == 0
    build(sorted((data / "records").glob("*.jsonl")), tmp_path / "kb.db")
    meta = dict(sqlite3.connect(tmp_path / "kb.db").execute("select key, value from kb_meta"))
    assert meta["title"].startswith("kb: ") and "imported paper" in meta["title"] and "efetch-2025.xml" in meta["title"]
    assert meta["description"].startswith("Imported from efetch-2025.xml: ")


# --------------------------------------------------------------------------------------- concepts auto

LEUK = ("D007938", "Leukemia")
AML = ("D015470", "Leukemia, Myeloid, Acute")      # C04.557.337.539.550 in the shipped tree table
MRI = ("D008279", "Magnetic Resonance Imaging")
MARROW = ("D001853", "Bone Marrow")
HUMANS, CHILD, MALE = ("D006801", "Humans"), ("D002648", "Child"), ("D008297", "Male")


def auto_records():
    out = []
    for i in range(12):
        mesh = [HUMANS, MALE, CHILD]
        mesh += [AML] if i % 2 else [LEUK]          # AML rolls up into Leukemia
        if i < 7:
            mesh.append(MRI)
        if i < 3:
            mesh.append(MARROW)
        out.append(paper(100 + i, f"Paper {i}", 2000 + i, mesh=mesh))
    return out


def test_auto_lexicon_from_mesh(tmp_path):
    from kb.concepts import auto_lexicon

    lexicon = auto_lexicon(auto_records(), load_lexicon(), top=2)
    assert [(c.id, c.label) for c in lexicon.concepts] == [("leukemia", "Leukemia"),
                                                           ("magnetic-resonance-imaging", "Magnetic Resonance Imaging")]
    leukemia = lexicon.concepts[0]
    assert leukemia.mesh == ["D007938"] and leukemia.tree_prefixes == ["C04.557.337"]
    assert "12 papers" in leukemia.description
    three = auto_lexicon(auto_records(), load_lexicon(), top=5)
    assert [c.label for c in three.concepts] == ["Leukemia", "Magnetic Resonance Imaging", "Bone Marrow"]


def test_build_concepts_auto(tmp_path):
    write_records(tmp_path / "p.jsonl", auto_records())
    result = CliRunner().invoke(cli, ["build", "--data", str(tmp_path), "--db", str(tmp_path / "kb.db"),
                                      "--concepts", "auto"])
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(tmp_path / "kb.db")
    concepts = conn.execute("select id, paper_count from concepts order by paper_count desc, id").fetchall()
    assert concepts == [("leukemia", 12), ("magnetic-resonance-imaging", 7), ("bone-marrow", 3)]
    # papers indexed only with the narrower heading carry the broader concept, with MeSH evidence
    row = conn.execute("select evidence from paper_concepts where paper_id = 'pmid:101' and concept_id = 'leukemia'")
    assert row.fetchone()[0] == "mesh-minor"
    assert conn.execute("select papers from concept_edges where concept_a = 'leukemia' and "
                        "concept_b = 'magnetic-resonance-imaging'").fetchone()[0] == 7
    meta = dict(conn.execute("select key, value from kb_meta"))
    assert meta["lexicon"] == "auto (top 30 MeSH descriptors)" and len(meta["lexicon_sha256"]) == 64


def test_concepts_auto_without_mesh_is_one_line(tmp_path):
    write_records(tmp_path / "p.jsonl", [paper(1, "No headings", 2001, mesh=[HUMANS])])
    result = CliRunner().invoke(cli, ["build", "--data", str(tmp_path), "--db", str(tmp_path / "kb.db"),
                                      "--concepts", "auto"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: --concepts auto: the records carry no MeSH")
    assert not (tmp_path / "kb.db").exists()


def test_auto_concepts_and_new_columns_are_deterministic(tmp_path):
    recs = auto_records() + [r for r in records() if r["type"] == "paper"]
    write_records(tmp_path / "p.jsonl", recs)
    dumps = []
    for name in ("a.db", "b.db"):
        build([tmp_path / "p.jsonl"], tmp_path / name, lexicon_path="auto", seeds=["1"])
        conn = sqlite3.connect(tmp_path / name)
        dumps.append([conn.execute(f"select * from {t} order by 1, 2").fetchall()
                      for t in ("papers", "concepts", "paper_concepts", "paper_similarity", "kb_meta")])
    assert dumps[0] == dumps[1]


def test_auto_concepts_roll_up_by_the_trees_of_mesh_records(tmp_path):
    blast = ("D001752", "Blast Crisis")               # not in the shipped tree table
    recs = [paper(200 + i, f"Blast {i}", 2001, mesh=[blast, HUMANS]) for i in range(5)]
    recs += [paper(300 + i, f"Leukemia {i}", 2001, mesh=[LEUK]) for i in range(2)]
    write_records(tmp_path / "a.jsonl", recs)
    build([tmp_path / "a.jsonl"], tmp_path / "a.db", lexicon_path="auto")
    alone = [r[0] for r in sqlite3.connect(tmp_path / "a.db").execute("select label from concepts order by id")]
    assert alone == ["Blast Crisis", "Leukemia"]      # tree unknown: two concepts
    write_records(tmp_path / "b.jsonl", [{"type": "mesh", "ui": blast[0], "name": blast[1],
                                          "tree_numbers": ["C04.557.337.120"], "provenance": PROV}])
    build([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "b.db", lexicon_path="auto")
    conn = sqlite3.connect(tmp_path / "b.db")
    assert conn.execute("select id, paper_count from concepts").fetchall() == [("leukemia", 7)]
