"""Incremental `kb build` (kb/incremental.py): adding records to a built KB gives, table by table and row by
row, the database a full build of all the records gives; anything else falls back to a full build."""

import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from kb.cli import cli
from kb.incremental import Fallback, build_incremental, state_path
from kb.records import record_files, write_records
from kb.store import build
from largekb import generate


def dump(path):
    """Every table's rows, sorted (the FTS table through its content), the planner's statistics, and some
    full-text searches."""
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
              if not r[0].startswith("sqlite_stat") and not r[0].startswith("papers_fts_")]
    out = {t: sorted(map(repr, conn.execute(f"SELECT * FROM [{t}]"))) for t in tables}
    # the planner's statistics (an incremental build analyzes most tables while the graph helpers work)
    out["sqlite_stat1"] = sorted(map(repr, conn.execute(
        "SELECT tbl, idx, stat FROM sqlite_stat1 WHERE tbl NOT LIKE 'papers_fts%'")))
    for word in ("marrow", "leukemia", "imaging", "smith"):
        out[f"match {word}"] = sorted(r[0] for r in conn.execute(
            "SELECT p.id FROM papers_fts JOIN papers p ON p.rowid = papers_fts.rowid WHERE papers_fts MATCH ?",
            (word,)))
    conn.close()
    return out


@pytest.fixture(scope="module")
def records():
    recs, _info = generate(seed=5, n_resolved=160, n_stubs=1200)
    papers = [r for r in recs if r["type"] == "paper"]
    others = [r for r in recs if r["type"] != "paper"]
    # the new papers: every 12th one (new PMIDs among old ones, cited by old citation records, citing old papers)
    new = papers[5::12]
    old = [p for p in papers if p not in new]
    return old, others, new


def write_a(folder, records):
    old, others, _new = records
    folder.mkdir()
    write_records(folder / "a-papers.jsonl", old)
    write_records(folder / "b-other.jsonl", others)
    return folder


def differences(a, b):
    da, db_ = dump(a), dump(b)
    return [t for t in sorted(set(da) | set(db_)) if da.get(t) != db_.get(t)]


def test_new_file_equals_full_build(tmp_path, records):
    data = write_a(tmp_path / "records", records)
    inc = tmp_path / "inc.db"
    build(record_files(data), inc)
    write_records(data / "c-new.jsonl", records[2])
    summary = build_incremental(record_files(data), inc)
    assert summary["incremental"] and summary["counts"]["papers"] > 0
    full = tmp_path / "full.db"
    build(record_files(data), full)
    assert differences(inc, full) == []
    # the planner's statistics the increment wrote (kb.planstats) are ANALYZE's
    shutil.copyfile(inc, tmp_path / "analyzed.db")
    analyzed = sqlite3.connect(tmp_path / "analyzed.db")
    analyzed.execute("ANALYZE")
    assert sorted(analyzed.execute("SELECT * FROM sqlite_stat1")) == \
        sorted(sqlite3.connect(inc).execute("SELECT * FROM sqlite_stat1"))
    # stubs that became papers with their own record, and new papers found by full-text search
    conn = sqlite3.connect(inc)
    new_ids = [f"pmid:{p['pmid']}" for p in records[2]]
    assert conn.execute(f"SELECT count(*) FROM papers WHERE resolved = 1 AND id IN ({','.join('?' * len(new_ids))})",
                        new_ids).fetchone()[0] == len(new_ids)
    conn.close()
    # and a second increment on top of the first (the state file was rewritten)
    more = records[2][:0] + [dict(records[2][0], pmid="99000001", id="pmid:99000001", doi=None)]
    write_records(data / "d-more.jsonl", more)
    build_incremental(record_files(data), inc)
    build(record_files(data), full)
    assert differences(inc, full) == []


@pytest.mark.parametrize("where", ["rows", "update"])
def test_interrupted_build_leaves_the_database_and_no_copy(tmp_path, records, monkeypatch, where):
    # Ctrl-C while the new rows are made (the database is being copied meanwhile) or while the copy is updated:
    # the database and its state file are as they were, the copy is gone, and a re-run completes the build
    import kb.store

    data = write_a(tmp_path / "records", records)
    db = tmp_path / "kb.db"
    build(record_files(data), db)
    before, state = db.read_bytes(), state_path(db).read_bytes()
    write_records(data / "c-new.jsonl", records[2])

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        if where == "rows":
            patch.setattr(kb.store._Rows, "add", interrupt)
        else:
            patch.setattr(kb.store, "_load_rows", interrupt)
        with pytest.raises(KeyboardInterrupt):
            build_incremental(record_files(data), db)
    assert db.read_bytes() == before and state_path(db).read_bytes() == state
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kb.db.state", "kb.db", "records"]
    assert build_incremental(record_files(data), db)["incremental"]
    full = tmp_path / "full.db"
    build(record_files(data), full)
    assert differences(db, full) == []


