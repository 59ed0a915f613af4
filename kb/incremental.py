"""Incremental `kb build`: when the record files only grew (new files, or lines appended to old ones), the new
records are added to a copy of the existing database instead of rebuilding everything.

What is reused and what is recomputed: the per-record work of the records already built (JSON parsing, merging,
reference-text parsing of stubs, concept matching, row building, indexing and full-text indexing of their rows)
stays in the database; the new records go through the same code as in a full build (kb.store). The global
measures, which depend on the whole graph (degrees, PageRank, hops, components, communities, paper_similarity,
the concept graph and its strengths), are recomputed from the stored tables with the same functions, and only
the rows whose values changed are written. The result has the same table contents as a full build of the same
files (tests/test_incremental.py compares them row by row).

A full build leaves a state file beside the database (`.<db name>.state`, a pickle): the files and their sizes
and sha256, and what the merge rules need that the tables do not hold (which paper gave each journal, author and
MeSH field, the reference texts of the stubs, the DOI -> PMID map, the records of kinds that are rebuilt whole,
the counts behind the big tables' planner statistics: kb.planstats).
Anything an incremental build cannot reproduce exactly falls back to a full build, with the reason said:
a changed or removed file, seed or mesh records among the new records (or coverage records of a paper and
source already covered, or a deletion of a paper the database has), a new record of a paper the database
already has with its own record, a citation met again from a source it already had (or one whose stored text
cannot tell which source gave it), a DOI that would re-key existing papers, another kb version, lexicon or
--seed list, or a missing or stale state file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from . import __version__

STATE_VERSION = 2


def state_path(db_path) -> Path:
    db_path = Path(db_path)
    return db_path.with_name(f".{db_path.name}.state")


def _signature(db_path: Path) -> tuple:
    st = db_path.stat()
    return (st.st_size, st.st_mtime_ns)


def state_bytes(signature: tuple, paths, hashes, state: dict) -> bytes:
    """The state file's content for a database of that _signature: that of the file itself, or of the file about
    to be renamed to it (a rename keeps the size and mtime), so that an incremental build pickles it meanwhile."""
    state = dict(state)
    state.update(version=STATE_VERSION, kb_version=__version__, db=signature,
                 files=[(Path(p).name, Path(p).stat().st_size, Path(p).stat().st_mtime_ns, h)
                        for p, h in zip(paths, hashes)])
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def save_state(db_path, paths, hashes, state: dict, content=None):
    """Write the state file of a just-written database (atomically; a failure only disables incremental builds);
    `content`: a function giving state_bytes' result, when it is made beforehand."""
    db_path = Path(db_path)
    target = state_path(db_path)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    try:
        data = content() if content is not None else state_bytes(_signature(db_path), paths, hashes, state)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        target.unlink(missing_ok=True)


def load_state(db_path) -> dict | None:
    """The state file of `db_path` when it belongs to that very database, else None."""
    db_path = Path(db_path)
    path = state_path(db_path)
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or not db_path.is_file():
        return None
    if state.get("db") != _signature(db_path):
        return None
    return state


# tables written after the graph measures arrive (papers' rows carry them; the full-text index follows papers)
MEASURED_TABLES = ("papers", "paper_similarity", "concept_edges", "concept_citations", "kb_meta")


class Fallback(Exception):
    """Why this build cannot be incremental (a full build follows)."""


