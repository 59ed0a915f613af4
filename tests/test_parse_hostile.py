"""Hostile and broken input for kb.parse: entity attacks are refused without expansion or network,
and arbitrary bytes, XML and MEDLINE text give records or kb's own error, never anything else."""

import gzip
import http.server
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from kb.cli import cli
from kb.errors import KbError, ParseError
from kb.parse import import_files, parse_medline_text, parse_pubmed_xml
from kb.records import dumps, dumps_bytes

FIX = Path(__file__).parent / "fixtures" / "pubmed"
EFETCH = (FIX / "efetch-2025.xml").read_bytes()
NBIB = (FIX / "records.nbib").read_bytes()

ARTICLE = (b"<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Article>"
           b"<ArticleTitle>%s</ArticleTitle></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>")


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 that records every request made to it."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = b'<!ENTITY leak "LEAKED">'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def refused(xml: bytes) -> str:
    with pytest.raises(ParseError) as info:
        list(parse_pubmed_xml(xml))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_xxe_file_entity_refused_without_reading_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    xml = (b'<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet [\n  <!ENTITY xxe SYSTEM "file://'
           + str(secret).encode() + b'">\n]>\n' + ARTICLE % b"&xxe;")
    message = refused(xml)
    assert "declares entities" in message and "TOP-SECRET" not in message


def test_xxe_http_entity_refused_without_network(server):
    url, hits = server
    xml = (b'<!DOCTYPE PubmedArticleSet [<!ENTITY xxe SYSTEM "' + url.encode() + b'/x">]>' + ARTICLE % b"&xxe;")
    assert "declares entities" in refused(xml)
    param = b'<!DOCTYPE PubmedArticleSet [<!ENTITY % dtd SYSTEM "' + url.encode() + b'/p.dtd"> %dtd;]>' + ARTICLE % b"x"
    assert "declares entities" in refused(param)
    assert hits == []


def test_external_dtd_is_never_fetched(server):
    url, hits = server
    xml = b'<!DOCTYPE PubmedArticleSet SYSTEM "' + url.encode() + b'/pubmed_260101.dtd">' + ARTICLE % b"&leak;ok"
    [record] = parse_pubmed_xml(xml)            # an undefined entity stays a literal reference: nothing expanded
    assert "LEAKED" not in record["title"] and record["title"].endswith("ok")
    assert hits == []


