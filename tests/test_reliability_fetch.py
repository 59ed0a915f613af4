"""Issue 6 for the fetch stage: faults, SIGKILL and resume, corrupt cache, concurrent runs, secrets.

All against the fake E-utilities server over a generated citation network of 3,000 papers.
"""

import gzip
import json
import logging
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fake_eutils import FAULTS, FakeEutils, generate_network
from kb.eutils import Eutils
from kb.harvest import harvest, summary_line
from kb.paths import PROJECT_DIR

KEY = "RelIaBiLiTyKey5f3a9c0d1e"
SEEDS = ["20001500", "20002500"]
CAP = "300"  # --max-papers for the subprocess runs: depth 2 with citers, 7 requests, quick to repeat


@pytest.fixture(scope="module")
def network():
    return generate_network(3000, seed=7)


@pytest.fixture(scope="module")
def module_server(network):
    with FakeEutils(network, timeout_sleep=0.8) as srv:
        yield srv


@pytest.fixture
def server(module_server):
    """The module's server, with a clean request log and no faults."""
    srv = module_server
    srv.reset()
    srv.fault_rate, srv.retry_after, srv.fault_cycle = 0.0, "1", False
    srv.release()
    yield srv
    srv.fault_cycle = False
    srv.release()
    srv.fault_rate = 0.0
    srv.reset()


def client(server, data_dir, **kw):
    kw.setdefault("api_key", KEY)
    return Eutils(Path(data_dir) / "cache", base_url=server.base_url, backoff=0.01, timeout=0.4, **kw)


def records_text(data_dir) -> str:
    return (Path(data_dir) / "records" / "harvest.jsonl").read_text()


def without_times(text: str) -> str:
    """Records minus retrieval times: separate caches are filled at different seconds."""
    return re.sub(r'"retrieved":"[^"]*"', '"retrieved":null', text)


def request_key(r) -> str:
    return r["endpoint"] + json.dumps(sorted((k, v) for k, v in r["params"].items()
                                             if k not in ("api_key", "email", "tool")))


def successes(requests) -> Counter:
    return Counter(request_key(r) for r in requests if r["status"] == 200 and r["fault"] is None)


def files_under(data_dir) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in Path(data_dir).rglob("*") if p.is_file())


def cache_bodies(data_dir) -> dict:
    out = {}
    for p in (Path(data_dir) / "cache").rglob("*.gz"):
        out[p.name] = gzip.decompress(p.read_bytes()).split(b"\n", 1)[1]
    return out


def kb_fetch(server, data_dir, *args, api_key=KEY, what=None, **extra_env):
    """The command line and environment of a `kb fetch` subprocess (default: depth 2 with citers, capped)."""
    env = dict(os.environ, KB_EUTILS_URL=server.base_url, KB_EUTILS_BACKOFF="0.01", KB_EUTILS_TIMEOUT="0.4",
               **extra_env)
    env.pop("NCBI_API_KEY", None)
    if api_key:
        env["NCBI_API_KEY"] = api_key
    what = what or [*SEEDS[:1], "--depth", "2", "--cited-by", "--max-papers", CAP]
    cmd = [sys.executable, "-m", "kb.cli", "fetch", *what, "--data", str(data_dir), *args]
    return cmd, env


# ------------------------------------------------------------------------------------------------
# Fault injection
# ------------------------------------------------------------------------------------------------

def _clean_run(server, data_dir, seeds):
    clean = harvest(seeds, data_dir, depth=2, cited_by=True, client=client(server, data_dir))
    assert clean["retries"] == 0 and clean["papers"] > 500
    return clean


def _faulted_equals_clean(server, clean_dir, clean, data_dir, seeds, fault_seed, retry_after):
    server.reset()
    server.fault_rate = 0.2
    server.retry_after = retry_after
    server._rng = random.Random(fault_seed)
    faulty = harvest(seeds, data_dir, depth=2, cited_by=True, client=client(server, data_dir))
    server.fault_rate = 0.0
    faults = [r["fault"] for r in server.requests if r["fault"]]
    # every fault was retried, the summary line counts them, and the result is the same
    assert faulty["retries"] == len(faults)
    assert f"{len(faults)} retries" in summary_line(faulty)
    assert faulty["papers"] == clean["papers"] and faulty["citations"] == clean["citations"]
    assert without_times(records_text(data_dir)) == without_times(records_text(clean_dir))
    # within the rate limit (10/s with a key), measured at the server over the whole run
    server.assert_rate(10)
    return Counter(faults)


