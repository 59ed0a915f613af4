"""The explorer's pages beside Datasette's own: the paper page's data, the concept page, the start page's
search, identifier resolution for canned queries, and the notes that explain an empty result.

kb/publish/plugin.py keeps the hook implementations and calls in here; every query is indexed and capped, so the pages
stay fast on a knowledge base of 100,000 papers.
"""

from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import quote

from datasette.utils import tilde_encode
from datasette.utils.asgi import Response
from markupsafe import Markup


LIST_CAP = 20            # similar papers, prior and derivative works shown on a paper's page
NEIGHBOURHOOD_CAP = 300  # references and citers (the most central) read for prior/derivative works
CONCEPT_PAPERS_CAP = 100
SEARCH_CAP = 50
ABSTRACT_CHARS = 160
LIST_CHARS = 140

# Columns of canned queries and tables that hold a papers.id, linked to the paper's page.
PAPER_COLUMNS = {"paper", "paper_id", "citing_id", "cited_id", "paper_a", "paper_b", "similar_id", "seed_id"}
PAPER_KEY_RE = re.compile(r"^(pmid|doi|ref|pmcid|isbn|book|local):\S", re.I)
JSON_LIST_COLUMNS = {"mesh_major", "mesh_terms", "publication_types", "keywords", "concepts", "synonyms",
                     "patterns", "mesh_uis", "tree_prefixes", "tree_numbers", "sources", "qualifiers",
                     "affiliations", "seeds"}
# The papers table shows these by default; the rest (search text, URLs, graph internals) one click away.
PAPER_DISPLAY_COLUMNS = ("id", "title", "authors_display", "journal", "year", "pmid", "doi", "resolved", "concepts",
                         "citation_count_kb", "pagerank", "abstract")
HOWTO = "a PMID, a DOI, a PMCID, a PubMed, doi.org or PMC link, or a key from the papers table (pmid:…, doi:…)"


# ---------------------------------------------------------------------------------------------------------------
# Identifiers typed by people, as SQL functions and in Python.



# The SQL fragment the canned queries use: the papers.id that what was typed into :name names, if any.
def resolve_sql(name: str) -> str:
    return (f"select id from papers where id = trim(:{name})"
            f" union all select id from papers where pmid = kb_ref(:{name}, 'pmid')"
            f" union all select id from papers where doi = kb_ref(:{name}, 'doi')"
            f" union all select id from papers where id = 'doi:' || kb_ref(:{name}, 'doi')"
            f" union all select id from papers where pmcid = kb_ref(:{name}, 'pmcid')")


async def resolve_paper(db, text: str) -> str | None:
    """The papers.id named by a key, PMID, DOI, PMCID or URL, or None when no paper matches."""
    text = (text or "").strip()
    if not text:
        return None
    row = (await db.execute(resolve_sql("q") + " limit 1", {"q": text})).first()
    return row[0] if row else None


def paper_url(datasette, db_name: str, paper_id) -> str:
    return datasette.urls.row(db_name, "papers", tilde_encode(str(paper_id)))


def concept_url(datasette, db_name: str, concept_id) -> str:
    return datasette.urls.row(db_name, "concepts", tilde_encode(str(concept_id)))


# ---------------------------------------------------------------------------------------------------------------
# Cells.

def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return (cut if len(cut) > limit * 0.6 else text[:limit]).rstrip(" ,;.") + "…"


def _is_kb(datasette, database) -> bool:
    """Whether `database` is the knowledge base kb serves (another attached database keeps Datasette's cells)."""
    from .plugin import kb_database

    try:
        return kb_database(datasette).name == database
    except Exception:
        return False