def _sha256_prefix(path: Path, size: int) -> str:
    h = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def new_parts(state: dict, paths: list[Path]) -> tuple[list, list]:
    """(sha256 of every file, [(path, offset)] of what is new: whole new files, the tails of grown ones).
    Raises Fallback when a file was removed, renamed or changed other than by appending lines."""
    old = {name: (size, mtime, sha) for name, size, mtime, sha in state["files"]}
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise Fallback("two record files share a name")
    missing = sorted(set(old) - set(names))
    if missing:
        raise Fallback(f"record file removed since the last build: {missing[0]}")
    hashes, parts = [], []
    for p in paths:
        st = p.stat()
        if p.name not in old:
            hashes.append(None)
            parts.append((p, 0))
            continue
        size, mtime, sha = old[p.name]
        if st.st_size == size and st.st_mtime_ns == mtime:
            hashes.append(sha)
            continue
        if p.name.endswith(".gz") or st.st_size < size or _sha256_prefix(p, size) != sha:
            raise Fallback(f"record file changed since the last build: {p.name}")
        if size:
            with open(p, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    raise Fallback(f"record file changed since the last build: {p.name}")
        hashes.append(None)
        if st.st_size > size:
            parts.append((p, size))
    return hashes, parts


def _read_part(path: Path, offset: int):
    """The records of a file from byte `offset` on (a whole new file: kb.records.read_records)."""
    from .errors import ParseError
    from .records import RECORD_TYPES, _loads, read_records

    if offset == 0:
        yield from read_records([path])
        return
    with open(path, "rb") as fh:
        fh.seek(offset)
        for line in fh:
            if not line.strip():
                continue
            try:
                record = _loads(line)
            except Exception:
                raise ParseError(f"{path}: a line appended since the last build is not a JSON record") from None
            if not isinstance(record, dict) or record.get("type") not in RECORD_TYPES:
                raise ParseError(f"{path}: a line appended since the last build is not a kb record")
            yield record


def _merged_edge(pair, new, old_raw, old_sources_json):
    """The citations row of an edge the database has once new sources join it (the full build's rule: source =
    the first source, PubMed's reference list first; raw = the first source's text that is not null), and the
    new sources; Fallback when the stored row cannot tell which old source gave its text."""
    import json

    from .store import REFLIST_SOURCE, _edge, _jsonl

    new = _edge(new)
    new = {new[0]: new[1]} if isinstance(new, tuple) else dict(new)
    old = json.loads(old_sources_json)
    if set(new) & set(old):
        raise Fallback(f"a citation ({pair[0]} -> {pair[1]}) met again from the same source")
    order = lambda s: (s != REFLIST_SOURCE, s)  # noqa: E731
    sources = sorted(set(old) | set(new), key=order)
    with_text = [s for s in sorted(new, key=order) if new[s]]
    first_old = min(old, key=order)
    if with_text and order(with_text[0]) < order(first_old):
        raw = new[with_text[0]]
    elif old_raw is not None and all(order(s) > order(o) for s in with_text for o in old):
        raw = old_raw
    elif old_raw is None:
        raw = new[with_text[0]] if with_text else None
    else:
        raise Fallback(f"a new source of a citation ({pair[0]} -> {pair[1]}) whose text cannot be told")
    return raw, sources[0], _jsonl(sorted(sources)), sorted(new)


def _flush(path: Path):
    """Write a file's pages to disk (fdatasync), in a thread beside the build: ext4 otherwise allocates and
    writes the delayed blocks of a file renamed over another inside the rename call (~0.3 s per GB here; a
    full build's file has been written back by then). Only a speed-up: a system that refuses it changes
    nothing."""
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            getattr(os, "fdatasync", os.fsync)(fd)        # macOS and Windows have fsync alone
        finally:
            os.close(fd)
    except OSError:
        pass


UPDATE_FROM_ROWS = 5000       # from this many rows on, _update_papers goes through a temporary table


def _update_papers(conn, columns: list[str], rows: list[tuple]) -> None:
    """UPDATE papers SET columns WHERE id = ?, for each row (*values, id). Many rows go into a temporary table
    first, then one UPDATE ... FROM: SQLite's loop instead of one statement per row (117k rows 1.17 -> 0.98 s).
    The temporary table's columns have no type, so each value is stored as the row by row UPDATE would."""
    if len(rows) < UPDATE_FROM_ROWS:
        conn.executemany(f"UPDATE papers SET {', '.join(f'[{c}] = ?' for c in columns)} WHERE id = ?", rows)
        return
    names = [f"v{i}" for i in range(len(columns))]
    conn.execute("DROP TABLE IF EXISTS temp.kb_changed")
    conn.execute(f"CREATE TEMP TABLE kb_changed ({', '.join(names)}, id PRIMARY KEY) WITHOUT ROWID")
    conn.executemany(f"INSERT INTO temp.kb_changed VALUES ({', '.join('?' * (len(columns) + 1))})", rows)
    conn.execute(f"UPDATE papers SET {', '.join(f'[{c}] = u.{n}' for c, n in zip(columns, names))} "
                 "FROM temp.kb_changed AS u WHERE u.id = papers.id")
    conn.execute("DROP TABLE temp.kb_changed")


def _changed_measures(old_ids, old_columns, old_to_new, new_columns, index, rewritten):
    """UPDATE parameters of the papers whose measure columns changed, grouped by the columns that did (an index
    of a column that is set is rewritten even when its value stays: PageRank moves nearly everywhere, the
    others rarely): [(column positions, [(*values, id)])]. The papers in `rewritten` (inserted by this
    build, measures null) get all of theirs. The comparisons run column by column in C (116k: 0.18-0.20 ->
    0.14-0.17 s in a build)."""
    import operator
    from operator import itemgetter

    import numpy as np

    from .store import MEASURE_COLUMNS

    moved = list(map(new_columns.__getitem__, old_to_new.tolist()))   # the new values of the old papers
    values = [list(map(itemgetter(j), moved)) for j in range(len(MEASURE_COLUMNS))]
    mask = np.zeros(len(old_ids), dtype=np.int64)
    for j, column in enumerate(values):
        differs = np.fromiter(map(operator.ne, map(itemgetter(j), old_columns), column), dtype=bool,
                              count=len(old_ids))
        mask |= differs.astype(np.int64) << j
    if rewritten:
        mask[[i for i, k in enumerate(old_ids) if k in rewritten]] = 0
    groups: dict = {}
    for bits in np.unique(mask).tolist():
        if bits:
            rows = np.flatnonzero(mask == bits).tolist()
            which = tuple(j for j in range(len(values)) if bits >> j & 1)
            groups[which] = list(zip(*(map(values[j].__getitem__, rows) for j in which),
                                     map(old_ids.__getitem__, rows)))
    for k in sorted(rewritten):
        new = new_columns[index[k]]
        which = tuple(j for j, v in enumerate(new) if v is not None)
        if which:
            groups.setdefault(which, []).append((*(new[j] for j in which), k))
    return sorted(groups.items())


def _changed_pairs(old_measures, measures, old_to_new, ids) -> tuple[list, list]:
    """paper_similarity's changes: the (paper_a, paper_b) pairs that went, and the rows of the pairs that are
    new or whose counts changed (keys a*n+b over the old ids re-indexed over the new ones, as the measures')."""
    import numpy as np

    n_old, n = len(old_to_new), len(ids)
    ok = old_measures["pair_keys"]
    old_keys = old_to_new[ok // n_old] * n + old_to_new[ok % n_old] if n_old else ok
    old_val = np.stack([old_measures["cocitations"], old_measures["coupling"]], axis=1) if len(ok) else \
        np.zeros((0, 2))
    new_keys = measures["pair_keys"]
    new_val = np.stack([measures["cocitations"], measures["coupling"]], axis=1) if len(new_keys) else \
        np.zeros((0, 2))
    pos = np.searchsorted(new_keys, old_keys)
    pos_c = np.minimum(pos, max(len(new_keys) - 1, 0))
    kept = (len(new_keys) > 0) & (new_keys[pos_c] == old_keys) if len(old_keys) else np.zeros(0, dtype=bool)
    gone = old_keys[~kept]
    same = np.zeros(len(new_keys), dtype=bool)
    if len(old_keys):
        same[pos_c[kept]] = np.all(new_val[pos_c[kept]] == old_val[kept], axis=1)
    write = ~same
    wk = new_keys[write]
    return ([(ids[a], ids[b]) for a, b in zip((gone // n).tolist(), (gone % n).tolist())],
            list(zip((ids[a] for a in (wk // n).tolist()), (ids[b] for b in (wk % n).tolist()),
                     measures["cocitations"][write].tolist(), measures["coupling"][write].tolist())))


def build_incremental(paths, db_path, lexicon_path=None, progress=None, seeds=()) -> dict:
    """Add the records that are new since the last build to the database (see the module docstring);
    raises Fallback (nothing written) when only a full build gives the right result."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    enabled = gc.isenabled()
    gc.disable()
    # the graph measures of a large KB, in two threads of this process (see store._start_measures)
    threads = ThreadPoolExecutor(2, thread_name_prefix="kb-graph")
    try:
        return _build_incremental([Path(p) for p in paths], Path(db_path), lexicon_path, progress, seeds, threads)
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
        if enabled:
            gc.enable()


def _build_incremental(paths, db_path, lexicon_path, progress, seeds, threads) -> dict:
    import shutil
    import sqlite3
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import sqlite_utils

    from . import mesh, planstats, store
    from .concepts import load_lexicon

    say = progress or (lambda message: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if lexicon_path is not None and str(lexicon_path) == "auto":
        raise Fallback("--concepts auto derives the concepts from every paper")
    state = load_state(db_path)
    if state is None:
        raise Fallback(f"no build state for {db_path} (built by another kb, or changed since)")
    if state["kb_version"] != __version__:
        raise Fallback(f"built by kb {state['kb_version']}")
    if state.get("auto") or state.get("seeds_arg") != sorted(seeds):
        raise Fallback("other --seed or --concepts options than the last build")
    lexicon = load_lexicon(lexicon_path)
    if lexicon.sha256 != state["lexicon_sha256"]:
        raise Fallback("the concept lexicon changed")
    for p in paths:
        if not p.is_file():
            raise Fallback(f"record file not found: {p}")
    hashes, parts = new_parts(state, paths)
    if not parts:
        raise Fallback("no new records")
    # the copy the changes go into (a running server keeps the old file), made by a thread from here on, while
    # the new records are read and the graph measured: the copy is the kernel's (sendfile), without the GIL. A
    # fallback found after this point removes it.
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    copying = ThreadPoolExecutor(1)
    copied = copying.submit(shutil.copyfile, db_path, tmp)
    flushed = None
    conn = None
    before = None                         # the database before this build, read-only, while the new rows are made
    try:
        if len(state["src"]) >= store.PARALLEL_MIN_EDGES:
            from . import graph

            threads.submit(graph.warm_up)         # numba's loops loaded while the new records are read

        reader = store._Reader()
        for path, offset in parts:
            for record in _read_part(path, offset):
                reader.add(record)
        for kind, got in (("seed", reader.seeds), ("mesh", reader.mesh)):
            if got:
                raise Fallback(f"new {kind} records")
        # coverage records: the later one of a (paper, source) wins, so only new pairs are taken incrementally;
        # similar records: the best score of a pair counts, whatever the order
        had = {(r.get("paper"), r.get("source")) for r in state["coverage"]}
        if any((r.get("paper"), r.get("source")) in had for r in reader.coverage):
            raise Fallback("new coverage records of a paper and source the knowledge base has")
        state["coverage"] = state["coverage"] + reader.coverage
        state["similar"] = state["similar"] + reader.similar
        mesh.merge_into_lexicon(lexicon, state["mesh"])

        old_ids = state["ids"]
        old_set = set(old_ids)
        before = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        # works known only from references (a "ref:" key may be a full record)
        old_stubs = {r[0] for r in before.execute("SELECT id FROM papers WHERE resolved = 0")}
        # deletions (MEDLINE update files carry them) of papers the database does not hold change nothing else
        if reader.deleted & old_set:
            raise Fallback(f"a deletion of a paper the knowledge base has: {sorted(reader.deleted & old_set)[0]}")
        deleted = state["deleted"] | reader.deleted
        doi_map = dict(state["doi_to_pmid"])
        new_papers, new_remap = reader.merged()
        for doi, key in new_remap.doi_to_pmid.items():
            if doi in doi_map or "doi:" + doi in old_set:
                raise Fallback(f"a new record shares DOI {doi} with the knowledge base")
            doi_map[doi] = key

        def remap(key):
            if key and key.startswith("doi:"):
                doi = store.normalize_doi(key[4:])
                return doi_map.get(doi, "doi:" + (doi or ""))
            return key

        papers = {}
        for key, p in new_papers.items():
            if key in deleted:
                continue
            if key in old_set and key not in old_stubs:
                raise Fallback(f"new records of a paper the knowledge base has: {key}")
            if key.startswith("doi:") and store.normalize_doi(key[4:]) in state["doi_to_pmid"]:
                raise Fallback(f"new records of a paper the knowledge base has: {key}")
            papers[key] = p
        known = old_set - old_stubs | set(papers)

        edges, raws = store._collect_edges(papers.items(), reader.citations, known, remap, deleted)
        pairs = sorted(edges)
        merged_edges = {}                    # edges the database has, with new sources: their new citations row
        old_citing = [pair for pair in pairs if pair[0] in old_set]
        if old_citing:
            for pair in old_citing:
                row = before.execute("SELECT raw, sources FROM citations WHERE citing_id = ? AND cited_id = ?",
                                     pair).fetchone()
                if row:
                    merged_edges[pair] = _merged_edge(pair, edges[pair], row[0], row[1])
            pairs = [pair for pair in pairs if pair not in merged_edges]
        stub_raws = {k: v for k, v in state["stub_raws"].items() if k not in papers}
        now_real = sorted(old_stubs & set(papers))
        targets = {k for e in pairs for k in e if k not in known}
        rebuilt = []                                          # stubs whose row is (re)written
        for key in sorted(targets):
            added = raws.get(key, set())
            if key not in old_set:
                rebuilt.append(key)
                stub_raws[key] = set(added)
            elif added - stub_raws.get(key, set()):
                rebuilt.append(key)
                stub_raws[key] = stub_raws.get(key, set()) | added
        for key in rebuilt:
            papers[key] = store._stub_paper(key, sorted(stub_raws.get(key, ())))
        stub_ids = (old_stubs - set(now_real)) | set(rebuilt)
        timings["read"] = time.perf_counter() - t0
        say(f"incremental: {len(papers) - len(rebuilt)} new papers, {len(rebuilt)} new or changed stubs, "
            f"{len(pairs)} new citations from {len(parts)} new parts ({timings['read']:.1f}s)")

        # the whole graph: old edges (index arrays of the state) re-indexed over the new ids, plus the new ones
        t = time.perf_counter()
        ids = sorted(old_set | set(papers))
        index, new_src, new_dst = store._edge_index_arrays(ids, pairs)
        old_to_new = np.fromiter(map(index.__getitem__, old_ids), dtype=np.int64, count=len(old_ids))
        # in (src, dst) order: the old edges stay in it over the new ids (old_to_new increases: both id lists are
        # sorted) and the new ones come in it (sorted pairs), so they are merged, not sorted (116k: 0.18 -> 0.02 s)
        old_src, old_dst = old_to_new[state["src"]], old_to_new[state["dst"]]
        at = np.searchsorted(old_src * len(ids) + old_dst, new_src * len(ids) + new_dst)
        src, dst = np.insert(old_src, at, new_src), np.insert(old_dst, at, new_dst)
        stub_mask = np.zeros(len(ids), dtype=bool)
        stub_mask[[index[k] for k in stub_ids]] = True
        seeds_idx = sorted(index[k] for k in state["seeds"])
        # the communities and the other measures in two threads at once, beside the new rows and their loads
        measures_result = store._start_measures(ids, src, dst, seeds_idx, stub_mask, threads=threads)

        def changes():                        # ...and what changed, in a thread as they come
            measures = measures_result()
            return (measures, _changed_measures(old_ids, state["measures"]["columns"], old_to_new,
                                                measures["columns"], index, papers),
                    *_changed_pairs(state["measures"], measures, old_to_new, ids))
        changing = threads.submit(changes)

        # the new rows, by the full build's code, with the aggregates' first-paper-wins state
        rows = store._Rows(lexicon, state["seeds"], state["journals"], state["authors"], state["descriptors"])
        for key in sorted(papers):
            rows.add(key, papers[key])
        journal_id = list(store.SCHEMA["papers"][0]).index("journal_id")
        jkeys = {r[journal_id] for r in rows.papers if r[journal_id]}
        akeys = {r[1] for r in rows.pa}
        uis = {r[1] for r in rows.mesh}
        # the new citation_sources rows, and the planner's statistics of the big tables counted meanwhile
        # (kb.planstats: the database before this build tells which keywords, publication types and sources are new)
        source_rows = list(store._citation_source_rows(pairs, edges))
        source_rows += [(a, b, source) for (a, b), (*_row, new) in sorted(merged_edges.items()) for source in new]
        rows.tally()
        stats = planstats.increment_counts(state["planstats"], before, rows, src, dst, len(ids), source_rows)
        before.close()
        timings["rows"] = time.perf_counter() - t

        t = time.perf_counter()
        copied.result()
        timings["copy"] = time.perf_counter() - t                 # the wait for it
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        store._bulk_pragmas(conn)
        db = sqlite_utils.Database(conn)
        conn.execute("BEGIN")
        replaced = now_real + [k for k in rebuilt if k in old_set]
        conn.executemany("DELETE FROM papers WHERE id = ?", ((k,) for k in replaced))
        for table, made in rows.per_paper():
            store._load_rows(conn, table, made)
        for table, made in (("journals", rows.journal_rows(jkeys)), ("authors", rows.author_rows(akeys)),
                            ("mesh_descriptors", rows.descriptor_rows(uis))):
            cols = list(store.SCHEMA[table][0])
            conn.executemany(f"INSERT OR REPLACE INTO [{table}] ({', '.join(cols)}) "
                             f"VALUES ({', '.join('?' * len(cols))})", made)
        store._load_rows(conn, "citations", store._citation_rows(pairs, edges, stub_ids))
        conn.executemany("UPDATE citations SET resolved = 1 WHERE cited_id = ?", ((k,) for k in now_real))
        conn.executemany("UPDATE citations SET raw = ?, source = ?, sources = ? WHERE citing_id = ? AND cited_id = ?",
                         ((raw, first, listed, a, b) for (a, b), (raw, first, listed, _new) in merged_edges.items()))
        store._load_rows(conn, "citation_sources", source_rows)
        everything = set(ids)
        conn.execute("DELETE FROM paper_coverage")
        store._load_rows(conn, "paper_coverage", store._coverage_rows(state["coverage"], remap, everything))
        conn.execute("DELETE FROM similar_articles")
        store._load_rows(conn, "similar_articles", store._similar_rows(state["similar"], remap, everything))
        # the copy's pages to disk meanwhile: ext4 writes them anyway, inside the final rename (~0.3 s at 116k)
        flushed = copying.submit(_flush, tmp)
        copying.shutdown(wait=False)
        # the new papers rows, their graph measures set with the others' when they come
        store._load_rows(conn, "papers", rows.papers)
        counts = {table: conn.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0]
                  for table in ("authors", "journals", "mesh_descriptors", "paper_concepts")}
        # the statistics of the tables written in full by now, while the graph threads work (the rest at the end):
        # the big ones from their counts, the others by ANALYZE
        t = time.perf_counter()
        analyzed = [table for table in store.SCHEMA if table not in MEASURED_TABLES]
        for table in analyzed:
            if table not in planstats.TABLES:
                conn.execute(f"ANALYZE [{table}]")
        planstats.write(conn, stats)
        timings["analyze"] = time.perf_counter() - t
        t = time.perf_counter()
        measures, changed_measures, gone_pairs, written_pairs = changing.result()
        timings["wait_graph"] = time.perf_counter() - t
        t = time.perf_counter()
        # the measures of every paper whose values changed (the new ones: all, over their nulls), without
        # re-indexing their text (the FTS update trigger is set aside meanwhile)
        trigger = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'papers_au'"
                               ).fetchone()
        if trigger:
            conn.execute("DROP TRIGGER papers_au")
        for columns, changed in changed_measures:
            _update_papers(conn, [store.MEASURE_COLUMNS[j] for j in columns], changed)
        if trigger:
            conn.execute(trigger[0])
        # paper_similarity: delete the pairs that went, write the new and changed ones
        conn.executemany("DELETE FROM paper_similarity WHERE paper_a = ? AND paper_b = ?", gone_pairs)
        conn.executemany("INSERT OR REPLACE INTO paper_similarity (paper_a, paper_b, cocitations, coupling) "
                         "VALUES (?, ?, ?, ?)", written_pairs)
        conn.execute("DELETE FROM concept_edges")
        conn.execute("DELETE FROM concept_citations")
        conn.execute("COMMIT")
        flushed.result()
        flushed = threads.submit(_flush, tmp)     # again: the pages the updates wrote, while the meta is made
        timings["update"] = time.perf_counter() - t
        summary = store._finish(db, conn, {**measures, "pair_keys": measures["pair_keys"][:0]}, ids, say, timings,
                                incremental_update=True)
        summary["similar_pairs"] = len(measures["pair_keys"])
        counts = {
            "papers": len(ids), "resolved_papers": len(ids) - len(stub_ids), "stub_papers": len(stub_ids),
            "citations": len(src), **counts, "seeds": len(state["seeds"]), "deleted": len(deleted), **summary}
        hashes = [h or store._sha256(p) for p, h in zip(paths, hashes)]
        origins = dict(state["origins"])
        for k, v in reader.origins.items():
            origins[k] = origins.get(k, 0) + v
        meta = store._meta(conn, counts, paths, lexicon, False, origins, hashes, state["seeds"])
        planstats.write(conn, planstats.similarity_counts(measures["pair_keys"], len(ids)))   # ANALYZE: 0.1 s
        store._write_meta(db, conn, meta, analyzed + ["paper_similarity"])
        conn.close()
        state.update(ids=ids, src=src.astype(np.int32), dst=dst.astype(np.int32), measures=measures,
                     journals=rows.journals, authors=rows.authors, descriptors=rows.descriptors,
                     stub_raws={k: v for k, v in stub_raws.items() if k in stub_ids}, doi_to_pmid=doi_map,
                     deleted=deleted, origins=origins, planstats=stats)
        pickled = threads.submit(state_bytes, _signature(tmp), paths, hashes, state)   # while the file is swapped in
        flushed.result()
        os.replace(tmp, db_path)
    except BaseException:
        try:
            for c in (conn, before):
                if c is not None:
                    c.close()
            copied.exception()                                # the copy finished (or failed) before its removal
        except Exception:
            pass
        tmp.unlink(missing_ok=True)
        raise
    save_state(db_path, paths, hashes, state, pickled.result)
    timings["total"] = time.perf_counter() - t0
    say(f"incremental build: {timings['total']:.1f}s")
    return {"db": str(db_path), "counts": counts, "timings": timings, "title": meta["title"], "incremental": True}
