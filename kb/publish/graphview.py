"""Which papers and edges the graph pages draw, so that a knowledge base of thousands of papers shows a graph.

A knowledge base built from PubMed is mostly papers known only from reference lists (stubs, `resolved = 0`):
the top-N papers by PageRank are then stubs and old classics with no citation between them. So the citation
graph is grown instead: from the seed papers (or the focus), add resolved papers hop by hop (within a hop, the
best linked and most central first: PageRank x (1 + links into the drawn set)) until the node budget is spent;
when a component is exhausted, start again from the most central resolved paper that has a link. Then
reference-only works that two or more drawn papers cite are drawn too (they carry co-citation structure);
the other stubs of a paper are counted, and in the focus view collapsed into one "+N" node. Every drawn
paper has a citation edge to another drawn paper except where no such edge exists under the filters.

The similarity view draws the papers most similar to one paper: co-citation and bibliographic coupling from
paper_similarity and, when the table exists, PubMed's similar articles (similar_articles).

The selection runs as plain SQL on one SQLite connection (Datasette's execute_fn), with indexed lookups per
drawn paper, so its cost follows the size of the drawing, not of the knowledge base.
"""

from __future__ import annotations

import heapq
import json
import re

STUB_INLINE = 12       # a focus's reference-only works are drawn one by one up to this many, else collapsed
SHARED_SHARE = 5       # in the whole view, at most 1/5 of the nodes are reference-only works cited by 2+ drawn papers
SCAN_FACTOR = 20       # restarts look at most this many x the node budget candidates for one with a link
MIN_BOX = 3            # a paper's undrawn reference-only works get a "+N" box from this many (fewer: in its details)
SIMILAR_PER_NODE = 3   # the similar-articles layer draws each paper's strongest few similarity links
SIMILAR_DEFAULT = 40   # papers in the similarity view
SIMILAR_EDGE_CAP = 4   # similarity links drawn per paper between the similar papers themselves

PAPER_COLUMNS = ("id, pmid, doi, pmcid, title, journal, year, is_seed, hop, resolved, first_author, authors_display, "
                 "pagerank, citation_count_kb, reference_count_kb, community")


def filter_sql(filters: dict, alias: str = "p") -> tuple[str, dict]:
    """(" and ..." SQL condition on `alias`, parameters) for the year, hop and concept filters."""
    parts, params = [], {}
    if filters.get("year_min") is not None:
        parts.append(f"{alias}.year >= :year_min")
        params["year_min"] = filters["year_min"]
    if filters.get("year_max") is not None:
        parts.append(f"{alias}.year <= :year_max")
        params["year_max"] = filters["year_max"]
    if filters.get("hop_max") is not None:
        parts.append(f"{alias}.hop <= :hop_max")
        params["hop_max"] = filters["hop_max"]
    if filters.get("concept"):
        # a primary-key lookup per row, rather than an IN list rebuilt on every statement
        parts.append(f"exists (select 1 from paper_concepts pc where pc.paper_id = {alias}.id "
                     f"and pc.concept_id = :concept)")
        params["concept"] = filters["concept"]
    return "".join(" and " + p for p in parts), params


def _has_table(conn, name: str) -> bool:
    return conn.execute("select 1 from sqlite_master where type in ('table', 'view') and name = ?",
                        (name,)).fetchone() is not None


def _columns(conn, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"pragma table_info([{table}])")}


_INITIALS = re.compile(r"^[A-Z]{1,4}$")
_STUB_AUTHOR = re.compile(r"^\s*(?:\[?\d{1,4}[\].)]?\s+)?([A-Z][A-Za-z'\u00C0-\u024F-]+(?: [a-z]{1,3})?"
                          r"(?: [A-Z][A-Za-z'\u00C0-\u024F-]+)?) [A-Z]{1,4}\b")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


def paper_label(first_author: str | None, year, title: str | None = None, stored: str | None = None) -> str:
    """"FirstAuthor Year" (e.g. "Kato 2011"): the build's label when it has one, else made from the first author
    ("Kato M" -> "Kato") and year, else read from a reference string, else the start of the title."""
    if stored:
        return stored
    surname = None
    if first_author:
        words = first_author.split()
        while len(words) > 1 and _INITIALS.match(words[-1]):
            words.pop()
        surname = " ".join(words)
        if len(surname) > 24:
            surname = surname[:23] + "…"
    if not surname and title:
        match = _STUB_AUTHOR.match(title)
        if match:
            surname = match.group(1)
    if not year and title and not first_author:
        found = _YEAR.search(title)
        year = found.group(1) if found else None
    if surname:
        return f"{surname} {year}" if year else surname
    text = (title or "").strip()
    short = text if len(text) <= 24 else text[:23] + "…"
    return f"{short} ({year})" if year and short else (short or "?")


