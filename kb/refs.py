"""`kb refs FILE`: split a pasted, numbered (Vancouver) reference list, parse each entry and resolve it.

Resolution, in order: a PMID written in the reference; offline matching against known paper records
(``--match``: DOI, then journal + year + volume + first page, then fuzzy title); online ECitMatch for
the rest, in one batch; then an esearch on the title, accepted only when it finds a single PMID.
Every reference becomes one citation record (see kb/records.py), resolved or not, with its raw text.
"""

from __future__ import annotations

import difflib
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable

import click

from .errors import KbError, NotFound, ParseError
from .ids import classify
from .records import normalize_doi, paper_key, provenance, read_records, record_files, write_records

MAX_FILE_BYTES = 20 * 1024 * 1024
TITLE_ACCEPT = 0.90        # fuzzy title similarity that identifies a paper when the year agrees
TITLE_SANITY = 0.50        # a journal/year/volume/page match is refused when titles disagree more than this

# --------------------------------------------------------------------------------------------------
# Splitting a reference list
# --------------------------------------------------------------------------------------------------

_MARKER = re.compile(r"^\s*(?:\[(\d{1,4})\]|\((\d{1,4})\)|(\d{1,4})[.)])(?=\s|$)\s*(.*)$")
_LINK_LABELS = {
    "article", "pubmed", "google scholar", "cas", "crossref", "pubmed central", "pmc", "web of science",
    "isi", "scopus", "medline", "full text", "free full text", "abstract", "view article", "publisher site",
    "ads", "math", "mathscinet", "zbmath", "link", "open url", "openurl",
}
_LABELS_RE = re.compile(r"^\s*(?:(?:%s)(?:\s+|$))+$" % "|".join(
    re.escape(label).replace(r"\ ", r"\s+") for label in sorted(_LINK_LABELS, key=lambda x: (-len(x), x))), re.I)
_PAGE_JUNK = re.compile(r"^(download (references|citation)|references|bibliography|literature cited)\s*$", re.I)
_ID_LINE = re.compile(r"^(doi\s*:|https?://(dx\.)?doi\.org/|pmid\s*:?|pmcid\s*:?|10\.\d{4,9}/)", re.I)
_PERSON_START = re.compile(r"^[^\W\d_][\w'’\-]*(?:\s+[\w'’\-]+){0,3}\s+[A-Z]{1,4}[,.]")


def _is_label_line(line: str) -> bool:
    """True for the link labels article pages print under each reference ("Article PubMed Google Scholar")."""
    return bool(_LABELS_RE.match(line))


def _join_lines(lines: list[str]) -> str:
    """Join the wrapped lines of one reference; a line ending in a hyphen joins the next without a space."""
    parts: list[str] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if parts:
            prev = parts[-1]
            parts.append("" if prev.endswith("-") and len(prev) > 1 and prev[-2].isalnum() else " ")
        parts.append(line)
    return "".join(parts)


def _append_line(out: str, line: str) -> str:
    """`out` with one more wrapped line, joined as _join_lines does."""
    return _join_lines([out, line]) if out else line.strip()


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Group lines into blank-line separated paragraphs."""
    paras, current = [], []
    for line in lines:
        if line.strip():
            current.append(line)
        elif current:
            paras.append(current)
            current = []
    if current:
        paras.append(current)
    return paras


_COMPLETE = re.compile(r"(?:\b(?:1[5-9]|20)\d{2}[^;]{0,20};\s*[^;:]{0,30}:\s*[A-Za-z]{0,3}\d+[A-Za-z]?(?:\s*[-\u2013\u2014]\s*[A-Za-z]{0,3}\d+[A-Za-z]?)?"
                       r"|\b10\.\d{4,9}/\S*[\w)]|PMID:?\s*\d+|Epub[^.]*)\.?\s*$", re.I)
_TAIL_LINE = re.compile(r"^(\[?epub|doi\b|https?://|pmid\b|pmcid\b|available\b|10\.\d{4,9}/|\(?cited\b)", re.I)


def _might_be_complete(text: str) -> bool:
    """Cheap pre-check for _COMPLETE: the text holds the punctuation or words that citation details end with."""
    upper = text.upper()
    return ";" in text or "10." in text or "PMID" in upper or "EPUB" in upper


def _trim_tail(lines: list[str]) -> list[str]:
    """Drop lines after a reference's citation details that are not its identifiers (a caption, a heading...)."""
    kept: list[str] = []
    joined = ""
    for line in lines:
        if kept and not kept[-1].rstrip().endswith("-") and not _TAIL_LINE.match(line.strip()) \
                and _might_be_complete(joined) and _COMPLETE.search(joined):
            break
        kept.append(line)
        joined = _append_line(joined, line)[-300:]
    return kept


