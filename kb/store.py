"""`kb build`: records (JSON Lines) -> one SQLite knowledge base, written atomically.

The database is written to a temporary file beside the target and swapped in with os.replace, so a failed
build leaves the previous database untouched. On large builds helper processes work beside this one: one reads
the same record files and runs the text side of concept matching (_TextMatcher) while the build reads and makes
the edges; beside the row building, one computes the graph measures and writes paper_similarity to a file of its
own, another makes the full-text index from the papers rows in a file of its own; both files are copied in whole
(SQLite's transfer of identical tables), so the database is the same as a one-process build's. Same inputs,
same table contents: rows are inserted sorted,
every derived number is computed deterministically and no wall-clock time is stored.

Merging: records of the same paper (same kb key, or a ``doi:`` key whose DOI a PMID-keyed paper also has —
those keys are remapped to the ``pmid:`` key everywhere) are merged field by field: the first non-empty value
wins, PubMed-sourced records first, then file order. Citation edges come from each paper's ``references``
(source ``pubmed-reflist``) and from the citation records; an edge is one row per (citing, cited) with
``source`` = its first source (PubMed reference list first, then alphabetical) and ``sources`` = the sorted
JSON list of all of them. A reference that names no known id becomes a stub paper ``ref:<sha1 of the
normalised reference text>`` (resolved = 0, title = the text), so nothing is lost.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import re
import sqlite3
import time
import unicodedata
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterable

import lz4.block
import sqlite_utils

from . import __version__, mesh, planstats
from .concepts import auto_lexicon, load_lexicon, match_paper, search_terms, text_hits
from .errors import KbError, NotFound
from .records import dumps, dumps_bytes, normalize_doi, read_records, record_files
from .seeds import describe, seed_key
from .stubs import author_names, label as paper_label, stub_fields

PUBMED_SOURCES = ("pubmed", "efetch", "medline", "eutils", "entrez")
REFLIST_SOURCE = "pubmed-reflist"
FTS_COLUMNS = ["title", "abstract", "mesh_text", "keywords_text", "authors_text", "concept_terms"]
# Porter stemming over unicode61 (diacritics folded): "leukemias" finds "leukemia", "Müller" finds "Muller".
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"

# Table definitions: columns (in order), primary key, foreign keys (column, table, column).
SCHEMA = {
    "journals": ({"id": str, "title": str, "iso": str, "issn": str, "issn_linking": str, "nlm_id": str,
                  "country": str, "paper_count": int}, "id", []),
    "authors": ({"id": str, "name": str, "last_name": str, "fore_name": str, "initials": str, "collective": str,
                 "orcid": str, "paper_count": int}, "id", []),
    # papers: the short columns first (identifiers, facets, graph measures), the long texts last, so that reading
    # a facet or a measure does not walk the overflow pages of a row with a long abstract
    "papers": ({"id": str, "pmid": str, "doi": str, "pmcid": str, "title": str, "label": str,
                "journal": str, "journal_iso": str, "journal_id": str, "year": int, "pub_date": str,
                "volume": str, "issue": str, "pages": str, "language": str, "kind": str, "source": str,
                "is_seed": int, "resolved": int, "authors_display": str, "first_author": str,
                "author_count": int, "authors_complete": int, "pubmed_url": str, "doi_url": str,
                "citation_count_kb": int, "reference_count_kb": int, "pagerank": float, "hop": int,
                "component": int, "community": int,
                "mesh_major": str, "publication_types": str, "concepts": str, "keywords": str, "mesh_terms": str,
                "abstract": str, "mesh_text": str, "keywords_text": str, "authors_text": str, "concept_terms": str},
               "id", [("journal_id", "journals", "id")]),
    "paper_authors": ({"paper_id": str, "author_id": str, "position": int, "affiliations": str},
                      ("paper_id", "position"), [("paper_id", "papers", "id"), ("author_id", "authors", "id")]),
    "citations": ({"citing_id": str, "cited_id": str, "raw": str, "source": str, "sources": str, "resolved": int},
                  ("citing_id", "cited_id"), [("citing_id", "papers", "id"), ("cited_id", "papers", "id")]),
    "mesh_descriptors": ({"ui": str, "name": str, "tree_numbers": str, "paper_count": int}, "ui", []),
    "paper_mesh": ({"paper_id": str, "descriptor_ui": str, "major": int, "qualifiers": str},
                   ("paper_id", "descriptor_ui"),
                   [("paper_id", "papers", "id"), ("descriptor_ui", "mesh_descriptors", "ui")]),
    "keywords": ({"paper_id": str, "keyword": str, "major": int, "owner": str}, ("paper_id", "keyword"),
                 [("paper_id", "papers", "id")]),
    "publication_types": ({"paper_id": str, "name": str, "ui": str}, ("paper_id", "name"),
                          [("paper_id", "papers", "id")]),
    "concepts": ({"id": str, "label": str, "description": str, "mesh_uis": str, "tree_prefixes": str,
                  "synonyms": str, "patterns": str, "entry": str, "paper_count": int, "first_year": int,
                  "last_year": int}, "id", []),
    "paper_concepts": ({"paper_id": str, "concept_id": str, "evidence": str, "score": float, "evidence_list": str},
                       ("paper_id", "concept_id"), [("paper_id", "papers", "id"), ("concept_id", "concepts", "id")]),
    "concept_edges": ({"concept_a": str, "concept_b": str, "papers": int, "strength": float},
                      ("concept_a", "concept_b"), [("concept_a", "concepts", "id"), ("concept_b", "concepts", "id")]),
    "concept_citations": ({"concept_a": str, "concept_b": str, "citations": int}, ("concept_a", "concept_b"),
                          [("concept_a", "concepts", "id"), ("concept_b", "concepts", "id")]),
    "paper_similarity": ({"paper_a": str, "paper_b": str, "cocitations": int, "coupling": int},
                         ("paper_a", "paper_b"), [("paper_a", "papers", "id"), ("paper_b", "papers", "id")]),
    "kb_meta": ({"key": str, "value": str}, "key", []),
    # PubMed's similar articles of a paper (kb fetch --similar), rank 1 = most similar
    "similar_articles": ({"paper_id": str, "similar_id": str, "score": int, "rank": int}, ("paper_id", "similar_id"),
                         [("paper_id", "papers", "id"), ("similar_id", "papers", "id")]),
    # every source of each citation edge, and what each citation source knew per paper (kb.publish.completeness)
    "citation_sources": ({"citing_id": str, "cited_id": str, "source": str}, ("citing_id", "cited_id", "source"),
                         [("citing_id", "papers", "id"), ("cited_id", "papers", "id")]),
    "paper_coverage": ({"paper_id": str, "source": str, "references": int, "citers": int, "stated_references": int,
                        "status": str, "message": str}, ("paper_id", "source"), [("paper_id", "papers", "id")]),
}

FTS_POSITIONS = [list(SCHEMA["papers"][0]).index(c) for c in FTS_COLUMNS]
# the graph measures, in the order of kb.graph.compute_measures' columns; one run of papers columns
MEASURE_COLUMNS = ("citation_count_kb", "reference_count_kb", "pagerank", "hop", "component", "community")
PAPER_MEASURES = list(SCHEMA["papers"][0]).index(MEASURE_COLUMNS[0])
assert tuple(SCHEMA["papers"][0])[PAPER_MEASURES:PAPER_MEASURES + len(MEASURE_COLUMNS)] == MEASURE_COLUMNS

INDEXES = [
    ("papers", ["year"]), ("papers", ["pagerank"]), ("papers", ["hop"]), ("papers", ["is_seed"]),
    ("papers", ["journal_id"]), ("papers", ["pmid"]), ("papers", ["doi"]), ("papers", ["pmcid"]),
    ("papers", ["component"]),
    ("papers", ["community"]), ("papers", ["citation_count_kb"]), ("papers", ["resolved"]),
    # citations is WITHOUT ROWID with primary key (citing_id, cited_id): that key is the citing_id index.
    ("citations", ["cited_id"]),
    ("citation_sources", ["cited_id"]), ("citation_sources", ["source"]), ("paper_coverage", ["source", "status"]),
    ("paper_authors", ["author_id"]), ("paper_mesh", ["descriptor_ui"]), ("keywords", ["keyword"]),
    ("publication_types", ["name"]), ("paper_concepts", ["concept_id"]), ("paper_concepts", ["concept_id", "score"]),
    ("paper_similarity", ["paper_b"]), ("similar_articles", ["similar_id"]),
    ("concept_edges", ["concept_b"]), ("concept_citations", ["concept_b"]),
]

VIEWS = {
    "citation_edges": """
        SELECT c.citing_id, a.title AS citing_title, a.year AS citing_year,
               c.cited_id, b.title AS cited_title, b.year AS cited_year, c.source, c.resolved
        FROM citations c JOIN papers a ON a.id = c.citing_id JOIN papers b ON b.id = c.cited_id""",
    "concept_edge_labels": """
        SELECT e.concept_a, a.label AS label_a, e.concept_b, b.label AS label_b, e.papers, e.strength
        FROM concept_edges e JOIN concepts a ON a.id = e.concept_a JOIN concepts b ON b.id = e.concept_b""",
    "concept_citation_labels": """
        SELECT e.concept_a, a.label AS label_a, e.concept_b, b.label AS label_b, e.citations
        FROM concept_citations e JOIN concepts a ON a.id = e.concept_a JOIN concepts b ON b.id = e.concept_b""",
    "paper_similarity_labels": """
        SELECT s.paper_a, a.title AS title_a, s.paper_b, b.title AS title_b, s.cocitations, s.coupling
        FROM paper_similarity s JOIN papers a ON a.id = s.paper_a JOIN papers b ON b.id = s.paper_b""",
}


JOURNAL_FIELDS = ("title", "iso", "issn", "issn_linking", "nlm_id", "country")
AUTHOR_FIELDS = (("last_name", "last"), ("fore_name", "fore"), ("initials", "initials"),
                 ("collective", "collective"), ("orcid", "orcid"))


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _is_pubmed(record: dict) -> bool:
    source = str((record.get("provenance") or {}).get("source") or "").lower()
    return any(s in source for s in PUBMED_SOURCES)


def normalise_reference(text: str) -> str:
    """Reference text reduced to lower-case words, for a stable stub key."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"^\s*\[?\d{1,4}[\].)]?\s+", "", text)   # a leading reference number
    return " ".join(re.findall(r"\w+", text))


