"""kb refs: splitting and parsing free-text reference lists, offline matching, online resolution, the command."""

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kb import refs
from kb.cli import cli
from kb.errors import KbError, ParseError
from kb.records import dumps, provenance, read_records

FIX = Path(__file__).parent / "fixtures" / "refs"
PAGE = FIX / "kato2011-article-page.txt"
PAPERS = FIX / "kato2011-papers.jsonl"
SEED = "doi:10.1007/s12185-011-0842-7"

# (first author, initials, et al, title start, journal, year, volume, first page, last page, n authors)
KATO_REFS = [
    ("Daldrup-Link", "HE", False, "MR imaging of therapy-induced changes of bone marrow", "Eur Radiol", 2007, "17", "743", "761", 3),
    ("Kwee", "TC", True, "Whole-body magnetic resonance imaging, including diffusion-weighted", "Br J Haematol", 2010, "149", "628", "630", 6),
    ("Moulopoulos", "LA", False, "Magnetic resonance imaging of the bone marrow in hematologic malignancies", "Blood", 1997, "90", "2127", "2147", 2),
    ("Shih", "TT", True, "Bone marrow angiogenesis magnetic resonance imaging in patients with acute myeloid leukemia: peak",
     "Blood", 2009, "113", "3161", "3167", 6),
    ("Takemoto", "C", False, "Comparison of two methods for evaluating bone marrow metastasis of neuroblastoma: reverse",
     "Pediatr Int", 2004, "46", "387", "393", 5),
]
KATO_CITED = ["doi:10.1007/s00330-006-0404-1", "ref:Kwee2010", "ref:Moulopoulos1997", "ref:Shih2009",
              "doi:10.1111/j.1442-200x.2004.01921.x"]


def paper(id, title, journal_title, iso, year, volume, pages, first_author="Someone", doi=None, pmid=None):
    """A minimal kb paper record (kb/records.py) for matching tests."""
    return {"type": "paper", "id": id, "pmid": pmid, "doi": doi, "title": title,
            "authors": [{"last": first_author, "fore": None, "initials": "A", "suffix": None, "collective": None,
                         "orcid": None, "affiliations": []}],
            "journal": {"title": journal_title, "iso": iso}, "year": year, "volume": volume, "issue": None,
            "pages": pages, "provenance": provenance("test")}


def write_jsonl(path, records):
    path.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------- splitting

def test_article_page_splits_into_exactly_its_five_references():
    items = refs.split_references(PAGE.read_text(encoding="utf-8"))
    assert [n for n, _ in items] == [1, 2, 3, 4, 5]
    for (number, text), expected in zip(items, KATO_REFS):
        assert text.startswith(expected[0] + " " + expected[1])
        assert text.endswith(".")
        for junk in ("PubMed", "Google Scholar", "CAS", "Download", "Conflict", "Kato, M."):
            assert junk not in text, (number, junk)
    assert items[0][1] == ("Daldrup-Link HE, Henning T, Link TM. MR imaging of therapy-induced changes of bone "
                           "marrow. Eur Radiol. 2007;17:743\u201361.")


@pytest.mark.parametrize("index", range(5))
def test_article_page_fields(index):
    last, initials, et_al, title, journal, year, volume, first, lastp, n_authors = KATO_REFS[index]
    ref = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))[index]
    assert ref["number"] == index + 1
    assert ref["authors"][0] == {"last": last, "initials": initials, "collective": None}
    assert len(ref["authors"]) == n_authors and ref["et_al"] is et_al
    assert ref["title"].startswith(title) and not ref["title"].endswith(".")
    assert (ref["journal"], ref["year"], ref["volume"], ref["issue"]) == (journal, year, volume, None)
    assert (ref["first_page"], ref["last_page"]) == (first, lastp)
    assert ref["doi"] is None and ref["pmid"] is None
    assert "\u2013" in ref["raw"]        # raw text kept as on the page


def test_kwee_multiword_surname():
    ref = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))[1]
    assert [a["last"] for a in ref["authors"]] == ["Kwee", "Fijnheer", "Ludwig", "Quarles van Ufford", "Uiterwaal",
                                                  "Bierings"]


