"""kb.ids: the identifier forms people paste, and their resolution through the fake E-utilities server."""

import pytest

from fake_eutils import fake_eutils  # noqa: F401
from kb.errors import KbError, NotFound
from kb.eutils import Eutils
from kb.ids import classify, resolve, resolve_all


@pytest.mark.parametrize("text,kind,value", [
    ("21479354", "pmid", "21479354"),
    (" PMID: 21479354 ", "pmid", "21479354"),
    ("pmid:21479354", "pmid", "21479354"),
    ("https://pubmed.ncbi.nlm.nih.gov/21479354/", "pmid", "21479354"),
    ("pubmed.ncbi.nlm.nih.gov/21479354", "pmid", "21479354"),
    ("https://www.ncbi.nlm.nih.gov/pubmed/21479354", "pmid", "21479354"),
    ("http://www.ncbi.nlm.nih.gov/pubmed/21479354?dopt=Abstract", "pmid", "21479354"),
    ("10.1007/s12185-011-0842-7", "doi", "10.1007/s12185-011-0842-7"),
    ("doi:10.1007/S12185-011-0842-7", "doi", "10.1007/s12185-011-0842-7"),
    ("DOI: 10.1007/s12185-011-0842-7.", "doi", "10.1007/s12185-011-0842-7"),
    ("https://doi.org/10.1007/s12185-011-0842-7", "doi", "10.1007/s12185-011-0842-7"),
    ("http://dx.doi.org/10.1007%2Fs12185-011-0842-7", "doi", "10.1007/s12185-011-0842-7"),
    ("dx.doi.org/10.1002/(SICI)1097-0258(19980115)17:1<1::AID-SIM1>3.0.CO;2-T",
     "doi", "10.1002/(sici)1097-0258(19980115)17:1<1::aid-sim1>3.0.co;2-t"),
    ("PMC3110398", "pmcid", "PMC3110398"),
    ("pmcid: pmc3110398", "pmcid", "PMC3110398"),
    ("https://www.ncbi.nlm.nih.gov/pmc/articles/PMC3110398/", "pmcid", "PMC3110398"),
    ("https://pmc.ncbi.nlm.nih.gov/articles/PMC3110398/", "pmcid", "PMC3110398"),
])
def test_classify(text, kind, value):
    ident = classify(text)
    assert (ident.kind, ident.value, ident.query) == (kind, value, text)


@pytest.mark.parametrize("text", ["", "   ", "foo", "0", "PMID:", "https://example.org/21479354",
                                  "https://pubmed.ncbi.nlm.nih.gov/?term=leukemia", "10.12/short", "1234567890"])
def test_not_identifiers_get_one_line(text):
    with pytest.raises(KbError) as info:
        classify(text)
    assert "\n" not in str(info.value) and "PMID" in str(info.value)


def make(server, tmp_path):
    return Eutils(tmp_path / "cache", base_url=server.base_url, api_key="k", backoff=0.01)


def test_resolve_doi_pmcid_and_urls(fake_eutils, tmp_path):
    e = make(fake_eutils, tmp_path)
    assert resolve("https://doi.org/10.5555/KB.2011.0842", e) == "30000001"
    assert resolve("PMC7000002", e) == "30000002"
    assert resolve("https://pmc.ncbi.nlm.nih.gov/articles/PMC7000006/", e) == "30000006"
    assert resolve("https://pubmed.ncbi.nlm.nih.gov/30000003/", e) == "30000003"
    terms = [r["params"]["term"][0] for r in fake_eutils.requests if r["endpoint"] == "esearch.fcgi"]
    assert terms == ["10.5555/kb.2011.0842[doi]", "PMC7000002[pmcid]", "PMC7000006[pmcid]"]


def test_resolve_falls_back_to_aid_and_to_elink(fake_eutils, tmp_path):
    e = make(fake_eutils, tmp_path)
    real = e.esearch
    calls = []

    def esearch(term, **kw):
        calls.append(term)
        return [] if term.endswith("[doi]") or term.endswith("[pmcid]") else real(term, **kw)

    e.esearch = esearch
    assert resolve("doi:10.5555/kb.2009.0003", e) == "30000003"
    assert calls[-1] == '"10.5555/kb.2009.0003"[AID]'
    assert resolve("PMC7000010", e) == "30000010"
    assert any(r["endpoint"] == "elink.fcgi" and r["params"]["dbfrom"] == ["pmc"]
               and r["params"]["linkname"] == ["pmc_pubmed"] and r["params"]["id"] == ["7000010"]
               for r in fake_eutils.requests)


def test_unresolvable_ones_get_a_line_and_the_others_go_on(fake_eutils, tmp_path):
    e = make(fake_eutils, tmp_path)
    resolved, errors = resolve_all(["10.5555/nope", "30000001", "PMC1", "bogus", "PMC7000011"], e)
    assert resolved == [("30000001", "30000001"), ("PMC7000011", "30000011")]
    assert errors[0] == "DOI 10.5555/nope: no PubMed record has this DOI"
    assert errors[1] == "PMC1: no PubMed record for this PMC article"
    assert errors[2].startswith("'bogus' is not an identifier")


def test_offline_cache_miss_stops_resolution(fake_eutils, tmp_path):
    e = Eutils(tmp_path / "cache", base_url=fake_eutils.base_url, offline=True)
    with pytest.raises(NotFound, match="not in the cache: esearch"):
        resolve_all(["10.5555/kb.2011.0842"], e)
    assert fake_eutils.count() == 0
