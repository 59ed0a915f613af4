"""Every facet of a table page counted from one query, instead of one query per facet.

Datasette counts each facet with its own query over the filtered rows. When the filter is a full-text search,
each of those queries runs the search again and looks up every matching paper again: for a word found in
20,000 of 116,000 papers that is ~70 ms per facet, so ~0.6 s for the papers table's eight facets. Here one query
reads the facet columns of the matching rows once and the counts are made in Python, with the same results
as the SQL of kb's facet classes (kb.publish.plugin.CachedColumnFacet and ListFacet): the same values, counts, order
(count descending, then value in SQLite's order) and cut-off. Any value that SQL and Python might see differently
(a BLOB, mixed types in one column, a list column that is not a JSON list of strings) leaves that facet to its
own SQL query, so the results never differ.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Callable

from datasette.database import QueryInterrupted
from datasette.facets import load_facet_configs
from datasette.utils import escape_sqlite

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads


def column_counts(values) -> list[tuple] | None:
    """(value, count) pairs as `select col, count(*) ... where col is not null group by col order by count(*)
    desc, col` gives them, or None when the values are not all of one plain type (int, float or str)."""
    counts = Counter(v for v in values if v is not None)
    kinds = {type(v) for v in counts}
    if len(kinds) > 1 or not kinds <= {int, float, str}:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def list_counts(values) -> list[tuple] | None:
    """(item, count) pairs as kb's list facet SQL (json_each over JSON lists, valid ones only) gives them, or None
    when a value is anything but NULL or a JSON list of strings."""
    counts: Counter = Counter()
    for v, n in Counter(v for v in values if v is not None).items():  # many rows hold the same list
        if type(v) is not str:
            return None
        try:
            items = _loads(v)
        except ValueError:
            return None  # json_valid() might judge it otherwise: let SQL decide
        if type(items) is not list:
            return None
        for item in items:
            if type(item) is not str:
                return None
            counts[item] += n
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


async def count_all(facet, classes: list, time_limit_ms: int, cached: Callable[[str], bool],
                    store: Callable[[str, list], None]) -> bool:
    """Count, with one query, every facet of `classes` (kb's facet classes: a `type`, a `kind` of "column" or
    "list", and facet_sql(col, limit)) that the request asks for and `cached` does not already hold; each result
    goes to store(facet SQL, rows). Returns False, having stored nothing, when fewer than two facets need
    counting or the query ran out of time (then each facet counts itself, with its own time limit; the pass is not
    tried again for the same page)."""
    configs = load_facet_configs(facet.request, facet.metadata)
    size = facet.get_facet_size() + 1
    todo = []
    for cls in classes:
        for config in configs.get(cls.type) or []:
            column = config["config"].get("column") or config["config"]["simple"]
            sql = cls.facet_sql(facet, escape_sqlite(column), size)
            if not cached(sql):
                todo.append((cls.kind, column, sql))
    if len(todo) < 2:
        return False
    # one attempt per page: every facet of the page asks, and a pass that ran out of time for the first would run
    # out again for each of the others (8 facets: 8 x 1.6 s at 1M papers for a word in a third of them)
    tried = facet.request.scope.setdefault("kb.facetpass", set())
    attempt = (facet.database, facet.sql, json.dumps(facet.params, sort_keys=True, default=str))
    if attempt in tried:
        return False
    tried.add(attempt)
    columns = list(dict.fromkeys(column for _, column, _ in todo))
    select = ", ".join(escape_sqlite(c) for c in columns)
    try:
        result = await facet.ds.execute(facet.database, f"select {select} from ({facet.sql})", facet.params,
                                        truncate=False, custom_time_limit=time_limit_ms * len(todo))
    except QueryInterrupted:
        return False
    rows = result.rows
    for kind, column, sql in todo:
        i = columns.index(column)
        values = (r[i] for r in rows)
        counts = column_counts(values) if kind == "column" else list_counts(values)
        if counts is not None:
            store(sql, counts[:size])
    return True
