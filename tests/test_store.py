"""kb build: schema, merging, stubs, FTS, foreign keys, determinism and the atomic swap."""

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from kb.cli import cli
from kb.errors import KbError, ParseError
from kb.records import record_files, write_records
from kb.store import build, stub_key

FIXTURE = Path(__file__).parent / "fixtures" / "build"
UNINDEXED = "Smith J. Unindexed report on marrow signal. Proc Fixture Soc. 1999;1:1-2."


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("kb") / "kb.db"
    summary = build(record_files(FIXTURE), path)
    return path, summary


@pytest.fixture
def db(built):
    return sqlite_utils.Database(built[0])


def dump(path):
    """Every table's rows, sorted: the content two builds must share."""
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
              if not r[0].startswith("sqlite_stat") and not r[0].startswith("papers_fts_")]
    out = {t: sorted(map(repr, conn.execute(f"SELECT * FROM [{t}]"))) for t in tables}
    conn.close()
    return out


ISSUE3_COLUMNS = {
    "papers": {"id", "pmid", "doi", "pmcid", "title", "abstract", "journal", "journal_iso", "year", "pub_date",
               "volume", "issue", "pages", "language", "source", "is_seed", "hop", "citation_count_kb",
               "reference_count_kb", "pagerank", "component", "community", "resolved", "authors_display",
               "first_author", "mesh_major", "publication_types", "keywords", "concepts"},
    "authors": {"id", "name"}, "paper_authors": {"paper_id", "author_id", "position"}, "journals": {"id", "title"},
    "citations": {"citing_id", "cited_id", "raw", "source", "resolved"},
    "mesh_descriptors": {"ui", "name"}, "paper_mesh": {"paper_id", "descriptor_ui", "major", "qualifiers"},
    "keywords": {"paper_id", "keyword"}, "publication_types": {"paper_id", "name"},
    "concepts": {"id", "label", "description", "entry", "paper_count", "first_year", "last_year"},
    "paper_concepts": {"paper_id", "concept_id", "evidence", "score", "evidence_list"},
    "concept_edges": {"concept_a", "concept_b", "papers", "strength"},
    "concept_citations": {"concept_a", "concept_b", "citations"},
    "paper_similarity": {"paper_a", "paper_b", "cocitations", "coupling"},
    "kb_meta": {"key", "value"},
}


def test_schema_has_the_issue_names(db):
    for table, columns in ISSUE3_COLUMNS.items():
        assert table in db.table_names(), table
        assert columns <= set(db[table].columns_dict), (table, columns - set(db[table].columns_dict))
    assert {"citation_edges", "concept_edge_labels"} <= set(db.view_names())
    assert db["papers"].detect_fts() == "papers_fts"