def resolve_paper(conn, text: str | None) -> str | None:
    """The papers.id a user typed: the id itself, or a bare PMID, DOI, PMCID or one of their URLs; None if absent."""
    if not text:
        return None
    if conn.execute("select 1 from papers where id = ?", (text,)).fetchone():
        return text
    from ..errors import KbError
    from ..ids import classify

    try:
        ident = classify(text)
    except KbError:
        return None
    column = {"pmid": "pmid", "doi": "doi", "pmcid": "pmcid"}.get(ident.kind)
    if column is None:
        return None
    value = ident.value.lower() if column == "doi" else ident.value
    row = conn.execute(f"select id from papers where {column} = ? order by resolved desc, id limit 1",
                       (value,)).fetchone()
    return row[0] if row else None


class _Grower:
    """Grows a set of papers along citation edges: hop by hop, and within a hop the best linked and most central
    first. With `leaves_last`, works known only from reference lists that one drawn paper cites (leaves) wait
    until nothing else is left to reach."""

    def __init__(self, conn, cond: str, params: dict, leaves_last: bool = False):
        self.conn, self.params, self.leaves_last = conn, params, leaves_last
        self.sql = f"""
            select p.id, p.pagerank, p.resolved from citations c join papers p on p.id = c.cited_id
            where c.citing_id = :node{cond}
            union
            select p.id, p.pagerank, p.resolved from citations c join papers p on p.id = c.citing_id
            where c.cited_id = :node{cond}"""
        self.order: list[str] = []
        self.chosen: set[str] = set()
        self.links: dict[str, int] = {}
        self.hop: dict[str, int] = {}
        self.heap: list[tuple] = []
        self.adjacent: dict[str, list[tuple[str, float, int]]] = {}

    def neighbours(self, node: str) -> list[tuple[str, float, int]]:
        if node not in self.adjacent:
            self.adjacent[node] = [(r[0], r[1] or 0.0, r[2]) for r in
                                   self.conn.execute(self.sql, dict(self.params, node=node))]
        return self.adjacent[node]

    def add(self, node: str, hop: int = 0):
        if node in self.chosen:
            return
        self.order.append(node)
        self.chosen.add(node)
        for other, rank, resolved in self.neighbours(node):
            if other in self.chosen:
                continue
            # hops first (a paper keeps the hop at which it was first reached), then PageRank x links
            depth = self.hop.setdefault(other, hop + 1)
            links = self.links[other] = self.links.get(other, 0) + 1
            leaf = 1 if self.leaves_last and not resolved and links < 2 else 0
            heapq.heappush(self.heap, (leaf, depth, -rank * (1 + links), -links, other))

    def grow(self, limit: int) -> bool:
        """Add the best frontier paper until `limit` papers are chosen; False when the frontier runs dry first."""
        while len(self.order) < limit:
            while self.heap:
                _leaf, depth, _score, neg_links, node = heapq.heappop(self.heap)
                if node not in self.chosen and self.links[node] == -neg_links:
                    break
            else:
                return False
            self.add(node, depth)
        return True

    def fill(self, conn, filters: dict, limit: int):
        """Grow to `limit`; when a component runs dry, restart from the most central paper with a full record
        that has a link (looking at a bounded number of them)."""
        if self.grow(limit):
            return
        scanned = 0
        for node in _ordered_ids(conn, filters, " and p.resolved = 1", (SCAN_FACTOR + 1) * limit):
            if node in self.chosen:
                continue
            scanned += 1
            if scanned > SCAN_FACTOR * limit:
                return
            if self.neighbours(node):
                self.add(node)
                if self.grow(limit):
                    return


class _Remembered:
    """A growth already made (whole_view reads its `order`)."""

    def __init__(self, order: list[str]):
        self.order = order


class _CouplingGrower(_Grower):
    """Grows over papers with full records that cite the same reference-only works (bibliographic coupling through
    the works of the reference lists), for knowledge bases whose papers seldom cite each other."""

    def __init__(self, conn, filters: dict):
        cond_p, params = filter_sql(filters, "p")
        cond_s, _ = filter_sql(filters, "s")
        super().__init__(conn, "", params)
        self.sql = f"""
            select p.id, p.pagerank, 1, count(*) from citations c1 join papers s on s.id = c1.cited_id
            join citations c2 on c2.cited_id = c1.cited_id join papers p on p.id = c2.citing_id
            where c1.citing_id = :node and s.resolved = 0{cond_s} and c2.citing_id != :node
              and p.resolved = 1{cond_p}
            group by p.id"""


