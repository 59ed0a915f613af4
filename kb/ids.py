"""Paper identifiers as people type or paste them, resolved to PMIDs.

Accepted: a PMID (``21479354``, ``PMID: 21479354``, ``pmid:21479354``), a DOI (``10.1007/...``,
``doi:10.1007/...``, ``https://doi.org/...``, ``dx.doi.org/...``), a PMCID (``PMC3110398``,
``PMCID: PMC3110398``) and the URLs of PubMed (``pubmed.ncbi.nlm.nih.gov/NNN/``,
``www.ncbi.nlm.nih.gov/pubmed/NNN``) and PMC (``www.ncbi.nlm.nih.gov/pmc/articles/PMCnnn/``,
``pmc.ncbi.nlm.nih.gov/articles/PMCnnn/``). DOIs are resolved with esearch (``DOI[doi]``, then
``"DOI"[AID]``); PMCIDs with esearch ``PMCnnn[pmcid]``, then the pmc_pubmed elink.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import KbError, NotFound

DOI_RE = re.compile(r"10\.\d{4,9}/\S+")
HOWTO = "give a PMID, a DOI, a PMCID or a PubMed, PMC or doi.org URL"


@dataclass(frozen=True)
class Identifier:
    """A classified identifier: kind is "pmid", "doi" or "pmcid"; value is canonical."""
    kind: str
    value: str
    query: str


def _clean_doi(doi: str) -> str:
    doi = unquote(doi).strip().rstrip(".,;)>]}\"'")
    return doi.lower()


def classify(text: str) -> Identifier:
    """What kind of identifier `text` is (PMID, DOI, PMCID, or one of their URLs); KbError if none."""
    query = text
    s = (text or "").strip().strip("<>\"'").strip()
    if not s:
        raise KbError(f"empty identifier: {HOWTO}")
    m = re.fullmatch(r"(?:pmid\s*:?\s*)?0*(\d{1,9})\.?", s, re.I)
    if m and m.group(1) != "0":
        return Identifier("pmid", m.group(1), query)
    m = re.fullmatch(r"(?:pmc\s*id\s*:?\s*)?pmc\s*(\d{1,9})\.?", s, re.I)
    if m:
        return Identifier("pmcid", f"PMC{int(m.group(1))}", query)
    m = re.fullmatch(r"(?:doi\s*:?\s*)(10\.\d{4,9}/\S+)", s, re.I) or re.fullmatch(r"(10\.\d{4,9}/\S+)", s)
    if m:
        return Identifier("doi", _clean_doi(m.group(1)), query)
    url = s if re.match(r"^[a-z][a-z0-9+.-]*://", s, re.I) else "https://" + s
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = unquote(parts.path)
    if host in ("doi.org", "dx.doi.org", "www.doi.org"):
        m = DOI_RE.search(path)
        if m:
            return Identifier("doi", _clean_doi(m.group(0)), query)
    if host in ("pubmed.ncbi.nlm.nih.gov", "www.ncbi.nlm.nih.gov", "ncbi.nlm.nih.gov", "europepmc.org",
                "pmc.ncbi.nlm.nih.gov", "www.pubmed.gov", "pubmed.gov"):
        m = re.search(r"/(?:articles/)?pmc(\d{1,9})(?:/|$)", path, re.I)
        if m:
            return Identifier("pmcid", f"PMC{int(m.group(1))}", query)
        m = (re.fullmatch(r"/(\d{1,9})/?", path) if host.startswith("pubmed") or host == "www.pubmed.gov" else None) \
            or re.fullmatch(r"/(?:pubmed|m/pubmed)/(\d{1,9})/?", path) \
            or re.fullmatch(r"/(?:abstract|article)/med/(\d{1,9})/?", path, re.I)
        if m:
            return Identifier("pmid", str(int(m.group(1))), query)
    raise KbError(f"{query!r} is not an identifier kb knows: {HOWTO}")


def _single(hits: list[str], what: str) -> str | None:
    if len(hits) > 1:
        raise NotFound(f"{what}: matches {len(hits)} PubMed records ({', '.join(hits[:5])}); give the PMID instead")
    return hits[0] if hits else None


def resolve(identifier: str, client) -> str:
    """The PMID of one identifier; KbError/NotFound with a one-line message when it cannot be resolved."""
    ident = classify(identifier)
    if ident.kind == "pmid":
        return ident.value
    if ident.kind == "doi":
        pmid = _single(client.esearch(f"{ident.value}[doi]", retmax=5), f"DOI {ident.value}") \
            or _single(client.esearch(f'"{ident.value}"[AID]', retmax=5), f"DOI {ident.value}")
        if not pmid:
            raise NotFound(f"DOI {ident.value}: no PubMed record has this DOI")
        return pmid
    pmid = _single(client.esearch(f"{ident.value}[pmcid]", retmax=5), ident.value)
    if not pmid:
        links = client.elink([ident.value[3:]], "pmc_pubmed").get(ident.value[3:], [])
        pmid = _single(links, ident.value)
    if not pmid:
        raise NotFound(f"{ident.value}: no PubMed record for this PMC article")
    return pmid


def resolve_all(identifiers, client) -> tuple[list[tuple[str, str]], list[str]]:
    """Resolve every identifier: ([(query, pmid)] in input order, [one-line error per failure])."""
    resolved, errors = [], []
    for text in identifiers:
        try:
            resolved.append((text, resolve(text, client)))
        except KbError as exc:
            if "not in the cache" in str(exc) or "failed after" in str(exc):
                raise  # not the identifier's fault: stop, a re-run resumes
            errors.append(str(exc))
    return resolved, errors


def identifier_part(text, kind):
    """The canonical PMID, DOI or PMCID (`kind`) in what someone typed or pasted, or None.

    Registered as the SQL function kb_ref(text, kind), so canned queries accept `21547618`,
    `https://doi.org/10.1007/...` or `PMC3110398` wherever they ask for a paper."""
    if text is None or kind not in ("pmid", "doi", "pmcid"):
        return None
    try:
        ident = classify(str(text))
    except KbError:
        return None
    return ident.value if ident.kind == kind else None


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """Add kb_ref() to a SQLite connection (Datasette's, or yours to run the canned queries by hand)."""
    conn.create_function("kb_ref", 2, identifier_part, deterministic=True)