def stub_key(raw: str) -> str:
    """The kb key of a paper known only from a reference string."""
    return "ref:" + hashlib.sha1(normalise_reference(raw).encode("utf-8")).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonl(value) -> str:
    """A JSON column: compact, sorted keys (kb.records.dumps' text)."""
    if type(value) is list and not value:       # the common empty list, without encoding it
        return "[]"
    try:
        return dumps_bytes(value).decode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 bytes; SQLite stores the text as it is
        return dumps(value)


def _author_name(a: dict) -> str | None:
    if a.get("collective"):
        return a["collective"].strip()
    last = (a.get("last") or "").strip()
    if not last:
        return None
    initials = (a.get("initials") or "").strip()
    if not initials and a.get("fore"):
        initials = "".join(w[0] for w in re.split(r"[\s.-]+", a["fore"]) if w)
    return f"{last} {initials}".strip()


def _author_key(name: str) -> str:
    """The authors table key of a display name: NFKC-normalised (ASCII names need not be), lower case."""
    return (name if name.isascii() else unicodedata.normalize("NFKC", name)).lower()


def _authors_display(names: list[str]) -> str | None:
    if not names:
        return None
    if len(names) > 3:
        return ", ".join(names[:3]) + ", et al."
    return ", ".join(names)


def _journal_key(j: dict) -> str | None:
    if not j:
        return None
    if j.get("nlm_id"):
        return f"nlm:{j['nlm_id']}"
    issn = j.get("issn_linking") or j.get("issn")
    if issn:
        return f"issn:{issn.upper()}"
    title = j.get("title") or j.get("iso")
    if title:
        return "title:" + " ".join(re.findall(r"\w+", title.lower()))
    return None


PACK_BYTES = 2_000_000_000   # record files larger than this (gzip counted x5): their records are kept pickled


class _Codec:
    """How _Packed records are compressed. LZ4 by default (~7 us per record, the pickle shrunk by a third); zstd
    with a dictionary trained on the build's first records (trained()) makes them half LZ4's size for a few us more
    (measured on 300 real MEDLINE records held out from the 300 it was trained on: 1,025 bytes per record against
    LZ4's 2,112 and a plain pickle's 3,260)."""

    TRAIN_RECORDS = 1000          # records the dictionary is trained on
    DICT_BYTES = 65536

    def __init__(self, compress, decompress, name: str, dictionary: bytes | None = None):
        self.compress, self.decompress, self.name = compress, decompress, name
        self.dictionary = dictionary              # what with_dictionary() makes the same codec from (zstd)

    @classmethod
    def trained(cls, samples: list[bytes]) -> "_Codec":
        """zstd with a dictionary trained on `samples` (pickled records), or LZ4 when zstandard is missing or the
        samples are too few to train on."""
        try:
            import zstandard

            data = zstandard.train_dictionary(cls.DICT_BYTES, samples)
        except Exception:  # noqa: BLE001 - ImportError, or ZstdError: too few or too small samples
            return _LZ4
        return cls.with_dictionary(data.as_bytes())

    @classmethod
    def with_dictionary(cls, dictionary: bytes | None) -> "_Codec":
        """The zstd codec of a trained dictionary's bytes (another process packs with the same one); None: LZ4."""
        if dictionary is None:
            return _LZ4
        import zstandard

        data = zstandard.ZstdCompressionDict(dictionary)
        compressor = zstandard.ZstdCompressor(level=1, dict_data=data, write_checksum=False, write_dict_id=False)

        def compress(data: bytes) -> bytes:
            # copied to a bytes object of its own size: zstandard's result keeps the allocation of the compression
            # bound, so 1M records held 4x their compressed size (measured: 844 MB for 211 MB of blobs; 209 copied)
            return bytes(memoryview(compressor.compress(data)))

        return cls(compress, zstandard.ZstdDecompressor(dict_data=data).decompress, "zstd+dictionary", dictionary)


_LZ4 = _Codec(lz4.block.compress, lz4.block.decompress, "lz4")


class _Packed:
    """A paper record kept as pickled, compressed bytes while a large build reads (a fifth of the dict's memory,
    less with a trained _Codec), with the fields the build reads before making the rows (references, doi, pmcid,
    provenance) and the marks the merge sets (id, _pubmed, _sources) beside it, in slots (a dict of them would take
    ~300 bytes more per record). `unpack()` gives the record, equal to the one that was packed."""

    BESIDE = ("references", "doi", "pmcid", "provenance")
    MARKS = ("id", "_pubmed", "_sources")
    __slots__ = ("blob", "codec") + BESIDE + MARKS

    def __init__(self, record: dict, codec: _Codec = _LZ4):
        for f in self.BESIDE:
            if f in record:
                setattr(self, f, record.pop(f))
        self.codec = codec
        self.blob = codec.compress(pickle.dumps(record, protocol=5))

    @classmethod
    def restored(cls, blob: bytes, beside: dict, codec: _Codec) -> "_Packed":
        """The _Packed that parts() gave as (blob, beside) in another process (packed with the same codec)."""
        packed = cls.__new__(cls)
        packed.blob, packed.codec = blob, codec
        for f, value in beside.items():
            setattr(packed, f, value)
        return packed

    def parts(self) -> tuple[bytes, dict]:
        """(blob, fields beside it): what another process needs to restore this record."""
        return self.blob, self._beside()

    @classmethod
    def pickled(cls, record: dict) -> bytes:
        """The bytes a record's blob compresses (a sample to train a _Codec on)."""
        return pickle.dumps({k: v for k, v in record.items() if k not in cls.BESIDE}, protocol=5)

    def _beside(self) -> dict:
        return {f: getattr(self, f) for f in self.BESIDE + self.MARKS if hasattr(self, f)}

    def unpack(self) -> dict:
        record = pickle.loads(self.codec.decompress(self.blob))
        record.update(self._beside())
        return record

    def get(self, field, default=None):
        if hasattr(self, field) and field not in ("blob", "codec"):
            return getattr(self, field)
        if field in self.BESIDE:
            return default
        return self.unpack().get(field, default)     # a field in the blob: slow, and only seeds and --concepts
                                                     # auto read those before the rows

    def _repack(self, record: dict):
        for f in self._beside():
            record.pop(f, None)
        self.blob = self.codec.compress(pickle.dumps(record, protocol=5))

    def __setitem__(self, field, value):
        if field in self.BESIDE or field in self.MARKS:
            setattr(self, field, value)
        else:
            record = self.unpack()
            record[field] = value
            self._repack(record)

    def pop(self, field, default=None):
        if field in self.BESIDE or (field in self.MARKS and hasattr(self, field)):
            value = getattr(self, field, default)
            if hasattr(self, field):
                delattr(self, field)
            return value
        record = self.unpack()
        value = record.pop(field, default)
        self._repack(record)
        return value


def _record(p) -> dict:
    """The paper record of a value of the build's papers dict (packed or not)."""
    return p.unpack() if type(p) is _Packed else p


def _records_size(paths) -> int:
    """The bytes of JSON in record files (gzip counted x5)."""
    return sum(p.stat().st_size * (5 if p.name.endswith(".gz") else 1) for p in paths)


def _record_key(record: dict) -> str | None:
    """The key a paper record is read under (before DOI keys are folded into PMID keys by _Reader.merged)."""
    pmid = str(record["pmid"]).strip() if record.get("pmid") else None
    key = f"pmid:{pmid}" if pmid else record.get("id")
    if not key:
        doi = normalize_doi(record.get("doi"))
        key = f"doi:{doi}" if doi else None
    return key


