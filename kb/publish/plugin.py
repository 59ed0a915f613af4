"""kb's Datasette plugin: citation and concept graph pages, a timeline, outbound links and a richer paper page.

Every script and stylesheet is served by this plugin from installed packages (vis-network from pyvis,
plotly.js from plotly) or from kb/publish/static, so the pages work with no internet.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import re
import sqlite3
from collections import Counter, OrderedDict
from pathlib import Path

from datasette import hookimpl
from datasette.database import QueryInterrupted
from datasette.facets import ArrayFacet, ColumnFacet
from datasette.utils import escape_sqlite, path_with_added_args, path_with_removed_args, tilde_encode
from datasette.utils.asgi import NotFound, Response
from markupsafe import Markup

from ..ids import register_sql_functions
from . import completeness  # the citation sources' completeness page
from . import facetpass  # every facet of a page from one query
from . import graphview
from . import pages  # the explorer's pages: paper, concept, search

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

# Node caps: a browser draws a few hundred nodes smoothly; the page says when it shows a top-N.
DEFAULT_NODES = 150
MAX_NODES = 500
PAPER_LIST_CAP = 200  # citers listed on a paper's page (all are counted and one click away)

CONTENT_TYPES = {".js": "application/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
LONG_CACHE = "public, max-age=31536000, immutable"


# ---------------------------------------------------------------------------------------------------------------
# Static files: kb's own and the visualisation libraries, read from their installed packages.

def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def vendor_files() -> dict[str, Path]:
    """Library assets served under /-/kb/publish/static/: vis-network (shipped in pyvis) and plotly.js (shipped in plotly)."""
    files = {}
    pyvis = _package_dir("pyvis")
    if pyvis:
        for folder in sorted((pyvis / "lib").glob("vis-*")):
            for name in ("vis-network.min.js", "vis-network.css"):
                if (folder / name).is_file():
                    files[name] = folder / name
    plotly = _package_dir("plotly")
    if plotly and (plotly / "package_data" / "plotly.min.js").is_file():
        files["plotly.min.js"] = plotly / "package_data" / "plotly.min.js"
    return files


_static_cache: dict[str, tuple[bytes, bytes, str]] = {}


def _static_file(name: str) -> tuple[bytes, bytes, str] | None:
    """(body, gzipped body, version hash) of a static file, read once."""
    if name in _static_cache:
        return _static_cache[name]
    path = vendor_files().get(name)
    if path is None:
        candidate = STATIC_DIR / name
        if candidate.is_file() and candidate.resolve().parent == STATIC_DIR:
            path = candidate
    if path is None:
        return None
    body = path.read_bytes()
    entry = (body, gzip.compress(body, 6, mtime=0), hashlib.sha256(body).hexdigest()[:12])
    _static_cache[name] = entry
    return entry


def static_url(datasette, name: str) -> str:
    """URL of a static file, versioned by content so that it can be cached for a year."""
    entry = _static_file(name)
    version = entry[2] if entry else "missing"
    return datasette.urls.path(f"/-/kb/publish/static/{name}?v={version}")


async def static_view(request):
    name = request.url_vars["path"]
    entry = _static_file(name)
    if entry is None:
        raise NotFound(f"No static file {name}")
    body, gz, version = entry
    headers = {"Cache-Control": LONG_CACHE, "ETag": f'"{version}"', "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == f'"{version}"':
        return Response("", status=304, headers=headers)
    content_type = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = gz
    return Response(body, status=200, headers=headers, content_type=content_type)


# ---------------------------------------------------------------------------------------------------------------
# Finding the knowledge base and reading it.

def kb_database(datasette):
    """The knowledge base: the first attached file database (`kb serve` attaches exactly one)."""
    for name, db in datasette.databases.items():
        if name == "_internal" or db.is_memory:
            continue
        return db
    raise NotFound("No knowledge base database is attached")


async def _require_kb(datasette):
    db = kb_database(datasette)
    tables = set(await db.table_names())
    if not {"papers", "citations"} <= tables:
        raise NotFound(f"Database {db.name} has no papers/citations tables: is it a kb database?")
    return db


def row_url(datasette, db_name: str, table: str, pk) -> str:
    return datasette.urls.row(db_name, table, tilde_encode(str(pk)))


def _int(value, default=None, lo=None, hi=None):
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return default
    if lo is not None:
        number = max(lo, number)
    if hi is not None:
        number = min(hi, number)
    return number


GRAPH_FILTER_NAMES = ("year_min", "year_max", "hop_max", "concept", "focus", "limit", "stubs", "hops", "similar",
                      "paper")


def _graph_filters(request, default_limit: int = DEFAULT_NODES) -> dict:
    args = request.args
    stubs = (args.get("stubs") or "").strip()
    return {
        "year_min": _int(args.get("year_min")),
        "year_max": _int(args.get("year_max")),
        "hop_max": _int(args.get("hop_max"), lo=0),
        "concept": (args.get("concept") or "").strip() or None,
        "focus": (args.get("focus") or "").strip() or None,
        "limit": _int(args.get("limit"), default_limit, 1, MAX_NODES),
        # reference-only works: "shared" (drawn when 2+ drawn papers cite them), "hide", or "all"
        "stubs": stubs if stubs in ("shared", "hide", "all") else "shared",
        "hops": _int(args.get("hops"), 1, 1, 2),
        "similar": (args.get("similar") or "") in ("1", "on", "true", "yes"),
        "paper": (args.get("paper") or "").strip() or None,
    }


def _json_response(data, status=200):
    # orjson: the same compact UTF-8 JSON as json.dumps(ensure_ascii=False, separators=(",", ":")), ~10x faster (a
    # citation graph is ~230 KB)
    return Response(_dumps(data), status=status, content_type="application/json; charset=utf-8",
                    headers={"Cache-Control": "max-age=60", "Access-Control-Allow-Origin": "*"})


def _dumps(data) -> bytes | str:
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)


PAPER_NODE_COLUMNS = ("p.id, p.pmid, p.doi, p.pmcid, p.title, p.journal, p.year, p.is_seed, p.hop, p.resolved, "
                      "p.first_author, p.pagerank, p.citation_count_kb as in_degree, "
                      "p.reference_count_kb as out_degree, p.community")


async def _concept_labels(db) -> dict[str, str]:
    return {row["id"]: row["label"] for row in await db.execute("select id, label from concepts order by id")}


async def citation_graph(datasette, filters: dict) -> dict:
    """Nodes (papers) and edges (citations) for the citation graph page: a connected selection of at most `limit`
    papers, grown from the seeds or the focus (kb.publish.graphview says how)."""
    db = await _require_kb(datasette)
    return await _cached(db, ("citations",) + _filter_key(filters, GRAPH_FILTER_NAMES),
                         lambda: graphview.citation_json(datasette, db, filters))


async def similar_graph(datasette, filters: dict) -> dict:
    """The papers most similar to one paper and the similarity links among them (kb.graphview.similar_json)."""
    db = await _require_kb(datasette)
    return await _cached(db, ("similar",) + _filter_key(filters, GRAPH_FILTER_NAMES),
                         lambda: graphview.similar_json(datasette, db, filters))


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe=":")


# Whole-KB aggregates (timeline, filtered concept graph) are computed once per immutable database and filter
# set, then answered from memory: an immutable database cannot change under a running server.
_CACHE_SIZE = 256
_aggregate_cache: "OrderedDict[tuple, dict]" = OrderedDict()


async def _cached(db, key: tuple, compute):
    if db.is_mutable:
        return await compute()
    full_key = (id(db), db.name) + key
    if full_key in _aggregate_cache:
        _aggregate_cache.move_to_end(full_key)
        return _aggregate_cache[full_key]
    result = await compute()
    _aggregate_cache[full_key] = result
    while len(_aggregate_cache) > _CACHE_SIZE:
        _aggregate_cache.popitem(last=False)
    return result


def _filter_key(filters: dict, names) -> tuple:
    return tuple((name, filters.get(name)) for name in names)


async def concept_graph(datasette, filters: dict) -> dict:
    """Concepts (sized by paper count) and their co-occurrence edges (weighted by association strength)."""
    db = await _require_kb(datasette)
    return await _cached(db, ("concepts",) + _filter_key(filters, ("year_min", "year_max", "hop_max")),
                         lambda: _concept_graph(datasette, db, filters))


async def _concept_graph(datasette, db, filters: dict) -> dict:
    cond, params = graphview.filter_sql({k: filters.get(k) for k in ("year_min", "year_max", "hop_max")})
    concepts = [dict(r) for r in await db.execute(
        "select id, label, description, paper_count from concepts order by id")]
    if cond:
        # Filtered view: recount papers and co-occurrences among the papers that pass the filters, with the
        # build's measure (observed / expected co-occurrence, N = resolved papers passing the filters).
        by_paper: dict[str, list[str]] = {}
        for paper_id, concept_id in await db.execute(
                f"""select pc.paper_id, pc.concept_id from papers p join paper_concepts pc on pc.paper_id = p.id
                    where 1{cond}""", params):
            by_paper.setdefault(paper_id, []).append(concept_id)
        counts, pair_counts = Counter(), Counter()
        for members in by_paper.values():
            members.sort()
            for i, a in enumerate(members):
                counts[a] += 1
                for b in members[i + 1:]:
                    pair_counts[(a, b)] += 1
        # N counts resolved papers only: stubs carry years parsed from their reference text but no concepts.
        total = (await db.execute(f"select count(*) from papers p where p.resolved = 1{cond}", params)).first()[0]
        edges = []
        for (a, b), n in sorted(pair_counts.items()):
            ca, cb = counts.get(a, 0), counts.get(b, 0)
            strength = round(total * n / (ca * cb), 6) if ca and cb else 0.0
            edges.append({"from": a, "to": b, "papers": n, "strength": strength})
    else:
        counts = {c["id"]: c["paper_count"] or 0 for c in concepts}
        edges = [{"from": r["concept_a"], "to": r["concept_b"], "papers": r["papers"], "strength": r["strength"]}
                 for r in await db.execute(
                     "select concept_a, concept_b, papers, strength from concept_edges order by concept_a, concept_b")]
    max_strength = max([e["strength"] or 0 for e in edges] or [0]) or 1
    for e in edges:
        e["weight"] = round((e["strength"] or 0) / max_strength, 4)
    community = _communities([c["id"] for c in concepts], edges)
    nodes = [{"id": c["id"], "label": c["label"], "description": c["description"], "papers": counts.get(c["id"], 0),
              "community": community.get(c["id"]),
              "url": row_url(datasette, db.name, "concepts", c["id"]),
              "papers_url": datasette.urls.path("/-/kb/citations?concept=" + _q(c["id"]))}
             for c in concepts]
    return {"database": db.name, "nodes": nodes, "edges": edges,
            "filters": {k: v for k, v in filters.items() if k in ("year_min", "year_max", "hop_max")}}


def _communities(ids, edges) -> dict:
    """Louvain communities of the (small) concept graph, seeded so that colours are stable."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(ids)
    for e in edges:
        if e["papers"]:
            graph.add_edge(e["from"], e["to"], weight=e["papers"])
    result = {}
    communities = nx.community.louvain_communities(graph, weight="weight", seed=42) if graph.number_of_nodes() else []
    for number, members in enumerate(sorted(communities, key=lambda c: (-len(c), sorted(c)))):
        for member in members:
            result[member] = number
    return result


