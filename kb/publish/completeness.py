"""How complete is the citation graph? Per paper and per citation source, at /-/kb/completeness.

`kb build` fills two tables from the harvest's records: ``citation_sources`` (one row per citation edge and
each source that gave it: pubmed-reflist, elink:..., europepmc, opencitations, crossref, icite...) and
``paper_coverage`` (from ``coverage`` records: per paper and source, the references and citers it gave,
the count the publisher states through Crossref, and a status: ok, no-links, not-found, failed). The page
shows, per paper, references found per source against the stated count, citers per source and the
references still unresolved; ``?paper=ID`` answers "why is this citation missing?" for one paper.
"""

from __future__ import annotations

from urllib.parse import quote

PUBMED_EDGE_SOURCES = ("pubmed-reflist", "elink:pubmed_pubmed_refs", "elink:pubmed_pubmed_citedin")
REFLIST_EDGE_SOURCES = ("reflist-pmid", "reflist-match", "reflist-text", "ecitmatch", "esearch-title")  # kb refs
SOURCE_COLUMNS = ("pubmed", "reflist", "europepmc", "opencitations", "crossref", "icite")
GROUP_SQL = ("case when source in (%s) then 'pubmed' when source in (%s) then 'reflist' else source end"
             % tuple(", ".join(f"'{s}'" for s in group) for group in (PUBMED_EDGE_SOURCES, REFLIST_EDGE_SOURCES)))
STATUS_ORDER = {"ok": 0, "no-links": 1, "not-found": 2, "failed": 3}
PAPER_CAP = 1000


def source_group(source: str) -> str:
    """The column a raw edge source belongs to: PubMed's reference list and elink links are "pubmed"; the edges
    `kb refs` made from a pasted reference list (however each was resolved) are "reflist"."""
    if source in PUBMED_EDGE_SOURCES:
        return "pubmed"
    return "reflist" if source in REFLIST_EDGE_SOURCES else source


# ---------------------------------------------------------------------------------------------------------------
# The page

async def _tables(db) -> set:
    return set(await db.table_names())


async def overview(db, limit: int = PAPER_CAP) -> dict:
    """Per-source totals and the per-paper rows of the completeness page."""
    statuses = {}
    for row in await db.execute("select source, status, count(*) as n, sum(coalesce([references], 0)) as refs, "
                                "sum(coalesce(citers, 0)) as citers from paper_coverage group by source, status"):
        s = statuses.setdefault(row["source"], {"papers": 0, "references": 0, "citers": 0, "statuses": {}})
        s["papers"] += row["n"]
        s["references"] += row["refs"] or 0
        s["citers"] += row["citers"] or 0
        s["statuses"][row["status"]] = row["n"]
    only = {}
    for row in await db.execute(
            "select source, count(*) as n from (select citing_id, cited_id, min(source) as source, count(*) as k "
            f"from (select distinct citing_id, cited_id, {GROUP_SQL} as source "
            "from citation_sources) group by citing_id, cited_id) where k = 1 group by source"):
        only[row["source"]] = row["n"]
    totals = []
    for name in sorted(statuses, key=lambda n: (SOURCE_COLUMNS.index(n) if n in SOURCE_COLUMNS else 99, n)):
        s = statuses[name]
        totals.append({"source": name, **s, "only": only.get(name, 0),
                       "statuses": sorted(s["statuses"].items(), key=lambda kv: STATUS_ORDER.get(kv[0], 9))})
    papers = []
    rows = await db.execute(
        "select p.id, p.title, p.year, p.is_seed, "
        " (select count(*) from citations c where c.citing_id = p.id) as refs_found, "
        " (select count(*) from citations c join papers q on q.id = c.cited_id "
        "   where c.citing_id = p.id and q.resolved = 0) as unresolved, "
        " (select count(*) from citations c where c.cited_id = p.id) as citers_found "
        "from papers p where p.id in (select paper_id from paper_coverage) "
        "order by p.is_seed desc, p.id limit :limit", {"limit": limit + 1})
    rows = list(rows)
    coverage: dict[str, dict] = {}
    ids = [r["id"] for r in rows[:limit]]
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        marks = ", ".join(f":p{j}" for j in range(len(chunk)))
        for c in await db.execute(f"select * from paper_coverage where paper_id in ({marks})",
                                  {f"p{j}": v for j, v in enumerate(chunk)}):
            coverage.setdefault(c["paper_id"], {})[c["source"]] = dict(c)
    for r in rows[:limit]:
        cov = coverage.get(r["id"], {})
        stated = next((c["stated_references"] for c in cov.values() if c["stated_references"] is not None), None)
        papers.append({**dict(r), "stated": stated, "sources": cov,
                       "short": r["refs_found"] < stated if stated is not None else False})
    sources = [s for s in SOURCE_COLUMNS if s in statuses] + sorted(set(statuses) - set(SOURCE_COLUMNS))
    return {"totals": totals, "papers": papers, "sources": sources, "truncated": len(rows) > limit}