@pytest.mark.parametrize("name, count", [("brackets.txt", 3), ("paren-wrapped.txt", 3), ("unnumbered.txt", 3),
                                         ("variants.txt", 7)])
def test_other_layouts_split(name, count):
    parsed = refs.parse_reference_list((FIX / name).read_text(encoding="utf-8"))
    assert [r["number"] for r in parsed] == list(range(1, count + 1))
    assert all(r["year"] and r["title"] for r in parsed)


def test_wrapped_lines_hyphens_and_trailing_page_text():
    parsed = refs.parse_reference_list((FIX / "paren-wrapped.txt").read_text(encoding="utf-8"))
    first, second, third = parsed
    assert first["authors"][0]["last"] == "Daldrup-Link"
    assert first["doi"] == "10.1007/s00330-006-0404-1"
    assert (first["year"], first["volume"], first["issue"], first["first_page"], first["last_page"]) == \
        (2007, "17", "3", "743", "761")
    assert "Epub" not in first["title"] and first["journal"] == "Eur Radiol"
    assert second["title"].endswith("in malignant lymphoma") and second["issue"] == "4"
    assert third["pmid"] == "15310201"
    assert "Table 1" not in third["raw"]


def test_unnumbered_wrapped_entry_joined():
    parsed = refs.parse_reference_list((FIX / "unnumbered.txt").read_text(encoding="utf-8"))
    assert parsed[1]["title"] == "Magnetic resonance imaging of the bone marrow in hematologic malignancies"
    assert parsed[1]["journal"] == "Blood"


@pytest.mark.parametrize("text, numbers", [
    ("1. 1.\n\nSmith A. One title. J X. 2001;1:1-2.\n\n2. 2.\n\nJones B. Two title. J Y. 2002;2:3-4.\n", [1, 2]),
    ("[1] [1] Smith A. One title. J X. 2001;1:1-2.\n[2] Jones B. Two title. J Y. 2002;2:3-4.\n", [1, 2]),
    ("Intro: see step 1.\n3. Smith A. One title. J X. 2001;1:1-2.\n4. Jones B. Two title. J Y. 2002;2:3-4.\n"
     "5. Lee C. Three. J Z. 2003;3:5-6.\nFig. 2. A caption\n", [3, 4, 5]),
    ("1. Introduction\n1. Smith A. One title. J X. 2001;1:1-2.\n2. Jones B. Two title. J Y. 2002;2:3-4.\n", [1, 2]),
])
def test_numbering_variants(text, numbers):
    items = refs.split_references(text)
    assert [n for n, _ in items] == numbers
    assert items[0][1].startswith("Smith A. One title")


# ---------------------------------------------------------------- field parsing

def test_parse_vancouver_variants():
    parsed = refs.parse_reference_list((FIX / "variants.txt").read_text(encoding="utf-8"))
    halpern, who, smith, imwg, geraud, mejia, kim = parsed
    assert (halpern["journal"], halpern["year"], halpern["volume"], halpern["issue"], halpern["first_page"],
            halpern["last_page"]) == ("N Engl J Med", 2002, "347", "4", "284", "287")
    assert who["authors"] == [{"last": None, "initials": None, "collective": "World Health Organization"}]
    assert who["year"] == 2019 and who["volume"] is None
    assert smith["title"] == "Does whole-body MRI change staging?" and smith["journal"] == "Lancet"
    assert smith["authors"][-1]["collective"] == "ABC Study Group" and smith["pmid"] == "11293642"
    assert imwg["title"].endswith("gammopathies!") and imwg["authors"][0]["collective"].startswith("International")
    assert (geraud["volume"], geraud["first_page"], geraud["last_page"]) == ("42 Suppl 2", "S93", "S99")
    assert (mejia["first_page"], mejia["last_page"], mejia["doi"]) == ("e54714", None, "10.7759/cureus.54714")
    assert [a["last"] for a in kim["authors"]] == ["Kim", "O'Brien", "van der Berg"]
    assert (kim["year"], kim["issue"], kim["last_page"]) == (1999, "9", "1012")


