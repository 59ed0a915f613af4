"""The planner's statistics (sqlite_stat1) of the large tables an incremental build only adds rows to, kept as
counts in the build state so that an increment writes them itself instead of running ANALYZE over every row
again (116k papers: 0.5 s of a 4.4 s increment), and those of paper_similarity, counted from its pairs (0.1 s).

ANALYZE's row for an index is "rows avg1 avg2 ...": avgJ is the number of rows per distinct value of the index's
first J columns, rounded up (1 where 2 would overstate it by more than 10%); NULLs count as one value. The counts
kept per table are its rows and the distinct values of each index prefix but the unique primary key's whole.
tests/test_planstats.py compares the rows written here with ANALYZE's, tests/test_incremental.py an increment's
with a full build's."""

from __future__ import annotations

import json

# the tables whose statistics are counted: the big ones, which an increment only appends to
TABLES = ("citations", "citation_sources", "paper_authors", "paper_mesh", "keywords", "publication_types")


def indexes(table: str) -> list[tuple[str, list[str]]]:
    """(sqlite_stat1 idx name, key columns) of every index of `table`: its primary key's, then store.INDEXES'."""
    from .store import INDEXES, SCHEMA, WITHOUT_ROWID

    pk = SCHEMA[table][1]
    pk = [pk] if isinstance(pk, str) else list(pk)
    out = [(table if table in WITHOUT_ROWID else f"sqlite_autoindex_{table}_1", pk)]
    out += [(f"idx_{t}_{'_'.join(columns)}", list(columns)) for t, columns in INDEXES if t == table]
    return out


def average(rows: int, distinct: int) -> int:
    """Rows per distinct value as ANALYZE writes it."""
    value = (rows + distinct - 1) // distinct
    return 1 if value == 2 and rows * 10 <= distinct * 11 else value


def stat_rows(counts: dict) -> list[tuple[str, str, str]]:
    """sqlite_stat1 rows (tbl, idx, stat) of the tables counted: {table: {"rows": n, "col1,col2": distinct}}. An
    empty table has none, as after ANALYZE. Raises ValueError on counts no table can have."""
    out = []
    for table, c in counts.items():
        n = c["rows"]
        if not n:
            continue
        pk = indexes(table)[0][1]
        for name, columns in indexes(table):
            distinct = [n if columns[:j] == pk else c[",".join(columns[:j])] for j in range(1, len(columns) + 1)]
            if not all(1 <= d <= n for d in distinct):
                raise ValueError(f"{table}: {distinct} distinct values in {n} rows")
            out.append((table, name, " ".join(map(str, [n, *(average(n, d) for d in distinct)]))))
    return out


def write(conn, counts: dict) -> None:
    """Replace the statistics of the tables counted by those of `counts` (inside the caller's transaction, if
    any), as ANALYZE of those tables would. ANALYZE itself where the counts cannot stand for it: a SQLite that
    also keeps sqlite_stat4 samples, or counts out of range (a bug: the statistics stay right all the same)."""
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat4'").fetchone():
            raise ValueError("sqlite_stat4")
        rows = stat_rows(counts)
    except ValueError:
        for table in counts:
            conn.execute(f"ANALYZE [{table}]")
        return
    conn.execute(f"DELETE FROM sqlite_stat1 WHERE tbl IN ({', '.join('?' * len(counts))})", list(counts))
    conn.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", rows)


def similarity_counts(pair_keys, n_papers: int) -> dict:
    """paper_similarity's counts, from its pairs (sorted keys a * n_papers + b over the papers' indexes): rewritten
    by every build, it needs none kept."""
    return {"paper_similarity": {"rows": len(pair_keys), "paper_a": distinct_sorted(pair_keys // n_papers),
                                 "paper_b": distinct_ints(pair_keys % n_papers, n_papers)}}


def distinct_sorted(values) -> int:
    """Distinct values of a sorted integer array (numpy)."""
    import numpy as np

    return int(np.count_nonzero(values[1:] != values[:-1])) + 1 if len(values) else 0


def distinct_ints(values, size: int) -> int:
    """Distinct values of an integer array (numpy) with values in range(size)."""
    import numpy as np

    return int(np.count_nonzero(np.bincount(values, minlength=size))) if len(values) else 0


def absent(conn, table: str, column: str, values) -> int:
    """How many of the distinct `values` (strings) no row of `table` has in `column` (one indexed lookup each)."""
    if not values:
        return 0
    return conn.execute(f"SELECT count(*) FROM json_each(?) AS j WHERE NOT EXISTS "
                        f"(SELECT 1 FROM [{table}] WHERE [{column}] = j.value)",
                        (json.dumps(sorted(values)),)).fetchone()[0]


def _citation_counts(src, dst, n_papers: int, source_rows: int, sources: int) -> dict:
    """citations and citation_sources from the edges (src sorted; indexes of the papers): every citation has a
    row per source, at least one."""
    citing, cited = distinct_sorted(src), distinct_ints(dst, n_papers)
    return {"citations": {"rows": len(src), "citing_id": citing, "cited_id": cited},
            "citation_sources": {"rows": source_rows, "citing_id": citing, "citing_id,cited_id": len(src),
                                 "cited_id": cited, "source": sources}}


# the per-paper tables: (table, its second indexed column, the store._Rows aggregate whose rows count that column's
# distinct values, or None: an author or MeSH descriptor has its aggregate row for as long as a paper has it; the
# keywords and publication types are counted in _Rows.values)
PER_PAPER = (("paper_authors", "author_id", "authors"), ("paper_mesh", "descriptor_ui", "descriptors"),
             ("keywords", "keyword", None), ("publication_types", "name", None))


def full_counts(rows, src, dst, n_papers: int, source_rows: int, sources: set) -> dict:
    """The counts of a full build: `rows` (a store._Rows) has tallied every per-paper row; `sources` are the
    citation sources named, `source_rows` the citation_sources rows."""
    out = _citation_counts(src, dst, n_papers, source_rows, len(sources))
    for table, column, aggregate in PER_PAPER:
        distinct = getattr(rows, aggregate) if aggregate else rows.values[table]
        out[table] = {**rows.counted[table], column: len(distinct)}
    return out


def increment_counts(old: dict, conn, rows, src, dst, n_papers: int, source_rows: list) -> dict:
    """The counts after an increment: `old` those of the database before it, read through `conn` (to tell which
    new keywords, publication types and citation sources it lacks); `rows` has tallied the new per-paper rows
    (of new papers only: a work known from references alone has none), `source_rows` are the new citation_sources
    rows; src and dst: every edge after it."""
    out = _citation_counts(src, dst, n_papers, old["citation_sources"]["rows"] + len(source_rows),
                           old["citation_sources"]["source"]
                           + absent(conn, "citation_sources", "source", {r[2] for r in source_rows}))
    for table, column, aggregate in PER_PAPER:
        new = rows.counted[table]
        distinct = len(getattr(rows, aggregate)) if aggregate else \
            old[table][column] + absent(conn, table, column, rows.values[table])
        out[table] = {"rows": old[table]["rows"] + new["rows"], "paper_id": old[table]["paper_id"] + new["paper_id"],
                      column: distinct}
    return out
