"""Bibliographies of a Datasette result page: `.bib` (BibTeX), `.ris` (RIS) and `.csljson` (CSL-JSON) beside
`.json` and `.csv` on every table, view and query page whose rows name papers.

Registered as output renderers (Datasette's register_output_renderer hook, see kb.publish.plugin), so the links appear
under "This data as" on those pages and keep the page's filters, search and parameters. The papers are those
of the result: on a table page every page of it (up to MAX_PAPERS), on a query page its rows (a query returns
at most max_returned_rows). Rows name papers by a `paper` or `paper_id` column, or by `id` on the papers table
and in SQL queries. Nothing is written: the result is Datasette's own, read-only query; kb.export only looks
the papers up by key. As with `kb export`, papers known only from a reference list are left out.
"""

from __future__ import annotations

import re
import urllib.parse

from .. import export

# extension -> (kb.export format, content type, label)
FORMATS = {
    "bib": ("bibtex", "application/x-bibtex; charset=utf-8"),
    "ris": ("ris", "application/x-research-info-systems; charset=utf-8"),
    "csljson": ("csl-json", "application/vnd.citationstyles.csl+json; charset=utf-8"),
}
# A table page is followed page by page up to this many rows; `kb export --where` has no limit.
MAX_PAPERS = 20000


def paper_column(columns, table=None, query_name=None) -> str | None:
    """The column of a result that holds paper keys, or None when it names no papers."""
    columns = list(columns or ())
    if table == "papers":
        return "id" if "id" in columns else None
    for name in ("paper", "paper_id"):
        if name in columns:
            return name
    if table is None and "id" in columns and "title" in columns:   # e.g. select id, title from papers ...
        return "id"
    return None


def can_render(columns, table, query_name):
    return paper_column(columns, table, query_name) is not None


def _value(cell):
    if isinstance(cell, dict):           # an expanded foreign key (_labels=on): {"value": ..., "label": ...}
        cell = cell.get("value")
    return cell if isinstance(cell, str) else None


def _keys(rows, columns, column) -> list[str]:
    at = list(columns).index(column)
    keys = []
    for row in rows:
        value = _value(row[column] if isinstance(row, dict) else row[at])
        if value:
            keys.append(value)
    return keys


async def _later_pages(datasette, request, data, column) -> list[str]:
    """The keys on the table's further pages: Datasette's JSON of the same URL, followed by its `next` token."""
    keys: list[str] = []
    token = data.get("next")
    path = request.path.rsplit(".", 1)[0] + ".json"
    args = [(k, v) for k, v in urllib.parse.parse_qsl(request.query_string, keep_blank_values=True)
            if k not in ("_next", "_size", "_shape", "_labels", "_format", "_dl")]
    seen = len(data.get("rows") or ())
    while token and seen + len(keys) < MAX_PAPERS:
        query = urllib.parse.urlencode(args + [("_next", token), ("_size", "max"), ("_shape", "objects")])
        response = await datasette.client.get(f"{path}?{query}")
        if response.status_code != 200:
            break
        page = response.json()
        keys.extend(_keys(page.get("rows") or [], page.get("columns") or [], column))
        token = page.get("next")
    return keys


def _renderer(extension: str):
    fmt, content_type = FORMATS[extension]

    async def render(datasette, columns, rows, request, database, table, query_name, data):
        column = paper_column(columns, table, query_name)
        if column is None:
            return {"body": f"These rows name no papers (no paper, paper_id or id column): nothing to export as "
                            f"{fmt}.\n", "status_code": 400, "content_type": "text/plain; charset=utf-8"}
        keys = _keys(rows, columns, column)
        if table is not None and data.get("next"):
            keys += await _later_pages(datasette, request, data, column)
        keys = list(dict.fromkeys(keys))[:MAX_PAPERS]
        db = datasette.get_database(database)
        body = await db.execute_fn(lambda conn: export.export(fmt, conn, ids=keys))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", table or query_name or database)
        return {"body": body, "content_type": content_type,
                "headers": {"content-disposition": f'inline; filename="{name}.{extension}"'}}

    return render


def output_renderers() -> list[dict]:
    """The renderers for Datasette's register_output_renderer hook."""
    return [{"extension": ext, "render": _renderer(ext), "can_render": can_render} for ext in FORMATS]
