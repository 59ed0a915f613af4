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

FIXTURE = Path(__file__).parent / "fixtures" / "build"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("kb") / "kb.db"
    build(record_files(FIXTURE), path)
    return path


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
