"""The citation and concept graphs: measures computed from the database and stored back, and networkx views.

Per paper: in/out degree inside the KB, PageRank (networkx's definition: alpha 0.85, uniform teleport, dangling
mass spread uniformly, tol 1e-6; computed with numpy because networkx's pagerank needs scipy), hop (shortest
distance from any seed over citations in either direction, null when unreachable), weakly connected component
and Louvain community on the undirected graph, seed 42: networkx.community.louvain_communities up to
NX_LOUVAIN_MAX_EDGES edges, above that kb.graph.louvain (the same modularity method over flat arrays, with
Leiden-style fast local moving: 2-4x faster on 1M edges); kb_meta.community_method says which ran.
Components and communities are numbered 1, 2, ... by size, largest first, ties broken by smallest paper id.

Per pair (paper_similarity, paper_a < paper_b): cocitations = papers citing both, coupling = references shared.
Only pairs that share something are generated (grouped by citing / cited paper; counted paper by paper in a loop
compiled by numba from COMPILED_MIN_EDGES citations, vectorised numpy below); a paper with more
than `max_fanout` references (or a reference cited by more than `max_fanout` papers) adds no pairs. Stubs take
part like any paper (two papers citing the same reference-only work are coupled). The table is bounded per paper,
not globally: a pair is kept when it is among the `per_paper` best (score = cocitations + coupling) of either of
its papers (`per_stub` for a work known only from a reference list), so a paper people open keeps its most similar
papers however many pairs the KB has (kb_meta: similarity_max_fanout, similarity_per_paper). A paper gets none
only when nothing in the KB shares a reference or a citer with it (the default KB's seed: nothing else cites its
five references and nothing cites it).

Concept graph: concept_edges.papers = c_ab, the papers carrying both concepts; strength = N * c_ab / (w_a * w_b)
(VOSviewer's association strength scaled by N, the resolved papers: observed over expected co-occurrences under
independence, 1 = chance). concept_citations (a, b) = citations from a paper carrying a to a paper carrying b.
"""

from __future__ import annotations

import json
import random
from operator import itemgetter
from collections import deque
from typing import TYPE_CHECKING

try:                  # the C counting loop behind collections.Counter, without Counter's per-call overhead
    from collections import _count_elements
except ImportError:   # pragma: no cover
    def _count_elements(mapping, iterable):
        get = mapping.get
        for elem in iterable:
            mapping[elem] = get(elem, 0) + 1

import numpy as np

if TYPE_CHECKING:   # networkx is imported where it is used: a graph helper process needs numpy alone (~0.1 s less)
    import networkx as nx

PAGERANK_ALPHA = 0.85
COMMUNITY_SEED = 42
MAX_FANOUT = 100
SIMILAR_PER_PAPER = 10      # similar pairs kept per paper with its own record (its best ten)
SIMILAR_PER_STUB = 3        # ... and per work known only from a reference list
NX_LOUVAIN_MAX_EDGES = 200_000     # above this, kb.graph.louvain (same algorithm, ~10x faster) replaces networkx's


def _conn(db):
    return db.conn if hasattr(db, "conn") else db


def _edge_arrays(conn):
    """(sorted paper ids, citing index array, cited index array)."""
    ids = [r[0] for r in conn.execute("SELECT id FROM papers ORDER BY id")]
    index = {pid: i for i, pid in enumerate(ids)}
    rows = conn.execute("SELECT citing_id, cited_id FROM citations ORDER BY citing_id, cited_id").fetchall()
    citing, cited = zip(*rows) if rows else ((), ())
    del rows
    lookup = index.__getitem__
    src = np.fromiter(map(lookup, citing), dtype=np.int64, count=len(citing))
    dst = np.fromiter(map(lookup, cited), dtype=np.int64, count=len(cited))
    return ids, src, dst


def pagerank(n: int, src, dst, alpha: float = PAGERANK_ALPHA, tol: float = 1e-6, max_iter: int = 100):
    """PageRank of a directed graph given as index arrays, as networkx.pagerank defines it."""
    if n == 0:
        return np.zeros(0)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    out = np.bincount(src, minlength=n).astype(float)
    dangling = out == 0
    w = 1.0 / out[src] if len(src) else np.zeros(0)
    x = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        last = x
        spread = np.bincount(dst, weights=last[src] * w, minlength=n)
        x = alpha * (spread + last[dangling].sum() / n) + (1.0 - alpha) / n
        if np.abs(x - last).sum() < n * tol:
            break
    return x