class _Reader:
    """Collects and merges the records of the build's input files (kept pickled with `pack`: large builds)."""

    def __init__(self, pack: bool = False):
        self.pack = pack
        self.codec: _Codec | None = None          # with `pack`: trained on the first records (_Codec.trained)
        self.waiting: list[tuple] = []            # (entries list, index) of the records read before that
        self.papers: dict[str, list] = {}
        self.citations: list[dict] = []
        self.seeds: list[dict] = []
        self.deleted: set[str] = set()
        self.coverage: list[dict] = []
        self.similar: list[dict] = []
        self.mesh: dict[str, tuple] = {}        # descriptor UI -> (name, tree numbers), from "mesh" records
        self.order = 0
        self.origins: dict[tuple, int] = {}     # (provenance source, request) -> paper records, for kb_meta
        self.shared: dict[tuple, dict] = {}     # one copy of equal journal and MeSH heading dicts
        self.merged_keys: set[str] = set()      # after merged(): papers made of several records or a re-keyed one

    def add(self, record: dict):
        kind = record["type"]
        self.order += 1
        if kind == "paper":
            prov = record.get("provenance") or {}
            origin = (prov.get("source"), prov.get("request"))
            self.origins[origin] = self.origins.get(origin, 0) + 1
            key = _record_key(record)
            if not key:
                raise KbError(f"a paper record without id, pmid or doi: {str(record.get('title'))[:80]!r}")
            # Keep memory low on large builds: drop what the database does not hold, refs as tuples, one
            # shared copy of equal journals and MeSH headings (records kept as dicts), author fields without nulls.
            record.pop("abstract_sections", None)
            record.pop("chemicals", None)
            record.pop("book", None)
            if prov:                              # one shared {"source": ...} per source
                source = prov.get("source")
                try:
                    record["provenance"] = self.shared.setdefault(("provenance", source), {"source": source})
                except TypeError:                 # a source that is not hashable: kept as it is
                    record["provenance"] = {"source": source}
            refs = record.get("references")
            if refs:
                record["references"] = [(r, None, None) if isinstance(r, str) else
                                        (r.get("citation"), r.get("pmid"), r.get("doi")) for r in refs]
            if not self.pack:                     # a packed record is pickled alone: sharing would only cost
                self._share(record)               # time (~10 us per record) and the shared dict's memory
            authors = record.get("authors")
            if authors and isinstance(authors, list):
                record["authors"] = [{k: v for k, v in a.items() if v is not None} if isinstance(a, dict) else a
                                     for a in authors]
            entries = self.papers.setdefault(key, [])
            if self.pack and self.codec is not None:
                record = _Packed(record, self.codec)
            entries.append((0 if _is_pubmed(record) else 1, self.order, record))
            if self.pack and self.codec is None:  # the first records: kept as they are until the codec is trained
                self.waiting.append((entries, len(entries) - 1))
                if len(self.waiting) >= _Codec.TRAIN_RECORDS:
                    self._pack_waiting()
        elif kind == "citation":
            for field in ("citing", "cited", "cited_pmid", "cited_doi", "raw", "source"):
                value = record.get(field)
                if value is not None and not isinstance(value, (str, int) if field == "cited_pmid" else str):
                    raise KbError(f"a citation record whose {field} is not a string: {str(value)[:80]}")
            self.citations.append(record)
        elif kind == "seed":
            self.seeds.append(record)
        elif kind == "coverage":
            self.coverage.append(record)
        elif kind == "similar":
            self.similar.append(record)
        elif kind == "mesh":
            mesh.collect(self.mesh, record)
        elif kind == "deleted":
            if record.get("pmid"):
                self.deleted.add(f"pmid:{str(record['pmid']).strip()}")

    def _share(self, record: dict):
        """One shared copy of equal journal, MeSH heading and publication type dicts across the records kept."""
        shared = self.shared
        j = record.get("journal")
        if j and isinstance(j, dict):
            try:
                record["journal"] = shared.setdefault(tuple(j.items()), j)
            except TypeError:                 # a value that is not hashable: kept as it is
                pass
        for field in ("mesh", "publication_types"):
            items = record.get(field)
            if items and isinstance(items, list):
                for i, m in enumerate(items):
                    if not isinstance(m, dict):
                        continue
                    quals = m.get("qualifiers")
                    try:
                        if quals:                 # shared qualifiers, then the heading (keyed by their ids)
                            quals = m["qualifiers"] = [shared.setdefault(tuple(q.items()), q) for q in quals]
                            same = tuple((k, tuple(map(id, v)) if k == "qualifiers" else v)
                                         for k, v in m.items())
                        else:
                            same = tuple(m.items())
                        items[i] = shared.setdefault(same, m)
                    except (TypeError, AttributeError):
                        pass

    def portable(self) -> dict:
        """What this reader collected, as plain data another process' reader can absorb() (records packed)."""
        return {"papers": [(key, [(prio, order, *record.parts()) for prio, order, record in entries])
                           for key, entries in self.papers.items()],
                "citations": self.citations, "seeds": self.seeds, "deleted": self.deleted, "coverage": self.coverage,
                "similar": self.similar, "mesh": self.mesh, "origins": self.origins}

    def absorb(self, part: dict):
        """Add what another process' reader collected (portable()) from the file after those read here."""
        for key, entries in part["papers"]:
            self.papers.setdefault(key, []).extend(
                (prio, order, _Packed.restored(blob, beside, self.codec)) for prio, order, blob, beside in entries)
        for kind in ("citations", "seeds", "coverage", "similar"):
            getattr(self, kind).extend(part[kind])
        self.deleted |= part["deleted"]
        for ui, (name, numbers) in part["mesh"].items():
            mesh.collect(self.mesh, {"ui": ui, "name": name, "tree_numbers": numbers})
        for origin, n in part["origins"].items():
            self.origins[origin] = self.origins.get(origin, 0) + n

    def _pack_waiting(self):
        """Train the codec on the records read so far and pack them."""
        self.codec = _Codec.trained([_Packed.pickled(entries[i][2]) for entries, i in self.waiting])
        for entries, i in self.waiting:
            prio, order, record = entries[i]
            entries[i] = (prio, order, _Packed(record, self.codec))
        self.waiting = []

    def merged(self):
        """(papers by key, remap function): DOI keys folded into PMID keys, fields merged."""
        if self.waiting:
            self._pack_waiting()
        doi_to_pmid = {}
        for key in sorted(self.papers):
            if key.startswith("pmid:"):
                for _p, _o, rec in self.papers[key]:
                    doi = normalize_doi(rec.get("doi"))
                    if doi:
                        doi_to_pmid.setdefault(doi, key)

        def remap(key: str | None) -> str | None:
            if key and key.startswith("doi:"):
                return doi_to_pmid.get(normalize_doi(key[4:]), "doi:" + (normalize_doi(key[4:]) or ""))
            return key

        remap.doi_to_pmid = doi_to_pmid           # kept for kb.incremental
        groups: dict[str, list] = {}
        same_sources: dict[tuple, list] = {}
        merged_keys = self.merged_keys
        for key, recs in self.papers.items():
            folded = remap(key)
            if folded != key:
                merged_keys.add(folded)
            groups.setdefault(folded, []).extend(recs)
        papers = {}
        for key in sorted(groups):
            if key in self.deleted:
                continue
            recs = [r for _p, _o, r in sorted(groups[key], key=lambda t: (t[0], t[1]))]
            if len(recs) > 1:
                recs = [_record(r) for r in recs]
                merged_keys.add(key)
            if len(recs) == 1:
                merged = recs[0]          # the common case: no copy
            else:
                merged = {}
                for rec in recs:
                    for field, value in rec.items():
                        if _empty(merged.get(field)) and not _empty(value):
                            merged[field] = value
            merged["id"] = key
            merged["_pubmed"] = any(p == 0 for p, _o, _r in groups[key])
            sources = sorted({str((r.get("provenance") or {}).get("source") or "") for r in recs} - {""})
            merged["_sources"] = same_sources.setdefault(tuple(sources), sources)   # one list per set of sources
            merged.pop("provenance", None)
            papers[key] = merged
        self.papers = {}
        return papers, remap


FILE_ORDER = 1 << 40     # a record's order in a read with a helper: its file's index x this + its place in the file


def _read(reader: _Reader, paths: list[Path]):
    """Every record of `paths` into `reader`, in file order. A packed (large) build reads every other file in a
    helper process once the codec is trained (JSON, then the record slimmed and packed: the second core is idle
    while the build reads) and takes each file's records in turn, so the result is the one-process read's."""
    if not reader.pack or len(paths) < 3:
        for record in read_records(paths):
            reader.add(record)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool, helped = None, {}
    try:
        for i, path in enumerate(paths):
            if i in helped:
                try:
                    part = helped.pop(i).result()
                except BrokenProcessPool:
                    raise KbError(f"reading {path}: the helper process ended without a word (out of memory?)") from None
                reader.absorb(part)
                continue
            reader.order = i * FILE_ORDER
            for record in read_records([path]):
                reader.add(record)
            if pool is None and reader.codec is not None and i + 2 < len(paths):
                pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_helper_init)
                helped = {j: pool.submit(_read_packed, paths[j], j, reader.codec.dictionary)
                          for j in range(i + 2, len(paths), 2)}
    finally:
        if pool is not None:            # after a failure: the helper ends once its current file is read
            pool.shutdown(wait=True, cancel_futures=True)


