"""kb.parse: PubMed XML and MEDLINE text to records, and `kb import`, on hand-written fixtures."""

import gzip
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from kb.cli import cli
from kb.errors import KbError, ParseError
from kb.parse import importer, import_files, parse_medline_text, parse_pubmed_xml, source, values
from kb.records import dumps, dumps_bytes, provenance, read_records, record_files

FIX = Path(__file__).parent / "fixtures" / "pubmed"
EFETCH = FIX / "efetch-2025.xml"
BASELINE = FIX / "medline-baseline.xml"
NBIB = FIX / "records.nbib"

PAPER_KEYS = {"type", "id", "kind", "pmid", "doi", "pmcid", "title", "abstract", "abstract_sections", "authors",
              "journal", "year", "pub_date", "volume", "issue", "pages", "languages", "publication_types", "mesh",
              "keywords", "chemicals", "references", "book", "provenance"}
JOURNAL_KEYS = {"title", "iso", "issn", "issn_type", "issn_linking", "nlm_id", "country", "medline_ta"}
AUTHOR_KEYS = {"last", "fore", "initials", "suffix", "collective", "orcid", "affiliations"}


@pytest.fixture(scope="module")
def efetch():
    return list(parse_pubmed_xml(EFETCH))


def by_pmid(records):
    return {r["pmid"]: r for r in records if r["type"] == "paper"}


def test_efetch_2025_doctype_yields_every_record_kind(efetch):
    assert [(r["type"], r.get("kind"), r["pmid"]) for r in efetch] == [
        ("paper", "article", "90000001"), ("paper", "article", "90000002"), ("paper", "article", "90000003"),
        ("paper", "article", "90000004"), ("paper", "book", "90000005"),
        ("deleted", None, "90000098"), ("deleted", None, "90000099")]
    for r in efetch:
        if r["type"] == "paper":
            assert set(r) == PAPER_KEYS
            assert set(r["journal"]) == JOURNAL_KEYS
            assert all(set(a) == AUTHOR_KEYS for a in r["authors"])
        assert r["provenance"] == provenance("pubmed-xml", request="efetch-2025.xml")


def test_full_article_fields(efetch):
    r = by_pmid(efetch)["90000001"]
    assert r["id"] == "pmid:90000001"
    assert r["doi"] == "10.9999/s12185-011-0842-7"          # ArticleIdList wins over ELocationID, normalised
    assert r["pmcid"] == "PMC9000001"
    assert r["title"] == ("Case series of pediatric acute leukemia with CD10+ blasts detected by magnetic "
                          "resonance imaging.")
    assert r["abstract_sections"] == [
        {"label": "BACKGROUND", "category": "BACKGROUND", "text": "Leukemia without a peripheral blood abnormality is rare."},
        {"label": "METHODS", "category": "METHODS", "text": "We reviewed four children imaged with MRI (T1-weighted)."},
        {"label": "CONCLUSIONS", "category": "CONCLUSIONS", "text": "MRI can detect marrow infiltration early."}]
    assert r["abstract"] == ("BACKGROUND: Leukemia without a peripheral blood abnormality is rare.\n\n"
                             "METHODS: We reviewed four children imaged with MRI (T1-weighted).\n\n"
                             "CONCLUSIONS: MRI can detect marrow infiltration early.")
    assert r["authors"] == [
        {"last": "Kato", "fore": "Motohiro", "initials": "M", "suffix": None, "collective": None,
         "orcid": "0000-0002-1825-0097",
         "affiliations": ["Department of Pediatrics, Example University, Tokyo, Japan.",
                          "Children's Cancer Center, Example Hospital, Tokyo, Japan."]},
        {"last": "Koh", "fore": "Katsuyoshi", "initials": "K", "suffix": "Jr", "collective": None,
         "orcid": "0000-0002-1825-009X", "affiliations": []},
        {"last": None, "fore": None, "initials": None, "suffix": None,
         "collective": "Japan Pediatric Leukemia/Lymphoma Study Group", "orcid": None, "affiliations": []}]
    assert r["journal"] == {"title": "International journal of hematology", "iso": "Int J Hematol",
                            "issn": "1865-3774", "issn_type": "Electronic", "issn_linking": "0925-5710",
                            "nlm_id": "9111627", "country": "Japan", "medline_ta": "Int J Hematol"}
    assert (r["year"], r["pub_date"]) == (2011, "2011-06-07")
    assert (r["volume"], r["issue"], r["pages"]) == ("93", "6", "787-90")
    assert r["languages"] == ["eng", "jpn"]
    assert r["publication_types"] == [{"ui": "D002363", "name": "Case Reports"},
                                      {"ui": "D016428", "name": "Journal Article"}]
    assert r["mesh"] == [
        {"ui": "D002648", "name": "Child", "major": False, "descriptor_major": False, "qualifiers": []},
        {"ui": "D007938", "name": "Leukemia", "major": True, "descriptor_major": False, "qualifiers": [
            {"ui": "Q000000981", "name": "diagnostic imaging", "major": True},
            {"ui": "Q000473", "name": "pathology", "major": False}]},
        {"ui": "D008279", "name": "Magnetic Resonance Imaging", "major": True, "descriptor_major": True,
         "qualifiers": []}]
    assert r["keywords"] == [{"text": "bone marrow MRI", "major": True, "owner": "NOTNLM"},
                             {"text": "pediatric leukemia", "major": False, "owner": "NOTNLM"}]
    assert r["chemicals"] == [{"ui": "D000074", "name": "Antigens, CD10", "registry_number": None},
                              {"ui": "D002244", "name": "Carbon", "registry_number": "7440-44-0"}]
    # ReferenceList (nested list flattened); CommentsCorrections "Cites" are not used when it exists.
    assert r["references"] == [
        {"citation": "Pui CH, Evans WE. Treatment of acute lymphoblastic leukemia. N Engl J Med. 2006;354:166-78.",
         "pmid": "90000101", "doi": "10.9999/nejmra052603", "pmcid": None},
        {"citation": "Reference with a PMC id only.", "pmid": None, "doi": None, "pmcid": "PMC9000102"},
        {"citation": "A reference with no identifiers at all, only text.", "pmid": None, "doi": None, "pmcid": None},
        {"citation": "Nested reference.", "pmid": "90000104", "doi": None, "pmcid": None}]
    assert r["book"] is None


