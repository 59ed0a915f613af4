"""PubMed XML and MEDLINE text to kb records (see kb/records.py), and `kb import`.

XML is read as a stream with lxml (constant memory, elements cleared as they are done) and safely:
no DTD is loaded, no entity is resolved, nothing touches the network, and a document whose DOCTYPE
declares entities is refused before parsing. Fields are read by walking children and comparing tags,
once per record, because `kb import` of a baseline file is CPU-bound. `kb import` of a large file
splits the decompressed XML at record boundaries and parses the chunks in a small process pool,
writing the records in input order.
"""

from __future__ import annotations

import gc
import gzip
import io
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import zlib
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lxml import etree

try:  # ISA-L's inflate (the `isal` package, optional): the same bytes as gzip, about 3x less CPU
    from isal import igzip as _igzip
    from isal.isal_zlib import error as _isal_error
except ImportError:  # pragma: no cover - plain gzip then
    _igzip, _isal_error = gzip, zlib.error

from .errors import KbError, NotFound, ParseError
from .records import dumps_bytes as _dumps, normalize_doi, ordinary_permissions, paper_key, provenance as make_provenance

__all__ = ["parse_pubmed_xml", "parse_medline_text", "import_files", "import_command", "detect_format"]

BLOCK = 1 << 20                   # bytes read at a time; `kb import` parses files up to this size in-process
CHUNK = 2 << 20                   # bytes of XML per parallel task
PROLOG_MAX = 1 << 20              # the XML declaration, DOCTYPE and root tag must fit in this

# Roots we accept, and the provenance source each gets by default.
ROOTS = {
    "PubmedArticleSet": "pubmed-xml",
    "MedlineCitationSet": "medline-xml",
    "PubmedBookArticleSet": "pubmed-xml",
    "BookDocumentSet": "pubmed-xml",
    "PubmedArticle": "pubmed-xml",
    "PubmedBookArticle": "pubmed-xml",
    "MedlineCitation": "medline-xml",
    "BookDocument": "pubmed-xml",
}
# Elements that are one record (or a list of deletions) at the top level of a set.
RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "MedlineCitation", "BookDocument",
               "DeleteCitation", "DeleteDocument")
# Tags whose end marks a safe place to cut a set into chunks, per root.
CUT_TAGS = {
    "PubmedArticleSet": (b"</PubmedArticle>", b"</PubmedBookArticle>", b"</DeleteCitation>"),
    "MedlineCitationSet": (b"</MedlineCitation>", b"</DeleteCitation>"),
    "PubmedBookArticleSet": (b"</PubmedBookArticle>", b"</DeleteDocument>"),
    "BookDocumentSet": (b"</BookDocument>", b"</DeleteDocument>"),
}

MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
YEAR_RE = re.compile(r"(?<!\d)(\d{4})(?!\d)")
ORCID_RE = re.compile(r"(\d{4})-?(\d{4})-?(\d{4})-?(\d{3}[\dX])$")
PMC_RE = re.compile(r"PMC\d+", re.I)


class _Incomplete(ParseError):
    """The prolog runs past the bytes read so far."""


class _Malformed(Exception):
    """Raised in a worker when its chunk is not well-formed; the main process then re-reads sequentially."""


def _parser() -> etree.XMLParser:
    """The one XML parser configuration kb uses: no DTD, no entities, no network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


# ---------------------------------------------------------------------------------------------
# Opening sources


class _Chain(io.RawIOBase):
    """A binary stream that replays `head` and then reads on from `rest`."""

    def __init__(self, head: bytes, rest):
        self._head = head
        self._rest = rest

    def readable(self):
        return True

    def readinto(self, b):
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b)) if self._rest is not None else b""
        n = len(data)
        b[:n] = data
        return n


class _Source:
    """An input opened for reading: a binary stream of the (decompressed) content and a name for messages."""

    def __init__(self, source):
        self._close = None
        if isinstance(source, str) and source.lstrip()[:1] == "<":
            source = source.encode("utf-8")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = "<bytes>"
            self.request = None
            raw = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.name = str(path)
            self.request = path.name
            try:
                raw = open(path, "rb")
            except FileNotFoundError:
                raise NotFound(f"{path}: no such file") from None
            except IsADirectoryError:
                raise KbError(f"{path}: is a directory, not a file") from None
            except OSError as exc:
                raise KbError(f"{path}: cannot open ({exc.strerror or exc})") from None
            self._close = raw.close
        elif hasattr(source, "read"):
            name = getattr(source, "name", None)
            self.name = str(name) if isinstance(name, (str, os.PathLike)) else "<stream>"
            self.request = Path(name).name if isinstance(name, (str, os.PathLike)) else None
            raw = source
        else:
            raise TypeError(f"cannot read PubMed data from {type(source).__name__}")
        magic = self._read(raw, 2)
        if isinstance(magic, str):
            raise KbError(f"{self.name}: open the file in binary mode")
        stream = _Chain(magic, raw)
        if magic == b"\x1f\x8b":
            stream = _igzip.GzipFile(fileobj=io.BufferedReader(stream, BLOCK), mode="rb")
        self.stream = stream

    def _read(self, raw, n):
        try:
            return raw.read(n)
        except OSError as exc:
            raise KbError(f"{self.name}: cannot read ({exc})") from None

    def read(self, n: int = BLOCK) -> bytes:
        """Read up to n bytes; corrupt or truncated compressed data becomes a ParseError."""
        try:
            return self.stream.read(n)
        except (EOFError, zlib.error, _isal_error, gzip.BadGzipFile) as exc:
            raise ParseError(f"{self.name}: truncated or corrupt gzip data ({exc})") from None
        except OSError as exc:
            raise KbError(f"{self.name}: cannot read ({exc})") from None

    def blocks(self, first: bytes = b"") -> Iterator[bytes]:
        if first:
            yield first
        while True:
            data = self.read(BLOCK)
            if not data:
                return
            yield data

    def head(self, size: int = BLOCK) -> bytes:
        """Read until at least `size` bytes or the end."""
        parts, got = [], 0
        while got < size:
            data = self.read(size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self):
        if self._close:
            self._close()
            self._close = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# The XML prolog: refuse entity declarations before any parser sees them

_NAME_RE = re.compile(rb"[A-Za-z_:][-\w.:]*")


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _xml_prolog(head: bytes, name: str) -> tuple[str, int, bool]:
    """Check the prolog of an XML document: returns (root tag, offset just after the root's start tag,
    whether the root is self-closing). Refuses DOCTYPEs that declare entities, and non-UTF-8 encodings."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
        bom = 3
    else:
        bom = 0
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head[:4] in (b"\x00<\x00?", b"<\x00?\x00"):
        raise ParseError(f"{name}: UTF-16 XML is not supported (PubMed XML is UTF-8)")
    n = len(head)
    i = 0
    while True:
        while i < n and head[i] in b" \t\r\n":
            i += 1
        if i >= n:
            raise _Incomplete(f"{name}: no root element found in the first {len(head)} bytes (not PubMed XML)")
        if head.startswith(b"<?", i):
            end = head.find(b"?>", i)
            if end < 0:
                raise _Incomplete(f"{name}: unterminated XML declaration")
            decl = head[i:end]
            if i == 0 or head[:i].strip() == b"":
                m = re.search(rb"encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']", decl)
                if m and m.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
                    raise ParseError(f"{name}: XML encoding {m.group(1).decode()} is not supported "
                                     f"(PubMed XML is UTF-8)")
            i = end + 2
        elif head.startswith(b"<!--", i):
            end = head.find(b"-->", i + 4)
            if end < 0:
                raise _Incomplete(f"{name}: unterminated comment before the root element")
            i = end + 3
        elif head.startswith(b"<!DOCTYPE", i):
            i = _doctype_end(head, i, name)
        elif head.startswith(b"<", i):
            m = _NAME_RE.match(head, i + 1)
            if not m:
                raise ParseError(f"{name}: not XML (unexpected {head[i:i + 20]!r})")
            root = m.group(0).decode("ascii", "replace")
            j, _ = _next_unquoted(head, m.end(), b">")
            if j < 0:
                raise _Incomplete(f"{name}: unterminated root start tag <{root}")
            return root, bom + j + 1, head[j - 1] == 47  # '/'
        else:
            raise ParseError(f"{name}: not XML (text before the root element)")