async def paper_breakdown(db, paper_id: str) -> dict | None:
    """One paper: its coverage per source, and each reference and citer with the sources that have it."""
    paper = (await db.execute("select id, title, year, pmid, doi, is_seed, resolved from papers where id = :id",
                              {"id": paper_id})).first()
    if paper is None:
        return None
    coverage = [dict(r) for r in await db.execute(
        "select * from paper_coverage where paper_id = :id", {"id": paper_id})]
    coverage.sort(key=lambda c: (SOURCE_COLUMNS.index(c["source"]) if c["source"] in SOURCE_COLUMNS else 99,
                                 c["source"]))
    asked = {c["source"] for c in coverage}
    lists = {}
    for direction, mine, other in (("references", "citing_id", "cited_id"), ("citers", "cited_id", "citing_id")):
        links: dict[str, dict] = {}
        for r in await db.execute(
                f"select s.{other} as other, s.source, p.title, p.year, p.resolved from citation_sources s "
                f"join papers p on p.id = s.{other} where s.{mine} = :id order by s.{other}, s.source",
                {"id": paper_id}):
            item = links.setdefault(r["other"], {"id": r["other"], "title": r["title"], "year": r["year"],
                                                 "resolved": r["resolved"], "via": set(), "raw": []})
            item["via"].add(source_group(r["source"]))
            item["raw"].append(r["source"])
        items = []
        for item in links.values():
            missing = [s for s in SOURCE_COLUMNS if s in asked and s not in item["via"]
                       and not (direction == "citers" and s == "crossref")]
            items.append({**item, "via": sorted(item["via"]), "missing": missing})
        items.sort(key=lambda i: (len(i["via"]), i["year"] is None, i["year"] or 0, i["id"]))
        lists[direction] = items
    stated = next((c["stated_references"] for c in coverage if c["stated_references"] is not None), None)
    return {"paper": dict(paper), "coverage": coverage, "stated": stated, "references": lists["references"],
            "citers": lists["citers"], "asked": [s for s in SOURCE_COLUMNS if s in asked]}


async def completeness_page(datasette, request):
    """/-/kb/completeness and /-/kb/completeness?paper=ID."""
    from datasette.utils.asgi import NotFound

    from .plugin import _page, _require_kb, row_url

    db = await _require_kb(datasette)
    if not {"paper_coverage", "citation_sources"} <= await _tables(db):
        raise NotFound("This knowledge base was built before kb recorded citation sources: run kb build again")
    paper_id = (request.args.get("paper") or "").strip()
    if paper_id.isdigit():
        paper_id = f"pmid:{paper_id}"
    base = datasette.urls.path("/-/kb/completeness")
    link = lambda pid: base + "?paper=" + quote(pid, safe=":")  # noqa: E731
    row = lambda pid: row_url(datasette, db.name, "papers", pid)  # noqa: E731
    if paper_id:
        detail = await paper_breakdown(db, paper_id)
        if detail is None:
            raise NotFound(f"No paper {paper_id} in the knowledge base")
        return await _page(datasette, request, "kb_completeness.html", detail=detail, overview=None,
                           base_url=base, paper_link=link, row_link=row, columns=SOURCE_COLUMNS)
    return await _page(datasette, request, "kb_completeness.html", detail=None, overview=await overview(db),
                       base_url=base, paper_link=link, row_link=row, columns=SOURCE_COLUMNS, cap=PAPER_CAP)
