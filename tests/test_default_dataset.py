"""The newcomer path: `kb build` with no arguments on a fresh checkout builds the embedded Kato 2011
neighbourhood, and the published Datasette shows it.

Expected values are worked out by hand from the six papers' titles, the seed's abstract and keywords
(datasets/kato2011/records/papers.jsonl), not read back from a database.
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner

from kb.cli import cli
from kb.paths import default_dataset
from kb.publish import make_datasette
from kb.records import read_records, record_files

SEED = "doi:10.1007/s12185-011-0842-7"
DALDRUP = "doi:10.1007/s00330-006-0404-1"
KWEE = "ref:Kwee2010"
MOULOPOULOS = "ref:Moulopoulos1997"
SHIH = "ref:Shih2009"
TAKEMOTO = "doi:10.1111/j.1442-200x.2004.01921.x"
REFERENCES = {DALDRUP, KWEE, MOULOPOULOS, SHIH, TAKEMOTO}
ALL = REFERENCES | {SEED}

# Which paper carries which concept, and where the evidence is.
EXPECTED_CONCEPTS = {
    "mri": ALL,                                   # every title says MR imaging / magnetic resonance imaging
    "bone-marrow": ALL,                           # five titles; the seed's abstract ("bone marrow tests")
    "leukemia": {SEED, SHIH},                     # "acute leukemia", "acute myeloid leukemia"
    "lymphoma": {KWEE},                           # "malignant lymphoma"
    "neuroblastoma": {TAKEMOTO},                  # "bone marrow metastasis of neuroblastoma"
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`kb build` run in an empty folder, exactly as a newcomer runs it: no data directory, no options."""
    folder = tmp_path_factory.mktemp("newcomer")
    before = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(cli, ["build"])
    finally:
        os.chdir(before)
    assert result.exit_code == 0, result.output
    return result, folder / "kb.db"


def rows(db_path, sql, params=()):
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_the_default_build_says_what_it_built_from(built):
    result, _ = built
    said = [line for line in result.output.splitlines() if "embedded default" in line]
    assert len(said) == 1 and "kato2011" in said[0].lower()


def test_every_record_of_the_dataset_says_where_it_came_from():
    records = list(read_records(record_files(default_dataset())))
    assert records
    for record in records:
        prov = record.get("provenance") or {}
        assert prov.get("source"), record
        if record["type"] == "paper":
            assert prov["sources"], record["id"]            # the public pages the facts were read on
            assert record["pmid"] is None and record["mesh"] == []   # nothing the sources do not show


def test_six_papers_and_five_citations_from_the_seed(built):
    _, db_path = built
    papers = {r["id"]: r for r in rows(db_path, "select * from papers")}
    assert set(papers) == ALL
    assert [p for p in papers if papers[p]["is_seed"]] == [SEED]
    assert {p: papers[p]["hop"] for p in papers} == {**{r: 1 for r in REFERENCES}, SEED: 0}
    assert papers[SHIH]["year"] == 2009 and papers[MOULOPOULOS]["journal_iso"] == "Blood"
    edges = rows(db_path, "select citing_id, cited_id, source, resolved from citations")
    assert {(e["citing_id"], e["cited_id"]) for e in edges} == {(SEED, ref) for ref in REFERENCES}
    assert all(e["source"] == "reflist-match" and e["resolved"] for e in edges)
    # Each edge keeps the reference text it came from.
    raw = {r["cited_id"]: r["raw"] for r in rows(db_path, "select cited_id, raw from citations")}
    assert raw[TAKEMOTO].startswith("Takemoto C, Nishiuchi R") and "2004;46:387" in raw[TAKEMOTO]


def test_each_concept_is_attached_to_the_right_papers_with_evidence(built):
    _, db_path = built
    links = rows(db_path, "select paper_id, concept_id, evidence, evidence_list, score from paper_concepts")
    found = {}
    for link in links:
        found.setdefault(link["concept_id"], set()).add(link["paper_id"])
        assert link["evidence"] in {"title", "abstract", "keyword"}   # no MeSH in this snapshot
        assert 0 < link["score"] <= 1
    assert found == EXPECTED_CONCEPTS
    by_pair = {(l["paper_id"], l["concept_id"]): l for l in links}
    # The seed's bone-marrow link rests on its abstract only; its leukemia link on title, keyword and abstract.
    assert by_pair[(SEED, "bone-marrow")]["evidence"] == "abstract"
    kinds = {e["kind"] for e in json.loads(by_pair[(SEED, "leukemia")]["evidence_list"])}
    assert kinds == {"title", "keyword", "abstract"}
    assert by_pair[(SEED, "leukemia")]["score"] > by_pair[(SEED, "bone-marrow")]["score"]


def test_concept_edges_count_the_papers_that_carry_both(built):
    _, db_path = built
    edges = {(r["concept_a"], r["concept_b"]): r["papers"]
             for r in rows(db_path, "select concept_a, concept_b, papers from concept_edges")}
    expected = {}
    concepts = sorted(EXPECTED_CONCEPTS)
    for i, a in enumerate(concepts):
        for b in concepts[i + 1:]:
            both = len(EXPECTED_CONCEPTS[a] & EXPECTED_CONCEPTS[b])
            if both:
                expected[(a, b)] = both
    assert edges == expected
    assert edges[("bone-marrow", "mri")] == 6 and edges[("bone-marrow", "leukemia")] == 2
    assert ("leukemia", "lymphoma") not in edges


def test_full_text_search_finds_neuroblastoma(built):
    _, db_path = built
    hits = rows(db_path, "select p.id from papers_fts f join papers p on p.rowid = f.rowid "
                         "where papers_fts match 'neuroblastoma'")
    assert [h["id"] for h in hits] == [TAKEMOTO]


async def test_the_published_pages_show_it(built):
    _, db_path = built
    ds = make_datasette(db_path)
    await ds.invoke_startup()
    graph = (await ds.client.get("/-/kb/citations.json")).json()
    assert {n["id"] for n in graph["nodes"]} == ALL
    assert {(e["from"], e["to"]) for e in graph["edges"]} == {(SEED, ref) for ref in REFERENCES}
    concepts = (await ds.client.get("/-/kb/concepts.json")).json()
    assert {n["id"] for n in concepts["nodes"]} == set(EXPECTED_CONCEPTS)
    for path in ("/-/kb/citations", "/-/kb/concepts", "/-/kb/timeline"):
        page = await ds.client.get(path)
        assert page.status_code == 200, path
    search = await ds.client.get("/kb/papers.json?_search=neuroblastoma&_shape=array")
    assert [r["id"] for r in search.json()] == [TAKEMOTO]
    seed_refs = (await ds.client.get("/kb.json?sql=select+cited_id+from+citations+where+citing_id%3D%3Aid"
                                     "&id=" + SEED.replace("/", "%2F") + "&_shape=array")).json()
    assert {r["cited_id"] for r in seed_refs} == REFERENCES
