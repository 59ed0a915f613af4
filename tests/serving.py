"""Run `kb serve` in a child process on 127.0.0.1, for the browser and load tests and the serve benchmark."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def kb_serve(db: Path, *extra: str, cwd: Path | None = None, timeout: float = 60.0):
    """`kb serve --db DB` on a free port until the block ends (DB built first when missing); yields (base URL, port).
    Fails with the server's own error output when it exits or does not answer within `timeout`."""
    port = free_port()
    cwd = Path(cwd or Path(db).parent)
    # A missing --db is an error: a missing ./kb.db is the newcomer path (no --db: built first), any other
    # missing database is built there with --rebuild.
    if Path(db).exists():
        where = ["--db", str(db)]
    elif Path(db).resolve() == (cwd / "kb.db").resolve():
        where = []
    else:
        where = ["--db", str(db), "--rebuild"]
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "serve", *where, "--host", "127.0.0.1",
                             "--port", str(port), *extra],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kb serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/-/versions.json", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kb serve did not answer on {base} within {timeout:.0f}s")
            time.sleep(0.2)
        yield base, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def started_datasette(path, **options):
    """kb's Datasette over `path` with its startup hooks run, as `kb serve` has it."""
    from kb.publish.serve import make_datasette

    datasette = make_datasette(path, **options)
    await datasette.invoke_startup()
    return datasette
