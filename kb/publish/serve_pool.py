"""`kb serve --processes N`: N Datasette processes over the same immutable database file.

One Python process answers requests on one core (the GIL serialises page rendering and JSON; SQLite
releases it only while a query runs): under 20 concurrent clients a single `kb serve` keeps one core busy
and the requests queue. kb serve can run several server processes instead. Each worker builds its own
Datasette, computes the unfiltered facets, the concept graph, the timeline and the citation graph's default
view, and only then listens, on its own socket bound to the same port with SO_REUSEPORT: the kernel spreads
new connections over the workers that are ready. (A single shared listening socket, as uvicorn's own
`--workers` uses, lets one process accept a whole burst of keep-alive connections: measured, 20 clients kept
one of two workers busy and the other idle.) The database is opened immutable (read-only, no locking) and
memory-mapped by every worker, so they share the operating system's page cache and need no coordination.
The parent process waits; Ctrl-C or SIGTERM stops every worker, and if a worker dies the others are stopped
too, with a one-line error. Where SO_REUSEPORT does not exist, uvicorn's process manager is used.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from ..errors import KbError

ENV_DB = "KB_SERVE_DB"
ENV_CACHE = "KB_SERVE_CACHE_MB"


def _warm(ds) -> None:
    """Startup hooks and warm-up in a thread of their own: the factory below is called while uvicorn's event
    loop is already running, where asyncio.run() is not allowed."""
    from .serve import warm_up

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
    from .serve import make_datasette

    db = os.environ.get(ENV_DB)
    if not db:
        raise KbError(f"{ENV_DB} is not set: start the workers with `kb serve --processes N`")
    ds = make_datasette(Path(db), cache_mb=int(os.environ.get(ENV_CACHE) or 0))
    _warm(ds)
    return ds.app()


def _worker(db: str, host: str, port: int, cache_mb: int = 0) -> None:
    """One server process: warm up, then listen on its own SO_REUSEPORT socket and serve until told to stop."""
    import socket

    import uvicorn

    from .serve import make_datasette, warm_up

    ds = make_datasette(Path(db), cache_mb=cache_mb)
    asyncio.run(ds.invoke_startup())
    asyncio.run(warm_up(ds))
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    server = uvicorn.Server(uvicorn.Config(ds.app(), log_level="warning", lifespan="on"))
    server.run(sockets=[sock])


def serve_processes(db_path: str | os.PathLike, host: str, port: int, processes: int, cache_mb: int = 0) -> None:
    """Serve `db_path` (already built and checked) with `processes` worker processes; blocks until Ctrl-C."""
    import multiprocessing
    import signal
    import socket
    from multiprocessing.connection import wait

    db = str(Path(db_path).resolve())
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not Linux/BSD/macOS
        import uvicorn

        os.environ[ENV_DB] = db
        os.environ[ENV_CACHE] = str(cache_mb)
        uvicorn.run("kb.publish.serve_pool:app", factory=True, host=host, port=port, workers=processes,
                    log_level="warning", lifespan="on")
        return
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(db, host, port, cache_mb), name=f"kb-serve-{k}") for k in range(processes)]
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for w in workers:
            w.start()
        while not stopping:
            done = wait([w.sentinel for w in workers], timeout=0.5)
            if done and not stopping:
                dead = next(w for w in workers if w.sentinel in done)
                dead.join()
                raise KbError(f"a server process exited (code {dead.exitcode}); stopped the others")
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
                w.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
