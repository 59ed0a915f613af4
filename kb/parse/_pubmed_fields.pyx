# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The fields of a PubMed article record read straight from libxml2's nodes: the compiled twin of
pubmed_xml._article, giving the same dict, for `kb import`'s hot path.

The Python reader makes one lxml proxy object per element it reads (its fields: 60-75 us of CPU per
record of the import benchmark, beside ~45 us for libxml2's tree); this one walks the same tree
through lxml's public C API and makes only the strings and dicts of the record (15-17 us). Anything it does not expect (a comment, entity reference or processing
instruction inside a field's text, a record without a valid PMID, a malformed wrapper) makes it
return None: the caller then reads that record with pubmed_xml, which stays the reference (and the
fallback when this module is not built). tests/test_parse_compiled.py holds the two to equality."""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, strchr, strcmp, strlen, strstr

cimport lxml.includes.etreepublic as cetree
from lxml.includes cimport tree
from lxml.includes.tree cimport xmlAttr, xmlNode

from ..records import normalize_doi, paper_key
from .values import _clean, _date, _join_sections, _orcid, _pmcid

cetree.import_lxml__etree()


class _Unexpected(Exception):
    """Something the compiled reader leaves to the Python one."""


# ---------------------------------------------------------------------------------------------
# Node access with lxml's semantics: .tag matches only an element without a namespace, .text is the
# run of text nodes before the first child, .get() an attribute without a namespace.


cdef inline bint _is(xmlNode* n, const char* name) noexcept:
    return (n.type == tree.XML_ELEMENT_NODE and n.ns is NULL and n.name[0] == name[0]
            and strcmp(<const char*>n.name, name) == 0)


cdef inline bint _element(xmlNode* n) noexcept:
    """An element without a namespace (the only ones whose lxml tag can equal a PubMed tag name)."""
    return n.type == tree.XML_ELEMENT_NODE and n.ns is NULL


cdef inline str _u(const char* s):
    return PyUnicode_DecodeUTF8(s, strlen(s), NULL)


cdef inline bint _texty(xmlNode* n) noexcept:
    return n.type == tree.XML_TEXT_NODE or n.type == tree.XML_CDATA_SECTION_NODE


cdef object _text(xmlNode* el):
    """lxml's el.text: the text nodes before the first other child joined, '' if all empty, None if none."""
    cdef xmlNode* c = el.children
    if c is NULL or not _texty(c):
        if c is not NULL and (c.type == tree.XML_XINCLUDE_START or c.type == tree.XML_XINCLUDE_END):
            raise _Unexpected()
        return None
    if c.next is NULL or not _texty(c.next):
        return _u(<const char*>c.content) if c.content is not NULL else ""
    parts = []
    while c is not NULL and _texty(c):
        if c.content is not NULL:
            parts.append(<bytes>c.content)
        c = c.next
    return b"".join(parts).decode("utf-8")


cdef bint _has_children(xmlNode* el) except -1:
    """lxml's len(el) > 0: an element, comment, entity reference or processing instruction among its children."""
    cdef xmlNode* c = el.children
    while c is not NULL:
        if (c.type == tree.XML_ELEMENT_NODE or c.type == tree.XML_COMMENT_NODE
                or c.type == tree.XML_ENTITY_REF_NODE or c.type == tree.XML_PI_NODE):
            return True
        c = c.next
    return False


cdef int _all_text(xmlNode* el, list parts) except -1:
    """The text nodes of a subtree in document order (lxml's itertext() when it holds only elements and text)."""
    cdef xmlNode* c = el.children
    while c is not NULL:
        if _texty(c):
            if c.content is not NULL:
                parts.append(<bytes>c.content)
        elif c.type == tree.XML_ELEMENT_NODE:
            _all_text(c, parts)
        else:
            raise _Unexpected()
        c = c.next
    return 0


cdef inline bint _trimmed(const char* s, size_t n) noexcept:
    """Non-empty, starting and ending with a visible ASCII character: nothing for str.strip() to remove."""
    return n > 0 and 0x20 < <unsigned char>s[0] < 0x7f and 0x20 < <unsigned char>s[n - 1] < 0x7f


cdef object _clean_bytes(const char* s, size_t n):
    """values._clean of UTF-8 bytes: decoded as they are when they hold no tab, newline, carriage return
    or double space and start and end with a visible ASCII character (most PubMed text), else by _clean."""
    cdef bint plain = (_trimmed(s, n) and memchr(s, 10, n) is NULL and memchr(s, 9, n) is NULL
                       and memchr(s, 13, n) is NULL and strstr(s, "  ") is NULL)
    if plain:
        return PyUnicode_DecodeUTF8(s, n, NULL)
    return _clean(PyUnicode_DecodeUTF8(s, n, NULL))


cdef inline xmlNode* _only_text(xmlNode* el) noexcept:
    """The element's one child when that is a non-empty text node, else NULL."""
    cdef xmlNode* c = el.children
    if c is not NULL and c.type == tree.XML_TEXT_NODE and c.next is NULL and c.content is not NULL \
            and c.content[0] != 0:
        return c
    return NULL


cdef object _t(xmlNode* el):
    """pubmed_xml._t: the text with inner markup flattened, whitespace collapsed."""
    cdef list parts
    cdef bytes joined
    cdef xmlNode* c = _only_text(el)
    if c is not NULL:
        return _clean_bytes(<const char*>c.content, strlen(<const char*>c.content))
    if _has_children(el):
        parts = []
        _all_text(el, parts)
        joined = b"".join(parts)
        return _clean_bytes(joined, len(joined))
    s = _text(el)
    return _clean(s) if s else None


cdef object _text_clean(xmlNode* el):
    """`s = el.text` then `if s: s = _clean(s)`, as pubmed_xml reads names."""
    cdef xmlNode* c = _only_text(el)
    if c is not NULL:
        return _clean_bytes(<const char*>c.content, strlen(<const char*>c.content))
    s = _text(el)
    return _clean(s) if s else s


cdef object _leaf(xmlNode* el):
    """pubmed_xml._leaf: the fast path for one plain text node (no newline, no double space, no
    whitespace at either end needs no strip at all), else _t."""
    cdef xmlNode* c = _only_text(el)
    cdef const char* s
    cdef size_t n
    if c is not NULL:
        s = <const char*>c.content
        n = strlen(s)
        if strchr(s, 10) is NULL and strstr(s, "  ") is NULL:
            if _trimmed(s, n):
                return PyUnicode_DecodeUTF8(s, n, NULL)
            return PyUnicode_DecodeUTF8(s, n, NULL).strip() or None
    s2 = _text(el)
    if s2 and not _has_children(el) and "\n" not in s2 and "  " not in s2:
        return s2.strip() or None
    return _t(el)


cdef object _get(xmlNode* el, const char* name):
    """lxml's el.get(name) for an attribute without a namespace."""
    cdef xmlAttr* a = el.properties
    cdef xmlNode* c
    while a is not NULL:
        if a.ns is NULL and strcmp(<const char*>a.name, name) == 0:
            c = a.children
            if c is NULL:
                return ""
            if c.type == tree.XML_TEXT_NODE and c.next is NULL:
                return _u(<const char*>c.content) if c.content is not NULL else ""
            raise _Unexpected()
        a = a.next
    return None


cdef bint _get_is(xmlNode* el, const char* name, const char* value) except -1:
    """el.get(name) == value."""
    cdef xmlAttr* a = el.properties
    cdef xmlNode* c
    while a is not NULL:
        if a.ns is NULL and strcmp(<const char*>a.name, name) == 0:
            c = a.children
            if c is NULL:
                return value[0] == 0
            if c.type == tree.XML_TEXT_NODE and c.next is NULL and c.content is not NULL:
                return strcmp(<const char*>c.content, value) == 0
            raise _Unexpected()
        a = a.next
    return False


# ---------------------------------------------------------------------------------------------
# The fields, in the order and with the rules of pubmed_xml.


cdef tuple _date_el(xmlNode* el):
    year = month = day = season = medline = None
    cdef xmlNode* c = el.children
    while c is not NULL:
        if _element(c):
            if _is(c, "Year"):
                year = _text(c)
                year = year and year.strip()
            elif _is(c, "Month"):
                month = _text(c)
            elif _is(c, "Day"):
                day = _text(c)
            elif _is(c, "Season"):
                season = _text(c)
            elif _is(c, "MedlineDate"):
                medline = _text(c)
        c = c.next
    return _date(year, month, day, season, medline)


cdef int _authors(xmlNode* al, list out) except -1:
    cdef xmlNode* a = al.children
    cdef xmlNode* c
    cdef xmlNode* x
    cdef list affs
    while a is not NULL:
        if not _is(a, "Author") or _get_is(a, "ValidYN", "N"):
            a = a.next
            continue
        last = fore = initials = suffix = collective = orcid = None
        affs = []
        c = a.children
        while c is not NULL:
            if _element(c):
                if _is(c, "LastName"):
                    last = _text_clean(c)
                elif _is(c, "ForeName"):
                    fore = _text_clean(c)
                elif _is(c, "Initials"):
                    initials = _text(c)
                elif _is(c, "AffiliationInfo"):
                    x = c.children
                    while x is not NULL:
                        if _is(x, "Affiliation"):
                            aff = _t(x)
                            if aff:
                                affs.append(aff)
                        x = x.next
                elif _is(c, "Identifier"):
                    if orcid is None and _get_is(c, "Source", "ORCID"):
                        orcid = _orcid(_text(c))
                elif _is(c, "Suffix"):
                    suffix = _leaf(c)
                elif _is(c, "CollectiveName"):
                    collective = _t(c)
                elif _is(c, "Affiliation"):
                    aff = _t(c)
                    if aff:
                        affs.append(aff)
            c = c.next
        if initials:
            initials = initials.strip() or None
        if last or fore or collective:
            out.append({"last": last, "fore": fore, "initials": initials, "suffix": suffix,
                        "collective": collective, "orcid": orcid, "affiliations": affs})
        a = a.next
    return 0


cdef int _abstract(xmlNode* ab, list sections) except -1:
    cdef xmlNode* c = ab.children
    while c is not NULL:
        if _is(c, "AbstractText"):
            text = _t(c)
            if text:
                sections.append({"label": _get(c, "Label") or None, "category": _get(c, "NlmCategory") or None,
                                 "text": text})
        c = c.next
    return 0


cdef int _mesh(xmlNode* ml, list out) except -1:
    cdef xmlNode* h = ml.children
    cdef xmlNode* c
    cdef bint dmajor, major, qmajor
    cdef list quals
    while h is not NULL:
        if not _is(h, "MeshHeading"):
            h = h.next
            continue
        ui = name = None
        dmajor = major = False
        quals = []
        c = h.children
        while c is not NULL:
            if _is(c, "DescriptorName"):
                ui = _get(c, "UI")
                name = _leaf(c)
                dmajor = _get_is(c, "MajorTopicYN", "Y")
            elif _is(c, "QualifierName"):
                qmajor = _get_is(c, "MajorTopicYN", "Y")
                if qmajor:
                    major = True
                quals.append({"ui": _get(c, "UI"), "name": _leaf(c), "major": qmajor})
            c = c.next
        if name or ui:
            out.append({"ui": ui, "name": name, "major": dmajor or major, "descriptor_major": dmajor,
                        "qualifiers": quals})
        h = h.next
    return 0


cdef int _keywords(xmlNode* kl, list out) except -1:
    owner = _get(kl, "Owner")
    cdef xmlNode* k = kl.children
    while k is not NULL:
        if _is(k, "Keyword"):
            text = _t(k)
            if text:
                text = text.rstrip(",;").rstrip()
                if text:
                    out.append({"text": text, "major": _get_is(k, "MajorTopicYN", "Y"), "owner": owner})
        k = k.next
    return 0


cdef int _chemicals(xmlNode* cl, list out) except -1:
    cdef xmlNode* ch = cl.children
    cdef xmlNode* c
    while ch is not NULL:
        if _is(ch, "Chemical"):
            rn = ui = name = None
            c = ch.children
            while c is not NULL:
                if _is(c, "RegistryNumber"):
                    rn = _leaf(c)
                elif _is(c, "NameOfSubstance"):
                    ui = _get(c, "UI")
                    name = _leaf(c)
                c = c.next
            if name or ui:
                out.append({"ui": ui, "name": name, "registry_number": None if rn == "0" else rn})
        ch = ch.next
    return 0


cdef int _references(xmlNode* rl, list out) except -1:
    cdef xmlNode* r = rl.children
    cdef xmlNode* c
    cdef xmlNode* a
    while r is not NULL:
        if _is(r, "Reference"):
            citation = pmid = doi = pmc = None
            c = r.children
            while c is not NULL:
                if _is(c, "Citation"):
                    citation = _t(c)
                elif _is(c, "ArticleIdList"):
                    a = c.children
                    while a is not NULL:
                        if _is(a, "ArticleId"):
                            if _get_is(a, "IdType", "pubmed"):
                                v = _t(a)
                                if v and v.isdigit() and pmid is None:
                                    pmid = v
                            elif _get_is(a, "IdType", "doi"):
                                doi = doi or normalize_doi(_t(a))
                            elif _get_is(a, "IdType", "pmc"):
                                pmc = pmc or _pmcid(_t(a))
                        a = a.next
                c = c.next
            if citation or pmid or doi or pmc:
                out.append({"citation": citation, "pmid": pmid, "doi": doi, "pmcid": pmc})
        elif _is(r, "ReferenceList"):
            _references(r, out)
        r = r.next
    return 0


cdef int _cites(xmlNode* ccl, list out) except -1:
    cdef xmlNode* cc = ccl.children
    cdef xmlNode* c
    while cc is not NULL:
        # pubmed_xml reads RefType on every child: comments have none; a namespaced element's still counts
        if cc.type == tree.XML_ELEMENT_NODE and _get_is(cc, "RefType", "Cites"):
            citation = pmid = None
            c = cc.children
            while c is not NULL:
                if _is(c, "RefSource"):
                    citation = _leaf(c)
                elif _is(c, "PMID"):
                    pmid = _leaf(c)
                c = c.next
            if citation or pmid:
                out.append({"citation": citation, "pmid": pmid, "doi": None, "pmcid": None})
        cc = cc.next
    return 0


cdef int _article_ids(xmlNode* il, dict ids) except -1:
    cdef xmlNode* a = il.children
    while a is not NULL:
        if _is(a, "ArticleId"):
            kind = _get(a, "IdType")
            if kind and kind not in ids:
                v = _t(a)
                if v:
                    ids[kind] = v
        a = a.next
    return 0


cdef tuple _history_date(xmlNode* history):
    cdef dict found = {}
    cdef xmlNode* d = history.children
    while d is not NULL:
        if _is(d, "PubMedPubDate"):
            y, pd = _date_el(d)
            if y is not None:
                found.setdefault(_get(d, "PubStatus"), (y, pd))
        d = d.next
    for status in ("pubmed", "entrez", "medline"):
        if status in found:
            return found[status]
    return next(iter(found.values()), (None, None))


cdef dict _empty_journal():
    return {"title": None, "iso": None, "issn": None, "issn_type": None, "issn_linking": None,
            "nlm_id": None, "country": None, "medline_ta": None}


cdef dict _article(xmlNode* el, dict prov):
    cdef xmlNode* mc = el
    cdef xmlNode* pd = NULL
    cdef xmlNode* c
    cdef xmlNode* x
    cdef xmlNode* j
    cdef xmlNode* article = NULL
    cdef xmlNode* abstract_el = NULL
    cdef xmlNode* article_date = NULL
    cdef xmlNode* history = NULL
    cdef list mesh, keywords, chemicals, cites, authors, sections, languages, ptypes, references
    cdef dict journal, ids
    cdef bint authors_incomplete = False

    if _is(el, "PubmedArticle"):                      # pubmed_xml._unwrap
        mc = NULL
        c = el.children
        while c is not NULL:
            if _is(c, "MedlineCitation"):
                mc = c
            elif _is(c, "PubmedData"):
                pd = c
            c = c.next
        if mc is NULL:
            raise _Unexpected()

    pmid = pmc_other = None
    mesh, keywords, chemicals, cites = [], [], [], []
    journal = _empty_journal()
    c = mc.children
    while c is not NULL:
        if not _element(c):
            pass
        elif _is(c, "PMID"):
            if pmid is None:
                pmid = _leaf(c)
        elif _is(c, "Article"):
            article = c
        elif _is(c, "MeshHeadingList"):
            _mesh(c, mesh)
        elif _is(c, "MedlineJournalInfo"):
            x = c.children
            while x is not NULL:
                if _is(x, "NlmUniqueID"):
                    journal["nlm_id"] = _leaf(x)
                elif _is(x, "ISSNLinking"):
                    journal["issn_linking"] = _leaf(x)
                elif _is(x, "Country"):
                    journal["country"] = _leaf(x)
                elif _is(x, "MedlineTA"):
                    journal["medline_ta"] = _leaf(x)
                x = x.next
        elif _is(c, "KeywordList"):
            _keywords(c, keywords)
        elif _is(c, "ChemicalList"):
            _chemicals(c, chemicals)
        elif _is(c, "CommentsCorrectionsList"):
            _cites(c, cites)
        elif _is(c, "OtherID"):
            if pmc_other is None:
                s = _text(c)
                if s and "PMC" in s:
                    pmc_other = _pmcid(s)
        c = c.next
    if not pmid or not pmid.isdigit():                # pubmed_xml._require_pmid raises the error
        raise _Unexpected()

    title = vernacular = doi_eloc = None
    volume = issue = pages = start_page = end_page = None
    year = pub_date = None
    authors, sections, languages, ptypes = [], [], [], []
    article_aff = None
    if article is not NULL:
        c = article.children
        while c is not NULL:
            if not _element(c):
                pass
            elif _is(c, "Journal"):
                j = c.children
                while j is not NULL:
                    if _is(j, "JournalIssue"):
                        x = j.children
                        while x is not NULL:
                            if _is(x, "Volume"):
                                volume = _leaf(x)
                            elif _is(x, "Issue"):
                                issue = _leaf(x)
                            elif _is(x, "PubDate"):
                                year, pub_date = _date_el(x)
                            x = x.next
                    elif _is(j, "Title"):
                        journal["title"] = _leaf(j)
                    elif _is(j, "ISOAbbreviation"):
                        journal["iso"] = _leaf(j)
                    elif _is(j, "ISSN"):
                        journal["issn"] = _leaf(j)
                        journal["issn_type"] = _get(j, "IssnType")
                    j = j.next
            elif _is(c, "ArticleTitle"):
                title = _t(c)
            elif _is(c, "AuthorList"):
                kind = _get(c, "Type")
                if kind is None or kind == "authors":
                    _authors(c, authors)
                    authors_incomplete = _get_is(c, "CompleteYN", "N")
            elif _is(c, "Abstract"):
                abstract_el = c
            elif _is(c, "Pagination"):
                x = c.children
                while x is not NULL:
                    if _is(x, "MedlinePgn"):
                        pages = _leaf(x)
                    elif _is(x, "StartPage"):
                        start_page = _leaf(x)
                    elif _is(x, "EndPage"):
                        end_page = _leaf(x)
                    x = x.next
            elif _is(c, "ELocationID"):
                if doi_eloc is None and _get_is(c, "EIdType", "doi") and not _get_is(c, "ValidYN", "N"):
                    doi_eloc = _text(c)
            elif _is(c, "Language"):
                lang = _leaf(c)
                if lang:
                    languages.append(lang)
            elif _is(c, "PublicationTypeList"):
                x = c.children
                while x is not NULL:
                    if _is(x, "PublicationType"):
                        ptypes.append({"ui": _get(x, "UI"), "name": _leaf(x)})
                    x = x.next
            elif _is(c, "ArticleDate"):
                if article_date is NULL:
                    article_date = c
            elif _is(c, "VernacularTitle"):
                vernacular = _t(c)
            elif _is(c, "Affiliation"):
                article_aff = _t(c)
            c = c.next
    if abstract_el is not NULL:
        _abstract(abstract_el, sections)
    if article_aff and authors and not authors[0]["affiliations"]:
        authors[0]["affiliations"].append(article_aff)
    if not pages and start_page:
        pages = f"{start_page}-{end_page}" if end_page and end_page != start_page else start_page

    ids = {}
    references = []
    if pd is not NULL:
        c = pd.children
        while c is not NULL:
            if _is(c, "ArticleIdList"):
                _article_ids(c, ids)
            elif _is(c, "ReferenceList"):
                _references(c, references)
            elif _is(c, "History"):
                history = c
            c = c.next
    if not references and cites:
        references = cites
    if year is None and article_date is not NULL:
        year, pub_date = _date_el(article_date)
    if year is None and history is not NULL:
        year, pub_date = _history_date(history)

    doi = normalize_doi(ids.get("doi")) or normalize_doi(doi_eloc)
    rec = {
        "type": "paper", "id": paper_key(pmid, doi), "kind": "article", "pmid": pmid, "doi": doi,
        "pmcid": _pmcid(ids.get("pmc")) or pmc_other, "title": title or vernacular,
        "abstract": _join_sections(sections), "abstract_sections": sections, "authors": authors,
        "journal": journal, "year": year, "pub_date": pub_date, "volume": volume, "issue": issue,
        "pages": pages, "languages": languages, "publication_types": ptypes, "mesh": mesh,
        "keywords": keywords, "chemicals": chemicals, "references": references, "book": None,
        "provenance": prov,
    }
    if authors_incomplete:
        rec["authors_complete"] = False
    return rec


def article(el, dict prov):
    """The record of a <PubmedArticle> or bare <MedlineCitation> lxml element, as pubmed_xml._article
    makes it; None when that record is left to pubmed_xml (see the module's docstring)."""
    cdef xmlNode* node = (<cetree._Element?>el)._c_node
    if node is NULL:
        raise ValueError("an lxml element without its node")
    try:
        return _article(node, prov)
    except _Unexpected:
        return None