def test_fault_injection_harvest_equals_fault_free(server, tmp_path):
    clean = _clean_run(server, tmp_path / "clean", SEEDS[:1])
    kinds = _faulted_equals_clean(server, tmp_path / "clean", clean, tmp_path / "faulty", SEEDS[:1],
                                  fault_seed=5, retry_after="0")
    assert len(kinds) >= 2, kinds


@pytest.mark.slow
def test_fault_injection_every_fault_kind(server, tmp_path):
    """Several depth-2 harvests of five seeds under 20% faults, until every kind of fault has been met."""
    seeds = ["20000900", "20001500", "20002100", "20002500", "20002950"]
    clean = _clean_run(server, tmp_path / "clean", seeds)
    seen = Counter()
    server.fault_cycle = True  # kinds in turn, faults still at random moments
    for fault_seed in range(8):
        seen += _faulted_equals_clean(server, tmp_path / "clean", clean, tmp_path / f"faulty{fault_seed}", seeds,
                                      fault_seed=fault_seed, retry_after="1")
        if set(seen) == set(FAULTS):
            break
    assert set(seen) == set(FAULTS), seen


# ------------------------------------------------------------------------------------------------
# Crash and resume
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(module_server, tmp_path_factory):
    """An uninterrupted `kb fetch` (subprocess) and the number of requests it made."""
    ref = tmp_path_factory.mktemp("reference")
    module_server.reset()
    cmd, env = kb_fetch(module_server, ref)
    done = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n = module_server.count()
    module_server.reset()
    return ref, n


def _kill_and_resume(server, data_dir, after_requests, extra_delay):
    """Start kb fetch, SIGKILL it once the server saw `after_requests` requests (+ a delay), run it again."""
    cmd, env = kb_fetch(server, data_dir)
    server.reset()
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while server.count() < after_requests and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(extra_delay)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    first = list(server.requests)
    server.reset()
    again = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    both = successes(first + server.requests)
    # nothing fetched twice, except at most the one request in flight when the process died
    assert sum(1 for n in both.values() if n > 1) <= (1 if killed else 0), both
    assert not list(Path(data_dir).rglob("*.tmp"))
    return killed, again


def _same_as_reference(data_dir, reference):
    assert files_under(data_dir) == files_under(reference)
    assert cache_bodies(data_dir) == cache_bodies(reference)
    assert without_times(records_text(data_dir)) == without_times(records_text(reference))


def test_sigkill_mid_harvest_then_resume(server, reference, tmp_path):
    ref, n = reference
    assert n >= 8
    killed, again = _kill_and_resume(server, tmp_path / "crash", after_requests=n // 2, extra_delay=0.02)
    assert killed
    assert "cache hits" in again.stdout and not again.stdout.startswith("0 papers")
    _same_as_reference(tmp_path / "crash", ref)
    # records are byte-identical to an uninterrupted run over the same cache (cached retrieval times)
    resumed = (tmp_path / "crash" / "records" / "harvest.jsonl").read_bytes()
    server.reset()
    cmd, env = kb_fetch(server, tmp_path / "crash")
    third = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and server.count() == 0 and "; 0 requests," in third.stdout
    assert (tmp_path / "crash" / "records" / "harvest.jsonl").read_bytes() == resumed


def _db_dump(data_dir, db_path) -> str:
    from kb.records import record_files
    from kb.store import build

    build(record_files(data_dir), db_path)
    conn = sqlite3.connect(db_path)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    # retrieval times differ between two caches, and so do the checksums of the record files
    dump = re.sub(r'"sha256":\s*"[0-9a-f]{64}"', '"sha256":""', dump)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "T", dump)


@pytest.mark.slow
def test_sigkill_at_ten_random_moments(server, reference, tmp_path):
    ref, n = reference
    reference_db = _db_dump(ref, tmp_path / "reference.db")
    rng = random.Random(20261124)
    moments = sorted((rng.randint(0, n), rng.uniform(0.0, 0.25)) for _ in range(10))
    killed = 0
    for i, (after, delay) in enumerate(moments):
        data_dir = tmp_path / f"crash{i}"
        # after=0: killed while starting up or resolving; after=n: while parsing and writing the records
        was_killed, _ = _kill_and_resume(server, data_dir, after_requests=after, extra_delay=delay)
        killed += was_killed
        _same_as_reference(data_dir, ref)
        assert _db_dump(data_dir, tmp_path / f"crash{i}.db") == reference_db
    assert killed >= 7, f"only {killed} of 10 runs were killed before they ended"


