"""Every facet of a table page counted from one query, instead of one query per facet.

Datasette counts each facet with its own query over the filtered rows. When the filter is a full-text search,
each of those queries runs the search again and looks up every matching paper again: for a word found in
20,000 of 116,000 papers that is ~70 ms per facet, so ~0.6 s for the papers table's eight facets. Here one query
reads the facet columns of the matching rows once and the counts are made in Python, with the same results
as the SQL of kb's facet classes (kb.publish.plugin.CachedColumnFacet and ListFacet): the same values, counts, order
(count descending, then value in SQLite's order) and cut-off. Any value that SQL and Python might see differently
(a BLOB, mixed types in one column, a list column that is not a JSON list of strings) leaves that facet to its
own SQL query, so the results never differ.

A pass (or a facet) that runs out of time leaves the page with its facets listed as timed out, as Datasette does, and
is finished in the background (count_later) into the facet cache: the first visit of a very common word at 1M papers
stays fast and a reload has the counts (the page is marked incomplete, so no cache keeps it). A background pass is
counted by SQLite, not Python (counts_over_pass): the matching rows' facet columns go to a temporary table and each
facet's own SQL runs over it, so the counting thread holds no lock the server's threads need (Python's) while
visitors are being served, and its results are by construction those of the facet SQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter, OrderedDict
from types import SimpleNamespace
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


PASS_SHARE = 0.5        # the pass's time limit, in facet time limits (facet_time_limit_ms): one query for all facets
LATER_LIMIT_MS = 60_000  # a count that ran out of time is finished in the background within this
LATER_MAX = 1            # background counts at once per process (on one thread of kb's own, see execute_long)
_later: dict = {}        # what is being counted in the background -> its task
_seconds_per_row: dict = {}  # database -> what a pass took per matching row, lately (decides whether to try one)


def _learn(database: str, seconds: float, rows, at_least: bool = False):
    """Remember a pass's time per row; `at_least`: it ran out of time (`seconds`) before the end of its `rows`."""
    if not isinstance(rows, int) or rows < 1000:         # small passes are mostly fixed costs
        return
    rate, old = seconds / rows, _seconds_per_row.get(database)
    if at_least:
        _seconds_per_row[database] = max(rate, old or 0)
    else:
        _seconds_per_row[database] = rate if old is None else 0.7 * old + 0.3 * rate


def _doomed(facet, limit_ms: float, attempt=None) -> bool:
    """Whether a pass over the page's rows (Datasette gives their count) would run out of `limit_ms`, judging by the
    passes seen so far (and calibrate()), or ran out of time for this very `attempt` before: then the page does not
    wait for it and it goes to the background at once."""
    if attempt is not None and attempt in _out_of_time:
        return True
    rate = _seconds_per_row.get(facet.database)
    return bool(rate and isinstance(facet.row_count, int) and facet.row_count * rate * 1000 > limit_ms)


OUT_OF_TIME_KEPT = 1000             # passes remembered as out of time (a visitor's reload does not wait again)
_out_of_time: "OrderedDict[tuple, bool]" = OrderedDict()


def _ran_out(attempt):
    _out_of_time[attempt] = True
    _out_of_time.move_to_end(attempt)
    while len(_out_of_time) > OUT_OF_TIME_KEPT:
        _out_of_time.popitem(last=False)


CALIBRATION_ROWS = 20_000   # rows of the pass calibrate() times (~0.1 s at 1M papers)
CALIBRATION_MIN = 50_000    # tables smaller than this are not calibrated: their passes mostly finish in time


