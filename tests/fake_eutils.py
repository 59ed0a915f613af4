"""A fake NCBI E-utilities server for kb's tests: the real paths, parameters and XML, on 127.0.0.1.

It speaks ``/entrez/eutils/{efetch.fcgi,esearch.fcgi,elink.fcgi,ecitmatch.cgi,esummary.fcgi}`` (also at the
server root, so ``KB_EUTILS_URL=http://127.0.0.1:PORT/`` works), GET and POST, over an in-memory corpus of
papers (esearch with the history server and PubMed's 9,999 cap, elink ``cmd=neighbor_score`` for similar
articles, esummary ``db=mesh`` for tree numbers); it records every request with its arrival time and can be told to fail (429 with Retry-After,
500/502, dropped connections, timeouts, truncated bodies, ``<ERROR>`` documents, malformed XML), either
on demand (:meth:`FakeEutils.fail`) or at a set rate (``fault_rate``, deterministic from ``fault_seed``).

Use it from tests through the fixtures at the bottom (``fake_eutils``, ``eutils_env``,
``network_eutils``): ``from fake_eutils import fake_eutils, eutils_env``. Run it by hand with
``python tests/fake_eutils.py [--network N] [--port P]``.
"""

from __future__ import annotations

import argparse
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape as _esc

from localserver import LocalServer

try:  # fixtures need pytest; running the server by hand does not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

UTILS = ("efetch.fcgi", "esearch.fcgi", "elink.fcgi", "ecitmatch.cgi", "esummary.fcgi")
FAULTS = ("429", "500", "502", "drop", "timeout", "truncate", "truncate-nolength", "error", "malformed")

EFETCH_HEAD = ('<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, '
               '1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n')
ESEARCH_HEAD = ('<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch '
                '20060628//EN" "https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n')
ELINK_HEAD = ('<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eLinkResult PUBLIC "-//NLM//DTD elink '
              '20101123//EN" "https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20101123/elink.dtd">\n')
ESUMMARY_MESH_HEAD = ('<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eSummaryResult PUBLIC "-//NLM//DTD '
                      'eSummaryResult//EN" "https://www.ncbi.nlm.nih.gov/entrez/query/DTD/eSummaryDTD/'
                      'eSummary_mesh.dtd">\n')
ESUMMARY_HEAD = ('<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eSummaryResult PUBLIC "-//NLM//DTD esummary '
                 'v1 20041029//EN" "https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20041029/esummary-v1.dtd">\n')
PUBMED_ESEARCH_MAX = 9999  # PubMed's esearch serves only the first 9,999 ids of a search
SIMILAR_SCALE = 100_000_000  # neighbour scores are integers, the paper itself scoring highest
SIMILAR_MAX = 100
EFETCH_ERROR_HEAD = ('<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE eFetchResult PUBLIC "-//NLM//DTD efetch '
                     '20131226//EN" "https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20131226/efetch.dtd">\n')
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def esc(text) -> str:
    return _esc(str(text), {'"': "&quot;"})


# ------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------

@dataclass
class Journal:
    title: str
    iso: str
    issn: str
    nlm_id: str
    country: str = "England"
    issn_type: str = "Electronic"


@dataclass
class Ref:
    """One entry of a paper's reference list: a PubMed paper (pmid) or only text (and maybe a DOI)."""
    pmid: str | None = None
    citation: str | None = None
    doi: str | None = None
    in_xml_ids: bool = True  # the ReferenceList entry carries the PMID (else only elink knows it)


@dataclass
class Paper:
    pmid: str
    title: str
    journal: Journal
    year: int
    month: int = 1
    volume: str = "1"
    issue: str = "1"
    pages: str = "1-10"
    doi: str | None = None
    pmcid: str | None = None
    abstract: list = field(default_factory=list)          # [(label or None, category or None, text)]
    authors: list = field(default_factory=list)           # [(last, fore, initials, orcid, affiliation)] or "Collective"
    mesh: list = field(default_factory=list)              # [(ui, name, major, [(q_ui, q_name, q_major)])]
    keywords: list = field(default_factory=list)
    chemicals: list = field(default_factory=list)         # [(registry_number, ui, name)]
    publication_types: list = field(default_factory=lambda: [("D016428", "Journal Article")])
    language: str = "eng"
    refs: list = field(default_factory=list)              # [Ref]
    reflist_in_xml: bool = True                           # PubMed's record carries the ReferenceList

    @property
    def first_page(self) -> str:
        return self.pages.split("-")[0]

    def citation_text(self) -> str:
        names = []
        for a in self.authors[:6]:
            names.append(a if isinstance(a, str) else f"{a[0]} {a[2]}")
        more = ", et al" if len(self.authors) > 6 else ""
        return (f"{', '.join(names)}{more}. {self.title} {self.journal.iso}. "
                f"{self.year};{self.volume}({self.issue}):{self.pages}.")


class Corpus:
    """Papers by PMID, deleted PMIDs, and PubMed's link views computed from the reference lists."""

    def __init__(self, papers, deleted=()):
        self.papers = {p.pmid: p for p in papers}
        self.deleted = set(deleted)
        self.by_doi = {p.doi.lower(): p.pmid for p in papers if p.doi}
        self.by_pmc = {p.pmcid.upper(): p.pmid for p in papers if p.pmcid}
        self._citedin: dict[str, list[str]] = {}
        for p in sorted(self.papers.values(), key=lambda p: int(p.pmid)):
            if not p.pmcid:  # PubMed's cited-by only knows citing papers that are in PMC
                continue
            for r in p.refs:
                if r.pmid:
                    self._citedin.setdefault(r.pmid, []).append(p.pmid)

    def refs(self, pmid) -> list[str]:
        """elink pubmed_pubmed_refs: the PMIDs a PMC article cites (nothing for papers outside PMC)."""
        p = self.papers.get(pmid)
        if not p or not p.pmcid:
            return []
        return sorted({r.pmid for r in p.refs if r.pmid}, key=int, reverse=True)

    def citedin(self, pmid) -> list[str]:
        """elink pubmed_pubmed_citedin: PMC articles citing this PMID."""
        return sorted(set(self._citedin.get(pmid, [])), key=int, reverse=True)

    def similar(self, pmid) -> list[tuple[str, int]]:
        """elink pubmed_pubmed: (PMID, score) of related papers by shared MeSH descriptors and title words
        (Jaccard, scaled to integers), best first, the paper itself first; at most SIMILAR_MAX."""
        p = self.papers.get(pmid)
        if not p:
            return []
        features = getattr(self, "_features", None)
        if features is None:
            features = self._features = {
                q.pmid: {m[0] for m in q.mesh} | {w for w in _norm(q.title).split() if len(w) > 3 and not w.isdigit()}
                for q in self.papers.values()}
        mine = features[pmid]
        out = []
        for other, theirs in features.items():
            shared = len(mine & theirs)
            if shared:
                out.append((other, round(SIMILAR_SCALE * shared / len(mine | theirs))))
        out.sort(key=lambda t: (-t[1], -int(t[0])))
        return out[:SIMILAR_MAX]

    def ref_citation(self, ref: Ref) -> str:
        if ref.citation:
            return ref.citation
        p = self.papers.get(ref.pmid)
        return p.citation_text() if p else f"Unknown reference (PMID {ref.pmid})."