def test_medline_date_unstructured_abstract_and_elocation_doi(efetch):
    r = by_pmid(efetch)["90000002"]
    assert (r["year"], r["pub_date"]) == (1997, "1997 Sep-Oct")
    assert r["abstract"] == "Plain abstract text without sections."        # not the OtherAbstract
    assert r["abstract_sections"] == [{"label": None, "category": None, "text": r["abstract"]}]
    assert r["doi"] == "10.9999/eloc.only"
    assert r["pages"] == "101-9" and r["journal"]["issn_type"] == "Print"


def test_date_falls_back_to_article_date_then_history(efetch):
    records = by_pmid(efetch)
    assert (records["90000003"]["year"], records["90000003"]["pub_date"]) == (2025, "2025-02-28")
    assert (records["90000004"]["year"], records["90000004"]["pub_date"]) == (2025, "2025-03-03")  # "pubmed" status


def test_book_article(efetch):
    r = by_pmid(efetch)["90000005"]
    assert r["kind"] == "book"
    assert r["title"] == "Acute Leukemia in Children: an overview"
    assert r["book"] == {
        "title": "ExampleReviews®", "publisher": "Example University Press", "publisher_location": "Seattle (WA)",
        "editors": [{"last": "Adam", "fore": "Margaret P", "initials": "MP", "suffix": None, "collective": None,
                     "orcid": None, "affiliations": []}],
        "edition": "2nd", "volume": None, "collection_title": None, "isbns": ["978-0-00-000000-2"],
        "medium": "Internet", "chapter": "Acute Leukemia in Children", "accession": "NBK9005"}
    assert [a["last"] for a in r["authors"]] == ["Doe"]
    assert r["authors"][0]["affiliations"] == ["Example University"]
    assert r["abstract"].startswith("CLINICAL CHARACTERISTICS: Children present with fatigue.\n\nMANAGEMENT:")
    assert (r["year"], r["pub_date"]) == (1993, "1993")
    assert r["publication_types"] == [{"ui": "D016454", "name": "Review"}]
    assert all(v is None for v in r["journal"].values())


