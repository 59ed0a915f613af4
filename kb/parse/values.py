"""Field values shared by the formats: whitespace, dates, ORCID iDs, PMCIDs, abstract sections."""

from __future__ import annotations

import re

MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
YEAR_RE = re.compile(r"(?<!\d)(\d{4})(?!\d)")
ORCID_RE = re.compile(r"(\d{4})-?(\d{4})-?(\d{4})-?(\d{3}[\dX])$")
PMC_RE = re.compile(r"PMC\d+", re.I)


def _clean(s: str) -> str | None:
    """Strip, and collapse inner runs of whitespace (rare in PubMed, so checked for first)."""
    if "  " in s or "\n" in s or "\t" in s or "\r" in s:
        s = " ".join(s.split())
    else:
        s = s.strip()
    return s or None


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


def _join_sections(sections: list) -> str | None:
    if not sections:
        return None
    return "\n\n".join(f"{s['label']}: {s['text']}" if s["label"] else s["text"] for s in sections)
