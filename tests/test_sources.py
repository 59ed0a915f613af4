"""kb.sources and `kb fetch --sources`: open citation sources against fakes (tests/fake_sources.py) beside the
fake E-utilities, on a corpus where PubMed knows none of the seed's references (not in PMC, no ReferenceList)."""

import gzip
import json
import re
import sqlite3

import pytest
from click.testing import CliRunner

from fake_eutils import FakeEutils
from fake_sources import FakeSources, fake_sources, sources_corpus, sources_env  # noqa: F401
from kb.cli import cli
from kb.errors import KbError
from kb.eutils import Eutils
from kb.harvest import harvest
from kb.records import read_records
from kb.sources import parse_sources
from kb.sources import crossref as crossref_source
from kb.sources import http as source_http

SEED = "pmid:30000001"
OPEN = ("europepmc", "opencitations", "crossref", "icite")


@pytest.fixture
def corpus():
    return sources_corpus()


@pytest.fixture
def eutils(corpus):
    with FakeEutils(corpus) as server:
        yield server


@pytest.fixture
def fast(monkeypatch):
    """Faster per-source rates for the tests that do not check them (the rate test uses the real ones)."""
    monkeypatch.setattr(source_http, "RATES", {name: 200.0 for name in OPEN})


def run(eutils, data_dir, sources, *, depth=2, cited_by=True, **kw):
    client = Eutils(data_dir / "cache", base_url=eutils.base_url, api_key="SourcesTestKey", backoff=0.01)
    return harvest(["30000001"], data_dir, depth=depth, cited_by=cited_by, client=client, sources=sources, **kw)


def records(data_dir):
    return list(read_records([data_dir / "records" / "harvest.jsonl"]))


def edges(recs, source=None):
    return {(r["citing"], r["cited"]) for r in recs if r["type"] == "citation" and r["cited"]
            and (source is None or r["source"] == source or (source == "pubmed" and (
                r["source"].startswith("elink:") or r["source"] == "pubmed-reflist")))}


def coverage(recs):
    return {(r["paper"], r["source"]): r for r in recs if r["type"] == "coverage"}


def test_parse_sources():
    assert parse_sources(None) == ["pubmed", "europepmc", "opencitations", "crossref", "icite"]
    assert parse_sources("icite, PubMed,crossref") == ["pubmed", "crossref", "icite"]
    assert parse_sources("all") == parse_sources("")
    with pytest.raises(KbError, match="unknown citation source 'scopus': choose from pubmed, europepmc"):
        parse_sources("pubmed,scopus")
    result = CliRunner().invoke(cli, ["fetch", "30000001", "--sources", "pubmed,scopus"])
    assert result.exit_code == 1 and result.stderr.startswith("Error: unknown citation source 'scopus'")
    assert "Traceback" not in result.output


def test_fetch_finds_references_and_citers_pubmed_lacks(eutils, sources_env, fast, tmp_path):
    """`kb fetch PMID --depth 2 --cited-by` with every source: the seed's references (none in PubMed) and
    its citers outside PMC, each with the sources that gave it."""
    runner = CliRunner()
    env = {"KB_EUTILS_URL": eutils.base_url, "KB_EUTILS_BACKOFF": "0.01", "NCBI_EMAIL": "kb-tests@example.org"}
    only = runner.invoke(cli, ["fetch", "30000001", "--depth", "2", "--cited-by", "--sources", "pubmed",
                               "--data", str(tmp_path / "pubmed")], env=env)
    assert only.exit_code == 0, only.output
    assert sources_env.count() == 0
    full = runner.invoke(cli, ["fetch", "30000001", "--depth", "2", "--cited-by", "--data", str(tmp_path / "all")],
                         env=env)
    assert full.exit_code == 0, full.stderr
    lines = full.stdout.splitlines()
    assert lines[1].startswith("Sources: europepmc ") and "opencitations" in lines[1] and "icite" in lines[1]
    assert "PMC" not in full.stdout  # the PMC-only note is for PubMed alone

    pubmed, merged = records(tmp_path / "pubmed"), records(tmp_path / "all")
    seed_refs = {c for a, c in edges(merged) if a == SEED}
    assert {c for a, c in edges(pubmed) if a == SEED} == set()           # PubMed alone: nothing
    assert {"pmid:30000002", "pmid:30000003", "pmid:30000004", "doi:10.5555/ext.0001"} <= seed_refs
    citers = {a for a, c in edges(merged) if c == SEED}
    assert {"pmid:30000012", "pmid:30000014"} <= citers                  # not in PMC: PubMed's citedin lacks them
    assert not {"pmid:30000012", "pmid:30000014"} & {a for a, c in edges(pubmed, "pubmed") if c == SEED}
    # every edge keeps each source that gave it
    by_edge = {}
    for r in merged:
        if r["type"] == "citation" and r["cited"]:
            by_edge.setdefault((r["citing"], r["cited"]), set()).add(r["source"])
    assert by_edge[(SEED, "pmid:30000002")] == {"europepmc", "opencitations", "crossref", "icite"}
    # 30000014 (hop 1) was asked about too: its own deposited references name the seed as well
    assert by_edge[("pmid:30000014", SEED)] == {"europepmc", "opencitations", "crossref", "icite"}
    # papers found only through the open sources were fetched from PubMed like any other
    papers = {r["id"] for r in merged if r["type"] == "paper"}
    assert {"pmid:30000012", "pmid:30000014"} <= papers
    assert not {"pmid:30000003", "pmid:30000004", "pmid:30000012", "pmid:30000014"} & {
        r["id"] for r in pubmed if r["type"] == "paper"}
    crossref_seed = coverage(merged)[(SEED, "crossref")]
    assert crossref_seed["stated_references"] == 5 and crossref_seed["references"] == 5
    assert coverage(merged)[(SEED, "pubmed")]["references"] == 0


