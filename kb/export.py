"""`kb export`: the knowledge base as graph files (GraphML, GEXF, node-link JSON, CSV edge lists) or as a
bibliography (BibTeX, RIS, CSL-JSON) for reference managers.

Bibliographies hold the resolved papers (stubs known only from a reference string are left out), in id order;
BibTeX keys are FirstAuthorYearFirstword (Kato2011case), with a, b, ... appended on collisions.
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
from .records import atomic_write
from .errors import KbError, NotFound

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


def _papers(conn):
    """Resolved papers as dicts with their author list, in id order."""
    conn.row_factory = sqlite3.Row
    authors: dict[str, list] = {}
    for row in conn.execute(
            "SELECT pa.paper_id, a.last_name, a.fore_name, a.initials, a.collective, a.name FROM paper_authors pa "
            "JOIN authors a ON a.id = pa.author_id ORDER BY pa.paper_id, pa.position"):
        authors.setdefault(row["paper_id"], []).append(dict(row))
    out = []
    for row in conn.execute("SELECT * FROM papers WHERE resolved = 1 ORDER BY id"):
        p = dict(row)
        p["authors"] = authors.get(p["id"], [])
        p["keyword_list"] = json.loads(p["keywords"]) if p.get("keywords") else []
        out.append(p)
    conn.row_factory = None
    return out


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


def to_bibtex(conn) -> str:
    entries, used = [], {}
    for p in _papers(conn):
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
        first, last = _pages(p.get("pages"))
        raw_fields = [
            ("author", " and ".join(names) or None),
            ("title", "{" + _bib_escape(p["title"]) + "}" if p.get("title") else None),
            ("journal", _bib_escape(p["journal"]) if p.get("journal") else None),
        ] + [(k, _bib_escape(v) if v not in (None, "") else None) for k, v in (
            ("year", p.get("year")), ("volume", p.get("volume")), ("number", p.get("issue")),
            ("pages", f"{first}--{last}" if first and last else first),
            ("doi", p.get("doi")), ("pmid", p.get("pmid")), ("pmcid", p.get("pmcid")),
            ("keywords", ", ".join(p["keyword_list"]) or None))]
        kind = "book" if p.get("kind") == "book" else "article"
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in raw_fields if v not in (None, ""))
        entries.append(f"@{kind}{{{key},\n{body}\n}}\n")
    return "\n".join(entries)


def to_ris(conn) -> str:
    lines = []
    for p in _papers(conn):
        lines.append("TY  - " + ("BOOK" if p.get("kind") == "book" else "JOUR"))
        for a in p["authors"]:
            if a.get("collective"):
                lines.append(f"AU  - {a['collective']}")
            elif a.get("last_name"):
                given = a.get("fore_name") or a.get("initials")
                lines.append(f"AU  - {a['last_name']}" + (f", {given}" if given else ""))
        first, last = _pages(p.get("pages"))
        for tag, value in (("TI", p.get("title")), ("T2", p.get("journal")), ("J2", p.get("journal_iso")),
                           ("PY", p.get("year")), ("VL", p.get("volume")), ("IS", p.get("issue")),
                           ("SP", first), ("EP", last), ("DO", p.get("doi")),
                           ("AN", f"PMID:{p['pmid']}" if p.get("pmid") else None), ("AB", p.get("abstract"))):
            if value not in (None, ""):
                lines.append(f"{tag}  - " + re.sub(r"\s+", " ", str(value)).strip())
        for kw in p["keyword_list"]:
            lines.append(f"KW  - {kw}")
        lines.append("ER  - ")
        lines.append("")
    return "\n".join(lines)


def to_csl_json(conn) -> str:
    items = []
    for p in _papers(conn):
        item = {"id": p["id"], "type": "book" if p.get("kind") == "book" else "article-journal"}
        authors = []
        for a in p["authors"]:
            if a.get("collective"):
                authors.append({"literal": a["collective"]})
            elif a.get("last_name"):
                authors.append({k: v for k, v in (("family", a["last_name"]),
                                                  ("given", a.get("fore_name") or a.get("initials"))) if v})
        first, last = _pages(p.get("pages"))
        for key, value in (("title", p.get("title")), ("container-title", p.get("journal")),
                           ("container-title-short", p.get("journal_iso")), ("author", authors or None),
                           ("issued", {"date-parts": [[p["year"]]]} if p.get("year") else None),
                           ("volume", p.get("volume")), ("issue", p.get("issue")),
                           ("page", f"{first}-{last}" if first and last else first), ("DOI", p.get("doi")),
                           ("PMID", p.get("pmid")), ("PMCID", p.get("pmcid")), ("abstract", p.get("abstract")),
                           ("keyword", ", ".join(p["keyword_list"]) or None)):
            if value not in (None, ""):
                item[key] = value
        items.append(item)
    return json.dumps(items, ensure_ascii=False, indent=1) + "\n"


def export(fmt: str, conn, which: str = "citations"):
    """The export in `fmt` as text or bytes."""
    if fmt == "graphml":
        return to_graphml(conn, which)
    if fmt == "gexf":
        return to_gexf(conn, which)
    if fmt == "json":
        return to_json(conn, which)
    if fmt == "csv":
        return to_csv(conn, which)
    if fmt == "bibtex":
        return to_bibtex(conn)
    if fmt == "ris":
        return to_ris(conn)
    if fmt == "csl-json":
        return to_csl_json(conn)
    raise KbError(f"unknown export format {fmt!r}")


def export_command(fmt, db_path, output, graph="citations"):
    """`kb export`: write the export to a file (atomically) or to stdout."""
    import click

    conn = _open_db(db_path)
    try:
        data = export(fmt, conn, graph)
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
    if output.is_dir():
        raise KbError(f"{output} is a directory; give a file name")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output) as fh:
        fh.write(raw)
    click.echo(f"Wrote {output} ({fmt}{', ' + graph + ' graph' if fmt in ('graphml', 'gexf', 'json', 'csv') else ''}).",
               err=True)