# ------------------------------------------------------------------------------------------------
# Corrupt cache, concurrent runs
# ------------------------------------------------------------------------------------------------

def test_corrupt_cache_files_in_a_harvest_are_refetched(server, tmp_path):
    harvest(SEEDS[:1], tmp_path, depth=2, cited_by=True, max_papers=300, client=client(server, tmp_path))
    before = records_text(tmp_path)
    efetch = sorted((tmp_path / "cache" / "efetch").rglob("*.gz"))
    elink = sorted((tmp_path / "cache" / "elink").rglob("*.gz"))
    efetch[0].write_bytes(efetch[0].read_bytes()[:-100])           # truncated
    raw = bytearray(elink[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF                                     # one flipped byte
    elink[0].write_bytes(bytes(raw))
    server.reset()
    summary = harvest(SEEDS[:1], tmp_path, depth=2, cited_by=True, max_papers=300, client=client(server, tmp_path))
    assert summary["requests"] == 2 and server.count() == 2
    assert without_times(records_text(tmp_path)) == without_times(before)


def test_two_kb_fetch_on_one_directory(server, reference, tmp_path):
    ref, n = reference
    data_dir = tmp_path / "shared"
    cmd, env = kb_fetch(server, data_dir)
    server.hold()  # the first run's first request waits at the server: it is mid-harvest, holding the lock
    first = subprocess.Popen(cmd, env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 30
        while server.count() < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.count() == 1
        second = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    finally:
        server.release()
    assert second.returncode == 1 and server.count() >= 1
    assert second.stderr.strip() == (f"Error: another kb fetch is already running on {data_dir} (it holds "
                                     f"{data_dir / 'kb.lock'}); wait for it to finish, or use another --data "
                                     "directory")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _same_as_reference(data_dir, ref)


# ------------------------------------------------------------------------------------------------
# Secrets
# ------------------------------------------------------------------------------------------------

def _all_bytes(data_dir) -> list[tuple[Path, bytes]]:
    out = []
    for p in Path(data_dir).rglob("*"):
        out.append((p, str(p).encode()))
        if p.is_file():
            raw = p.read_bytes()
            out.append((p, raw))
            if p.suffix == ".gz" and raw:
                try:
                    out.append((p, gzip.decompress(raw)))
                except (OSError, EOFError):
                    pass
    return out


def test_api_key_lands_nowhere(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    data_dir = tmp_path / "data"
    # a CLI run with faults (retries), a bad identifier, then a run that gives up: every output path
    server.retry_after = "0"
    for kind in ("429", "timeout", "error", "truncate"):
        server.fail(kind)
    cmd, env = kb_fetch(server, data_dir, "not-an-id", what=SEEDS + ["--depth", "1", "--cited-by"])
    run1 = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert run1.returncode == 1 and "retries" in run1.stdout
    assert "; 8 requests, 0 cache hits, 4 retries," in run1.stdout
    server.fail("500", times=50)
    run2 = subprocess.run(cmd + ["--refresh"], env=env, cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=120)
    assert run2.returncode == 1 and "failed after 6 tries (last: HTTP 500)" in run2.stderr
    server.reset()
    # in-process, with logging on, and an error message that mentions the request
    server.fail("drop", times=3)
    harvest(["20002500"], data_dir / "lib", depth=1, client=client(server, data_dir / "lib", max_tries=6))
    server.fail("502", times=10)
    with pytest.raises(Exception) as info:
        harvest(["20002600"], data_dir / "lib", depth=0, client=client(server, data_dir / "lib", max_tries=2))
    assert "retrying" in caplog.text
    assert all(r["params"].get("api_key") == [KEY] for r in server.requests)  # the key was really sent
    secret = KEY.encode()
    for text in (run1.stdout, run1.stderr, run2.stdout, run2.stderr, caplog.text, str(info.value)):
        assert KEY not in text
    checked = _all_bytes(data_dir)
    assert len(checked) > 20
    leaks = [str(p) for p, blob in checked if secret in blob]
    assert leaks == []