def test_appended_lines_equal_full_build(tmp_path, records):
    data = write_a(tmp_path / "records", records)
    inc, full = tmp_path / "inc.db", tmp_path / "full.db"
    build(record_files(data), inc)
    with open(data / "a-papers.jsonl", "a", encoding="utf-8") as fh:     # `kb import` style: lines appended
        from kb.records import dumps
        for r in records[2]:
            fh.write(dumps(r) + "\n")
        fh.write(dumps({"type": "deleted", "pmid": "98000001"}) + "\n")   # as MEDLINE update files have them
    assert build_incremental(record_files(data), inc)["counts"]["deleted"] == 1
    build(record_files(data), full)
    assert differences(inc, full) == []
    with open(data / "a-papers.jsonl", "a", encoding="utf-8") as fh:      # a deletion of a paper it has
        fh.write(dumps({"type": "deleted", "pmid": records[0][0]["pmid"]}) + "\n")
    with pytest.raises(Fallback, match="deletion"):
        build_incremental(record_files(data), inc)


def test_large_build_path_equals_full_build(tmp_path, records, monkeypatch):
    # above PARALLEL_MIN_EDGES the measures are computed beside the build (a full build: in a helper process,
    # an incremental one: in two threads, the communities in one) and the full build's full-text index and
    # paper_similarity come from files of their own: forced here on the small KB, the incremental database
    # still equals a full build's
    import kb.incremental
    import kb.store

    monkeypatch.setattr(kb.store, "PARALLEL_MIN_EDGES", 0)
    monkeypatch.setattr(kb.incremental, "UPDATE_FROM_ROWS", 0)    # the measures' UPDATE ... FROM, as at 116k
    data = write_a(tmp_path / "records", records)
    inc, full = tmp_path / "inc.db", tmp_path / "full.db"
    build(record_files(data), inc)
    write_records(data / "c-new.jsonl", records[2])
    assert build_incremental(record_files(data), inc)["incremental"]
    build(record_files(data), full)
    assert differences(inc, full) == []