def test_delete_citation(efetch):
    deleted = [r for r in efetch if r["type"] == "deleted"]
    assert [set(r) for r in deleted] == [{"type", "pmid", "provenance"}] * 2
    assert [r["pmid"] for r in deleted] == ["90000098", "90000099"]


def test_medline_citation_set():
    records = list(parse_pubmed_xml(BASELINE))
    assert [r["type"] for r in records] == ["paper", "paper", "deleted"]
    first, second, deleted = records
    assert first["provenance"]["source"] == "medline-xml"
    assert first["pmcid"] == "PMC8000001"                        # from OtherID, "[Available on ...]" dropped
    assert (first["year"], first["pub_date"]) == (2015, "2015 Winter")
    assert first["references"] == [                             # CommentsCorrections RefType="Cites" only
        {"citation": "J Sleep Res. 2000 Mar;9(1):35-42", "pmid": "70000001", "doi": None, "pmcid": None},
        {"citation": "Am J Med. 2001;163:608-13", "pmid": "70000002", "doi": None, "pmcid": None}]
    assert first["authors"][0]["last"] == "Müller"
    assert first["authors"][0]["affiliations"] == ["Old-style article-level affiliation, Example City."]
    assert first["authors"][1]["suffix"] == "3rd" and first["authors"][1]["fore"] is None
    assert first["journal"]["iso"] == "Baseline J." and first["issue"] == "3-4"
    assert (second["year"], second["pub_date"]) == (1998, "1998 Dec-1999 Jan")
    assert second["authors"][0]["collective"] == "Example Consortium"
    assert deleted["pmid"] == "80000099"


def test_gz_bytes_and_file_object_sources_agree(tmp_path, efetch):
    gz = tmp_path / "efetch-2025.xml.gz"
    gz.write_bytes(gzip.compress(EFETCH.read_bytes()))
    assert list(parse_pubmed_xml(gz)) == [dict(r, provenance=provenance("pubmed-xml", request=gz.name))
                                          for r in efetch]
    prov = provenance("eutils", retrieved="2026-01-01T00:00:00Z", request="efetch.fcgi?db=pubmed&id=1")
    from_bytes = list(parse_pubmed_xml(EFETCH.read_bytes(), provenance=prov))
    assert from_bytes == [dict(r, provenance=prov) for r in efetch]
    with open(gz, "rb") as fh:
        assert list(parse_pubmed_xml(fh, provenance=prov)) == from_bytes
    assert list(parse_pubmed_xml(io.BytesIO(gzip.compress(EFETCH.read_bytes())), prov)) == from_bytes


def test_title_markup_and_whitespace_flattened():
    xml = (b'<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>5</PMID><Article>'
           b'<ArticleTitle><i>Drosophila</i> <i>melanogaster</i>\n   genes in H<sub>2</sub>O</ArticleTitle>'
           b'<Abstract><AbstractText>x<sup>2</sup> &amp; &#955; &lt;5</AbstractText></Abstract>'
           b'</Article></MedlineCitation></PubmedArticle></PubmedArticleSet>')
    [r] = parse_pubmed_xml(xml)
    assert r["title"] == "Drosophila melanogaster genes in H2O"
    assert r["abstract"] == "x2 & \u03bb <5"


def test_orcid_forms():
    norm = values._orcid
    assert norm("http://orcid.org/0000-0002-1825-0097") == "0000-0002-1825-0097"
    assert norm(" 0000000218250097 ") == "0000-0002-1825-0097"
    assert norm("0000-0002-1694-233x") == "0000-0002-1694-233X"
    assert norm("not an orcid") is None and norm(None) is None


