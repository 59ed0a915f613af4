"""MeSH tree numbers: `kb mesh import` of NLM's descriptor file, `kb fetch --mesh-trees` (esummary db=mesh on
the fake E-utilities server), and the lexicon's tree-prefix subsumption using both in `kb build`."""

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from fake_eutils import Corpus, FakeEutils, JOURNALS, Paper, esummary_mesh_body, small_corpus
from kb.cli import cli
from kb.concepts import load_lexicon, match_paper
from kb.errors import ParseError
from kb.mesh import import_descriptors, mesh_uid, parse_esummary, read_descriptors, ui_of_uid
from kb.paths import datasets_dir
from kb.records import read_records

FIXTURE = Path(__file__).parent / "fixtures" / "mesh" / "desc-small.xml"
EXPECTED = [("D001752", "Blast Crisis", ["C04.557.337.372"]),
            ("D007945", "Leukemia, Lymphoid", ["C04.557.337.428", "C15.604.515.560"]),
            ("D008297", "Male", [])]
BLAST = "30000050"   # a paper indexed with Blast Crisis only: nothing in its text says leukemia


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def shipped_uis():
    return {line.split("\t")[0] for line in (datasets_dir() / "mesh-trees.tsv").read_text().splitlines()
            if line and not line.startswith("#")}


# --------------------------------------------------------------------------------------- the descriptor file

def test_read_descriptors_takes_each_records_own_fields():
    # D000970 inside PharmacologicalActionList is another record's UI, not this one's
    assert list(read_descriptors(FIXTURE)) == EXPECTED


@pytest.mark.parametrize("gz", [False, True])
def test_mesh_import_xml_and_gz(tmp_path, gz):
    source = FIXTURE
    if gz:
        source = tmp_path / "desc-small.xml.gz"
        source.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    result = run("mesh", "import", source, "--data", tmp_path / "data")
    out = tmp_path / "data" / "records" / "mesh-desc-small.jsonl"
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"3 MeSH descriptors, 3 tree numbers -> {out}"
    recs = list(read_records([out]))
    assert [(r["type"], r["ui"], r["name"], r["tree_numbers"]) for r in recs] == [("mesh",) + e for e in EXPECTED]
    assert recs[0]["provenance"] == {"source": "mesh-xml", "request": source.name, "retrieved": None,
                                     "sources": ["https://www.nlm.nih.gov/mesh/"], "note": None}
    first = out.read_bytes()
    assert run("mesh", "import", source, "--data", tmp_path / "data").exit_code == 0
    assert out.read_bytes() == first   # deterministic


