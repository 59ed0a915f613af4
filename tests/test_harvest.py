"""kb.harvest / `kb fetch` against the fake E-utilities server (small hand-made corpus)."""

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from filelock import FileLock

from fake_eutils import eutils_env, fake_eutils  # noqa: F401
from kb.cli import cli
from kb.errors import KbError
from kb.eutils import Eutils
from kb.harvest import CITED_BY_NOTE, harvest, summary_line
from kb.paths import PROJECT_DIR
from kb.records import read_records

KEY = "HarvestTestKey987654321"


def make(server, data_dir, **kw):
    kw.setdefault("api_key", KEY)
    return Eutils(data_dir / "cache", base_url=server.base_url, backoff=0.01, timeout=2, **kw)


def records(data_dir):
    return list(read_records([data_dir / "records" / "harvest.jsonl"]))


def by_type(recs, t):
    return [r for r in recs if r["type"] == t]


def pmids(recs):
    return sorted(r["pmid"] for r in by_type(recs, "paper"))


def test_depth_2_with_citers(fake_eutils, tmp_path):
    summary = harvest(["30000001"], tmp_path, depth=2, cited_by=True, client=make(fake_eutils, tmp_path))
    recs = records(tmp_path)
    assert pmids(recs) == ["30000001", "30000002", "30000003", "30000004", "30000005", "30000006", "30000007",
                           "30000010", "30000011", "30000013"]
    assert by_type(recs, "seed") == [{"type": "seed", "id": "pmid:30000001", "query": "30000001"}]
    assert [r["pmid"] for r in by_type(recs, "deleted")] == ["30000009"]
    assert summary["papers"] == 10 and summary["deleted"] == 1 and summary["errors"] == []
    assert summary["missing"] == ["39999998"]  # a reference PubMed does not have: counted, not fatal
    assert "1 deleted, 1 not in PubMed" in summary_line(summary)
    # 3 hops of efetch, elink refs + citedin for the two hops that expand
    assert [r["endpoint"] for r in fake_eutils.requests] == ["efetch.fcgi", "elink.fcgi", "elink.fcgi"] * 2 + [
        "efetch.fcgi"]
    assert summary["requests"] == 7 and summary["cache_hits"] == 0

    cites = by_type(recs, "citation")
    edges = {(c["citing"], c["cited"], c["source"]) for c in cites}
    # references from the ReferenceList, completed by elink (30000002 has no ReferenceList in PubMed)
    assert ("pmid:30000001", "pmid:30000002", "pubmed-reflist") in edges
    assert ("pmid:30000001", "pmid:30000002", "elink:pubmed_pubmed_refs") in edges
    assert ("pmid:30000002", "pmid:30000005", "elink:pubmed_pubmed_refs") in edges
    assert not any(c["citing"] == "pmid:30000002" and c["source"] == "pubmed-reflist" for c in cites)
    # citers come from PMC only: 30000012 cites the seed but is not in PMC
    assert ("pmid:30000010", "pmid:30000001", "elink:pubmed_pubmed_citedin") in edges
    assert ("pmid:30000011", "pmid:30000001", "elink:pubmed_pubmed_citedin") in edges
    assert not any(c["citing"] == "pmid:30000012" for c in cites)
    # the last hop's own reference lists are kept
    assert ("pmid:30000007", "pmid:30000008", "pubmed-reflist") in edges
    # references without a PMID keep their raw text
    raw = [c for c in cites if c["citing"] == "pmid:30000001" and c["cited_pmid"] is None]
    assert [(c["cited"], c["resolved"]) for c in raw] == [("doi:10.5555/ext.0001", True), (None, False)]
    assert raw[1]["raw"] == "Smith J. Personal communication. 2010."

    seed = by_type(recs, "paper")[0]
    assert seed["title"].startswith("Case series") and seed["doi"] == "10.5555/kb.2011.0842"
    assert seed["pmcid"] == "PMC7000001" and len(seed["references"]) == 5
    prov = seed["provenance"]
    assert prov["source"] == "pubmed-efetch" and prov["retrieved"].endswith("Z")
    assert prov["request"] == f"{fake_eutils.base_url}efetch.fcgi?db=pubmed&id=30000001&retmode=xml"
    elink_prov = [c for c in cites if c["source"] == "elink:pubmed_pubmed_citedin"][0]["provenance"]
    assert "linkname=pubmed_pubmed_citedin" in elink_prov["request"] and KEY not in json.dumps(recs)


def test_second_run_makes_zero_requests_and_same_bytes(fake_eutils, tmp_path):
    harvest(["30000001"], tmp_path, depth=2, cited_by=True, client=make(fake_eutils, tmp_path))
    first = (tmp_path / "records" / "harvest.jsonl").read_bytes()
    n = fake_eutils.count()
    summary = harvest(["30000001"], tmp_path, depth=2, cited_by=True, client=make(fake_eutils, tmp_path))
    assert fake_eutils.count() == n and summary["requests"] == 0 and summary["cache_hits"] == 7
    assert (tmp_path / "records" / "harvest.jsonl").read_bytes() == first
    refreshed = harvest(["30000001"], tmp_path, depth=2, cited_by=True, client=make(fake_eutils, tmp_path,
                                                                                   refresh=True))
    assert refreshed["requests"] == 7 and refreshed["cache_hits"] == 0 and fake_eutils.count() == n + 7