async def timeline(datasette, filters: dict) -> dict:
    """Papers per year per concept (and in total) for the timeline chart."""
    db = await _require_kb(datasette)
    return await _cached(db, ("timeline",) + _filter_key(filters, ("year_min", "year_max", "hop_max")),
                         lambda: _timeline(db, filters))


async def _timeline(db, filters: dict) -> dict:
    labels = await _concept_labels(db)
    cond, params = graphview.filter_sql({k: filters.get(k) for k in ("year_min", "year_max", "hop_max")})
    series = {}
    for r in await db.execute(
            f"""select pc.concept_id, p.year, count(*) as n from paper_concepts pc join papers p on p.id = pc.paper_id
                where p.year is not null and p.resolved = 1{cond}
                group by pc.concept_id, p.year order by pc.concept_id, p.year""", params):
        series.setdefault(r["concept_id"], []).append([r["year"], r["n"]])
    totals = [[r["year"], r["n"]] for r in await db.execute(
        # papers with full records: the years of reference-only works come from citation text, and they are many
        f"select p.year, count(*) as n from papers p where p.year is not null and p.resolved = 1{cond} "
        "group by p.year order by p.year",
        params)]
    # Every year of the span, zeros included, so that lines do not bridge empty years.
    years = range(totals[0][0], totals[-1][0] + 1) if totals else range(0)
    filled = []
    for cid in sorted(labels):
        counts = dict(series.get(cid, []))
        filled.append({"concept": cid, "label": labels[cid], "points": [[y, counts.get(y, 0)] for y in years]})
    return {"database": db.name, "total": totals, "series": filled}