def _read_packed(path: Path, index: int, dictionary: bytes | None) -> dict:
    """_read's helper: one record file read and packed as the build's reader would (reader.portable())."""
    reader = _Reader(pack=True)
    reader.codec = _Codec.with_dictionary(dictionary)
    reader.order = index * FILE_ORDER
    for record in read_records([path]):
        reader.add(record)
    return reader.portable()


def _helper_init():
    """A helper process holds no reference cycles worth collecting; Ctrl-C is the build's to handle."""
    import signal

    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _similar_rows(records: list[dict], remap, papers: dict) -> list[tuple]:
    """similar_articles rows from "similar" records: per paper, rank 1 = highest score (ties: key order);
    pairs naming a paper the KB does not hold are left out."""
    best: dict[tuple, int] = {}
    for r in records:
        a, b = remap(r.get("paper")), remap(r.get("similar"))
        if a and b and a != b and a in papers and b in papers:
            score = int(r.get("score") or 0)
            best[(a, b)] = max(score, best.get((a, b), score))
    by_paper: dict[str, list] = {}
    for (a, b), score in best.items():
        by_paper.setdefault(a, []).append((b, score))
    rows = []
    for a in sorted(by_paper):
        ranked = sorted(by_paper[a], key=lambda t: (-t[1], int(t[0][5:]) if t[0][5:].isdigit() else 0, t[0]))
        rows.extend(sorted((a, b, score, rank) for rank, (b, score) in enumerate(ranked, 1)))
    return rows


def _load_rows(conn: sqlite3.Connection, table: str, rows: Iterable[tuple]):
    cols = list(SCHEMA[table][0])
    sql = f"INSERT INTO [{table}] ({', '.join(f'[{c}]' for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
    conn.executemany(sql, rows)


WITHOUT_ROWID = {"citations", "paper_similarity", "citation_sources"}   # big tables keyed by a pair: the table is its own index


def create_table(conn, table: str, indexes: bool = False):
    """One table of SCHEMA (with its INDEXES when asked), as every build makes it."""
    db = sqlite_utils.Database(conn)
    columns, pk, fks = SCHEMA[table]
    if table in WITHOUT_ROWID:
        sql = db.create_table_sql(table, columns, pk=pk, foreign_keys=fks or None)
        db.execute(sql.rstrip().rstrip(";") + " WITHOUT ROWID")
    else:
        db.create_table(table, columns, pk=pk, foreign_keys=fks or None)
    if indexes:
        create_table_indexes(conn, table)


def create_table_indexes(conn, table: str):
    """The INDEXES of one table (those it has already are left as they are)."""
    db = sqlite_utils.Database(conn)
    for name, columns in INDEXES:
        if name == table:
            db[table].create_index(columns, if_not_exists=True)


def _create_tables(db: sqlite_utils.Database):
    for table in SCHEMA:
        create_table(db.conn, table)


def build(record_paths, db_path, lexicon_path=None, progress: Callable[[str], None] | None = None,
          seeds: Iterable[str] = ()) -> dict:
    """Build the knowledge base at `db_path` from record files; returns a summary with counts and timings.
    `lexicon_path` "auto": concepts from the records' most frequent MeSH headings (kb.concepts.auto_lexicon);
    `seeds`: identifiers (PMID, DOI, PMCID, URL or kb key) of papers to mark as seeds besides the seed records."""
    # The build holds millions of long-lived objects and makes no reference cycles worth collecting: the
    # cyclic GC would rescan them all again and again (a third of the load time on 100,000 papers).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(record_paths, db_path, lexicon_path, progress, seeds)
    finally:
        if enabled:
            gc.enable()