JOURNALS = [
    Journal("International journal of hematology", "Int J Hematol", "1865-3774", "9111627", "Japan"),
    Journal("Pediatric blood & cancer", "Pediatr Blood Cancer", "1545-5017", "101186624", "United States"),
    Journal("Blood", "Blood", "1528-0020", "7603509", "United States"),
    Journal("Radiology", "Radiology", "1527-1315", "0401260", "United States"),
    Journal("Leukemia", "Leukemia", "1476-5551", "8704895", "England"),
    Journal("The New England journal of medicine", "N Engl J Med", "1533-4406", "0255562", "United States"),
]

MESH = [("D054198", "Precursor Cell Lymphoblastic Leukemia-Lymphoma"), ("D008279", "Magnetic Resonance Imaging"),
        ("D001853", "Bone Marrow"), ("D002648", "Child"), ("D006801", "Humans"), ("D015470", "Leukemia, Myeloid, Acute"),
        ("D001855", "Bone Marrow Diseases"), ("D007938", "Leukemia"), ("D000293", "Adolescent"),
        ("D008297", "Male"), ("D005260", "Female"), ("D002675", "Child, Preschool")]
# The fake's MeSH database (esummary db=mesh): descriptor UI -> (name, tree numbers). Values are for tests:
# those also in datasets/mesh-trees.tsv agree with it; Blast Crisis and Leukemia, Lymphoid sit under Leukemia
# (C04.557.337) as in MeSH, and their exact numbers are this fake's. Male/Female (check tags) have none.
MESH_TREES = {
    "D054198": ("Precursor Cell Lymphoblastic Leukemia-Lymphoma", ["C04.557.337.428.600"]),
    "D008279": ("Magnetic Resonance Imaging", ["E01.370.350.825.500"]),
    "D001853": ("Bone Marrow", ["A15.382.216"]),
    "D002648": ("Child", ["M01.060.406"]),
    "D006801": ("Humans", ["B01.050.150.900.649.313.988.400.112.400.400"]),
    "D015470": ("Leukemia, Myeloid, Acute", ["C04.557.337.539.275"]),
    "D001855": ("Bone Marrow Diseases", ["C15.378.190"]),
    "D007938": ("Leukemia", ["C04.557.337"]),
    "D000293": ("Adolescent", ["M01.060.057"]),
    "D008297": ("Male", []),
    "D005260": ("Female", []),
    "D002675": ("Child, Preschool", ["M01.060.406.448"]),
    "D001752": ("Blast Crisis", ["C04.557.337.372"]),
    "D007945": ("Leukemia, Lymphoid", ["C04.557.337.428"]),
}
QUALIFIERS = [("Q000000981", "diagnostic imaging"), ("Q000175", "diagnosis"), ("Q000473", "pathology"),
              ("Q000188", "drug therapy")]
WORDS = ("leukemia bone marrow magnetic resonance imaging pediatric acute lymphoblastic myeloid peripheral blood "
         "abnormality diagnosis case series children marrow infiltration relapse remission therapy outcome "
         "cohort survival signal intensity vertebral lesions cytopenia biopsy aspiration flow cytometry").split()
LAST_NAMES = ("Kato Koh Kikuchi Sato Suzuki Tanaka Smith Jones Miller Garcia Brown Chen Wang Li Muller Rossi "
              "Nguyen Kim Park Lopez Ivanov Novak Haddad Okafor Silva").split()
FORE_NAMES = ("Motohiro Katsuyoshi Akira Yuki Hiroshi John Mary Anna Wei Lan Paolo Maria Ines Omar Chidi "
              "Sofia Lucas Emma").split()


def _author(rng, i=0):
    last, fore = rng.choice(LAST_NAMES), rng.choice(FORE_NAMES)
    orcid = f"0000-000{rng.randint(1, 9)}-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}" if i == 0 else None
    return (last, fore, fore[0], orcid, f"Department of Pediatrics, University Hospital {rng.randint(1, 40)}.")