def test_parse_month_issue_doi_epub():
    ref = refs.parse_reference(
        "Kwee TC, Fijnheer R. Whole-body MRI for lymphoma. Br J Haematol. 2010 Mar;149(4):628-30. "
        "doi: 10.1111/j.1365-2141.2009.08020.x. Epub 2009 Nov 23.")
    assert (ref["journal"], ref["year"], ref["volume"], ref["issue"], ref["first_page"], ref["last_page"]) == \
        ("Br J Haematol", 2010, "149", "4", "628", "630")
    assert ref["doi"] == "10.1111/j.1365-2141.2009.08020.x" and ref["title"] == "Whole-body MRI for lymphoma"


def test_parse_spaced_source_and_period_abbreviations():
    ref = refs.parse_reference("Smith A, Jones B. A title here. J Clin Oncol 2005; 23: 100-110.")
    assert (ref["journal"], ref["year"], ref["volume"], ref["first_page"], ref["last_page"]) == \
        ("J Clin Oncol", 2005, "23", "100", "110")
    ref = refs.parse_reference("Smith A. A title here. Br. J. Haematol. 2010;149:628.")
    assert ref["title"] == "A title here" and ref["journal"] == "Br. J. Haematol"


@pytest.mark.parametrize("pages, expected", [
    ("743\u201361", ("743", "761")), ("743-61", ("743", "761")), ("3161-7", ("3161", "3167")),
    ("2127\u201447", ("2127", "2147")), ("1001-1012", ("1001", "1012")), ("S93-9", ("S93", "S99")),
    ("e54714", ("e54714", None)), ("99-101", ("99", "101")), (None, (None, None)),
])
def test_expand_pages(pages, expected):
    assert refs.expand_pages(pages) == expected


def test_empty_reference_is_parse_error():
    with pytest.raises(ParseError):
        refs.parse_reference("   ")
    with pytest.raises(ParseError):
        refs.parse_reference_list("Nothing here looks like a reference\n\n")


# ---------------------------------------------------------------- offline matching

@pytest.fixture
def kato_index():
    return refs.MatchIndex.from_paths([PAPERS])


def test_offline_matches_all_five(kato_index):
    parsed = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))
    for ref, expected in zip(parsed, KATO_CITED):
        record, details = kato_index.match(ref)
        assert record is not None and record["id"] == expected
        assert details["method"] == "citation" and details["score"] >= 0.95
        assert details["fields_agreeing"] == ["journal", "year", "volume", "first_page"]
        assert details["title_similarity"] >= 0.95 and details["match_file"] == "kato2011-papers.jsonl"


@pytest.mark.parametrize("change", [{"year": 2008}, {"volume": "18"}, {"year": 2008, "first_page": "1"},
                                    {"volume": "18", "first_page": "1"}])
def test_wrong_year_or_volume_does_not_match(kato_index, change):
    ref = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))[0]
    ref.update(change)
    assert kato_index.match(ref) == (None, None)


def test_wrong_title_with_same_citation_does_not_match(kato_index):
    ref = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))[2]
    ref["title"] = "Something entirely unrelated about renal transplantation outcomes"
    assert kato_index.match(ref) == (None, None)


def test_title_match_when_pages_missing(kato_index):
    ref = refs.parse_reference("Moulopoulos LA, Dimopoulos MA. Magnetic resonance imaging of the bone marrow in "
                               "hematologic malignancies. Blood. 1997.")
    record, details = kato_index.match(ref)
    assert record["id"] == "ref:Moulopoulos1997" and details["method"] == "title"


def test_match_by_doi_in_text(kato_index):
    ref = refs.parse_reference("Somebody A. Garbled. Nowhere. 1900;1:1. doi:10.1007/S00330-006-0404-1")
    record, details = kato_index.match(ref)
    assert record["id"] == "doi:10.1007/s00330-006-0404-1" and details["method"] == "doi"