def test_medline_text():
    records = list(parse_medline_text(NBIB))
    assert [r["pmid"] for r in records] == ["90000011", "90000012"]
    r = records[0]
    assert set(r) == PAPER_KEYS and set(r["journal"]) == JOURNAL_KEYS
    assert r["provenance"] == provenance("medline-text", request="records.nbib")
    assert r["title"] == ("Case series of pediatric acute leukemia without a peripheral blood abnormality, "
                          "detected by magnetic resonance imaging.")
    assert r["doi"] == "10.9999/s12185-011-0842-7" and r["pmcid"] == "PMC9000011"
    assert [s["label"] for s in r["abstract_sections"]] == ["BACKGROUND", "METHODS", "CONCLUSIONS"]
    assert r["abstract_sections"][1]["text"] == "We reviewed four children (ages 2-9: all boys)."
    assert r["authors"] == [
        {"last": "Kato", "fore": "Motohiro", "initials": "M", "suffix": None, "collective": None,
         "orcid": "0000-0002-1825-0097",
         "affiliations": ["Department of Pediatrics, Example University, Tokyo, Japan.",
                          "Children's Cancer Center, Tokyo, Japan."]},
        {"last": "Koh", "fore": "Katsuyoshi", "initials": "K", "suffix": None, "collective": None, "orcid": None,
         "affiliations": []},
        {"last": "Smith", "fore": "John", "initials": "J", "suffix": "Jr", "collective": None, "orcid": None,
         "affiliations": []},
        {"last": None, "fore": None, "initials": None, "suffix": None, "collective": "Example Study Group",
         "orcid": None, "affiliations": []}]
    assert r["journal"] == {"title": "International journal of hematology", "iso": None, "issn": "1865-3774",
                            "issn_type": "Electronic", "issn_linking": "0925-5710", "nlm_id": "9111627",
                            "country": "Japan", "medline_ta": "Int J Hematol"}
    assert (r["year"], r["pub_date"], r["volume"], r["issue"], r["pages"]) == (2011, "2011-06", "93", "6", "787-90")
    assert r["languages"] == ["eng"]
    assert r["publication_types"] == [{"ui": None, "name": "Case Reports"}, {"ui": None, "name": "Journal Article"}]
    assert r["mesh"] == [
        {"ui": None, "name": "Child", "major": False, "descriptor_major": False, "qualifiers": []},
        {"ui": None, "name": "Leukemia", "major": True, "descriptor_major": False, "qualifiers": [
            {"ui": None, "name": "diagnostic imaging", "major": True},
            {"ui": None, "name": "pathology", "major": False}]},
        {"ui": None, "name": "Magnetic Resonance Imaging", "major": True, "descriptor_major": True, "qualifiers": []}]
    assert r["keywords"] == [{"text": "bone marrow MRI", "major": False, "owner": "NOTNLM"},
                             {"text": "pediatric leukemia", "major": False, "owner": "NOTNLM"}]
    assert r["chemicals"] == [{"ui": None, "name": "Antigens, CD10", "registry_number": None},
                              {"ui": None, "name": "Carbon", "registry_number": "7440-44-0"}]
    second = records[1]
    assert (second["year"], second["pub_date"], second["pmcid"]) == (1997, "1997 Sep-Oct", "PMC9000012")
    assert second["authors"][0]["last"] == "Doe" and second["authors"][0]["initials"] == "J"


def test_medline_text_crlf_and_gz(tmp_path):
    gz = tmp_path / "r.nbib.gz"
    gz.write_bytes(gzip.compress(NBIB.read_bytes().replace(b"\n", b"\r\n")))
    plain = [dict(r, provenance=None) for r in parse_medline_text(NBIB)]
    assert [dict(r, provenance=None) for r in parse_medline_text(gz)] == plain


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("PMID- 1\nthis line is not a field\n", "line 2: not MEDLINE text"),
    ("TI  - a record without a PMID\n", "without a valid PMID"),
])
def test_medline_text_errors(text, message):
    with pytest.raises(ParseError, match=message):
        list(parse_medline_text(text.encode()))


def test_json_lines_are_exactly_records_dumps(efetch):
    for r in efetch + list(parse_medline_text(NBIB)):
        assert dumps_bytes(r) == dumps(r).encode("utf-8")


# --- kb import ------------------------------------------------------------------------------------


def run_import(*args):
    return CliRunner().invoke(cli, ["import", *map(str, args)], catch_exceptions=False)


def test_cli_import_writes_one_records_file_per_input(tmp_path):
    gz = tmp_path / "baseline.xml.gz"
    gz.write_bytes(gzip.compress(BASELINE.read_bytes()))
    data = tmp_path / "data"
    result = run_import(EFETCH, gz, NBIB, "--data", data)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Imported 9 records (3 deleted) from 3 files into {data / 'records'}"
    files = record_files(data)
    assert [f.name for f in files] == ["import-baseline.jsonl", "import-efetch-2025.jsonl", "import-records.jsonl"]
    assert sorted(p.name for p in (data / "records").iterdir()) == [f.name for f in files]  # no temporary files
    records = list(read_records(files))
    assert len(records) == 12
    assert (data / "records" / "import-efetch-2025.jsonl").read_text(encoding="utf-8") == "".join(
        dumps(r) + "\n" for r in parse_pubmed_xml(EFETCH))
    assert {r["provenance"]["source"] for r in records} == {"pubmed-xml", "medline-xml", "medline-text"}
    before = {f.name: f.read_bytes() for f in files}
    assert run_import(EFETCH, gz, NBIB, "--data", data).exit_code == 0                    # a re-run is identical
    assert {f.name: f.read_bytes() for f in record_files(data)} == before