async def paper_details(datasette, paper_id: str) -> dict | None:
    """A paper with its references, citers, concepts and MeSH headings, for the paper page section: its ~12 queries
    in one trip to Datasette's query threads (kb.publish.pages.in_one_trip)."""
    db = await _require_kb(datasette)
    return await pages.in_one_trip(db, lambda conn_db: _paper_details(datasette, conn_db, paper_id))


async def _paper_details(datasette, db, paper_id: str) -> dict | None:
    paper = (await db.execute("select id, title, year, is_seed from papers where id = :id", {"id": paper_id})).first()
    if paper is None:
        return None

    def link(r):
        return {"id": r["id"], "title": r["title"], "year": r["year"], "journal": r["journal"],
                "url": row_url(datasette, db.name, "papers", r["id"])}

    references, unresolved = [], []
    for r in await db.execute(
            """select c.cited_id as id, c.raw, c.source, p.title, p.year, p.journal, p.resolved from citations c
               join papers p on p.id = c.cited_id where c.citing_id = :id
               order by p.year is null, p.year, c.cited_id""", {"id": paper_id}):
        if r["resolved"]:
            references.append(dict(link(r), source=r["source"]))
        else:
            unresolved.append(dict(link(r), raw=r["raw"] or r["title"] or r["id"], source=r["source"]))
    # A much-cited paper can have thousands of citers: list the most central, count them all.
    citers = [dict(link(r), source=r["source"]) for r in await db.execute(
        """select * from (select p.id, p.title, p.year, p.journal, c.source, p.pagerank from citations c
                          join papers p on p.id = c.citing_id where c.cited_id = :id
                          order by p.pagerank desc, p.id limit :cap)
           order by year, id""", {"id": paper_id, "cap": PAPER_LIST_CAP})]
    citer_count = (await db.execute("select count(*) from citations where cited_id = :id", {"id": paper_id})).first()[0]
    concepts = [{"id": r["concept_id"], "label": r["label"], "evidence": r["evidence"], "score": r["score"],
                 "url": row_url(datasette, db.name, "concepts", r["concept_id"])}
                for r in await db.execute(
                    """select pc.concept_id, c.label, pc.evidence, pc.score from paper_concepts pc
                       join concepts c on c.id = pc.concept_id where pc.paper_id = :id
                       order by pc.score desc, pc.concept_id""", {"id": paper_id})]
    mesh = [{"ui": r["descriptor_ui"], "name": r["name"], "major": bool(r["major"]), "qualifiers": r["qualifiers"],
             "url": row_url(datasette, db.name, "mesh_descriptors", r["descriptor_ui"])}
            for r in await db.execute(
                """select pm.descriptor_ui, d.name, pm.major, pm.qualifiers from paper_mesh pm
                   left join mesh_descriptors d on d.ui = pm.descriptor_ui where pm.paper_id = :id
                   order by pm.major desc, d.name""", {"id": paper_id})]
    return {"id": paper["id"], "title": paper["title"], "year": paper["year"], "is_seed": bool(paper["is_seed"]),
            "references": references, "unresolved": unresolved, "citers": citers, "citer_count": citer_count,
            "citers_url": datasette.urls.path(f"/{tilde_encode(db.name)}/citing_papers?paper=" + _q(paper["id"])),
            "concepts": concepts, "mesh": mesh,
            "focus_url": datasette.urls.path("/-/kb/citations?focus=" + _q(paper["id"])),
            **await pages.paper_extras(datasette, db, paper_id)}  # title, authors, links, similar, prior works


