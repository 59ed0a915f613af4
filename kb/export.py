"""`kb export`: the knowledge base as graph files (GraphML, GEXF, node-link JSON, CSV edge lists) or as a
bibliography (BibTeX, RIS, CSL-JSON) for reference managers.

Bibliographies hold the resolved papers (stubs known only from a reference string are left out), in id order;
BibTeX keys are FirstAuthorYearFirstword (Kato2011case), with a, b, ... appended on collisions. An author list
the source cut short ("et al."; papers.authors_complete = 0) ends in BibTeX's `and others` and carries a note in
RIS (N1) and CSL-JSON (note). A subset is exported with `--where SQL` (a WHERE clause over papers) or `--query
NAME -p PARAM VALUE` (a canned query of metadata.yml): both run read-only (an authorizer allows reads only).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import unicodedata
from pathlib import Path

import networkx as nx

from . import graph as kbgraph
from .errors import KbError, NotFound
from .ids import register_sql_functions
from .records import atomic_write

INCOMPLETE_NOTE = "Author list incomplete in the source (et al.)"
# Columns of a query result that hold paper keys, in order of preference.
PAPER_COLUMNS = ("paper", "paper_id", "id")

STOPWORDS = {"a", "an", "the", "of", "on", "in", "and", "for", "to", "with", "by", "at", "from", "is", "are"}
BIBTEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "&": r"\&", "%": r"\%", "$": r"\$",
                  "#": r"\#", "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _open_db(db_path) -> sqlite3.Connection:
    db_path = Path(db_path)
    if not db_path.is_file():
        raise NotFound(f"database not found: {db_path} (run `kb build` first)")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        conn.execute("SELECT id FROM papers LIMIT 1")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise KbError(f"{db_path} is not a kb database ({exc})") from None
    return conn


def _graph(conn, which: str):
    return kbgraph.concept_graph(conn) if which == "concepts" else kbgraph.citation_graph(conn)


def to_graphml(conn, which="citations") -> bytes:
    buf = io.BytesIO()
    nx.write_graphml(_graph(conn, which), buf, encoding="utf-8")
    return buf.getvalue()


def to_gexf(conn, which="citations") -> bytes:
    buf = io.BytesIO()
    nx.write_gexf(_graph(conn, which), buf, encoding="utf-8")
    return buf.getvalue()


def to_json(conn, which="citations") -> str:
    data = nx.node_link_data(_graph(conn, which), edges="links")
    return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def to_csv(conn, which="citations") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if which == "concepts":
        w.writerow(["concept_a", "concept_b", "label_a", "label_b", "papers", "strength"])
        w.writerows(conn.execute(
            "SELECT e.concept_a, e.concept_b, a.label, b.label, e.papers, e.strength FROM concept_edges e "
            "JOIN concepts a ON a.id = e.concept_a JOIN concepts b ON b.id = e.concept_b "
            "ORDER BY e.concept_a, e.concept_b"))
    else:
        w.writerow(["citing_id", "cited_id", "citing_title", "cited_title", "source", "resolved"])
        w.writerows(conn.execute(
            "SELECT c.citing_id, c.cited_id, a.title, b.title, c.source, c.resolved FROM citations c "
            "JOIN papers a ON a.id = c.citing_id JOIN papers b ON b.id = c.cited_id "
            "ORDER BY c.citing_id, c.cited_id"))
    return buf.getvalue()


def _chunks(items, size=500):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _papers(conn, ids=None):
    """Resolved papers as dicts with their author list: all of them in id order, or those of `ids` in that
    order (stubs and unknown keys skipped). Uses its own cursors: the connection's row factory is left alone."""
    def rows(sql, args=()):
        cur = conn.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(sql, args)

    authors: dict[str, list] = {}
    author_sql = ("SELECT pa.paper_id, a.last_name, a.fore_name, a.initials, a.collective, a.name "
                  "FROM paper_authors pa JOIN authors a ON a.id = pa.author_id ")
    if ids is None:
        papers = [dict(r) for r in rows("SELECT * FROM papers WHERE resolved = 1 ORDER BY id")]
        author_rows = rows(author_sql + "ORDER BY pa.paper_id, pa.position")
    else:
        ids = list(dict.fromkeys(ids))
        found = {}
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            for r in rows(f"SELECT * FROM papers WHERE resolved = 1 AND id IN ({marks})", chunk):
                found[r["id"]] = dict(r)
        papers = [found[i] for i in ids if i in found]
        keys = [p["id"] for p in papers]
        author_rows = (r for chunk in _chunks(keys) for r in rows(
            author_sql + f"WHERE pa.paper_id IN ({', '.join('?' * len(chunk))}) ORDER BY pa.paper_id, pa.position",
            chunk))
    for row in author_rows:
        authors.setdefault(row["paper_id"], []).append(dict(row))
    for p in papers:
        p["authors"] = authors.get(p["id"], [])
        p["keyword_list"] = json.loads(p["keywords"]) if p.get("keywords") else []
        # papers.authors_complete (0: the source cut the list with "et al."); absent in older databases
        p["authors_incomplete"] = p.get("authors_complete") == 0
    return papers


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode("ascii")