async def calibrate(ds, database: str, table: str = "papers") -> float | None:
    """Time a pass over rows spread evenly through a large immutable table, as a search's matches are, and learn its
    time per row (before any visitor's pass has shown it): the first searches of a common word are then sent to the
    background at once instead of each waiting for a pass that cannot finish. Returns the seconds per row learned."""
    db = ds.get_database(database)
    if db.is_mutable:
        return None
    columns = []
    for facet in ds.metadata("facets", database=database, table=table) or []:
        for column in facet.values() if isinstance(facet, dict) else [facet]:
            if isinstance(column, str) and column not in columns:
                columns.append(column)
    total = (await db.execute(f"select max(rowid) from {escape_sqlite(table)}")).rows[0][0] or 0
    if not columns or total < CALIBRATION_MIN:
        return None
    step = max(2, total // CALIBRATION_ROWS)
    sql = (f"with recursive picked(r) as "
           f"(select 1 union all select r + {step} from picked where r + {step} <= {total}) "
           f"select {', '.join(escape_sqlite(c) for c in columns)} from {escape_sqlite(table)} "
           f"where rowid in (select r from picked)")
    t = time.perf_counter()
    try:
        result = await ds.execute(database, sql, truncate=False)
    except QueryInterrupted:
        return None
    _learn(database, time.perf_counter() - t, len(result.rows))
    return _seconds_per_row.get(database)


async def execute_long(ds, database: str, sql: str, params, limit_ms: int, background: bool = False) -> list[tuple]:
    """The rows of `sql`, stopped after `limit_ms` (QueryInterrupted) even when that is longer than the server's
    sql_time_limit_ms, which caps every Datasette execute(): for counts made once for every visitor (the whole table's
    facets at start, background counts), never for a query a visitor wrote. With `background`, on kb's own
    low-priority thread and connection: visitors' queries keep Datasette's threads and most of the CPU."""
    try:
        return await run_long(ds, database, fetch(sql, params), limit_ms, background)
    except QueryInterrupted as exc:
        raise QueryInterrupted(exc.e, sql, params) from None


def fetch(sql: str, params) -> Callable:
    """work for run_long: the rows of `sql` as tuples."""
    return lambda conn: [tuple(r) for r in conn.execute(sql, params or {}).fetchall()]


async def run_long(ds, database: str, work: Callable, limit_ms: int, background: bool = False):
    """work(connection) on one of the database's connections, stopped after `limit_ms` (QueryInterrupted); see
    execute_long."""
    from datasette import database as datasette_database

    db = ds.get_database(database)

    def run(conn):
        with datasette_database.sqlite_timelimit(conn, limit_ms):
            try:
                return work(conn)
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise QueryInterrupted(exc, "", None) from None
                raise

    if not background or ds.executor is None:
        return await db.execute_fn(run)

    def in_background_thread():
        conn = _background_connections.get(db)
        if conn is None:
            conn = _background_connections[db] = db.connect()
            ds._prepare_connection(conn, database)
        return run(conn)

    global _background_pool
    if _background_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _background_pool = ThreadPoolExecutor(1, thread_name_prefix="kb-facets", initializer=_low_priority)
    return await asyncio.get_running_loop().run_in_executor(_background_pool, in_background_thread)


PASS_TABLE = "kb_pass"   # the temporary table of counts_over_pass (per connection: only the background one uses it)


def counts_over_pass(sql: str, params, queries: list[tuple]) -> Callable:
    """work for run_long: the facet columns of every matching row (`sql`) put in a temporary table, then each facet
    query of `queries` ((key, SQL over the table)) run over it; returns [(key, rows)]. Every count is SQLite's: a
    background count of hundreds of thousands of rows never builds them as Python objects (each made while holding
    the lock every server thread needs to run Python). The table goes where SQLite puts temporary tables by default:
    a file beyond a small cache (as fast here as memory for 370,851 rows, and a very common word of a far larger
    knowledge base does not hold its rows in the server's memory)."""

    def work(conn):
        conn.execute(f"drop table if exists temp.{PASS_TABLE}")
        try:
            conn.execute(f"create temp table {PASS_TABLE} as {sql}", params or {})
            return [(key, [tuple(r) for r in conn.execute(query).fetchall()]) for key, query in queries]
        finally:
            conn.set_progress_handler(None, 0)     # out of time: the drop must not be interrupted as well
            conn.execute(f"drop table if exists temp.{PASS_TABLE}")

    return work


_background_pool = None
_background_connections = weakref.WeakKeyDictionary()  # Datasette database -> connection of the background thread


def _low_priority():
    """The background thread yields the CPU to the server's other threads (Linux: a thread's own nice value)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # pragma: no cover - not Linux, or not allowed: the counts still finish
        pass


def count_later(key, ds, database: str, work: Callable, then: Callable, request=None) -> bool:
    """Finish a count that ran out of time in the background: work(connection) on kb's own thread (run_long,
    LATER_LIMIT_MS), then then(its result) on the server's loop, which stores the counts; once per `key` at a time and
    at most LATER_MAX at once; False when it was not started. A page whose facets ran out of time lists them as timed
    out, and a later visit finds them in the facet cache. With the `request` of that page, the count starts once the
    page is sent (kb.publish.respcache), not while it is still being made."""
    if key in _later:
        _counting(request)
        return False
    if len(_later) >= LATER_MAX:
        return False
    _counting(request)

    async def task():
        try:
            then(await run_long(ds, database, work, LATER_LIMIT_MS, background=True))
        except Exception:  # noqa: BLE001 - out of time again or the server closing: the next visit tries again
            pass
        finally:
            _later.pop(key, None)

    loop = asyncio.get_running_loop()
    after = request.scope.get("kb.response", {}).get("after") if request is not None else None
    if after is None:
        _later[key] = loop.create_task(task())
    else:
        started = loop.create_future()
        after.append(lambda: started.set_result(None) if not started.done() else None)
        _later[key] = loop.create_task(_after(started, task))   # taken now: no other page starts the same count
    return True


def _counting(request):
    """Tell the page (its template) that its facets are being counted in the background."""
    if request is not None:
        request.scope.get("kb.response", {})["counting"] = True


async def _after(started, task):
    await started
    await task()


# what a facet class's facet_sql reads as `self.sql` to count over counts_over_pass' table
_PASS_ROWS = SimpleNamespace(sql=f"select * from temp.{PASS_TABLE}")


def _store_counts(rows, columns, todo, store, size):
    for kind, column, sql in todo:
        i = columns.index(column)
        values = (r[i] for r in rows)
        counts = column_counts(values) if kind == "column" else list_counts(values)
        if counts is not None:
            store(sql, counts[:size])


async def count_all(facet, classes: list, time_limit_ms: int, cached: Callable[[str], bool],
                    store: Callable[[str, list], None]) -> bool:
    """Count, with one query, every facet of `classes` (kb's facet classes: a `type`, a `kind` of "column" or
    "list", and facet_sql(col, limit)) that the request asks for and `cached` does not already hold; each result
    goes to store(facet SQL, rows). Returns False, having stored nothing, when fewer than two facets need
    counting (each then counts itself). When the query runs out of time (PASS_SHARE facet time limits) it raises
    QueryInterrupted, for this facet and every other one of the page that asks (they would read the same rows), and
    the pass goes on in the background (count_later) so that the next visit of the page has every facet."""
    configs = load_facet_configs(facet.request, facet.metadata)
    size = facet.get_facet_size() + 1
    todo, over_pass = [], []
    for cls in classes:
        for config in configs.get(cls.type) or []:
            column = config["config"].get("column") or config["config"]["simple"]
            sql = cls.facet_sql(facet, escape_sqlite(column), size)
            if not cached(sql):
                todo.append((cls.kind, column, sql))
                over_pass.append((sql, cls.facet_sql(_PASS_ROWS, escape_sqlite(column), size)))
    if len(todo) < 2:
        return False
    # one attempt per page: every facet of the page asks (Datasette runs the facet classes side by side), and a pass
    # that ran out of time for the first would run out again for each of the others: they wait for its outcome
    tried = facet.request.scope.setdefault("kb.facetpass", {})
    attempt = (id(facet.ds.get_database(facet.database)), facet.database, facet.sql,
               json.dumps(facet.params, sort_keys=True, default=str))
    if attempt not in tried and attempt in _later:              # being counted in the background already
        tried[attempt] = asyncio.get_running_loop().create_future()
        tried[attempt].set_result("late")
        _counting(facet.request)
    if attempt in tried:
        outcome = await asyncio.shield(tried[attempt])
        if outcome == "late":
            raise QueryInterrupted(None, facet.sql, facet.params)
        return outcome == "counted"
    outcome = tried[attempt] = asyncio.get_running_loop().create_future()
    columns = list(dict.fromkeys(column for _, column, _ in todo))
    sql = f"select {', '.join(escape_sqlite(c) for c in columns)} from ({facet.sql})"
    ds, database, params = facet.ds, facet.database, facet.params
    try:
        if _doomed(facet, time_limit_ms * PASS_SHARE, attempt):
            raise QueryInterrupted(None, sql, params)
        t = time.perf_counter()
        result = await ds.execute(database, sql, params, truncate=False, custom_time_limit=time_limit_ms * PASS_SHARE)
        _learn(database, time.perf_counter() - t, len(result.rows))
    except QueryInterrupted:
        outcome.set_result("late")
        _learn(database, time_limit_ms * PASS_SHARE / 1000, facet.row_count, at_least=True)
        _ran_out(attempt)

        def then(counts):     # (no time per row learned: SQLite alone counts faster than a pass reads rows)
            for facet_sql, facet_rows in counts:
                store(facet_sql, facet_rows)

        count_later(attempt, ds, database, counts_over_pass(sql, params, over_pass), then, facet.request)
        raise
    except BaseException:
        outcome.set_result("failed")                     # each facet then counts itself, as Datasette would
        raise
    _store_counts(result.rows, columns, todo, store, size)
    outcome.set_result("counted")
    return True