def small_corpus() -> Corpus:
    """A hand-made neighbourhood of a seed paper: references (some only in the XML, some only via elink,
    one with only a DOI, one raw text), citers (in PMC and not), a deleted citation, a third hop."""
    j = JOURNALS
    A = lambda last, fore, orcid=None, aff="Department of Pediatrics, Example University, Tokyo, Japan.": (  # noqa
        last, fore, "".join(w[0] for w in fore.split()), orcid, aff)
    seed = Paper(
        "30000001", "Case series of pediatric acute leukemia without a peripheral blood abnormality, detected by "
        "magnetic resonance imaging.", j[0], 2011, 6, "93", "6", "787-90", doi="10.5555/kb.2011.0842",
        pmcid="PMC7000001",
        abstract=[("BACKGROUND", "BACKGROUND", "Acute leukemia without blood abnormality is rare."),
                  ("METHODS", "METHODS", "We reviewed magnetic resonance imaging of the bone marrow."),
                  ("RESULTS", "RESULTS", "Diffuse marrow signal changes preceded the blood findings."),
                  ("CONCLUSIONS", "CONCLUSIONS", "MRI can detect leukemia early.")],
        authors=[A("Kato", "Motohiro", "0000-0002-1234-5678"), A("Koh", "Katsuyoshi"), A("Kikuchi", "Akira"),
                 "Japan Pediatric Leukemia Study Group"],
        mesh=[("D000293", "Adolescent", False, []), ("D002648", "Child", False, []),
              ("D001853", "Bone Marrow", False, [("Q000000981", "diagnostic imaging", True), ("Q000473", "pathology", False)]),
              ("D006801", "Humans", False, []),
              ("D054198", "Precursor Cell Lymphoblastic Leukemia-Lymphoma", True, [("Q000175", "diagnosis", True)]),
              ("D008279", "Magnetic Resonance Imaging", True, [])],
        keywords=["Acute leukemia", "Magnetic resonance imaging", "Bone marrow"],
        chemicals=[("0", "D000970", "Antineoplastic Agents")],
        publication_types=[("D016428", "Journal Article"), ("D002363", "Case Reports")],
        refs=[Ref("30000002"), Ref("30000003"), Ref("30000004"),
              Ref(None, "Doe J, Roe R. Marrow imaging in children. Example J Radiol. 2005;12:1-5.", "10.5555/ext.0001"),
              Ref(None, "Smith J. Personal communication. 2010.")])
    papers = [
        seed,
        Paper("30000002", "Bone marrow magnetic resonance imaging in childhood leukemia.", j[3], 2008, 3, "246", "2",
              "530-7", doi="10.5555/kb.2008.0002", pmcid="PMC7000002", authors=[A("Tanaka", "Yuki"), A("Smith", "John")],
              abstract=[(None, None, "Marrow MRI findings in forty children with leukemia.")],
              mesh=[("D008279", "Magnetic Resonance Imaging", True, []), ("D002648", "Child", False, [])],
              refs=[Ref("30000005"), Ref("30000006")], reflist_in_xml=False),
        Paper("30000003", "Acute lymphoblastic leukemia presenting with normal blood counts.", j[1], 2009, 11, "53",
              "5", "891-4", doi="10.5555/kb.2009.0003", authors=[A("Jones", "Mary"), A("Chen", "Wei")],
              abstract=[(None, None, "Normal blood counts do not exclude leukemia.")],
              mesh=[("D054198", "Precursor Cell Lymphoblastic Leukemia-Lymphoma", True, [])],
              refs=[Ref("30000006"), Ref("30000007"),
                    Ref("39999998", "Withdrawn A. A citation PubMed no longer has. Gone J. 2004;1:1-2.")]),
        Paper("30000004", "Aleukemic leukemia: a review.", j[2], 2005, 1, "105", "1", "12-20",
              doi="10.5555/kb.2005.0004", authors=[A("Garcia", "Ines")],
              abstract=[(None, None, "A review of aleukemic presentations.")], refs=[Ref("30000009")]),
        Paper("30000005", "Marrow signal intensity in healthy children.", j[3], 2001, 4, "220", "3", "600-5",
              doi="10.5555/kb.2001.0005", authors=[A("Brown", "Anna")],
              abstract=[(None, None, "Reference values for marrow signal.")]),
        Paper("30000006", "Flow cytometry of marrow aspirates in acute leukemia.", j[4], 2003, 8, "17", "8",
              "1500-8", doi="10.5555/kb.2003.0006", pmcid="PMC7000006", authors=[A("Rossi", "Paolo")],
              abstract=[(None, None, "Flow cytometry findings.")]),
        Paper("30000007", "Leukemia in children: outcome of therapy.", j[5], 2000, 2, "342", "4", "250-9",
              doi="10.5555/kb.2000.0007", pmcid="PMC7000007", authors=[A("Li", "Lan")],
              abstract=[(None, None, "Survival outcomes.")], refs=[Ref("30000008")]),
        Paper("30000008", "Early description of marrow failure.", j[2], 1990, 5, "75", "1", "1-9",
              authors=[A("Muller", "Lucas")], abstract=[(None, None, "Historic cohort.")]),
        Paper("30000010", "MRI screening for leukemia with normal blood counts.", j[0], 2014, 9, "100", "3",
              "250-6", doi="10.5555/kb.2014.0010", pmcid="PMC7000010", authors=[A("Sato", "Hiroshi")],
              abstract=[(None, None, "Prospective MRI screening.")], refs=[Ref("30000001"), Ref("30000002")]),
        Paper("30000011", "Diagnostic delays in pediatric leukemia.", j[1], 2016, 2, "63", "2", "300-5",
              doi="10.5555/kb.2016.0011", pmcid="PMC7000011", authors=[A("Kim", "Emma")],
              abstract=[(None, None, "Delays in diagnosis.")], refs=[Ref("30000001")]),
        Paper("30000012", "Imaging findings in leukemia: a letter.", j[3], 2012, 7, "264", "1", "301",
              doi="10.5555/kb.2012.0012", authors=[A("Park", "Omar")],
              abstract=[], publication_types=[("D016422", "Letter")], refs=[Ref("30000001")]),
        Paper("30000013", "Marrow MRI revisited.", j[3], 2013, 10, "268", "2", "400-8", doi="10.5555/kb.2013.0013",
              pmcid="PMC7000013", authors=[A("Haddad", "Sofia")], abstract=[(None, None, "Revisiting MRI.")],
              refs=[Ref("30000002")]),
    ]
    return Corpus(papers, deleted={"30000009"})


def generate_network(n=3000, seed=7, first_pmid=20000001) -> Corpus:
    """A deterministic citation network of `n` papers: each cites 4-20 earlier ones (preferring cited
    papers), 60% are in PMC, 70% carry a ReferenceList, 5% of references are text only."""
    rng = random.Random(seed)
    papers, tickets = [], []  # tickets: one entry per paper plus one per citation received
    for i in range(n):
        pmid = str(first_pmid + i)
        year = 1990 + (i * 34) // n
        journal = JOURNALS[rng.randrange(len(JOURNALS))]
        title_words = rng.sample(WORDS, rng.randint(4, 9))
        title = (" ".join(title_words)).capitalize() + f" ({pmid})."
        refs = []
        if i:
            k = min(i, rng.randint(4, 20))
            chosen = set()
            for _ in range(k * 3):
                if len(chosen) >= k:
                    break
                j = rng.choice(tickets) if rng.random() < 0.7 else rng.randrange(i)
                chosen.add(j)
            for j in sorted(chosen):
                refs.append(Ref(str(first_pmid + j), in_xml_ids=rng.random() > 0.05))
            if rng.random() < 0.3:
                refs.append(Ref(None, f"Anonymous. Conference abstract {rng.randint(1, 999)}. Proc Meet. {year - 1}."))
            tickets.extend(sorted(chosen))
        pages_start = rng.randint(1, 2000)
        papers.append(Paper(
            pmid, title, journal, year, rng.randint(1, 12), str(rng.randint(1, 300)), str(rng.randint(1, 12)),
            f"{pages_start}-{pages_start + rng.randint(1, 15)}",
            doi=f"10.5555/gen.{pmid}" if rng.random() < 0.9 else None,
            pmcid=f"PMC{8000000 + i}" if rng.random() < 0.6 else None,
            abstract=[(None, None, " ".join(rng.choice(WORDS) for _ in range(30)).capitalize() + ".")],
            authors=[_author(rng, a) for a in range(rng.randint(1, 8))],
            mesh=[(ui, name, rng.random() < 0.3, []) for ui, name in rng.sample(MESH, rng.randint(1, 5))],
            keywords=rng.sample(WORDS, rng.randint(0, 4)),
            refs=refs, reflist_in_xml=rng.random() < 0.7))
        tickets.append(i)
    return Corpus(papers)


