"""MEDLINE text ("PubMed format", .nbib) to records, read with Bio.Medline: parse_medline_text."""

from __future__ import annotations

import io
import re
from typing import Iterator

from ..errors import ParseError
from ..records import normalize_doi, paper_key, provenance as make_provenance
from .source import _one_line, _Source
from .values import _date, _join_sections, _month, _orcid, _pmcid

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
