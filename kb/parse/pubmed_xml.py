"""PubMed / MEDLINE XML to records, streamed: parse_pubmed_xml and the fields of each record."""

from __future__ import annotations

from typing import Iterator

from lxml import etree

from ..errors import ParseError
from ..records import normalize_doi, paper_key, provenance as make_provenance
from .source import BLOCK, ROOTS, _one_line, _read_prolog, _Source, _syntax_message
from .values import _clean, _date, _join_sections, _orcid, _pmcid

try:  # the compiled twin of _article (setup.py builds it; optional): the same records, ~4x less CPU for the fields
    from ._pubmed_fields import article as _compiled_article
except ImportError:  # pragma: no cover - a build without a C compiler
    _compiled_article = None

# Elements that are one record (or a list of deletions) at the top level of a set.
RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle", "MedlineCitation", "BookDocument",
               "DeleteCitation", "DeleteDocument")


# ---------------------------------------------------------------------------------------------
# Field extraction (one pass over each record's children). Children are walked as slices, el[:]: lxml
# makes the list in one call, ~1,000 CPU instructions less per child than stepping its iterator.


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


def _date_el(el) -> tuple[int | None, str | None]:
    year = month = day = season = medline = None
    for c in el[:]:
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
    for a in al[:]:
        if a.tag != "Author" or a.get("ValidYN") == "N":
            continue
        last = fore = initials = suffix = collective = orcid = None
        affs = []
        for c in a[:]:
            t = c.tag
            if t == "LastName":
                last = c.text
            elif t == "ForeName":
                fore = c.text
            elif t == "Initials":
                initials = c.text
            elif t == "AffiliationInfo":
                for x in c[:]:
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
    for c in ab[:]:
        if c.tag == "AbstractText":
            text = _t(c)
            if text:
                sections.append({"label": c.get("Label") or None, "category": c.get("NlmCategory") or None,
                                 "text": text})


def _mesh(ml, out: list) -> None:
    append = out.append
    for h in ml[:]:
        if h.tag != "MeshHeading":
            continue
        ui = name = None
        dmajor = major = False
        quals = []
        for c in h[:]:
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
    for k in kl[:]:
        if k.tag == "Keyword":
            text = _t(k)
            if text:
                text = text.rstrip(",;").rstrip()
                if text:
                    out.append({"text": text, "major": k.get("MajorTopicYN") == "Y", "owner": owner})


def _chemicals(cl, out: list) -> None:
    for ch in cl[:]:
        if ch.tag != "Chemical":
            continue
        rn = ui = name = None
        for c in ch[:]:
            if c.tag == "RegistryNumber":
                rn = _leaf(c)
            elif c.tag == "NameOfSubstance":
                ui = c.get("UI")
                name = _leaf(c)
        if name or ui:
            out.append({"ui": ui, "name": name, "registry_number": None if rn == "0" else rn})


def _references(rl, out: list) -> None:
    """Append each Reference of a ReferenceList (nested lists flattened)."""
    for r in rl[:]:
        t = r.tag
        if t == "Reference":
            citation = pmid = doi = pmc = None
            for c in r[:]:
                if c.tag == "Citation":
                    citation = _t(c)
                elif c.tag == "ArticleIdList":
                    for a in c[:]:
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
    for cc in ccl[:]:
        if cc.get("RefType") == "Cites":
            citation = pmid = None
            for c in cc[:]:
                if c.tag == "RefSource":
                    citation = _leaf(c)
                elif c.tag == "PMID":
                    pmid = _leaf(c)
            if citation or pmid:
                append({"citation": citation, "pmid": pmid, "doi": None, "pmcid": None})


def _article_ids(il, ids: dict) -> None:
    for a in il[:]:
        if a.tag == "ArticleId":
            kind = a.get("IdType")
            if kind and kind not in ids:
                v = _t(a)
                if v:
                    ids[kind] = v


def _history_date(history) -> tuple[int | None, str | None]:
    """A fallback publication date from PubmedData/History: pubmed, then entrez, then any dated status."""
    found = {}
    for d in history[:]:
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
    for c in el[:]:
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
    for c in mc[:]:
        t = c.tag
        if t == "PMID":
            if pmid is None:
                pmid = _leaf(c)
        elif t == "Article":
            article = c
        elif t == "MeshHeadingList":
            _mesh(c, mesh)
        elif t == "MedlineJournalInfo":
            for x in c[:]:
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
        for c in article[:]:
            t = c.tag
            if t == "Journal":
                for j in c[:]:
                    jt = j.tag
                    if jt == "JournalIssue":
                        for x in j[:]:
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
                for x in c[:]:
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
                for x in c[:]:
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
        for c in pd[:]:
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
    for c in bd[:]:
        t = c.tag
        if t == "PMID":
            if pmid is None:
                pmid = _t(c)
        elif t == "ArticleIdList":
            _article_ids(c, ids)
        elif t == "Book":
            for b in c[:]:
                bt = b.tag
                if bt == "BookTitle":
                    book["title"] = _t(b)
                elif bt == "Publisher":
                    for x in b[:]:
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
            for x in c[:]:
                if x.tag == "MedlinePgn":
                    pages = _t(x)
        elif t == "ReferenceList":
            _references(c, references)
        elif t == "ELocationID":
            if doi_eloc is None and c.get("EIdType") == "doi":
                doi_eloc = c.text
    pmid = _require_pmid(pmid, bd)
    if pbd is not None:
        for c in pbd[:]:
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
    for c in el[:]:
        if c.tag == "PMID":
            pmid = _t(c)
            out.append({"type": "deleted", "pmid": _require_pmid(pmid, c), "provenance": prov})
    return out


def _records_of(el, prov: dict) -> list[dict]:
    """The records of one top-level element of a PubMed set ([] for anything else)."""
    t = el.tag
    if t == "PubmedArticle" or t == "MedlineCitation":
        if _compiled_article is not None:
            rec = _compiled_article(el, prov)
            if rec is not None:
                return [rec]
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