# ------------------------------------------------------------------------------------------------
# XML and text responses
# ------------------------------------------------------------------------------------------------

def article_xml(p: Paper, corpus: Corpus) -> str:
    out = ['<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM" IndexingMethod="Automated">',
           f'<PMID Version="1">{p.pmid}</PMID>',
           f"<DateCompleted><Year>{p.year}</Year><Month>{p.month:02d}</Month><Day>15</Day></DateCompleted>",
           f"<DateRevised><Year>{p.year + 2}</Year><Month>01</Month><Day>10</Day></DateRevised>",
           '<Article PubModel="Print-Electronic"><Journal>',
           f'<ISSN IssnType="{p.journal.issn_type}">{p.journal.issn}</ISSN>',
           f'<JournalIssue CitedMedium="Internet"><Volume>{esc(p.volume)}</Volume><Issue>{esc(p.issue)}</Issue>',
           f"<PubDate><Year>{p.year}</Year><Month>{MONTHS[p.month - 1]}</Month></PubDate></JournalIssue>",
           f"<Title>{esc(p.journal.title)}</Title><ISOAbbreviation>{esc(p.journal.iso)}</ISOAbbreviation></Journal>",
           f"<ArticleTitle>{esc(p.title)}</ArticleTitle>"]
    start, _, end = p.pages.partition("-")
    out.append(f"<Pagination><StartPage>{start}</StartPage>" + (f"<EndPage>{end}</EndPage>" if end else "")
               + f"<MedlinePgn>{esc(p.pages)}</MedlinePgn></Pagination>")
    if p.doi:
        out.append(f'<ELocationID EIdType="doi" ValidYN="Y">{esc(p.doi)}</ELocationID>')
    if p.abstract:
        out.append("<Abstract>")
        for label, category, text in p.abstract:
            attrs = (f' Label="{esc(label)}"' if label else "") + (f' NlmCategory="{category}"' if category else "")
            out.append(f"<AbstractText{attrs}>{esc(text)}</AbstractText>")
        out.append("</Abstract>")
    if p.authors:
        out.append('<AuthorList CompleteYN="Y">')
        for a in p.authors:
            if isinstance(a, str):
                out.append(f'<Author ValidYN="Y"><CollectiveName>{esc(a)}</CollectiveName></Author>')
                continue
            last, fore, initials, orcid, aff = a
            out.append(f'<Author ValidYN="Y"><LastName>{esc(last)}</LastName><ForeName>{esc(fore)}</ForeName>'
                       f"<Initials>{esc(initials)}</Initials>")
            if orcid:
                out.append(f'<Identifier Source="ORCID">{orcid}</Identifier>')
            if aff:
                out.append(f"<AffiliationInfo><Affiliation>{esc(aff)}</Affiliation></AffiliationInfo>")
            out.append("</Author>")
        out.append("</AuthorList>")
    out.append(f"<Language>{p.language}</Language><PublicationTypeList>")
    out.extend(f'<PublicationType UI="{ui}">{esc(name)}</PublicationType>' for ui, name in p.publication_types)
    out.append("</PublicationTypeList>")
    out.append(f'<ArticleDate DateType="Electronic"><Year>{p.year}</Year><Month>{p.month:02d}</Month>'
               "<Day>01</Day></ArticleDate></Article>")
    out.append(f"<MedlineJournalInfo><Country>{esc(p.journal.country)}</Country><MedlineTA>{esc(p.journal.iso)}"
               f"</MedlineTA><NlmUniqueID>{p.journal.nlm_id}</NlmUniqueID><ISSNLinking>{p.journal.issn}"
               "</ISSNLinking></MedlineJournalInfo>")
    if p.chemicals:
        out.append("<ChemicalList>")
        out.extend(f'<Chemical><RegistryNumber>{rn}</RegistryNumber><NameOfSubstance UI="{ui}">{esc(name)}'
                   "</NameOfSubstance></Chemical>" for rn, ui, name in p.chemicals)
        out.append("</ChemicalList>")
    out.append("<CitationSubset>IM</CitationSubset>")
    if p.mesh:
        out.append("<MeshHeadingList>")
        for ui, name, major, quals in p.mesh:
            out.append(f'<MeshHeading><DescriptorName UI="{ui}" MajorTopicYN="{"Y" if major else "N"}">'
                       f"{esc(name)}</DescriptorName>")
            out.extend(f'<QualifierName UI="{qui}" MajorTopicYN="{"Y" if qmaj else "N"}">{esc(qname)}'
                       "</QualifierName>" for qui, qname, qmaj in quals)
            out.append("</MeshHeading>")
        out.append("</MeshHeadingList>")
    if p.keywords:
        out.append('<KeywordList Owner="NOTNLM">')
        out.extend(f'<Keyword MajorTopicYN="N">{esc(k)}</Keyword>' for k in p.keywords)
        out.append("</KeywordList>")
    out.append("</MedlineCitation><PubmedData><History>")
    for status, (y, m) in (("received", (p.year - 1, 11)), ("accepted", (p.year, p.month)),
                           ("pubmed", (p.year, p.month)), ("medline", (p.year, p.month))):
        out.append(f'<PubMedPubDate PubStatus="{status}"><Year>{y}</Year><Month>{m}</Month><Day>2</Day>'
                   "</PubMedPubDate>")
    out.append("</History><PublicationStatus>ppublish</PublicationStatus><ArticleIdList>")
    out.append(f'<ArticleId IdType="pubmed">{p.pmid}</ArticleId>')
    if p.doi:
        out.append(f'<ArticleId IdType="doi">{esc(p.doi)}</ArticleId>')
    if p.pmcid:
        out.append(f'<ArticleId IdType="pmc">{p.pmcid}</ArticleId>')
    out.append("</ArticleIdList>")
    if p.refs and p.reflist_in_xml:
        out.append("<ReferenceList>")
        for r in p.refs:
            out.append(f"<Reference><Citation>{esc(corpus.ref_citation(r))}</Citation>")
            ids = []
            if r.pmid and r.in_xml_ids:
                ids.append(f'<ArticleId IdType="pubmed">{r.pmid}</ArticleId>')
            doi = r.doi or (corpus.papers[r.pmid].doi if r.pmid in corpus.papers and r.in_xml_ids else None)
            if doi:
                ids.append(f'<ArticleId IdType="doi">{esc(doi)}</ArticleId>')
            if ids:
                out.append("<ArticleIdList>" + "".join(ids) + "</ArticleIdList>")
            out.append("</Reference>")
        out.append("</ReferenceList>")
    out.append("</PubmedData></PubmedArticle>\n")
    return "".join(out)


