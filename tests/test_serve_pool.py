"""`kb serve --processes N` (kb/publish/serve_pool.py): several Datasette processes over one immutable database."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serving import kb_serve
from test_load import generate_records

from kb.records import write_records

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_kb(tmp_path_factory):
    from kb.store import build

    tmp = tmp_path_factory.mktemp("pool")
    write_records(tmp / "records" / "papers.jsonl", generate_records(300))
    build([tmp / "records" / "papers.jsonl"], tmp / "kb.db")
    return tmp / "kb.db"


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_two_processes_serve_concurrent_clients(small_kb):
    paths = ["/kb/papers", "/kb/papers.json?_search=marrow", "/kb/papers/pmid~3A1000007", "/-/kb/citations.json",
             "/-/kb/concepts.json", "/-/kb/timeline.json", "/kb/citations.json?_size=5"]
    with kb_serve(small_kb, "--processes", "2", timeout=120) as (_, port):
        results, lock = [], threading.Lock()

        def client(k):
            for i in range(10):
                status, body = _get(port, paths[(k + i) % len(paths)])
                with lock:
                    results.append((status, len(body)))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(results) == 60
        assert all(status == 200 and size > 0 for status, size in results), results
        # read-only like a single process
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/kb/papers", body=b"x=1")
        assert conn.getresponse().status == 405
        conn.close()
    # kb_serve has stopped the server: nothing listens on the port any more (the workers went with it)
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.monotonic() < deadline, "a worker process outlived kb serve"
        time.sleep(0.2)


def test_processes_must_be_positive(small_kb):
    proc = subprocess.run([sys.executable, "-m", "kb.cli", "serve", "--db", str(small_kb), "--processes", "0"],
                          capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--processes" in proc.stderr