def render_cell(value, column, table, database, datasette):
    """Paper keys link to the paper's page; abstracts are shortened and JSON lists read as lists in tables."""
    if not isinstance(value, str) or datasette is None:
        return None
    if column in PAPER_COLUMNS and table is None and PAPER_KEY_RE.match(value) and _is_kb(datasette, database):
        # Canned queries (table pages link foreign keys themselves).
        return Markup('<a class="kb-paper-link" href="{0}">{1}</a>').format(
            paper_url(datasette, database, value), value)
    if table == "papers" and column == "abstract" and len(value) > ABSTRACT_CHARS:
        return Markup('<span class="kb-short" title="shortened: the paper\'s page has it all">{0}</span>').format(
            _shorten(value, ABSTRACT_CHARS))
    if column in JSON_LIST_COLUMNS and value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError:
            return None
        if not isinstance(items, list) or not all(isinstance(i, (str, int, float)) for i in items):
            return None
        text = "; ".join(str(i) for i in items)
        return Markup('<span class="kb-list">{0}</span>').format(_shorten(text, LIST_CHARS) if table else text)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Several queries in one trip to the query threads.

class ThreadDB:
    """The knowledge base as seen from inside one of Datasette's query threads: execute() runs at once on that
    thread's connection. A page that asks a dozen small questions then waits for a query thread once, not a dozen
    times: under 20 concurrent clients each wait is behind the other requests' queries."""

    def __init__(self, db, conn):
        self.db, self.conn, self.name, self.is_mutable = db, conn, db.name, db.is_mutable

    async def execute(self, sql, params=None):
        from datasette.database import Results

        cursor = self.conn.execute(sql, params if params is not None else {})
        return Results(cursor.fetchall(), False, cursor.description)

    async def table_names(self):  # as Database.table_names
        return [r[0] for r in self.conn.execute("select name from sqlite_master where type='table'")]


async def in_one_trip(db, make):
    """Run the coroutine make(ThreadDB) to its end inside one query thread, with Datasette's SQL time limit (a query
    past it raises sqlite3.OperationalError("interrupted")). The coroutine may await ThreadDB's methods only."""
    from datasette import database as datasette_database

    limit = db.ds.setting("sql_time_limit_ms")

    def run(conn):
        with datasette_database.sqlite_timelimit(conn, limit):
            coroutine = make(ThreadDB(db, conn))
            try:
                coroutine.send(None)
            except StopIteration as done:
                return done.value
            coroutine.close()
            raise RuntimeError("in_one_trip: the coroutine waited on something other than ThreadDB")

    return await db.execute_fn(run)


# ---------------------------------------------------------------------------------------------------------------
# The paper page.

async def _tables(db) -> set:
    return set(await db.table_names())


async def paper_extras(datasette, db, paper_id: str) -> dict:
    """Everything the paper page shows above the neighbourhood lists (title, authors, journal, links), and
    the similar papers, prior works and derivative works of its neighbourhood."""
    p = (await db.execute("select * from papers where id = :id", {"id": paper_id})).first()
    if p is None:
        return {}
    p = dict(p)
    authors = [dict(r) for r in await db.execute(
        """select a.id, coalesce(a.name, a.collective, a.id) as name, a.orcid from paper_authors pa
           join authors a on a.id = pa.author_id where pa.paper_id = :id order by pa.position""", {"id": paper_id})]
    for a in authors:
        a["url"] = datasette.urls.row(db.name, "authors", tilde_encode(str(a["id"])))
    links = []
    if p.get("pmid"):
        links.append(("PubMed", f"https://pubmed.ncbi.nlm.nih.gov/{p['pmid']}/"))
    if p.get("doi"):
        links.append(("DOI " + p["doi"], "https://doi.org/" + p["doi"]))
    if p.get("pmcid"):
        links.append(("PMC full text", f"https://www.ncbi.nlm.nih.gov/pmc/articles/{p['pmcid']}/"))
    where = ", ".join(str(x) for x in (
        p.get("journal") or p.get("journal_iso"), p.get("year"),
        (f"{p['volume']}" + (f"({p['issue']})" if p.get("issue") else "")) if p.get("volume") else None,
        p.get("pages")) if x)
    tables = await _tables(db)
    return {
        "paper": p, "authors": authors, "authors_text": p.get("authors_display"), "where": where, "links": links,
        "stub": not p.get("resolved"), "abstract": p.get("abstract"),
        "similar": await _similar(datasette, db, paper_id, tables),
        "pubmed_similar": await _pubmed_similar(datasette, db, paper_id, tables),
        **await _prior_and_derivative(datasette, db, paper_id),
    }