def efetch_body(corpus: Corpus, ids: list[str]) -> str:
    out = [EFETCH_HEAD, "<PubmedArticleSet>\n"]
    deleted = []
    for pmid in ids:
        if pmid in corpus.papers:
            out.append(article_xml(corpus.papers[pmid], corpus))
        elif pmid in corpus.deleted:
            deleted.append(pmid)
    if deleted:
        out.append("<DeleteCitation>" + "".join(f'<PMID Version="1">{d}</PMID>' for d in deleted)
                   + "</DeleteCitation>\n")
    out.append("</PubmedArticleSet>\n")
    return "".join(out)


def elink_body(corpus: Corpus, dbfrom: str, linkname: str, id_params: list[str], cmd: str = "neighbor") -> str:
    """One LinkSet per `id=` parameter; comma-joined ids in one parameter share one LinkSet (as NCBI does).
    ``cmd=neighbor_score`` adds each link's <Score> (pubmed_pubmed: similar articles, best first)."""
    out = [ELINK_HEAD, "<eLinkResult>\n"]
    for param in id_params:
        ids = [i.strip() for i in param.split(",") if i.strip()]
        links: list[str] = []
        scores: dict[str, int] = {}
        for i in ids:
            if linkname == "pubmed_pubmed" and dbfrom == "pubmed":
                for other, score in corpus.similar(i):
                    links.append(other)
                    scores.setdefault(other, score)
            elif linkname == "pubmed_pubmed_refs":
                links += corpus.refs(i)
            elif linkname == "pubmed_pubmed_citedin":
                links += corpus.citedin(i)
            elif linkname == "pmc_pubmed" and dbfrom == "pmc":
                pmid = corpus.by_pmc.get("PMC" + i.upper().removeprefix("PMC"))
                links += [pmid] if pmid else []
        out.append(f"<LinkSet><DbFrom>{esc(dbfrom)}</DbFrom><IdList>"
                   + "".join(f"<Id>{esc(i)}</Id>" for i in ids) + "</IdList>")
        if links:
            if cmd == "neighbor_score":
                body = "".join(f"<Link><Id>{x}</Id><Score>{scores.get(x, 0)}</Score></Link>"
                               for x in dict.fromkeys(links))
            else:
                body = "".join(f"<Link><Id>{x}</Id></Link>" for x in dict.fromkeys(links))
            out.append(f"<LinkSetDb><DbTo>pubmed</DbTo><LinkName>{esc(linkname)}</LinkName>" + body + "</LinkSetDb>")
        out.append("</LinkSet>\n")
    out.append("</eLinkResult>\n")
    return "".join(out)


def _norm(text) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


TOKEN = re.compile(r'"([^"]*)"(?:\[([^\]]+)\])?|\(|\)|([^\s()"\[\]]+)(?:\[([^\]]+)\])?')


def _match_term(p: Paper, value: str, tag: str | None) -> bool:
    tag = (tag or "").lower().strip()
    v = _norm(value)
    if tag in ("doi", "aid", "lid", "location id"):
        return bool(p.doi) and p.doi.lower() == value.strip().lower()
    if tag in ("pmcid", "pmc"):
        return bool(p.pmcid) and p.pmcid.upper() == "PMC" + value.strip().upper().removeprefix("PMC")
    if tag in ("pmid", "uid"):
        return p.pmid == value.strip()
    if tag in ("title", "ti"):
        return f" {v} " in f" {_norm(p.title)} "
    if tag in ("au", "author", "1au", "auth"):
        names = [a if isinstance(a, str) else f"{a[0]} {a[2]}" for a in p.authors]
        if tag == "1au":
            names = names[:1]
        return any(_norm(n).startswith(v) for n in names)
    if tag in ("ta", "journal", "jour"):
        return v in (_norm(p.journal.iso), _norm(p.journal.title))
    if tag in ("dp", "pdat", "year", "publication date", "ppdat"):
        return str(p.year) == value.strip()[:4]
    if tag in ("vi", "volume"):
        return p.volume == value.strip()
    if tag in ("pg", "page"):
        return p.first_page == value.strip() or p.pages == value.strip()
    text = f" {_norm(p.title)} {_norm(' '.join(t for _, _, t in p.abstract))} "
    return f" {v} " in text


def esearch_ids(corpus: Corpus, term: str) -> list[str]:
    """Evaluate a small subset of PubMed's query syntax: quoted phrases, [field] tags, AND/OR/NOT."""
    result: set[str] | None = None
    op = "AND"
    for m in TOKEN.finditer(term):
        word = m.group(1) if m.group(1) is not None else m.group(3)
        tag = m.group(2) or m.group(4)
        if word is None:  # parentheses: ignored (left to right evaluation)
            continue
        if m.group(1) is None and word.upper() in ("AND", "OR", "NOT") and not tag:
            op = word.upper()
            continue
        hits = {pmid for pmid, p in corpus.papers.items() if _match_term(p, word, tag)}
        if result is None:
            result = hits
        elif op == "AND":
            result &= hits
        elif op == "OR":
            result |= hits
        else:
            result -= hits
        op = "AND"
    return sorted(result or (), key=int, reverse=True)


def esearch_body(corpus: Corpus, term: str, retmax: int, retstart: int, ids: list[str] | None = None,
                 history: tuple[str, str] | None = None, db: str = "pubmed") -> str:
    """An eSearchResult page; with `history` (WebEnv, query_key) their elements too. PubMed's limit: only the
    first 9,999 ids are served (retstart > 9998 is an error; a longer page is cut, with a warning)."""
    ids = esearch_ids(corpus, term) if ids is None else ids
    warning = None
    if db == "pubmed" and retstart > PUBMED_ESEARCH_MAX - 1:
        return (ESEARCH_HEAD + "<eSearchResult><ERROR>Search Backend failed: Exception:\n'retstart' cannot be larger "
                "than 9998. For PubMed, ESearch can only retrieve the first 9,999 records matching the query. To "
                "obtain more than 9,999 PubMed records, consider using EDirect that contains additional logic to batch "
                "PubMed search results automatically so that an arbitrary number can be retrieved. For details see "
                "https://www.ncbi.nlm.nih.gov/books/NBK25499/</ERROR></eSearchResult>\n")
    if db == "pubmed" and retstart + retmax > PUBMED_ESEARCH_MAX:
        retmax = PUBMED_ESEARCH_MAX - retstart
        warning = f"Restrictions achieved. start and count adjusted to {retstart}, {retmax}"
    page = ids[retstart:retstart + retmax]
    head = f"<eSearchResult><Count>{len(ids)}</Count><RetMax>{len(page)}</RetMax><RetStart>{retstart}</RetStart>"
    if history:
        head += f"<QueryKey>{history[1]}</QueryKey><WebEnv>{esc(history[0])}</WebEnv>"
    out = [ESEARCH_HEAD, head + "<IdList>", "".join(f"<Id>{i}</Id>" for i in page), "</IdList>",
           "<TranslationSet/>"]
    if warning:
        out.append(f"<WarningList><OutputMessage>{esc(warning)}</OutputMessage></WarningList>")
    if not ids:
        out.append(f"<ErrorList><PhraseNotFound>{esc(term)}</PhraseNotFound></ErrorList>"
                   "<WarningList><OutputMessage>No items found.</OutputMessage></WarningList>")
    else:
        out.append(f"<QueryTranslation>{esc(term)}</QueryTranslation>")
    out.append("</eSearchResult>\n")
    return "".join(out)


