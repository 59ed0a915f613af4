"""`kb serve --processes N`: N Datasette processes over the same immutable database file.

One Python process answers requests on one core (the GIL serialises page rendering and JSON; SQLite
releases it only while a query runs). Under many concurrent clients the requests queue behind each other,
so kb serve can run several server processes instead: uvicorn's own process manager binds the socket once,
starts N workers that accept on it (restarting any that dies), and stops them all on Ctrl-C. The database is
opened immutable (read-only, no locking) by every worker, so they share the operating system's page cache
and need no coordination. Each worker builds its own Datasette, then computes the unfiltered facets, the
concept graph and the timeline before it accepts connections (as a single `kb serve` does).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from .errors import KbError

ENV_DB = "KB_SERVE_DB"


def _warm(ds) -> None:
    """Startup hooks and warm-up in a thread of their own: the factory below is called while uvicorn's event
    loop is already running, where asyncio.run() is not allowed."""
    from .publish import warm_up

    failure: list[BaseException] = []

    def run():
        try:
            asyncio.run(ds.invoke_startup())
            asyncio.run(warm_up(ds))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="kb-warm-up")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def app():
    """ASGI application factory for one worker process (uvicorn --factory): the database comes from KB_SERVE_DB."""
    from .publish import make_datasette

    db = os.environ.get(ENV_DB)
    if not db:
        raise KbError(f"{ENV_DB} is not set: start the workers with `kb serve --processes N`")
    ds = make_datasette(Path(db))
    _warm(ds)
    return ds.app()


def serve_processes(db_path: str | os.PathLike, host: str, port: int, processes: int) -> None:
    """Serve `db_path` (already built and checked) with `processes` worker processes; blocks until Ctrl-C."""
    import uvicorn

    os.environ[ENV_DB] = str(Path(db_path).resolve())
    uvicorn.run("kb.serve_pool:app", factory=True, host=host, port=port, workers=processes,
                log_level="warning", lifespan="on")