def _group_pairs(group, member, n: int, max_fanout: int):
    """Counts of member pairs (a < b) that share a group: (sorted pair keys a*n+b, counts)."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort((member, group))
    g, m = group[order], member[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    keys = []
    for k in np.unique(sizes):
        if k < 2 or k > max_fanout:
            continue
        st = starts[sizes == k]
        block = m[st[:, None] + np.arange(k)]
        i, j = np.triu_indices(k, 1)
        keys.append(block[:, i].ravel() * n + block[:, j].ravel())
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = np.concatenate(keys)
    keys.sort()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.diff(np.r_[starts, len(keys)])


def similarity(n: int, src, dst, max_fanout: int = MAX_FANOUT):
    """(pair keys, cocitations, coupling) for every pair of papers that shares a citer or a reference."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    cok, coc = _group_pairs(src, dst, n, max_fanout)     # cited together by one citing paper
    cpk, cpl = _group_pairs(dst, src, n, max_fanout)     # citing papers sharing one reference
    keys = np.concatenate([cok, cpk])
    keys.sort()
    if len(keys):
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    cocit = np.zeros(len(keys), dtype=np.int64)
    coupl = np.zeros(len(keys), dtype=np.int64)
    cocit[np.searchsorted(keys, cok)] = coc
    coupl[np.searchsorted(keys, cpk)] = cpl
    return keys, cocit, coupl


def top_pairs(n: int, keys, score, stub, per_paper: int, per_stub: int) -> np.ndarray:
    """Which pairs (keys a*n+b) are among the `per_paper` highest-scoring of a or of b (`per_stub` for a paper
    flagged in `stub`); ties go to partners that are not stubs, then to the lower index. A boolean mask.
    `keys` are sorted and unique, as similarity() gives them."""
    keys = np.asarray(keys, dtype=np.int64)
    m = len(keys)
    if not m:
        return np.zeros(0, dtype=bool)
    a, b = keys // n, keys % n
    score = np.asarray(score, dtype=np.int64)
    top = int(score.max()) + 1
    if float(n) * n * top * 2 < 2 ** 62:
        # One int64 sort key per direction of each pair: node, then -score, a stub partner last, partner index
        # (built in place, two directions in one array, to keep memory at a few arrays of pairs).
        composite = np.empty(2 * m, dtype=np.int64)
        rest = top - 1 - score
        composite[:m] = ((a * top + rest) * 2 + stub[b]) * n + b
        composite[m:] = ((b * top + rest) * 2 + stub[a]) * n + a
        del a, b, rest
        composite.sort()                          # keys are unique: in place, no index array
        node = composite // (n * 2 * top)
        starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
        rank = np.arange(len(node)) - np.repeat(starts, np.diff(np.r_[starts, len(node)]))
        sel = rank < np.where(stub[node], per_stub, per_paper)
        del rank, starts
        mine, partner = node[sel], composite[sel] % n
        del node, composite, sel
        chosen = np.minimum(mine, partner) * n + np.maximum(mine, partner)
        keep = np.zeros(m, dtype=bool)
        keep[np.searchsorted(keys, chosen)] = True    # keys are sorted (as similarity() gives them)
        return keep
    else:                                         # pragma: no cover (tens of millions of papers)
        node, other = np.concatenate([a, b]), np.concatenate([b, a])
        order = np.lexsort((other, stub[other], -np.concatenate([score, score]), node))
        node = node[order]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    rank = np.arange(len(node)) - np.repeat(starts, np.diff(np.r_[starts, len(node)]))
    chosen = order[rank < np.where(stub[node], per_stub, per_paper)]
    keep = np.zeros(m, dtype=bool)
    keep[chosen % m] = True
    return keep


SIMILARITY_BLOCK_PAIRS = 100_000    # candidate pairs per block of similar_pairs: small blocks sort in the CPU cache
# from this many citations similar_pairs runs its compiled loop (below, numpy takes milliseconds, and a first
# build, the default knowledge base's, is spared numba's 1.5 s compilation)
COMPILED_MIN_EDGES = 50_000


