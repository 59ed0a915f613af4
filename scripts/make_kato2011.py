"""Write the embedded default dataset's paper records from the transcribed sources.

Usage (from the project root, with ../shared beside it):

    python scripts/make_kato2011.py ../shared/corpus/kato2011-neighbourhood.json datasets/kato2011/article-page.txt

Writes datasets/kato2011/records/papers.jsonl: the seed paper and its five references as kb paper
records, plus the seed marker. Every fact comes from the two inputs; each record's provenance names
the public pages it was read on. Nothing is filled in that the sources do not show (no PMIDs, no MeSH).
The citation edges are not written here: `kb refs` produces them from the article page's reference
list (see datasets/kato2011/README.md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.records import paper_key, provenance, write_records  # noqa: E402

ARTICLE_PAGE = "datasets/kato2011/article-page.txt"


def article_page_facts(text: str) -> dict:
    """Title, abstract and keywords as the article page shows them."""
    lines = [line.rstrip() for line in text.splitlines()]
    non_empty = [line for line in lines if line.strip()]
    title, abstract = non_empty[0].strip(), non_empty[1].strip()
    # The keyword list is the bulleted block at the very end of the page.
    keywords = []
    for line in reversed(lines):
        match = re.match(r"^\s*[\u2022*]\s*(.+)$", line)
        if match:
            keywords.insert(0, match.group(1).strip())
        elif line.strip():
            break
    return {"title": title, "abstract": abstract, "keywords": keywords}


def paper_record(paper: dict, collected_on: str, extra_sources: list[str], note_prefix: str = "") -> dict:
    """One paper of the corpus as a kb paper record, keyed by PMID, DOI or the corpus's local key."""
    local = paper["key"][4:] if paper["key"].startswith("ref:") else None
    key = paper_key(paper.get("pmid"), paper.get("doi"), local)
    year = paper.get("year")
    month = {"Jan": "01", "Feb": "02", "Mar": "03", "Apr": "04", "May": "05", "Jun": "06", "Jul": "07",
             "Aug": "08", "Sep": "09", "Oct": "10", "Nov": "11", "Dec": "12"}.get(paper.get("month") or "")
    note = (note_prefix + (paper.get("notes") or "")).strip() or None
    return {
        "type": "paper",
        "id": key,
        "pmid": paper.get("pmid"),
        "doi": paper.get("doi"),
        "pmcid": paper.get("pmcid"),
        "title": paper.get("title"),
        "abstract": None,
        "abstract_sections": [],
        "authors": [
            {"last": a.get("last"), "fore": a.get("fore"), "initials": a.get("initials"), "suffix": None,
             "collective": None, "orcid": None, "affiliations": []}
            for a in paper.get("authors") or []
        ],
        "journal": {"title": paper.get("journal"), "iso": paper.get("journal_iso"), "issn": None,
                    "issn_type": None, "issn_linking": None, "nlm_id": None, "country": None},
        "year": year,
        "pub_date": f"{year}-{month}" if year and month else (str(year) if year else None),
        "volume": paper.get("volume"),
        "issue": paper.get("issue"),
        "pages": paper.get("pages"),
        "languages": [],
        "publication_types": [],
        "mesh": [],
        "keywords": [],
        "chemicals": [],
        "references": [],
        "kind": "article",
        "provenance": provenance("curated", retrieved=collected_on, request=None,
                                 sources=list(paper.get("sources") or []) + extra_sources, note=note),
    }


def main(corpus_path: str, page_path: str) -> None:
    corpus = json.loads(Path(corpus_path).read_text(encoding="utf-8"))
    page = article_page_facts(Path(page_path).read_text(encoding="utf-8"))
    records = []
    for paper in corpus["papers"]:
        if paper.get("role") == "seed":
            record = paper_record(paper, corpus["collected_on"], [ARTICLE_PAGE],
                                  "Abstract and author keywords from the article page text (datasets/kato2011/article-page.txt). ")
            record["abstract"] = page["abstract"]
            record["abstract_sections"] = [{"label": None, "category": None, "text": page["abstract"]}]
            record["keywords"] = [{"text": k, "major": False, "owner": "publisher"} for k in page["keywords"]]
            if page["title"].rstrip(".") != record["title"]:
                raise SystemExit("the article page and the corpus disagree on the seed's title")
            seed_key = record["id"]
        else:
            record = paper_record(paper, corpus["collected_on"], [])
        records.append(record)
    records.sort(key=lambda r: r["id"])
    records.append({"type": "seed", "id": seed_key, "query": "doi:10.1007/s12185-011-0842-7",
                    "provenance": provenance("curated", retrieved=corpus["collected_on"],
                                             sources=[ARTICLE_PAGE], note="the seed paper of kb's embedded default")})
    count = write_records(ROOT / "datasets/kato2011/records/papers.jsonl", records)
    print(f"wrote {count} records to datasets/kato2011/records/papers.jsonl")


if __name__ == "__main__":
    main(*sys.argv[1:3])