def test_changed_or_removed_file_falls_back(tmp_path, records):
    data = write_a(tmp_path / "records", records)
    db = tmp_path / "kb.db"
    build(record_files(data), db)
    before = db.read_bytes()
    lines = (data / "a-papers.jsonl").read_text().splitlines(keepends=True)
    (data / "a-papers.jsonl").write_text("".join(lines[1:]))                # a record removed
    with pytest.raises(Fallback, match="changed"):
        build_incremental(record_files(data), db)
    (data / "b-other.jsonl").unlink()
    with pytest.raises(Fallback, match="removed"):
        build_incremental(record_files(data), db)
    assert db.read_bytes() == before                                        # nothing written
    # the CLI says why and builds in full: the same content as a fresh full build
    result = CliRunner().invoke(cli, ["build", "--data", str(data), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "full build" in result.output.lower() and "a-papers.jsonl" in result.output
    full = tmp_path / "full.db"
    build(record_files(data), full)
    assert differences(db, full) == []


def test_cli_incremental_by_default_and_full_option(tmp_path, records):
    data = write_a(tmp_path / "records", records)
    db = tmp_path / "kb.db"
    runner = CliRunner()
    assert runner.invoke(cli, ["build", "--data", str(data), "--db", str(db)]).exit_code == 0
    write_records(data / "c-new.jsonl", records[2])
    result = runner.invoke(cli, ["build", "--data", str(data), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "Incremental build" in result.output
    result = runner.invoke(cli, ["build", "--data", str(data), "--db", str(db), "--full"])
    assert result.exit_code == 0 and "Incremental build" not in result.output
    # a state file that does not belong to the database is not used
    assert state_path(db).exists()
    db.touch()
    with pytest.raises(Fallback, match="state"):
        build_incremental(record_files(data), db)


def test_new_record_of_a_known_paper_falls_back(tmp_path, records):
    data = write_a(tmp_path / "records", records)
    db = tmp_path / "kb.db"
    build(record_files(data), db)
    write_records(data / "c-again.jsonl", [dict(records[0][0], title="Another title", doi=None)])
    with pytest.raises(Fallback, match="has"):
        build_incremental(record_files(data), db)
    # found while the new records are read, when the copy of the database is being made: the copy is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kb.db.state", "kb.db", "records"]


def test_reference_list_and_coverage_records_of_known_papers(tmp_path, records):
    """`kb refs` style: a new file of citation records from a paper of the KB (new edges, new stubs, one more
    source of an edge the KB has) and a coverage record, added incrementally."""
    data = write_a(tmp_path / "records", records)
    inc, full = tmp_path / "inc.db", tmp_path / "full.db"
    build(record_files(data), inc)
    old = records[0]
    citing, cited = f"pmid:{old[0]['pmid']}", f"pmid:{old[1]['pmid']}"
    prov = {"source": "reflist", "request": "test"}
    new = [{"type": "citation", "citing": citing, "cited": None, "cited_pmid": None, "cited_doi": None,
            "raw": f"Zanzibar K. A work only cited here {i}. J Test. 2001;{i}:1-2.", "source": "reflist-text",
            "resolved": False, "provenance": prov} for i in range(3)]
    new.append({"type": "citation", "citing": citing, "cited": cited, "raw": "Known work. J Test. 1999;1:1.",
                "source": "zz-source", "resolved": True, "provenance": prov})
    new.append({"type": "coverage", "paper": citing, "source": "zz-source", "references": 4, "citers": None,
                "stated_references": None, "status": "ok", "message": None, "provenance": prov})
    write_records(data / "c-refs.jsonl", new)
    assert build_incremental(record_files(data), inc)["incremental"]
    build(record_files(data), full)
    assert differences(inc, full) == []
    conn = sqlite3.connect(inc)
    assert conn.execute("SELECT count(*) FROM papers WHERE title LIKE 'A work only cited here%'").fetchone()[0] == 3
    conn.close()


def test_full_records_with_ref_keys(tmp_path, records):
    """The embedded dataset has papers with their own records under "ref:" keys: they are not stubs."""
    import shutil

    from kb.paths import default_dataset

    data = tmp_path / "records"
    shutil.copytree(default_dataset() / "records", data)
    inc, full = tmp_path / "inc.db", tmp_path / "full.db"
    build(record_files(data), inc)
    write_records(data / "zz-new.jsonl", records[2])
    assert build_incremental(record_files(data), inc)["incremental"]
    build(record_files(data), full)
    assert differences(inc, full) == []


def test_interrupted_large_build_ends_its_graph_threads(tmp_path, records, monkeypatch):
    # on a large KB the graph measures run in threads started before the new records are read (numba's loops
    # loaded meanwhile): a build that fails after that leaves the database as it was and no thread behind
    import threading
    import time

    import kb.store

    monkeypatch.setattr(kb.store, "PARALLEL_MIN_EDGES", 0)
    data = write_a(tmp_path / "records", records)
    db = tmp_path / "kb.db"
    build(record_files(data), db)
    before = db.read_bytes()
    write_records(data / "c-new.jsonl", records[2])

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(kb.store._Rows, "add", interrupt)
        with pytest.raises(KeyboardInterrupt):
            build_incremental(record_files(data), db)
    assert db.read_bytes() == before

    def graph_threads():
        return [t for t in threading.enumerate() if t.name.startswith("kb-graph")]

    deadline = time.monotonic() + 60
    while graph_threads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert graph_threads() == []


def test_changed_measures_grouped_by_the_columns_that_changed():
    import numpy as np

    from kb.incremental import _changed_measures

    old_ids = ["a", "b", "c", "d"]
    old = [(1, 0, 0.5, 0, 1, 1), (0, 1, 0.25, 1, 1, 1), (0, 0, 0.25, None, 2, 2), (0, 0, 0.1, None, 3, 3)]
    ids = ["a", "b", "c", "d", "e"]            # "e" is new; "d" was rewritten by the build (a stub made real)
    new = [(1, 0, 0.4, 0, 1, 1), (0, 1, 0.25, 1, 1, 1), (0, 0, 0.2, 2, 2, 1), (1, 0, 0.1, None, 3, 3),
           (0, 1, 0.05, None, 4, 4)]
    index = {k: i for i, k in enumerate(ids)}
    old_to_new = np.array([index[k] for k in old_ids])
    groups = _changed_measures(old_ids, old, old_to_new, new, index, {"d", "e"})
    assert groups == [
        ((0, 1, 2, 4, 5), [(1, 0, 0.1, 3, 3, "d"), (0, 1, 0.05, 4, 4, "e")]),   # every column that is not null
        ((2,), [(0.4, "a")]),
        ((2, 3, 5), [(0.2, 2, 1, "c")]),
    ]


def test_flush_is_only_a_speed_up(tmp_path):
    # writing the copy to disk before the swap may be refused (a missing file, a system without fdatasync):
    # the build goes on
    from kb.incremental import _flush

    _flush(tmp_path / "missing.db")
    (tmp_path / "kb.db").write_bytes(b"x" * 4096)
    _flush(tmp_path / "kb.db")
    assert (tmp_path / "kb.db").read_bytes() == b"x" * 4096