def test_journal_full_title_and_abbreviation():
    assert refs.journal_matches("Eur Radiol", ["European Radiology"]) is True
    assert refs.journal_matches("Pediatr Int", [None, "Pediatrics International"]) is True
    assert refs.journal_matches("Br J Haematol", ["Br J Haematol", None]) is True
    assert refs.journal_matches("Blood", ["Blood"]) is True
    assert refs.journal_matches("Blood", ["Eur Radiol", "European Radiology"]) is False
    assert refs.journal_matches(None, ["Blood"]) is None


def test_match_against_full_journal_title_only(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [paper("ref:X", "MR imaging of therapy-induced changes of bone marrow",
                                                      "European Radiology", None, 2007, "17", "743-761")])
    ref = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))[0]
    record, details = refs.MatchIndex.from_paths([path]).match(ref)
    assert record["id"] == "ref:X" and "journal" in details["fields_agreeing"]


def test_ambiguous_match_is_not_resolved(tmp_path):
    title = "Magnetic resonance imaging of the bone marrow in hematologic malignancies"
    path = write_jsonl(tmp_path / "p.jsonl", [paper("ref:A", title, "Blood", "Blood", 1997, "90", "2127-47"),
                                               paper("ref:B", title, "Blood", "Blood", 1997, "90", "2127-2147")])
    ref = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))[2]
    record, details = refs.MatchIndex.from_paths([path]).match(ref)
    assert record is None and details["method"] == "ambiguous" and details["candidates"] == ["ref:A", "ref:B"]


def test_match_reads_data_dirs(tmp_path):
    (tmp_path / "records").mkdir()
    write_jsonl(tmp_path / "records" / "a.jsonl", [json.loads(line) for line in PAPERS.read_text().splitlines()])
    assert len(refs.MatchIndex.from_paths([tmp_path])) == 6


# ---------------------------------------------------------------- online resolution (stub)

class StubEutils:
    """Implements the two calls refs uses, counting them."""

    def __init__(self, ecit=None, search=None):
        self.ecit, self.search = ecit or {}, search or {}
        self.ecit_calls, self.esearch_calls = [], []

    def ecitmatch(self, citations):
        self.ecit_calls.append(citations)
        out = {}
        for c in citations:
            out[c["key"]] = self.ecit.get((c["journal"], c["year"], c["volume"], c["first_page"]))
        return out

    def esearch(self, term, *, db="pubmed", retmax=20):
        self.esearch_calls.append(term)
        for fragment, pmids in self.search.items():
            if fragment in term:
                return pmids
        return []


def test_resolve_online_batches_ecitmatch_then_esearch():
    parsed = refs.parse_reference_list(PAGE.read_text(encoding="utf-8"))
    stub = StubEutils(ecit={("Eur Radiol", "2007", "17", "743"): "17021704", ("Blood", "1997", "90", "2127"): "9310462"},
                      search={"Whole-body magnetic resonance": ["20151984"], "Bone marrow angiogenesis": ["1", "2"]})
    found = refs.resolve_online(parsed, stub)
    assert len(stub.ecit_calls) == 1 and len(stub.ecit_calls[0]) == 5
    assert stub.ecit_calls[0][0]["author"] == "Daldrup-Link HE"
    assert found[0][:2] == ("17021704", "ecitmatch") and found[2][:2] == ("9310462", "ecitmatch")
    assert found[1][:2] == ("20151984", "esearch-title")
    assert 3 not in found and 4 not in found      # two hits: not accepted; no hit: unresolved
    assert len(stub.esearch_calls) == 3
    assert stub.esearch_calls[0].startswith('"Whole-body magnetic resonance imaging') and "2010[pdat]" in stub.esearch_calls[0]


def test_refs_command_online_with_stub(tmp_path, capsys):
    stub = StubEutils(ecit={("Blood", "1997", "90", "2127"): "9310462"},
                      search={"Whole-body magnetic resonance": ["20151984"]})
    records = refs.refs_command(PAGE, tmp_path, citing="21573874", match_paths=[PAPERS.parent / "kato2011-papers.jsonl"],
                                eutils=stub, offline=False)
    # matched offline first; only the references without a record go online (none here)
    assert [r["source"] for r in records] == ["reflist-match"] * 5 and stub.ecit_calls == []
    records = refs.refs_command(PAGE, tmp_path, citing="21573874", eutils=stub)
    assert [r["cited"] for r in records] == [None, "pmid:20151984", "pmid:9310462", None, None]
    assert [r["source"] for r in records] == ["reflist-text", "esearch-title", "ecitmatch", "reflist-text", "reflist-text"]
    assert all(r["citing"] == "pmid:21573874" for r in records)
    out = capsys.readouterr().out
    assert "3. Moulopoulos 1997 Blood: ecitmatch -> pmid:9310462" in out
    assert out.strip().splitlines()[-1].startswith("5 parsed, 2 resolved")