def _link(datasette, db, r, **extra) -> dict:
    return {"id": r["id"], "title": r["title"] or r["id"], "year": r["year"], "journal": r["journal"],
            "stub": not r["resolved"], "url": paper_url(datasette, db.name, r["id"]), **extra}


async def _similar(datasette, db, paper_id: str, tables: set) -> list:
    if "paper_similarity" not in tables:
        return []
    rows = await db.execute(
        """select p.id, p.title, p.year, p.journal, p.resolved, s.cocitations, s.coupling from (
               select paper_b as other, cocitations, coupling from paper_similarity where paper_a = :id
               union all
               select paper_a, cocitations, coupling from paper_similarity where paper_b = :id) s
           join papers p on p.id = s.other
           order by s.cocitations + s.coupling desc, p.resolved desc, p.pagerank desc, p.id limit :cap""",
        {"id": paper_id, "cap": LIST_CAP})
    def why(r) -> str:
        parts = []
        if r["cocitations"]:
            parts.append(f"cited together {r['cocitations']}×")
        if r["coupling"]:
            parts.append(f"{r['coupling']} shared reference{'s' if r['coupling'] != 1 else ''}")
        return ", ".join(parts)

    return [_link(datasette, db, r, cocitations=r["cocitations"], coupling=r["coupling"], why=why(r)) for r in rows]


async def _pubmed_similar(datasette, db, paper_id: str, tables: set) -> list:
    """PubMed's similar articles (elink pubmed_pubmed, `kb fetch --similar`), when they were fetched."""
    if "similar_articles" not in tables:
        return []
    try:
        rows = await db.execute(
            """select p.id, p.title, p.year, p.journal, p.resolved, s.score, s.rank from similar_articles s
               join papers p on p.id = s.similar_id where s.paper_id = :id
               order by s.rank, s.score desc, p.id limit :cap""", {"id": paper_id, "cap": LIST_CAP})
    except sqlite3.OperationalError:
        return []  # an older layout of the table: the page does without it
    return [_link(datasette, db, r, score=r["score"]) for r in rows]


async def _prior_and_derivative(datasette, db, paper_id: str) -> dict:
    """Prior works: papers most cited by the paper's references and citers; derivative works: papers citing
    most of them (as Connected Papers shows). The neighbourhood is capped at its most central papers."""
    params = {"id": paper_id, "nb_cap": NEIGHBOURHOOD_CAP, "cap": LIST_CAP}
    neighbourhood = """
        nb(id) as (select p.id from papers p where p.id in (
                       select cited_id from citations where citing_id = :id
                       union select citing_id from citations where cited_id = :id)
                   order by p.pagerank desc, p.id limit :nb_cap)"""
    prior = await db.execute(
        f"""with {neighbourhood},
           hits(id, n) as (select c.cited_id, count(*) from nb join citations c on c.citing_id = nb.id
                           where c.cited_id != :id group by c.cited_id having count(*) >= 2)
           select p.id, p.title, p.year, p.journal, p.resolved, hits.n from hits join papers p on p.id = hits.id
           order by hits.n desc, p.resolved desc, p.pagerank desc, p.id limit :cap""", params)
    derivative = await db.execute(
        f"""with {neighbourhood},
           hits(id, n) as (select c.citing_id, count(*) from nb join citations c on c.cited_id = nb.id
                           where c.citing_id != :id group by c.citing_id having count(*) >= 2)
           select p.id, p.title, p.year, p.journal, p.resolved, hits.n from hits join papers p on p.id = hits.id
           order by hits.n desc, p.year desc, p.pagerank desc, p.id limit :cap""", params)
    return {"prior": [_link(datasette, db, r, n=r["n"]) for r in prior],
            "derivative": [_link(datasette, db, r, n=r["n"]) for r in derivative]}