def _hidden_stubs(conn, ids: list[str], shown: list[str], cond: str, params: dict) -> list[tuple[str, int]]:
    """(paper, how many reference-only works it cites that are not drawn) for the papers `ids`."""
    rows = conn.execute(
        f"""select c.citing_id, count(*) from citations c join papers p on p.id = c.cited_id
            where c.citing_id in (select value from json_each(:ids)) and p.resolved = 0{cond}
              and c.cited_id not in (select value from json_each(:shown))
            group by c.citing_id order by c.citing_id""",
        dict(params, ids=json.dumps(ids), shown=json.dumps(shown))).fetchall()
    return [(r[0], r[1]) for r in rows]


def _with_boxes(conn, order: list[str], limit: int, cond: str, params: dict) -> tuple[list[str], list[dict]]:
    """The longest prefix of `order` that fits in `limit` nodes with the works two or more of its papers cite and
    one "+N" box per paper for the rest of its reference-only works (MIN_BOX or more); (ids, boxes). When every work they cite fits,
    all are drawn and there are no boxes."""
    cited = _stubs_linked(conn, order, cond, params, 1)
    if len(order) + len(cited) <= limit:
        return order + [s for s, _n in cited], []      # room for every one of them: no boxes needed
    n = len(order)
    while True:
        shared = [s for s, _n in _stubs_linked(conn, order[:n], cond, params, 2)]
        hidden = [(paper, count) for paper, count in _hidden_stubs(conn, order[:n], shared, cond, params)
                  if count >= MIN_BOX]
        size = n + len(shared) + len(hidden)
        if size <= limit or n <= 1:
            break
        n -= max(1, (size - limit) // 3)
    boxes = [{"id": "more:" + paper, "count": count, "kind": "stubs", "of": paper} for paper, count in hidden]
    return order[:n] + shared[:max(limit - n, 0)], boxes


def scan_sql(filters: dict, extra: str = "") -> tuple[str, dict]:
    """("from ... where ..." over the papers passing the filters, parameters) for whole-table scans: driven by the
    concept's papers when a concept is asked for (its index), not by every paper with a lookup each."""
    rest = {k: v for k, v in filters.items() if k != "concept"}
    cond, params = filter_sql(rest)
    if filters.get("concept"):
        params["concept"] = filters["concept"]
        return (f"from paper_concepts pc0 join papers p on p.id = pc0.paper_id "
                f"where pc0.concept_id = :concept{cond}{extra}", params)
    return f"from papers p where 1 = 1{cond}{extra}", params


def _ordered_ids(conn, filters: dict, extra: str = "", limit: int | None = None) -> list[str]:
    """Ids of the papers passing the filters (and `extra`), the most central first."""
    scan, params = scan_sql(filters, extra)
    sql = f"select p.id {scan} order by p.pagerank desc, p.id"
    if limit is not None:
        sql += f" limit {int(limit)}"
    return [r[0] for r in conn.execute(sql, params)]


def _stubs_linked(conn, ids: list[str], cond: str, params: dict, minimum: int) -> list[tuple[str, int]]:
    """Reference-only works cited by at least `minimum` of `ids`: (id, how many of them), most shared first."""
    if not ids:
        return []
    rows = conn.execute(
        f"""select p.id, count(*) as n, p.pagerank from citations c join papers p on p.id = c.cited_id
            where c.citing_id in (select value from json_each(:ids)) and p.resolved = 0{cond}
            group by p.id having n >= :minimum order by n desc, p.pagerank desc, p.id""",
        dict(params, ids=json.dumps(ids), minimum=minimum)).fetchall()
    return [(r[0], r[1]) for r in rows]


GROWTH_MAX = 500  # the largest node budget the pages allow (kb.publish.plugin.MAX_NODES)


def _seeded_grower(conn, cond: str, params: dict, limit: int) -> "_Grower":
    grower = _Grower(conn, " and p.resolved = 1" + cond, params)
    # the seeds by the is_seed index (ordering them in SQL would walk the whole pagerank index instead). Seeds are
    # few, but with two values in is_seed and in resolved the statistics make both look like half the papers:
    # likelihood() says otherwise (without it SQLite took the resolved index: 61 ms instead of 0.01 at 116k papers)
    seeds = conn.execute("select p.id, p.pagerank from papers p where likelihood(p.is_seed = 1, 0.0001) "
                         f"and p.resolved = 1{cond}", params).fetchall()
    for seed, _rank in sorted(seeds, key=lambda r: (-(r[1] or 0), r[0])):
        if len(grower.order) < limit:
            grower.add(seed)
    return grower


def _remembered_growth(conn, limit: int, growth: dict) -> list[str] | None:
    """The unfiltered view's growth order for `limit` papers, from one growth to GROWTH_MAX kept in `growth` (per
    immutable database). The growth is greedy, so its first `limit` papers are those a growth to `limit` chooses, as
    long as it did not run dry before `limit` (then None: the caller grows as before). One growth serves every node
    budget: a hub's thousands of neighbours are read once per process, not once per budget."""
    if "whole" not in growth:
        grower = _seeded_grower(conn, "", {}, GROWTH_MAX)
        grower.grow(GROWTH_MAX)
        growth["whole"] = tuple(grower.order)
    order = growth["whole"]
    return list(order[:limit]) if limit <= len(order) else None


def whole_view(conn, filters: dict, limit: int, stubs: str = "shared", growth: dict | None = None) -> dict:
    """The papers of the whole-KB view: every paper passing the filters when they fit, else a grown, connected set.
    `growth`: a dict kept per immutable database, where the unfiltered growth order is remembered."""
    cond, params = filter_sql(filters)
    scan, scan_params = scan_sql(filters)
    total = conn.execute(f"select count(*) {scan}", scan_params).fetchone()[0]
    if total <= limit:
        return {"ids": _ordered_ids(conn, filters), "total": total, "method": "all"}
    remembered = _remembered_growth(conn, limit, growth) if growth is not None and not cond else None
    if remembered is not None:
        grower = _Remembered(remembered)
    else:
        grower = _seeded_grower(conn, cond, params, limit)
        grower.fill(conn, filters, limit)
    order = grower.order
    more: list[dict] = []
    if limit // 2 <= len(order) < limit and stubs != "hide":
        # Linked papers with full records ran out with room to spare: grow on through the works of their
        # reference lists, those that several drawn papers cite first (single-citer leaves last).
        through = _Grower(conn, cond, params, leaves_last=True)
        for node in order:
            through.add(node)
        through.fill(conn, filters, limit)
        order = through.order
    elif len(order) < limit and stubs != "hide":
        # Too few citations among papers with full records (a KB imported from MEDLINE files is like that: its
        # papers cite works known only from their reference lists): grow on over the papers that cite the same
        # works; draw the works two or more of them cite, and each paper's other ones as one "+N" box.
        coupled = _CouplingGrower(conn, filters)
        for node in order:
            coupled.add(node)
        coupled.fill(conn, filters, limit)
        if len(coupled.order) > len(order):
            ids, more = _with_boxes(conn, coupled.order, limit, cond, params)
            return {"ids": ids, "total": total, "method": "grown", "more": more}
    shown_stubs: list[str] = []
    if stubs != "hide" and order is grower.order:
        # The papers with full records filled the drawing: give the last-grown (least central) ones' places to
        # works that several drawn papers cite; every prefix of the growth order stays linked, since each paper
        # joined through an earlier one.
        minimum = 1 if stubs == "all" else 2
        share = limit // 2 if stubs == "all" else limit // SHARED_SHARE
        room = min(share, len(_stubs_linked(conn, order, cond, params, minimum)))
        order = order[:limit - room]
        shown_stubs = [s for s, _n in _stubs_linked(conn, order, cond, params, minimum)][:limit - len(order)]
    ids = order + shown_stubs
    if not ids:
        # No citation links at all under these filters: the most central papers (each with a box for its
        # reference-only works), so that something is drawn.
        ids = _ordered_ids(conn, filters, " and p.resolved = 1", limit)
        if stubs != "hide":
            ids, more = _with_boxes(conn, ids, limit, cond, params)
        if not ids:
            ids = _ordered_ids(conn, filters, "", limit)
    return {"ids": ids, "total": total, "method": "grown", "more": more}


def focus_view(conn, focus: str, filters: dict, limit: int, stubs: str = "shared", hops: int = 1) -> dict:
    """The focus paper, its references and citers (resolved ones first), its reference-only works drawn or collapsed
    into a count node, and with hops=2 the best-linked papers one step further."""
    cond, params = filter_sql(filters)
    rows = conn.execute(
        f"""select p.id, p.resolved from papers p where p.id in (
                select cited_id from citations where citing_id = :focus
                union select citing_id from citations where cited_id = :focus){cond}
            order by p.pagerank desc, p.id""", dict(params, focus=focus)).fetchall()
    rows = [r for r in rows if r[0] != focus]
    total = len(rows) + 1
    resolved = [r[0] for r in rows if r[1]]
    stub_ids = [r[0] for r in rows if not r[1]]
    if total <= limit and hops == 1 and (len(stub_ids) <= STUB_INLINE or stubs == "all"):
        return {"ids": [focus] + [r[0] for r in rows], "total": total, "method": "all", "more": []}
    ids = [focus] + resolved[:limit - 1]
    more = []
    if len(resolved) > limit - 1:
        more.append({"id": "more:papers", "count": len(resolved) - (limit - 1), "kind": "papers"})
    room = limit - len(ids)
    if hops >= 2:
        room = room // 2          # half of what is left for reference-only works, half for the next hop
    if stubs == "hide" or not stub_ids:
        drawn_stubs = []
    elif stubs == "all":
        drawn_stubs = stub_ids[:room]
    else:
        # reference-only works that another drawn paper cites too: they tie the neighbourhood together
        own = set(stub_ids)
        shared = [s for s, _n in _stubs_linked(conn, ids[1:], cond, params, 1) if s in own]
        drawn_stubs = shared[:room] if len(stub_ids) > STUB_INLINE else stub_ids
    ids += drawn_stubs
    hidden = len(stub_ids) - len(drawn_stubs)
    if hidden:
        more.append({"id": "more:stubs", "count": hidden, "kind": "stubs"})
    if hops >= 2 and len(ids) < limit:
        grower = _Grower(conn, " and p.resolved = 1" + cond, params)
        for node in [focus] + resolved[:limit - 1]:
            grower.add(node)
        grower.grow(limit - len(drawn_stubs))
        have = set(ids)
        ids += [n for n in grower.order if n not in have]
        # the universe is now the resolved papers within two hops (every one of them was seen as a neighbour)
        total = 1 + len(rows) + len(set(grower.links) - set(resolved) - {focus})
    return {"ids": ids, "total": total, "method": "focus", "more": more}


def edges_among(conn, ids: list[str]) -> list[dict]:
    """The citation edges whose two ends are both in `ids`, with every source that reported them."""
    rows = conn.execute(
        """select citing_id, cited_id, source, sources from citations
           where citing_id in (select value from json_each(:ids)) and cited_id in (select value from json_each(:ids))
           order by citing_id, cited_id""", {"ids": json.dumps(ids)}).fetchall()
    edges = []
    for citing, cited, source, sources in rows:
        try:
            listed = json.loads(sources) if sources else []
        except ValueError:
            listed = []
        if not isinstance(listed, list) or not listed:
            listed = [source] if source else []
        edges.append({"from": citing, "to": cited, "source": source, "sources": sorted(str(s) for s in listed)})
    return edges


def total_edges(conn, filters: dict, focus: str | None, ids_universe: list[str] | None = None) -> int:
    """How many citation edges the view draws from: among the papers passing the filters (whole view), or among
    the focus and its neighbours (focus view)."""
    if focus is not None and ids_universe is not None:
        return conn.execute(
            """select count(*) from citations where citing_id in (select value from json_each(:ids))
               and cited_id in (select value from json_each(:ids))""", {"ids": json.dumps(ids_universe)}).fetchone()[0]
    cond_p, _ = filter_sql(filters, "p")
    if not cond_p:
        return conn.execute("select count(*) from citations").fetchone()[0]
    scan, params = scan_sql(filters)
    cond_q, _ = filter_sql(filters, "q")
    # from the citing papers that pass the filters (their citations are a primary-key prefix), to cited ones that do
    return conn.execute(f"""select count(*) from citations c join papers q on q.id = c.cited_id
                            where c.citing_id in (select p.id {scan}){cond_q}""", params).fetchone()[0]


def focus_universe(conn, focus: str, filters: dict) -> list[str]:
    cond, params = filter_sql(filters)
    return [focus] + [r[0] for r in conn.execute(
        f"""select p.id from papers p where p.id in (select cited_id from citations where citing_id = :focus
                union select citing_id from citations where cited_id = :focus){cond}""", dict(params, focus=focus))
        if r[0] != focus]


def paper_rows(conn, ids: list[str]) -> dict[str, dict]:
    """The node fields of papers by id: columns, "FirstAuthor Year" label, main concept, hidden stub references."""
    have = _columns(conn, "papers")
    extra = ", label" if "label" in have else ", null as label"
    ids_json = json.dumps(ids)
    out = {}
    cursor = conn.execute(f"select {PAPER_COLUMNS}{extra} from papers where id in (select value from json_each(:ids))",
                          {"ids": ids_json})
    names = [d[0] for d in cursor.description]
    for row in cursor:
        r = dict(zip(names, row))
        r["label"] = paper_label(r["first_author"], r["year"], r["title"], r["label"])
        out[r["id"]] = r
    # Main concept: the most specific concept (carried by the fewest papers), then the best score, so that a
    # paper on leukemia MRI is coloured "leukemia" rather than the ubiquitous "MRI".
    for paper_id, concept_id in conn.execute(
            """select pc.paper_id, pc.concept_id from paper_concepts pc join concepts c on c.id = pc.concept_id
               where pc.paper_id in (select value from json_each(:ids))
               order by pc.paper_id, c.paper_count, pc.score desc, pc.concept_id""", {"ids": ids_json}):
        if paper_id in out:
            out[paper_id].setdefault("concept", concept_id)
    for paper_id, n in conn.execute(
            """select c.citing_id, count(*) from citations c join papers p on p.id = c.cited_id
               where c.citing_id in (select value from json_each(:ids)) and p.resolved = 0
               group by c.citing_id""", {"ids": ids_json}):
        out[paper_id]["stub_references"] = n
    return out


def similar_layer(conn, ids: list[str], per_node: int = SIMILAR_PER_NODE) -> list[dict]:
    """Similarity links among drawn papers: each paper's strongest few (co-citation + coupling, PubMed's rank)."""
    ids_json = json.dumps(ids)
    found: dict[tuple, dict] = {}
    if _has_table(conn, "paper_similarity"):
        for a, b, co, cp in conn.execute(
                """select paper_a, paper_b, cocitations, coupling from paper_similarity
                   where paper_a in (select value from json_each(:ids))
                     and paper_b in (select value from json_each(:ids))""",
                {"ids": ids_json}):
            key = tuple(sorted((a, b)))
            found[key] = {"from": key[0], "to": key[1], "cocitations": co or 0, "coupling": cp or 0,
                          "pubmed_rank": None}
    if _has_table(conn, "similar_articles"):
        for a, b, score, rank in conn.execute(
                """select paper_id, similar_id, score, rank from similar_articles
                   where paper_id in (select value from json_each(:ids))
                     and similar_id in (select value from json_each(:ids))""",
                {"ids": ids_json}):
            if a == b:
                continue
            key = tuple(sorted((a, b)))
            edge = found.setdefault(key, {"from": key[0], "to": key[1], "cocitations": 0, "coupling": 0,
                                          "pubmed_rank": None})
            if rank is not None and (edge["pubmed_rank"] is None or rank < edge["pubmed_rank"]):
                edge["pubmed_rank"] = rank
                edge["pubmed_score"] = score
    return _strongest(list(found.values()), per_node)


def _edge_kind(e: dict) -> str:
    kinds = [k for k, on in (("cocitation", e.get("cocitations")), ("coupling", e.get("coupling")),
                             ("pubmed", e.get("pubmed_rank") is not None)) if on]
    return "+".join(kinds) or "none"


def _strength(e: dict) -> float:
    """One number to rank similarity links: shared citers and references, plus PubMed's neighbours (rank 1 = 10)."""
    pubmed = e.get("pubmed_rank")
    return (e.get("cocitations") or 0) + (e.get("coupling") or 0) + (max(0, 11 - pubmed) if pubmed else 0)


def _strongest(edges: list[dict], per_node: int) -> list[dict]:
    edges.sort(key=lambda e: (-_strength(e), e["from"], e["to"]))
    count: dict[str, int] = {}
    kept = []
    for e in edges:
        if count.get(e["from"], 0) >= per_node and count.get(e["to"], 0) >= per_node:
            continue
        count[e["from"]] = count.get(e["from"], 0) + 1
        count[e["to"]] = count.get(e["to"], 0) + 1
        e["kind"] = _edge_kind(e)
        e["strength"] = _strength(e)
        kept.append(e)
    kept.sort(key=lambda e: (e["from"], e["to"]))
    return kept


def similar_view(conn, paper: str, filters: dict, limit: int = SIMILAR_DEFAULT) -> dict:
    """The papers most similar to `paper` (co-citation, coupling, PubMed's similar articles) and the similarity
    links among them."""
    cond, params = filter_sql(filters)
    candidates: dict[str, dict] = {}
    has_similarity = _has_table(conn, "paper_similarity")
    # PubMed's neighbours count as present when some were fetched (the build makes the table either way)
    has_pubmed = _has_table(conn, "similar_articles") and \
        conn.execute("select 1 from similar_articles limit 1").fetchone() is not None
    if has_similarity:
        for other, co, cp in conn.execute(
                f"""select s.other, s.cocitations, s.coupling from (
                        select paper_b as other, cocitations, coupling from paper_similarity where paper_a = :id
                        union all
                        select paper_a as other, cocitations, coupling from paper_similarity where paper_b = :id) s
                    join papers p on p.id = s.other where 1 = 1{cond}""", dict(params, id=paper)):
            candidates[other] = {"from": paper, "to": other, "cocitations": co or 0, "coupling": cp or 0,
                                 "pubmed_rank": None}
    if has_pubmed:
        for other, score, rank in conn.execute(
                f"""select s.similar_id, s.score, s.rank from similar_articles s join papers p on p.id = s.similar_id
                    where s.paper_id = :id{cond}""", dict(params, id=paper)):
            if other == paper:
                continue
            edge = candidates.setdefault(other, {"from": paper, "to": other, "cocitations": 0, "coupling": 0,
                                                 "pubmed_rank": None})
            edge["pubmed_rank"], edge["pubmed_score"] = rank, score
    total = len(candidates)
    ranked = sorted(candidates.values(), key=lambda e: (-_strength(e), e["to"]))[:max(limit - 1, 0)]
    for e in ranked:
        e["kind"], e["strength"] = _edge_kind(e), _strength(e)
    ids = [paper] + [e["to"] for e in ranked]
    among = [e for e in similar_layer(conn, ids[1:], SIMILAR_EDGE_CAP)]
    return {"ids": ids, "total": total + 1, "edges": ranked + among,
            "sources": {"paper_similarity": has_similarity, "similar_articles": has_pubmed}}


# ---------------------------------------------------------------------------------------------------------------
# The JSON the pages draw (kb.plugin routes call these).

VIEW_OPTIONS = ("stubs", "hops", "similar")


def _node(r: dict, labels: dict, urls) -> dict:
    concept = r.get("concept")
    return {
        "id": r["id"], "label": r["label"], "title": r["title"], "journal": r["journal"], "year": r["year"],
        "pmid": r["pmid"], "doi": r["doi"], "pmcid": r["pmcid"], "first_author": r["first_author"],
        "authors": r["authors_display"], "resolved": bool(r["resolved"]), "is_seed": bool(r["is_seed"]),
        "hop": r["hop"], "pagerank": r["pagerank"] or 0.0, "in_degree": r["citation_count_kb"] or 0,
        "out_degree": r["reference_count_kb"] or 0, "stub_references": r.get("stub_references", 0),
        "community": r["community"], "concept": concept, "concept_label": labels.get(concept),
        "url": urls["row"](r["id"]), "focus_url": urls["focus"](r["id"]), "similar_url": urls["similar"](r["id"]),
    }


def _urls(datasette, db):
    from urllib.parse import quote

    from datasette.utils import tilde_encode

    def q(value):
        return quote(str(value), safe=":")

    return {"row": lambda pid: datasette.urls.row(db.name, "papers", tilde_encode(str(pid))),
            "focus": lambda pid: datasette.urls.path("/-/kb/citations?focus=" + q(pid)),
            "similar": lambda pid: datasette.urls.path("/-/kb/similar?paper=" + q(pid))}


async def citation_json(datasette, db, filters: dict) -> dict:
    """Nodes, edges and counts for the citation graph page (see the module docstring for what is chosen)."""
    from datasette.utils.asgi import NotFound

    limit, focus = filters["limit"], filters.get("focus")
    stubs, hops = filters.get("stubs") or "shared", filters.get("hops") or 1
    selectable = {k: filters.get(k) for k in ("year_min", "year_max", "hop_max", "concept")}

    def compute(conn):
        nonlocal focus
        if focus is not None:
            focus = resolve_paper(conn, focus)
            if focus is None:
                return None
            view = focus_view(conn, focus, selectable, limit, stubs, hops)
            universe = total_edges(conn, selectable, focus, focus_universe(conn, focus, selectable)) \
                if hops == 1 else None
        else:
            # the growth order is remembered per immutable database: every node budget reuses it
            view = whole_view(conn, selectable, limit, stubs,
                              None if db.is_mutable else db.__dict__.setdefault("_kb_growth", {}))
            universe = total_edges(conn, selectable, None)
        ids = view["ids"]
        rows = paper_rows(conn, ids)
        edges = edges_among(conn, ids)
        layer = similar_layer(conn, ids) if filters.get("similar") else None
        concepts = [tuple(r) for r in conn.execute("select id, label from concepts order by id")]
        resolved_total = conn.execute("select count(*) from papers where resolved = 1").fetchone()[0]
        return view, universe, rows, edges, layer, concepts, resolved_total

    asked = focus
    result = await db.execute_fn(compute)
    if result is None:
        raise NotFound(f"No paper {asked} in the knowledge base (give a paper's id, PMID, DOI or PMCID)")
    view, universe, rows, edges, layer, concepts, resolved_total = result
    labels = dict(concepts)
    urls = _urls(datasette, db)
    ids = view["ids"]
    nodes = [_node(rows[i], labels, urls) for i in ids if i in rows]
    if focus is None or view["method"] == "all":
        # most central first (the focus first in its own view), as the page lists and labels them
        head = [n for n in nodes if n["id"] == focus]
        nodes = head + sorted((n for n in nodes if n["id"] != focus), key=lambda n: (-n["pagerank"], n["id"]))
    more = []
    for m in view.get("more") or []:
        if m["kind"] == "papers":
            text = f"+{m['count']} more paper{'s' if m['count'] != 1 else ''}"
        elif focus is not None:
            text = f"+{m['count']} reference-only work{'s' if m['count'] != 1 else ''}"
        else:
            text = f"+{m['count']} ref{'s' if m['count'] != 1 else ''}"
        of = m.get("of") or focus
        more.append({"id": m["id"], "label": text, "count": m["count"], "kind": m["kind"], "of": of,
                     "url": urls["row"](of), "focus_url": urls["focus"](of)})
    sources = {}
    for e in edges:
        for s in e["sources"]:
            sources[s] = sources.get(s, 0) + 1
    data = {
        "database": db.name, "nodes": nodes, "more": more,
        "edges": edges, "total": view["total"], "shown": len(nodes), "capped": len(nodes) < view["total"],
        "limit": limit, "method": view["method"], "total_edges": universe, "resolved_total": resolved_total,
        "edge_sources": [{"source": s, "edges": n} for s, n in sorted(sources.items())],
        "focus": focus, "filters": {k: v for k, v in filters.items() if k not in ("limit",)},
        "concepts": [{"id": k, "label": v} for k, v in sorted(labels.items())],
    }
    if layer is not None:
        data["similar_edges"] = layer
    return data


async def similar_json(datasette, db, filters: dict) -> dict:
    """Nodes and similarity links for the similarity graph page, around `paper` (default: the first seed)."""
    from datasette.utils.asgi import NotFound

    paper = filters.get("paper") or filters.get("focus")
    limit = filters.get("limit") or SIMILAR_DEFAULT
    selectable = {k: filters.get(k) for k in ("year_min", "year_max", "hop_max", "concept")}

    def compute(conn):
        target = paper
        if target is None:
            row = (conn.execute("select id from papers where likelihood(is_seed = 1, 0.0001) "
                               "order by pagerank desc, id limit 1").fetchone()
                   or conn.execute("select id from papers where resolved = 1 order by pagerank desc, id limit 1")
                   .fetchone())
            if row is None:
                return "empty"
            target = row[0]
        else:
            target = resolve_paper(conn, target)
            if target is None:
                return None
        view = similar_view(conn, target, selectable, limit)
        concepts = [tuple(r) for r in conn.execute("select id, label from concepts order by id")]
        return target, view, paper_rows(conn, view["ids"]), concepts

    result = await db.execute_fn(compute)
    if result is None:
        raise NotFound(f"No paper {paper} in the knowledge base (give a paper's id, PMID, DOI or PMCID)")
    if result == "empty":
        return {"database": db.name, "nodes": [], "edges": [], "total": 0, "shown": 0, "paper": None, "sources": {}}
    target, view, rows, concepts = result
    labels = dict(concepts)
    urls = _urls(datasette, db)
    nodes = [_node(rows[i], labels, urls) for i in view["ids"] if i in rows]
    return {"database": db.name, "paper": target, "nodes": nodes, "edges": view["edges"], "total": view["total"],
            "shown": len(nodes), "capped": len(nodes) < view["total"], "limit": limit, "sources": view["sources"],
            "filters": {k: v for k, v in filters.items() if k not in ("limit",)},
            "concepts": [{"id": k, "label": v} for k, v in sorted(labels.items())]}