# ---------------------------------------------------------------- the command, end to end

def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_cli_offline_match_writes_five_citations(tmp_path):
    data = tmp_path / "data"
    result = run(["refs", str(PAGE), "--data", str(data), "--citing", SEED, "--match", str(PAPERS), "--offline"])
    assert result.exit_code == 0, result.output
    out = data / "records" / "refs-kato2011-article-page.jsonl"
    records = list(read_records([out]))
    coverage = records.pop()                    # the list's own count, for the completeness page
    assert coverage["type"] == "coverage" and coverage["paper"] == SEED and coverage["source"] == "reflist"
    assert coverage["references"] == coverage["stated_references"] == 5 and coverage["message"].startswith("5 of 5")
    assert [r["cited"] for r in records] == KATO_CITED
    assert [r["number"] for r in records] == [1, 2, 3, 4, 5]
    for r in records:
        assert r["type"] == "citation" and r["citing"] == SEED and r["resolved"] is True
        assert r["source"] == "reflist-match" and r["match"]["method"] == "citation" and r["score"] >= 0.95
        assert r["raw"] and r["parsed"]["title"] and r["provenance"]["request"] == "kato2011-article-page.txt"
    assert records[0]["cited_doi"] == "10.1007/s00330-006-0404-1"
    assert records[1]["parsed"]["journal"] == "Br J Haematol"
    assert "5 parsed, 5 resolved" in result.output
    assert "2. Kwee 2010 Br J Haematol: reflist-match -> ref:Kwee2010" in result.output
    first = out.read_bytes()
    assert run(["refs", str(PAGE), "--data", str(data), "--citing", SEED, "--match", str(PAPERS),
                "--offline"]).exit_code == 0
    assert out.read_bytes() == first            # deterministic
    assert not list((data / "records").glob("*.tmp"))


def test_cli_offline_without_match_parses_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kb.eutils", None)       # any attempt to go online would fail loudly
    result = run(["refs", str(PAGE), "--data", str(tmp_path), "--offline"])
    assert result.exit_code == 0, result.output
    records = list(read_records([tmp_path / "records" / "refs-kato2011-article-page.jsonl"]))
    assert len(records) == 5 and not any(r["resolved"] for r in records)
    assert all(r["cited"] is None and r["citing"] is None and r["source"] == "reflist-text" for r in records)
    assert records[4]["parsed"]["journal"] == "Pediatr Int"
    assert "5 parsed, 0 resolved" in result.output
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("value, key", [
    ("21573874", "pmid:21573874"), ("pmid:21573874", "pmid:21573874"),
    ("https://pubmed.ncbi.nlm.nih.gov/21573874/", "pmid:21573874"),
    ("10.1007/S12185-011-0842-7", SEED), ("doi:10.1007/s12185-011-0842-7", SEED),
    ("https://doi.org/10.1007/s12185-011-0842-7", SEED), ("ref:Kato2011", "ref:Kato2011"), (None, None),
])
def test_citing_forms(value, key):
    assert refs.citing_key(value) == key