def test_foreign_keys_declared_and_hold(db):
    fks = {(fk.column, fk.other_table) for fk in db["citations"].foreign_keys}
    assert fks == {("citing_id", "papers"), ("cited_id", "papers")}
    assert {fk.other_table for fk in db["paper_concepts"].foreign_keys} == {"papers", "concepts"}
    assert {fk.other_table for fk in db["paper_mesh"].foreign_keys} == {"papers", "mesh_descriptors"}
    assert list(db.execute("PRAGMA foreign_key_check").fetchall()) == []
    indexed = {tuple(i.columns) for t in ("citations", "paper_concepts", "papers") for i in db[t].indexes}
    assert {("cited_id",), ("concept_id",), ("year",), ("pagerank",)} <= indexed
    assert db["citations"].pks == ["citing_id", "cited_id"]          # WITHOUT ROWID: the key indexes citing_id
    plan = " ".join(r[3] for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM citations WHERE citing_id = 'pmid:1'").fetchall())
    assert "USING PRIMARY KEY" in plan


def test_doi_key_merges_into_pmid_and_pubmed_fields_win(db):
    ids = [r["id"] for r in db.query("SELECT id FROM papers ORDER BY id")]
    assert not any(i.startswith("doi:") for i in ids)
    p4 = db["papers"].get("pmid:4")
    assert p4["title"] == "Diffusion-weighted imaging of the bone marrow"   # PubMed record beats the curated one
    assert p4["doi"] == "10.1000/d4"
    assert db["papers"].get("pmid:1")["is_seed"] == 1                      # seed given as doi: key, remapped
    assert ("pmid:1", "pmid:4") in {(r["citing_id"], r["cited_id"]) for r in db["citations"].rows}


def test_deleted_paper_and_its_edges_dropped(db):
    assert not list(db.query("SELECT id FROM papers WHERE id = 'pmid:6'"))
    assert not list(db.query("SELECT * FROM citations WHERE 'pmid:6' IN (citing_id, cited_id)"))


def test_unresolved_reference_becomes_one_stub(db):
    key = stub_key(UNINDEXED)
    assert key == stub_key("1. " + UNINDEXED.upper())          # numbering and case do not change the key
    stub = db["papers"].get(key)
    assert stub["resolved"] == 0
    # what the reference text gives is parsed into the stub's fields
    assert (stub["title"], stub["first_author"], stub["year"], stub["journal"], stub["volume"], stub["pages"]) == (
        "Unindexed report on marrow signal", "Smith J", 1999, "Proc Fixture Soc", "1", "1-2")
    assert stub["label"] == "Smith 1999" and stub["journal_id"] is None
    citers = sorted(r["citing_id"] for r in db.query("SELECT citing_id FROM citations WHERE cited_id = ?", [key]))
    assert citers == ["pmid:1", "pmid:2"]
    assert {r["resolved"] for r in db.query("SELECT resolved FROM citations WHERE cited_id = ?", [key])} == {0}


def test_citation_sources_deduplicated(db):
    row = db["citations"].get(("pmid:1", "pmid:2"))
    assert row["source"] == "pubmed-reflist"
    assert json.loads(row["sources"]) == ["elink:pubmed_pubmed_refs", "pubmed-reflist"]
    assert row["raw"].startswith("Two B. Hodgkin")
    assert db["citations"].count == 10


def test_paper_columns(db):
    p1 = db["papers"].get("pmid:1")
    assert p1["authors_display"] == "Kato M, Koh K, Kikuchi A, et al."
    assert p1["first_author"] == "Kato M" and p1["author_count"] == 4
    assert json.loads(p1["mesh_major"]) == ["Leukemia, Myeloid, Acute"]
    assert json.loads(p1["keywords"]) == ["bone marrow"]
    assert json.loads(p1["publication_types"]) == ["Journal Article"]
    assert json.loads(p1["concepts"]) == ["MRI", "Bone marrow", "Leukemia"]
    assert p1["pubmed_url"] == "https://pubmed.ncbi.nlm.nih.gov/1/" and p1["doi_url"] == "https://doi.org/10.1000/seed1"
    assert p1["journal_id"] == "issn:1234-5678"
    assert db["paper_mesh"].get(("pmid:1", "D008279"))["qualifiers"] == '["diagnostic imaging"]'
    assert db["papers"].get("pmid:5")["authors_display"] == "Fixture Study Group"
    assert db["authors"].get("kato m")["paper_count"] == 1
    assert db["journals"].get("issn:1234-5678")["paper_count"] == 7


def test_fts_over_title_abstract_mesh_keywords(built, tmp_path):
    shutil.copy(built[0], tmp_path / "kb.db")
    db = sqlite_utils.Database(tmp_path / "kb.db")

    def search(q):
        return sorted(r["id"] for r in db["papers"].search(q, columns=["id"]))
    assert search("neuroblastoma") == ["pmid:2", "pmid:3"]          # title, abstract and MeSH
    # the lexicon's synonyms of the concepts a paper carries are indexed: pmid:5 is about ALL (leukemia)
    assert search("leukaemia") == ["pmid:1", "pmid:5"]
    assert search("kato") == ["pmid:1"]                             # authors are indexed
    assert search('"Magnetic Resonance Imaging"') == ["pmid:1", "pmid:4"]    # MeSH; pmid:4 carries the MRI concept
    assert search("mesh_text:" + '"Magnetic Resonance Imaging"') == ["pmid:1"]
    with db.conn:
        db.execute("UPDATE papers SET title = 'zanzibar study' WHERE id = 'pmid:7'")   # triggers keep it in sync
    assert search("zanzibar") == ["pmid:7"]


def test_meta_has_inputs_not_clock(db, built):
    meta = {r["key"]: r["value"] for r in db["kb_meta"].rows}
    files = json.loads(meta["built_from"])
    assert [f["file"] for f in files] == ["01-papers.jsonl", "02-more.jsonl"]
    assert all(len(f["sha256"]) == 64 for f in files)
    assert len(meta["lexicon_sha256"]) == 64
    assert json.loads(meta["counts"])["papers"] == 8
    assert not any("time" in k or "date" in k for k in meta)


def test_two_builds_same_content_and_rebuild_idempotent(tmp_path, built):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    build(record_files(FIXTURE), a)
    build(record_files(FIXTURE), b)
    assert dump(a) == dump(b) == dump(built[0])
    build(record_files(FIXTURE), a)                     # rebuild over an existing database
    assert dump(a) == dump(b)
    # beside each database, the state file of incremental builds (kb/incremental.py); no temporary files left
    assert sorted(os.listdir(tmp_path)) == [".a.db.state", ".b.db.state", "a.db", "b.db"]


def test_failed_build_leaves_old_database(tmp_path, built):
    target = tmp_path / "kb.db"
    shutil.copy(built[0], target)
    before = dump(target)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "paper", "id": "pmid:9", "title": "ok"}\n{not json\n')
    with pytest.raises(ParseError, match="bad.jsonl:2"):
        build(record_files(FIXTURE) + [bad], target)
    lexicon = tmp_path / "lexicon.yml"
    lexicon.write_text("concepts:\n  - id: x\n    label: X\n    patterns: ['(unclosed']\n")
    with pytest.raises(KbError, match="lexicon.yml:4"):
        build(record_files(FIXTURE), target, lexicon_path=lexicon)
    assert dump(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "kb.db", "lexicon.yml"]


def test_failure_after_writing_started_cleans_up(tmp_path, built, monkeypatch):
    import kb.graph

    target = tmp_path / "kb.db"
    shutil.copy(built[0], target)
    before = dump(target)

    def boom(db, **kw):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(kb.graph, "store_measures", boom)
    with pytest.raises(RuntimeError):
        build(record_files(FIXTURE), target)
    assert dump(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["kb.db"]


def test_cli_build_and_errors(tmp_path):
    runner = CliRunner()
    db = tmp_path / "out.db"
    result = runner.invoke(cli, ["build", "--data", str(FIXTURE), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "8 papers" in result.output
    assert sqlite_utils.Database(db)["papers"].count == 8
    result = runner.invoke(cli, ["build", "--data", str(tmp_path / "missing"), "--db", str(db)])
    assert result.exit_code != 0 and "not found" in result.output and "Traceback" not in result.output
    # a citation record of the wrong shape (an object where a key belongs): one line, the database kept
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURE, bad)
    write_records(bad / "records" / "zz-citation.jsonl", [{"type": "citation", "citing": "pmid:1", "cited": {"pmid": "2"}}])
    result = runner.invoke(cli, ["build", "--data", str(bad), "--db", str(db)])
    assert result.exit_code != 0 and result.exception.__class__ is SystemExit
    assert result.output.strip().endswith("a citation record whose cited is not a string: {'pmid': '2'}")
    assert sqlite_utils.Database(db)["papers"].count == 8


def test_cli_build_default_dataset_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["build", "--db", "kb.db"])
    assert result.exit_code == 0, result.output
    assert "embedded default dataset" in result.output
    assert sqlite_utils.Database(tmp_path / "kb.db")["papers"].count >= 6
    (tmp_path / "kb-data" / "records").mkdir(parents=True)
    shutil.copy(FIXTURE / "records" / "01-papers.jsonl", tmp_path / "kb-data" / "records")
    result = CliRunner().invoke(cli, ["build", "--db", "kb.db"])
    assert result.exit_code == 0, result.output
    assert "kb-data/records" in result.output


def test_json_columns_are_the_text_json_dumps_writes():
    """_jsonl (orjson) writes exactly what json.dumps(sort_keys, compact, ensure_ascii=False) writes."""
    from kb.store import _jsonl
    values = [["a\"b", "back\\slash", "\n\t\r\b\f\x00\x1f\x7f", "\u2028", "é中😀", "</script>"],
              {"b": 1, "a": [{"z": None, "y": True}]}, [], {}, {1: "non-str key"}, ["\ud800"], [2 ** 70]]
    for value in values:
        assert _jsonl(value) == json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _schema_and_fts(path):
    """The schema text and the full-text index's own tables, row by row."""
    conn = sqlite3.connect(path)
    out = {"schema": sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))}
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'papers_fts_%'"):
        out[name] = conn.execute(f"SELECT * FROM [{name}] ORDER BY 1, 2").fetchall()
    out["match"] = conn.execute("SELECT rowid FROM papers_fts WHERE papers_fts MATCH 'marrow' ORDER BY rowid").fetchall()
    conn.close()
    return out