def _build(record_paths, db_path, lexicon_path, progress, seeds=()) -> dict:
    say = progress or (lambda message: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    auto = lexicon_path is not None and str(lexicon_path) == "auto"
    lexicon = load_lexicon(None if auto else lexicon_path)
    paths = [Path(p) for p in record_paths]
    if not paths:
        raise NotFound("no record files to build from")
    for p in paths:
        if not p.is_file():
            raise NotFound(f"record file not found: {p}")

    # the files' sha256 (kb_meta.built_from) in a thread: hashlib lets go of the GIL while it hashes
    from concurrent.futures import ThreadPoolExecutor

    hasher = ThreadPoolExecutor(1)
    hashing = hasher.submit(lambda: [_sha256(p) for p in paths])
    hasher.shutdown(wait=False)
    workers: dict = {}                        # processes working beside this one (text matches, full-text index)
    size = _records_size(paths)
    reader = _Reader(pack=size > PACK_BYTES)    # large builds keep their records pickled (_Packed)
    # the text matcher works while the second core is free: from the start of a one-process read, else (a packed
    # read has a helper of its own) from its end, through the edges phase
    match_beside = not auto and size > MATCH_HELPER_BYTES
    if match_beside and not reader.pack:
        workers["texts"] = _TextMatcher(paths, lexicon_path, lexicon.sha256)
    try:
        _read(reader, paths)
        if match_beside and reader.pack:
            workers["texts"] = _TextMatcher(paths, lexicon_path, lexicon.sha256)
        papers, remap = reader.merged()
        reader.seeds.extend({"type": "seed", "id": seed_key(s, papers, remap)} for s in seeds)
        mesh.merge_into_lexicon(lexicon, reader.mesh)   # tree numbers of "mesh" records join the lexicon's table
        if auto:                              # concept nodes from the KB's own MeSH headings (trees rolled up)
            lexicon = auto_lexicon(map(_record, papers.values()), lexicon)
    except BaseException:
        _stop_workers(workers)
        raise
    origins = reader.origins
    timings["read"] = time.perf_counter() - t0
    say(f"read: {len(papers)} papers from {len(paths)} files ({timings['read']:.1f}s)")

    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    state = None
    try:
        _bulk_pragmas(conn)
        db = sqlite_utils.Database(conn)
        conn.execute("BEGIN")
        counts, measures, state = _write_base(db, conn, papers, remap, reader, lexicon, say, timings,
                                              side_files=tmp, workers=workers)
        conn.execute("COMMIT")
        del papers, reader                    # free the records before the graph phase
        timings["load"] = time.perf_counter() - t0
        say(f"load: {counts['papers']} papers, {counts['citations']} citations ({timings['load']:.1f}s)")
        counts.update(_finish(db, conn, measures, state["ids"], say, timings, fts=workers.get("fts")))
        t = time.perf_counter()
        hashes = hashing.result()
        meta = _meta(conn, counts, paths, lexicon, auto, origins, hashes, state["seeds"])
        # the big tables' planner statistics from their counts (kb.planstats), the others' by ANALYZE
        stats = {**state["planstats"], **planstats.similarity_counts(measures["pair_keys"], len(state["ids"]))}
        _write_meta(db, conn, meta, tuple(stats))
        planstats.write(conn, stats)
        conn.close()
        timings["meta"] = time.perf_counter() - t     # kb_meta, views, ANALYZE
        os.replace(tmp, db_path)
    except BaseException:
        _stop_workers(workers)
        try:
            conn.close()
        except Exception:
            pass
        for path in (tmp, tmp.with_name(tmp.name + ".sim")):
            path.unlink(missing_ok=True)
        raise
    from . import incremental

    t = time.perf_counter()
    state.update(origins=origins, lexicon_sha256=lexicon.sha256, auto=auto, seeds_arg=sorted(seeds))
    incremental.save_state(db_path, paths, hashes, state)
    timings["state"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return {"db": str(db_path), "counts": counts, "timings": timings, "title": meta["title"]}


def _stop_workers(workers: dict):
    """After a failure: end the processes working beside the build."""
    for name in ("texts", "fts"):
        if workers.get(name) is not None:
            workers[name].close()
    pool = getattr(workers.get("measures"), "pool", None)
    if pool is not None:                      # the graph helper may still be writing its file
        pool.shutdown(wait=True, cancel_futures=True)


def _bulk_pragmas(conn):
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    # 16 MB while the rows go in (appended in key order: a larger cache only adds to the peak memory, which
    # comes then); _finish raises it to 50 MB for the index builds
    conn.execute("PRAGMA cache_size=-16000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA threads=2")             # index builds may sort in a helper thread


def _finish(db, conn, measures, ids, say, timings, incremental_update=False, fts=None) -> dict:
    """The graph tables (paper_similarity, the concept graph), indexes and FTS of a loaded database."""
    from . import graph

    t = time.perf_counter()
    if measures.get("similarity_file"):      # made by the graph helper process: copied whole
        summary = graph.copy_similarity_file(conn, measures)
    else:
        conn.execute("BEGIN")
        summary = graph.store_measures(db, measures=measures, ids=ids)
        conn.execute("COMMIT")
    timings["graph"] = time.perf_counter() - t
    say(f"graph measures: {summary['similar_pairs']} similar pairs, {summary['communities']} communities "
        f"({timings['graph']:.1f}s)")

    t = time.perf_counter()
    conn.execute("BEGIN")
    concept_counts = graph.store_concept_graph(db)
    conn.execute("COMMIT")
    timings["concepts"] = time.perf_counter() - t
    say(f"concept graph: {concept_counts['concept_edges']} edges ({timings['concepts']:.1f}s)")
    if incremental_update:
        return {**summary, **concept_counts}

    t = time.perf_counter()
    conn.execute("PRAGMA cache_size=-50000")
    conn.execute("BEGIN")
    for table, columns in INDEXES:       # after the bulk load: much faster than maintaining them
        db[table].create_index(columns, if_not_exists=True)
    conn.execute("COMMIT")
    timings["indexes"] = time.perf_counter() - t
    say(f"indexes: {timings['indexes']:.1f}s")

    # FTS last: its triggers would re-index every row an update touches. Built beside the rest on large builds.
    t = time.perf_counter()
    if fts is not None:
        fts.attach(conn)
    else:
        db["papers"].enable_fts(FTS_COLUMNS, create_triggers=True, tokenize=FTS_TOKENIZE)
    timings["fts"] = time.perf_counter() - t
    say(f"fts: {timings['fts']:.1f}s")
    return {**summary, **concept_counts}


def _meta(conn, counts, paths, lexicon, auto, origins, sha256s, seed_ids) -> dict:
    """kb_meta's rows. The seed papers (`seed_ids`, those with is_seed = 1) are read by primary key: with a
    database's statistics (an incremental build's copy), SQLite reads "is_seed = 1" as half the papers and
    scans them all (0.15 s at 116k)."""
    meta = {
        "kb_version": __version__,
        "built_from": _jsonl([{"file": p.name, "sha256": h} for p, h in zip(paths, sha256s)]),
        "lexicon": Path(lexicon.path).name if not auto else lexicon.path,
        "lexicon_sha256": lexicon.sha256,
        "counts": _jsonl(counts),
        "merge_rule": "first non-empty field; PubMed-sourced records first, then file order",
        "pagerank": "networkx definition, alpha=0.85, tol=1e-6, uniform teleport and dangling",
        "community_method": counts["community_method"],
        "similarity_max_fanout": str(counts["similarity_max_fanout"]),
        "similarity_per_paper": counts["similarity_per_paper"],
        "concept_strength": "strength = N * c_ab / (w_a * w_b): observed/expected co-occurrence, "
                            "N = papers matched against the lexicon (resolved papers)",
    }
    found = sorted(conn.execute("SELECT id, label, title FROM papers WHERE id IN (SELECT value FROM json_each(?))",
                                (_jsonl(sorted(seed_ids)),)))
    seed_rows = [{"id": i, "label": lb, "title": ti} for i, lb, ti in found]
    meta["title"], meta["description"] = describe(seed_rows, counts, [p.name for p in paths], origins)
    meta["seeds"] = _jsonl([r["id"] for r in seed_rows])
    return meta


def _write_meta(db, conn, meta, analyzed=()):
    """kb_meta, the views and the planner's statistics (ANALYZE) of every table but those `analyzed` already."""
    conn.execute("BEGIN")
    conn.execute("DELETE FROM kb_meta")
    _load_rows(conn, "kb_meta", sorted(meta.items()))
    conn.execute("COMMIT")
    for name, sql in VIEWS.items():
        db.create_view(name, sql.strip(), replace=True)
    if not analyzed:
        conn.execute("ANALYZE")
        return
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                                 "ORDER BY name").fetchall():
        if table not in analyzed:
            conn.execute(f"ANALYZE [{table}]")


def _edge(value):
    """An edge's value as (source, raw) or {source: raw}. An edge with one source, PubMed's reference list, and
    its text is stored as the text alone: most edges of a large build (a tuple each: 0.5 GB at 10M citations)."""
    return (REFLIST_SOURCE, value) if type(value) is str else value


def _collect_edges(items, citations, known, remap, deleted, edges=None, stubs=None, take=False):
    """Citation edges {(citing, cited): value (see _edge)} of papers' reference lists (`items`: (key, paper)
    pairs) and citation records, and the reference texts {key: set} of cited ids not in `known`. With `take`,
    each paper's references are taken out of it as they are read (the full build: they are not needed again)."""
    edges = {} if edges is None else edges
    stubs = {} if stubs is None else stubs

    def cited_key(pmid=None, doi=None, cited=None, raw=None):
        if cited:
            key = remap(cited)
        elif pmid:
            key = f"pmid:{str(pmid).strip()}"
        elif normalize_doi(doi):
            key = remap("doi:" + normalize_doi(doi))
        elif raw and normalise_reference(raw):
            key = stub_key(raw)
        else:
            return None
        if key not in known and raw:
            stubs.setdefault(key, set()).add(raw.strip())
        return key

    def add_edge(citing, cited, source, raw):
        # edges[(citing, cited)] = {source: raw}; most edges have a single source, kept as a tuple to save memory
        if not citing or not cited or citing == cited or citing in deleted or cited in deleted:
            return
        source = source or "unknown"
        raw = raw.strip() if raw else None
        pair = (citing, cited)
        have = edges.get(pair)
        if have is None:
            edges[pair] = raw if source == REFLIST_SOURCE and raw is not None else (source, raw)
            return
        if type(have) is not dict:
            have = _edge(have)
            have = edges[pair] = {have[0]: have[1]}
        if have.get(source) is None:
            have[source] = raw

    pmid_keys: dict = {}                      # one key string per cited PMID, not one per reference
    for key, p in items:
        for raw, pmid, doi in (p.pop("references", None) if take else p.get("references")) or ():
            if pmid:                          # the common case, cited_key inlined
                cited = pmid_keys.get(pmid)
                if cited is None:
                    cited = pmid_keys[pmid] = f"pmid:{str(pmid).strip()}"
                if raw and cited not in known:
                    stubs.setdefault(cited, set()).add(raw.strip())
            else:
                cited = cited_key(doi=doi, raw=raw)
            add_edge(key, cited, REFLIST_SOURCE, raw)
    for c in citations:
        citing = remap(c.get("citing"))
        cited = cited_key(pmid=c.get("cited_pmid"), doi=c.get("cited_doi"), cited=c.get("cited"), raw=c.get("raw"))
        add_edge(citing, cited, c.get("source"), c.get("raw"))
    return edges, stubs


def _stub_paper(key: str, raws: list) -> dict:
    """The record of a work known only from reference texts (sorted `raws`): what the texts say."""
    title = re.sub(r"^\s*\[?\d{1,4}[\].)]?\s+", "", raws[0]) if raws else None
    stub = {"id": key, "title": title, "_stub": True}
    # what the reference text gives (authors, year, journal, volume, pages, title): parsed once per text
    fields = next((f for f in map(stub_fields, raws) if f.get("year")), None) or \
        (stub_fields(raws[0]) if raws else {})
    if fields:
        stub["_fields"] = fields
        for f in ("year", "volume", "issue", "pages"):
            if fields.get(f):
                stub[f] = fields[f]
        if fields.get("title"):
            stub["title"] = fields["title"]
    if key.startswith("pmid:"):
        stub["pmid"] = key[5:]
    elif key.startswith("doi:"):
        stub["doi"] = key[4:]
    return stub


def _citation_rows(pairs, edges, stub_ids, seen: set | None = None):
    """citations rows of sorted edge pairs; every source named is added to `seen`, if given."""
    source_lists: dict[str, str] = {}
    if seen is None:
        seen = set()
    for pair in pairs:
        e = _edge(edges[pair])
        if isinstance(e, tuple):                      # one source: the common case
            first, raw = e
            listed = source_lists.get(first)
            if listed is None:
                listed = source_lists[first] = _jsonl([first])
                seen.add(first)
        else:
            seen.update(e)
            sources = sorted(e, key=lambda s: (s != REFLIST_SOURCE, s))
            first = sources[0]
            raw = next((e[s] for s in sources if e[s]), None)
            listed = _jsonl(sorted(e))
        yield (pair[0], pair[1], raw, first, listed, 0 if pair[1] in stub_ids else 1)


def _citation_source_rows(pairs, edges):
    """(citing_id, cited_id, source) for every edge and each of its sources, in primary-key order (an incremental
    build's new edges; a full build has SQLite make them from the citations rows)."""
    for pair in pairs:
        e = _edge(edges[pair])
        for source in ([e[0]] if isinstance(e, tuple) else sorted(e)):
            yield (pair[0], pair[1], source)


def _coverage_rows(records, remap, papers) -> list[tuple]:
    """paper_coverage rows from coverage records: DOI keys folded into PMID keys like papers, one row per
    (paper, source) (the later record wins, as in a merged records file), papers the build kept only."""
    rows: dict[tuple, tuple] = {}
    for r in records:
        paper = remap(r.get("paper"))
        source = r.get("source")
        if not paper or not source or paper not in papers:
            continue
        rows[(paper, source)] = (paper, source, r.get("references"), r.get("citers"), r.get("stated_references"),
                                 r.get("status") or "ok", r.get("message"))
    return [rows[k] for k in sorted(rows)]


class _Rows:
    """Builds the rows of papers and their per-paper tables, and the journals, authors and MeSH aggregates.
    Aggregate rows remember which paper gave each field ("@" = the paper that created the row, "@field" =
    a later paper that filled it), so that an incremental build can apply the same first-paper-wins rule."""

    def __init__(self, lexicon, seeds, journals=None, authors=None, descriptors=None):
        self.lexicon = lexicon
        self.seeds = seeds
        self.journals = {} if journals is None else journals
        self.authors = {} if authors is None else authors
        self.descriptors = {} if descriptors is None else descriptors
        self.papers, self.pa, self.mesh, self.kw, self.pt, self.pc = [], [], [], [], [], []
        self.concept_labels = {c.id: c.label for c in lexicon.concepts}
        self.concept_terms = {c.id: "; ".join(search_terms(c)) for c in lexicon.concepts}
        self.concept_counts: dict[str, int] = {}
        self.inserted = 0                        # papers rows inserted by flush
        self.texts: dict | None = None           # text_hits by key, made by a _TextMatcher (None: made here)
        self.own_texts: set = set()              # keys whose text_hits are made here all the same (merged papers)
        # kb.planstats: the per-paper tables' rows and distinct papers, and the distinct values of their second
        # column where no aggregate counts them (keywords, publication types), counted by tally()
        self.counted = {t: {"rows": 0, "paper_id": 0} for t, _column, _aggregate in planstats.PER_PAPER}
        self.values: dict[str, set] = {t: set() for t, _column, aggregate in planstats.PER_PAPER if not aggregate}

    def add(self, key: str, p: dict):
        stub = p.get("_stub", False)
        journals, authors, descriptors = self.journals, self.authors, self.descriptors
        pa_rows, mesh_rows, kw_rows, pt_rows, pc_rows = self.pa, self.mesh, self.kw, self.pt, self.pc
        j = p.get("journal") or {}
        if isinstance(j, str):
            j = {"title": j}
        jkey = _journal_key(j)
        if jkey:
            row = journals.get(jkey)
            if row is None:
                row = journals[jkey] = {"id": jkey, "count": 0, "@": key}
            elif key < row["@"]:                 # incremental: an earlier paper (key order) now comes first
                for f in JOURNAL_FIELDS:
                    value = j.get(f)
                    if not _empty(value) and key < row.get("@" + f, row["@"]):
                        row[f] = value
                        row["@" + f] = key
            row["count"] += 1
            # fields are only ever set to non-empty values: a field already in the row is filled
            for f in JOURNAL_FIELDS:
                if f not in row:
                    value = j.get(f)
                    if not _empty(value):
                        row[f] = value
                        if key != row["@"]:
                            row["@" + f] = key
        names = []
        for pos, a in enumerate(p.get("authors") or (), 1):
            name = _author_name(a)
            if not name:
                continue
            akey = _author_key(name)
            names.append(name)
            row = authors.get(akey)
            if row is None:
                row = authors[akey] = {"name": name, "count": 1, "last": key, "@": key}
            elif row["last"] != key:
                row["count"] += 1
                row["last"] = key
                if key < row["@"]:               # incremental: this paper is now the first of the author
                    row["name"] = name
                    for f_out, f_in in AUTHOR_FIELDS:
                        value = a.get(f_in)
                        if not _empty(value) and key < row.get("@" + f_out, row["@"]):
                            row[f_out] = value
                            row["@" + f_out] = key
                    row["@"] = key
            for f_out, f_in in AUTHOR_FIELDS:
                if f_out not in row:
                    value = a.get(f_in)
                    if not _empty(value):
                        row[f_out] = value
                        if key != row["@"]:
                            row["@" + f_out] = key
            affiliations = a.get("affiliations")
            pa_rows.append((key, akey, pos, _jsonl(affiliations) if affiliations else "[]"))
        mesh_list = p.get("mesh") or []
        seen_ui = set()
        starts = (len(mesh_rows), len(kw_rows), len(pt_rows), len(pc_rows))
        mesh_names, major_names = [], set()
        for m in mesh_list:
            name = m.get("name")
            qualifiers = m.get("qualifiers")
            major = 1 if m.get("major") else 0
            if qualifiers and not major:          # a loop, not any(generator): one per heading adds up
                for q in qualifiers:
                    if q.get("major"):
                        major = 1
                        break
            if name:
                mesh_names.append(name)
                if major:
                    major_names.add(name)
            ui = m.get("ui") or ("name:" + (name or "")).lower()
            if ui in seen_ui or ui == "name:":
                continue
            seen_ui.add(ui)
            d = descriptors.get(ui)
            if d is None:
                d = descriptors[ui] = {"name": name, "count": 0, "@": key}
            elif key < d["@"]:
                d["name"], d["@"] = name, key
            d["count"] += 1
            quals = _jsonl(sorted((q.get("name") or q.get("ui") or "") + ("*" if q.get("major") else "")
                                  for q in qualifiers)) if qualifiers else "[]"
            mesh_rows.append((key, ui, major, quals))
        kws = []
        seen_kw = set()
        for kw in p.get("keywords") or ():
            text = (kw.get("text") if isinstance(kw, dict) else kw) or ""
            text = text.strip()
            if not text or text.lower() in seen_kw:
                continue
            seen_kw.add(text.lower())
            kws.append(text)
            kw_rows.append((key, text, 1 if isinstance(kw, dict) and kw.get("major") else 0,
                            kw.get("owner") if isinstance(kw, dict) else None))
        pts = []
        for pt in p.get("publication_types") or ():
            name = (pt.get("name") if isinstance(pt, dict) else pt) or ""
            if name and name not in pts:
                pts.append(name)
                pt_rows.append((key, name, pt.get("ui") if isinstance(pt, dict) else None))
        labels, terms = [], []
        if not stub:
            concept_counts = self.concept_counts
            texts = self.texts
            if texts is not None:
                texts = None if key in self.own_texts else texts.get(key, _NO_HITS)
            for cid, best, score, evidence in match_paper(p, self.lexicon, texts):
                pc_rows.append((key, cid, best, score, _jsonl(evidence)))
                labels.append(self.concept_labels[cid])
                terms.append(self.concept_terms[cid])
                concept_counts[cid] = concept_counts.get(cid, 0) + 1
        # rows go in primary-key order: papers are visited sorted, each paper's own rows sorted here
        for rows, start in zip((mesh_rows, kw_rows, pt_rows, pc_rows), starts):
            if len(rows) - start > 1:
                rows[start:] = sorted(rows[start:])
        year = p.get("year")
        try:
            year = int(year) if year not in (None, "") else None
        except (TypeError, ValueError):
            year = None
        doi = normalize_doi(p.get("doi"))
        pmid = str(p["pmid"]) if p.get("pmid") else None
        langs = p.get("languages") or ([p["language"]] if p.get("language") else [])
        source = None if stub else ", ".join(p.get("_sources") or []) or None
        journal_title, journal_iso = j.get("title"), j.get("iso")
        fore_names = [a["fore"] for a in p.get("authors") or () if isinstance(a, dict) and a.get("fore")]
        display = _authors_display(names)
        if stub and "_fields" in p:            # a reference-only work: what its reference text says
            fields = p["_fields"]
            journal_title = journal_iso = fields.get("journal")
            names = author_names(fields)
            display = _authors_display(names)
            if display and fields.get("et_al") and not display.endswith("et al."):
                display += ", et al."
        # SCHEMA["papers"] order; the graph measures (MEASURE_COLUMNS, at PAPER_MEASURES) are filled in later
        self.papers.append((
            key, pmid, doi, p.get("pmcid"), p.get("title"),
            paper_label(names[0] if names else None, year, journal_iso or journal_title, p.get("title"), key),
            journal_title, journal_iso, jkey, year, p.get("pub_date"), p.get("volume"), p.get("issue"),
            p.get("pages"), ", ".join(langs) or None, p.get("kind"), source,
            1 if key in self.seeds else 0, 0 if stub else 1, display,
            names[0] if names else None, len(names),
            0 if p.get("authors_complete") is False or (stub and p.get("_fields", {}).get("et_al")) else 1,
            f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/" if pmid else None,
            f"https://doi.org/{doi}" if doi else None,
            None, None, None, None, None, None,
            _jsonl(sorted(major_names)), _jsonl(pts), _jsonl(labels), _jsonl(kws), _jsonl(sorted(set(mesh_names))),
            p.get("abstract"),
            "; ".join(mesh_names) or None,
            "; ".join(kws) or None,
            "; ".join(names + fore_names) or None,
            "; ".join(terms) or None))

    def flush(self, conn, fts=None):
        """Insert the rows gathered so far, the papers rows with their graph measures left null (see
        store_paper_measures); `fts` (an _FtsWorker) gets their full-text columns (rowid = insertion order)."""
        self.tally()
        _load_rows(conn, "papers", self.papers)
        if fts is not None:
            first = self.inserted + 1
            fts.send([(rowid, *(row[i] for i in FTS_POSITIONS)) for rowid, row in enumerate(self.papers, first)])
        self.inserted += len(self.papers)
        self.papers.clear()
        for table, rows in self.per_paper():
            _load_rows(conn, table, rows)
            rows.clear()

    def per_paper(self):
        """(table, rows held) of the per-paper tables."""
        return (("paper_authors", self.pa), ("paper_mesh", self.mesh), ("keywords", self.kw),
                ("publication_types", self.pt), ("paper_concepts", self.pc))

    def tally(self):
        """Count the per-paper rows held now into `counted` and `values` (a paper's rows are never split between
        two calls: flush comes between papers)."""
        for table, rows in self.per_paper():
            counted = self.counted.get(table)
            if counted is None:                  # paper_concepts: ANALYZEd, small
                continue
            counted["rows"] += len(rows)
            counted["paper_id"] += len(set(map(itemgetter(0), rows)))
            if table in self.values:
                self.values[table].update(map(itemgetter(1), rows))

    @staticmethod
    def store_paper_measures(conn, measures: dict):
        """The graph measures of the papers rows inserted by flush, in order (rowid = index + 1)."""
        conn.executemany(f"UPDATE papers SET {', '.join(c + ' = ?' for c in MEASURE_COLUMNS)} WHERE rowid = ?",
                         (cols + (i,) for i, cols in enumerate(measures["columns"], 1)))

    def journal_rows(self, keys=None):
        return ((k, r.get("title"), r.get("iso"), r.get("issn"), r.get("issn_linking"), r.get("nlm_id"),
                 r.get("country"), r["count"]) for k, r in sorted(self.journals.items()) if keys is None or k in keys)

    def author_rows(self, keys=None):
        return ((k, r["name"], r.get("last_name"), r.get("fore_name"), r.get("initials"), r.get("collective"),
                 r.get("orcid"), r["count"]) for k, r in sorted(self.authors.items()) if keys is None or k in keys)

    def descriptor_rows(self, keys=None):
        trees = self.lexicon.trees
        return ((ui, d["name"], _jsonl(list(trees.get(ui, ()))), d["count"])
                for ui, d in sorted(self.descriptors.items()) if keys is None or ui in keys)


_NO_HITS: dict = {}
MATCH_HELPER_BYTES = 64 << 20   # record files larger than this: the text side of concept matching runs beside the read


class _TextMatcher:
    """The text side of concept matching (concepts.text_hits: the keyword, title and abstract regexes) in another
    process, which reads the same record files while this one reads, merges and writes the citations: the rows
    then only add the MeSH side. A paper made of several records, or re-keyed by the merge, is matched here."""

    def __init__(self, paths: list[Path], lexicon_path, sha256: str):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.sha256 = sha256
        self.pipe, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_text_matcher, daemon=True,
                                   args=([str(p) for p in paths], None if lexicon_path is None else str(lexicon_path),
                                         child))
        self.process.start()
        child.close()

    def result(self) -> dict | None:
        """{key: text hits} of every paper record with any; None when the process failed or read another
        lexicon (then the rows make them all, as a small build does)."""
        try:
            sha256, hits = self.pipe.recv()
        except (EOFError, OSError, TypeError, ValueError):
            sha256, hits = None, None
        self.close()
        return hits if sha256 == self.sha256 else None

    def close(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.pipe.close()


def _text_matcher(paths: list[str], lexicon_path: str | None, pipe):
    """The _TextMatcher process: (lexicon sha256, {key: text hits}) out, or (None, None) if anything failed
    (the build reports bad records itself)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()
    try:
        lexicon = load_lexicon(lexicon_path)
        hits = {}
        for record in read_records(paths):
            if record["type"] == "paper":
                found = text_hits(record, lexicon)
                if found:
                    hits[_record_key(record)] = found
        pipe.send((lexicon.sha256, hits))
    except BaseException:
        try:
            pipe.send((None, None))
        except OSError:                       # the build is gone: nobody to tell
            pass


class _FtsWorker:
    """Builds the papers' full-text index in another process while this one goes on (indexes, graph tables):
    it gets the full-text columns of the papers rows as they are inserted, fills a table of the same name and
    columns in a file of its own and runs there what a build runs (sqlite-utils' enable_fts, with triggers);
    `attach` copies the index's tables and the triggers into the database. Same index, same bytes."""

    def __init__(self, path: Path):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.path = path
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_fts_worker, args=(str(path), child), daemon=True)
        self.process.start()
        child.close()

    def send(self, rows: list):
        try:
            self.pipe.send(rows)
        except OSError:                       # the process ended: say why, as one line
            raise KbError(f"full-text index: {self._why()}") from None

    def done(self):
        """No more rows: the index is made while this process goes on."""
        self.send(None)
        self.sent_all = True

    def _why(self) -> str:
        try:
            return self.pipe.recv() if self.pipe.poll(5) else "the full-text process ended without a word"
        except (EOFError, OSError):
            return "the full-text process ended without a word"

    def attach(self, conn):
        """Wait for the index and copy it into `conn`'s database (papers_fts, its shadow tables, the triggers)."""
        try:
            if not getattr(self, "sent_all", False):
                self.pipe.send(None)
            outcome = self.pipe.recv()
        except (EOFError, OSError):
            outcome = self._why()
        self.process.join()
        if outcome != "ok":
            raise KbError(f"full-text index: {outcome}")
        conn.execute("ATTACH DATABASE ? AS fts_build", (str(self.path),))
        try:
            made = conn.execute("SELECT type, name, sql FROM fts_build.sqlite_master WHERE name = 'papers_fts' "
                                "OR type = 'trigger' ORDER BY type = 'trigger', name").fetchall()
            conn.execute("BEGIN")
            conn.execute(made[0][2])                 # the virtual table: its shadow tables, as enable_fts makes them
            for (shadow,) in conn.execute("SELECT name FROM fts_build.sqlite_master WHERE type = 'table' "
                                          "AND name LIKE 'papers\\_fts\\_%' ESCAPE '\\' ORDER BY name").fetchall():
                conn.execute(f"DELETE FROM main.[{shadow}]")
                conn.execute(f"INSERT INTO main.[{shadow}] SELECT * FROM fts_build.[{shadow}]")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("DETACH DATABASE fts_build")
        conn.execute("BEGIN")
        for _type, _name, sql in made[1:]:
            conn.execute(sql)
        conn.execute("COMMIT")
        self.close()

    def close(self):
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pipe.close()
        self.path.unlink(missing_ok=True)


def _fts_worker(path: str, pipe):
    """The full-text process (see _FtsWorker): rows in, enable_fts, "ok" (or the error) out."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-8000")
        conn.execute(f"CREATE TABLE papers ({', '.join(f'[{c}] TEXT' for c in FTS_COLUMNS)})")
        insert = (f"INSERT INTO papers (rowid, {', '.join(f'[{c}]' for c in FTS_COLUMNS)}) "
                  f"VALUES (?{', ?' * len(FTS_COLUMNS)})")
        conn.execute("BEGIN")
        while (rows := pipe.recv()) is not None:
            conn.executemany(insert, rows)
        conn.execute("COMMIT")
        sqlite_utils.Database(conn)["papers"].enable_fts(FTS_COLUMNS, create_triggers=True, tokenize=FTS_TOKENIZE)
        conn.close()
        pipe.send("ok")
    except BaseException as exc:              # said by the build process, as one line
        try:
            pipe.send(f"{type(exc).__name__}: {exc}")
        except Exception:
            pass


def _release_memory():
    """Give the C heap's free pages back to the system (glibc malloc_trim): the records freed as their rows are
    made are mostly long strings, which the C allocator would otherwise keep (the build's peak memory)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def _edge_index_arrays(ids, pairs):
    """citing and cited index arrays (over the sorted ids) of sorted edge pairs."""
    import numpy as np

    index = {k: i for i, k in enumerate(ids)}
    get = index.__getitem__
    src = np.fromiter(map(get, map(itemgetter(0), pairs)), dtype=np.int64, count=len(pairs))
    dst = np.fromiter(map(get, map(itemgetter(1), pairs)), dtype=np.int64, count=len(pairs))
    return index, src, dst


PARALLEL_MIN_EDGES = 100_000     # above this, the graph measures run in other processes beside the row building


def _start_measures(ids, src, dst, seeds, stub, similarity_file: Path | None = None, threads=None):
    """Start computing the graph measures: on large graphs beside the build, in a fresh process while this one
    makes the rows, or in the `threads` executor given (an incremental build: two threads, the communities in
    one, the other measures in the other; numba's loops let go of the GIL, and threads spare a process's start,
    imports and pickling, ~1.2 s of CPU at 116k); else here. Returns a function giving the result. The results
    do not depend on where they were computed. With `similarity_file`, the helper also writes the
    paper_similarity table there (graph.write_similarity_file)."""
    from . import graph

    if len(src) < PARALLEL_MIN_EDGES:
        return lambda: graph.compute_measures(ids, src, dst, seeds, stub)
    if threads is not None:
        pool = threads
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawned, not forked: a helper holds only the arrays it is given, not a copy of the build's records
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    rest = pool.submit(graph.compute_measures, ids, src, dst, seeds, stub, communities=False,
                       similarity_file=similarity_file)
    numbers = pool.submit(graph.community_numbers, len(ids), src, dst)

    def result():
        measures = graph.with_communities(rest.result(), numbers.result())
        if threads is None:
            pool.shutdown(wait=False)         # done: the helper exits on its own, meanwhile
        return measures
    result.pool = pool if threads is None else None     # a failed build waits for it (and removes its file)
    return result


def _write_base(db, conn, papers, remap, reader, lexicon, say, timings, side_files=None, workers=None):
    """Papers, authors, journals, MeSH, keywords, citations and concept matches, with the graph measures
    computed beside them; returns (counts, measures, state for kb.incremental). With `side_files` (a path
    prefix), a large build's full-text index is made in another process (an _FtsWorker in workers["fts"])
    from the rows, and paper_similarity by the graph helper, in files of their own copied in by _finish."""
    t = time.perf_counter()
    deleted = reader.deleted
    edges, stubs = _collect_edges(papers.items(), reader.citations, papers, remap, deleted, take=True)
    seeds = {remap(s.get("id")) for s in reader.seeds if s.get("id")} - deleted
    # Stub papers for every id an edge or seed names that has no record.
    stub_ids = set(map(itemgetter(0), edges))       # every key an edge names (loops in C: ~0.4 s less at 1M)...
    stub_ids.update(map(itemgetter(1), edges), seeds)
    stub_ids.difference_update(papers)              # ...that has no record
    for key in stub_ids:
        papers[key] = _stub_paper(key, sorted(stubs.get(key, ())))
    ids = sorted(papers)
    pairs = sorted(edges)
    index, src, dst = _edge_index_arrays(ids, pairs)
    import numpy as np

    stub_mask = np.zeros(len(ids), dtype=bool)
    stub_mask[[index[k] for k in stub_ids]] = True
    measures_result = _start_measures(ids, src, dst, sorted(index[k] for k in seeds), stub_mask,
                                      similarity_file=side_files.with_name(side_files.name + ".sim")
                                      if side_files else None)
    if workers is not None:
        workers["measures"] = measures_result
    timings["edges"] = time.perf_counter() - t
    say(f"edges: {len(pairs)} citations, {len(stub_ids)} works known only from references "
        f"({timings['edges']:.1f}s)")

    t = time.perf_counter()
    _create_tables(db)
    # the citations first: then the edges (and their reference texts) can go before the rows pile up
    sources: set = set()
    _load_rows(conn, "citations", _citation_rows(pairs, edges, stub_ids, sources))
    # each edge's sources from its row's sorted source list, by SQLite (3x faster than rows made here, and in
    # primary-key order): the rows a full build used to make in Python (_citation_source_rows)
    source_rows = conn.execute("INSERT INTO citation_sources (citing_id, cited_id, source) "
                               "SELECT c.citing_id, c.cited_id, j.value FROM citations AS c, "
                               "json_each(c.sources) AS j").rowcount
    timings["citations"] = time.perf_counter() - t
    t = time.perf_counter()
    n_citations = len(pairs)
    stub_raws = {k: stubs[k] for k in stub_ids if k in stubs}
    del pairs, stubs
    edges.clear()
    _release_memory()
    rows = _Rows(lexicon, seeds)
    if workers is not None and workers.get("texts") is not None:
        rows.texts, rows.own_texts = workers["texts"].result(), reader.merged_keys
        del workers["texts"]
    fts = None
    if side_files is not None and len(src) >= PARALLEL_MIN_EDGES:   # the full-text index in another process
        fts = workers["fts"] = _FtsWorker(side_files.with_name(side_files.name + ".fts"))
    for n, key in enumerate(ids, 1):
        rows.add(key, _record(papers[key]))
        papers[key] = None                    # the record is done with: free it
        if n % 5000 == 0:
            rows.flush(conn, fts=fts)
            _release_memory()
    rows.flush(conn, fts=fts)
    if fts is not None:
        fts.done()
    _release_memory()
    _load_rows(conn, "journals", rows.journal_rows())
    _load_rows(conn, "authors", rows.author_rows())
    _load_rows(conn, "mesh_descriptors", rows.descriptor_rows())
    _load_rows(conn, "paper_coverage", _coverage_rows(reader.coverage, remap, papers))
    _load_rows(conn, "similar_articles", _similar_rows(reader.similar, remap, papers))
    _load_rows(conn, "concepts", ((c.id, c.label, c.description, _jsonl(c.mesh), _jsonl(c.tree_prefixes),
                                   _jsonl(c.synonyms), _jsonl(c.patterns + c.case_sensitive_patterns),
                                   _jsonl(c.entry()), rows.concept_counts.get(c.id, 0), None, None)
                                  for c in sorted(lexicon.concepts, key=lambda c: c.id)))
    timings["rows"] = time.perf_counter() - t
    t = time.perf_counter()
    measures = measures_result()
    timings["wait_graph"] = time.perf_counter() - t
    rows.store_paper_measures(conn, measures)
    counts = {"papers": len(ids), "resolved_papers": len(ids) - len(stub_ids), "stub_papers": len(stub_ids),
              "citations": n_citations, "authors": len(rows.authors), "journals": len(rows.journals),
              "mesh_descriptors": len(rows.descriptors), "paper_concepts": sum(rows.concept_counts.values()),
              "seeds": len(seeds), "deleted": len(deleted)}
    state = {"ids": ids, "src": src.astype(np.int32), "dst": dst.astype(np.int32), "measures": measures,
             "journals": rows.journals, "authors": rows.authors, "descriptors": rows.descriptors,
             "stub_raws": stub_raws, "seeds": seeds, "deleted": deleted,
             "coverage": reader.coverage, "similar": reader.similar, "mesh": reader.mesh,
             "doi_to_pmid": getattr(remap, "doi_to_pmid", {}),
             "planstats": planstats.full_counts(rows, src, dst, len(ids), source_rows, sources)}
    return counts, measures, state


def records_source(data_dir) -> tuple[Path, str | None]:
    """The data directory to build from: the one given, else ./kb-data when it holds records, else the
    embedded default; with the line that tells the user which (None when it was given)."""
    from .paths import DEFAULT_DATA_DIR, default_dataset

    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise NotFound(f"data directory not found: {data_dir}")
        return data_dir, None
    local = Path(DEFAULT_DATA_DIR)
    if (local / "records").is_dir() and record_files(local):
        return local, f"Building from {local}/records (the local data directory)."
    default = default_dataset()
    return default, (f"No ./{DEFAULT_DATA_DIR}/records: building the embedded default dataset "
                     f"(the Kato 2011 seed paper's neighbourhood) from {default}.")


def build_command(data_dir, db_path, lexicon, seeds=(), full: bool = False):
    """`kb build`: pick the records (data dir, ./kb-data, or the embedded default), build, print a summary.
    Incremental (kb.incremental) when the database exists and its records only grew, unless `full`."""
    import click

    data_dir, said = records_source(data_dir)
    if said:
        click.echo(said, err=True)
    files = record_files(data_dir)
    if not files:
        raise NotFound(f"no record files (*.jsonl) in {data_dir}")
    progress = lambda message: click.echo(f"  {message}", err=True)  # noqa: E731
    summary = None
    if not full and Path(db_path).is_file():
        from . import incremental

        try:
            summary = incremental.build_incremental(files, db_path, lexicon_path=lexicon, seeds=seeds,
                                                    progress=progress)
        except incremental.Fallback as why:
            click.echo(f"Full build: {why}.", err=True)
    if summary is None:
        summary = build(files, db_path, lexicon_path=lexicon, seeds=seeds, progress=progress)
    c = summary["counts"]
    if summary.get("incremental"):
        click.echo("Incremental build: the new records were added to the existing database.", err=True)
    click.echo(f"Wrote {db_path}: {c['papers']} papers ({c['stub_papers']} known only from references), "
               f"{c['citations']} citations, {c['paper_concepts']} paper-concept links, "
               f"{c['concept_edges']} concept edges in {summary['timings']['total']:.1f}s.")
    click.echo(f"Title: {summary['title']}")
    return summary