def _memberships(src, dst, n: int, max_fanout: int):
    """The groups of 2..max_fanout members on both sides: (cocited, coupled), for the references of a citing
    paper and the citers of a cited paper, each as its members (CSR: indptr, members), each node's groups (CSR:
    node_ptr, node_groups) and each group's size. Both come from the edges sorted two ways, as citing*n+cited
    (the order kb keeps them in: a stable sort of sorted keys is a pass) and cited*n+citing."""
    by_citing = np.sort(src * n + dst, kind="stable")
    by_cited = np.sort(dst * n + src, kind="stable")

    def side(group_first, member_first, size):
        kept = (size >= 2) & (size <= max_fanout)
        listed = group_first[kept[group_first // n]]
        belongs = member_first[kept[member_first % n]]
        node = belongs // n
        indptr = np.r_[0, np.cumsum(np.where(kept, size, 0))]
        node_ptr = np.r_[0, np.cumsum(np.bincount(node, minlength=n))]
        return indptr, listed % n, node_ptr, belongs % n, size

    return (side(by_citing, by_cited, np.bincount(src, minlength=n)),
            side(by_cited, by_citing, np.bincount(dst, minlength=n)))


def _block_counts(lo: int, hi: int, n: int, groups) -> tuple:
    """(sorted keys (u - lo) * n + v, counts): for every node u in [lo, hi) and every other node v, the groups
    holding both (each unordered pair counted from u's side here, from v's in v's block)."""
    indptr, members, node_ptr, node_groups, size = groups
    gs = node_groups[node_ptr[lo]:node_ptr[hi]]
    us = np.repeat(np.arange(lo, hi), np.diff(node_ptr[lo:hi + 1]))
    k = size[gs]
    total = int(k.sum())
    if not total:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ends = np.cumsum(k)
    pos = np.repeat(indptr[gs] - (ends - k), k) + np.arange(total)
    v = members[pos]
    u = np.repeat(us, k)
    del pos, gs, us, k, ends
    keys = (u - lo) * n + v
    keys = keys[u != v]
    del u, v
    keys.sort()
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.diff(np.r_[starts, len(keys)])


def similar_pairs(n: int, src, dst, stub, max_fanout: int = MAX_FANOUT, per_paper: int = SIMILAR_PER_PAPER,
                  per_stub: int = SIMILAR_PER_STUB, block_pairs: int = SIMILARITY_BLOCK_PAIRS) -> tuple:
    """The kept paper_similarity pairs: (sorted keys a*n+b, cocitations, coupling) of the pairs among the
    `per_paper` best of a or of b (`per_stub` for a stub), exactly top_pairs(similarity(...)), computed paper
    by paper (_node_choices, compiled: COMPILED_MIN_EDGES) or, on small graphs and without numba, for a block of
    papers at a time (every pair touching the block, counted and ranked) so that memory holds about
    `block_pairs` candidate pairs, not all of them."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    stub = np.asarray(stub, dtype=bool)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0 or len(src) == 0:
        return empty, empty, empty
    # cited together by one citing paper; citing papers sharing one reference
    cocited, coupled = _memberships(src, dst, n, max_fanout)
    compiled = _compiled("choices", _node_choices) if len(src) >= COMPILED_MIN_EDGES else None
    if compiled is not None:                      # one pass over the nodes, a scratch count per partner
        u, v, cocit, coupl = compiled(0, n, *cocited[:4], *coupled[:4], stub, per_paper, per_stub)
        keys = np.minimum(u, v).astype(np.int64) * n + np.maximum(u, v)
        del u, v
        keys, cocit, coupl = merge_pairs(keys, cocit, coupl)
        return keys, cocit.astype(np.int64), coupl.astype(np.int64)
    # candidate pairs per node (an upper bound: a partner met in several groups counts each time)
    work = np.zeros(n, dtype=np.int64)
    for _indptr, _members, node_ptr, node_groups, size in (cocited, coupled):
        node_of = np.repeat(np.arange(n), np.diff(node_ptr))
        work += np.bincount(node_of, weights=size[node_groups] - 1, minlength=n).astype(np.int64)
    cum = np.cumsum(work)
    bounds, lo = [0], 0
    while lo < n:
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + block_pairs, side="right"))
        lo = max(hi, lo + 1)
        bounds.append(min(lo, n))
    limit = np.where(stub, per_stub, per_paper)
    out_keys, out_coc, out_cpl = [], [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cok, coc = _block_counts(lo, hi, n, cocited)
        cpk, cpl = _block_counts(lo, hi, n, coupled)
        keys = np.concatenate([cok, cpk])
        keys.sort()
        if not len(keys):
            continue
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
        cocit = np.zeros(len(keys), dtype=np.int64)
        coupl = np.zeros(len(keys), dtype=np.int64)
        cocit[np.searchsorted(keys, cok)] = coc
        coupl[np.searchsorted(keys, cpk)] = cpl
        del cok, coc, cpk, cpl
        u, v = keys // n + lo, keys % n
        score = cocit + coupl
        top = int(score.max()) + 1
        if float(hi - lo) * top * 2 * n < 2 ** 62:
            # rank each node's partners: -score, then a stub partner last, then partner index (top_pairs' order)
            order = np.argsort((((u - lo) * top + (top - 1 - score)) * 2 + stub[v]) * n + v)
        else:                                         # pragma: no cover (tens of millions of papers)
            order = np.lexsort((v, stub[v], -score, u))
        u_sorted = u[order]
        starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        chosen = order[rank < limit[u_sorted]]
        del u_sorted, starts, rank, order
        a, b = np.minimum(u[chosen], v[chosen]), np.maximum(u[chosen], v[chosen])
        out_keys.append(a * n + b)
        out_coc.append(cocit[chosen])
        out_cpl.append(coupl[chosen])
        del keys, u, v, score, cocit, coupl, chosen
    # joined here, each list dropped once joined: at 1M papers the blocks hold 10M pairs (240 MB)
    joined = []
    for parts in (out_keys, out_coc, out_cpl):
        joined.append(np.concatenate(parts) if parts else empty)
        parts.clear()
    return merge_pairs(*joined)


def _node_choices(lo, hi, co_indptr, co_members, co_node_ptr, co_groups, cp_indptr, cp_members, cp_node_ptr,
                  cp_groups, stub, per_paper, per_stub):
    """For each node u in [lo, hi): its partners v with their cocitations and coupling counted in a scratch row
    per node (last visitor, cocitations, coupling, stub flag: one cache line at a million papers; a partner's
    first sighting kept in a list), ranked as top_pairs ranks them (-score, a stub partner last, partner index)
    and cut at u's limit, keeping only the best few in order. (u, v, cocitations, coupling) of the chosen pairs."""
    n = len(stub)
    if n >= 2 ** 31:                              # pragma: no cover (the int32 rows below)
        raise ValueError("more than 2**31 papers")
    seen = np.zeros((n, 4), dtype=np.int32)
    for v in range(n):
        seen[v, 0] = -1
        seen[v, 3] = 1 if stub[v] else 0
    touched = np.zeros(n, dtype=np.int64)
    most = max(per_paper, per_stub, 0)
    best = np.zeros(most + 1, dtype=np.int64)
    out_u = np.zeros((hi - lo) * most, dtype=np.int32)       # int32: 10M pairs at 1M papers take 160 MB, not 320
    out_v = np.zeros((hi - lo) * most, dtype=np.int32)
    out_coc = np.zeros((hi - lo) * most, dtype=np.int32)
    out_cpl = np.zeros((hi - lo) * most, dtype=np.int32)
    found = 0
    for u in range(lo, hi):
        limit = per_stub if stub[u] else per_paper
        if limit <= 0:
            continue
        nt = 0
        for side in range(2):
            indptr, members, node_ptr, groups = (co_indptr, co_members, co_node_ptr, co_groups) if side == 0 \
                else (cp_indptr, cp_members, cp_node_ptr, cp_groups)
            for gi in range(node_ptr[u], node_ptr[u + 1]):
                g = groups[gi]
                for e in range(indptr[g], indptr[g + 1]):
                    v = members[e]
                    if v == u:
                        continue
                    if seen[v, 0] != u:
                        seen[v, 0] = u
                        seen[v, 1] = 0
                        seen[v, 2] = 0
                        touched[nt] = v
                        nt += 1
                    seen[v, 1 + side] += 1
        if nt == 0:
            continue
        top = 0
        for i in range(nt):
            v = touched[i]
            top = max(top, seen[v, 1] + seen[v, 2])
        kept = 0                                  # the `limit` smallest ranks so far, in order (insertion)
        for i in range(nt):
            v = touched[i]
            r = ((top - seen[v, 1] - seen[v, 2]) * 2 + seen[v, 3]) * np.int64(n) + v
            if kept == limit:
                if r >= best[kept - 1]:
                    continue
                kept -= 1
            j = kept
            while j and best[j - 1] > r:
                best[j] = best[j - 1]
                j -= 1
            best[j] = r
            kept += 1
        for i in range(kept):
            v = best[i] % n
            out_u[found] = u
            out_v[found] = v
            out_coc[found] = seen[v, 1]
            out_cpl[found] = seen[v, 2]
            found += 1
    return out_u[:found], out_v[:found], out_coc[:found], out_cpl[:found]


def merge_pairs(keys, cocit, coupl) -> tuple:
    """(keys, cocitations, coupling) of the chosen pairs: sorted, each pair once (a pair chosen by both its
    papers comes twice, with the same counts)."""
    if not len(keys):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    order = order[first]                      # the first of each pair's copies, in key order
    return keys[first], cocit[order], coupl[order]


def _sorted_unique(values) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is many times slower on millions of int64)."""
    values = np.sort(np.asarray(values, dtype=np.int64))
    if len(values):
        values = values[np.r_[True, values[1:] != values[:-1]]]
    return values


def _none(_comm):
    """The neighbour communities of a node without neighbours (itemgetter() needs an item)."""
    return ()


def _one(v):
    """The neighbour communities of a node with one neighbour, as a tuple (itemgetter(v) gives a scalar)."""
    return lambda comm: (comm[v],)


def _local_moving(order, indptr, flat, flat_w, k, m2: float):
    """One level's local moving of louvain() (fast local moving, as in Leiden: after the first sweep over
    `order`, only nodes next to a move are revisited): (community per node, whether any node moved)."""
    size = len(k)
    bounds = indptr.tolist()
    flat_l = flat.tolist()
    nbrs = [flat_l[bounds[i]:bounds[i + 1]] for i in range(size)]
    unit = bool(np.all(flat_w == 1.0))        # the first level: every weight 1, links are plain counts
    if unit:                                  # per node, a C function giving its neighbours' communities
        getters = [itemgetter(*nb) if len(nb) > 1 else _one(nb[0]) if nb else _none for nb in nbrs]
    else:
        flat_wl = flat_w.tolist()
        nwts = [flat_wl[bounds[i]:bounds[i + 1]] for i in range(size)]
    del flat_l
    kl = k.tolist()
    comm = list(range(size))
    tot = kl[:]
    queue = deque(order)
    queued = [True] * size
    moved_any = False
    while queue:
        u = queue.popleft()
        queued[u] = False
        cu = comm[u]
        ku = kl[u]
        if unit:
            links = {}                                # same keys, order and sums as the loop below
            _count_elements(links, getters[u](comm))
        else:
            links = {}
            get = links.get
            for v, wt in zip(nbrs[u], nwts[u]):
                c = comm[v]
                links[c] = get(c, 0.0) + wt
        tot[cu] -= ku
        best = cu
        best_score = links.get(cu, 0.0) - tot[cu] * ku / m2
        for c, wc in links.items():
            score = wc - tot[c] * ku / m2
            if score > best_score + 1e-12:
                best, best_score = c, score
        tot[best] += ku
        if best != cu:
            comm[u] = best
            moved_any = True
            wake = [v for v in nbrs[u] if not queued[v] and comm[v] != best]
            for v in wake:
                queued[v] = True
            queue.extend(wake)
    return comm, moved_any


def _local_moving_arrays(order, indptr, flat, flat_w, k, m2):
    """_local_moving over arrays, step for step (the same visits, sums in the same order, the same first-best
    rule), for numba to compile: a neighbour community's links are summed in a scratch array and its first
    appearance kept in a list, as the dict of _local_moving keeps its keys."""
    size = len(k)
    comm = np.arange(size)
    tot = k.copy()
    links = np.zeros(size)
    stamp = np.full(size, -1)
    seen = np.zeros(size, dtype=np.int64)
    queue = np.zeros(max(size, 1), dtype=np.int64)
    queued = np.ones(size, dtype=np.bool_)
    head = 0
    count = size
    for i in range(size):
        queue[i] = order[i]
    moved_any = False
    visit = 0
    while count:
        u = queue[head]
        head = (head + 1) % size
        count -= 1
        queued[u] = False
        cu = comm[u]
        ku = k[u]
        nseen = 0
        for e in range(indptr[u], indptr[u + 1]):
            c = comm[flat[e]]
            if stamp[c] != visit:
                stamp[c] = visit
                links[c] = 0.0
                seen[nseen] = c
                nseen += 1
            links[c] = links[c] + flat_w[e]
        tot[cu] -= ku
        best = cu
        best_score = (links[cu] if stamp[cu] == visit else 0.0) - tot[cu] * ku / m2
        for i in range(nseen):
            c = seen[i]
            score = links[c] - tot[c] * ku / m2
            if score > best_score + 1e-12:
                best = c
                best_score = score
        tot[best] += ku
        if best != cu:
            comm[u] = best
            moved_any = True
            for e in range(indptr[u], indptr[u + 1]):
                v = flat[e]
                if not queued[v] and comm[v] != best:
                    queued[v] = True
                    queue[(head + count) % size] = v
                    count += 1
        visit += 1
    return comm, moved_any


_COMPILED = {}


def _compiled(name, function):
    """`function` (a loop over arrays) compiled by numba, cached on disk, or None without numba (the caller then
    takes its numpy or Python path: same result, several times slower)."""
    if name not in _COMPILED:
        try:
            import numba
        except ImportError:                       # pragma: no cover (numba is a dependency; kept optional)
            _COMPILED[name] = None
        else:
            _COMPILED[name] = numba.njit(cache=True, nogil=True)(function)
    return _COMPILED[name]


def _local_moving_compiled():
    """_local_moving_arrays compiled (see _compiled): the same communities, ~15x faster."""
    return _compiled("moving", _local_moving_arrays)


def louvain(n: int, src, dst, seed: int = COMMUNITY_SEED) -> list:
    """Louvain communities (modularity, resolution 1) of the undirected graph of the edges: a node's
    community label per index. The same algorithm as networkx.community.louvain_communities, written over
    flat arrays so that graphs of millions of edges take seconds, not minutes; deterministic for a seed."""
    rng = random.Random(seed)
    a = np.minimum(src, dst).astype(np.int64)
    b = np.maximum(src, dst).astype(np.int64)
    keep = a != b
    key = _sorted_unique(a[keep] * n + b[keep])
    a, b, w = key // max(n, 1), key % max(n, 1), np.ones(len(key))
    final = np.arange(n)
    size = n
    while size:
        k = np.bincount(a, weights=w, minlength=size) + np.bincount(b, weights=w, minlength=size)
        m2 = float(k.sum())
        if m2 == 0:
            break
        # Neighbour ids (ascending) and, in step, their edge weights (CSR built by numpy).
        loop = a != b
        src_, dst_ = np.concatenate([a[loop], b[loop]]), np.concatenate([b[loop], a[loop]])
        order_nb = np.lexsort((dst_, src_))
        indptr = np.r_[0, np.cumsum(np.bincount(src_, minlength=size))]
        flat = dst_[order_nb]
        flat_w = np.concatenate([w[loop], w[loop]])[order_nb]
        del src_, dst_, order_nb
        order = list(range(size))
        rng.shuffle(order)
        moving = _local_moving_compiled()
        if moving is not None:
            comm, moved_any = moving(np.asarray(order, dtype=np.int64), indptr, flat, flat_w, k, m2)
        else:
            comm, moved_any = _local_moving(order, indptr, flat, flat_w, k, m2)
        del flat, flat_w
        if not moved_any:
            break
        comm_arr = np.asarray(comm)
        present = np.zeros(size, dtype=bool)
        present[comm_arr] = True
        labels = (np.cumsum(present) - 1)[comm_arr]          # communities renumbered 0.. in index order
        final = labels[final]
        size = int(labels.max()) + 1
        ca, cb = labels[a], labels[b]
        lo, hi = np.minimum(ca, cb), np.maximum(ca, cb)
        key = lo * size + hi
        order_idx = np.argsort(key, kind="stable")
        key, w = key[order_idx], w[order_idx]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
        w = np.add.reduceat(w, starts) if len(key) else w
        key = key[starts]
        a, b = key // size, key % size
    return final.tolist()


def components(n: int, src, dst) -> np.ndarray:
    """Weakly connected components: each node's smallest reachable index (min-label propagation)."""
    label = np.arange(n)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    while True:
        low = np.minimum(label[src], label[dst])
        new = label.copy()
        np.minimum.at(new, src, low)
        np.minimum.at(new, dst, low)
        while True:                               # pointer jumping: follow labels to their roots
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return label
        label = new