# ---------------------------------------------------------------------------------------------------------------
# The concept page.

def _json_list(text) -> list:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


async def concept_details(datasette, db, concept_id: str) -> dict | None:
    """A concept in words: definition, its papers (by score, resolved first), co-occurring concepts and papers
    per year."""
    c = (await db.execute("select * from concepts where id = :id", {"id": concept_id})).first()
    if c is None:
        return None
    c = dict(c)
    mesh_uis = [str(u) for u in _json_list(c.get("mesh_uis"))]
    names = {}
    if mesh_uis:
        names = {r["ui"]: r["name"] for r in await db.execute(
            "select ui, name from mesh_descriptors where ui in (select value from json_each(:uis))",
            {"uis": json.dumps(mesh_uis)})}
    entry = {}
    try:
        entry = json.loads(c.get("entry") or "{}")
    except ValueError:
        pass
    papers = [_link(datasette, db, r, score=r["score"], evidence=r["evidence"]) for r in await db.execute(
        """select p.id, p.title, p.year, p.journal, p.resolved, pc.score, pc.evidence from paper_concepts pc
           join papers p on p.id = pc.paper_id where pc.concept_id = :id
           order by p.resolved desc, pc.score desc, p.pagerank desc, p.id limit :cap""",
        {"id": concept_id, "cap": CONCEPT_PAPERS_CAP})]
    paper_count = (await db.execute("select count(*) from paper_concepts where concept_id = :id",
                                    {"id": concept_id})).first()[0]
    related = [{"id": r["other"], "label": r["label"], "papers": r["papers"], "strength": r["strength"],
                "url": concept_url(datasette, db.name, r["other"])} for r in await db.execute(
        """select e.other, c.label, e.papers, e.strength from (
               select concept_b as other, papers, strength from concept_edges where concept_a = :id
               union all select concept_a, papers, strength from concept_edges where concept_b = :id) e
           join concepts c on c.id = e.other order by e.strength desc, e.papers desc, c.label""", {"id": concept_id})]
    years = [(r[0], r[1]) for r in await db.execute(
        """select p.year, count(*) from paper_concepts pc join papers p on p.id = pc.paper_id
           where pc.concept_id = :id and p.year is not null group by p.year order by p.year""", {"id": concept_id})]
    peak = max((n for _, n in years), default=0)
    return {
        "id": c["id"], "label": c.get("label") or c["id"], "description": c.get("description"),
        "mesh": [{"ui": u, "name": names.get(u), "url": datasette.urls.row(db.name, "mesh_descriptors", u)}
                 for u in mesh_uis],
        "tree_prefixes": _json_list(c.get("tree_prefixes")), "synonyms": _json_list(c.get("synonyms")),
        "patterns": _json_list(c.get("patterns")),
        "case_sensitive_patterns": entry.get("case_sensitive_patterns") or [],
        "papers": papers, "paper_count": paper_count, "related": related,
        "years": [{"year": y, "papers": n, "width": round(100 * n / peak) if peak else 0} for y, n in years],
        "first_year": c.get("first_year"), "last_year": c.get("last_year"),
        "papers_url": datasette.urls.path(f"/{tilde_encode(db.name)}/papers_about_concept?concept="
                                          + quote(c["id"])),
        "graph_url": datasette.urls.path("/-/kb/citations?concept=" + c["id"]),
    }


# ---------------------------------------------------------------------------------------------------------------
# Template data: paper and concept pages, the start page, query notes.

async def seeds(datasette, db) -> list:
    return [_link(datasette, db, r) for r in await db.execute(
        """select id, title, year, journal, resolved from papers
           where likelihood(is_seed = 1, 0.0001) order by id limit 20""")]


async def start_vars(datasette, db) -> dict:
    """The start page's search box, counts and seed papers (its title and description are kb_meta's, set as
    Datasette's metadata by kb.publish.serve)."""
    counts = (await db.execute("select count(*), coalesce(sum(resolved), 0) from papers")).first()
    return {"kb_start": {"seeds": await seeds(datasette, db), "papers": counts[0], "resolved": counts[1],
                         "search_url": datasette.urls.path("/-/kb/search")}}


