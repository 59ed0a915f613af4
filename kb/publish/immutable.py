"""Schema introspection answered from memory for immutable databases (what `datasette inspect` does for counts),
and their full-text searches planned for their size (kb/publish/ftsplan.py).

Datasette 0.65 asks SQLite about the schema on every request: a papers table page makes ~27 trips to the query
thread pool, of which ~4 read data; the rest are the same questions each time (the table's columns, primary keys,
foreign keys and definition, whether it exists, every database's schema_version for the _internal catalogue, the
table's name for the permission check). Under 20 concurrent clients each trip waits in the queue behind the others'
queries, so a page waits ~27 times. An immutable database's schema cannot change while it is served: kb asks once
per question and keeps the answer for the life of the process.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time

# Database methods whose answer depends only on the schema (and their arguments).
SCHEMA_METHODS = ("table_exists", "table_names", "view_names", "hidden_table_names", "table_columns",
                  "table_column_details", "primary_keys", "fts_table", "label_column_for_table",
                  "foreign_keys_for_table", "get_all_foreign_keys", "get_table_definition", "get_view_definition",
                  "attached_databases")
# Statements Datasette itself runs per request whose answer is fixed by the schema.
SCHEMA_SQL = ("PRAGMA schema_version",
              "select name from sqlite_master where type in ('table', 'view') and name = ? collate nocase")


def _copy(value):
    """A copy its caller may change: a list (of names, column tuples or flat foreign-key dicts) one level down,
    anything else but a str, number or None deep-copied."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if type(value) is list:
        return [dict(v) if type(v) is dict else copy.deepcopy(v) if isinstance(v, (list, set)) else v for v in value]
    return copy.deepcopy(value)


def _memoized(method, is_async=True):
    answers: dict = {}

    if not is_async:
        @functools.wraps(method)
        def answer_now(*args):
            if args not in answers:
                answers[args] = method(*args)
            return _copy(answers[args])

        return answer_now

    @functools.wraps(method)
    async def answer(*args):
        if args not in answers:
            answers[args] = await method(*args)
        return _copy(answers[args])  # callers may change what they get (lists of columns, dicts)

    return answer


def _memoized_execute(db):
    from .ftsplan import Planner

    answers: dict = {}
    planner = Planner(lambda sql, params=None: type(db).execute(db, sql, params))

    async def execute(sql, params=None, *args, **kwargs):
        run = type(db).execute  # looked up per call: a wrapper put on the class later still sees every query
        if "match" in sql:                       # a search: planned for its size (kb/publish/ftsplan.py)
            sql = await planner.rewrite(sql, params)
        if sql in SCHEMA_SQL and not args and not kwargs:
            key = (sql, tuple(params) if isinstance(params, (list, tuple)) else params)
            if key not in answers:
                answers[key] = await run(db, sql, params)
            return answers[key]  # Results: read-only to its callers (rows, first())
        return await run(db, sql, params, *args, **kwargs)

    return execute


# SQLite instructions between two checks of a query's time limit. Datasette 0.65 checks every 1,000 (~0.1 ms): each
# check is a Python callback that must take the GIL, so while the event loop renders a page, a query in a worker
# thread stops at its next check until the GIL is handed over (up to the 5 ms switch interval). Under 20 clients a
# search's facet query (millions of instructions) then crawls for seconds and holds a query thread meanwhile.
TIME_CHECK_INSTRUCTIONS = 50_000  # ~4 ms of SQLite work between checks; limits are 200 ms and up


@contextlib.contextmanager
def sqlite_timelimit(conn, ms):
    """Datasette's sqlite_timelimit with fewer checks (the same limits: a query past its deadline is stopped)."""
    deadline = time.perf_counter() + ms / 1000
    n = 1 if ms <= 20 else TIME_CHECK_INSTRUCTIONS  # Datasette's own tests use tiny limits, checked every step

    def handler():
        if time.perf_counter() >= deadline:
            return 1

    conn.set_progress_handler(handler, n)
    try:
        yield
    finally:
        conn.set_progress_handler(None, n)


def install(datasette) -> bool:
    """Answer the schema questions of every immutable database from memory, and refresh Datasette's _internal
    catalogue once only, when every database is immutable. Returns whether anything was installed."""
    databases = [db for name, db in datasette.databases.items() if name != "_internal"]
    if not databases or any(db.is_mutable for db in databases):
        return False
    from datasette import database as datasette_database

    datasette_database.sqlite_timelimit = sqlite_timelimit  # process-wide: Database.execute looks it up per query
    for db in databases:
        if getattr(db, "_kb_schema_memo", False):
            continue
        for name in SCHEMA_METHODS:
            if hasattr(db, name):
                setattr(db, name, _memoized(getattr(db, name)))
        db.execute = _memoized_execute(db)
        db._kb_schema_memo = True
    if hasattr(datasette, "_table_permission_allows") and not getattr(datasette, "_kb_schema_refreshed", None):
        # Datasette 0.65 deep-copies and merges the whole metadata on every table permission check (~1 ms); kb's
        # metadata is fixed when the server starts
        datasette._table_permission_allows = _memoized(datasette._table_permission_allows, is_async=False)
    if not getattr(datasette, "_kb_schema_refreshed", None):
        refresh = datasette.refresh_schemas
        done = []

        async def refresh_once():
            if not done:
                await refresh()
                done.append(True)

        datasette.refresh_schemas = refresh_once
        datasette._kb_schema_refreshed = True
    return True