# ---------------------------------------------------------------------------------------------------------------
# Routes.

async def _page(datasette, request, template: str, **context):
    db = kb_database(datasette)
    context.update({"kb_db": db.name, "kb_static": lambda name: static_url(datasette, name),
                    "kb_nav": _nav_links(datasette)})
    return Response.html(await datasette.render_template(template, context, request=request))


def _nav_links(datasette) -> list[dict]:
    return [{"href": datasette.urls.path("/-/kb/citations"), "label": "Citation graph"},
            {"href": datasette.urls.path("/-/kb/concepts"), "label": "Concept graph"},
            {"href": datasette.urls.path("/-/kb/similar"), "label": "Similar papers"},
            {"href": datasette.urls.path("/-/kb/timeline"), "label": "Timeline"},
            {"href": datasette.urls.path("/-/kb/completeness"), "label": "Completeness by source"}]


async def _focus_paper(db, text: str | None):
    """(papers.id, title, "Author Year" label) of a paper the user named by id, PMID, DOI, PMCID or URL; 404 if none."""
    if not text:
        return None

    def find(conn):
        pid = graphview.resolve_paper(conn, text)
        if pid is None:
            return None
        row = conn.execute("select title, first_author, year from papers where id = ?", (pid,)).fetchone()
        return pid, row[0], graphview.paper_label(row[1], row[2], row[0])

    found = await db.execute_fn(find)
    if found is None:
        raise NotFound(f"No paper {text} in the knowledge base (give a paper's id, PMID, DOI or PMCID)")
    return found


