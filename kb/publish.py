"""Publish the knowledge base: Datasette 0.65 on the SQLite file, read-only, with metadata.yml and kb's plugin."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import click
import yaml

from .errors import KbError
from .paths import metadata_file

# The database name metadata.yml is written for; another file name is mapped onto it.
METADATA_DATABASE = "kb"

# Datasette settings for a class browsing a read-only knowledge base: bounded queries; facets of a filtered
# table get Datasette's usual 200 ms (those of the whole table are computed once, see kb.plugin); no facet
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


def _register_plugin() -> None:
    """Load kb's plugin even when the `datasette` entry point is not installed (e.g. running from a checkout)."""
    from datasette.plugins import pm

    from . import plugin

    if not pm.is_registered(plugin) and pm.get_plugin("kb.plugin") is None:
        pm.register(plugin, name="kb.plugin")


def make_datasette(db_path: str | Path, *, metadata: dict | None = None, settings: dict | None = None,
                   immutable: bool = True):
    """A Datasette instance serving `db_path` read-only with kb's metadata and plugin (call invoke_startup next)."""
    from datasette.app import Datasette

    db_path = Path(db_path)
    if not db_path.is_file():
        raise KbError(f"database not found: {db_path} (run `kb build` first)")
    _register_plugin()
    if metadata is None:
        metadata = load_metadata(db_path.stem)
    combined = dict(SETTINGS)
    combined.update(settings or {})
    if immutable:
        ds = Datasette(immutables=[str(db_path)], metadata=metadata, settings=combined, cors=False)
    else:
        ds = Datasette([str(db_path)], metadata=metadata, settings=combined, cors=False)
    ds._kb_read_only = True  # kb's plugin answers 405 to any POST/PUT/PATCH/DELETE
    return ds


async def warm_up(ds) -> list[tuple[str, int]]:
    """Compute once what every visitor would otherwise wait for: the unfiltered papers facets, the concept
    graph and the timeline (kb's plugin keeps them for the life of the process, the database being immutable)."""
    name = next(n for n, db in ds.databases.items() if n != "_internal" and not db.is_memory)
    statuses = []
    for path in (f"/{name}/papers.json?_size=0", "/-/kb/concepts.json", "/-/kb/timeline.json"):
        response = await ds.client.get(path)
        statuses.append((path, response.status_code))
    return statuses


def _check_port(host: str, port: int) -> None:
    """Fail with one line, before building anything, when the address cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise KbError(f"cannot serve on host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise KbError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another port with --port") from None


def _stale(db_path: Path, data_dir) -> str | None:
    """Why an existing database should be rebuilt before serving: its data directory (given, or ./kb-data)
    has record files newer than it, e.g. after a `kb fetch`. The embedded default never triggers this,
    so a database made elsewhere is not replaced by it."""
    from .paths import default_dataset
    from .records import record_files
    from .store import records_source

    source, _ = records_source(data_dir)
    if source.resolve() == default_dataset().resolve():
        return None
    newest = max((f.stat().st_mtime_ns for f in record_files(source)), default=0)
    if newest > db_path.stat().st_mtime_ns:
        return f"The records in {source} changed since {db_path} was built: rebuilding it first."
    return None


def serve_command(data_dir, db_path, host: str = "127.0.0.1", port: int = 8001, rebuild: bool = False) -> None:
    """Build the knowledge base when it is missing (or with --rebuild), then serve it with Datasette."""
    import uvicorn

    from .store import build_command

    db_path = Path(db_path)
    _check_port(host, port)
    if not db_path.exists():
        click.echo(f"{db_path} does not exist yet: building it first.", err=True)
        rebuild = True
    elif not rebuild and (reason := _stale(db_path, data_dir)):
        click.echo(reason, err=True)
        rebuild = True
    if rebuild:
        build_command(data_dir=data_dir, db_path=db_path, lexicon=None)
    ds = make_datasette(db_path)
    asyncio.run(ds.invoke_startup())
    asyncio.run(warm_up(ds))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"Serving {db_path} read-only at http://{shown}:{port}/  (Ctrl-C to stop)", err=True)
    click.echo(f"  graphs: http://{shown}:{port}/-/kb/citations  http://{shown}:{port}/-/kb/concepts"
               f"  http://{shown}:{port}/-/kb/timeline", err=True)
    uvicorn.run(ds.app(), host=host, port=port, log_level="warning", lifespan="on", workers=1)