def esummary_mesh_body(uids: list[str], version: str) -> str:
    """esummary db=mesh: one DocumentSummary (version 2.0) or DocSum (version 1) per UID; descriptor D008279
    is UID 68008279; an unknown UID gets an <error> entry (2.0) or nothing (1)."""
    entries = []
    for uid in uids:
        ui = "D" + uid[2:] if uid.startswith("68") and uid[2:].isdigit() else None
        entries.append((uid, ui, MESH_TREES.get(ui) if ui else None))
    if version == "2.0":
        out = [ESUMMARY_MESH_HEAD, '<eSummaryResult>\n<DocumentSummarySet status="OK">\n<DbBuild>Build250219-0214.1'
               '</DbBuild>\n']
        for uid, ui, known in entries:
            if not known:
                out.append('<DocumentSummary><error>cannot get document summary</error></DocumentSummary>\n')
                continue
            name, trees = known
            # the elements of NCBI's eSummary_mesh DTD, in its order, and DS_MeshUI (``ds_meshui`` in JSON)
            out.append(f'<DocumentSummary uid="{uid}">\n\t<DS_YearIntroduced></DS_YearIntroduced>\n'
                       f"\t<DS_ScopeNote></DS_ScopeNote>\n\t<DS_MeshUI>{ui}</DS_MeshUI>\n"
                       "\t<DS_RegistryNumber></DS_RegistryNumber>\n\t<DS_HeadingMappedTo></DS_HeadingMappedTo>\n"
                       f"\t<DS_MeshTerms>\n\t\t<string>{esc(name)}</string>\n\t</DS_MeshTerms>\n"
                       "\t<DS_Subheading>\n\t</DS_Subheading>\n\t<DS_PaPx>\n\t</DS_PaPx>\n"
                       "\t<DS_PreviousIndexing>\n\t</DS_PreviousIndexing>\n\t<DS_SeeRelated>\n\t</DS_SeeRelated>\n"
                       "\t<DS_PaList>\n\t</DS_PaList>\n\t<DS_IdxLinks>\n")
            for t in trees:
                parent = next((f"68{u[1:]}" for u, (_, ts) in sorted(MESH_TREES.items()) if t.rsplit(".", 1)[0] in ts
                               and "." in t), None)
                out.append("\t\t<LinksType>\n" + (f"\t\t\t<Parent>{parent}</Parent>\n" if parent else "")
                           + f"\t\t\t<TreeNum>{t}</TreeNum>\n\t\t\t<Children>\n\t\t\t</Children>\n\t\t</LinksType>\n")
            out.append("\t</DS_IdxLinks>\n\t<DS_EntryDate>1999/01/01 00:00</DS_EntryDate>\n"
                       "\t<DS_RevisionDate>2024/06/10 00:00</DS_RevisionDate>\n</DocumentSummary>\n\n")
        out.append("</DocumentSummarySet>\n</eSummaryResult>\n")
        return "".join(out)
    out = [ESUMMARY_HEAD, "<eSummaryResult>\n"]
    for uid, ui, known in entries:
        if not known:
            continue
        name, trees = known
        out.append(f"<DocSum><Id>{uid}</Id>"
                   f'<Item Name="DS_MeshTerms" Type="List"><Item Name="string" Type="String">{esc(name)}</Item></Item>'
                   '<Item Name="DS_IdxLinks" Type="List">'
                   + "".join('<Item Name="LinksType" Type="Structure"><Item Name="TreeNum" Type="String">'
                             f"{t}</Item></Item>" for t in trees)
                   + f'</Item><Item Name="DS_MeshUI" Type="String">{ui}</Item></DocSum>\n')
    out.append("</eSummaryResult>\n")
    return "".join(out)


def ecitmatch_body(corpus: Corpus, bdata: str) -> str:
    """ECitMatch: journal|year|volume|first_page|author|key| lines in, the same plus a PMID (or NOT_FOUND) out."""
    lines = [line for line in re.split(r"[\r\n]+", bdata) if line.strip()]
    out = []
    for line in lines:
        parts = line.split("|")
        parts += [""] * (6 - len(parts))
        journal, year, volume, first_page, author, key = (x.strip() for x in parts[:6])
        nj = _norm(journal)
        in_journal = [p for p in corpus.papers.values() if nj and nj in (_norm(p.journal.iso), _norm(p.journal.title))]
        if not in_journal:
            answer = "NOT_FOUND;INVALID_JOURNAL"
        else:
            hits = [p for p in in_journal
                    if (not year or str(p.year) == year) and (not volume or p.volume == volume)
                    and (not first_page or p.first_page == first_page)
                    and (not author or (p.authors and _norm(p.authors[0] if isinstance(p.authors[0], str)
                                                             else f"{p.authors[0][0]} {p.authors[0][2]}")
                                        .startswith(_norm(author).split(" ")[0])))]
            answer = hits[0].pmid if len(hits) == 1 else ("AMBIGUOUS" if hits else "NOT_FOUND")
        out.append("|".join([journal, year, volume, first_page, author, key, answer]))
    return "\n".join(out) + ("\n" if out else "")


ERROR_BODIES = {
    "efetch.fcgi": EFETCH_ERROR_HEAD + "<eFetchResult>\n\t<ERROR>Unable to obtain query #1</ERROR>\n</eFetchResult>\n",
    "esearch.fcgi": ESEARCH_HEAD + "<eSearchResult><ERROR>Search Backend failed: Database is not available"
                    "</ERROR></eSearchResult>\n",
    "elink.fcgi": ELINK_HEAD + "<eLinkResult><ERROR>Error occurred: read timeout on backend</ERROR></eLinkResult>\n",
    "esummary.fcgi": ESUMMARY_MESH_HEAD + "<eSummaryResult><ERROR>Database is not available</ERROR></eSummaryResult>\n",
}


