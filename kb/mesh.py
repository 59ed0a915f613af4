"""MeSH tree numbers for kb: NLM's descriptor file (`kb mesh import`), E-utilities ``db=mesh`` summaries
(`kb fetch --mesh-trees`), "mesh" records, and their merging into the concept lexicon's tree table.

A "mesh" record is ``{"type": "mesh", "ui": "D008279", "name": ..., "tree_numbers": [...], "provenance"}``.
`kb build` adds the tree numbers of every "mesh" record to the lexicon's table (the shipped
datasets/mesh-trees.tsv and any ``mesh_descriptor_file``), so a concept's ``tree_prefixes`` match every
descriptor under them, and ``mesh_descriptors.tree_numbers`` is filled for every descriptor a record knows.

NLM's descriptor file (desc20XX.xml, ``DescriptorRecordSet``, plain or gzip) is read as a stream with lxml,
safely like PubMed XML (kb.parse): no DTD loaded, no entity resolved, no network, and a DOCTYPE that declares
entities is refused before any parser sees it. E-utilities has no tree numbers in efetch for ``db=mesh``
(its efetch answers are text); its esummary does (``DS_IdxLinks/LinksType/TreeNum``), keyed by Entrez UIDs:
a descriptor ``D008279`` is UID ``68008279`` (the letter's character code, then the digits).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from lxml import etree

from .errors import KbError, ParseError
from .records import provenance as make_provenance, write_records

MESH_UI_RE = re.compile(r"^D\d{6,9}$")
TREE_RE = re.compile(r"^[A-Z]\d{2}(\.\d{3})*$")
ROOTS = ("DescriptorRecordSet", "DescriptorRecord")


# ------------------------------------------------------------------------------------------------
# NLM's descriptor file
# ------------------------------------------------------------------------------------------------

def read_descriptors(source) -> Iterator[tuple[str, str, list[str]]]:
    """(ui, name, tree numbers) of each DescriptorRecord of an NLM MeSH descriptor file (path, .gz path,
    bytes or binary file), streaming and safely; ParseError (one line) on unsafe, malformed or other XML."""
    from .parse.source import BLOCK, _Source, _one_line, _read_prolog, _syntax_message

    with _Source(source) as src:
        head = src.head(BLOCK)
        if not head.strip():
            raise ParseError(f"{src.name}: empty file")
        try:
            head, root, _, _ = _read_prolog(src, head, check_root=False)
        except ParseError as exc:  # kb.parse's words are about PubMed XML; NLM's MeSH files are alike
            raise ParseError(str(exc).replace("PubMed XML never does", "NLM's MeSH XML never does")
                             .replace("PubMed XML is", "NLM's MeSH XML is")
                             .replace("(not PubMed XML)", "(not a MeSH descriptor file)")) from None
        if root not in ROOTS:
            raise ParseError(f"{src.name}: not a MeSH descriptor file (root element <{root}>; expected "
                             "DescriptorRecordSet, as in NLM's desc20XX.xml)")
        parser = etree.XMLPullParser(events=("end",), tag="DescriptorRecord", resolve_entities=False,
                                     no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
                                     remove_comments=True, remove_pis=True)

        def records():
            for _, el in parser.read_events():
                ui = (el.findtext("DescriptorUI") or "").strip()
                name = " ".join((el.findtext("DescriptorName/String") or "").split())
                numbers = [t.text.strip() for t in el.iterfind("TreeNumberList/TreeNumber")
                           if t.text and t.text.strip()]
                el.clear(keep_tail=False)
                parent = el.getparent()
                if parent is not None:
                    while el.getprevious() is not None:
                        del parent[0]
                if not ui:
                    continue
                if not MESH_UI_RE.match(ui):
                    raise ParseError(f"{src.name}: {ui!r} is not a MeSH descriptor UI (like D008279)")
                bad = [n for n in numbers if not TREE_RE.match(n)]
                if bad:
                    raise ParseError(f"{src.name}: {bad[0]!r} of {ui} is not a MeSH tree number (like C04.557.337)")
                yield ui, name, numbers

        try:
            for block in src.blocks(head):
                parser.feed(block)
                yield from records()
            parser.close()
            yield from records()
        except etree.XMLSyntaxError as exc:
            raise ParseError(_syntax_message(src.name, exc, parser.error_log)) from None
        except etree.LxmlError as exc:
            raise ParseError(f"{src.name}: malformed XML ({_one_line(exc)})") from None


def mesh_record(ui: str, name: str | None, tree_numbers: Iterable[str], provenance: dict) -> dict:
    """One "mesh" record (tree numbers sorted and de-duplicated)."""
    return {"type": "mesh", "ui": ui, "name": name or None, "tree_numbers": sorted(set(tree_numbers)),
            "provenance": provenance}


def file_stem(path: Path) -> str:
    """desc2025.xml.gz -> desc2025: the name of the records file `kb mesh import` writes."""
    name = path.name
    for suffix in (".gz", ".xml"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^\w.-]+", "_", name) or "mesh"


def import_descriptors(path, data_dir) -> dict:
    """Write the "mesh" records of an NLM descriptor file to DATA/records/mesh-<stem>.jsonl (sorted by UI,
    atomically: a bad file leaves nothing behind); returns {path, descriptors, tree_numbers}."""
    path = Path(path)
    if path.is_dir():
        raise KbError(f"{path}: is a directory, not a MeSH descriptor file")
    prov = make_provenance("mesh-xml", request=path.name, sources=["https://www.nlm.nih.gov/mesh/"])
    found: dict[str, dict] = {}
    for ui, name, numbers in read_descriptors(path):
        have = found.get(ui)
        numbers = set(numbers) | set(have["tree_numbers"] if have else ())
        found[ui] = mesh_record(ui, name or (have or {}).get("name"), numbers, prov)
    if not found:
        raise ParseError(f"{path}: no DescriptorRecord with a DescriptorUI (not a MeSH descriptor file?)")
    out = Path(data_dir) / "records" / f"mesh-{file_stem(path)}.jsonl"
    write_records(out, (found[ui] for ui in sorted(found)))
    return {"path": str(out), "descriptors": len(found),
            "tree_numbers": sum(len(r["tree_numbers"]) for r in found.values())}


def import_command(path, *, data_dir) -> dict:
    """`kb mesh import FILE`: import, then print one line."""
    import click

    summary = import_descriptors(path, data_dir)
    click.echo(f"{summary['descriptors']} MeSH descriptors, {summary['tree_numbers']} tree numbers -> "
               f"{summary['path']}")
    return summary


# ------------------------------------------------------------------------------------------------
# E-utilities db=mesh
# ------------------------------------------------------------------------------------------------

def mesh_uid(ui: str) -> str:
    """The Entrez UID of a MeSH record: D008279 -> 68008279 (character code of the letter, then the digits)."""
    return f"{ord(ui[0])}{ui[1:]}"


def ui_of_uid(uid: str) -> str | None:
    """The descriptor UI of an Entrez mesh UID (68008279 -> D008279), or None for other records."""
    uid = uid.strip()
    if uid.startswith("68") and uid[2:].isdigit() and len(uid) >= 8:
        return "D" + uid[2:]
    return None


def parse_esummary(body: bytes) -> dict[str, dict]:
    """{ui: {name, tree_numbers}} from an esummary db=mesh answer: version 2.0 (DocumentSummary with
    DS_MeshUI, DS_MeshTerms/string, DS_IdxLinks/LinksType/TreeNum) or the older DocSum/Item form.
    Entries that are not descriptors, or say ``<error>``, are left out; TreeNum values that are not
    tree numbers (supplementary records carry ``@``-codes) are dropped."""
    from .eutils import _xml

    root = _xml(body)
    out: dict[str, dict] = {}
    for doc in root.iter("DocumentSummary"):
        if doc.find("error") is not None:
            continue
        ui = None
        for child in doc:
            if isinstance(child.tag, str) and child.tag.lower() == "ds_meshui" and child.text:
                ui = child.text.strip()
        ui = ui or ui_of_uid(doc.get("uid") or "")
        if not ui or not MESH_UI_RE.match(ui):
            continue
        terms = [s.text.strip() for s in doc.iterfind("DS_MeshTerms/string") if s.text and s.text.strip()]
        trees = [t.text.strip() for t in doc.iterfind("DS_IdxLinks/LinksType/TreeNum") if t.text]
        out[ui] = {"name": terms[0] if terms else None, "tree_numbers": sorted({t for t in trees if TREE_RE.match(t)})}
    for doc in root.iter("DocSum"):
        ui = ui_of_uid(doc.findtext("Id") or "")
        items = {}
        for item in doc.iter("Item"):
            items.setdefault(item.get("Name"), []).append(item)
        for item in items.get("DS_MeshUI", []):
            ui = (item.text or "").strip() or ui
        if not ui or not MESH_UI_RE.match(ui):
            continue
        terms = [i.text.strip() for t in items.get("DS_MeshTerms", []) for i in t.iter("Item") if i is not t and i.text]
        trees = [(i.text or "").strip() for i in items.get("TreeNum", [])]
        out[ui] = {"name": terms[0] if terms else None, "tree_numbers": sorted({t for t in trees if TREE_RE.match(t)})}
    return out


def descriptor_uis(papers: Iterable[dict]) -> list[str]:
    """The descriptor UIs of the MeSH headings of `papers`, sorted."""
    return sorted({str(m.get("ui")).strip() for p in papers for m in (p.get("mesh") or ())
                   if m.get("ui") and MESH_UI_RE.match(str(m.get("ui")).strip())})


def fetch_mesh_records(client, papers: Iterable[dict]) -> list[dict]:
    """"mesh" records for every descriptor of `papers`, from esummary db=mesh (cached, 200 per request)."""
    records = []
    for found, prov in client.mesh_summaries(descriptor_uis(papers)):
        records.extend(mesh_record(ui, d["name"], d["tree_numbers"], prov) for ui, d in sorted(found.items()))
    return records


# ------------------------------------------------------------------------------------------------
# The build: "mesh" records into the lexicon
# ------------------------------------------------------------------------------------------------

def collect(store: dict, record: dict) -> None:
    """Add a "mesh" record to `store` ({ui: (name, set of tree numbers)}): tree numbers add up across
    records (the lexicon's own table, NLM's file, E-utilities), the first non-empty name wins."""
    ui = str(record.get("ui") or "").strip()
    if not MESH_UI_RE.match(ui):
        return
    numbers = {str(n).strip() for n in record.get("tree_numbers") or () if TREE_RE.match(str(n).strip())}
    name, have = store.get(ui, (None, set()))
    store[ui] = (name or record.get("name") or None, have | numbers)


def merge_into_lexicon(lexicon, store: dict) -> int:
    """Extend the lexicon's tree table (by UI and by lower-case name) with the tree numbers of "mesh"
    records; returns how many descriptors gained tree numbers. Clears the lexicon's match cache."""
    changed = 0
    for ui in sorted(store):
        name, numbers = store[ui]
        if not numbers:
            continue
        merged = tuple(sorted(set(lexicon.trees.get(ui, ())) | numbers))
        if merged != lexicon.trees.get(ui):
            changed += 1
        lexicon.trees[ui] = merged
        if name:
            lexicon.tree_names[name.lower()] = tuple(sorted(set(lexicon.tree_names.get(name.lower(), ())) | numbers))
    if changed:
        lexicon.mesh_cache.clear()
    return changed
