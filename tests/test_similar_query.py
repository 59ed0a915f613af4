"""`kb fetch --similar N` (PubMed similar articles with scores) and `kb fetch --query TEXT` (esearch through the
history server, paged, PubMed's 9,999 cap), end to end against the fake E-utilities server."""

import sqlite3

import pytest
from click.testing import CliRunner

import kb.eutils
from fake_eutils import esearch_ids, eutils_env, fake_eutils  # noqa: F401
from kb.cli import cli
from kb.eutils import Eutils
from kb.harvest import harvest
from kb.publish import make_datasette
from kb.records import read_records

SEED = "30000001"


def make(server, data_dir):
    return Eutils(data_dir / "cache", base_url=server.base_url, api_key="SimilarTestKey123", backoff=0.01, timeout=5)


def records(data_dir, kind):
    return [r for r in read_records([data_dir / "records" / "harvest.jsonl"]) if r["type"] == kind]


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def params(request, *names):
    return tuple((request["params"].get(n) or [None])[0] for n in names)


# ------------------------------------------------------------------------------------------------ --similar

def test_similar_articles_end_to_end(eutils_env, tmp_path):
    data, db = tmp_path / "data", tmp_path / "kb.db"
    result = run("fetch", SEED, "--depth", "0", "--similar", "3", "--data", data)
    assert result.exit_code == 0, result.output
    assert "3 similar-article links" in result.output

    # the request: elink pubmed_pubmed with cmd=neighbor_score, once for the seed
    links = [r for r in eutils_env.requests if r["endpoint"] == "elink.fcgi"]
    assert [params(r, "linkname", "cmd", "dbfrom") for r in links] == [("pubmed_pubmed", "neighbor_score", "pubmed")]

    # the records: the top 3 of PubMed's list (the paper itself left out), scores as served
    expected = [(p, s) for p, s in eutils_env.corpus.similar(SEED) if p != SEED][:3]
    similar = records(data, "similar")
    assert sorted((r["similar"], r["score"]) for r in similar) == sorted((f"pmid:{p}", s) for p, s in expected)
    assert {r["paper"] for r in similar} == {f"pmid:{SEED}"}
    assert all(r["provenance"]["source"] == "elink:pubmed_pubmed" for r in similar)
    # the similar papers were fetched: they are papers of the KB
    assert {p for p, _ in expected} <= {r["pmid"] for r in records(data, "paper")}

    # a re-run answers everything from the cache
    eutils_env.reset()
    again = run("fetch", SEED, "--depth", "0", "--similar", "3", "--data", data)
    assert again.exit_code == 0 and eutils_env.count() == 0 and "; 0 requests" in again.output

    assert run("build", "--data", data, "--db", db).exit_code == 0
    rows = sqlite3.connect(db).execute("select paper_id, similar_id, score, rank from similar_articles "
                                       "order by rank").fetchall()
    ranked = sorted(expected, key=lambda t: (-t[1], int(t[0])))   # equal scores: lower PMID first
    assert rows == [(f"pmid:{SEED}", f"pmid:{p}", s, i) for i, (p, s) in enumerate(ranked, 1)]
    resolved = sqlite3.connect(db).execute(
        "select count(*) from papers where resolved = 1 and id in (select similar_id from similar_articles)").fetchone()
    assert resolved == (3,)


async def test_similar_articles_served_by_datasette(eutils_env, tmp_path):
    data, db = tmp_path / "data", tmp_path / "kb.db"
    assert run("fetch", SEED, "--depth", "0", "--similar", "2", "--data", data).exit_code == 0
    assert run("build", "--data", data, "--db", db).exit_code == 0
    ds = make_datasette(db)
    await ds.invoke_startup()
    response = await ds.client.get(f"/kb/similar_articles.json?_shape=objects&paper_id=pmid:{SEED}&_sort=rank")
    assert response.status_code == 200
    rows = response.json()["rows"]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["score"] >= rows[1]["score"] > 0
    html = (await ds.client.get("/kb/similar_articles")).text
    assert "similar_articles" in html and "PubMed" in html   # the table's description from metadata.yml


def test_similar_rank_ties_and_merging(tmp_path):
    """Ranks: highest score first, ties by PMID; a pair seen in two harvests counts once."""
    from kb.store import _similar_rows

    papers = {f"pmid:{i}": {} for i in (1, 2, 9, 10, 11)}
    pairs = [("pmid:1", "pmid:10", 50), ("pmid:1", "pmid:9", 50), ("pmid:1", "pmid:2", 70), ("pmid:1", "pmid:2", 70),
             ("pmid:1", "pmid:404", 99), ("pmid:11", "pmid:1", 5)]
    recs = [{"paper": a, "similar": b, "score": score} for a, b, score in pairs]
    assert _similar_rows(recs, lambda k: k, papers) == [
        ("pmid:1", "pmid:10", 50, 3), ("pmid:1", "pmid:2", 70, 1), ("pmid:1", "pmid:9", 50, 2),
        ("pmid:11", "pmid:1", 5, 1)]


# ------------------------------------------------------------------------------------------------ --query