def citation_key(p: dict) -> str:
    """A stable BibTeX key: first author's last name, year, first significant title word (Kato2011case)."""
    first = p["authors"][0] if p["authors"] else None
    name = (first.get("last_name") or first.get("collective") or first.get("name") or "") if first else ""
    name = re.sub(r"[^A-Za-z]", "", _ascii(name)) or "Anon"
    words = [w for w in re.findall(r"[a-z0-9]+", _ascii(p.get("title") or "").lower()) if w not in STOPWORDS]
    return f"{name}{p.get('year') or ''}{words[0] if words else ''}"


def _bib_escape(text) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    return "".join(BIBTEX_SPECIAL.get(ch, ch) for ch in text)


def _pages(pages: str | None) -> tuple[str | None, str | None]:
    if not pages:
        return None, None
    parts = re.split(r"\s*[-\u2013\u2014]+\s*", pages.strip(), maxsplit=1)
    first = parts[0] or None
    last = parts[1] if len(parts) > 1 and parts[1] else None
    if first and last and last.isdigit() and first.isdigit() and len(last) < len(first):
        last = first[: len(first) - len(last)] + last          # 787-90 -> 787-790
    return first, last


def to_bibtex(conn, ids=None) -> str:
    entries, used = [], {}
    for p in _papers(conn, ids):
        key = citation_key(p)
        n = used.get(key, 0)
        used[key] = n + 1
        if n:
            key = f"{key}{chr(ord('a') + n - 1) if n <= 26 else n}"
        names = []
        for a in p["authors"]:
            if a.get("collective"):
                names.append("{" + _bib_escape(a["collective"]) + "}")
            elif a.get("last_name"):
                given = a.get("fore_name") or a.get("initials") or ""
                names.append(_bib_escape(a["last_name"]) + (", " + _bib_escape(given) if given else ""))
        if names and p["authors_incomplete"]:
            names.append("others")             # BibTeX's own "et al."
        first, last = _pages(p.get("pages"))
        journal = p.get("journal") or p.get("journal_iso")
        raw_fields = [
            ("author", " and ".join(names) or None),
            ("title", "{" + _bib_escape(p["title"]) + "}" if p.get("title") else None),
            ("journal", _bib_escape(journal) if journal else None),
        ] + [(k, _bib_escape(v) if v not in (None, "") else None) for k, v in (
            ("year", p.get("year")), ("volume", p.get("volume")), ("number", p.get("issue")),
            ("pages", f"{first}--{last}" if first and last else first),
            ("doi", p.get("doi")), ("pmid", p.get("pmid")), ("pmcid", p.get("pmcid")),
            ("keywords", ", ".join(p["keyword_list"]) or None))]
        kind = "book" if p.get("kind") == "book" else "article"
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in raw_fields if v not in (None, ""))
        entries.append(f"@{kind}{{{key},\n{body}\n}}\n")
    return "\n".join(entries)


def to_ris(conn, ids=None) -> str:
    lines = []
    for p in _papers(conn, ids):
        lines.append("TY  - " + ("BOOK" if p.get("kind") == "book" else "JOUR"))
        for a in p["authors"]:
            if a.get("collective"):
                lines.append(f"AU  - {a['collective']}")
            elif a.get("last_name"):
                given = a.get("fore_name") or a.get("initials")
                lines.append(f"AU  - {a['last_name']}" + (f", {given}" if given else ""))
        first, last = _pages(p.get("pages"))
        for tag, value in (("TI", p.get("title")), ("T2", p.get("journal") or p.get("journal_iso")),
                           ("J2", p.get("journal_iso")),
                           ("PY", p.get("year")), ("VL", p.get("volume")), ("IS", p.get("issue")),
                           ("SP", first), ("EP", last), ("DO", p.get("doi")),
                           ("AN", f"PMID:{p['pmid']}" if p.get("pmid") else None), ("AB", p.get("abstract")),
                           ("N1", INCOMPLETE_NOTE if p["authors_incomplete"] else None)):
            if value not in (None, ""):
                lines.append(f"{tag}  - " + re.sub(r"\s+", " ", str(value)).strip())
        for kw in p["keyword_list"]:
            lines.append(f"KW  - {kw}")
        lines.append("ER  - ")
        lines.append("")
    return "\n".join(lines)