def test_billion_laughs_refused_fast():
    lol = [b'<!ENTITY lol0 "lol">'] + [
        b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%d;" % (i - 1) for _ in range(10))) for i in range(1, 10)]
    xml = b'<?xml version="1.0"?><!DOCTYPE PubmedArticleSet [' + b"".join(lol) + b"]>" + ARTICLE % b"&lol9;"
    start = time.monotonic()
    assert "declares entities" in refused(xml)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("prolog", [
    b'<!-- a comment first --><!DOCTYPE PubmedArticleSet [<!ENTITY a "b">]>',
    b'<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"pubmed_250101.dtd" [ <!-- ] --> <!ENTITY a "]>" > ]>',
    b"<!DOCTYPE PubmedArticleSet [<!ELEMENT x ANY><!ENTITY a 'b'>]>",
])
def test_entity_declarations_found_wherever_they_hide(prolog):
    assert "declares entities" in refused(prolog + ARTICLE % b"&a;")


def test_import_refuses_entities_and_writes_nothing(tmp_path):
    bad = tmp_path / "xxe.xml.gz"
    bad.write_bytes(gzip.compress(b'<!DOCTYPE PubmedArticleSet [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                                  + ARTICLE % b"&x;"))
    result = CliRunner().invoke(cli, ["import", str(bad), "--data", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "declares entities" in result.output and "root:" not in result.output
    assert list((tmp_path / "data" / "records").iterdir()) == []


# --- property-based: records or KbError, nothing else ----------------------------------------------

TAGS = ["PubmedArticleSet", "PubmedArticle", "MedlineCitation", "PMID", "Article", "ArticleTitle", "Abstract",
        "AbstractText", "AuthorList", "Author", "LastName", "ForeName", "Identifier", "Journal", "JournalIssue",
        "PubDate", "Year", "Month", "Day", "MedlineDate", "MeshHeadingList", "MeshHeading", "DescriptorName",
        "QualifierName", "PubmedData", "ArticleIdList", "ArticleId", "ReferenceList", "Reference", "Citation",
        "DeleteCitation", "PubmedBookArticle", "BookDocument", "Book", "KeywordList", "Keyword", "ChemicalList",
        "Chemical", "Pagination", "StartPage", "MedlinePgn", "ELocationID", "i", "sup", "x"]
ATTRS = {"IdType": ["doi", "pubmed", "pmc", "pii"], "MajorTopicYN": ["Y", "N"], "Source": ["ORCID"],
         "Label": ["BACKGROUND", ""], "EIdType": ["doi"], "Type": ["editors", "authors"], "ValidYN": ["N", "Y"]}
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).map(
    lambda s: s.replace("&", "&amp;").replace("<", "&lt;"))


def element(children):
    def render(args):
        tag, attrs, kids, text = args
        attr = "".join(f' {k}="{v}"' for k, v in attrs)
        return f"<{tag}{attr}>{text}{''.join(kids)}</{tag}>"
    return st.tuples(st.sampled_from(TAGS), st.lists(st.sampled_from(
        [(k, v) for k, vs in ATTRS.items() for v in vs]), max_size=2, unique_by=lambda kv: kv[0]),
        st.lists(children, max_size=4), texts).map(render)


xml_docs = st.builds(
    lambda root, body, doctype: (doctype + f"<{root}>{''.join(body)}</{root}>").encode("utf-8"),
    st.sampled_from(["PubmedArticleSet", "MedlineCitationSet", "PubmedArticle", "eSearchResult"]),
    st.lists(st.recursive(texts, element, max_leaves=25), max_size=4),
    st.sampled_from(["", '<?xml version="1.0"?>\n',
                     '<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2031//EN" '
                     '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_310101.dtd">\n']))

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def records_or_kb_error(func, source):
    try:
        records = list(func(source))
    except KbError as exc:
        assert "\n" not in str(exc)
        return None
    for record in records:
        assert record["type"] in ("paper", "deleted") and record["pmid"].isdigit()
        dumps(record)
    return records


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(data):
    records_or_kb_error(parse_pubmed_xml, data)
    records_or_kb_error(parse_medline_text, data)


@FAST
@given(xml_docs)
def test_random_pubmed_like_xml(doc):
    records_or_kb_error(parse_pubmed_xml, doc)


@FAST
@given(st.integers(0, len(EFETCH)), st.integers(0, 200), st.binary(max_size=20),
       st.sampled_from(["cut", "delete", "insert"]))
def test_mutated_real_shaped_xml(pos, length, noise, how):
    if how == "cut":
        doc = EFETCH[:pos]
    elif how == "delete":
        doc = EFETCH[:pos] + EFETCH[pos + length:]
    else:
        doc = EFETCH[:pos] + noise + EFETCH[pos:]
    records_or_kb_error(parse_pubmed_xml, doc)
    records_or_kb_error(parse_pubmed_xml, gzip.compress(doc)[: max(10, len(doc) // 3)])


MEDLINE_TAGS = ["PMID", "TI", "AB", "FAU", "AU", "AD", "AUID", "CN", "DP", "IS", "MH", "OT", "OTO", "RN", "AID",
                "LID", "PMC", "PG", "VI", "IP", "LA", "PT", "JT", "TA", "BTI", "FED", "ED", "PB", "XX"]
medline_lines = st.one_of(
    st.builds(lambda tag, value: f"{tag:<4}- {value}", st.sampled_from(MEDLINE_TAGS),
              st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=30)),
    st.builds(lambda pmid: f"PMID- {pmid}", st.integers(0, 10**9)),
    st.sampled_from(["", "      continued text", " odd", "garbage line", "MH  - */*", "DP  - 2011 Foo 99",
                     "AUID- ORCID: 1234", "RN  - (", "IS  - 1234-5678 (Linking"]),
)


@FAST
@given(st.lists(medline_lines, max_size=25))
def test_random_medline_text(lines):
    records_or_kb_error(parse_medline_text, "\n".join(lines).encode("utf-8"))


@FAST
@given(st.integers(0, len(NBIB)), st.binary(max_size=10))
def test_mutated_medline_text(pos, noise):
    records_or_kb_error(parse_medline_text, NBIB[:pos] + noise + NBIB[pos + len(noise):])


@settings(max_examples=25, deadline=None)
@given(st.one_of(st.binary(max_size=200), xml_docs, st.just(EFETCH[:1234]), st.just(NBIB[:333])))
def test_import_files_records_or_kb_error(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("imp")
    src = folder / "in.dat"
    src.write_bytes(content)
    try:
        summary = import_files([src], folder / "data", progress=False)
    except KbError:
        records = folder / "data" / "records"
        assert not records.exists() or list(records.iterdir()) == []
    else:
        assert Path(summary["outputs"][0]).exists()


@FAST
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_fast_json_lines_identical_to_records_dumps(text):
    record = {"type": "paper", "title": text, "authors": [{"last": text, "affiliations": [text]}], "year": 2020}
    assert dumps_bytes(record) == dumps(record).encode("utf-8")