def test_query_pages_through_the_history_server(fake_eutils, tmp_path, monkeypatch):
    monkeypatch.setattr(kb.eutils, "ESEARCH_PAGE", 2)
    hits = esearch_ids(fake_eutils.corpus, "leukemia")   # what the server finds, best first
    assert len(hits) > 5
    summary = harvest([], tmp_path, depth=0, max_papers=5, query="leukemia", client=make(fake_eutils, tmp_path))
    searches = [r for r in fake_eutils.requests if r["endpoint"] == "esearch.fcgi"]
    assert [params(r, "usehistory", "retstart", "retmax", "query_key") for r in searches] == [
        ("y", "0", "2", None), (None, "2", "2", "1"), (None, "4", "1", "1")]
    webenv = searches[1]["params"]["WebEnv"][0]
    assert webenv.startswith("MCID_") and searches[2]["params"]["WebEnv"] == [webenv]
    seeds = records(tmp_path, "seed")
    assert [(s["id"], s["query"]) for s in seeds] == [(f"pmid:{p}", "leukemia") for p in sorted(hits[:5], key=int)]
    assert summary["papers"] == 5
    assert summary["notes"] == [
        f"Note: the query matches {len(hits)} papers; the first 5 (--max-papers) are the seeds."]


def test_query_then_hops(fake_eutils, tmp_path):
    """The query's papers are seeds; --depth follows their references as for identifiers."""
    summary = harvest([], tmp_path, depth=1, query="bone marrow", client=make(fake_eutils, tmp_path))
    seeds = {s["id"] for s in records(tmp_path, "seed")}
    papers = {r["id"] for r in records(tmp_path, "paper")}
    assert seeds == {"pmid:30000001", "pmid:30000002"}
    assert {"pmid:30000003", "pmid:30000005"} <= papers - seeds   # references of the two seeds
    assert summary["errors"] == []


def test_query_cap_of_9999(fake_eutils, tmp_path):
    fake_eutils.pad_search("leukemia", 25000)
    client = make(fake_eutils, tmp_path)
    found = client.esearch_history("leukemia", page=5000)
    assert found["count"] == 25000 and found["retrievable"] == 9999 and found["capped"]
    assert len(found["ids"]) == len(set(found["ids"])) == 9999
    pages = [params(r, "retstart", "retmax") for r in fake_eutils.requests]
    assert pages == [("0", "5000"), ("5000", "4999")]   # never past retstart 9998, never past 9,999 ids
    again = make(fake_eutils, tmp_path)
    assert again.esearch_history("leukemia", page=5000)["ids"] == found["ids"] and again.stats["requests"] == 0


def test_query_cap_message_on_the_command_line(eutils_env, tmp_path):
    eutils_env.pad_search("leukemia", 25000)
    result = run("fetch", "--query", "leukemia", "--max-papers", "3", "--depth", "0", "--data", tmp_path)
    assert result.exit_code == 0, result.output
    assert ("Note: the query matches 25,000 papers (PubMed's esearch serves only the first 9,999); "
            "the first 3 (--max-papers) are the seeds.") in result.output
    assert len(records(tmp_path, "seed")) == 3
    eutils_env.reset()
    again = run("fetch", "--query", "leukemia", "--max-papers", "3", "--depth", "0", "--data", tmp_path)
    assert again.exit_code == 0 and eutils_env.count() == 0


def test_query_papers_pubmed_lacks_are_errors(eutils_env, tmp_path):
    """An id esearch gives that efetch does not know (PubMed changing under the search) fails the run in one line,
    after the others are harvested."""
    eutils_env.pad_search("signal intensity", 3)   # 1 real hit, then two made-up PMIDs
    result = run("fetch", "--query", "signal intensity", "--depth", "0", "--data", tmp_path)
    assert result.exit_code == 1
    assert "Error: signal intensity: PMID 90000001 is not in PubMed" in result.output
    assert result.output.strip().endswith("Error: 2 of 3 seeds (identifiers and --query results) could not be "
                                          "harvested (see above); the others were harvested")


def test_query_beyond_the_cap_without_max_papers(fake_eutils, tmp_path):
    fake_eutils.pad_search("child", 12000)
    found = make(fake_eutils, tmp_path).esearch_history("child", page=5000)
    assert len(found["ids"]) == 9999
    notes = []
    from kb.harvest import query_seeds

    seeds = query_seeds(make(fake_eutils, tmp_path), "child", None, notes)   # answered from the cache
    assert len(seeds) == 9999 and notes == [
        "Note: the query matches 12,000 papers, but PubMed's esearch serves only the first 9,999 (NCBI's limit): "
        "those are the seeds; narrow the query (e.g. by year) to reach the others."]


def test_lost_history_means_a_new_search(fake_eutils, tmp_path, monkeypatch):
    """A cached WebEnv the history server has forgotten: the search is sent again, fresh, and paging goes on."""
    first = make(fake_eutils, tmp_path).esearch_history("leukemia", limit=4, page=2)
    fake_eutils.forget_history()
    fake_eutils.reset()
    client = make(fake_eutils, tmp_path)
    found = client.esearch_history("leukemia", limit=6, page=2)
    assert found["ids"][:4] == first["ids"] and len(found["ids"]) == 6
    sent = [params(r, "usehistory", "retstart") for r in fake_eutils.requests]
    assert sent == [(None, "4"), ("y", "0"), (None, "2"), (None, "4")]   # lost, new search, its pages
    fake_eutils.reset()
    again = make(fake_eutils, tmp_path)
    assert again.esearch_history("leukemia", limit=6, page=2)["ids"] == found["ids"]
    assert again.stats["requests"] == 0


@pytest.mark.parametrize("args, message", [
    ([], "give at least one identifier"),
    (["--query", "nothingatallmatches"], "PubMed finds no papers"),
])
def test_query_errors_are_one_line(eutils_env, tmp_path, args, message):
    result = run("fetch", *args, "--data", tmp_path)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