def big_article_set(n: int, first_pmid: int = 50_000_000) -> bytes:
    """n copies of the fixture's full article with distinct PMIDs, plus a book and deletions."""
    text = EFETCH.read_bytes()
    article = text[text.index(b"<PubmedArticle>"):text.index(b"</PubmedArticle>") + len(b"</PubmedArticle>")]
    book = text[text.index(b"<PubmedBookArticle>"):text.index(b"</PubmedBookArticle>") + 20]
    parts = [text[:text.index(b"<PubmedArticleSet>") + len(b"<PubmedArticleSet>")], b"\n"]
    for i in range(n):
        parts.append(article.replace(b">90000001<", f">{first_pmid + i}<".encode()) + b"\n")
        if i == n // 2:
            parts.append(book + b"\n<DeleteCitation><PMID>1</PMID></DeleteCitation>\n")
    parts.append(b"</PubmedArticleSet>\n")
    return b"".join(parts)


@pytest.fixture
def small_chunks(monkeypatch):
    """Parallel import on a file of ~1.5 MB, cut into many 40 kB chunks, each parsed in pieces of a few records."""
    monkeypatch.setattr(source, "BLOCK", 1 << 18)
    monkeypatch.setattr(importer, "CHUNK", 40_000)
    monkeypatch.setattr(importer, "PIECE", 9_000)


@pytest.mark.parametrize("compressed", [False, True])
def test_parallel_import_matches_sequential_parse(tmp_path, small_chunks, compressed, monkeypatch):
    xml = big_article_set(300)
    src = tmp_path / ("big.xml.gz" if compressed else "big.xml")
    src.write_bytes(gzip.compress(xml) if compressed else xml)
    seen = []
    sequential = parse_pubmed_xml
    monkeypatch.setattr(importer, "parse_pubmed_xml", None)             # the pool must do all the work
    summary = import_files([src], tmp_path / "data", progress=seen.append)
    monkeypatch.setattr(importer, "parse_pubmed_xml", sequential)
    assert summary == {"files": 1, "records": 301, "deleted": 1,
                       "outputs": [str(tmp_path / "data" / "records" / "import-big.jsonl")]}
    assert sum(seen) == 302 and len(seen) >= 5                       # progress arrived chunk by chunk
    expected = "".join(dumps(r) + "\n" for r in parse_pubmed_xml(src))
    assert Path(summary["outputs"][0]).read_text(encoding="utf-8") == expected
    assert [p.name for p in (tmp_path / "data" / "records").iterdir()] == ["import-big.jsonl"]


def test_piece_ends_after_the_first_record_end_tag_past_the_offset():
    cuts = importer.CUT_TAGS["PubmedArticleSet"]
    long = b"<PubmedArticle>" + b"x" * 40_000 + b"</PubmedArticle>"      # longer than the first search window
    chunk = b"<PubmedArticle>a</PubmedArticle>\n" + long + b"<DeleteCitation><PMID>1</PMID></DeleteCitation>"
    first = chunk.index(b"</PubmedArticle>") + len(b"</PubmedArticle>")
    second = chunk.index(b"</PubmedArticle>", first) + len(b"</PubmedArticle>")
    assert importer._piece_end(chunk, 0, cuts) == first
    assert importer._piece_end(chunk, first, cuts) == second                       # found past the window
    assert importer._piece_end(chunk, second - 5, cuts) == len(chunk)              # inside an end tag: the next one
    assert importer._piece_end(chunk, second, cuts) == len(chunk)                  # </DeleteCitation> ends it
    assert importer._piece_end(chunk, len(chunk), cuts) == len(chunk)
    for at in range(16_370, 16_400):                                               # a tag across the window's edge
        body = b"<PubmedArticle>" + b"y" * (at - 15) + b"</PubmedArticle>"
        assert importer._piece_end(body, 1, cuts) == len(body)


