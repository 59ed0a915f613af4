"""Seed papers given on the command line (`kb import --seed`, `kb build --seed`), and the knowledge base's
own title and description (kb_meta "title", "description", "seeds"), said from what it was built from.

A seed is named as people paste it: a PMID, DOI, PMCID, PubMed/PMC/doi.org URL (kb.ids.classify) or a kb key
(pmid:N, doi:10..., ref:...). It is looked up among the papers being built (or imported); one that is not
there is an error naming it, never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

from .errors import KbError, NotFound
from .ids import classify
from .records import normalize_doi

KEY_PREFIXES = ("pmid:", "doi:", "ref:")


def seed_key(text: str, papers: dict, remap=lambda k: k) -> str:
    """The kb key of the paper a seed identifier names, among `papers` (kb key -> paper); NotFound if absent."""
    s = (text or "").strip()
    if not s:
        raise KbError("empty --seed: give a PMID, a DOI, a PMCID, a PubMed/PMC/doi.org URL or a kb key")
    low = s.lower()
    if low.startswith(KEY_PREFIXES):
        key = remap("doi:" + (normalize_doi(s[4:]) or "")) if low.startswith("doi:") else s
        if key in papers:
            return key
        if low.startswith("ref:"):
            raise NotFound(f"seed {text!r}: no paper with this key in the records")
    ident = classify(s)
    if ident.kind == "pmid":
        key = f"pmid:{ident.value}"
        if key in papers:
            return key
    elif ident.kind == "doi":
        doi = normalize_doi(ident.value)
        key = remap(f"doi:{doi}")
        if key in papers:
            return key
        for k, p in papers.items():
            if normalize_doi(p.get("doi")) == doi:
                return k
    else:
        for k, p in papers.items():
            if str(p.get("pmcid") or "").upper() == ident.value:
                return k
    what = {"pmid": "PMID", "doi": "DOI", "pmcid": "PMCID"}[ident.kind]
    raise NotFound(f"seed {text!r}: no paper with this {what} in the records (fetch or import it first)")


def check_identifiers(identifiers) -> None:
    """KbError (one line) for a seed that is neither an identifier kb reads nor a kb key, before any work."""
    for text in identifiers:
        if not (text or "").strip().lower().startswith(KEY_PREFIXES):
            classify(text)


def write_seed_records(data_dir, identifiers, papers: dict, query_note: str = "kb import --seed") -> Path:
    """Add seed records for `identifiers` (resolved among `papers`) to DATA/records/seeds.jsonl, merged with
    the seeds already there, sorted; returns the file."""
    from .records import provenance, read_records, write_records

    keys = {seed_key(i, papers): i for i in identifiers}
    path = Path(data_dir) / "records" / "seeds.jsonl"
    have = {}
    if path.is_file():
        for rec in read_records([path]):
            if rec.get("type") == "seed" and rec.get("id"):
                have[rec["id"]] = rec
    for key, query in keys.items():
        have.setdefault(key, {"type": "seed", "id": key, "query": query,
                              "provenance": provenance("kb", request=query_note)})
    write_records(path, [have[k] for k in sorted(have)])
    return path


def _cut(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1].rstrip(" ,.;:") + "…"


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def describe(seeds: list[dict], counts: dict, files: list[str], origins: dict) -> tuple[str, str]:
    """(title, description) of a knowledge base: from its seeds when it has some, else from where its papers
    came from. `seeds`: [{id, label, title}], `counts`: the build's counts, `files`: record file names,
    `origins`: {(source, request): papers} of the paper records."""
    resolved, stubs, cites = counts.get("resolved_papers", 0), counts.get("stub_papers", 0), counts.get("citations", 0)
    size = f"{_n(resolved, 'paper')} with their own records, " + (
        f"{_n(stubs, 'work')} known only from reference lists " if stubs else "") + \
        f"and {_n(cites, 'citation')} between them"
    imported = sorted({req for (src, req) in origins if req and src and ("xml" in src or "medline" in src)})
    if seeds:
        first = seeds[0]
        name = ", ".join(x for x in (first.get("label"), _cut(first.get("title") or "", 90)) if x)
        if len(seeds) == 1:
            title = f"kb: {name}"
            grown = f"Grown from the seed paper {first.get('label') or first['id']} ({first['id']}): " \
                    f"{_cut(first.get('title') or '', 160)}"
            grown += "" if grown.endswith((".", "?", "!", "…")) else "."
        else:
            title = f"kb: {len(seeds)} seed papers ({', '.join(s.get('label') or s['id'] for s in seeds[:3])}" \
                    f"{', …' if len(seeds) > 3 else ''})"
            grown = f"Grown from {len(seeds)} seed papers: " + "; ".join(
                f"{s.get('label') or s['id']} ({s['id']})" for s in seeds[:10]) + ("; …" if len(seeds) > 10 else "") + "."
        return title, f"{grown} It holds {size}."
    if imported:
        source = ", ".join(imported[:3]) + (f" and {len(imported) - 3} more files" if len(imported) > 3 else "")
        title = f"kb: {_n(resolved, 'imported paper')} from {source}"
    else:
        source = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        title = f"kb: {_n(resolved, 'paper')} from {source}"
    origin = f"Imported from {source}" if imported else f"Built from {_n(len(files), 'record file')} ({source})"
    return title, (f"{origin}: {size}. It has no seed paper, so "
                   f"the seed views and hop distances are empty; mark one with kb build --seed ID or "
                   f"kb import --seed ID.")


def mark_seeds(data_dir, identifiers, record_paths) -> list[str]:
    """`kb import --seed`: find each identifier among the papers of `record_paths` (the files just imported)
    and record it as a seed in DATA/records/seeds.jsonl; returns the seed keys."""
    from .records import read_records

    papers = {}
    for rec in read_records([Path(p) for p in record_paths]):
        if rec.get("type") == "paper":
            key = f"pmid:{str(rec['pmid']).strip()}" if rec.get("pmid") else rec.get("id")
            if key:
                papers[key] = {"doi": rec.get("doi"), "pmcid": rec.get("pmcid")}
    try:
        keys = [seed_key(i, papers) for i in identifiers]
    except NotFound as exc:
        raise NotFound(f"{exc}; the imported records are kept") from None
    write_seed_records(data_dir, identifiers, papers)
    return keys
