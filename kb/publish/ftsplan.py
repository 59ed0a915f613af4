"""Full-text searches of a large immutable knowledge base planned for how many papers they match.

Datasette filters a table by a search as `rowid in (select rowid from papers_fts where papers_fts match ...)`, and
SQLite then reads every matching paper, twice: to count them, and to sort them for the first page. For a common
word in 1M papers (370,000 matches) that is 0.8 s for the count and 0.6-1.0 s for the page. For a database that
cannot change and whose full-text table indexes the table's own rows (an FTS5 table with `content=` the table):

* the count of a search with no other filter is the full-text index's own count (27 ms for those 370,000);
* a page sorted by a column walks that column's index and keeps the matching rows (`+rowid in (...)` tells
  SQLite not to start from the matches) when the matches are at least WALK_SHARE of the table: the walk stops
  after about page size / share rows (51 ms instead of 960). Rarer words keep SQLite's own plan. Rows of equal
  sort value may then come in another order (SQL leaves it open; Datasette's next pages order by the key too).
* when the matches are so many that listing them all costs more than asking the full-text index about each row
  the walk reaches (matches x matches >= PROBE_COST x page size x rows), the walk asks it row by row
  (`exists (... match ... and rowid = table.rowid)`): 5 ms instead of 50 for those 370,000 at 1M papers.
"""

from __future__ import annotations

import re
from collections import OrderedDict

# A search filter exactly as Datasette 0.65 writes it (datasette/filters.py), on a table and its FTS table.
SEARCH = re.compile(r"(?<![+\w])rowid in \(select rowid from (\w+) where \1 match (escape_fts\(:search\)|:search)\)")
WALK_SHARE = 0.01
PROBE_COST = 200    # one full-text lookup of a row's id costs about as much as listing this many matches (measured
                    # at 1M papers: 10-30 us against 0.14 us)
MATCH_COUNTS_KEPT = 10_000   # searches whose match count is remembered (a server lives long; searches vary)


class Planner:
    """Rewrites the SQL of one immutable database's search pages; `run(sql, params)` (the database's execute)
    answers the questions it asks (the FTS table's definition, indexes, counts), each once."""

    def __init__(self, run):
        self.run = run
        self.content: dict[str, str | None] = {}    # FTS table -> the table whose rows it indexes (or None)
        self.rows: dict[str, int] = {}              # table -> row count
        self.indexed: dict[str, set] = {}           # table -> columns that lead an index
        self.matches: OrderedDict = OrderedDict()  # (FTS table, match clause, search) -> matching rows, bounded

    async def _content_table(self, fts: str) -> str | None:
        if fts not in self.content:
            found = await self.run("select sql from sqlite_master where type = 'table' and name = ?", [fts])
            sql = (found.rows[0][0] if found.rows else "") or ""
            m = re.search(r"\bUSING\s+FTS5\s*\(.*\bcontent\s*=\s*['\"\[]?(\w+)['\"\]]?", sql, re.I | re.S)
            self.content[fts] = m.group(1) if m else None
        return self.content[fts]

    async def _leads_index(self, table: str, column: str) -> bool:
        if table not in self.indexed:
            found = await self.run("select ii.name from pragma_index_list(?) as il, pragma_index_info(il.name) as ii "
                                   "where ii.seqno = 0", [table])
            self.indexed[table] = {r[0] for r in found.rows}
        return column in self.indexed[table]

    async def _count(self, fts: str, clause: str, params) -> int:
        key = (fts, clause, params.get("search"))
        if key not in self.matches:
            found = await self.run(f"select count(*) from {fts} where {fts} match {clause}", {"search": key[2]})
            self.matches[key] = found.rows[0][0]
            while len(self.matches) > MATCH_COUNTS_KEPT:
                self.matches.popitem(last=False)
        return self.matches[key]

    async def rewrite(self, sql: str, params) -> str:
        """`sql` as it should run: the same rows, in a plan for the search's size."""
        if "match" not in sql or not isinstance(params, dict) or "search" not in params:
            return sql
        m = SEARCH.search(sql)
        if not m:
            return sql
        fts, clause = m.group(1), m.group(2)
        head = sql[:m.start()].strip().lower()
        table = re.fullmatch(r"select .* from (\w+) where", head, re.S)
        if not table or await self._content_table(fts) != table.group(1):
            return sql
        table = table.group(1)
        if head == f"select count(*) from {table} where" and not sql[m.end():].strip():
            return f"select count(*) from {fts} where {fts} match {clause}"
        order = re.search(r"\border by (\w+)( desc)?\s+limit\b", sql[m.end():], re.I)
        if order and await self._leads_index(table, order.group(1)):
            if table not in self.rows:
                self.rows[table] = (await self.run(f"select count(*) from {table}")).rows[0][0]
            matches, rows = await self._count(fts, clause, params), self.rows[table]
            if matches >= WALK_SHARE * rows:
                limit = re.match(r"\s*(\d+)\b", sql[m.end() + order.end():])
                if limit and matches * matches >= PROBE_COST * int(limit.group(1)) * rows:
                    return (sql[:m.start()] + f"exists (select 1 from {fts} where {fts} match {clause} "
                            f"and {fts}.rowid = {table}.rowid)" + sql[m.end():])
                return sql[:m.start()] + "+" + sql[m.start():]
        return sql