def test_depths_and_dedup_across_seeds(fake_eutils, tmp_path):
    harvest(["30000001"], tmp_path / "d0", depth=0, client=make(fake_eutils, tmp_path / "d0"))
    assert pmids(records(tmp_path / "d0")) == ["30000001"]
    fake_eutils.reset()
    harvest(["30000001", "PMID: 30000002", "https://pubmed.ncbi.nlm.nih.gov/30000001/"], tmp_path / "d1",
            depth=1, client=make(fake_eutils, tmp_path / "d1"))
    recs = records(tmp_path / "d1")
    assert pmids(recs) == ["30000001", "30000002", "30000003", "30000004", "30000005", "30000006"]
    assert len(by_type(recs, "seed")) == 3 and len({r["id"] for r in by_type(recs, "seed")}) == 2
    efetch_ids = [r["params"]["id"][0] for r in fake_eutils.requests if r["endpoint"] == "efetch.fcgi"]
    assert efetch_ids == ["30000001,30000002", "30000003,30000004,30000005,30000006"]  # each paper once


def test_max_papers_is_a_deterministic_cap(fake_eutils, tmp_path):
    for run in ("a", "b"):
        harvest(["30000001"], tmp_path / run, depth=2, cited_by=True, max_papers=4,
                client=make(fake_eutils, tmp_path / run))
    assert pmids(records(tmp_path / "a")) == ["30000001", "30000002", "30000003", "30000004"]
    assert without_times(records(tmp_path / "a")) == without_times(records(tmp_path / "b"))  # separate caches


def without_times(recs):
    """Records minus retrieval times (two caches filled at different seconds)."""
    return [re.sub(r'"retrieved": "[^"]*"', "", json.dumps(r, sort_keys=True)) for r in recs]


def test_harvests_merge_into_one_file(fake_eutils, tmp_path):
    harvest(["30000005"], tmp_path, depth=0, client=make(fake_eutils, tmp_path))
    harvest(["30000006"], tmp_path, depth=0, client=make(fake_eutils, tmp_path))
    assert pmids(records(tmp_path)) == ["30000005", "30000006"]


def test_a_held_lock_gives_a_clear_message(fake_eutils, tmp_path):
    with FileLock(str(tmp_path / "kb.lock"), timeout=0):
        with pytest.raises(KbError, match="another kb fetch is already running on"):
            harvest(["30000001"], tmp_path, client=make(fake_eutils, tmp_path))
    assert fake_eutils.count() == 0


def test_cli_identifiers_errors_and_offline(eutils_env, tmp_path):
    runner = CliRunner()
    env = {"KB_EUTILS_BACKOFF": "0.01", "NCBI_API_KEY": KEY}
    args = ["fetch", "doi:10.5555/kb.2009.0003", "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC7000002/",
            "39999999", "not-an-id", "--depth", "0", "--data", str(tmp_path)]
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == 1
    err = result.stderr
    assert "Error: 'not-an-id' is not an identifier kb knows" in err
    assert "Error: 39999999: PMID 39999999 is not in PubMed" in err
    assert "Error: 2 of 4 identifiers could not be harvested (see above); the others were" in err
    assert "Traceback" not in result.output + err
    assert "2 papers" in result.stdout and "requests" in result.stdout
    assert pmids(records(tmp_path)) == ["30000002", "30000003"]
    # offline: answers from the cache, fails in one line on a miss
    n = eutils_env.count()
    again = runner.invoke(cli, args + ["--offline"], env=env)
    assert again.exit_code == 1 and "2 papers" in again.stdout and "0 requests, 3 cache hits" in again.stdout
    assert eutils_env.count() == n
    miss = runner.invoke(cli, ["fetch", "30000004", "--offline", "--data", str(tmp_path)], env=env)
    assert miss.exit_code == 1
    assert miss.stderr.strip() == "Error: not in the cache: efetch id=30000004; run without --offline"


def test_cli_end_to_end_subprocess(fake_eutils, tmp_path):
    env = dict(os.environ, KB_EUTILS_URL=fake_eutils.base_url, NCBI_EMAIL="kb-tests@example.org",
               KB_EUTILS_BACKOFF="0.01")
    env.pop("NCBI_API_KEY", None)
    cmd = [sys.executable, "-m", "kb.cli", "fetch", "https://doi.org/10.5555/kb.2011.0842", "--depth", "1",
           "--cited-by", "--data", str(tmp_path / "kb-data")]
    first = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("6 papers, ") and "; 5 requests, 0 cache hits, 0 retries" in lines[0]
    assert lines[1] == CITED_BY_NOTE and first.stderr == ""  # no progress bar when not on a terminal
    n = fake_eutils.count()
    assert all(r["params"]["tool"] == ["kb"] and r["params"]["email"] == ["kb-tests@example.org"]
               for r in fake_eutils.requests)
    again = subprocess.run(cmd, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "0 requests, 5 cache hits" in again.stdout
    assert fake_eutils.count() == n
    recs = records(tmp_path / "kb-data")
    assert pmids(recs) == ["30000001", "30000002", "30000003", "30000004", "30000010", "30000011"]
    assert {r["source"] for r in by_type(recs, "citation")} == {
        "pubmed-reflist", "elink:pubmed_pubmed_refs", "elink:pubmed_pubmed_citedin"}


def test_progress_bar_on_a_terminal(fake_eutils, tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    import threading

    env = dict(os.environ, KB_EUTILS_URL=fake_eutils.base_url, NCBI_EMAIL="kb-tests@example.org",
               NCBI_API_KEY=KEY)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    shown = []

    def read():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "fetch", "30000001", "--cited-by", "--data",
                             str(tmp_path)], env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=slave)
    proc.communicate(timeout=60)
    os.close(slave)
    reader.join(timeout=5)
    os.close(master)
    assert proc.returncode == 0
    text = b"".join(shown).decode("utf-8", "replace")
    assert "kb fetch" in text and "papers" in text and "requests=" in text and "cache_hits=" in text
    assert KEY not in text
