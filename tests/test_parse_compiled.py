"""The compiled PubMed field reader (kb/parse/_pubmed_fields.pyx) gives exactly the records of the
Python reader (kb/parse/pubmed_xml.py), or None where it leaves a record to it; `kb import` uses it."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from lxml import etree

from kb.errors import ParseError
from kb.parse import import_files, parse_pubmed_xml, pubmed_xml
from kb.parse.source import _parser

FIX = Path(__file__).parent / "fixtures" / "pubmed"
PROV = {"source": "test"}

try:
    from kb.parse._pubmed_fields import article as compiled
except ImportError:  # the assertion below says what to do
    compiled = None


def test_compiled_reader_is_built():
    assert compiled is not None, ("kb/parse/_pubmed_fields.pyx is not built (no C compiler?): "
                                  "`pip install -e .` builds it; kb import is ~30% slower without it")
    assert pubmed_xml._compiled_article is compiled


def records_of(xml: bytes, parser=None):
    root = etree.fromstring(xml, parser or _parser())
    return [el for el in root.iter("PubmedArticle", "MedlineCitation")
            if el.getparent() is None or el.getparent().tag != "PubmedArticle"]


def same_as_python(el):
    """The compiled record of `el` equals the Python one; returns it (None: left to Python)."""
    try:
        expected = pubmed_xml._article(el, PROV)
    except ParseError:
        expected = ParseError
    got = compiled(el, PROV)
    if got is not None:
        assert expected is not ParseError, "the Python reader refuses this record"
        assert got == expected
        assert list(got) == list(expected)  # key order too: JSON Lines are written from these dicts
    return got


@pytest.mark.parametrize("name", ["efetch-2025.xml", "medline-baseline.xml"])
def test_fixture_records_are_identical(name):
    els = records_of((FIX / name).read_bytes())
    assert els
    for el in els:
        assert same_as_python(el) is not None, el.findtext(".//PMID")


ARTICLE = ("<PubmedArticle><MedlineCitation><PMID>{pmid}</PMID><Article>{article}</Article></MedlineCitation>"
           "<PubmedData><ArticleIdList><ArticleId IdType='doi'>10.1/X</ArticleId></ArticleIdList></PubmedData>"
           "</PubmedArticle>")


@pytest.mark.parametrize("title, expected", [
    ("Plain title.", "Plain title."),
    ("  padded\t title \n", "padded title"),
    ("A <i>italic</i> and H<sub>2</sub>O", "A italic and H2O"),
    ("<![CDATA[x < y]]> and z", "x < y and z"),
    ("\u00a0non-breaking\u2009spaces\u00a0", "non-breaking\u2009spaces"),
    ("M<m:mi xmlns:m='http://www.w3.org/1998/Math/MathML'>x</m:mi>", "Mx"),
    ("", None),
])
def test_titles_with_markup_and_whitespace(title, expected):
    el, = records_of(ARTICLE.format(pmid="7", article=f"<ArticleTitle>{title}</ArticleTitle>").encode())
    rec = same_as_python(el)
    assert rec is not None and rec["title"] == expected
    assert rec["doi"] == "10.1/x" and rec["id"] == "pmid:7"


def test_unexpected_nodes_are_left_to_python():
    """A comment or entity reference inside a field's text (kb's own parser removes comments; these come
    from a parser that keeps them) and a record without a valid PMID go to the Python reader."""
    keep = etree.XMLParser(remove_comments=False, resolve_entities=False, load_dtd=False, no_network=True)
    xml = ARTICLE.format(pmid="8", article="<ArticleTitle>a<!-- note -->b</ArticleTitle>").encode()
    el, = records_of(xml, keep)
    assert compiled(el, PROV) is None
    assert pubmed_xml._records_of(el, PROV)[0]["title"] == "ab"

    dtd = b'<!DOCTYPE PubmedArticle [<!ENTITY e "E">]>'
    el = etree.fromstring(dtd + ARTICLE.format(pmid="9", article="<ArticleTitle>a&e;b</ArticleTitle>").encode(), keep)
    assert compiled(el, PROV) is None
    assert pubmed_xml._records_of(el, PROV)[0]["pmid"] == "9"

    el, = records_of(ARTICLE.format(pmid="x1", article="").encode())
    assert compiled(el, PROV) is None
    with pytest.raises(ParseError, match="without a valid PMID"):
        list(parse_pubmed_xml(b"<PubmedArticleSet>" + etree.tostring(el) + b"</PubmedArticleSet>"))


def test_import_uses_it(tmp_path, monkeypatch):
    """kb import's workers read articles with the compiled reader (the Python one is not called)."""
    def refuse(*args):
        raise AssertionError("the Python reader was used")

    monkeypatch.setattr(pubmed_xml, "_article", refuse)
    src = tmp_path / "set.xml"
    src.write_bytes(b"<PubmedArticleSet>" + b"".join(
        ARTICLE.format(pmid=str(i), article=f"<ArticleTitle>T{i}</ArticleTitle>").encode() for i in range(1, 40))
        + b"</PubmedArticleSet>")
    summary = import_files([src], tmp_path / "data", progress=False)
    assert summary["records"] == 39


# ---------------------------------------------------------------------------------------------
# Random records: every field the reader knows, in any order, repeated or missing, with hostile text.

CHARS = st.sampled_from(["a", "Z", "9", "-", ",", ";", ".", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2009",
                         "\u00e9", "\u6f22", "&amp;", "&lt;", "PMC12", "10.1/AB", "0000-0002-1825-0097"])