def test_same_edge_from_three_sources_is_one_citation(eutils, sources_env, fast, tmp_path):
    from kb.store import build

    run(eutils, tmp_path, ["europepmc", "opencitations", "icite"], depth=1)
    db = tmp_path / "kb.db"
    build([tmp_path / "records" / "harvest.jsonl"], db)
    conn = sqlite3.connect(db)
    rows = conn.execute("select sources from citations where citing_id = ? and cited_id = ?",
                        (SEED, "pmid:30000002")).fetchall()
    assert len(rows) == 1 and json.loads(rows[0][0]) == ["europepmc", "icite", "opencitations"]
    assert conn.execute("select source from citation_sources where citing_id = ? and cited_id = ? order by source",
                        (SEED, "pmid:30000002")).fetchall() == [("europepmc",), ("icite",), ("opencitations",)]
    # no duplicate paper for the DOI a source gave for a PMID paper
    assert conn.execute("select count(*) from papers where doi = '10.5555/kb.2008.0002'").fetchone()[0] == 1


def test_doi_only_reference_becomes_a_reference_only_paper(eutils, sources_env, fast, tmp_path):
    from kb.store import build

    run(eutils, tmp_path, ["crossref", "opencitations"], depth=1, cited_by=False)
    recs = records(tmp_path)
    doi_only = [r for r in recs if r["type"] == "citation" and r["cited"] == "doi:10.5555/ext.0001"]
    assert {r["source"] for r in doi_only} == {"crossref", "opencitations"}
    crossref = next(r for r in doi_only if r["source"] == "crossref")
    assert crossref["cited_title"] == "Marrow imaging in children" and crossref["cited_year"] == 2005
    assert crossref["cited_journal"] == "Example J Radiol" and crossref["cited_pmid"] is None
    db = tmp_path / "kb.db"
    build([tmp_path / "records" / "harvest.jsonl"], db)
    row = sqlite3.connect(db).execute("select resolved, title from papers where id = 'doi:10.5555/ext.0001'").fetchone()
    assert row[0] == 0 and "Marrow imaging in children" in row[1]
    # from Europe PMC alone too: its entry's fields name the work
    run(eutils, tmp_path / "epmc", ["europepmc"], depth=1, cited_by=False)
    build([tmp_path / "epmc" / "records" / "harvest.jsonl"], tmp_path / "epmc.db")
    row = sqlite3.connect(tmp_path / "epmc.db").execute(
        "select resolved, title, year from papers where id = 'doi:10.5555/ext.0001'").fetchone()
    assert row[0] == 0 and "Marrow imaging in children" in row[1] and row[2] == 2005