def to_csl_json(conn, ids=None) -> str:
    items = []
    for p in _papers(conn, ids):
        item = {"id": p["id"], "type": "book" if p.get("kind") == "book" else "article-journal"}
        authors = []
        for a in p["authors"]:
            if a.get("collective"):
                authors.append({"literal": a["collective"]})
            elif a.get("last_name"):
                authors.append({k: v for k, v in (("family", a["last_name"]),
                                                  ("given", a.get("fore_name") or a.get("initials"))) if v})
        first, last = _pages(p.get("pages"))
        for key, value in (("title", p.get("title")), ("container-title", p.get("journal") or p.get("journal_iso")),
                           ("container-title-short", p.get("journal_iso")), ("author", authors or None),
                           ("issued", {"date-parts": [[p["year"]]]} if p.get("year") else None),
                           ("volume", p.get("volume")), ("issue", p.get("issue")),
                           ("page", f"{first}-{last}" if first and last else first), ("DOI", p.get("doi")),
                           ("PMID", p.get("pmid")), ("PMCID", p.get("pmcid")), ("abstract", p.get("abstract")),
                           ("keyword", ", ".join(p["keyword_list"]) or None),
                           ("note", INCOMPLETE_NOTE if p["authors_incomplete"] else None)):
            if value not in (None, ""):
                item[key] = value
        items.append(item)
    return json.dumps(items, ensure_ascii=False, indent=1) + "\n"


BIBLIOGRAPHIES = {"bibtex": to_bibtex, "ris": to_ris, "csl-json": to_csl_json}


def _subgraph(g, ids):
    return g if ids is None else g.subgraph([i for i in ids if i in g]).copy()


def export(fmt: str, conn, which: str = "citations", ids=None):
    """The export in `fmt` as text or bytes; `ids` (paper keys) restricts it to those papers."""
    if fmt in BIBLIOGRAPHIES:
        return BIBLIOGRAPHIES[fmt](conn, ids)
    if fmt not in ("graphml", "gexf", "json", "csv"):
        raise KbError(f"unknown export format {fmt!r}")
    if ids is not None and which == "concepts":
        raise KbError("--where and --query select papers: they apply to bibliographies and the citation graph, "
                      "not to --graph concepts")
    if ids is None:
        return {"graphml": to_graphml, "gexf": to_gexf, "json": to_json, "csv": to_csv}[fmt](conn, which)
    if fmt == "csv":
        keep = set(ids)
        text = to_csv(conn, which)
        lines = text.splitlines(keepends=True)
        rows = list(csv.reader(lines))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(rows[0])
        w.writerows(r for r in rows[1:] if r[0] in keep and r[1] in keep)
        return buf.getvalue()
    g = _subgraph(_graph(conn, which), ids)
    buf = io.BytesIO()
    if fmt == "graphml":
        nx.write_graphml(g, buf, encoding="utf-8")
        return buf.getvalue()
    if fmt == "gexf":
        nx.write_gexf(g, buf, encoding="utf-8")
        return buf.getvalue()
    data = nx.node_link_data(g, edges="links")
    return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------------------------- subsets

def _read_only(action, arg1, arg2, dbname, source):
    """sqlite3 authorizer: reading, selecting and calling functions only (a --where or --query cannot write,
    attach, or change pragmas even on a writable connection)."""
    allowed = (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE)
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


def _one_line(exc) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()


def select_where(conn, where: str) -> list[str]:
    """Keys of the papers a WHERE clause over the papers table selects, in id order (read-only)."""
    if not where or not where.strip():
        raise KbError("--where needs a condition over the papers table, e.g. --where \"year >= 2010\"")
    conn.set_authorizer(_read_only)
    try:
        return [r[0] for r in conn.execute(f"SELECT id FROM papers WHERE ({where}) ORDER BY id")]
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise KbError(f"--where {where!r}: {_one_line(exc)}") from None
    finally:
        conn.set_authorizer(None)