def test_large_build_helpers_give_the_same_database(tmp_path, monkeypatch):
    # above PARALLEL_MIN_EDGES the graph measures and the full-text index are made in other processes:
    # forced here on a small KB, the database is the same as the one-process build's, index bytes included
    import kb.store
    from largekb import write_generated

    data = write_generated(tmp_path / "records", seed=5, n_resolved=160, n_stubs=1200)
    alone, helped = tmp_path / "alone.db", tmp_path / "helped.db"
    build(record_files(data), alone)
    monkeypatch.setattr(kb.store, "PARALLEL_MIN_EDGES", 0)
    build(record_files(data), helped)
    assert dump(helped) == dump(alone)
    assert _schema_and_fts(helped) == _schema_and_fts(alone)
    assert _schema_and_fts(alone)["match"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".alone.db.state", ".helped.db.state", "alone.db",
                                                          "helped.db", "records"]


def test_text_matches_from_the_helper_process_give_the_same_database(tmp_path, monkeypatch):
    # above MATCH_HELPER_BYTES the keyword/title/abstract side of concept matching runs in a process reading the
    # same files; papers merged from several records or re-keyed by the merge are matched by the build itself
    import kb.store

    records = [
        {"type": "paper", "pmid": "1", "title": "Leukemia in children", "provenance": {"source": "pubmed"}},
        {"type": "paper", "pmid": "1", "title": "A title without a concept", "keywords": ["bone marrow"],
         "provenance": {"source": "crossref"}},                       # merged: both records' concepts
        {"type": "paper", "pmid": "2", "doi": "10.5/x", "title": "Imaging of the spine"},
        {"type": "paper", "id": "doi:10.5/x", "abstract": "Marrow signal on MRI.", "title": "Spine imaging"},
        {"type": "paper", "id": "doi:10.6/ABC", "title": "Neuroblastoma relapse"},           # re-keyed: doi:10.6/abc
        {"type": "paper", "pmid": "3", "title": "Hodgkin lymphoma", "abstract": "Bone marrow MRI.",
         "keywords": [{"text": "leukemia", "major": True}], "mesh": [{"ui": "D007938", "name": "Leukemia"}]},
        {"type": "paper", "pmid": "4", "title": "Nothing to find here"},
        {"type": "citation", "citing": "pmid:3", "cited": "pmid:1"},
    ]
    data = tmp_path / "records"
    data.mkdir()
    write_records(data / "a.jsonl", records)
    alone, helped = tmp_path / "alone.db", tmp_path / "helped.db"
    build(record_files(data), alone)
    seen = []
    result = kb.store._TextMatcher.result
    monkeypatch.setattr(kb.store._TextMatcher, "result", lambda self: seen.append(result(self)) or seen[-1])
    monkeypatch.setattr(kb.store, "MATCH_HELPER_BYTES", 0)
    build(record_files(data), helped)
    assert seen and seen[0] and "pmid:3" in seen[0]                  # the helper did match
    assert dump(helped) == dump(alone)
    concepts = dict(sqlite3.connect(alone).execute(
        "SELECT paper_id, group_concat(concept_id) FROM (SELECT * FROM paper_concepts ORDER BY 1, 2) GROUP BY 1"))
    assert concepts["pmid:1"] == "bone-marrow,leukemia" and concepts["doi:10.6/abc"] == "neuroblastoma"