def test_parallel_import_of_baseline_layout_keeps_breaks_next_to_inline_markup(tmp_path, small_chunks):
    xml = re.sub(rb">\s*\n\s*<", b">\n<", big_article_set(300))      # one line break between tags
    odd = xml.replace(b"of <i>pediatric</i> acute", b"of <i>pediatric</i>\n<i>acute</i>", 1)
    for name, data in (("flat.xml", xml), ("odd.xml", odd)):
        src = tmp_path / name
        src.write_bytes(data)
        summary = import_files([src], tmp_path / name.replace(".", "-"), progress=False)
        lines = Path(summary["outputs"][0]).read_text(encoding="utf-8")
        assert lines == "".join(dumps(r) + "\n" for r in parse_pubmed_xml(src))
        assert json.loads(lines.splitlines()[0])["title"].startswith("Case series of pediatric acute leukemia")


def test_parallel_import_of_truncated_file_reports_the_line(tmp_path, small_chunks):
    xml = big_article_set(300)
    src = tmp_path / "cut.xml"
    src.write_bytes(xml[: len(xml) * 2 // 3])
    result = CliRunner().invoke(cli, ["import", str(src), "--data", str(tmp_path / "data")])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert line.startswith(f"Error: {src}: line ") and "truncated" in line
    assert list((tmp_path / "data" / "records").iterdir()) == []


def test_parallel_import_falls_back_when_a_cut_tag_hides_in_a_comment(tmp_path, small_chunks, monkeypatch):
    xml = big_article_set(300)
    cut = xml.index(b"<PubmedArticle>", len(xml) // 3)
    decoys = b"<!-- " + b"</PubmedArticle> " * 6000 + b"-->\n"        # ~100 kB: some chunk cut lands inside
    xml = xml[:cut] + decoys + xml[cut:]
    src = tmp_path / "odd.xml"
    src.write_bytes(xml)
    calls = []
    sequential = parse_pubmed_xml
    monkeypatch.setattr(importer, "parse_pubmed_xml", lambda *a, **k: calls.append(a) or sequential(*a, **k))
    summary = import_files([src], tmp_path / "data", progress=False)
    assert calls == [(src,)]                                        # the split failed; re-read in one piece
    assert summary["records"] == 301
    assert Path(summary["outputs"][0]).read_text(encoding="utf-8") == "".join(
        dumps(r) + "\n" for r in sequential(src))


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"   \n\n", "empty file"),
    (bytes(range(256)) * 4, "binary file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (b"Title: a list of papers\nAuthor: me\n", "unknown format"),
    (b'{"type": "paper"}\n', "unknown format"),
    (b"<html><body>not pubmed</body></html>", "not PubMed XML (root element <html>"),
    (EFETCH.read_bytes()[:2500], "truncated"),
    (gzip.compress(EFETCH.read_bytes())[:900], "truncated or corrupt gzip"),
])
def test_cli_import_bad_input_one_line_nothing_written(tmp_path, content, message):
    good = tmp_path / "good.xml"
    good.write_bytes(EFETCH.read_bytes())
    bad = tmp_path / "bad.xml"
    bad.write_bytes(content)
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["import", str(good), str(bad), "--data", str(data)])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: {bad}") and message in result.output
    records = data / "records"
    assert not records.exists() or list(records.iterdir()) == []      # all or nothing


def test_import_errors_for_missing_files_and_name_clashes(tmp_path):
    with pytest.raises(KbError, match="no such file"):
        import_files([tmp_path / "missing.xml"], tmp_path / "data")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.xml").write_bytes(EFETCH.read_bytes())
    (tmp_path / "x.xml.gz").write_bytes(gzip.compress(EFETCH.read_bytes()))
    with pytest.raises(KbError, match="both be written to records/import-x.jsonl"):
        import_files([tmp_path / "a" / "x.xml", tmp_path / "x.xml.gz"], tmp_path / "data")
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "missing.nbib")])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_records_written_are_valid_json_lines(tmp_path):
    import_files([EFETCH, NBIB], tmp_path, progress=False)
    for path in record_files(tmp_path):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert json.loads(line)["type"] in ("paper", "deleted")