def _next_unquoted(head: bytes, j: int, stops: bytes, skip_comments: bool = False) -> tuple[int, int]:
    """(offset, byte) of the first byte of `stops` at or after `j` outside quoted strings (and, with
    `skip_comments`, outside <!-- comments -->); (-1, 0) when `head` ends first."""
    n = len(head)
    quote = None
    while j < n:
        c = head[j]
        if quote:
            if c == quote:
                quote = None
        elif c in b"\"'":
            quote = c
        elif skip_comments and c == 60 and head.startswith(b"<!--", j):
            end = head.find(b"-->", j + 4)
            if end < 0:
                return -1, 0
            j = end + 2
        elif c in stops:
            return j, c
        j += 1
    return -1, 0


def _doctype_end(head: bytes, i: int, name: str) -> int:
    """Offset after a DOCTYPE declaration; refuses an internal subset that declares entities."""
    j = i + 9
    while True:
        j, c = _next_unquoted(head, j, b"[>")
        if j < 0:
            raise _Incomplete(f"{name}: unterminated DOCTYPE declaration")
        if c == 62:  # '>'
            return j + 1
        # '[': the internal subset, up to its closing ']' (quotes and comments skipped)
        end, _ = _next_unquoted(head, j + 1, b"]", skip_comments=True)
        if end < 0:
            raise _Incomplete(f"{name}: unterminated DOCTYPE internal subset")
        if b"<!entity" in head[j + 1:end].lower():
            raise ParseError(f"{name}: refused: the DOCTYPE declares entities (possible XXE or "
                             f"entity-expansion attack); PubMed XML never does")
        j = end + 1


def _read_prolog(src: "_Source", head: bytes, check_root: bool = True) -> tuple[bytes, str, int, bool]:
    """Check the prolog at the start of `head`, reading up to PROLOG_MAX more bytes when it is longer, and
    (unless told not to, for other NLM formats) that the root is PubMed's; returns (head, root, body offset,
    self-closing root)."""
    try:
        root, body_at, closed = _xml_prolog(head, src.name)
    except _Incomplete:
        if len(head) < BLOCK:
            raise
        head += src.head(PROLOG_MAX)
        root, body_at, closed = _xml_prolog(head, src.name)
    if check_root:
        _check_root(root, src.name)
    return head, root, body_at, closed


def _check_root(root: str, name: str) -> None:
    if root not in ROOTS:
        raise ParseError(f"{name}: not PubMed XML (root element <{root}>; expected PubmedArticleSet or "
                         f"MedlineCitationSet)")


# ---------------------------------------------------------------------------------------------
# Field extraction (one pass over each record's children)


def _clean(s: str) -> str | None:
    """Strip, and collapse inner runs of whitespace (rare in PubMed, so checked for first)."""
    if "  " in s or "\n" in s or "\t" in s or "\r" in s:
        s = " ".join(s.split())
    else:
        s = s.strip()
    return s or None


def _t(el) -> str | None:
    """The text of an element with inner markup (<i>, <sup>, MathML...) flattened, whitespace collapsed."""
    if len(el):
        return _clean("".join(el.itertext()))
    s = el.text
    return _clean(s) if s else None


def _leaf(el) -> str | None:
    """The text of an element that normally has no markup (names, identifiers, numbers): fast path."""
    s = el.text
    if s and not len(el) and "\n" not in s and "  " not in s:
        return s.strip() or None
    return _t(el)


def _yn(el) -> bool:
    return el.get("MajorTopicYN") == "Y"


def _orcid(value: str | None) -> str | None:
    """An ORCID iD as 0000-0000-0000-0000 (resolver prefixes and missing hyphens fixed), else None."""
    if not value:
        return None
    v = value.strip().upper().replace(" ", "")
    for prefix in ("HTTPS://ORCID.ORG/", "HTTP://ORCID.ORG/", "HTTPS://WWW.ORCID.ORG/", "HTTP://WWW.ORCID.ORG/",
                   "ORCID.ORG/", "ORCID:"):
        if v.startswith(prefix):
            v = v[len(prefix):]
            break
    m = ORCID_RE.match(v)
    return "-".join(m.groups()) if m else None


def _pmcid(value: str | None) -> str | None:
    """A PMCID as PMC<digits>, from 'PMC123', '123' or 'PMC123 [Available on ...]'."""
    if not value:
        return None
    m = PMC_RE.search(value)
    if m:
        return m.group(0).upper()
    v = value.strip()
    return f"PMC{v}" if v.isdigit() else None


def _int_or_none(s):
    return int(s) if s and s.isdigit() else None


def _month(s: str | None) -> int | None:
    if not s:
        return None
    s = s.strip()
    if s.isdigit():
        m = int(s)
        return m if 1 <= m <= 12 else None
    return MONTHS.get(s[:3].lower())


def _date(year, month=None, day=None, season=None, medline=None) -> tuple[int | None, str | None]:
    """(year, pub_date): ISO-like 'YYYY', 'YYYY-MM' or 'YYYY-MM-DD' when exact, else the free text."""
    y = int(year) if year and len(year) == 4 and year.isdigit() else None
    if y is None:
        text = medline or year
        if text:
            m = YEAR_RE.search(text)
            return (int(m.group(1)) if m else None), " ".join(text.split())
        return None, None
    m = _month(month)
    if m is None:
        if season:
            return y, f"{y} {season.strip()}"
        return y, f"{y:04d}"
    d = _int_or_none(day.strip() if day else None)
    if d is not None and 1 <= d <= 31:
        return y, f"{y:04d}-{m:02d}-{d:02d}"
    return y, f"{y:04d}-{m:02d}"


def _date_el(el) -> tuple[int | None, str | None]:
    year = month = day = season = medline = None
    for c in el:
        t = c.tag
        if t == "Year":
            year = c.text and c.text.strip()
        elif t == "Month":
            month = c.text
        elif t == "Day":
            day = c.text
        elif t == "Season":
            season = c.text
        elif t == "MedlineDate":
            medline = c.text
    return _date(year, month, day, season, medline)


