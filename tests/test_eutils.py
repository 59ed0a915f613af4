"""kb.eutils and kb.cache against the fake E-utilities server: batching, retries, rate limit, cache, secrets."""

import gzip
import hashlib
import json
import logging

import pytest
from Bio import Entrez

from fake_eutils import FakeEutils, fake_eutils, generate_network  # noqa: F401
from kb.cache import Cache, cache_key
from kb.errors import KbError, NotFound
from kb.eutils import BATCH, Eutils, describe

SECRET = "Sekr3tApiKey0123456789"


def client(server, tmp_path, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("api_key", SECRET)  # 10 requests/s keeps the suite fast; the key must never be stored
    kw.setdefault("timeout", 2)
    return Eutils(tmp_path / "cache", base_url=server.base_url, email="kb-tests@example.org", **kw)


def gaps(requests):
    times = [r["t"] for r in requests]
    return [b - a for a, b in zip(times, times[1:])]


@pytest.fixture(scope="module")
def big_server():
    with FakeEutils(generate_network(600, seed=3)) as server:
        yield server


def test_esearch_efetch_elink_ecitmatch_speak_the_protocol(fake_eutils, tmp_path):
    e = client(fake_eutils, tmp_path, tool="kb")
    assert e.esearch('"10.5555/kb.2011.0842"[AID]') == ["30000001"]
    assert e.esearch("nothing matches this[Title]") == []
    batches = list(e.efetch_xml(["30000001", "30000002"]))
    assert len(batches) == 1
    body, prov = batches[0]
    assert body.startswith(b'<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet')
    assert b"<PMID Version=\"1\">30000002</PMID>" in body
    assert prov["source"] == "pubmed-efetch" and prov["retrieved"].endswith("Z")
    assert prov["request"].startswith(fake_eutils.base_url + "efetch.fcgi?")
    links = e.elink(["30000001", "30000002", "39999999"], "pubmed_pubmed_citedin")
    assert links == {"30000001": ["30000011", "30000010"], "30000002": ["30000013", "30000010", "30000001"],
                     "39999999": []}
    assert e.elink(["7000001"], "pmc_pubmed") == {"7000001": ["30000001"]}
    found = e.ecitmatch([
        {"key": "a", "journal": "Int J Hematol", "year": "2011", "volume": "93", "first_page": "787",
         "author": "Kato M"},
        {"key": "b|odd", "journal": "No Such J", "year": "1999", "volume": "1", "first_page": "1", "author": ""}])
    assert found == {"a": "30000001", "b|odd": None}
    for r in fake_eutils.requests:
        assert r["path"].startswith("/entrez/eutils/")
        assert r["params"]["tool"] == ["kb"] and r["params"]["email"] == ["kb-tests@example.org"]
    ec = [r for r in fake_eutils.requests if r["endpoint"] == "ecitmatch.cgi"][0]
    assert ec["params"]["bdata"][0].split("\r")[0] == "Int J Hematol|2011|93|787|Kato M|kb0|"
    assert e.stats == {"requests": 6, "cache_hits": 0, "retries": 0}


def test_kb_eutils_url_from_environment_at_the_server_root(fake_eutils, tmp_path, monkeypatch):
    monkeypatch.setenv("KB_EUTILS_URL", f"http://127.0.0.1:{fake_eutils.port}")
    e = Eutils(tmp_path / "cache")
    assert e.esearch("30000003[pmid]") == ["30000003"]
    assert fake_eutils.requests[-1]["path"] == "/esearch.fcgi"
    with pytest.raises(KbError, match="KB_EUTILS_URL must be an http"):
        Eutils(tmp_path / "cache", base_url="ftp://example.org/")


def test_biopython_open_still_works_outside_kb():
    # kb only captures requests inside its own calls; Bio.Entrez keeps its own _open otherwise
    assert getattr(Entrez._open, "_kb_capture", False)
    assert callable(Entrez.efetch)


def test_batches_of_200_post_and_one_linkset_per_id(big_server, tmp_path):
    e = client(big_server, tmp_path, api_key=SECRET)
    pmids = [str(20000001 + i) for i in range(450)]
    big_server.reset()
    bodies = list(e.efetch_xml(pmids + pmids[:10]))  # duplicates are sent once
    assert len(bodies) == 3
    assert [b.count(b"<PubmedArticle>") for b, _ in bodies] == [200, 200, 50]
    fetches = [r for r in big_server.requests if r["endpoint"] == "efetch.fcgi"]
    assert [r["method"] for r in fetches] == ["POST", "POST", "GET"]
    assert [len(r["params"]["id"][0].split(",")) for r in fetches] == [200, 200, 50]
    big_server.reset()
    links = e.elink(pmids, "pubmed_pubmed_refs")
    elinks = [r for r in big_server.requests if r["endpoint"] == "elink.fcgi"]
    assert len(elinks) == 3 and elinks[0]["method"] == "POST"
    assert [len(r["params"]["id"]) for r in elinks] == [200, 200, 50]  # repeated id=, not comma-joined
    assert set(links) == set(pmids)
    expected = big_server.corpus.refs(pmids[300])
    assert links[pmids[300]] == expected


def test_429_then_success_honours_retry_after(fake_eutils, tmp_path):
    fake_eutils.retry_after = "1"
    fake_eutils.fail("429")
    e = client(fake_eutils, tmp_path)
    assert e.esearch("30000001[pmid]") == ["30000001"]
    assert [r["status"] for r in fake_eutils.requests] == [429, 200]
    assert gaps(fake_eutils.requests)[0] >= 0.95  # Retry-After: 1 (less a little arrival jitter)
    assert e.stats == {"requests": 2, "cache_hits": 0, "retries": 1}


@pytest.mark.parametrize("kind", ["500", "502", "drop", "truncate", "truncate-nolength", "error", "malformed"])
def test_transient_failures_are_retried(fake_eutils, tmp_path, kind):
    fake_eutils.fail(kind, times=2)
    e = client(fake_eutils, tmp_path)
    bodies = list(e.efetch_xml(["30000001"]))
    assert b"<ArticleTitle>Case series" in bodies[0][0]
    assert e.stats["retries"] == 2 and e.stats["requests"] == 3
    # only the good answer was cached
    hit = Eutils(tmp_path / "cache", base_url=fake_eutils.base_url, offline=True)
    assert list(hit.efetch_xml(["30000001"]))[0][0] == bodies[0][0]


def test_timeout_is_retried(fake_eutils, tmp_path):
    fake_eutils.timeout_sleep = 1.0
    fake_eutils.fail("timeout")
    e = client(fake_eutils, tmp_path, timeout=0.3)
    assert e.elink(["30000001"], "pubmed_pubmed_refs")["30000001"] == ["30000004", "30000003", "30000002"]
    assert [r["fault"] for r in fake_eutils.requests] == ["timeout", None]
    assert e.stats["retries"] == 1


def test_bounded_tries_then_one_line_error_without_the_key(fake_eutils, tmp_path):
    fake_eutils.fail("500", times=10)
    e = client(fake_eutils, tmp_path, max_tries=3, api_key=SECRET)
    with pytest.raises(KbError) as info:
        e.esearch("30000001[pmid]")
    message = str(info.value)
    assert "failed after 3 tries" in message and "HTTP 500" in message and "esearch" in message
    assert "\n" not in message and SECRET not in message
    assert fake_eutils.count() == 3


def test_permanent_errors_fail_at_once(fake_eutils, tmp_path):
    e = client(fake_eutils, tmp_path)
    with pytest.raises(KbError, match="nothing todo"):
        e.esearch("")
    assert fake_eutils.count() == 1


def test_rate_limit_without_and_with_key(fake_eutils, tmp_path):
    e = client(fake_eutils, tmp_path / "a", api_key=None)
    for i in range(7):
        e.esearch(f"3000000{i + 1}[pmid]")
    assert fake_eutils.assert_rate(3) == 7
    fake_eutils.reset()
    k = client(fake_eutils, tmp_path / "b", api_key=SECRET)
    for i in range(13):
        k.esearch(f"3000000{i + 1}[pmid]")
    assert fake_eutils.assert_rate(10) == 13
    assert all(r["params"]["api_key"] == [SECRET] for r in fake_eutils.requests)


def test_rate_limit_is_shared_by_clients_and_threads(fake_eutils, tmp_path):
    import threading

    clients = [client(fake_eutils, tmp_path / str(i)) for i in range(3)]
    threads = [threading.Thread(target=lambda c=c, i=i: [c.esearch(f"{i}{j}[pmid]") for j in range(5)])
               for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_eutils.assert_rate(10) == 15


def test_cache_second_call_offline_refresh(fake_eutils, tmp_path):
    e = client(fake_eutils, tmp_path)
    first = list(e.efetch_xml(["30000001"]))
    again = list(client(fake_eutils, tmp_path).efetch_xml(["30000001"]))
    assert again == first and fake_eutils.count() == 1
    off = Eutils(tmp_path / "cache", base_url="http://127.0.0.1:9/", offline=True)  # nothing listens on port 9
    assert list(off.efetch_xml(["30000001"])) == first and off.stats["requests"] == 0
    with pytest.raises(NotFound, match=r"^not in the cache: efetch id=30000002; run without --offline$"):
        list(off.efetch_xml(["30000002"]))
    r = client(fake_eutils, tmp_path, refresh=True)
    list(r.efetch_xml(["30000001"]))
    list(r.efetch_xml(["30000001"]))  # refreshed once per run, then answered from the cache
    assert fake_eutils.count() == 2 and r.stats == {"requests": 1, "cache_hits": 1, "retries": 0}


def test_api_key_is_not_part_of_the_cache(fake_eutils, tmp_path):
    with_key = client(fake_eutils, tmp_path, api_key=SECRET)
    list(with_key.efetch_xml(["30000001", "30000003"]))
    with_key.elink(["30000001"], "pubmed_pubmed_citedin")
    with_key.esearch("10.5555/kb.2011.0842[doi]")
    without = Eutils(tmp_path / "cache", base_url=fake_eutils.base_url, offline=True)
    list(without.efetch_xml(["30000001", "30000003"]))
    assert without.stats["cache_hits"] == 1
    files = list((tmp_path / "cache").rglob("*"))
    assert len([f for f in files if f.is_file()]) == 3
    for f in files:
        assert SECRET not in str(f)
        if f.is_file():
            raw = f.read_bytes()
            assert SECRET.encode() not in raw and SECRET.encode() not in gzip.decompress(raw)
            header = json.loads(gzip.decompress(raw).split(b"\n", 1)[0])
            assert "api_key" not in json.dumps(header)
            assert header["status"] == 200 and header["retrieved"] and header["request"].startswith("http://127.0.0.1")
    assert all(r["params"].get("api_key") == [SECRET] for r in fake_eutils.requests)


def test_api_key_absent_from_logs(fake_eutils, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    fake_eutils.fail("500")
    fake_eutils.fail("drop")
    e = client(fake_eutils, tmp_path, api_key=SECRET)
    list(e.efetch_xml(["30000001"]))
    assert "retrying" in caplog.text and SECRET not in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad-checksum", "bad-body"])
def test_corrupt_cache_file_is_detected_and_refetched(fake_eutils, tmp_path, damage):
    e = client(fake_eutils, tmp_path)
    good = list(e.efetch_xml(["30000001"]))[0][0]
    [path] = [p for p in (tmp_path / "cache").rglob("*.gz")]
    raw = path.read_bytes()
    data = gzip.decompress(raw)
    head, body = data.split(b"\n", 1)
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "bad-checksum":  # a valid gzip whose body does not match its header
        path.write_bytes(gzip.compress(head + b"\n" + body.replace(b"Case series", b"Case SERIES")))
    else:  # a consistent header but a body that is not XML: still never handed out as data
        h = json.loads(head)
        bad = body[: len(body) // 2]
        h.update(length=len(bad), sha256=hashlib.sha256(bad).hexdigest())
        path.write_bytes(gzip.compress(json.dumps(h).encode() + b"\n" + bad))
    off = Eutils(tmp_path / "cache", base_url=fake_eutils.base_url, offline=True)
    with pytest.raises(NotFound):
        list(off.efetch_xml(["30000001"]))
    again = client(fake_eutils, tmp_path)
    assert list(again.efetch_xml(["30000001"]))[0][0] == good
    assert again.stats["requests"] == 1 and fake_eutils.count() == 2
    assert Cache(tmp_path / "cache").get("efetch.fcgi", cache_key("efetch.fcgi", h_params(path))) is not None


def h_params(path):
    header = json.loads(gzip.decompress(path.read_bytes()).split(b"\n", 1)[0])
    return [tuple(p) for p in header["params"]]


def test_cache_key_ignores_secrets_and_order():
    a = cache_key("efetch.fcgi", [("db", "pubmed"), ("id", "1,2"), ("api_key", "x"), ("email", "a@b")])
    b = cache_key("efetch.fcgi", [("id", "1,2"), ("db", "pubmed"), ("tool", "kb")])
    assert a == b and a != cache_key("efetch.fcgi", [("db", "pubmed"), ("id", "1,3")])
    assert describe("efetch.fcgi", [("db", "pubmed"), ("id", ",".join(map(str, range(BATCH))))]).endswith("(200 ids)")