def query_parameters(sql: str) -> list[str]:
    """The :named parameters of a canned query, in order of first use (string literals and comments skipped)."""
    code = re.sub(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S)
    return list(dict.fromkeys(re.findall(r"(?<![\w:]):([A-Za-z_]\w*)", code)))


def canned_queries(metadata: dict | None = None) -> dict[str, dict]:
    """The canned queries of metadata.yml (kb.publish.load_metadata), by name."""
    from .publish import METADATA_DATABASE, load_metadata

    metadata = metadata if metadata is not None else load_metadata()
    queries = ((metadata.get("databases") or {}).get(METADATA_DATABASE) or {}).get("queries") or {}
    return {name: (q if isinstance(q, dict) else {"sql": q}) for name, q in queries.items()}


def select_query(conn, name: str, params: dict | None = None, metadata: dict | None = None) -> list[str]:
    """Keys of the papers a canned query returns (its `paper` column), in its order (read-only). Parameters
    not given are empty, as on its Datasette page; unknown ones are an error."""
    queries = canned_queries(metadata)
    if name not in queries:
        raise KbError(f"no canned query {name!r}; the queries are: {', '.join(sorted(queries))}")
    sql = queries[name].get("sql") or ""
    names = query_parameters(sql)
    params = dict(params or {})
    unknown = sorted(set(params) - set(names))
    if unknown:
        have = ", ".join(names) if names else "none"
        raise KbError(f"query {name!r} has no parameter {unknown[0]!r} (its parameters: {have})")
    missing = [n for n in names if n not in params]
    values = {n: params.get(n, "") for n in names}
    register_sql_functions(conn)           # kb_ref(), as Datasette's connections have it
    conn.set_authorizer(_read_only)
    try:
        cur = conn.execute(sql, values)
        columns = [d[0] for d in cur.description or ()]
        column = next((c for c in PAPER_COLUMNS if c in columns), None)
        if column is None:
            raise KbError(f"query {name!r} returns no paper column ({', '.join(PAPER_COLUMNS)}): nothing to export")
        at = columns.index(column)
        ids = [r[at] for r in cur if isinstance(r[at], str)]
    except (sqlite3.Error, sqlite3.Warning) as exc:
        raise KbError(f"query {name!r}: {_one_line(exc)}") from None
    finally:
        conn.set_authorizer(None)
    if not ids and missing:
        raise KbError(f"query {name!r} returned no papers; give its parameters with -p: "
                      + ", ".join(f"-p {n} VALUE" for n in missing))
    return list(dict.fromkeys(ids))


def export_command(fmt, db_path, output, graph="citations", where=None, query=None, params=None):
    """`kb export`: write the export (of everything, or of the papers --where / --query select) to a file
    (atomically) or to stdout."""
    import click

    from .paths import output_file

    if where is not None and query is not None:
        raise KbError("give --where or --query, not both")
    if params and query is None:
        raise KbError("-p/--param gives a parameter of --query; there is no --query")
    if output is not None and str(output) != "-":
        output_file(output, "-o")
    if (where is not None or query is not None) and fmt in ("graphml", "gexf", "json", "csv") and graph == "concepts":
        raise KbError("--where and --query select papers: they apply to bibliographies and the citation graph, "
                      "not to --graph concepts")
    conn = _open_db(db_path)
    try:
        ids = None
        if where is not None:
            ids = select_where(conn, where)
        elif query is not None:
            ids = select_query(conn, query, params)
        data = export(fmt, conn, graph, ids)
        resolved = None
        if ids is not None and fmt in BIBLIOGRAPHIES:
            resolved = sum(conn.execute(f"SELECT count(*) FROM papers WHERE resolved = 1 AND id IN "
                                        f"({', '.join('?' * len(chunk))})", chunk).fetchone()[0]
                           for chunk in _chunks(list(dict.fromkeys(ids))))
    finally:
        conn.close()
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    if output is None or str(output) == "-":
        import sys

        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return
    output = Path(output)
    with atomic_write(output) as fh:
        fh.write(raw)
    what = f"{fmt}{', ' + graph + ' graph' if fmt in ('graphml', 'gexf', 'json', 'csv') else ''}"
    said = ""
    if ids is not None:
        said = f": {len(ids)} papers selected"
        if resolved is not None and resolved != len(ids):
            said = f": {resolved} of the {len(ids)} papers selected (those known only from reference lists are left out)"
    click.echo(f"Wrote {output} ({what}){said}.", err=True)