def _authors(al, out: list) -> None:
    """Append the valid authors of an AuthorList."""
    append = out.append
    for a in al:
        if a.tag != "Author" or a.get("ValidYN") == "N":
            continue
        last = fore = initials = suffix = collective = orcid = None
        affs = []
        for c in a:
            t = c.tag
            if t == "LastName":
                last = c.text
            elif t == "ForeName":
                fore = c.text
            elif t == "Initials":
                initials = c.text
            elif t == "AffiliationInfo":
                for x in c:
                    if x.tag == "Affiliation":
                        aff = _t(x)
                        if aff:
                            affs.append(aff)
            elif t == "Identifier":
                if orcid is None and c.get("Source") == "ORCID":
                    orcid = _orcid(c.text)
            elif t == "Suffix":
                suffix = _leaf(c)
            elif t == "CollectiveName":
                collective = _t(c)
            elif t == "Affiliation":  # pre-2015 DTDs
                aff = _t(c)
                if aff:
                    affs.append(aff)
        if last:
            last = _clean(last)
        if fore:
            fore = _clean(fore)
        if initials:
            initials = initials.strip() or None
        if last or fore or collective:
            append({"last": last, "fore": fore, "initials": initials, "suffix": suffix,
                    "collective": collective, "orcid": orcid, "affiliations": affs})


def _abstract(ab, sections: list) -> None:
    for c in ab:
        if c.tag == "AbstractText":
            text = _t(c)
            if text:
                sections.append({"label": c.get("Label") or None, "category": c.get("NlmCategory") or None,
                                 "text": text})


def _join_sections(sections: list) -> str | None:
    if not sections:
        return None
    return "\n\n".join(f"{s['label']}: {s['text']}" if s["label"] else s["text"] for s in sections)


def _mesh(ml, out: list) -> None:
    append = out.append
    for h in ml:
        if h.tag != "MeshHeading":
            continue
        ui = name = None
        dmajor = major = False
        quals = []
        for c in h:
            if c.tag == "DescriptorName":
                ui = c.get("UI")
                name = _leaf(c)
                dmajor = c.get("MajorTopicYN") == "Y"
            elif c.tag == "QualifierName":
                qmajor = c.get("MajorTopicYN") == "Y"
                if qmajor:
                    major = True
                quals.append({"ui": c.get("UI"), "name": _leaf(c), "major": qmajor})
        if name or ui:
            append({"ui": ui, "name": name, "major": dmajor or major, "descriptor_major": dmajor,
                    "qualifiers": quals})


def _keywords(kl, out: list) -> None:
    owner = kl.get("Owner")
    for k in kl:
        if k.tag == "Keyword":
            text = _t(k)
            if text:
                text = text.rstrip(",;").rstrip()
                if text:
                    out.append({"text": text, "major": k.get("MajorTopicYN") == "Y", "owner": owner})


def _chemicals(cl, out: list) -> None:
    for ch in cl:
        if ch.tag != "Chemical":
            continue
        rn = ui = name = None
        for c in ch:
            if c.tag == "RegistryNumber":
                rn = _leaf(c)
            elif c.tag == "NameOfSubstance":
                ui = c.get("UI")
                name = _leaf(c)
        if name or ui:
            out.append({"ui": ui, "name": name, "registry_number": None if rn == "0" else rn})


def _references(rl, out: list) -> None:
    """Append each Reference of a ReferenceList (nested lists flattened)."""
    for r in rl:
        t = r.tag
        if t == "Reference":
            citation = pmid = doi = pmc = None
            for c in r:
                if c.tag == "Citation":
                    citation = _t(c)
                elif c.tag == "ArticleIdList":
                    for a in c:
                        if a.tag != "ArticleId":
                            continue
                        kind = a.get("IdType")
                        if kind == "pubmed":
                            v = _t(a)
                            if v and v.isdigit() and pmid is None:
                                pmid = v
                        elif kind == "doi":
                            doi = doi or normalize_doi(_t(a))
                        elif kind == "pmc":
                            pmc = pmc or _pmcid(_t(a))
            if citation or pmid or doi or pmc:
                out.append({"citation": citation, "pmid": pmid, "doi": doi, "pmcid": pmc})
        elif t == "ReferenceList":
            _references(r, out)


def _cites(ccl, out: list) -> None:
    """References listed as CommentsCorrections RefType="Cites" (older MEDLINE records)."""
    append = out.append
    for cc in ccl:
        if cc.get("RefType") == "Cites":
            citation = pmid = None
            for c in cc:
                if c.tag == "RefSource":
                    citation = _leaf(c)
                elif c.tag == "PMID":
                    pmid = _leaf(c)
            if citation or pmid:
                append({"citation": citation, "pmid": pmid, "doi": None, "pmcid": None})


def _article_ids(il, ids: dict) -> None:
    for a in il:
        if a.tag == "ArticleId":
            kind = a.get("IdType")
            if kind and kind not in ids:
                v = _t(a)
                if v:
                    ids[kind] = v


def _history_date(history) -> tuple[int | None, str | None]:
    """A fallback publication date from PubmedData/History: pubmed, then entrez, then any dated status."""
    found = {}
    for d in history:
        if d.tag == "PubMedPubDate":
            y, pd = _date_el(d)
            if y is not None:
                found.setdefault(d.get("PubStatus"), (y, pd))
    for status in ("pubmed", "entrez", "medline"):
        if status in found:
            return found[status]
    return next(iter(found.values()), (None, None))


def _require_pmid(pmid, el) -> str:
    if not pmid or not pmid.isdigit():
        line = getattr(el, "sourceline", None)
        where = f"line {line}: " if line else ""
        raise ParseError(f"{where}<{el.tag}> without a valid PMID ({pmid!r})")
    return pmid


def _unwrap(el, wrapper: str, main_tag: str, data_tag: str):
    """(citation element, PubMed data element or None) of a wrapped record such as <PubmedArticle>;
    a bare <MedlineCitation> or <BookDocument> (baseline files) is its own citation element."""
    if el.tag != wrapper:
        return el, None
    main = data = None
    for c in el:
        if c.tag == main_tag:
            main = c
        elif c.tag == data_tag:
            data = c
    if main is None:
        raise ParseError(f"line {el.sourceline}: <{wrapper}> without <{main_tag}>")
    return main, data


def _empty_journal() -> dict:
    return {"title": None, "iso": None, "issn": None, "issn_type": None, "issn_linking": None,
            "nlm_id": None, "country": None, "medline_ta": None}