async def _spans(db) -> dict:
    """The year span and the largest hop of the papers, for the graph pages' controls: each from its index (a
    min() and a max() in one select would read the whole year index: 72 ms at 1M papers)."""
    low, high, max_hop = (await db.execute("select (select min(year) from papers), (select max(year) from papers), "
                                           "(select max(hop) from papers)")).first()
    return {"year_span": (low, high), "max_hop": max_hop}


async def _graph_page_context(db) -> dict:
    concepts = [dict(r) for r in await db.execute("select id, label from concepts order by label")]
    return {**await _spans(db), "concepts": concepts, "max_nodes": MAX_NODES}


async def citations_page(datasette, request):
    filters = _graph_filters(request)
    db = await _require_kb(datasette)
    focus = await _focus_paper(db, filters["focus"])
    return await _page(datasette, request, "kb_citations.html", filters=filters,
                       focus_id=focus[0] if focus else None, focus_title=focus[1] if focus else None,
                       focus_label=focus[2] if focus else None,
                       data_url=datasette.urls.path("/-/kb/citations.json"), **await _graph_page_context(db))


async def similar_page(datasette, request):
    filters = _graph_filters(request, graphview.SIMILAR_DEFAULT)
    db = await _require_kb(datasette)
    paper = await _focus_paper(db, filters["paper"] or filters["focus"])
    return await _page(datasette, request, "kb_similar.html", filters=filters,
                       paper_id=paper[0] if paper else None, paper_title=paper[1] if paper else None,
                       paper_label=paper[2] if paper else None,
                       data_url=datasette.urls.path("/-/kb/similar.json"), **await _graph_page_context(db))


async def similar_json(datasette, request):
    return _json_response(await similar_graph(datasette, _graph_filters(request, graphview.SIMILAR_DEFAULT)))


async def citations_json(datasette, request):
    return _json_response(await citation_graph(datasette, _graph_filters(request)))


async def concepts_page(datasette, request):
    db = await _require_kb(datasette)
    return await _page(datasette, request, "kb_concepts.html", filters=_graph_filters(request), **await _spans(db),
                       data_url=datasette.urls.path("/-/kb/concepts.json"))


async def concepts_json(datasette, request):
    return _json_response(await concept_graph(datasette, _graph_filters(request)))


async def timeline_page(datasette, request):
    await _require_kb(datasette)
    return await _page(datasette, request, "kb_timeline.html", filters=_graph_filters(request),
                       data_url=datasette.urls.path("/-/kb/timeline.json"))


async def timeline_json(datasette, request):
    return _json_response(await timeline(datasette, _graph_filters(request)))


async def paper_json(datasette, request):
    paper_id = (request.args.get("id") or "").strip()
    if not paper_id:
        return _json_response({"error": "give ?id=pmid:N (a papers.id)"}, status=400)
    details = await paper_details(datasette, paper_id)
    if details is None:
        return _json_response({"error": f"no paper {paper_id}"}, status=404)
    return _json_response(details)


@hookimpl
def register_output_renderer(datasette):
    """.bib, .ris and .csljson beside .json and .csv on every page whose rows name papers (kb.export_view)."""
    from .export_view import output_renderers

    return output_renderers()