def _groups(labels) -> list:
    out: dict = {}
    for node, label in enumerate(labels):
        out.setdefault(label, []).append(node)
    return list(out.values())


def _numbered(groups) -> dict:
    """Node index -> group number (1 = largest group; ties by smallest member)."""
    ordered = sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g[0]))
    out = {}
    for number, g in enumerate(ordered, 1):
        for node in g:
            out[node] = number
    return out


def hops(n: int, src, dst, seeds) -> list:
    """Shortest distance from any seed, over citations in either direction (None when unreachable):
    breadth-first by whole frontiers over a numpy adjacency (CSR)."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    m = len(src)
    kind = np.int32 if n < 2 ** 31 else np.int64      # half the memory of the 2m-long arrays (10M edges: 0.3 GB less)
    ends_a, ends_b = np.empty(2 * m, dtype=kind), np.empty(2 * m, dtype=kind)
    ends_a[:m], ends_a[m:], ends_b[:m], ends_b[m:] = src, dst, dst, src
    indptr = np.r_[0, np.cumsum(np.bincount(ends_a, minlength=n))]
    order = np.argsort(ends_a, kind="stable")
    del ends_a
    adj = ends_b[order]
    del ends_b, order
    dist = np.full(n, -1, dtype=np.int64)
    frontier = np.unique(np.asarray(list(seeds), dtype=np.int64))
    dist[frontier] = 0
    d = 0
    while len(frontier):
        d += 1
        starts, counts = indptr[frontier], indptr[frontier + 1] - indptr[frontier]
        total = int(counts.sum())
        if not total:
            break
        offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
        reached = adj[offsets + np.arange(total)]
        reached = np.unique(reached[dist[reached] < 0])
        dist[reached] = d
        frontier = reached
    return [None if x < 0 else x for x in dist.tolist()]


def compute_measures(ids, src, dst, seeds, stub, *, max_fanout: int = MAX_FANOUT,
                     per_paper: int = SIMILAR_PER_PAPER, per_stub: int = SIMILAR_PER_STUB,
                     seed: int = COMMUNITY_SEED, communities: bool = True, similarity_file=None) -> dict:
    """Every per-paper measure and the kept paper_similarity pairs of a citation graph given as index arrays
    over the sorted paper ids (`seeds`: seed indexes, `stub`: a boolean mask of works known only from a
    reference list). Pure computation (no database), so that a build can run it in a second process.
    communities=False leaves the community column None (see community_numbers, which computes it alone);
    with `similarity_file`, the paper_similarity table is written there (write_similarity_file)."""
    n = len(ids)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    indeg = np.bincount(dst, minlength=n)
    outdeg = np.bincount(src, minlength=n)
    pr = pagerank(n, src, dst)
    dist = hops(n, src, dst, seeds)
    component = _numbered(_groups(components(n, src, dst).tolist()))
    community, found, method = community_numbers(n, src, dst, seed) if communities else ({}, None, None)
    # Bound the table per paper, not globally: a pair stays when it is among the best `per_paper` of either
    # paper (best `per_stub` for a work known only from a reference list), so every paper keeps its best pairs.
    keys, cocit, coupl = similar_pairs(n, src, dst, stub, max_fanout, per_paper, per_stub)
    get = community.get
    columns = [(int(indeg[i]), int(outdeg[i]), round(float(pr[i]), 12), dist[i], component[i], get(i))
               for i in range(n)]
    measures = {"columns": columns, "pair_keys": keys, "cocitations": cocit, "coupling": coupl,
                "summary": {"similar_pairs": len(keys), "components": len(set(component.values())),
                            "communities": found, "community_method": method,
                            "similarity_max_fanout": max_fanout,
                            "similarity_per_paper": f"the {per_paper} most similar papers of each paper with its "
                                                    f"own record and the {per_stub} of each work known only from a "
                                                    f"reference list (ties: papers with their own record first, "
                                                    f"then by id)"}}
    if similarity_file is not None:
        write_similarity_file(similarity_file, ids, measures)
    return measures


def warm_up():
    """Load the compiled loops of similar_pairs and louvain (numba's on-disk cache: ~0.5 s at the first call in
    a process) by running them on a tiny graph, with the argument types of a real one: an incremental build
    does it in a thread while it reads the new records."""
    src = np.array([0, 0, 1, 2], dtype=np.int64)
    dst = np.array([1, 2, 2, 3], dtype=np.int64)
    n = 4
    choices = _compiled("choices", _node_choices)
    if choices is not None:
        cocited, coupled = _memberships(src, dst, n, MAX_FANOUT)
        choices(0, n, *cocited[:4], *coupled[:4], np.zeros(n, dtype=bool), SIMILAR_PER_PAPER, SIMILAR_PER_STUB)
    louvain(n, src, dst)


def community_numbers(n: int, src, dst, seed: int = COMMUNITY_SEED) -> tuple:
    """(node index -> community number, number of communities, method): Louvain on the undirected graph,
    networkx's up to NX_LOUVAIN_MAX_EDGES edges, kb.graph.louvain above."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    undirected = len(_sorted_unique(np.minimum(src, dst) * n + np.maximum(src, dst)))
    if undirected <= NX_LOUVAIN_MAX_EDGES:
        import networkx as nx

        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from(zip(src.tolist(), dst.tolist()))
        communities = nx.community.louvain_communities(graph, seed=seed)
        method = f"louvain (networkx.community.louvain_communities, seed={seed})"
        del graph
    else:
        communities = _groups(louvain(n, src, dst, seed=seed))
        method = f"louvain (kb.graph.louvain over arrays, seed={seed}; graph above {NX_LOUVAIN_MAX_EDGES} edges)"
    return _numbered(communities), len(communities), method