PAPER_PARAMS = ("paper", "from_paper", "to_paper")


async def query_note(datasette, db, canned_query: str | None, params: dict, row_count: int) -> Markup:
    """Why a canned query shows no rows, in a sentence: an identifier no paper matches, no seed paper, …"""
    if not canned_query or row_count:
        return Markup("")
    notes = []
    for name in PAPER_PARAMS:
        text = (params.get(name) or "").strip()
        if name not in params:
            continue
        if not text:
            notes.append(Markup("Give <strong>{0}</strong>: {1}.").format(name, HOWTO))
            continue
        found = await resolve_paper(db, text)
        if found is None:
            notes.append(Markup("No paper in this knowledge base matches <strong>{0}</strong> ({1}): "
                                "give {2}. The <a href=\"{3}\">search</a> finds papers by title or author.").format(
                text, name, HOWTO, datasette.urls.path("/-/kb/search?q=") + tilde_encode(text)))
        else:
            title = (await db.execute("select title from papers where id = :id", {"id": found})).first()[0]
            notes.append(Markup("{0} is <a href=\"{1}\">{2}</a>.").format(
                text, paper_url(datasette, db.name, found), title or found))
    for name in ("concept", "concept_a", "concept_b"):
        text = (params.get(name) or "").strip()
        if name in params and text:
            hit = (await db.execute("select id from concepts where id = lower(:c) or lower(label) = lower(:c)",
                                    {"c": text})).first()
            if hit is None:
                labels = [r[0] for r in await db.execute("select label from concepts order by label limit 50")]
                notes.append(Markup("No concept is called <strong>{0}</strong>; the concepts are: {1}.").format(
                    text, ", ".join(labels)))
    if canned_query == "seed_references":
        seed_list = await seeds(datasette, db)
        if not seed_list:
            notes.append(Markup("This knowledge base has no seed paper: it was imported or built without one. "
                                "Mark one with <code>kb build --seed ID</code> (a PMID, DOI or key), or open any "
                                "paper's page to see its references."))
        else:
            notes.append(Markup("The seed paper{0} {1} {2} no references in this knowledge base.").format(
                "s" if len(seed_list) > 1 else "",
                Markup(", ").join(Markup('<a href="{0}">{1}</a>').format(s["url"], s["title"]) for s in seed_list),
                "have" if len(seed_list) > 1 else "has"))
    if notes:
        return Markup('<div class="kb-note"><strong>No rows.</strong> {0}</div>').format(Markup(" ").join(notes))
    return Markup('<div class="kb-note"><strong>No rows</strong> for these parameters.</div>')


async def template_vars(datasette, db, view_name, table, request) -> dict:
    """kb's template data for Datasette's own pages (the paper page's part comes from plugin.paper_details)."""
    result = {"kb_search_url": datasette.urls.path("/-/kb/search"),
              "kb_display_columns": PAPER_DISPLAY_COLUMNS}
    if view_name == "row" and table == "concepts" and request is not None and request.url_vars.get("pks"):
        from datasette.utils import urlsafe_components

        try:
            result["kb_concept"] = await concept_details(datasette, db, urlsafe_components(request.url_vars["pks"])[0])
        except sqlite3.OperationalError:
            pass
    if view_name == "index" or (view_name == "database" and request is not None and not request.args.get("sql")):
        try:
            result.update(await start_vars(datasette, db))
        except sqlite3.OperationalError:
            pass

    async def note(canned_query, params, rows):
        try:
            return await query_note(datasette, db, canned_query, dict(params or {}), len(rows or []))
        except sqlite3.OperationalError:
            return Markup("")

    result["kb_query_note"] = note
    return result


# ---------------------------------------------------------------------------------------------------------------
# The search page: one box for titles, authors, DOIs, PMIDs and links.

def _fts_query(text: str) -> str | None:
    words = re.findall(r"\w[\w'-]*", text, re.UNICODE)
    if not words:
        return None
    return " ".join('"' + w.replace('"', "") + '"' for w in words[:12])