def _error(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_cli_errors(tmp_path):
    assert "no such file" in _error(["refs", str(tmp_path / "missing.txt"), "--data", str(tmp_path), "--offline"])
    (tmp_path / "empty.txt").write_text("  \n\n")
    assert "empty" in _error(["refs", str(tmp_path / "empty.txt"), "--data", str(tmp_path), "--offline"])
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert "binary" in _error(["refs", str(tmp_path / "bin.txt"), "--data", str(tmp_path), "--offline"])
    (tmp_path / "prose.txt").write_text("Dear editor,\nthank you for the review.\n")
    assert "no references found" in _error(["refs", str(tmp_path / "prose.txt"), "--data", str(tmp_path), "--offline"])
    assert "--citing" in _error(["refs", str(PAGE), "--data", str(tmp_path), "--offline", "--citing", "nonsense id"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert "not a JSON record" in _error(["refs", str(PAGE), "--data", str(tmp_path), "--offline", "--match", str(bad)])
    assert not (tmp_path / "records").exists()      # nothing half-written


# ---------------------------------------------------------------- property tests (hostile input)

_FRAGMENTS = st.sampled_from([
    "Smith AB", ", ", ". ", "et al.", "Kwee TC", "Quarles van Ufford HM", "2010", ";", ":", "(", ")", "149",
    "628\u201330", "-", "doi:", "10.1000/xyz", "PMID:", "123", "Epub", "Mar", "?", "!", "[", "]", "Blood",
    "Br J Haematol", "\u2014", "Suppl", " ", "\n", "1.", "[1]", "1)", "e12", "\u00a0", "\t", "https://doi.org/",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.lists(_FRAGMENTS, max_size=60).map("".join)))
def test_parse_reference_never_crashes(text):
    try:
        ref = refs.parse_reference(text)
    except KbError:
        return
    assert isinstance(ref, dict) and ref["raw"]
    assert ref["year"] is None or isinstance(ref["year"], int)
    json.dumps(ref)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=500), st.lists(_FRAGMENTS, max_size=120).map("".join)))
def test_parse_reference_list_never_crashes(text):
    try:
        parsed = refs.parse_reference_list(text)
    except KbError:
        return
    assert parsed and all(isinstance(r, dict) for r in parsed)


# ---------------------------------------------------------------- online, end to end against the fake E-utilities

def _kato_corpus():
    """A fake PubMed (tests/fake_eutils.py) holding some of the seed's references, under made-up PMIDs.

    Eur Radiol and Blood papers match by ECitMatch; Kwee's first page differs (ECitMatch misses it, the
    title search finds it once); Shih's title exists twice in another volume (two hits: not accepted);
    Takemoto is absent.
    """
    from fake_eutils import Corpus, Journal, Paper

    eur = Journal("European radiology", "Eur Radiol", "1432-1084", "9114774", "Germany")
    bjh = Journal("British journal of haematology", "Br J Haematol", "1365-2141", "0372544")
    blood = Journal("Blood", "Blood", "1528-0020", "7603509", "United States")
    a = lambda last, fore, initials: (last, fore, initials, None, "Example University.")  # noqa: E731
    shih = "Bone marrow angiogenesis magnetic resonance imaging in patients with acute myeloid leukemia: peak " \
           "enhancement ratio is an independent predictor for overall survival."
    return Corpus([
        Paper("90000001", "MR imaging of therapy-induced changes of bone marrow.", eur, 2007, 3, "17", "3", "743-61",
              authors=[a("Daldrup-Link", "Heike E", "HE")]),
        Paper("90000002", "Whole-body magnetic resonance imaging, including diffusion-weighted imaging, for diagnosing "
              "bone marrow involvement in malignant lymphoma.", bjh, 2010, 5, "149", "4", "627-30",
              authors=[a("Kwee", "Thomas C", "TC")]),
        Paper("90000003", "Magnetic resonance imaging of the bone marrow in hematologic malignancies.", blood, 1997, 9,
              "90", "6", "2127-47", authors=[a("Moulopoulos", "Lia A", "LA")]),
        Paper("90000004", shih, blood, 2009, 4, "112", "14", "3161-7", authors=[a("Shih", "Tiffany", "TT")]),
        Paper("90000005", shih, blood, 2009, 4, "112", "15", "3161-7", authors=[a("Shih", "Tiffany", "TT")]),
    ])


@pytest.fixture
def kato_eutils(monkeypatch):
    fake_eutils = pytest.importorskip("fake_eutils")
    pytest.importorskip("kb.eutils")
    with fake_eutils.FakeEutils(_kato_corpus()) as server:
        monkeypatch.setenv("KB_EUTILS_URL", server.base_url)
        monkeypatch.setenv("KB_EUTILS_BACKOFF", "0.01")
        monkeypatch.delenv("NCBI_API_KEY", raising=False)
        yield server


