"""What a reference string tells about a work known only from it (a stub paper), and paper labels.

PubMed reference lists mostly give a cited work as its journal citation only ("Nat Prod Rep. 2014
Dec;31(12):1612-61."), other sources as a full Vancouver reference ("Kwee TC, Fijnheer R. Whole-body MRI...
Eur Radiol. 2010;20:1-9."). `stub_fields` turns either into the papers table's fields (title, authors, journal,
year, volume, issue, pages): a fast pattern for the journal-only form, kb.refs.parse_reference for the rest,
cached per distinct text (a build meets the same cited work in many reference lists).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import ParseError

# "Nat Prod Rep. 2014 Dec;31(12):1612-61" / "PLoS One. 2012;7(2):e31906" / "Hypertension. 2001 Feb;37(2 Pt 2):381-5"
_JOURNAL_ONLY = re.compile(
    r"^(?P<journal>[A-Z][^.;:()\[\]]{0,80}?)\.\s+(?P<year>(?:1[5-9]|20)\d{2})[a-z]?"
    r"(?:\s+[A-Z][a-z]{2}(?:-[A-Z][a-z]{2})?(?:\s+\d{1,2}(?:-\d{1,2})?)?)?"
    r"\s*(?:;\s*(?P<volume>[^():;]{1,30}?)?\s*(?:\((?P<issue>[^()]{1,30})\))?\s*"
    r"(?::\s*(?P<pages>[A-Za-z]{0,3}\d+[A-Za-z]?(?:\s*-\s*[A-Za-z]{0,3}\d+[A-Za-z]?)?))?)?\s*\.?\s*$")
_JOURNAL_WORDS = re.compile(r"^(?:[A-Z&(]\S*|[a-z]{1,3}|[-&:]|\d+)$")   # "Proc Natl Acad Sci U S A", "J Am Coll Surg"


def _pages(first: str | None, last: str | None) -> str | None:
    if not first:
        return None
    return f"{first}-{last}" if last and last != first else first


def _looks_like_journal(text: str) -> bool:
    words = text.split()
    return 0 < len(words) <= 10 and all(_JOURNAL_WORDS.match(w) for w in words)


@lru_cache(maxsize=1 << 16)
def stub_fields(raw: str | None) -> dict:
    """Fields parsed from a reference string: title, authors ([{last, initials, collective}]), et_al,
    journal, year, volume, issue, pages; an empty dict when nothing could be read. Cached per text."""
    from .refs import expand_pages, parse_reference

    text = re.sub(r"^\s*\[?\d{1,4}[\].)]?\s+", "", raw or "").strip()
    if not text:
        return {}
    m = _JOURNAL_ONLY.match(text)
    if m and _looks_like_journal(m.group("journal")):
        first, last = expand_pages(m.group("pages"))
        return {"title": None, "authors": (), "et_al": False, "journal": m.group("journal").strip(),
                "year": int(m.group("year")), "volume": (m.group("volume") or "").strip() or None,
                "issue": (m.group("issue") or "").strip() or None, "pages": _pages(first, last)}
    try:
        p = parse_reference(text)
    except ParseError:
        return {}
    title, journal = p.get("title"), p.get("journal")
    if title and not journal and not p.get("authors") and _looks_like_journal(title):
        title, journal = None, title          # "Nat Rev Immunol. 2010;10:365": a journal, not a title
    authors = tuple((a.get("last"), a.get("initials"), a.get("collective")) for a in p.get("authors") or ())
    return {"title": title, "authors": authors, "et_al": bool(p.get("et_al")), "journal": journal,
            "year": p.get("year"), "volume": p.get("volume"), "issue": p.get("issue"),
            "pages": _pages(p.get("first_page"), p.get("last_page"))}


def author_names(fields: dict) -> list[str]:
    """Display names ("Kwee TC", or a collective name) of the authors a reference string gives."""
    out = []
    for last, initials, collective in fields.get("authors") or ():
        name = collective or " ".join(x for x in (last, initials) if x)
        if name:
            out.append(name)
    return out


def label(first_author: str | None, year, journal: str | None = None, title: str | None = None,
          key: str | None = None) -> str | None:
    """A short name for a paper, as graphs and lists show it: "Kato 2011" (first author's family name and year),
    else the journal and year ("Nat Prod Rep 2014"), else the start of the title, else the key."""
    who = None
    if first_author:
        parts = first_author.split()
        # "Kato M" -> "Kato"; "van der Berg JH" -> "van der Berg"; a collective name is kept whole (cut to 40)
        if len(parts) > 1 and re.fullmatch(r"[A-Z]{1,4}", parts[-1]):
            who = " ".join(parts[:-1])
        else:
            who = first_author if len(first_author) <= 40 else first_author[:39].rstrip() + "…"
    if who and year:
        return f"{who} {year}"
    if journal and year:
        return f"{journal} {year}"
    if who:
        return who
    if title:
        title = " ".join(title.split())
        return title if len(title) <= 60 else title[:59].rstrip() + "…"
    return key