def with_communities(measures: dict, numbers: tuple) -> dict:
    """Measures computed with communities=False, completed by community_numbers' result."""
    community, found, method = numbers
    measures["columns"] = [c[:5] + (community[i],) for i, c in enumerate(measures["columns"])]
    measures["summary"].update(communities=found, community_method=method)
    return measures


def similarity_rows(ids, measures: dict):
    """paper_similarity rows (paper_a, paper_b, cocitations, coupling) of computed measures, in key order."""
    n = len(ids)
    keys, cocit, coupl = measures["pair_keys"], measures["cocitations"], measures["coupling"]
    for lo in range(0, len(keys) if n else 0, ROWS_CHUNK):   # in chunks: lists of 10M Python ints would take ~1 GB
        chunk = keys[lo:lo + ROWS_CHUNK]
        yield from zip([ids[a] for a in (chunk // n).tolist()], [ids[b] for b in (chunk % n).tolist()],
                       cocit[lo:lo + ROWS_CHUNK].tolist(), coupl[lo:lo + ROWS_CHUNK].tolist())


ROWS_CHUNK = 100_000


def write_similarity_file(path, ids, measures: dict) -> dict:
    """paper_similarity (its rows and the paper_b index) in a database file of its own, for store_measures to
    copy in whole (SQLite's transfer of an identical table: no row is decoded again): so that a build's helper
    process makes the table beside the build. Returns `measures`, with the file's path."""
    import sqlite3

    from .store import create_table, create_table_indexes

    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE papers (id TEXT PRIMARY KEY)")   # for sqlite-utils' foreign key check only
        create_table(conn, "paper_similarity")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO paper_similarity (paper_a, paper_b, cocitations, coupling) VALUES (?, ?, ?, ?)",
                         similarity_rows(ids, measures))
        # the paper_b index after the rows, by one sort (kept up row by row it took 60 % of the time at 10M pairs)
        create_table_indexes(conn, "paper_similarity")
        conn.execute("COMMIT")
    finally:
        conn.close()
    measures["similarity_file"] = str(path)
    return measures


def copy_similarity_file(conn, measures: dict) -> dict:
    """Copy paper_similarity from write_similarity_file's file into `conn`'s empty table (outside a
    transaction: a database is attached); returns the summary."""
    import os

    from .store import create_table_indexes

    path = measures.pop("similarity_file")
    conn.execute("ATTACH DATABASE ? AS similarity_file", (path,))
    try:
        conn.execute("BEGIN")
        create_table_indexes(conn, "paper_similarity")     # so that the index is transferred with the rows
        conn.execute("INSERT INTO main.paper_similarity SELECT * FROM similarity_file.paper_similarity")
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("DETACH DATABASE similarity_file")
        os.unlink(path)
    return measures["summary"]


def store_measures(db, *, measures: dict | None = None, ids=None, **options) -> dict:
    """Store paper_similarity (and, when `measures` is not given, compute every measure from the citations
    table and update the papers' measure columns); returns the summary."""
    from .store import MEASURE_COLUMNS

    conn = _conn(db)
    if measures is None:
        ids, src, dst = _edge_arrays(conn)
        index = {pid: i for i, pid in enumerate(ids)}
        seeds = [index[r[0]] for r in conn.execute("SELECT id FROM papers WHERE is_seed = 1")]
        stub = np.zeros(len(ids), dtype=bool)
        if ids:
            stub[[index[r[0]] for r in conn.execute("SELECT id FROM papers WHERE resolved = 0")]] = True
        measures = compute_measures(ids, src, dst, seeds, stub, **options)
        conn.executemany(
            f"UPDATE papers SET {', '.join(c + ' = ?' for c in MEASURE_COLUMNS)} WHERE id = ?",
            (cols + (pid,) for cols, pid in zip(measures["columns"], ids)))
    conn.executemany("INSERT INTO paper_similarity (paper_a, paper_b, cocitations, coupling) VALUES (?, ?, ?, ?)",
                     similarity_rows(ids, measures))
    return measures["summary"]


def store_concept_graph(db) -> dict:
    """concept_edges, concept_citations and the per-concept counts and year span, from paper_concepts."""
    conn = _conn(db)
    total = conn.execute("SELECT count(*) FROM papers WHERE resolved = 1").fetchone()[0]
    weight = dict(conn.execute(
        "SELECT concept_id, count(*) FROM paper_concepts GROUP BY concept_id"))
    pairs = conn.execute(
        "SELECT a.concept_id, b.concept_id, count(*) FROM paper_concepts a JOIN paper_concepts b "
        "ON a.paper_id = b.paper_id AND a.concept_id < b.concept_id GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    conn.executemany(
        "INSERT INTO concept_edges (concept_a, concept_b, papers, strength) VALUES (?, ?, ?, ?)",
        ((a, b, c, round(total * c / (weight[a] * weight[b]), 6)) for a, b, c in pairs))
    cites = conn.execute(
        "SELECT a.concept_id, b.concept_id, count(*) FROM citations c "
        "JOIN paper_concepts a ON a.paper_id = c.citing_id JOIN paper_concepts b ON b.paper_id = c.cited_id "
        "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    conn.executemany("INSERT INTO concept_citations (concept_a, concept_b, citations) VALUES (?, ?, ?)", cites)
    conn.execute(
        "UPDATE concepts SET paper_count = (SELECT count(*) FROM paper_concepts pc WHERE pc.concept_id = concepts.id),"
        " first_year = (SELECT min(p.year) FROM paper_concepts pc JOIN papers p ON p.id = pc.paper_id"
        "               WHERE pc.concept_id = concepts.id),"
        " last_year = (SELECT max(p.year) FROM paper_concepts pc JOIN papers p ON p.id = pc.paper_id"
        "              WHERE pc.concept_id = concepts.id)")
    return {"concept_edges": len(pairs), "concept_citations": len(cites)}


# networkx views of the stored graphs (for export and the publish stage) ------------------------------------

PAPER_ATTRS = ("title", "year", "journal", "first_author", "authors_display", "doi", "pmid", "is_seed", "hop",
               "resolved", "citation_count_kb", "reference_count_kb", "pagerank", "component", "community")


def _clean(attrs: dict) -> dict:
    """GraphML/GEXF-safe attributes: no None, lists joined with '; '."""
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = "; ".join(str(x) for x in v)
        out[k] = v
    return out


def citation_graph(db) -> nx.DiGraph:
    """The citation graph: papers (with their measures and concepts) and citations (attribute origin = the citation source)."""
    import networkx as nx

    conn = _conn(db)
    g = nx.DiGraph()
    cols = ", ".join(PAPER_ATTRS)
    for row in conn.execute(f"SELECT id, {cols}, concepts FROM papers ORDER BY id"):
        attrs = dict(zip(PAPER_ATTRS, row[1:-1]))
        attrs["concepts"] = json.loads(row[-1]) if row[-1] else []
        attrs["label"] = _short_label(attrs)
        g.add_node(row[0], **_clean(attrs))
    for citing, cited, source, resolved in conn.execute(
            "SELECT citing_id, cited_id, source, resolved FROM citations ORDER BY citing_id, cited_id"):
        g.add_edge(citing, cited, origin=source, resolved=resolved)
    return g


def _short_label(attrs: dict) -> str:
    author = attrs.get("first_author")
    if author and attrs.get("year"):
        return f"{author.split(' ')[0]} {attrs['year']}"
    return (attrs.get("title") or "")[:60]


def concept_graph(db) -> nx.Graph:
    """The concept co-occurrence graph: weight = papers carrying both, strength = association strength."""
    import networkx as nx

    conn = _conn(db)
    g = nx.Graph()
    for cid, label, count, first, last in conn.execute(
            "SELECT id, label, paper_count, first_year, last_year FROM concepts ORDER BY id"):
        g.add_node(cid, **_clean({"label": label, "paper_count": count, "first_year": first, "last_year": last}))
    for a, b, papers, strength in conn.execute(
            "SELECT concept_a, concept_b, papers, strength FROM concept_edges ORDER BY concept_a, concept_b"):
        g.add_edge(a, b, weight=papers, papers=papers, strength=strength)
    return g


def paper_concept_graph(db) -> nx.Graph:
    """The bipartite paper-concept graph (node attribute bipartite: 0 = paper, 1 = concept)."""
    import networkx as nx

    conn = _conn(db)
    g = nx.Graph()
    for cid, label in conn.execute("SELECT id, label FROM concepts ORDER BY id"):
        g.add_node(f"concept:{cid}", label=label, kind="concept", bipartite=1)
    for pid, cid, evidence, score, title, year in conn.execute(
            "SELECT pc.paper_id, pc.concept_id, pc.evidence, pc.score, p.title, p.year FROM paper_concepts pc "
            "JOIN papers p ON p.id = pc.paper_id ORDER BY pc.paper_id, pc.concept_id"):
        if pid not in g:
            g.add_node(pid, **_clean({"label": (title or pid)[:60], "year": year, "kind": "paper", "bipartite": 0}))
        g.add_edge(pid, f"concept:{cid}", evidence=evidence, score=score)
    return g