@hookimpl
def register_routes():
    return [
        (r"^/-/kb/publish/static/(?P<path>[A-Za-z0-9_][A-Za-z0-9_.-]*)$", static_view),
        (r"^/-/kb/citations$", citations_page),
        (r"^/-/kb/citations\.json$", citations_json),
        (r"^/-/kb/concepts$", concepts_page),
        (r"^/-/kb/concepts\.json$", concepts_json),
        (r"^/-/kb/timeline$", timeline_page),
        (r"^/-/kb/timeline\.json$", timeline_json),
        (r"^/-/kb/similar$", similar_page),
        (r"^/-/kb/similar\.json$", similar_json),
        (r"^/-/kb/paper\.json$", paper_json),
        (r"^/-/kb/search(\.json)?$", pages.search_page),
        (r"^/-/kb/completeness$", completeness.completeness_page),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Templates, menu, cells and the paper page.

@hookimpl
def prepare_jinja2_environment(env):
    """Put kb/publish/templates before Datasette's defaults (a module-level plugin's templates are not found on its own)."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    loader = env.loader
    if isinstance(loader, ChoiceLoader):
        for sub in loader.loaders:
            if isinstance(sub, FileSystemLoader) and str(TEMPLATES_DIR) not in sub.searchpath:
                # Datasette's own templates come last in this loader; a --template-dir stays first.
                sub.searchpath.insert(max(len(sub.searchpath) - 1, 0), str(TEMPLATES_DIR))
                return
    env.loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES_DIR)), loader])


@hookimpl
def menu_links(datasette):
    return _nav_links(datasette)


@hookimpl
def extra_css_urls(datasette):
    return [static_url(datasette, "kb.css")]


PMID_RE = re.compile(r"^\d{1,9}$")
PMCID_RE = re.compile(r"^PMC\d{1,9}$", re.I)


@hookimpl
def handle_exception(datasette, request, exception):
    """Not-found and other client-error pages keep kb's navigation and search box (kb.pages.error_page)."""

    async def inner():
        return await pages.error_page(datasette, request, exception)

    return inner


@hookimpl
def prepare_connection(conn):
    """kb_ref(text, kind): the canned queries accept PMIDs, DOIs, PMCIDs and links wherever a paper is asked for."""
    register_sql_functions(conn)
    # Read database pages straight from the operating system's cache (memory-mapped) instead of copying each into
    # SQLite's own 2 MB cache: a search's facets read thousands of rows (~30 % faster at 100,000 papers). SQLite
    # caps the size at its compile-time maximum; kb build replaces a database by renaming, never truncating it.
    conn.execute("PRAGMA mmap_size = 17179869184")


@hookimpl
def render_cell(value, column, table=None, database=None, datasette=None):
    """PMIDs link to PubMed, DOIs to doi.org, PMCIDs to PubMed Central, paper keys in query results to the paper's
    page (kb.publish.pages); everything escaped."""
    if value is None or not isinstance(value, (str, int)) or isinstance(value, bool):
        return None
    text = str(value).strip()
    if column == "pmid" and PMID_RE.match(text):
        return Markup('<a class="kb-out" href="https://pubmed.ncbi.nlm.nih.gov/{0}/" title="Open in PubMed">{0}</a>'
                      ).format(text)
    if column == "doi" and text.lower().startswith("10."):
        from urllib.parse import quote

        return Markup('<a class="kb-out" href="https://doi.org/{0}" title="Resolve the DOI">{1}</a>').format(
            quote(text, safe="/:;()._-<>[]"), text)
    if column == "pmcid" and PMCID_RE.match(text):
        return Markup('<a class="kb-out" href="https://www.ncbi.nlm.nih.gov/pmc/articles/{0}/" '
                      'title="Open in PubMed Central">{0}</a>').format(text.upper())
    return pages.render_cell(value, column, table, database, datasette)


@hookimpl
def extra_template_vars(template, database, table, view_name, request, datasette):
    """Data for kb's template additions: graph links everywhere, and the paper section on a paper's page."""

    async def inner():
        result = {"kb_nav": _nav_links(datasette)}
        if view_name == "row" and table == "papers" and request is not None:
            pks = request.url_vars.get("pks")
            if pks and database == kb_database(datasette).name:
                from datasette.utils import urlsafe_components

                try:
                    result["kb_paper"] = await paper_details(datasette, urlsafe_components(pks)[0])
                except (NotFound, sqlite3.OperationalError):
                    pass  # not a kb database after all: the row page stays Datasette's own
        try:
            db = kb_database(datasette)
            if database in (None, db.name) and {"papers", "concepts"} <= set(await db.table_names()):
                result.update(await pages.template_vars(datasette, db, view_name, table, request))
        except NotFound:
            pass
        return result

    return inner


READ_METHODS = {"GET", "HEAD", "OPTIONS"}


@hookimpl
def asgi_wrapper(datasette):
    """Refuse every request that could write (POST, PUT, PATCH, DELETE) when kb serves its database read-only; answer
    repeated GETs of an immutable database from kb.publish.respcache when `kb serve` gave the instance a cache."""

    def wrap(app):
        from . import respcache

        app = respcache.wrap(app, datasette)

        async def read_only_app(scope, receive, send):
            if (scope.get("type") == "http" and getattr(datasette, "_kb_read_only", False)
                    and scope.get("method", "GET").upper() not in READ_METHODS):
                body = b"This knowledge base is read-only: only GET and HEAD requests are served.\n"
                await send({"type": "http.response.start", "status": 405,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET, HEAD")]})
                await send({"type": "http.response.body", "body": body})
                return
            await app(scope, receive, send)

        return read_only_app

    return wrap


# ---------------------------------------------------------------------------------------------------------------
# Facets for a large, immutable knowledge base.

UNFILTERED_FACET_LIMIT_MS = 20000
_facet_cache: "OrderedDict[tuple, list]" = OrderedDict()


class CachedFacetMixin:
    """Facet counts remembered per (database, SQL, parameters) when the database is immutable.

    Counting every paper takes tens to hundreds of milliseconds per facet on 100,000 papers; an immutable
    database cannot change, so each distinct filter pays it once. Facets of the unfiltered table are computed
    without Datasette's facet time limit (once per process: `kb serve` does it before it starts listening).
    """

    def _facet_key(self, db, sql: str) -> tuple:
        params = self.params if isinstance(self.params, dict) else list(self.params or [])
        return (id(db), self.database, sql, json.dumps(params, sort_keys=True, default=str))

    async def counted_rows(self, sql: str, all_facets: bool = False) -> list[tuple]:
        db = self.ds.get_database(self.database)
        params = self.params if isinstance(self.params, dict) else list(self.params or [])
        unfiltered = not params and " where " not in self.sql.lower()
        limit = UNFILTERED_FACET_LIMIT_MS if unfiltered else self.ds.setting("facet_time_limit_ms")
        key = self._facet_key(db, sql)
        if not db.is_mutable and key in _facet_cache:
            _facet_cache.move_to_end(key)
            return _facet_cache[key]
        if db.is_mutable:
            result = await self.ds.execute(self.database, sql, self.params, truncate=False, custom_time_limit=limit)
            return [(r["value"], r["count"]) for r in result.rows]

        def store(facet_sql, rows):
            _facet_cache[self._facet_key(db, facet_sql)] = rows
            while len(_facet_cache) > _CACHE_SIZE:
                _facet_cache.popitem(last=False)

        if unfiltered:  # once per process, at start: each facet alone (indexes serve the column facets), unhurried
            rows = await facetpass.execute_long(self.ds, self.database, sql, self.params, limit)
            store(sql, rows)
            return rows
        # kb/publish/facetpass.py: one query for every facet of the page (a search is then run once, not per facet)
        if all_facets and await facetpass.count_all(
                self, [CachedColumnFacet, ListFacet], limit,
                lambda facet_sql: self._facet_key(db, facet_sql) in _facet_cache, store) and key in _facet_cache:
            return _facet_cache[key]
        try:
            result = await self.ds.execute(self.database, sql, self.params, truncate=False, custom_time_limit=limit)
        except QueryInterrupted:
            facetpass.count_later(key, self.ds, self.database, facetpass.fetch(sql, self.params),
                                  lambda rows: store(sql, rows), self.request)
            raise
        rows = [(r["value"], r["count"]) for r in result.rows]
        store(sql, rows)
        return rows

    async def suggest(self):
        return []

    async def facet_results(self):
        facet_results, facets_timed_out = [], []
        facet_size = self.get_facet_size()
        pairs = self.get_querystring_pairs()
        # Datasette's URL strings (PrefixedUrlString) call dir(str) on every method access: urljoin over them cost
        # ~0.2 ms per facet value, 10 ms per search page; plain str gives the same URL.
        def absolute(path) -> str:
            return self.ds.absolute_url(self.request, str(self.ds.urls.path(path)))

        for source_and_config in self.get_configs():
            config = source_and_config["config"]
            column = config.get("column") or config["simple"]
            try:
                rows = await self.counted_rows(self.facet_sql(escape_sqlite(column), facet_size + 1), all_facets=True)
            except QueryInterrupted:
                facets_timed_out.append(column)
                # being counted in the background: this page must not be kept by caches (kb.publish.respcache)
                self.request.scope.get("kb.response", {})["incomplete"] = True
                continue
            rows_shown = rows[:facet_size]
            labels = await self.labels(column, [value for value, _ in rows_shown])
            values = []
            for value, count in rows_shown:
                arg = self.filter_arg(column)
                selected = (arg, str(value)) in pairs
                if selected:
                    toggle = path_with_removed_args(self.request, {arg: str(value)})
                else:
                    toggle = path_with_added_args(self.request, {arg: value})
                values.append({"value": value, "label": labels.get(value, value), "count": count,
                               "selected": selected,
                               "toggle_url": absolute(toggle)})
            facet_results.append({
                "name": column, "type": self.type, "results": values,
                "hideable": source_and_config["source"] != "metadata",
                "toggle_url": self.ds.urls.path(path_with_removed_args(self.request, {f"_facet_{self.type}": column})),
                "truncated": len(rows) > facet_size,
            })
        return facet_results, facets_timed_out


class CachedColumnFacet(CachedFacetMixin, ColumnFacet):
    """Datasette's column facet (foreign keys shown by their labels), cached. In metadata.yml: ``- kb_column: col``."""

    type = "kb_column"
    kind = "column"  # kb/publish/facetpass.py counts it like facet_sql below

    def facet_sql(self, col: str, limit: int) -> str:
        return (f"select {col} as value, count(*) as count from ({self.sql}) where {col} is not null "
                f"group by {col} order by count desc, value limit {limit}")

    def filter_arg(self, column: str) -> str:
        return f"{column}__exact" if column.startswith("_") else column

    async def labels(self, column, values) -> dict:
        if not self.table or not values:
            return {}
        expanded = await self.ds.expand_foreign_keys(self.database, self.table, column, values)
        return {value: label for (col, value), label in expanded.items()}


class ListFacet(CachedFacetMixin, ArrayFacet):
    """Datasette's array facet for JSON lists that hold each value once (as kb's build writes them), cached.

    The built-in array facet de-duplicates every (value, whole row) pair, which takes seconds on 100,000
    papers; this one counts list items directly. In metadata.yml: ``- kb_list: column``; choosing a value
    filters with ``column__arraycontains``.
    """

    type = "kb_list"
    kind = "list"  # kb/publish/facetpass.py counts it like facet_sql below

    def facet_sql(self, col: str, limit: int) -> str:
        return (f"select j.value as value, count(*) as count from ({self.sql}) as kb_rows, "
                f"json_each(kb_rows.{col}) as j where json_valid(kb_rows.{col}) "
                f"group by j.value order by count(*) desc, j.value limit {limit}")

    def filter_arg(self, column: str) -> str:
        return f"{column}__arraycontains"

    async def labels(self, column, values) -> dict:
        return {}


@hookimpl
def register_facet_classes():
    return [CachedColumnFacet, ListFacet]


# ---------------------------------------------------------------------------------------------------------------
# The papers table's HTML page reads and renders its readable columns only.

def _readable_columns(datasette, request, table_columns, pks) -> list[str] | None:
    """The columns the papers table's HTML page selects when the visitor chose none (no ?_col, ?_nocol or
    ?_kb_cols): the primary key and kb.publish.pages.PAPER_DISPLAY_COLUMNS, in table order. None elsewhere
    (other tables, JSON, CSV and the other formats, a database that is not the knowledge base)."""
    if request is None or request.url_vars.get("format") is not None:
        return None
    args = request.args
    if "_col" in args or "_nocol" in args or "_kb_cols" in args:
        return None
    from datasette.utils import tilde_decode

    if tilde_decode(request.url_vars.get("table") or "") != "papers":
        return None
    try:
        db = kb_database(datasette)
    except NotFound:
        return None
    if tilde_decode(request.url_vars.get("database") or "") != db.route:
        return None
    wanted = set(pages.PAPER_DISPLAY_COLUMNS) | set(pks)
    if not wanted <= set(table_columns):
        return None
    return [c for c in table_columns if c in wanted]


def _patch_table_columns() -> None:
    """Datasette 0.65 selects, renders (a render_cell call per cell) and expands the foreign keys of every column of a
    table page; the papers table has ~40, of which the page shows 12 (the rest used to be hidden by CSS). Select only
    those on the HTML page: the same page, less than half the rendering time. JSON and CSV keep every column."""
    from datasette.views.table import TableView

    original = TableView.columns_to_select
    if getattr(original, "_kb_readable", False):
        return

    async def columns_to_select(self, table_columns, pks, request):
        readable = _readable_columns(self.ds, request, table_columns, pks)
        if readable is not None:
            return readable
        return await original(self, table_columns, pks, request)

    columns_to_select._kb_readable = True
    TableView.columns_to_select = columns_to_select


@hookimpl
def startup(datasette):
    _patch_table_columns()  # here rather than at import: the plugin is imported while datasette.views loads