def test_failed_large_build_leaves_no_helper_files(tmp_path, built, monkeypatch):
    # a failure while the helper processes work (text matches, graph measures, full-text index): they are waited
    # for or stopped and their files removed; the old database stays
    import kb.store

    target = tmp_path / "kb.db"
    shutil.copy(built[0], target)
    before = dump(target)
    monkeypatch.setattr(kb.store, "PARALLEL_MIN_EDGES", 0)
    monkeypatch.setattr(kb.store, "MATCH_HELPER_BYTES", 0)
    matchers, closed = [], []
    start, close = kb.store._TextMatcher.__init__, kb.store._TextMatcher.close
    monkeypatch.setattr(kb.store._TextMatcher, "__init__", lambda self, *a: matchers.append(self) or start(self, *a))
    monkeypatch.setattr(kb.store._TextMatcher, "close", lambda self: closed.append(self) or close(self))

    def boom(self, conn, fts=None):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(kb.store._Rows, "flush", boom)
    with pytest.raises(RuntimeError):
        build(record_files(FIXTURE), target)
    assert dump(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["kb.db"]
    # a bad record while the text matcher reads the same files: the build says so and the matcher is ended
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURE, bad)
    with open(sorted(bad.glob("records/*.jsonl"))[-1], "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(ParseError, match="not a JSON record"):
        build(record_files(bad), target)
    assert len(matchers) == 2 and matchers[1] in closed and not any(m.process.is_alive() for m in matchers)
    assert dump(target) == before


def _varied_records(n):
    words = "marrow leukemia imaging children lymphoma relapse cohort biopsy signal therapy".split()
    return [{"type": "paper", "pmid": str(1000 + i), "title": " ".join(words[(i * k) % 10] for k in range(1, 9)),
             "abstract": " ".join(words[(i + k * k) % 10] + str(k % (i + 2)) for k in range(60)), "year": 1990 + i % 30,
             "mesh": [{"name": words[i % 10].title(), "ui": f"D{i % 97:06d}", "major": i % 2 == 0}]}
            for i in range(n)]


@pytest.mark.parametrize("codec", ["lz4", "zstd+dictionary"])
def test_packed_record_round_trips(codec):
    from kb.store import _Codec, _Packed, _record

    trained = _Codec.trained([_Packed.pickled(r) for r in _varied_records(1000)])
    used = trained if codec == "zstd+dictionary" else _Packed.__init__.__defaults__[0]
    assert used.name == codec
    rec = {"type": "paper", "pmid": "1", "doi": "10.1/x", "title": "T", "mesh": [{"name": "Leukemia", "ui": "D1"}],
           "references": [("Ref 1", "2", None)], "provenance": {"source": "pubmed"}, "year": 2001}
    packed = _Packed(dict(rec, id="old"), used)
    assert packed.get("doi") == "10.1/x" and packed.get("title") == "T" and packed.get("absent", 0) == 0
    assert packed.get("pmcid", 0) == 0 and packed.get("id") == "old"   # absent beside; in the pickled part
    packed["id"] = "pmid:1"                           # the merge's marks, in slots
    packed["_sources"] = ["pubmed"]
    assert packed.get("id") == "pmid:1"
    assert packed.pop("provenance") == {"source": "pubmed"} and packed.pop("provenance", 0) == 0
    assert packed.pop("year") == 2001                 # a field inside the pickled part
    packed["kind"] = "journal-article"                # and one put there
    assert _record(packed) == {**{k: v for k, v in rec.items() if k not in ("provenance", "year")}, "id": "pmid:1",
                               "_sources": ["pubmed"], "kind": "journal-article"}
    assert _record(rec) is rec


@pytest.mark.parametrize("concepts,seeds", [(None, ()), ("auto", ("10.1000/seed1", "pmid:5"))])
def test_packed_records_build_the_same_database(tmp_path, monkeypatch, concepts, seeds):
    # large builds keep their records pickled while they read (kb.store.PACK_BYTES): forced here, the
    # database is the one the dicts give, merged records, DOI-keyed records, stubs, auto concepts and seeds included
    import kb.store

    plain, packed = tmp_path / "plain.db", tmp_path / "packed.db"
    build(record_files(FIXTURE), plain, lexicon_path=concepts, seeds=seeds)
    monkeypatch.setattr(kb.store, "PACK_BYTES", 0)
    seen = []
    real = kb.store._Packed.__init__
    monkeypatch.setattr(kb.store._Packed, "__init__",
                        lambda self, record, codec=kb.store._LZ4: seen.append(codec.name) or real(self, record, codec))
    build(record_files(FIXTURE), packed, lexicon_path=concepts, seeds=seeds)
    assert seen
    assert dump(packed) == dump(plain)


def test_packed_records_with_a_trained_codec_build_the_same_database(tmp_path, monkeypatch):
    """A large build trains zstd on its first records and packs them all with it (forced here: 1,000 records)."""
    import kb.store

    path = tmp_path / "records" / "papers.jsonl"
    write_records(path, _varied_records(1200))
    plain, packed = tmp_path / "plain.db", tmp_path / "packed.db"
    build([path], plain)
    monkeypatch.setattr(kb.store, "PACK_BYTES", 0)
    seen = []
    real = kb.store._Packed.__init__
    monkeypatch.setattr(kb.store._Packed, "__init__",
                        lambda self, record, codec=kb.store._LZ4: seen.append(codec.name) or real(self, record, codec))
    build([path], packed)
    assert seen == ["zstd+dictionary"] * 1200
    assert dump(packed) == dump(plain)


def test_a_read_with_a_helper_process_builds_the_same_database(tmp_path, monkeypatch):
    """A large build reads every other file in a helper process once its codec is trained, and takes the files'
    records in file order: the same database as one process reading the dicts, where order decides (a paper in
    two files, the first non-empty field winning; an edge from two files, the first reference text winning; MeSH
    names; deletions; seeds)."""
    import kb.store

    records = _varied_records(1000)
    for i, r in enumerate(records):
        r["provenance"] = {"source": "pubmed" if i % 3 else "europepmc", "request": f"batch {i % 4}"}
        r["references"] = [{"citation": f"Ref {i} to {i // 2}", "pmid": str(1000 + i // 2)},
                           {"citation": f"Free text {i % 7}"}]
    files = [records[k * 200:(k + 1) * 200] for k in range(5)]
    files[1].append({"type": "paper", "pmid": "5999", "title": None, "year": 2001,
                     "provenance": {"source": "crossref"}})
    files[3].append({"type": "paper", "pmid": "5999", "title": "Known later", "year": 1990})
    files[4].append({"type": "paper", "pmid": "5999", "title": "Known last", "abstract": "Only here"})
    files[2].append({"type": "citation", "citing": "pmid:1010", "cited_pmid": "1500", "source": "europepmc",
                     "raw": "First text"})
    files[4].append({"type": "citation", "citing": "pmid:1010", "cited_pmid": "1500", "source": "europepmc",
                     "raw": "Later text"})
    files[2].append({"type": "mesh", "ui": "D000007", "name": "First name", "tree_numbers": ["C15.378"]})
    files[4].append({"type": "mesh", "ui": "D000007", "name": "Later name", "tree_numbers": ["C20.683"]})
    files[3].append({"type": "deleted", "pmid": "1004"})
    files[4].append({"type": "seed", "id": "pmid:1003"})
    paths = []
    for k, rows in enumerate(files):
        paths.append(tmp_path / "records" / f"papers-{k}.jsonl")
        write_records(paths[-1], rows)
    plain, helped = tmp_path / "plain.db", tmp_path / "helped.db"
    build(paths, plain)
    monkeypatch.setattr(kb.store, "PACK_BYTES", 0)
    monkeypatch.setattr(kb.store._Codec, "TRAIN_RECORDS", 100)      # trained within the first file
    absorbed = []
    real = kb.store._Reader.absorb
    monkeypatch.setattr(kb.store._Reader, "absorb", lambda self, part: absorbed.append(1) or real(self, part))
    build(paths, helped)
    assert len(absorbed) == 2                                         # files 2 and 4 came from the helper
    assert dump(helped) == dump(plain)
    conn = sqlite3.connect(helped)
    assert conn.execute("select title, year, abstract from papers where id = 'pmid:5999'").fetchone() == \
        ("Known later", 2001, "Only here")
    assert conn.execute("select raw from citations where citing_id = 'pmid:1010' and cited_id = 'pmid:1500'"
                        ).fetchone() == ("First text",)


def _four_packed_files(tmp_path, monkeypatch) -> list:
    """Four record files of 150 papers each, built packed with a codec trained within the first file: the helper
    process reads file 2 (every other file from the third on)."""
    import kb.store

    records = _varied_records(600)
    paths = []
    for k in range(4):
        paths.append(tmp_path / "records" / f"papers-{k}.jsonl")
        write_records(paths[-1], records[k * 150:(k + 1) * 150])
    monkeypatch.setattr(kb.store, "PACK_BYTES", 0)
    monkeypatch.setattr(kb.store._Codec, "TRAIN_RECORDS", 100)
    return paths


def test_a_bad_line_in_a_file_the_helper_reads_is_the_same_one_line_error(tmp_path, monkeypatch):
    paths = _four_packed_files(tmp_path, monkeypatch)
    with paths[2].open("a") as fh:                      # file 2 is read by the helper (trained in file 0)
        fh.write('{"type": "paper", "pmid": \n')
    with pytest.raises(ParseError, match=r"papers-2\.jsonl:151: not a JSON record"):
        build(paths, tmp_path / "kb.db")
    assert not (tmp_path / "kb.db").exists()


def _dying_reader(path, index, dictionary):
    """A record-reading helper process killed mid-file (as by the kernel when memory runs out)."""
    os._exit(9)


def test_a_read_helper_that_dies_is_a_one_line_error(tmp_path, monkeypatch):
    import kb.store

    paths = _four_packed_files(tmp_path, monkeypatch)
    monkeypatch.setattr(kb.store, "_read_packed", _dying_reader)     # spawned: found by its module and name
    with pytest.raises(KbError, match=r"papers-2\.jsonl: the helper process ended without a word"):
        build(paths, tmp_path / "kb.db")
    assert not (tmp_path / "kb.db").exists()


def test_a_failed_helper_process_is_one_line(tmp_path, monkeypatch):
    """When the process making the full-text index fails, the build stops with its reason in one line, removes its
    files and keeps the old database."""
    import kb.store

    target = tmp_path / "kb.db"
    build(record_files(FIXTURE), target)
    before = dump(target)
    monkeypatch.setattr(kb.store, "PARALLEL_MIN_EDGES", 0)
    real = kb.store._FtsWorker.__init__
    monkeypatch.setattr(kb.store._FtsWorker, "__init__",
                        lambda self, path: real(self, path.parent / "no such folder" / path.name))
    with pytest.raises(KbError) as failed:
        build(record_files(FIXTURE), target)
    assert str(failed.value).startswith("full-text index: OperationalError: unable to open database file")
    assert "\n" not in str(failed.value)
    assert dump(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kb.db.state", "kb.db"]