def _item_text(lines: list[str]) -> str:
    """The reference text of one numbered item: its first paragraph plus identifier lines, minus link labels."""
    paras = _paragraphs(lines)
    if not paras:
        return ""
    kept = [line for line in paras[0] if not _is_label_line(line) and not _PAGE_JUNK.match(line.strip())]
    for para in paras[1:]:
        if all(_is_label_line(line) for line in para):
            continue
        if all(_ID_LINE.match(line.strip()) for line in para):
            kept.extend(para)
            continue
        break                          # the page's own text after the list ("Download references", ...)
    return _join_lines(_trim_tail(kept))


def _markers(lines: list[str]) -> list[tuple[int, int, str]]:
    """Candidate item starts: (line index, number, rest of the line), a doubled "1. 1." counted once."""
    found = []
    for i, line in enumerate(lines):
        m = _MARKER.match(line)
        if not m:
            continue
        number = int(next(g for g in m.groups()[:3] if g is not None))
        rest = m.group(4)
        again = _MARKER.match(rest)
        if again and int(next(g for g in again.groups()[:3] if g is not None)) == number:
            rest = again.group(4)
        found.append((i, number, rest))
    return found


def _longest_chain(markers: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The longest run of markers numbered n, n+1, n+2... in line order (the real list, not stray numbers).

    Linear time: the best chain ending at each number so far; ties go to a chain starting at 1, then the earliest.
    """
    ending: dict[int, tuple[int, int]] = {}          # number -> (chain length, index of its last marker)
    back: list[int | None] = []
    best: tuple | None = None
    for k, (_, number, _) in enumerate(markers):
        prev = ending.get(number - 1)
        length = prev[0] + 1 if prev else 1
        back.append(prev[1] if prev else None)
        if number not in ending or ending[number][0] <= length:
            ending[number] = (length, k)
        first = number - length + 1
        rank = (length, first == 1, -k)
        if best is None or rank > best[0]:
            best = (rank, k)
    if best is None:
        return []
    chain, k = [], best[1]
    while k is not None:
        chain.append(markers[k])
        k = back[k]
    return chain[::-1]


def _looks_like_reference(text: str) -> bool:
    """A line of an unnumbered list that is a reference: a year and at least one period-separated part."""
    return bool(re.search(r"\b(1[5-9]|20)\d{2}\b", text)) and text.count(".") >= 1 and len(text) >= 20


def split_references(text: str) -> list[tuple[int, str]]:
    """Split a reference list (numbered "1." "[1]" "1)" "1. 1.", or one per line) into (number, text) pairs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    lines = text.split("\n")
    chain = _longest_chain(_markers(lines))
    items: list[tuple[int, str]] = []
    if chain:
        for k, (index, number, rest) in enumerate(chain):
            end = chain[k + 1][0] if k + 1 < len(chain) else len(lines)
            body = ([rest] if rest.strip() else [""]) + lines[index + 1:end]
            if not rest.strip():
                body = body[1:]
                while body and not body[0].strip():
                    body = body[1:]
            items.append((number, _item_text(body)))
        return [(n, t) for n, t in items if t]
    # unnumbered: one reference per line, continuation lines joined, blank lines end an entry
    entries: list[list[str]] = []
    current: list[str] = []
    joined = ""
    for line in lines:
        stripped = line.strip()
        if not stripped or _is_label_line(stripped) or _PAGE_JUNK.match(stripped):
            if current:
                entries.append(current)
                current, joined = [], ""
            continue
        if current and _PERSON_START.match(stripped) and re.search(r"[.\d)]$", joined) \
                and _looks_like_reference(joined):
            entries.append(current)
            current, joined = [], ""
        current.append(stripped)
        joined = _append_line(joined, stripped)[-2000:]
    if current:
        entries.append(current)
    texts = [_join_lines(e) for e in entries]
    return [(i, t) for i, t in enumerate((t for t in texts if _looks_like_reference(t)), 1)]


# --------------------------------------------------------------------------------------------------
# Parsing one Vancouver reference
# --------------------------------------------------------------------------------------------------

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"), "-")
_DOI_RE = re.compile(r"(?:\bdoi\s*:?\s*|https?://(?:dx\.)?doi\.org/)?\b(10\.\d{4,9}/[^\s\"<>]+)", re.I)
_PMID_RE = re.compile(r"\bPMID\s*:?\s*(\d{1,9})\b", re.I)
_PMCID_RE = re.compile(r"\bPMCID\s*:?\s*(PMC\d+)\b|\b(PMC\d{3,})\b", re.I)
_EPUB_RE = re.compile(r"\[?\s*\b(?:Epub|eCollection)\b(?:\s+ahead\s+of\s+print)?\s*(?:(?:1[5-9]|20)\d{2}(?:\s+[A-Z][a-z]{2,8}\.?)?(?:\s+\d{1,2})?)?\s*\]?\.?", re.I)
_NOISE_RE = re.compile(r"\[(?:cited|accessed|updated)[^\]]*\]|\bAvailable (?:from|at):?\s*\S+|\bhttps?://\S+", re.I)
_MONTH = r"(?:[A-Z][a-z]{2,8}\.?(?:\s*-\s*[A-Z][a-z]{2,8}\.?)?)"
_SOURCE_RE = re.compile(
    r"(?P<year>(?:1[5-9]|20)\d{2})[a-z]?"
    r"(?:\s+" + _MONTH + r"(?:\s+\d{1,2}(?:\s*-\s*\d{1,2})?)?)?"
    r"\s*;\s*(?P<volume>[A-Za-z]?\d[\w.]*(?:\s+(?:Suppl|Pt|Spec No)\.?(?:\s*\d+\w*)?)?|(?:Suppl|Spec No)\.?(?:\s*\d+\w*)?)?"
    r"\s*(?:\((?P<issue>[^()]{1,30})\))?"
    r"\s*(?::\s*(?P<pages>[A-Za-z]{0,3}\d+[A-Za-z]?(?:\s*-\s*[A-Za-z]{0,3}\d+[A-Za-z]?)?))?")
_YEAR_RE = re.compile(r"\b(?P<year>(?:1[5-9]|20)\d{2})[a-z]?\b")
_SUFFIX = r"(?:\s+(?:Jr|Sr|2nd|3rd|4th|II|III|IV))?"
_PERSON_RE = re.compile(r"^(?P<last>[^\W\d_][\w'’\-]*(?:\s+[\w'’\-]+){0,4}?)\s+(?P<initials>[A-Z](?:-?[A-Z]){0,3})"
                        r"(?P<suffix>" + _SUFFIX + r")\.?$")
_PARTICLES = {"van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la", "le", "ten",
              "ter", "y", "e", "bin", "ibn", "al", "el", "zu", "st", "af", "av"}
_ET_AL_RE = re.compile(r"^(?:et\s+al|and\s+others|et\s+al\.?)$", re.I)


def expand_pages(pages: str | None) -> tuple[str | None, str | None]:
    """First and last page of a page range, the abbreviated end expanded: "743-61" -> ("743", "761")."""
    if not pages:
        return None, None
    pages = pages.translate(_DASHES).replace(" ", "")
    first, _, last = pages.partition("-")
    if not last:
        return first or None, None
    mf = re.match(r"^([A-Za-z]*)(\d+)([A-Za-z]?)$", first)
    ml = re.match(r"^([A-Za-z]*)(\d+)([A-Za-z]?)$", last)
    if mf and ml:
        prefix, digits = mf.group(1), mf.group(2)
        end = ml.group(2)
        if len(end) < len(digits):
            end = digits[: len(digits) - len(end)] + end
        last = (ml.group(1) or prefix) + end + ml.group(3)
    return first, last


def _clean(text: str) -> str:
    """Unicode-normalised reference text: compatibility forms folded, dashes as hyphens, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_DASHES)
    return re.sub(r"\s+", " ", text).strip()


def _parse_authors(segment: str) -> tuple[list[dict], bool] | None:
    """Authors of a Vancouver author segment ("Kwee TC, Fijnheer R, et al"), or None when it is no author list."""
    items = [i.strip() for i in re.split(r"[,;]", segment) if i.strip()]
    if not items:
        return None
    authors, et_al, persons = [], False, 0
    for k, item in enumerate(items):
        if _ET_AL_RE.match(item):
            et_al = True
            continue
        m = _PERSON_RE.match(item)
        if m and all(w[:1].isupper() or w.lower() in _PARTICLES for w in m.group("last").split()):
            authors.append({"last": m.group("last"), "initials": m.group("initials"), "collective": None})
            persons += 1
        elif k > 0 and persons and len(item.split()) >= 2:
            authors.append({"last": None, "initials": None, "collective": item})   # "...; ABC Study Group"
        else:
            return None
    if not persons:
        return None
    return authors, et_al


def _split_sentences(text: str) -> list[str]:
    """Split at ". " "? " "! " boundaries, keeping ? and ! with the sentence before."""
    parts = re.split(r"(?<=[.?!])\s+(?=[\w\[(\"'‘“])", text)
    return [p.strip() for p in parts if p.strip()]


def _strip_period(text: str) -> str:
    text = text.strip()
    while text.endswith(".") and not text.endswith("..."):
        text = text[:-1].rstrip()
    return text


def _is_abbrev_piece(piece: str) -> bool:
    """A piece like "Br" or "Proc" left by a period-style journal abbreviation ("Br. J. Haematol.")."""
    return bool(re.fullmatch(r"[A-Z][a-z]{0,5}\.?|[A-Z]\.?", piece))


def _title_and_journal(rest: str, have_authors: bool) -> tuple[str | None, str | None]:
    pieces = _split_sentences(rest)
    if not pieces:
        return None, None
    if len(pieces) == 1:
        only = _strip_period(pieces[0])
        words = only.split()
        if have_authors and len(words) <= 8 and all(w[:1].isupper() or not w[:1].isalpha() for w in words):
            return None, only or None
        return only or None, None
    journal_pieces = [pieces.pop()]
    while pieces and _is_abbrev_piece(pieces[-1]):
        journal_pieces.insert(0, pieces.pop())
    title = _strip_period(" ".join(pieces))
    journal = _strip_period(" ".join(journal_pieces))
    journal = re.sub(r"\s*\[(?:Internet|serial on the Internet)\]\s*", " ", journal, flags=re.I).strip()
    return title or None, journal or None


def parse_reference(raw: str, number: int | None = None) -> dict:
    """Parse one Vancouver-style reference into its fields; the raw text is kept as given."""
    if not isinstance(raw, str) or not raw.strip():
        raise ParseError("empty reference text")
    text = _clean(raw)
    parsed: dict = {"number": number, "raw": re.sub(r"\s+", " ", raw).strip(), "authors": [], "et_al": False,
                    "title": None, "journal": None, "year": None, "volume": None, "issue": None,
                    "first_page": None, "last_page": None, "doi": None, "pmid": None, "pmcid": None}

    m = _PMID_RE.search(text)
    if m:
        parsed["pmid"] = m.group(1).lstrip("0") or None
    m = _PMCID_RE.search(text)
    if m:
        parsed["pmcid"] = (m.group(1) or m.group(2)).upper()
    m = _DOI_RE.search(text)
    if m:
        parsed["doi"] = normalize_doi(m.group(1).rstrip(".,;)]}"))
    text = _DOI_RE.sub(" ", text)
    text = _PMID_RE.sub(" ", text)
    text = re.sub(r"\bPMCID\s*:?\s*PMC\d+\b|\bPMC\d{3,}\b", " ", text, flags=re.I)
    text = _EPUB_RE.sub(" ", text)
    text = _NOISE_RE.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip(" ;,")

    source = None
    for m in _SOURCE_RE.finditer(text):
        if m.group("volume") or m.group("pages") or m.group("issue"):
            source = m
    if source is None:
        years = list(_YEAR_RE.finditer(text))
        if years:
            source = years[-1]
    if source is not None:
        parsed["year"] = int(source.group("year"))
        if "volume" in source.re.groupindex:
            parsed["volume"] = (source.group("volume") or "").strip() or None
            parsed["issue"] = (source.group("issue") or "").strip() or None
            parsed["first_page"], parsed["last_page"] = expand_pages(source.group("pages"))
        prefix = text[: source.start()]
    else:
        prefix = text
    prefix = prefix.rstrip(" .,;:")
    sentences = _split_sentences(prefix) if prefix else []
    authors, et_al, rest = [], False, prefix
    if sentences:
        first = _strip_period(sentences[0])
        found = _parse_authors(first)
        if found is not None:
            authors, et_al = found
            rest = " ".join(sentences[1:])
        elif len(sentences) >= 3 and len(first.split()) <= 12 and not sentences[0].endswith(("?", "!")):
            authors = [{"last": None, "initials": None, "collective": first}]       # collective author
            rest = " ".join(sentences[1:])
    parsed["authors"], parsed["et_al"] = authors, et_al
    parsed["title"], parsed["journal"] = _title_and_journal(rest, bool(authors))
    return parsed


def parse_reference_list(text: str) -> list[dict]:
    """Split and parse a reference list; raises ParseError when no reference is found."""
    items = split_references(text)
    parsed = []
    for number, raw in items:
        try:
            parsed.append(parse_reference(raw, number))
        except ParseError:
            continue
    if not parsed:
        raise ParseError("no references found (expected a numbered list such as '1. Author AB. Title. "
                         "Journal. 2010;1:1-2.' or one reference per line)")
    return parsed


# --------------------------------------------------------------------------------------------------
# Offline matching against known paper records
# --------------------------------------------------------------------------------------------------

_STOP = {"the", "of", "and", "for", "in", "on", "de", "la", "le", "du", "des", "der", "und", "a", "an", "&"}


_TAG_RE = re.compile(r"<[^>]+>")
_NONWORD_RE = re.compile(r"[\W_]+")


def normalize_title(title: str | None) -> str:
    """Lower case, accents and punctuation removed, spaces collapsed: for comparing titles."""
    if not title:
        return ""
    if not title.isascii():
        title = unicodedata.normalize("NFKD", title)
        title = "".join(c for c in title if not unicodedata.combining(c))
    title = _TAG_RE.sub(" ", title.lower()) if "<" in title else title.lower()
    return _NONWORD_RE.sub(" ", title).strip()


def _journal_tokens(name: str | None) -> list[str]:
    return [t for t in normalize_title((name or "").replace("&", " and ")).split() if t not in _STOP]


def journal_matches(abbrev: str | None, names: Iterable[str | None]) -> bool | None:
    """Does a reference's journal name the same journal as any of `names` (ISO abbreviation or full title)?

    Equal after normalisation, or each abbreviation word a prefix of the title's words in order
    ("Eur Radiol" ~ "European Radiology"). None when either side is unknown.
    """
    ref = _journal_tokens(abbrev)
    known = [toks for toks in (_journal_tokens(n) for n in names) if toks]
    if not ref or not known:
        return None
    for toks in known:
        if ref == toks:
            return True
        if len(ref) == len(toks) and all(b.startswith(a) or a.startswith(b) for a, b in zip(ref, toks)):
            return True
    return False


def title_similarity(a: str | None, b: str | None) -> float | None:
    """difflib ratio of two normalised titles (0..1), None when either is missing."""
    a, b = normalize_title(a), normalize_title(b)
    if not a or not b:
        return None
    return round(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(), 4)


def _pages_first(pages: str | None) -> str | None:
    return expand_pages(str(pages))[0] if pages else None


def _slim(record: dict) -> dict:
    """The fields matching needs (a large data directory is held in memory without abstracts, MeSH...)."""
    journal = record.get("journal")
    if isinstance(journal, dict):
        journal = {"title": journal.get("title"), "iso": journal.get("iso")}
    authors = [{"last": a.get("last")} for a in (record.get("authors") or [])[:1] if isinstance(a, dict)]
    slim = {k: record.get(k) for k in ("id", "pmid", "doi", "title", "year", "volume", "pages", "journal_iso")}
    slim.update(journal=journal, authors=authors)
    return slim


class MatchIndex:
    """Paper records from --match files, indexed by DOI, PMID, (year, volume, first page) and year."""

    def __init__(self, papers: Iterable[tuple[dict, str]]):
        self.papers: dict[str, tuple[dict, str]] = {}
        for record, origin in papers:
            self.papers.setdefault(record["id"], (record, origin))
        self.by_doi, self.by_pmid, self.by_citation, self.by_year = {}, {}, {}, {}
        self.titles: dict[str, tuple[str, frozenset]] = {}
        for key in sorted(self.papers):
            record, _ = self.papers[key]
            title = normalize_title(record.get("title"))
            if title:
                self.titles[key] = (title, frozenset(title.split()))
            if record.get("doi"):
                self.by_doi.setdefault(normalize_doi(record["doi"]), key)
            if record.get("pmid"):
                self.by_pmid.setdefault(str(record["pmid"]), key)
            year, volume, first = _year(record), _norm_vol(record.get("volume")), _norm_page(_pages_first(record.get("pages")))
            if year and volume and first:
                self.by_citation.setdefault((year, volume, first), []).append(key)
            self.by_year.setdefault(year, []).append(key)

    def __len__(self):
        return len(self.papers)

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike]) -> "MatchIndex":
        """Read the paper records of record files and data directories (kb.records.record_files)."""
        papers = []
        for path in paths:
            path = Path(path)
            if not path.exists():
                raise NotFound(f"--match {path}: no such file or directory")
            try:
                files = record_files(path)
            except OSError as exc:
                raise KbError(f"--match {path}: {exc.strerror or exc}") from None
            if not files:
                raise NotFound(f"--match {path}: no record files (*.jsonl) there")
            for file in files:
                try:
                    for record in read_records([file]):
                        if record.get("type") == "paper" and record.get("id"):
                            papers.append((_slim(record), file.name))
                except UnicodeDecodeError:
                    raise ParseError(f"--match {file}: not a UTF-8 JSON Lines file") from None
                except (OSError, EOFError) as exc:
                    raise ParseError(f"--match {file}: cannot read ({exc})") from None
        return cls(papers)

    def match(self, ref: dict) -> tuple[dict | None, dict | None]:
        """The record a parsed reference names, with the match details; (None, details or None) when none."""
        if ref.get("doi") and normalize_doi(ref["doi"]) in self.by_doi:
            key = self.by_doi[normalize_doi(ref["doi"])]
            return self._result(ref, key, "doi")
        if ref.get("pmid") and str(ref["pmid"]) in self.by_pmid:
            return self._result(ref, self.by_pmid[str(ref["pmid"])], "pmid")
        year, volume, first = ref.get("year"), _norm_vol(ref.get("volume")), _norm_page(ref.get("first_page"))
        candidates: list[tuple[float, str, dict]] = []
        keys = self.by_citation.get((year, volume, first), []) if year and volume and first else []
        for key in keys:
            details = self._compare(ref, key)
            if details["accepted"]:
                candidates.append((details["score"], key, details))
        if not candidates and ref.get("title"):
            pool = self.by_year.get(year, []) if year else sorted(self.papers)
            wanted = normalize_title(ref["title"])
            words = frozenset(wanted.split())
            for key in pool:
                other, other_words = self.titles.get(key, ("", frozenset()))
                if not other or len(words & other_words) < 0.6 * max(len(words), len(other_words)):
                    continue
                quick = difflib.SequenceMatcher(None, wanted, other, autojunk=False)
                if quick.real_quick_ratio() < TITLE_ACCEPT or quick.quick_ratio() < TITLE_ACCEPT:
                    continue
                details = self._compare(ref, key)
                if details["accepted"]:
                    candidates.append((details["score"], key, details))
        if not candidates:
            return None, None
        candidates.sort(key=lambda c: (-c[0], c[1]))
        if len(candidates) > 1 and candidates[1][0] == candidates[0][0]:
            tied = sorted(c[1] for c in candidates if c[0] == candidates[0][0])
            return None, {"method": "ambiguous", "candidates": tied, "score": candidates[0][0]}
        score, key, details = candidates[0]
        return self.papers[key][0], details

    def _result(self, ref: dict, key: str, method: str) -> tuple[dict, dict]:
        details = self._compare(ref, key)
        details.update(method=method, accepted=True, score=1.0)
        return self.papers[key][0], details

    def _compare(self, ref: dict, key: str) -> dict:
        """Field-by-field comparison of a reference with one record; year and volume must not disagree."""
        record, origin = self.papers[key]
        journal = record.get("journal")
        names = [journal.get("iso"), journal.get("title")] if isinstance(journal, dict) else [journal]
        names += [record.get("journal_iso")] if record.get("journal_iso") else []
        fields = {
            "journal": journal_matches(ref.get("journal"), names),
            "year": _agree(ref.get("year"), _year(record)),
            "volume": _agree(_norm_vol(ref.get("volume")), _norm_vol(record.get("volume"))),
            "first_page": _agree(_norm_page(ref.get("first_page")), _norm_page(_pages_first(record.get("pages")))),
        }
        sim = title_similarity(ref.get("title"), record.get("title"))
        authors = record.get("authors") or []
        first_author = None
        if ref.get("authors") and authors and ref["authors"][0].get("last") and authors[0].get("last"):
            first_author = normalize_title(ref["authors"][0]["last"]) == normalize_title(authors[0]["last"])
        agreeing = [name for name, ok in fields.items() if ok]
        known = [name for name, ok in fields.items() if ok is not None]
        bib = len(agreeing) / 4
        score = round(0.5 * bib + 0.5 * (sim if sim is not None else bib), 4)
        contradicted = [name for name in ("year", "volume") if fields[name] is False]
        if contradicted:
            method = None
        elif fields["journal"] is not False and all(fields[n] for n in ("year", "volume", "first_page")) \
                and (sim is None or sim >= TITLE_SANITY):
            method = "citation"
        elif sim is not None and sim >= TITLE_ACCEPT and fields["year"] and fields["first_page"] is not False:
            method = "title"
        else:
            method = None
        return {"method": method, "accepted": method is not None, "score": score, "record": key,
                "match_file": origin, "title_similarity": sim, "first_author": first_author,
                "fields_agreeing": agreeing, "fields_compared": known}


def _year(record: dict) -> int | None:
    year = record.get("year")
    try:
        return int(str(year)[:4]) if year else None
    except ValueError:
        return None


def _norm_vol(value) -> str | None:
    return re.sub(r"\s+", " ", str(value)).strip().lower() if value not in (None, "") else None


def _norm_page(value) -> str | None:
    return str(value).strip().lower().lstrip("0") or None if value not in (None, "") else None


def _agree(a, b) -> bool | None:
    if a is None or b is None:
        return None
    return a == b


# --------------------------------------------------------------------------------------------------
# Online resolution (ECitMatch in one batch, then esearch on the title)
# --------------------------------------------------------------------------------------------------

def _ecit_author(ref: dict) -> str | None:
    for author in ref.get("authors") or []:
        if author.get("last"):
            return f"{author['last']} {author.get('initials') or ''}".strip()
    return None


def _title_term(ref: dict) -> str | None:
    title = re.sub(r"[\"\[\]]", " ", ref.get("title") or "")
    title = re.sub(r"\s+", " ", title).strip().rstrip(".?!")
    if len(title) < 10:
        return None
    term = f'"{title}"[Title]'
    if ref.get("year"):
        term += f" AND {ref['year']}[pdat]"
    return term


def resolve_online(refs: list[dict], eutils) -> dict[int, tuple[str, str, dict]]:
    """PMIDs for references (keyed by list index) via one batched ECitMatch call, then esearch on titles.

    Returns {index: (pmid, source, details)} for the ones resolved; esearch hits count only when single.
    """
    resolved: dict[int, tuple[str, str, dict]] = {}
    citations, keys = [], {}
    for i, ref in enumerate(refs):
        if not (ref.get("journal") and ref.get("year")):
            continue
        key = f"ref{ref.get('number') or i + 1}-{i}"
        keys[key] = i
        citations.append({"key": key, "journal": ref.get("journal"), "year": str(ref.get("year")),
                          "volume": ref.get("volume") or "", "first_page": ref.get("first_page") or "",
                          "author": _ecit_author(ref) or ""})
    if citations:
        answers = eutils.ecitmatch(citations) or {}
        for key, i in keys.items():
            pmid = answers.get(key)
            if pmid and str(pmid).strip().isdigit():
                resolved[i] = (str(pmid).strip(), "ecitmatch", {"method": "ecitmatch", "key": key})
    for i, ref in enumerate(refs):
        if i in resolved:
            continue
        term = _title_term(ref)
        if not term:
            continue
        hits = [str(p) for p in (eutils.esearch(term, retmax=2) or [])]
        if len(hits) == 1 and hits[0].isdigit():
            resolved[i] = (hits[0], "esearch-title", {"method": "esearch-title", "term": term})
    return resolved


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------

def citing_key(identifier: str | None) -> str | None:
    """The kb key of --citing: a kb key (pmid:N, doi:…, ref:NAME), or a PMID or DOI in any form
    kb.ids.classify knows (bare, doi:, PubMed or doi.org URL). A PMCID needs the network: refused."""
    if identifier is None:
        return None
    value = identifier.strip()
    if not value:
        raise KbError("--citing is empty: give a PMID, a DOI or a kb key such as doi:10.1000/xyz")
    if re.fullmatch(r"ref:\S+", value):
        return value
    try:
        ident = classify(value)
    except KbError:
        ident = None
    if ident is not None and ident.kind in ("pmid", "doi"):
        return paper_key(**{ident.kind: ident.value})
    raise KbError(f"--citing {identifier!r}: not a PMID, a DOI or a kb key (pmid:N, doi:10.x/y, ref:NAME)")


def read_reference_file(file: str | os.PathLike) -> str:
    """The text of a reference-list file; one clear error for missing, empty, binary or huge files."""
    path = Path(file)
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if not path.is_file():
        raise KbError(f"{path}: not a file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParseError(f"{path}: {size} bytes is too large for a reference list")
        data = path.read_bytes()
    except OSError as exc:
        raise KbError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data.strip():
        raise ParseError(f"{path}: the file is empty")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ParseError(f"{path}: not valid UTF-16 text") from None
    sample = data[:8192]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in sample or controls > len(sample) // 20:
        raise ParseError(f"{path}: a binary file, not a text reference list")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _parsed_view(ref: dict) -> dict:
    keys = ("number", "authors", "et_al", "title", "journal", "year", "volume", "issue",
            "first_page", "last_page", "doi", "pmid", "pmcid")
    return {k: ref.get(k) for k in keys}


def build_records(refs: list[dict], *, citing: str | None, source_name: str,
                  matches: dict[int, tuple[dict, dict]] | None = None,
                  online: dict[int, tuple[str, str, dict]] | None = None,
                  match_files: list[str] | None = None) -> list[dict]:
    """Citation records for parsed references, in reference-number order."""
    matches, online = matches or {}, online or {}
    records = []
    for i, ref in enumerate(refs):
        cited = cited_pmid = None
        cited_doi = ref.get("doi")
        match = None
        if ref.get("pmid"):
            cited, cited_pmid, source = paper_key(pmid=ref["pmid"]), ref["pmid"], "reflist-pmid"
            match = {"method": "pmid-in-text", "score": 1.0}
        elif i in matches and matches[i][0] is not None:
            record, match = matches[i]
            cited, source = record["id"], "reflist-match"
            cited_pmid = str(record["pmid"]) if record.get("pmid") else None
            cited_doi = normalize_doi(record.get("doi")) or cited_doi
        elif i in online:
            pmid, source, match = online[i]
            cited, cited_pmid = paper_key(pmid=pmid), pmid
        else:
            source = "reflist-text"
            if i in matches:
                match = matches[i][1]            # e.g. an ambiguous offline match, kept for review
        note = f"reference {ref.get('number')} of {source_name}"
        if match_files:
            note += "; matched offline against " + ", ".join(match_files)
        records.append({
            "type": "citation", "citing": citing, "cited": cited, "raw": ref["raw"],
            "cited_pmid": cited_pmid, "cited_doi": cited_doi, "source": source, "resolved": cited is not None,
            "match": match, "score": (match or {}).get("score") if cited else None,
            "number": ref.get("number"), "parsed": _parsed_view(ref),
            "provenance": provenance("kb refs", request=source_name, note=note),
        })
    records.sort(key=lambda r: (r["number"] if r["number"] is not None else 0))
    return records


def coverage_records(records: list[dict], *, citing: str | None, source_name: str) -> list[dict]:
    """The reference list as a citation source for the completeness page: it states how many references the
    paper has (every parsed one) and how many kb resolved; none when the citing paper is unknown."""
    if not citing:
        return []
    resolved = sum(1 for r in records if r["resolved"])
    return [{"type": "coverage", "paper": citing, "source": "reflist", "references": len(records), "citers": None,
             "stated_references": len(records), "status": "ok",
             "message": f"{resolved} of {len(records)} references resolved from {source_name}",
             "provenance": provenance("kb refs", request=source_name)}]


def _describe(record: dict) -> str:
    p = record["parsed"]
    first = next((a.get("last") or a.get("collective") for a in p["authors"] if a.get("last") or a.get("collective")), "?")
    how = "unresolved"
    if record["resolved"]:
        how = f"{record['source']} -> {record['cited']}"
        if record.get("score") is not None and record["source"] == "reflist-match":
            how += f" (score {record['score']:.2f})"
    return f"{p['number']:>3}. {first} {p['year'] or '?'} {p['journal'] or '?'}: {how}"


def refs_command(file, data_dir, citing=None, match_paths=(), email=None, api_key=None,
                 offline=False, refresh=False, eutils=None) -> list[dict]:
    """Parse FILE's reference list, resolve it, write DIR/records/refs-<stem>.jsonl and print one line each."""
    file = Path(file)
    citing = citing_key(citing)
    text = read_reference_file(file)
    try:
        refs = parse_reference_list(text)
    except ParseError as exc:
        raise ParseError(f"{file}: {exc}") from None

    matches: dict[int, tuple[dict, dict]] = {}
    match_files: list[str] = []
    if match_paths:
        index = MatchIndex.from_paths(match_paths)
        match_files = sorted({Path(p).name for p in match_paths})
        for i, ref in enumerate(refs):
            if ref.get("pmid"):
                continue
            record, details = index.match(ref)
            if details is not None:
                matches[i] = (record, details)

    online: dict[int, tuple[str, str, dict]] = {}
    failure = None
    todo = [i for i, ref in enumerate(refs) if not ref.get("pmid") and not (i in matches and matches[i][0])]
    if todo and not offline:
        if eutils is None:
            from .eutils import Eutils
            eutils = Eutils(Path(data_dir) / "cache", email=email, api_key=api_key,
                            base_url=os.environ.get("KB_EUTILS_URL") or None, offline=False, refresh=refresh)
        try:
            found = resolve_online([refs[i] for i in todo], eutils)
            online = {todo[k]: value for k, value in found.items()}
        except KbError as exc:
            # The parse and the offline matches are kept (the unresolved references with their text);
            # responses already fetched stay in the cache, so the same command resumes.
            failure = exc

    records = build_records(refs, citing=citing, source_name=file.name, matches=matches, online=online,
                            match_files=match_files)
    out = Path(data_dir) / "records" / f"refs-{file.stem}.jsonl"
    resolved = sum(1 for r in records if r["resolved"])
    write_records(out, records + coverage_records(records, citing=citing, source_name=file.name))
    for record in records:
        click.echo(_describe(record))
    click.echo(f"{len(records)} parsed, {resolved} resolved -> {out}")
    if failure is not None:
        # eutils' message ends with how to resume (run the same command again)
        raise type(failure)(f"resolving online failed, the parsed references are kept unresolved: {failure}") from None
    return records