def test_source_down_for_the_whole_run_then_a_rerun_fills_the_gap(eutils, sources_env, fast, tmp_path):
    sources_env.down.add("opencitations")
    runner = CliRunner()
    env = {"KB_EUTILS_URL": eutils.base_url, "KB_EUTILS_BACKOFF": "0.01", "NCBI_API_KEY": "SourcesTestKey"}
    args = ["fetch", "30000001", "--depth", "1", "--cited-by", "--data", str(tmp_path)]
    first = runner.invoke(cli, args, env=env)
    assert first.exit_code == 1
    err = [line for line in first.stderr.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and err[0].startswith("Error: citation source opencitations failed (opencitations ")
    assert "run the same command again to fill the gap" in err[0] and "Traceback" not in first.output
    assert "opencitations 0 links" in first.stdout and "FAILED" in first.stdout
    # the run stopped asking the source once it was down: one request and its retries
    assert sources_env.count("opencitations") == 3
    recs = records(tmp_path)
    assert coverage(recs)[(SEED, "opencitations")]["status"] == "failed"
    assert coverage(recs)[(SEED, "europepmc")]["status"] == "ok"
    assert "pmid:30000014" in {r["id"] for r in recs if r["type"] == "paper"}  # found by the others

    sources_env.down.clear()
    before = {s: sources_env.count(s) for s in OPEN}
    eutils_before = eutils.count()
    again = runner.invoke(cli, args, env=env)
    assert again.exit_code == 0, again.stderr
    asked = {s: sources_env.count(s) - before[s] for s in OPEN}
    assert asked["opencitations"] == 2 and asked["europepmc"] == asked["crossref"] == asked["icite"] == 0
    assert eutils.count() == eutils_before    # nothing new for PubMed: the others had found every paper
    recs = records(tmp_path)
    assert coverage(recs)[(SEED, "opencitations")]["status"] == "ok"
    assert ("pmid:30000014", SEED) in edges(recs, "opencitations")


def test_merged_records_are_deterministic(eutils, sources_env, fast, tmp_path):
    run(eutils, tmp_path / "a", list(("pubmed",) + OPEN))
    run(eutils, tmp_path / "b", list(("pubmed",) + OPEN))
    a = (tmp_path / "a" / "records" / "harvest.jsonl").read_bytes()
    # two harvests with their own caches: the same records in the same order (only retrieval times differ)
    undated = lambda data: re.sub(rb'"retrieved":"[^"]*"', b'"retrieved":""', data)  # noqa: E731
    assert undated(a) == undated((tmp_path / "b" / "records" / "harvest.jsonl").read_bytes())
    # a second run in the same directory answers everything from the cache and writes the same bytes
    n = sources_env.count()
    run(eutils, tmp_path / "a", list(("pubmed",) + OPEN))
    assert sources_env.count() == n and (tmp_path / "a" / "records" / "harvest.jsonl").read_bytes() == a
    kinds = [r["type"] for r in records(tmp_path / "a")]
    assert kinds == sorted(kinds, key=["seed", "paper", "deleted", "citation", "coverage"].index)


def test_faults_are_retried_and_paging_stops_at_the_end(corpus, eutils, monkeypatch, fast, tmp_path):
    with FakeSources(corpus) as clean:
        for k, v in clean.env().items():
            monkeypatch.setenv(k, v)
        run(eutils, tmp_path / "clean", list(OPEN), depth=1)
    with FakeSources(corpus, max_page_size=2, hitcount_lie=3) as faulty:
        for k, v in faulty.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("KB_SOURCES_BACKOFF", "0.01")
        monkeypatch.setenv("KB_SOURCES_TIMEOUT", "0.5")
        monkeypatch.setenv("KB_SOURCES_TRIES", "4")
        for kind in ("429", "500", "timeout"):
            faulty.fail(kind, source="europepmc")
        for kind in ("truncate", "malformed", "503"):
            faulty.fail(kind, source="crossref")
        faulty.fail("malformed", source="icite")
        faulty.fail("truncate", source="opencitations")
        summary = run(eutils, tmp_path / "faulty", list(OPEN), depth=1)
        assert summary["source_errors"] == {}
        assert summary["sources"]["europepmc"]["retries"] == 3 and summary["sources"]["crossref"]["retries"] == 3
        # 5 references in pages of 2 (the answer counts 8): pages 1-3, then page 4 is empty and ends it
        pages = [r["params"]["page"][0] for r in faulty.requests
                 if r["path"].endswith("/MED/30000001/references") and r["status"] == 200]
        assert pages == ["1", "2", "3", "4"]
    clean_recs = [dict(r, provenance=None) for r in records(tmp_path / "clean")]
    faulty_recs = [dict(r, provenance=None) for r in records(tmp_path / "faulty")]
    assert clean_recs == faulty_recs


def test_icite_without_link_lists_says_so(corpus, eutils, monkeypatch, fast, tmp_path):
    with FakeSources(corpus, icite_shape="2025") as fake:
        for k, v in fake.env().items():
            monkeypatch.setenv(k, v)
        summary = run(eutils, tmp_path, ["icite"], depth=1)
        assert fake.count("icite") == 1      # one batch serves references and citers
    cov = coverage(records(tmp_path))[(SEED, "icite")]
    assert cov["status"] == "no-links" and "July 2025" in cov["message"] and cov["references"] is None
    assert summary["source_errors"] == {} and summary["sources"]["icite"]["links"] == 0


def test_crossref_closed_reference_list_and_polite_pool(corpus, eutils, monkeypatch, fast, tmp_path):
    with FakeSources(corpus, closed=["10.5555/kb.2011.0842"]) as fake:
        for k, v in fake.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("OPENCITATIONS_ACCESS_TOKEN", "oc-token-123456")
        run(eutils, tmp_path, ["crossref", "opencitations"], depth=1, email="kb-tests@example.org")
        crossref = [r for r in fake.requests if r["source"] == "crossref"]
        assert crossref and all(r["params"]["mailto"] == ["kb-tests@example.org"] for r in crossref)
        assert all("mailto:kb-tests@example.org" in r["headers"]["User-Agent"] for r in fake.requests)
        assert all(r["headers"].get("Authorization") == "oc-token-123456"
                   for r in fake.requests if r["source"] == "opencitations")
        # the contact address is not part of the cache key: another address is answered from the cache
        n = fake.count()
        run(eutils, tmp_path, ["crossref", "opencitations"], depth=1, email="someone-else@example.org")
        assert fake.count() == n
    cov = coverage(records(tmp_path))[(SEED, "crossref")]
    assert cov["status"] == "no-links" and cov["stated_references"] == 5 and cov["references"] == 0
    cached = b"".join(gzip.decompress(p.read_bytes()) for p in (tmp_path / "cache").rglob("*.gz"))
    assert b"oc-token-123456" not in cached and b"kb-tests@example.org" not in cached


def test_crossref_asks_many_dois_per_request(eutils, sources_env, monkeypatch, fast, tmp_path):
    """Crossref is asked BATCH DOIs at a time (filter=doi:A,doi:B); what it gives equals one request per DOI."""
    answers = {}
    for batch in (2, 1000):
        monkeypatch.setattr(crossref_source, "BATCH", batch)
        before = len(sources_env.requests)
        run(eutils, tmp_path / str(batch), ["europepmc", "crossref"], depth=2, cited_by=False)
        asked = [r for r in sources_env.requests[before:] if r["source"] == "crossref"]
        lists = [r for r in asked if r["path"].endswith("/works")]
        sizes = [len(r["params"]["filter"][0].split(",")) for r in lists]
        assert lists and max(sizes) <= batch and all(r["params"]["rows"] == [str(n)] for r, n in zip(lists, sizes))
        recs = records(tmp_path / str(batch))
        answers[batch] = (len(asked), sorted((r["citing"], r["cited"] or "", r["raw"] or "") for r in recs
                                             if r["type"] == "citation" and r["source"] == "crossref"),
                          {k: (v["references"], v["stated_references"], v["status"])
                           for k, v in coverage(recs).items() if k[1] == "crossref"})
    assert answers[2][0] > answers[1000][0] == 2     # the seed alone, then its references in one request
    assert answers[2][1:] == answers[1000][1:] and answers[2][1]


def test_rate_limits_per_source(eutils, sources_env, monkeypatch, tmp_path):
    """Request arrival times per source against its interval (documented limits, kb.sources.http.RATES)."""
    monkeypatch.setattr(crossref_source, "BATCH", 1)     # enough Crossref requests to see its pace
    run(eutils, tmp_path, list(OPEN), depth=2, cited_by=False)
    for name in ("europepmc", "opencitations", "crossref"):
        times = sources_env.times(name)
        assert len(times) >= 4
        interval = 1 / source_http.RATES[name]
        # the whole run keeps the pace (a little slack for thread scheduling), and no two requests nearly at once
        assert times[-1] - times[0] >= (len(times) - 1) * interval - 0.05, name
        assert min(b - a for a, b in zip(times, times[1:])) >= 0.5 * interval, name


def test_a_refused_request_fails_one_paper_not_the_source(eutils, sources_env, fast, tmp_path):
    sources_env.fail("400", source="crossref")      # the first Crossref request: the seed's DOI
    summary = run(eutils, tmp_path, ["europepmc", "crossref"], depth=2, cited_by=False)
    cov = coverage(records(tmp_path))
    assert cov[(SEED, "crossref")]["status"] == "failed" and "HTTP 400" in cov[(SEED, "crossref")]["message"]
    assert cov[("pmid:30000002", "crossref")]["status"] == "ok"    # the source kept answering for the others
    assert list(summary["source_errors"]) == ["crossref"]


def test_offline_answers_from_the_cache(eutils, sources_env, fast, tmp_path):
    asked = ["europepmc", "opencitations", "icite"]
    run(eutils, tmp_path, asked, depth=1)
    before = records(tmp_path)
    n = sources_env.count()
    offline = Eutils(tmp_path / "cache", base_url=eutils.base_url, offline=True)
    summary = harvest(["30000001"], tmp_path, depth=1, cited_by=True, client=offline, sources=asked, offline=True)
    assert sources_env.count() == n and summary["source_errors"] == {}
    assert records(tmp_path) == before
    # a source never asked: a cache miss fails that source in one line, nothing is sent
    other = harvest(["30000001"], tmp_path, depth=1, cited_by=True, client=offline, sources=["crossref"],
                    offline=True)
    assert sources_env.count() == n
    assert other["source_errors"]["crossref"] == ("not in the cache: crossref works/10.5555/kb.2011.0842; "
                                                  "run without --offline")