TEXT = st.lists(CHARS, max_size=6).map("".join)
INLINE = st.one_of(
    TEXT,
    TEXT.map(lambda t: f"<i>{t}</i>"),
    TEXT.map(lambda t: f"<sup>{t}<b>{t}</b></sup>{t}"),
    TEXT.map(lambda t: f"<![CDATA[{t}]]>"),
    TEXT.map(lambda t: f"<m:mi xmlns:m='http://www.w3.org/1998/Math/MathML'>{t}</m:mi>"),
)
CONTENT = st.lists(INLINE, max_size=3).map("".join)
YN = st.sampled_from(["", " ValidYN='N'", " ValidYN='Y'", " MajorTopicYN='Y'", " MajorTopicYN='N'",
                      " xml:lang='en'"])


def el(tag, content=CONTENT, attrs=st.just("")):
    return st.tuples(attrs, content).map(lambda p: f"<{tag}{p[0]}>{p[1]}</{tag}>")


def many(*children, max_size=4):
    return st.lists(st.one_of(*children), max_size=max_size).map("".join)


def wrap(tag, *children, attrs=st.just(""), max_size=4):
    return el(tag, many(*children, max_size=max_size), attrs)


def attr(name, *values):
    return st.sampled_from([""] + [f" {name}='{v}'" for v in values])


DIGITS = st.sampled_from(["1997", "2011", " 2004 ", "87", "3", "12", "Sep", "sept", "Spring", "1997 Dec-1998 Jan", ""])
DATE_PARTS = (el("Year", DIGITS), el("Month", DIGITS), el("Day", DIGITS), el("Season", DIGITS),
              el("MedlineDate", DIGITS))
AUTHOR = wrap("Author", el("LastName"), el("ForeName"), el("Initials"), el("Suffix"), el("CollectiveName"),
              wrap("AffiliationInfo", el("Affiliation")), el("Affiliation"),
              el("Identifier", TEXT, attr("Source", "ORCID", "Other")), attrs=YN, max_size=6)
ARTICLE_PARTS = (
    wrap("Journal", el("Title"), el("ISOAbbreviation"), el("ISSN", TEXT, attr("IssnType", "Print")),
         wrap("JournalIssue", el("Volume"), el("Issue"), wrap("PubDate", *DATE_PARTS))),
    el("ArticleTitle"), el("VernacularTitle"), el("Affiliation"), el("Language", TEXT),
    wrap("AuthorList", AUTHOR, attrs=st.sampled_from(["", " Type='authors'", " Type='editors'", " CompleteYN='N'"])),
    wrap("Abstract", el("AbstractText", CONTENT, attr("Label", "METHODS", "")), el("CopyrightInformation")),
    wrap("Pagination", el("MedlinePgn", TEXT), el("StartPage", TEXT), el("EndPage", TEXT)),
    el("ELocationID", TEXT, st.sampled_from(["", " EIdType='doi'", " EIdType='doi' ValidYN='N'", " EIdType='pii'"])),
    wrap("PublicationTypeList", el("PublicationType", TEXT, attr("UI", "D016428"))),
    wrap("ArticleDate", *DATE_PARTS),
)
CITATION_PARTS = (
    el("PMID", st.sampled_from(["21567"])),
    wrap("Article", *ARTICLE_PARTS, max_size=8),
    wrap("MeshHeadingList", wrap("MeshHeading", el("DescriptorName", TEXT, st.tuples(attr("UI", "D1"), YN).map("".join)),
                                 el("QualifierName", TEXT, st.tuples(attr("UI", "Q1"), YN).map("".join)))),
    wrap("MedlineJournalInfo", el("Country", TEXT), el("MedlineTA", TEXT), el("NlmUniqueID", TEXT),
         el("ISSNLinking", TEXT)),
    wrap("KeywordList", el("Keyword", CONTENT, YN), attrs=attr("Owner", "NOTNLM")),
    wrap("ChemicalList", wrap("Chemical", el("RegistryNumber", st.sampled_from(["0", "9007", " x "])),
                              el("NameOfSubstance", TEXT, attr("UI", "C1")))),
    wrap("CommentsCorrectionsList", wrap("CommentsCorrections", el("RefSource"), el("PMID", TEXT),
                                         attrs=attr("RefType", "Cites", "ErratumIn"))),
    el("OtherID", TEXT, attr("Source", "NLM")),
)
IDS = wrap("ArticleIdList", el("ArticleId", TEXT, attr("IdType", "pubmed", "doi", "pmc", "pii")))
REFERENCE = wrap("Reference", el("Citation"), IDS)
DATA_PARTS = (
    IDS,
    wrap("ReferenceList", REFERENCE, wrap("ReferenceList", REFERENCE), el("Title")),
    wrap("History", wrap("PubMedPubDate", *DATE_PARTS, attrs=attr("PubStatus", "pubmed", "entrez", "received"))),
)
RECORD = st.one_of(
    st.tuples(many(*CITATION_PARTS, max_size=8), many(*DATA_PARTS)).map(
        lambda p: f"<PubmedArticle><MedlineCitation>{p[0]}</MedlineCitation><PubmedData>{p[1]}</PubmedData>"
                  "</PubmedArticle>"),
    many(*CITATION_PARTS, max_size=8).map(lambda s: f"<MedlineCitation>{s}</MedlineCitation>"),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RECORD)
def test_random_records_are_identical(xml):
    el = etree.fromstring(xml.encode(), _parser())
    got = same_as_python(el)
    citation = el if el.tag == "MedlineCitation" else el.find("MedlineCitation")
    if citation.findtext("PMID") == "21567":
        assert got is not None   # a valid PMID: nothing else in these records is left to the Python reader