def _article(el, prov: dict) -> dict:
    """One paper record from a PubmedArticle or a bare MedlineCitation."""
    mc, pd = _unwrap(el, "PubmedArticle", "MedlineCitation", "PubmedData")

    pmid = article = pmc_other = None
    mesh, keywords, chemicals, cites = [], [], [], []
    journal = _empty_journal()
    for c in mc:
        t = c.tag
        if t == "PMID":
            if pmid is None:
                pmid = _leaf(c)
        elif t == "Article":
            article = c
        elif t == "MeshHeadingList":
            _mesh(c, mesh)
        elif t == "MedlineJournalInfo":
            for x in c:
                xt = x.tag
                if xt == "NlmUniqueID":
                    journal["nlm_id"] = _leaf(x)
                elif xt == "ISSNLinking":
                    journal["issn_linking"] = _leaf(x)
                elif xt == "Country":
                    journal["country"] = _leaf(x)
                elif xt == "MedlineTA":
                    journal["medline_ta"] = _leaf(x)
        elif t == "KeywordList":
            _keywords(c, keywords)
        elif t == "ChemicalList":
            _chemicals(c, chemicals)
        elif t == "CommentsCorrectionsList":
            _cites(c, cites)
        elif t == "OtherID":
            if pmc_other is None and c.text and "PMC" in c.text:
                pmc_other = _pmcid(c.text)
    pmid = _require_pmid(pmid, mc)

    title = vernacular = abstract_el = doi_eloc = None
    volume = issue = pages = start_page = end_page = None
    year = pub_date = None
    article_date = None
    authors, sections, languages, ptypes = [], [], [], []
    authors_incomplete = False           # AuthorList CompleteYN="N": PubMed says the list is cut short
    article_aff = None
    if article is not None:
        for c in article:
            t = c.tag
            if t == "Journal":
                for j in c:
                    jt = j.tag
                    if jt == "JournalIssue":
                        for x in j:
                            xt = x.tag
                            if xt == "Volume":
                                volume = _leaf(x)
                            elif xt == "Issue":
                                issue = _leaf(x)
                            elif xt == "PubDate":
                                year, pub_date = _date_el(x)
                    elif jt == "Title":
                        journal["title"] = _leaf(j)
                    elif jt == "ISOAbbreviation":
                        journal["iso"] = _leaf(j)
                    elif jt == "ISSN":
                        journal["issn"] = _leaf(j)
                        journal["issn_type"] = j.get("IssnType")
            elif t == "ArticleTitle":
                title = _t(c)
            elif t == "AuthorList":
                if c.get("Type") in (None, "authors"):
                    _authors(c, authors)
                    authors_incomplete = c.get("CompleteYN") == "N"
            elif t == "Abstract":
                abstract_el = c
            elif t == "Pagination":
                for x in c:
                    xt = x.tag
                    if xt == "MedlinePgn":
                        pages = _leaf(x)
                    elif xt == "StartPage":
                        start_page = _leaf(x)
                    elif xt == "EndPage":
                        end_page = _leaf(x)
            elif t == "ELocationID":
                if doi_eloc is None and c.get("EIdType") == "doi" and c.get("ValidYN") != "N":
                    doi_eloc = c.text
            elif t == "Language":
                lang = _leaf(c)
                if lang:
                    languages.append(lang)
            elif t == "PublicationTypeList":
                for x in c:
                    if x.tag == "PublicationType":
                        ptypes.append({"ui": x.get("UI"), "name": _leaf(x)})
            elif t == "ArticleDate":
                if article_date is None:
                    article_date = c
            elif t == "VernacularTitle":
                vernacular = _t(c)
            elif t == "Affiliation":
                article_aff = _t(c)
    if abstract_el is not None:
        _abstract(abstract_el, sections)
    if article_aff and authors and not authors[0]["affiliations"]:
        authors[0]["affiliations"].append(article_aff)
    if not pages and start_page:
        pages = f"{start_page}-{end_page}" if end_page and end_page != start_page else start_page

    ids = {}
    references = []
    history = None
    if pd is not None:
        for c in pd:
            t = c.tag
            if t == "ArticleIdList":
                _article_ids(c, ids)
            elif t == "ReferenceList":
                _references(c, references)
            elif t == "History":
                history = c
    if not references and cites:
        references = cites
    if year is None and article_date is not None:
        year, pub_date = _date_el(article_date)
    if year is None and history is not None:
        year, pub_date = _history_date(history)

    doi = normalize_doi(ids.get("doi")) or normalize_doi(doi_eloc)
    return {
        "type": "paper", "id": paper_key(pmid, doi), "kind": "article", "pmid": pmid, "doi": doi,
        "pmcid": _pmcid(ids.get("pmc")) or pmc_other, "title": title or vernacular,
        "abstract": _join_sections(sections), "abstract_sections": sections, "authors": authors,
        "journal": journal, "year": year, "pub_date": pub_date, "volume": volume, "issue": issue,
        "pages": pages, "languages": languages, "publication_types": ptypes, "mesh": mesh,
        "keywords": keywords, "chemicals": chemicals, "references": references, "book": None,
        "provenance": prov, **({"authors_complete": False} if authors_incomplete else {}),
    }


def _book(el, prov: dict) -> dict:
    """One paper record (kind "book") from a PubmedBookArticle or a bare BookDocument."""
    bd, pbd = _unwrap(el, "PubmedBookArticle", "BookDocument", "PubmedBookData")

    pmid = title = chapter = pages = None
    year = pub_date = None
    ids = {}
    authors, sections, languages, ptypes, keywords, references = [], [], [], [], [], []
    book = {"title": None, "publisher": None, "publisher_location": None, "editors": [], "edition": None,
            "volume": None, "collection_title": None, "isbns": [], "medium": None, "chapter": None,
            "accession": None}
    doi_eloc = None
    for c in bd:
        t = c.tag
        if t == "PMID":
            if pmid is None:
                pmid = _t(c)
        elif t == "ArticleIdList":
            _article_ids(c, ids)
        elif t == "Book":
            for b in c:
                bt = b.tag
                if bt == "BookTitle":
                    book["title"] = _t(b)
                elif bt == "Publisher":
                    for x in b:
                        if x.tag == "PublisherName":
                            book["publisher"] = _t(x)
                        elif x.tag == "PublisherLocation":
                            book["publisher_location"] = _t(x)
                elif bt == "PubDate":
                    year, pub_date = _date_el(b)
                elif bt == "AuthorList":
                    _authors(b, book["editors"] if b.get("Type") in (None, "editors") else authors)
                elif bt == "Edition":
                    book["edition"] = _t(b)
                elif bt == "Volume":
                    book["volume"] = _t(b)
                elif bt == "CollectionTitle":
                    book["collection_title"] = _t(b)
                elif bt == "Isbn":
                    isbn = _t(b)
                    if isbn:
                        book["isbns"].append(isbn)
                elif bt == "Medium":
                    book["medium"] = _t(b)
                elif bt == "ELocationID":
                    if doi_eloc is None and b.get("EIdType") == "doi":
                        doi_eloc = b.text
        elif t == "LocationLabel":
            chapter = _t(c)
        elif t == "ArticleTitle":
            title = _t(c)
        elif t == "AuthorList":
            _authors(c, book["editors"] if c.get("Type") == "editors" else authors)
        elif t == "Abstract":
            _abstract(c, sections)
        elif t == "Language":
            lang = _t(c)
            if lang:
                languages.append(lang)
        elif t == "PublicationType":
            ptypes.append({"ui": c.get("UI"), "name": _t(c)})
        elif t == "KeywordList":
            _keywords(c, keywords)
        elif t == "Pagination":
            for x in c:
                if x.tag == "MedlinePgn":
                    pages = _t(x)
        elif t == "ReferenceList":
            _references(c, references)
        elif t == "ELocationID":
            if doi_eloc is None and c.get("EIdType") == "doi":
                doi_eloc = c.text
    pmid = _require_pmid(pmid, bd)
    if pbd is not None:
        for c in pbd:
            if c.tag == "ArticleIdList":
                _article_ids(c, ids)
            elif c.tag == "History" and year is None:
                year, pub_date = _history_date(c)
    book["chapter"] = chapter
    book["accession"] = ids.get("bookaccession")
    doi = normalize_doi(ids.get("doi")) or normalize_doi(doi_eloc)
    journal = _empty_journal()
    return {
        "type": "paper", "id": paper_key(pmid, doi), "kind": "book", "pmid": pmid, "doi": doi,
        "pmcid": _pmcid(ids.get("pmc")), "title": title or book["title"],
        "abstract": _join_sections(sections), "abstract_sections": sections, "authors": authors,
        "journal": journal, "year": year, "pub_date": pub_date, "volume": book["volume"], "issue": None,
        "pages": pages, "languages": languages, "publication_types": ptypes, "mesh": [],
        "keywords": keywords, "chemicals": [], "references": references, "book": book,
        "provenance": prov,
    }