# ------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeEutils/1.0"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle(urlsplit(self.path).query)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        query = urlsplit(self.path).query
        self._handle(query + ("&" if query and body else "") + body)

    def _handle(self, query: str):
        fake: FakeEutils = self.server.fake  # type: ignore[attr-defined]
        util = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        params = parse_qs(query, keep_blank_values=True)
        entry = {"t": time.monotonic(), "wall": time.time(), "method": self.command, "endpoint": util,
                 "path": urlsplit(self.path).path, "params": params, "fault": None, "status": None}
        fake._log(entry)
        fake.gate.wait(timeout=60)
        if util not in UTILS:
            return self._send(404, b"<html><body>Not Found</body></html>", "text/html", entry)
        fault = fake._pick_fault(util, params)
        entry["fault"] = fault
        if fault:
            return self._fault(fault, util, entry, fake)
        try:
            status, body, ctype = fake._answer(util, params)
        except Exception as exc:  # a bug in the fake: say so rather than hang
            status, body, ctype = 500, f"fake server error: {exc!r}".encode(), "text/plain"
        self._send(status, body, ctype, entry)

    def _send(self, status, body: bytes, ctype, entry, headers=None, length=None, write=None):
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length is not False:
            self.send_header("Content-Length", str(len(body) if length is None else length))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body if write is None else write)
        self.wfile.flush()

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fault(self, fault, util, entry, fake):
        xml_ctype = "text/xml; charset=UTF-8"
        if fault == "429":
            body = b'{"error":"API rate limit exceeded","api-key":"127.0.0.1","count":"4","limit":"3"}\n'
            return self._send(429, body, "application/json", entry, headers={"Retry-After": fake.retry_after})
        if fault in ("500", "502"):
            body = f"<html><body><h1>{fault} {'Internal Server Error' if fault == '500' else 'Bad Gateway'}</h1>" \
                   "</body></html>".encode()
            return self._send(int(fault), body, "text/html", entry)
        if fault == "drop":
            entry["status"] = "dropped"
            return self._drop()
        if fault == "timeout":
            entry["status"] = "timeout"
            time.sleep(fake.timeout_sleep)
            return self._drop()
        status, body, ctype = fake._answer(util, entry["params"])
        if fault == "truncate":  # promises the whole body, sends a part, hangs up
            self._send(200, body, ctype, entry, write=body[: max(1, len(body) // 2)])
            return self._drop()
        if fault == "truncate-nolength":
            self._send(200, body, ctype, entry, length=False, write=body[: max(1, len(body) * 2 // 3)])
            return self._drop()
        if fault == "error":
            return self._send(200, ERROR_BODIES.get(util, "").encode(), xml_ctype, entry)
        if fault == "malformed":
            cut = body[: max(1, len(body) // 3)]
            return self._send(200, cut, ctype, entry)
        raise ValueError(fault)


class FakeEutils(LocalServer):
    """The fake server: ``with FakeEutils(corpus) as server: ... server.base_url ...``."""
    handler = _Handler
    name = "fake-eutils"

    def __init__(self, corpus: Corpus | None = None, *, retry_after="1", timeout_sleep=2.0, fault_rate=0.0,
                 fault_kinds=FAULTS, fault_seed=0, max_consecutive_faults=3, fault_cycle=False, port=0):
        self.corpus = corpus or small_corpus()
        self.retry_after = retry_after
        self.timeout_sleep = timeout_sleep
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.max_consecutive_faults = max_consecutive_faults
        self.fault_cycle = fault_cycle  # True: kinds in turn instead of at random
        self._cycle = 0
        self.requests: list[dict] = []
        self.history: dict[str, dict[str, list[str]]] = {}  # WebEnv -> query_key -> ids (esearch usehistory=y)
        self.search_padding: dict[str, int] = {}  # term -> Count: more hits than the corpus (PMIDs 90000001...)
        self._rng = random.Random(fault_seed)
        self._queued: list[tuple[str, str | None]] = []
        self._streak: dict[str, int] = {}
        self._lock = threading.Lock()
        self._port = port
        self.gate = threading.Event()  # cleared: requests wait at the door until it is set again
        self.gate.set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/entrez/eutils/"

    # -- requests and faults --
    def hold(self):
        """Keep every request waiting (after logging it) until :meth:`release`: a client stays mid-request."""
        self.gate.clear()

    def release(self):
        self.gate.set()

    def fail(self, kind: str, times: int = 1, endpoint: str | None = None):
        """Answer the next `times` requests (to `endpoint`, e.g. "efetch", if given) with fault `kind`."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        with self._lock:
            self._queued.extend([(kind, endpoint)] * times)

    def count(self, endpoint: str | None = None) -> int:
        """Requests received (to `endpoint`, e.g. "efetch" or "elink", if given)."""
        with self._lock:
            return sum(1 for r in self.requests if endpoint is None or r["endpoint"].startswith(endpoint))

    def assert_rate(self, per_second: int, tolerance: float = 0.03):
        """Check NCBI's rule on the arrival times: at most `per_second` requests in any one second
        (with a little slack for thread scheduling), and no two requests nearly at once."""
        times = [r["t"] for r in self.requests]
        for i in range(len(times) - per_second):
            window = times[i + per_second] - times[i]
            assert window >= 1.0 - tolerance, f"{per_second + 1} requests within {window:.3f} s (from #{i})"
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert not gaps or min(gaps) >= 0.5 / per_second, f"two requests {min(gaps):.3f} s apart"
        return len(times)

    def reset(self):
        """Forget the request log and any queued fault (settings such as fault_rate stay)."""
        with self._lock:
            self.requests.clear()
            self._queued.clear()
            self._streak.clear()

    def pad_search(self, term: str, count: int):
        """Make esearch for `term` match `count` papers: the corpus' hits, then made-up PMIDs from 90000001
        (not in the corpus: efetch finds nothing for them), e.g. to pass PubMed's 9,999 cap."""
        self.search_padding[term] = count

    def forget_history(self):
        """Drop every WebEnv, as NCBI's history server does after a while."""
        with self._lock:
            self.history.clear()

    def _search(self, term: str) -> list[str]:
        ids = esearch_ids(self.corpus, term) if term.strip() else []
        extra = self.search_padding.get(term, 0) - len(ids)
        return ids + [str(90000001 + i) for i in range(max(0, extra))]

    def _esearch(self, one) -> str:
        """esearch with the history server: usehistory=y stores the result under a WebEnv and query_key;
        WebEnv + query_key (AND term) select a stored result; an unknown one is an <ERROR>."""
        term, webenv, query_key = one("term"), one("WebEnv"), one("query_key")
        retmax = int(one("retmax", "20") or 20)
        retstart = int(one("retstart", "0") or 0)
        if query_key:
            with self._lock:
                stored = self.history.get(webenv, {}).get(query_key)
            if stored is None:
                return (ESEARCH_HEAD + f"<eSearchResult><ERROR>Unable to obtain query #{esc(query_key)}</ERROR>"
                        "</eSearchResult>\n")
            if term.strip():
                hits = set(self._search(term))
                ids = [i for i in stored if i in hits]
            else:
                ids = stored
        else:
            ids = self._search(term)
        history = None
        if one("usehistory") == "y":
            with self._lock:
                if webenv not in self.history:  # a new WebEnv, never one handed out before
                    self._webenvs = getattr(self, "_webenvs", 0) + 1
                    webenv = f"MCID_{self._webenvs:08d}_fake_{random.Random(term).randrange(10 ** 9):09d}"
                    self.history[webenv] = {}
                keys = self.history[webenv]
                query_key = str(len(keys) + 1)
                keys[query_key] = list(ids)
            history = (webenv, query_key)
        return esearch_body(self.corpus, term, retmax, retstart, ids=ids, history=history, db=one("db", "pubmed"))

    def _log(self, entry):
        with self._lock:
            self.requests.append(entry)

    def _pick_fault(self, util, params) -> str | None:
        key = util + repr(sorted((k, v) for k, v in params.items() if k not in ("api_key", "email", "tool")))
        with self._lock:
            for i, (kind, endpoint) in enumerate(self._queued):
                if endpoint is None or util.startswith(endpoint):
                    del self._queued[i]
                    return kind
            if self.fault_rate and self._streak.get(key, 0) < self.max_consecutive_faults \
                    and self._rng.random() < self.fault_rate:
                kinds = [k for k in self.fault_kinds
                         if not (util == "ecitmatch.cgi" and k in ("error", "malformed", "truncate-nolength"))]
                self._streak[key] = self._streak.get(key, 0) + 1
                if self.fault_cycle:
                    self._cycle += 1
                    return kinds[(self._cycle - 1) % len(kinds)]
                return self._rng.choice(kinds)
            self._streak.pop(key, None)
            return None

    def _answer(self, util, params) -> tuple[int, bytes, str]:
        one = lambda name, default="": (params.get(name) or [default])[0]  # noqa: E731
        xml = "text/xml; charset=UTF-8"
        if util == "efetch.fcgi":
            if one("db") != "pubmed":
                return 400, (EFETCH_ERROR_HEAD + "<eFetchResult><ERROR>Invalid db name specified: "
                             f"{esc(one('db'))}</ERROR></eFetchResult>\n").encode(), xml
            ids = [i.strip() for p in params.get("id", []) for i in p.split(",") if i.strip()]
            if not ids:
                return 200, (EFETCH_ERROR_HEAD + "<eFetchResult><ERROR>Empty id list - nothing todo</ERROR>"
                             "</eFetchResult>\n").encode(), xml
            return 200, efetch_body(self.corpus, ids).encode(), xml
        if util == "esearch.fcgi":
            term = one("term")
            if not term.strip() and not one("query_key"):
                return 200, (ESEARCH_HEAD + "<eSearchResult><ERROR>Empty term and query_key - nothing todo"
                             "</ERROR></eSearchResult>\n").encode(), xml
            if one("usehistory") == "y" or one("query_key") or term in self.search_padding:
                return 200, self._esearch(one).encode(), xml
            retmax = int(one("retmax", "20") or 20)
            retstart = int(one("retstart", "0") or 0)
            return 200, esearch_body(self.corpus, term, retmax, retstart).encode(), xml
        if util == "elink.fcgi":
            return 200, elink_body(self.corpus, one("dbfrom", "pubmed"), one("linkname"),
                                   params.get("id", []), cmd=one("cmd", "neighbor")).encode(), xml
        if util == "esummary.fcgi":
            if one("db") != "mesh":
                return 200, (ESUMMARY_HEAD + "<eSummaryResult><ERROR>Invalid db name specified: "
                             f"{esc(one('db'))}</ERROR></eSummaryResult>\n").encode(), xml
            uids = [i.strip() for p in params.get("id", []) for i in p.split(",") if i.strip()]
            if not uids:
                return 200, (ESUMMARY_HEAD + "<eSummaryResult><ERROR>Empty id list - nothing todo</ERROR>"
                             "</eSummaryResult>\n").encode(), xml
            return 200, esummary_mesh_body(uids, one("version")).encode(), xml
        if util == "ecitmatch.cgi":
            return 200, ecitmatch_body(self.corpus, one("bdata")).encode(), "text/plain; charset=UTF-8"
        return 404, b"not found", "text/plain"


# ------------------------------------------------------------------------------------------------
# pytest fixtures: import them into a test module (``from fake_eutils import fake_eutils, eutils_env``)
# ------------------------------------------------------------------------------------------------

if pytest is not None:
    @pytest.fixture
    def fake_eutils():
        """A running fake server over :func:`small_corpus`; ``.base_url``, ``.requests``, ``.fail()``."""
        with FakeEutils(small_corpus()) as server:
            yield server

    @pytest.fixture
    def eutils_env(fake_eutils, monkeypatch):
        """The fake server, with KB_EUTILS_URL pointing at it (and no NCBI_API_KEY from the outside)."""
        monkeypatch.setenv("KB_EUTILS_URL", fake_eutils.base_url)
        monkeypatch.delenv("NCBI_API_KEY", raising=False)
        return fake_eutils

    @pytest.fixture(scope="session")
    def network_corpus():
        """A generated citation network of 3,000 papers (deterministic)."""
        return generate_network(3000, seed=7)

    @pytest.fixture
    def network_eutils(network_corpus):
        """A fake server over the generated network."""
        with FakeEutils(network_corpus) as server:
            yield server


def main(argv=None):  # pragma: no cover - a manual tool
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--network", type=int, default=0, help="serve a generated network of N papers")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    args = ap.parse_args(argv)
    corpus = generate_network(args.network) if args.network else small_corpus()
    server = FakeEutils(corpus, port=args.port, fault_rate=args.fault_rate).start()
    print(f"KB_EUTILS_URL={server.base_url}  ({len(corpus.papers)} papers; Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
