"""kb/planstats.py: the planner's statistics written from counts are those ANALYZE writes."""

import random
import shutil
import sqlite3

import pytest

from kb import planstats
from kb.records import record_files
from kb.store import build
from largekb import write_generated


@pytest.mark.parametrize("seed", range(4))
def test_average_is_analyzes(seed):
    # columns of every shape: few values, all distinct, nearly all distinct (the "2 means 1" rule), NULLs
    rnd = random.Random(seed)
    conn = sqlite3.connect(":memory:")
    for trial in range(60):
        n = rnd.randint(1, 2000)
        k = rnd.choice([1, 2, 3, 50, n, max(1, n - 1), max(1, n * 10 // 11), max(1, n // 2), max(1, n // 2 + 1)])
        values = [rnd.randrange(k) for _ in range(n)]
        if trial % 5 == 0:
            values[0] = None
        conn.execute("DROP TABLE IF EXISTS t")
        conn.execute("CREATE TABLE t (a, b)")
        conn.execute("CREATE INDEX i ON t (a)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(v, i) for i, v in enumerate(values)])
        conn.execute("ANALYZE t")
        stat = conn.execute("SELECT stat FROM sqlite_stat1 WHERE idx = 'i'").fetchone()[0]
        assert stat == f"{n} {planstats.average(n, len(set(values)))}", (n, len(set(values)))


def test_full_build_statistics_are_analyzes(tmp_path):
    # a full build writes the counted tables' statistics itself: the same rows as ANALYZE of the whole database
    data = write_generated(tmp_path / "records", seed=9, n_resolved=120, n_stubs=600)
    db, again = tmp_path / "kb.db", tmp_path / "again.db"
    build(record_files(data), db)
    shutil.copyfile(db, again)
    conn = sqlite3.connect(again)
    conn.execute("ANALYZE")
    analyzed = sorted(conn.execute("SELECT tbl, idx, stat FROM sqlite_stat1"))
    built = sorted(sqlite3.connect(db).execute("SELECT tbl, idx, stat FROM sqlite_stat1"))
    assert built == analyzed
    # every counted table has rows in the generated KB, so that each of its counts is checked
    assert {*planstats.TABLES, "paper_similarity"} <= {t for t, _i, _s in built}


def test_counts_out_of_range_fall_back_to_analyze(tmp_path):
    # counts no table can have (a bug) do not reach sqlite_stat1: the table is analyzed instead
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE keywords (paper_id TEXT, keyword TEXT, major INTEGER, owner TEXT, "
                 "PRIMARY KEY (paper_id, keyword))")
    conn.execute("CREATE INDEX idx_keywords_keyword ON keywords (keyword)")
    conn.executemany("INSERT INTO keywords VALUES (?, ?, 0, NULL)", [("p1", "a"), ("p1", "b"), ("p2", "a")])
    conn.execute("ANALYZE")
    analyzed = sorted(conn.execute("SELECT * FROM sqlite_stat1"))
    conn.execute("DELETE FROM sqlite_stat1")
    planstats.write(conn, {"keywords": {"rows": 3, "paper_id": 2, "keyword": 2}})
    assert sorted(conn.execute("SELECT * FROM sqlite_stat1")) == analyzed        # right counts: the same rows
    conn.execute("DELETE FROM sqlite_stat1")
    planstats.write(conn, {"keywords": {"rows": 3, "paper_id": 0, "keyword": 7}})
    assert sorted(conn.execute("SELECT * FROM sqlite_stat1")) == analyzed        # wrong ones: ANALYZE's