def _deleted(el, prov: dict) -> list[dict]:
    out = []
    for c in el:
        if c.tag == "PMID":
            pmid = _t(c)
            out.append({"type": "deleted", "pmid": _require_pmid(pmid, c), "provenance": prov})
    return out


def _records_of(el, prov: dict) -> list[dict]:
    """The records of one top-level element of a PubMed set ([] for anything else)."""
    t = el.tag
    if t == "PubmedArticle" or t == "MedlineCitation":
        return [_article(el, prov)]
    if t == "PubmedBookArticle" or t == "BookDocument":
        return [_book(el, prov)]
    if t == "DeleteCitation" or t == "DeleteDocument":
        return _deleted(el, prov)
    return []


def _safe_records(el, prov: dict, name: str) -> list[dict]:
    """_records_of, with anything unexpected in a record turned into a one-line ParseError."""
    try:
        return _records_of(el, prov)
    except ParseError as exc:
        raise ParseError(f"{name}: {exc}") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ParseError(f"{name}: line {el.sourceline}: unreadable <{el.tag}> record ({_one_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# Streaming XML parser


def _default_provenance(root: str, request: str | None) -> dict:
    return make_provenance(ROOTS.get(root, "pubmed-xml"), request=request)


def parse_pubmed_xml(source, provenance: dict | None = None) -> Iterator[dict]:
    """Yield paper and deleted records from PubMed XML (efetch PubmedArticleSet, MEDLINE baseline
    MedlineCitationSet, books), streaming with constant memory. Source: path (plain or .gz), bytes,
    or a binary file object. Raises ParseError (one line) on unsafe, malformed or non-PubMed XML."""
    with _Source(source) as src:
        head = src.head(BLOCK)
        if not head.strip():
            raise ParseError(f"{src.name}: empty file")
        yield from _parse_stream(src, head, provenance)


def _parse_stream(src: _Source, head: bytes, prov: dict | None) -> Iterator[dict]:
    name = src.name
    head, root, _, _ = _read_prolog(src, head)
    if prov is None:
        prov = _default_provenance(root, src.request)
    parser = etree.XMLPullParser(events=("end",), tag=RECORD_TAGS, resolve_entities=False, no_network=True,
                                 load_dtd=False, dtd_validation=False, huge_tree=False,
                                 remove_comments=True, remove_pis=True)
    nested = ("PubmedArticle", "PubmedBookArticle")

    def events():
        for _, el in parser.read_events():
            parent = el.getparent()
            if parent is not None and parent.tag in nested and el.tag in ("MedlineCitation", "BookDocument"):
                continue  # part of a record still open
            yield from _safe_records(el, prov, name)
            el.clear(keep_tail=False)
            if parent is not None:
                while el.getprevious() is not None:
                    del parent[0]

    try:
        for block in src.blocks(head):
            parser.feed(block)
            yield from events()
        parser.close()
        yield from events()
    except etree.XMLSyntaxError as exc:
        raise ParseError(_syntax_message(name, exc, parser.error_log)) from None
    except etree.LxmlError as exc:
        raise ParseError(f"{name}: malformed XML ({_one_line(exc)})") from None


def _syntax_message(name: str, exc: etree.XMLSyntaxError, log=None) -> str:
    """One line: file, line and what libxml2 found first (the exception text alone is sometimes vague).
    `log` is the parser's own error log: the exception's may hold errors of earlier, unrelated parses."""
    msg, line = exc.msg, exc.lineno or (exc.position[0] if exc.position else None)
    try:
        errors = (log if log is not None else exc.error_log).filter_from_errors()
    except AttributeError:  # pragma: no cover
        errors = None
    if errors:
        msg, line = errors[0].message, errors[0].line or line
    msg = re.sub(r",? line \d+, column \d+$", "", _one_line(msg or exc))
    hint = "malformed XML"
    if re.search(r"Premature end of data|EndTag: '</' not found|no element found|not properly terminated|"
                 r"Couldn't find end of Start Tag|expected '>'", msg):
        hint = "malformed or truncated XML"
    return f"{name}: line {line}: {hint} ({msg})" if line else f"{name}: {hint} ({msg})"


# ---------------------------------------------------------------------------------------------
# Parallel import of large XML files


def _parse_chunk(root: str, chunk: bytes, prov: dict, tmpdir: str) -> tuple[str | None, int, int]:
    """Worker: parse a run of complete top-level elements into a temporary file of JSON lines;
    returns (its name, papers, deleted). Writing a file is much cheaper than returning the bytes
    through the pool's pipe. Raises _Malformed on anything unexpected: the main process then
    re-reads the file sequentially, which reports the problem with its line number."""
    tag = root.encode()
    if b">\n<" in chunk and not _INLINE_NEWLINE.search(chunk) and b"<![CDATA[" not in chunk:
        # One line break between two tags is layout (every baseline file has one per element): dropping
        # it halves the nodes libxml2 builds. Not done where a break touches inline markup (<i>, <sup>...),
        # whose text it would glue together.
        chunk = chunk.replace(b">\n<", b"><")
    try:
        tree = etree.fromstring(b"<" + tag + b">" + chunk + b"</" + tag + b">", _PARSER)
    except etree.LxmlError:
        raise _Malformed() from None
    del chunk
    lines = []
    papers = deleted = 0
    try:
        for el in tree:
            for rec in _records_of(el, prov):
                lines.append(_dumps(rec))
                if rec["type"] == "paper":
                    papers += 1
                else:
                    deleted += 1
    except Exception:
        raise _Malformed() from None
    if not lines:
        return None, 0, 0
    lines.append(b"")
    fd, name = tempfile.mkstemp(suffix=".part", dir=tmpdir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"\n".join(lines))
    return name, papers, deleted


def _find_cut(fh, pos: int, limit: int, cuts: tuple[bytes, ...]) -> int:
    """File offset just after the first record end tag that starts at or after `pos` (else `limit`)."""
    longest = max(len(c) for c in cuts)
    start = pos
    while start < limit:
        fh.seek(start)
        data = fh.read(min(BLOCK, limit - start + longest))
        best = None
        for c in cuts:
            k = data.find(c)
            if k >= 0 and (best is None or start + k + len(c) < best):
                best = start + k + len(c)
        if best is not None and best <= limit:
            return best
        if not data or start + len(data) >= limit:
            break
        start += len(data) - longest + 1
    return limit


def _parse_range(path: str, root: str, lo: int, hi: int, body_lo: int, body_hi: int,
                 prov: dict, tmpdir: str) -> tuple[str | None, int, int]:
    """Worker: the records of a plain file whose end tags fall in the byte range owned by [lo, hi).
    Each worker aligns both ends by the same rule, so neighbouring ranges meet exactly."""
    cuts = CUT_TAGS[root]
    with open(path, "rb") as fh:
        start = body_lo if lo <= body_lo else _find_cut(fh, lo, body_hi, cuts)
        end = body_hi if hi >= body_hi else _find_cut(fh, hi, body_hi, cuts)
        if end <= start:
            return None, 0, 0
        fh.seek(start)
        chunk = fh.read(end - start)
    if len(chunk) != end - start:
        raise _Malformed()
    return _parse_chunk(root, chunk, prov, tmpdir)


def _parse_part(root: str, part: str, prov: dict, tmpdir: str) -> tuple[str | None, int, int]:
    """Worker: _parse_chunk on a chunk the main process left in a temporary file (cheaper than a pipe)."""
    with open(part, "rb") as fh:
        chunk = fh.read()
    os.unlink(part)
    return _parse_chunk(root, chunk, prov, tmpdir)


_PARSER = _parser()
# A line break right before inline markup (lower-case tags: i, b, sup, sub, u, mml:...); PubMed's
# structural elements all start with an upper-case letter.
_INLINE_NEWLINE = re.compile(rb">\n</?[a-z]")


def _chunks(src: _Source, head: bytes, root: str, body_at: int) -> Iterator[memoryview]:
    """Split the body of a PubMed set read from a stream into runs of complete records, cut after a
    record end tag (views valid until the next one is asked for). Raises _Malformed when the layout is
    not the expected one. Blocks are joined once per chunk, and each end tag is searched for from the
    end (a tag that does not occur is searched for only past the last cut found), so this process
    spends its time decompressing."""
    cuts = CUT_TAGS[root]
    close = b"</" + root.encode() + b">"
    blocks, size = [head[body_at:]], len(head) - body_at
    eof = False
    while True:
        while size < CHUNK and not eof:
            data = src.read(BLOCK)
            if data:
                blocks.append(data)
                size += len(data)
            else:
                eof = True
        buf = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        if eof:
            end = buf.rfind(close)
            if end < 0 or buf[end + len(close):].strip():
                raise _Malformed()
            if buf[:end].strip():
                yield memoryview(buf)[:end]
            return
        cut = -1
        for tag in cuts:
            k = buf.rfind(tag, max(cut, 0))
            if k >= 0 and k + len(tag) > cut:
                cut = k + len(tag)
        if cut <= 0:
            if len(buf) > 64 * CHUNK:
                raise _Malformed()
            data = src.read(BLOCK)
            if data:
                blocks, size = [buf, data], len(buf) + len(data)
            else:
                blocks, eof = [buf], True
            continue
        yield memoryview(buf)[:cut]
        rest = buf[cut:]
        blocks, size = [rest], len(rest)


def _plain_body(path: Path, body_at: int, root: str) -> int | None:
    """For an uncompressed file: the offset of the root's closing tag, if only whitespace follows it."""
    close = b"</" + root.encode() + b">"
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail_at = max(body_at, size - 65536)
        fh.seek(tail_at)
        tail = fh.read()
    k = tail.rfind(close)
    if k < 0 or tail[k + len(close):].strip():
        return None
    return tail_at + k


def _worker_init():
    # Records hold no reference cycles, so reference counting frees everything; the cyclic collector
    # would only rescan the many short-lived dicts and lists. Ctrl-C is the main process's to handle.
    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _records_parallel(tasks: Iterable[tuple], func, workers: int,
                      sink: Callable[[str | None, int, int], None]) -> None:
    """Run func(*task) in a pool of `workers` processes, handing results to `sink` in task order.
    At most 2 * workers tasks are in flight, so memory stays flat however large the file."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
    pending: deque = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(func, *task))
            if len(pending) >= 2 * workers:
                sink(*pending.popleft().result())
        while pending:
            sink(*pending.popleft().result())
    except BrokenProcessPool:
        raise KbError("a parser process died (out of memory?); try again, or import the file in smaller parts") from None
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# MEDLINE text ("PubMed format", .nbib)

_TAG_LINE = re.compile(r"^([A-Z][A-Z0-9]{0,3}) {0,3}- ?(.*)$")
_SUFFIXES = {"Jr", "Sr", "2nd", "3rd", "4th", "II", "III", "IV", "V"}
_SECTION_RE = re.compile(r"(?:^|(?<=[.?!)\]] ))([A-Z][A-Z0-9 ,&/()'-]{1,60}[A-Z)]): ")


def _medline_blocks(src: _Source, name: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, lines) of each blank-line separated record of MEDLINE text."""
    text = io.TextIOWrapper(_ReadAdapter(src), encoding="utf-8", errors="strict", newline=None)
    block: list[str] = []
    start = 0
    lineno = 0
    try:
        for line in text:
            lineno += 1
            if "\x00" in line:
                raise ParseError(f"{name}: line {lineno}: binary data, not MEDLINE text")
            if line.strip():
                if not block:
                    start = lineno
                block.append(line.rstrip("\r\n"))
            elif block:
                yield start, block
                block = []
    except UnicodeDecodeError:
        raise ParseError(f"{name}: line {lineno + 1}: not UTF-8 text (binary file?)") from None
    if block:
        yield start, block


class _ReadAdapter(io.RawIOBase):
    def __init__(self, src: _Source):
        self._src = src

    def readable(self):
        return True

    def readinto(self, b):
        data = self._src.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def _medline_fields(start: int, lines: list[str], name: str) -> list[tuple[str, str]]:
    """(tag, value) pairs in order, continuation lines joined; a line that is neither is a ParseError."""
    fields: list[tuple[str, str]] = []
    for offset, line in enumerate(lines):
        if line.startswith("      ") or (line.startswith(" ") and fields):
            if not fields:
                raise ParseError(f"{name}: line {start + offset}: continuation line before any field")
            tag, value = fields[-1]
            fields[-1] = (tag, f"{value} {line.strip()}".strip())
            continue
        m = _TAG_LINE.match(line)
        if not m:
            raise ParseError(f"{name}: line {start + offset}: not MEDLINE text (expected 'TAG - value', "
                             f"got {line[:40]!r})")
        fields.append((m.group(1), m.group(2).strip()))
    return fields


def _split_sections(ab: str) -> list[dict]:
    """Sections of a MEDLINE-text abstract: 'BACKGROUND: ... METHODS: ...' split on upper-case labels."""
    matches = list(_SECTION_RE.finditer(ab))
    if not matches or matches[0].start() != 0:
        return [{"label": None, "category": None, "text": ab}]
    sections = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(ab)
        text = ab[m.end():end].strip()
        if text:
            sections.append({"label": m.group(1).strip(), "category": None, "text": text})
    return sections or [{"label": None, "category": None, "text": ab}]


def _medline_authors(fields: list[tuple[str, str]]) -> list[dict]:
    authors: list[dict] = []
    cur = None

    def new(**kw):
        a = {"last": None, "fore": None, "initials": None, "suffix": None, "collective": None, "orcid": None,
             "affiliations": []}
        a.update(kw)
        authors.append(a)
        return a

    for tag, value in fields:
        if tag == "FAU":
            last, _, fore = value.partition(",")
            fore = fore.strip()
            suffix = None
            if "," in fore:
                fore, _, suffix = (s.strip() for s in fore.rpartition(","))
            cur = new(last=last.strip() or None, fore=fore or None, suffix=suffix or None)
            cur["_au"] = False
        elif tag == "AU":
            if cur is not None and cur.get("_au") is False:
                cur["_au"] = True
            else:
                cur = new(last=value)
                cur["_au"] = True
            parts = value.split()
            if parts and parts[-1] in _SUFFIXES and len(parts) > 2:
                cur["suffix"] = cur["suffix"] or parts[-1]
                parts = parts[:-1]
            if cur["last"] and value.startswith(cur["last"] + " "):
                rest = value[len(cur["last"]):].split()
                rest = [p for p in rest if p not in _SUFFIXES]
                cur["initials"] = rest[-1] if rest else None
            elif len(parts) > 1:
                cur["initials"] = parts[-1]
                if cur["last"] == value:
                    cur["last"] = " ".join(parts[:-1])
        elif tag == "CN":
            cur = new(collective=value)
        elif tag == "AUID" and cur is not None:
            if value.upper().startswith("ORCID") and cur["orcid"] is None:
                cur["orcid"] = _orcid(value.split(":", 1)[-1])
        elif tag == "AD" and cur is not None:
            cur["affiliations"].append(" ".join(value.split()))
    for a in authors:
        a.pop("_au", None)
    return authors


def _medline_record(start: int, lines: list[str], name: str, prov: dict) -> dict:
    from Bio import Medline

    fields = _medline_fields(start, lines, name)
    try:
        rec = Medline.read(io.StringIO("\n".join(lines) + "\n"))
    except Exception as exc:  # Bio.Medline's own failures, whatever their type
        raise ParseError(f"{name}: line {start}: not MEDLINE text ({_one_line(exc)})") from None

    def text(key):
        v = rec.get(key)
        if isinstance(v, list):
            v = " ".join(v)
        v = " ".join(v.split()) if v else None
        return v or None

    def values(key):
        v = rec.get(key) or []
        if isinstance(v, str):
            v = [v]
        return [" ".join(x.split()) for x in v if x and x.strip()]

    pmid = text("PMID")
    if not pmid or not pmid.isdigit():
        raise ParseError(f"{name}: line {start}: MEDLINE record without a valid PMID ({pmid!r})")

    doi = pmc = None
    for tag, value in fields:
        if tag in ("AID", "LID") and value.endswith("[doi]") and doi is None:
            doi = normalize_doi(value[:-5])
        elif tag == "AID" and value.endswith("[pmc]") and pmc is None:
            pmc = _pmcid(value[:-5])
    pmc = _pmcid(text("PMC")) or pmc

    journal = {"title": text("JT"), "iso": None, "issn": None, "issn_type": None, "issn_linking": None,
               "nlm_id": text("JID"), "country": text("PL"), "medline_ta": text("TA")}
    for tag, value in fields:
        if tag == "IS":
            m = re.match(r"(\S+)\s*\(([^)]*)\)", value)
            number, kind = (m.group(1), m.group(2)) if m else (value.strip(), None)
            if kind == "Linking":
                journal["issn_linking"] = journal["issn_linking"] or number
            elif journal["issn"] is None:
                journal["issn"], journal["issn_type"] = number, kind
    if text("BTI") or text("PB"):
        journal["country"] = None

    year, pub_date = _date_text(text("DP"))
    ab = text("AB")
    sections = _split_sections(ab) if ab else []

    mesh = []
    for h in values("MH"):
        parts = [p.strip() for p in h.split("/")]
        desc = parts[0]
        dmajor = desc.startswith("*")
        quals = [{"ui": None, "name": q.lstrip("*").strip(), "major": q.startswith("*")} for q in parts[1:] if q]
        mesh.append({"ui": None, "name": desc.lstrip("*").strip(), "major": dmajor or any(q["major"] for q in quals),
                     "descriptor_major": dmajor, "qualifiers": quals})

    owner = text("OTO")
    keywords = [{"text": k.lstrip("*").rstrip(",;").strip(), "major": k.startswith("*"), "owner": owner}
                for k in values("OT") if k.lstrip("*").rstrip(",;").strip()]
    chemicals = []
    for rn in values("RN"):
        m = re.match(r"^(.*?)\s*\((.*)\)$", rn)
        number, cname = (m.group(1).strip(), m.group(2).strip()) if m else (rn, None)
        chemicals.append({"ui": None, "name": cname or number, "registry_number": None if number in ("", "0")
                          else number})

    book = None
    kind = "article"
    if text("BTI"):
        kind = "book"
        editors = []
        for tag, value in fields:
            if tag in ("FED", "ED") and not (tag == "ED" and any(t == "FED" for t, _ in fields)):
                last, _, fore = value.partition(",") if tag == "FED" else (value, "", "")
                editors.append({"last": last.strip() or None, "fore": fore.strip() or None, "initials": None,
                                "suffix": None, "collective": None, "orcid": None, "affiliations": []})
        book = {"title": text("BTI"), "publisher": text("PB"), "publisher_location": text("PL"),
                "editors": editors, "edition": text("EN"), "volume": text("VI"),
                "collection_title": text("CTI"), "isbns": values("ISBN"), "medium": None,
                "chapter": None, "accession": None}

    title = text("TI") or (book and book["title"])
    return {
        "type": "paper", "id": paper_key(pmid, doi), "kind": kind, "pmid": pmid, "doi": doi, "pmcid": pmc,
        "title": title, "abstract": _join_sections(sections), "abstract_sections": sections,
        "authors": _medline_authors(fields), "journal": journal, "year": year, "pub_date": pub_date,
        "volume": text("VI"), "issue": text("IP"), "pages": text("PG"), "languages": values("LA"),
        "publication_types": [{"ui": None, "name": p} for p in values("PT")], "mesh": mesh,
        "keywords": keywords, "chemicals": chemicals, "references": [], "book": book, "provenance": prov,
    }


def _date_text(dp: str | None) -> tuple[int | None, str | None]:
    """MEDLINE text DP ('2011 Jun', '2011 Jun 15', '1997 Sep-Oct', '2011') as (year, pub_date)."""
    if not dp:
        return None, None
    parts = dp.split()
    if len(parts) <= 3 and parts[0].isdigit() and len(parts[0]) == 4:
        month = parts[1] if len(parts) > 1 else None
        day = parts[2] if len(parts) > 2 else None
        if month is None or (_month(month) is not None and len(month) <= 3 and
                             (day is None or day.isdigit())):
            return _date(parts[0], month, day)
    return _date(None, medline=dp)


def parse_medline_text(source, provenance: dict | None = None) -> Iterator[dict]:
    """Yield paper records from MEDLINE / "PubMed format" text (.nbib, .txt; plain or .gz), read with
    Bio.Medline. Anything that is not MEDLINE text raises ParseError with the file and line."""
    with _Source(source) as src:
        prov = provenance or make_provenance("medline-text", request=src.request)
        count = 0
        for start, lines in _medline_blocks(src, src.name):
            yield _medline_record(start, lines, src.name, prov)
            count += 1
        if not count:
            raise ParseError(f"{src.name}: empty file (no MEDLINE records)")


# ---------------------------------------------------------------------------------------------
# Format detection and `kb import`


def detect_format(head: bytes, name: str) -> str:
    """'xml' or 'medline' from the first bytes of the (decompressed) content; KbError otherwise."""
    if not head.strip():
        raise KbError(f"{name}: empty file, nothing to import")
    probe = head[:4096]
    if probe.startswith(b"\xef\xbb\xbf"):
        probe = probe[3:]
    stripped = probe.lstrip()
    if stripped.startswith(b"<"):
        return "xml"
    if b"\x00" in probe:
        raise KbError(f"{name}: binary file, not PubMed XML or MEDLINE text")
    try:
        text = probe.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(probe) - 4:
            raise KbError(f"{name}: binary file, not PubMed XML or MEDLINE text") from None
        text = probe[:exc.start].decode("utf-8")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if _TAG_LINE.match(first):
        return "medline"
    raise KbError(f"{name}: unknown format (expected PubMed XML or MEDLINE text; starts with {first[:40]!r})")


def _output_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".xml", ".nbib", ".txt", ".medline"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
    return f"import-{stem}.jsonl"


class _Out:
    """A records file written to a temporary name beside its target, renamed into place by commit()."""

    def __init__(self, target: Path):
        self.target = target
        fd, self.tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        ordinary_permissions(self.tmp)
        self.fh = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes):
        view = memoryview(data)
        while view:
            view = view[self.fh.write(view):]

    def append_file(self, name: str):
        """Append the content of file `name` (a worker's part), in the kernel where it can, then delete it."""
        with open(name, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = 0
            copy = getattr(os, "copy_file_range", None)
            if copy is not None:
                try:
                    while done < size:
                        n = copy(src.fileno(), self.fh.fileno(), size - done)
                        if not n:
                            break
                        done += n
                except OSError:
                    pass
            if done < size:
                src.seek(done)
                while True:
                    data = src.read(BLOCK)
                    if not data:
                        break
                    self.write(data)
        os.unlink(name)

    def rewind(self):
        self.fh.seek(0)
        self.fh.truncate()

    def finish(self):
        os.fsync(self.fh.fileno())
        self.fh.close()

    def commit(self):
        os.replace(self.tmp, self.target)

    def discard(self):
        if not self.fh.closed:
            self.fh.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


def _import_one(path: Path, out: _Out, bump: Callable[[int], None], workers: int) -> tuple[int, int]:
    """Parse one input file into `out`; returns (papers, deleted)."""
    counts = [0, 0]

    def sink(part: str | None, papers: int, deleted: int):
        if part is not None:
            out.append_file(part)
        counts[0] += papers
        counts[1] += deleted
        bump(papers + deleted)

    def write_all(records: Iterable[dict]):
        batch = []
        for rec in records:
            batch.append(_dumps(rec))
            if rec["type"] == "paper":
                counts[0] += 1
            else:
                counts[1] += 1
            if len(batch) >= 256:
                batch.append(b"")
                out.write(b"\n".join(batch))
                bump(len(batch) - 1)
                batch = []
        if batch:
            batch.append(b"")
            out.write(b"\n".join(batch))
            bump(len(batch) - 1)

    name = str(path)
    with _Source(path) as src:
        head = src.head(BLOCK)
        fmt = detect_format(head, name)
        if fmt == "medline":
            src.close()
            write_all(parse_medline_text(path))
            return counts[0], counts[1]
        head, root, body_at, self_closing = _read_prolog(src, head)
        prov = _default_provenance(root, path.name)
        if len(head) >= BLOCK and root in CUT_TAGS and not self_closing and workers > 1:
            compressed = isinstance(src.stream, gzip.GzipFile)
            tmpdir = tempfile.mkdtemp(prefix=".import-", suffix=".tmp", dir=out.target.parent)
            try:
                body_end = None if compressed else _plain_body(path, body_at, root)
                if body_end is not None:
                    # Uncompressed: workers read their own byte ranges; this process reads nothing.
                    tasks = ((str(path), root, lo, min(lo + CHUNK, body_end), body_at, body_end, prov, tmpdir)
                             for lo in range(body_at, body_end, CHUNK))
                    _records_parallel(tasks, _parse_range, workers, sink)
                else:
                    # Compressed: decompress here, cut at record ends, hand the chunks over in files.
                    def parts():
                        for chunk in _chunks(src, head, root, body_at):
                            fd, part = tempfile.mkstemp(suffix=".in", dir=tmpdir)
                            with os.fdopen(fd, "wb") as fh:
                                fh.write(chunk)
                            yield root, part, prov, tmpdir

                    _records_parallel(parts(), _parse_part, workers, sink)
                return counts[0], counts[1]
            except (_Malformed, ParseError):
                # Not cleanly splittable, or broken: re-read sequentially, which gives the exact error line.
                out.rewind()
                bump(-(counts[0] + counts[1]))
                counts[0] = counts[1] = 0
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
    write_all(parse_pubmed_xml(path))
    return counts[0], counts[1]


def import_files(paths: Iterable[str | os.PathLike], data_dir: str | os.PathLike,
                 progress: bool | Callable[[int], None] | None = None) -> dict:
    """Import PubMed XML / MEDLINE text files into DIR/records/import-<stem>.jsonl, one file per input.
    All-or-nothing: records files appear only when every input parsed. progress: None = a tqdm bar when
    stderr is a terminal, True/False to force, or a callable given each increment of records."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise KbError("no files to import")
    records_dir = Path(data_dir) / "records"
    targets: dict[str, Path] = {}
    for p in paths:
        if not p.exists():
            raise NotFound(f"{p}: no such file")
        if p.is_dir():
            raise KbError(f"{p}: is a directory, not a file")
        out_name = _output_name(p)
        if out_name in targets and targets[out_name] != p:
            raise KbError(f"{p} and {targets[out_name]} would both be written to records/{out_name}; rename one")
        targets[out_name] = p
    # Sniff every input before writing anything.
    for p in paths:
        with _Source(p) as src:
            detect_format(src.head(4096), str(p))

    bar = None
    if callable(progress):
        bump = progress
    else:
        show = sys.stderr.isatty() if progress is None else bool(progress)
        if show:
            from tqdm import tqdm

            bar = tqdm(unit=" records", desc="import", file=sys.stderr, dynamic_ncols=True)
            bump = bar.update
        else:
            def bump(n):
                return None

    records_dir.mkdir(parents=True, exist_ok=True)
    outs: list[_Out] = []
    summary = {"files": 0, "records": 0, "deleted": 0, "outputs": []}
    workers = _workers()
    try:
        for p in dict.fromkeys(paths):
            out = _Out(records_dir / _output_name(p))
            outs.append(out)
            papers, deleted = _import_one(p, out, bump, workers)
            out.finish()
            summary["files"] += 1
            summary["records"] += papers
            summary["deleted"] += deleted
            summary["outputs"].append(str(out.target))
        for out in outs:
            out.commit()
    except BaseException:
        for out in outs:
            out.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    return summary


def import_command(files, data_dir) -> dict:
    """`kb import FILE...`: import, then print a one-line summary."""
    import click

    summary = import_files(files, data_dir)
    n, records = summary["files"], summary["records"]
    click.echo(f"Imported {records:,} record{'s' if records != 1 else ''} ({summary['deleted']:,} deleted) "
               f"from {n:,} file{'s' if n != 1 else ''} into {Path(data_dir) / 'records'}")
    return summary