@pytest.mark.parametrize("content, message", [
    (b'<?xml version="1.0"?>\n<DescriptorRecordSet><DescriptorRecord><DescriptorUI>D001752</DescriptorUI>'
     b"<DescriptorName><String>Blast Crisis</String></DescriptorName>", "line 2: malformed or truncated XML"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE DescriptorRecordSet [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
     b"<DescriptorRecordSet><DescriptorRecord><DescriptorUI>D000011</DescriptorUI>"
     b"<DescriptorName><String>&x;</String></DescriptorName></DescriptorRecord></DescriptorRecordSet>",
     "refused: the DOCTYPE declares entities"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>\n'
     b"<DescriptorRecordSet>&lol2;</DescriptorRecordSet>", "refused: the DOCTYPE declares entities"),
    (b'<?xml version="1.0"?>\n<PubmedArticleSet></PubmedArticleSet>', "not a MeSH descriptor file (root element"),
    (b'<?xml version="1.0"?>\n<DescriptorRecordSet></DescriptorRecordSet>', "no DescriptorRecord"),
    (b'<DescriptorRecordSet><DescriptorRecord><DescriptorUI>D001752</DescriptorUI><TreeNumberList>'
     b"<TreeNumber>C04..1</TreeNumber></TreeNumberList></DescriptorRecord></DescriptorRecordSet>",
     "'C04..1' of D001752 is not a MeSH tree number"),
    (b"", "empty file"),
    (gzip.compress(FIXTURE.read_bytes())[:200], "truncated or corrupt gzip data"),
])
def test_bad_descriptor_files_fail_with_one_line(tmp_path, content, message):
    bad = tmp_path / ("bad.xml.gz" if content[:2] == b"\x1f\x8b" else "bad.xml")
    bad.write_bytes(content)
    result = run("mesh", "import", bad, "--data", tmp_path / "data")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not (tmp_path / "data" / "records").exists() or not list((tmp_path / "data" / "records").iterdir())


def test_missing_file_and_directory(tmp_path):
    for path, message in ((tmp_path / "nope.xml", "no such file"), (tmp_path, "is a directory")):
        result = run("mesh", "import", path, "--data", tmp_path / "data")
        assert result.exit_code != 0 and message in result.output


def test_lexicon_descriptor_file_may_be_gzipped(tmp_path):
    (tmp_path / "desc.xml.gz").write_bytes(gzip.compress(FIXTURE.read_bytes()))
    (tmp_path / "lex.yml").write_text("mesh_descriptor_file: desc.xml.gz\nconcepts:\n  - id: lymphoid\n"
                                      "    label: Lymphoid\n    tree_prefixes: [C15.604.515]\n")
    lex = load_lexicon(tmp_path / "lex.yml")
    assert match_paper({"mesh": [{"ui": "D007945", "name": "Leukemia, Lymphoid"}]}, lex)[0][0] == "lymphoid"


# --------------------------------------------------------------------------------------- E-utilities db=mesh

def test_mesh_uids():
    assert mesh_uid("D008279") == "68008279" and ui_of_uid("68008279") == "D008279" and ui_of_uid("67414177") is None


def test_esummary_both_versions():
    uids = [mesh_uid("D001752"), mesh_uid("D008297"), mesh_uid("D999999")]
    want = {"D001752": {"name": "Blast Crisis", "tree_numbers": ["C04.557.337.372"]},
            "D008297": {"name": "Male", "tree_numbers": []}}
    assert parse_esummary(esummary_mesh_body(uids, "2.0").encode()) == want
    assert parse_esummary(esummary_mesh_body(uids, "").encode()) == want
    # a supplementary record's @-code is not a tree number
    body = (b'<eSummaryResult><DocumentSummarySet status="OK"><DocumentSummary uid="68000001"><DS_MeshTerms>'
            b"<string>X</string></DS_MeshTerms><DS_IdxLinks><LinksType><TreeNum>@3065</TreeNum></LinksType>"
            b"</DS_IdxLinks></DocumentSummary></DocumentSummarySet></eSummaryResult>")
    assert parse_esummary(body) == {"D000001": {"name": "X", "tree_numbers": []}}


@pytest.fixture
def blast_server():
    """The small corpus plus one paper indexed only with Blast Crisis (D001752), a heading under Leukemia
    (C04.557.337) that datasets/mesh-trees.tsv does not list and whose name matches no leukemia pattern."""
    base = small_corpus()
    extra = Paper(BLAST, "Marrow blasts in an adolescent.", JOURNALS[0], 2015, 3, "101", "2", "10-15",
                  authors=[("Sato", "Yuki", "Y", None, "Example University.")],
                  abstract=[(None, None, "A case report.")],
                  mesh=[("D001752", "Blast Crisis", True, []), ("D000293", "Adolescent", False, [])])
    with FakeEutils(Corpus(list(base.papers.values()) + [extra], deleted=base.deleted)) as server:
        yield server


def concepts_of(db, paper):
    return sqlite3.connect(db).execute("select concept_id, evidence from paper_concepts where paper_id = ? "
                                       "order by concept_id", (paper,)).fetchall()


def test_mesh_trees_fetched_and_used_for_subsumption(blast_server, tmp_path, monkeypatch):
    monkeypatch.setenv("KB_EUTILS_URL", blast_server.base_url)
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    assert "D001752" not in shipped_uis()
    data, db = tmp_path / "data", tmp_path / "kb.db"
    paper = f"pmid:{BLAST}"

    assert run("fetch", BLAST, "--depth", "0", "--data", data).exit_code == 0
    assert run("build", "--data", data, "--db", db).exit_code == 0
    assert ("leukemia", "mesh-major") not in concepts_of(db, paper)          # tree number unknown: no match
    tree = sqlite3.connect(db).execute("select tree_numbers from mesh_descriptors where ui = 'D001752'").fetchone()
    assert tree == ("[]",)

    blast_server.reset()
    result = run("fetch", BLAST, "--depth", "0", "--mesh-trees", "--data", data)
    assert result.exit_code == 0, result.output
    assert "2 MeSH descriptors" in result.output
    sent = [r for r in blast_server.requests if r["endpoint"] == "esummary.fcgi"]
    assert len(sent) == 1 and sent[0]["params"]["db"] == ["mesh"] and sent[0]["params"]["version"] == ["2.0"]
    assert sorted(sent[0]["params"]["id"][0].split(",")) == ["68000293", "68001752"]
    mesh = [r for r in read_records([data / "records" / "harvest.jsonl"]) if r["type"] == "mesh"]
    assert [(r["ui"], r["name"], r["tree_numbers"]) for r in mesh] == [
        ("D000293", "Adolescent", ["M01.060.057"]), ("D001752", "Blast Crisis", ["C04.557.337.372"])]
    assert mesh[0]["provenance"]["source"] == "mesh-esummary"

    assert run("build", "--data", data, "--db", db).exit_code == 0
    assert ("leukemia", "mesh-major") in concepts_of(db, paper)
    conn = sqlite3.connect(db)
    assert conn.execute("select tree_numbers from mesh_descriptors where ui = 'D001752'").fetchone() == \
        ('["C04.557.337.372"]',)
    evidence = json.loads(conn.execute("select evidence_list from paper_concepts where paper_id = ? and "
                                       "concept_id = 'leukemia'", (paper,)).fetchone()[0])
    assert {"kind": "mesh-major", "match": "Blast Crisis"} in evidence

    blast_server.reset()   # everything cached: a re-run sends nothing
    assert run("fetch", BLAST, "--depth", "0", "--mesh-trees", "--data", data).exit_code == 0
    assert blast_server.count() == 0


def test_imported_descriptor_file_used_for_subsumption(blast_server, tmp_path, monkeypatch):
    monkeypatch.setenv("KB_EUTILS_URL", blast_server.base_url)
    data, db = tmp_path / "data", tmp_path / "kb.db"
    assert run("fetch", BLAST, "--depth", "0", "--data", data).exit_code == 0
    assert run("mesh", "import", FIXTURE, "--data", data).exit_code == 0
    assert run("build", "--data", data, "--db", db).exit_code == 0
    assert ("leukemia", "mesh-major") in concepts_of(db, f"pmid:{BLAST}")
    # descriptors known only from the file (no paper has them) add no rows
    uis = [r[0] for r in sqlite3.connect(db).execute("select ui from mesh_descriptors order by ui")]
    assert "D007945" not in uis and "D001752" in uis


def test_mesh_records_extend_never_replace(tmp_path):
    """Tree numbers add up across the lexicon's table and the records; a record cannot take one away."""
    from kb import mesh

    lex = load_lexicon()
    store = {}
    mesh.collect(store, {"ui": "D007938", "name": "Leukemia", "tree_numbers": ["C15.604.515.560"]})
    mesh.collect(store, {"ui": "D001752", "name": "Blast Crisis", "tree_numbers": ["C04.557.337.372", "bad"]})
    assert mesh.merge_into_lexicon(lex, store) == 2
    assert lex.trees["D007938"] == ("C04.557.337", "C15.604.515.560")
    assert lex.trees["D001752"] == ("C04.557.337.372",)
    assert lex.tree_numbers(None, "blast crisis") == ("C04.557.337.372",)