def test_cli_online_against_fake_eutils(tmp_path, kato_eutils):
    secret = "SECRETKEY0123456789"
    data = tmp_path / "data"
    kato_eutils.fail("500", endpoint="ecitmatch")               # retried by kb.eutils, nothing lost
    args = ["refs", str(PAGE), "--data", str(data), "--citing", SEED, "--email", "t@example.org", "--api-key", secret]
    result = run(args)
    assert result.exit_code == 0, result.output
    records = list(read_records([data / "records" / "refs-kato2011-article-page.jsonl"]))
    assert records.pop()["message"].startswith("3 of 5 references resolved")
    assert [r["cited"] for r in records] == ["pmid:90000001", "pmid:90000002", "pmid:90000003", None, None]
    assert [r["source"] for r in records] == ["ecitmatch", "esearch-title", "ecitmatch", "reflist-text",
                                              "reflist-text"]
    assert records[1]["match"]["term"].startswith('"Whole-body magnetic resonance imaging')
    assert [r["resolved"] for r in records] == [True, True, True, False, False]
    assert kato_eutils.count("ecitmatch") == 2                 # one batch for all five (+ the retried 500)
    assert kato_eutils.count("esearch") == 3                   # Kwee, Shih, Takemoto
    assert "5 parsed, 3 resolved" in result.output
    assert "2. Kwee 2010 Br J Haematol: esearch-title -> pmid:90000002" in result.output
    for root, _, files in os.walk(data):
        for name in files:
            assert secret.encode() not in Path(root, name).read_bytes()
    before = kato_eutils.count()
    assert run(args).exit_code == 0
    assert kato_eutils.count() == before                      # answered from the cache
    assert list(read_records([data / "records" / "refs-kato2011-article-page.jsonl"]))[:-1] == records


def test_cli_online_matches_offline_first(tmp_path, kato_eutils):
    result = run(["refs", str(PAGE), "--data", str(tmp_path), "--match", str(PAPERS)])
    assert result.exit_code == 0, result.output
    assert kato_eutils.count() == 0                           # every reference matched a known record
    assert "5 parsed, 5 resolved" in result.output


def test_cli_online_failure_is_one_line_and_keeps_the_parse(tmp_path, kato_eutils):
    kato_eutils.fail("500", times=50)
    result = CliRunner().invoke(cli, ["refs", str(PAGE), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: resolving online failed"), result.stderr
    assert ("500" in errors[0] or "ecitmatch" in errors[0].lower()) and "run the same command again" in errors[0]
    assert "5 parsed, 0 resolved" in result.stdout
    kept = list(read_records([tmp_path / "records" / "refs-kato2011-article-page.jsonl"]))
    assert [r["number"] for r in kept] == [1, 2, 3, 4, 5]
    assert not any(r["resolved"] for r in kept) and kept[0]["raw"].startswith("Daldrup-Link HE")
    # Once the server answers again, the same command resolves them.
    kato_eutils.reset()
    result = CliRunner().invoke(cli, ["refs", str(PAGE), "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_encodings(tmp_path):
    text = "1. Müller A, Gómez B. Título de prueba. Rev Esp. 2001;1:1-2.\n"
    for name, data in [("u16.txt", text.encode("utf-16")), ("cp.txt", text.encode("cp1252")),
                       ("bom.txt", b"\xef\xbb\xbf" + text.encode())]:
        (tmp_path / name).write_bytes(data)
        ref = refs.parse_reference_list(refs.read_reference_file(tmp_path / name))[0]
        assert ref["authors"][0]["last"] == "Müller" and ref["title"] == "Título de prueba"


def test_anonymous_title_is_not_taken_for_an_author():
    ref = refs.parse_reference("Magnetic resonance imaging of bone MR. Blood. 2001;1:1-2.")
    assert ref["authors"] == [] and ref["title"] == "Magnetic resonance imaging of bone MR"
    assert ref["journal"] == "Blood"
