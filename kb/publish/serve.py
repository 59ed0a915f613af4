"""Publish the knowledge base: Datasette 0.65 on the SQLite file, read-only, with metadata.yml and kb's plugin."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import click
import yaml

from ..errors import KbError
from ..paths import metadata_file
from . import facetpass

# The database name metadata.yml is written for; another file name is mapped onto it.
METADATA_DATABASE = "kb"

# Datasette settings for a class browsing a read-only knowledge base: bounded queries; facets of a filtered
# table get Datasette's usual 200 ms (one query for all of a page's facets gets half of it, then the count goes on in
# the background: kb.publish.facetpass; those of the whole table are computed once, see kb.publish.plugin); no facet
# suggestions (each costs a query per column per page view).
SETTINGS = {
    "default_page_size": 50,
    "max_returned_rows": 1000,
    "sql_time_limit_ms": 3000,
    "facet_time_limit_ms": 200,
    "facet_suggest_time_limit_ms": 200,
    "suggest_facets": False,
    "num_sql_threads": 4,
    "default_cache_ttl": 300,
    "allow_download": True,
    "allow_csv_stream": True,
}


def load_metadata(db_name: str = METADATA_DATABASE, path: str | Path | None = None) -> dict:
    """metadata.yml as a dict, its database section renamed to `db_name` (Datasette keys it by file stem)."""
    path = Path(path) if path else metadata_file()
    if not path.is_file():
        raise KbError(f"metadata file not found: {path}")
    try:
        metadata = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise KbError(f"{path}: not valid YAML ({exc})") from None
    metadata = copy.deepcopy(metadata)
    databases = metadata.get("databases") or {}
    if db_name != METADATA_DATABASE and METADATA_DATABASE in databases:
        databases[db_name] = databases.pop(METADATA_DATABASE)
    return metadata


# What a knowledge base not built from the embedded default says about itself when its kb_meta has no
# description, and the guide to the pages that every description is followed by.
GENERIC_TITLE = "kb: a literature knowledge base"
GENERIC_DESCRIPTION = "A library of biomedical papers, the citations between them and the concepts that connect them."
GUIDE_HTML = ("<p>Browse the tables, run the ready-made <strong>queries</strong> listed on the database page, or open "
              "the citation graph, concept graph and timeline from the menu (\u2630) at the top right.</p>")


def read_kb_meta(db_path) -> dict[str, str]:
    """The kb_meta table of a built database as a dict ({} when it has none)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        return {k: v for k, v in conn.execute("SELECT key, value FROM kb_meta") if isinstance(k, str)}
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def _default_fingerprint() -> list[dict]:
    """What kb_meta.built_from says for a build of the embedded default dataset (its files and their sha256)."""
    import hashlib

    from ..paths import default_dataset
    from ..records import record_files

    try:
        files = record_files(default_dataset())
    except Exception:
        return []
    return [{"file": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files]


def built_from_default(meta: dict) -> bool:
    """Whether kb_meta says the database was built from the embedded default dataset, and from nothing else."""
    import json

    try:
        built = json.loads(meta.get("built_from") or "null")
    except ValueError:
        return False
    if not isinstance(built, list) or not built:
        return False
    fingerprint = _default_fingerprint()
    key = lambda f: (f.get("file"), f.get("sha256")) if isinstance(f, dict) else (None, None)  # noqa: E731
    return bool(fingerprint) and sorted(map(key, built)) == sorted(map(key, fingerprint))


def titled_metadata(metadata: dict, db_path) -> dict:
    """metadata.yml's text is the embedded default's (the Kato 2011 seed paper); any other knowledge base is
    titled and described by its own kb_meta "title" and "description" (written by `kb build`), or generically."""
    from html import escape

    meta = read_kb_meta(db_path)
    if built_from_default(meta):
        return metadata
    metadata = dict(metadata)
    metadata["title"] = (meta.get("title") or "").strip() or GENERIC_TITLE
    description = (meta.get("description") or "").strip() or GENERIC_DESCRIPTION
    metadata["description_html"] = f"<p>{escape(description)}</p>\n{GUIDE_HTML}"
    metadata.pop("description", None)
    metadata.pop("about_url", None)       # the default's link to the seed paper
    return metadata


def _register_plugin() -> None:
    """Load kb's plugin even when the `datasette` entry point is not installed (e.g. running from a checkout)."""
    from datasette.plugins import pm

    from . import plugin

    if not pm.is_registered(plugin) and pm.get_plugin("kb.publish.plugin") is None:
        pm.register(plugin, name="kb.publish.plugin")


def make_datasette(db_path: str | Path, *, metadata: dict | None = None, settings: dict | None = None,
                   immutable: bool = True, cache_mb: int = 0):
    """A Datasette instance serving `db_path` read-only with kb's metadata and plugin (call invoke_startup next).
    With `cache_mb` and an immutable database, repeated GETs are answered from memory (kb.publish.respcache)."""
    from datasette.app import Datasette

    db_path = Path(db_path)
    if not db_path.is_file():
        raise KbError(f"database not found: {db_path} (run `kb build` first)")
    _register_plugin()
    if metadata is None:
        metadata = titled_metadata(load_metadata(db_path.stem), db_path)
    combined = dict(SETTINGS)
    combined.update(settings or {})
    if immutable:
        ds = Datasette(immutables=[str(db_path)], metadata=metadata, settings=combined, cors=False)
    else:
        ds = Datasette([str(db_path)], metadata=metadata, settings=combined, cors=False)
    ds._kb_read_only = True  # kb's plugin answers 405 to any POST/PUT/PATCH/DELETE
    if immutable:
        from . import immutable as schema_memo

        schema_memo.install(ds)  # the schema questions Datasette asks per request, answered once (kb.publish.immutable)
        ds.jinja_env.auto_reload = False  # templates are package files: no stat() of each one per page
    if immutable and cache_mb > 0:
        from .respcache import ResponseCache

        ds._kb_response_cache = ResponseCache(cache_mb * 1024 * 1024)  # kb's asgi_wrapper hook puts it in front
    return ds


async def warm_up(ds) -> list[tuple[str, int]]:
    """Compute once what every visitor would otherwise wait for: the unfiltered papers facets, the concept
    graph, the timeline and the citation graph's default view (kb's plugin keeps them for the life of the process,
    the database being immutable)."""
    name = next(n for n, db in ds.databases.items() if n != "_internal" and not db.is_memory)
    statuses = []
    for path in (f"/{name}/papers.json?_size=0", "/-/kb/concepts.json", "/-/kb/timeline.json",
                 "/-/kb/citations.json"):  # the citation graph page's default view: seconds at 100,000 papers
        response = await ds.client.get(path)
        statuses.append((path, response.status_code))
    await facetpass.calibrate(ds, name)   # a search's facets: how long a pass takes per matching paper
    return statuses


def check_port(port) -> int:
    """The port as an int in 0-65535 (0: any free port), else one line saying what is allowed."""
    try:
        value = int(str(port).strip())
    except (TypeError, ValueError):
        raise KbError(f"invalid port {port!r}: give a number from 1 to 65535 (or 0 for any free port)") from None
    if not 0 <= value <= 65535:
        raise KbError(f"invalid port {value}: give a number from 1 to 65535 (or 0 for any free port)")
    return value


def _check_port(host: str, port: int) -> int:
    """Fail with one line, before building anything, when the address cannot be listened on; return the port
    to serve on (for port 0, a free one picked by the system)."""
    import errno
    import socket

    port = check_port(port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise KbError(f"cannot serve on host {host!r}: {reason}; give a name or address of this machine "
                      "with --host (e.g. 127.0.0.1)") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise KbError(f"cannot serve on host {host!r} ({exc.strerror}): not an address of this machine; "
                              "use --host 127.0.0.1, or 0.0.0.0 for every interface") from None
            raise KbError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another port with --port") from None
        return probe.getsockname()[1]


def _stale(db_path: Path, data_dir) -> str | None:
    """Why an existing database should be rebuilt before serving: its data directory (given, or ./kb-data)
    has record files newer than it, e.g. after a `kb fetch`. The embedded default never triggers this,
    so a database made elsewhere is not replaced by it."""
    from ..paths import default_dataset
    from ..records import record_files
    from ..store import records_source

    source, _ = records_source(data_dir)
    if source.resolve() == default_dataset().resolve():
        return None
    newest = max((f.stat().st_mtime_ns for f in record_files(source)), default=0)
    if newest > db_path.stat().st_mtime_ns:
        return f"The records in {source} changed since {db_path} was built: rebuilding it first."
    return None


def serve_command(data_dir=None, db_path=None, host: str = "127.0.0.1", port: int = 8001,
                  rebuild: bool = False, processes: int = 1, cache_mb: int = 0) -> None:
    """Serve the knowledge base with Datasette. With no database given, ./kb.db is built first when missing
    (from --data, ./kb-data or the embedded default); a database given that does not exist is an error, unless
    --rebuild asks to build it there. Paths and the address are checked before anything is built or created."""
    import uvicorn

    from ..paths import DEFAULT_DB, existing_dir, output_file
    from ..store import build_command

    if data_dir is not None:
        existing_dir(data_dir, "--data")
    if db_path is None:
        db_path = DEFAULT_DB
    else:
        db_path = Path(db_path)
        if db_path.is_dir():
            raise KbError(f"--db {db_path} is a directory; give the database file")
        if not db_path.exists():
            if not rebuild:
                raise KbError(f"database not found: {db_path} (check the path; `kb build --db {db_path}` or "
                              f"`kb serve --db {db_path} --rebuild` builds it there)")
            output_file(db_path, "--db")
    db_path = Path(db_path)
    port = _check_port(host, port)
    if not db_path.exists():
        click.echo(f"{db_path} does not exist yet: building it first.", err=True)
        rebuild = True
    elif not rebuild and (reason := _stale(db_path, data_dir)):
        click.echo(reason, err=True)
        rebuild = True
    if rebuild:
        build_command(data_dir=data_dir, db_path=db_path, lexicon=None)
    if processes > 1:  # kb/publish/serve_pool.py: each worker process builds and warms up its own Datasette
        make_datasette(db_path)  # fail here, with one line, on a bad database or metadata
    else:
        ds = make_datasette(db_path, cache_mb=cache_mb)
        asyncio.run(ds.invoke_startup())
        asyncio.run(warm_up(ds))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    click.echo(f"Serving {db_path} read-only at http://{shown}:{port}/  (Ctrl-C to stop)", err=True)
    click.echo(f"  graphs: http://{shown}:{port}/-/kb/citations  http://{shown}:{port}/-/kb/concepts"
               f"  http://{shown}:{port}/-/kb/timeline", err=True)
    if processes > 1:
        from .serve_pool import serve_processes

        click.echo(f"  {processes} server processes (each warms up before it accepts connections)", err=True)
        serve_processes(db_path, host, port, processes, cache_mb)
        return
    uvicorn.run(ds.app(), host=host, port=port, log_level="warning", lifespan="on", workers=1)
