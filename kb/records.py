"""The interchange format between the harvest stage and `kb build`: JSON Lines records.

A data directory (`--data DIR`, default `./kb-data`) looks like this::

    DIR/
      cache/               raw E-utilities responses, gzip-compressed (kb.eutils)
      records/*.jsonl      records, one JSON object per line; `kb build` reads every file, in name order
      kb.lock              held while a harvest writes

Every record is a JSON object with a ``type``. The full field list is in docs/records.md;
in short:

``paper``
    ``id`` (kb key, see :func:`paper_key`), ``pmid``, ``doi``, ``pmcid``, ``title``, ``abstract``,
    ``abstract_sections`` [{label, category, text}], ``authors`` [{last, fore, initials, suffix,
    collective, orcid, affiliations[]}], ``journal`` {title, iso, issn, issn_type, issn_linking,
    nlm_id, country}, ``year``, ``pub_date``, ``volume``, ``issue``, ``pages``, ``languages`` [],
    ``publication_types`` [{ui, name}], ``mesh`` [{ui, name, major, qualifiers [{ui, name, major}]}],
    ``keywords`` [{text, major, owner}], ``chemicals`` [{ui, name, registry_number}],
    ``references`` [{citation, pmid, doi, pmcid}], ``kind`` ("article" | "book"), ``book`` (null, or the
    book's title, publisher, editors, isbns...), ``provenance``. ``journal`` also has ``medline_ta``;
    a MeSH heading also ``descriptor_major`` (``major`` is true when the descriptor or a qualifier is).
``citation``
    ``citing``, ``cited`` (kb keys; ``cited`` may be null when unresolved), ``raw`` (reference text),
    ``cited_pmid``, ``cited_doi``, ``source`` (``pubmed-reflist``, ``elink:pubmed_pubmed_refs``,
    ``elink:pubmed_pubmed_citedin``, ``ecitmatch``, ``esearch-title``, ``reflist-match``, ...),
    ``resolved`` (bool), ``provenance``; from `kb refs` also ``number``, ``parsed`` (the reference's
    fields), ``match`` (how it was matched) and ``score``; ``citing`` may be null there.
``seed``
    ``id`` (kb key) and ``query`` (what the user typed); marks a paper as a seed.
``deleted``
    ``pmid``: PubMed deleted this citation (``DeleteCitation``); `kb build` drops it.
``similar``
    ``paper``, ``similar`` (kb keys), ``score`` (PubMed's similar-articles score), ``provenance``.
``mesh``
    ``ui`` (MeSH descriptor UI), ``name``, ``tree_numbers`` [], ``provenance``: tree numbers for the lexicon.

``provenance`` is {source, retrieved (ISO 8601 UTC or null), request (the E-utilities request
without API key, or the file it came from), sources [URLs], note}.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ParseError

try:  # orjson reads and writes records several times faster than json (a core dependency, optional here)
    import orjson

    _loads, _DecodeError = orjson.loads, orjson.JSONDecodeError
except ImportError:  # pragma: no cover
    orjson = None
    _loads, _DecodeError = json.loads, json.JSONDecodeError

RECORD_TYPES = ("paper", "citation", "seed", "deleted", "coverage", "similar", "mesh")


def normalize_doi(doi: str | None) -> str | None:
    """A DOI in canonical form: no resolver prefix, lower case, stripped."""
    if not doi:
        return None
    doi = doi.strip()
    doi = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:\s*)", "", doi, flags=re.I)
    return doi.lower() or None


def paper_key(pmid: str | None = None, doi: str | None = None, local: str | None = None) -> str:
    """The kb key of a paper: ``pmid:N``, else ``doi:<doi>``, else ``ref:<local>``."""
    if pmid:
        return f"pmid:{str(pmid).strip()}"
    doi = normalize_doi(doi)
    if doi:
        return f"doi:{doi}"
    if local:
        return f"ref:{local}"
    raise ValueError("a paper needs a pmid, a doi or a local key")


def provenance(source: str, retrieved: str | None = None, request: str | None = None,
               sources: list[str] | None = None, note: str | None = None) -> dict:
    """A provenance object, in the one shape every record uses."""
    return {"source": source, "retrieved": retrieved, "request": request,
            "sources": sources or [], "note": note}


def dumps(record: dict) -> str:
    """One record as one line of JSON, keys sorted so that files are deterministic."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def dumps_bytes(value) -> bytes:
    """`dumps(value)` as UTF-8, by orjson where it can (the same bytes, several times faster: the hot path
    of `kb import` and of the JSON columns `kb build` writes); json for what orjson refuses."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (TypeError, ValueError):  # non-str keys, lone surrogates, integers beyond 64 bits
            pass
    return dumps(value).encode("utf-8")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, prefix: str | None = None):
    """Yield a binary file that replaces `path` only when the block succeeds (temporary file in the same
    folder, fsync, rename): a crash or an error leaves the old file, or none, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        ordinary_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_records(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records to `path` atomically (temporary file, then rename); returns the count."""
    count = 0
    with atomic_write(path) as fh:
        for record in records:
            fh.write(dumps_bytes(record) + b"\n")
            count += 1
    return count


def ordinary_permissions(path: str | os.PathLike) -> None:
    """Give a mkstemp file (created 0600) the permissions of an ordinary new file, before it is renamed in."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def record_files(data_dir: str | os.PathLike) -> list[Path]:
    """The record files of a data directory (or a single file), in a stable order."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return [data_dir]
    folder = data_dir / "records" if (data_dir / "records").is_dir() else data_dir
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.name.endswith(".jsonl") or p.name.endswith(".jsonl.gz")))


def read_records(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    """Yield the records of JSON Lines files (plain or .gz), with a clear error on a bad line."""
    for path in paths:
        path = Path(path)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:   # bytes straight to the JSON decoder: no separate UTF-8 decoding pass
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = _loads(line)
                except (_DecodeError, UnicodeDecodeError) as exc:
                    reason = getattr(exc, "msg", None) or str(exc).split(":")[0]
                    raise ParseError(f"{path}:{lineno}: not a JSON record ({reason})") from None
                if not isinstance(record, dict) or record.get("type") not in RECORD_TYPES:
                    raise ParseError(f"{path}:{lineno}: not a kb record (needs a type of {', '.join(RECORD_TYPES)})")
                yield record