async def search(datasette, db, text: str) -> dict:
    """Papers matching `text`: by identifier first, then by author name and by words (full-text index)."""
    text = (text or "").strip()
    result = {"q": text, "papers": [], "concepts": [], "exact": None}
    if not text:
        return result
    exact = await resolve_paper(db, text)
    if exact:
        result["exact"] = exact
        return result
    found: dict[str, dict] = {}
    tables = await _tables(db)
    cols = "p.id, p.title, p.year, p.journal, p.resolved, p.authors_display"
    fts_columns = {r[1] for r in await db.execute("pragma table_info(papers_fts)")} if "papers_fts" in tables else set()
    # Author surnames (a whole name, as people type them: "Kato", "kato m"), when the full-text index does not
    # hold the authors itself (a knowledge base built before it did).
    last = text.split()[0] if text.split() else ""
    if last and len(text.split()) <= 2 and "authors" in tables and "authors_text" not in fts_columns:
        for r in await db.execute(
                f"""select {cols} from papers p where p.id in (
                        select pa.paper_id from paper_authors pa where pa.author_id in (
                            select id from authors where last_name = :last collate nocase
                               or name = :text collate nocase))
                    order by p.resolved desc, p.year desc, p.id limit :cap""",
                {"last": last, "text": text, "cap": SEARCH_CAP}):
            found.setdefault(r["id"], dict(_link(datasette, db, r), authors=r["authors_display"], why="author"))
    query = _fts_query(text)
    if query and "papers_fts" in tables:
        try:
            rows = await db.execute(
                f"""select {cols} from papers_fts f join papers p on p.rowid = f.rowid
                    where papers_fts match :q order by p.resolved desc, f.rank limit :cap""",
                {"q": query, "cap": SEARCH_CAP})
        except sqlite3.OperationalError:
            rows = []
        for r in rows:
            by_author = bool(last) and last.lower() in (r["authors_display"] or "").lower()
            found.setdefault(r["id"], dict(_link(datasette, db, r), authors=r["authors_display"],
                                           why="author" if by_author else "text"))
    result["papers"] = sorted(found.values(), key=lambda x: (x["stub"], x["why"] != "author"))[:SEARCH_CAP]
    result["concepts"] = [{"id": r["id"], "label": r["label"], "url": concept_url(datasette, db.name, r["id"])}
                          for r in await db.execute(
        """select id, label from concepts where lower(label) = lower(:t) or id = lower(:t)
           or exists (select 1 from json_each(concepts.synonyms) j where lower(j.value) = lower(:t))
           order by label""", {"t": text})]
    return result


async def search_page(datasette, request):
    """/-/kb/search?q=...: an identifier opens the paper's page; words list the matching papers."""
    from .plugin import _page, _require_kb

    db = await _require_kb(datasette)
    text = (request.args.get("q") or "").strip()
    result = await search(datasette, db, text)
    if result["exact"]:
        return Response.redirect(paper_url(datasette, db.name, result["exact"]))
    if request.path.endswith(".json"):
        return Response.json(result)
    return await _page(datasette, request, "kb_search.html", result=result, **(await start_vars(datasette, db)))


async def error_page(datasette, request, exception):
    """404s and other client errors on HTML pages, rendered with kb's navigation and stylesheet (Datasette's
    default error page has neither). Returns None for JSON and server errors: Datasette's handler answers."""
    from datasette.utils.asgi import Base400

    if not isinstance(exception, Base400) or request is None or request.path.split("?")[0].endswith(".json"):
        return None
    from .plugin import kb_database

    try:
        db_name = kb_database(datasette).name
    except Exception:  # no database attached: Datasette's own page
        return None
    context = {"ok": False, "error": exception.args[0] if exception.args else str(exception),
               "status": exception.status, "title": None, "kb_db": db_name}
    html = await datasette.render_template(["error.html"], context, request=request)
    return Response.html(html, status=exception.status)
