"""Graph measures against numbers worked out by hand or by an independent computation."""

from pathlib import Path

import networkx as nx
import pytest
import sqlite_utils

from kb import graph
from kb.records import record_files
from kb.store import build, stub_key

FIXTURE = Path(__file__).parent / "fixtures" / "build"
STUB = stub_key("Smith J. Unindexed report on marrow signal. Proc Fixture Soc. 1999;1:1-2.")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("kb") / "kb.db"
    build(record_files(FIXTURE), path)
    return sqlite_utils.Database(path)


def power_iteration(nodes, edges, alpha=0.85, iterations=200):
    """PageRank by the textbook recurrence, written independently of kb.graph."""
    n = len(nodes)
    out = {v: [b for a, b in edges if a == v] for v in nodes}
    x = {v: 1 / n for v in nodes}
    for _ in range(iterations):
        dangling = sum(x[v] for v in nodes if not out[v])
        new = {v: (1 - alpha) / n + alpha * dangling / n for v in nodes}
        for v in nodes:
            for w in out[v]:
                new[w] += alpha * x[v] / len(out[v])
        x = new
    return x


def test_pagerank_two_nodes_by_hand():
    # a -> b, b dangling: x_a = 0.075 + 0.425 x_b and x_a + x_b = 1  =>  x_a = 0.5 / 1.425
    x = graph.pagerank(2, [0], [1])
    assert x[0] == pytest.approx(0.5 / 1.425, abs=1e-6)
    assert x[1] == pytest.approx(1 - 0.5 / 1.425, abs=1e-6)
    assert graph.pagerank(3, [0, 1, 2], [1, 2, 0]) == pytest.approx([1 / 3] * 3)


def test_pagerank_in_db_matches_independent_iteration(db):
    nodes = [r["id"] for r in db.query("SELECT id FROM papers ORDER BY id")]
    edges = [(r["citing_id"], r["cited_id"]) for r in db["citations"].rows]
    expected = power_iteration(nodes, edges)
    stored = {r["id"]: r["pagerank"] for r in db.query("SELECT id, pagerank FROM papers")}
    for v in nodes:
        assert stored[v] == pytest.approx(expected[v], abs=1e-5), v
    assert sum(stored.values()) == pytest.approx(1.0)


def test_degrees_hops_components_communities(db):
    rows = {r["id"]: r for r in db.query("SELECT * FROM papers")}
    assert (rows["pmid:3"]["citation_count_kb"], rows["pmid:3"]["reference_count_kb"]) == (3, 0)
    assert (rows["pmid:1"]["citation_count_kb"], rows["pmid:1"]["reference_count_kb"]) == (1, 4)
    assert rows["pmid:1"]["hop"] == 0
    assert {v: rows[v]["hop"] for v in ("pmid:2", "pmid:3", "pmid:4", "pmid:5", STUB)} == dict.fromkeys(
        ("pmid:2", "pmid:3", "pmid:4", "pmid:5", STUB), 1)
    assert rows["pmid:7"]["hop"] is None and rows["pmid:8"]["hop"] is None
    # the seed's component (6 papers) is number 1, the yeast pair number 2
    assert {v for v, r in rows.items() if r["component"] == 1} == {"pmid:1", "pmid:2", "pmid:3", "pmid:4",
                                                                    "pmid:5", STUB}
    assert rows["pmid:7"]["component"] == rows["pmid:8"]["component"] == 2
    assert rows["pmid:7"]["community"] == rows["pmid:8"]["community"]
    assert rows["pmid:7"]["community"] not in {rows[v]["community"] for v in ("pmid:1", "pmid:2", "pmid:3")}


def test_louvain_numbering_is_deterministic():
    g = nx.Graph([(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (2, 3), (6, 7)])
    first = graph._numbered(nx.community.louvain_communities(g, seed=42))
    again = graph._numbered(nx.community.louvain_communities(g, seed=42))
    assert first == again
    assert first[6] == first[7] == 3         # the smallest community gets the last number


def test_cocitation_and_coupling_by_hand(db):
    sim = {(r["paper_a"], r["paper_b"]): (r["cocitations"], r["coupling"]) for r in db["paper_similarity"].rows}
    # pmid:1 cites 2, 3, 4, stub; pmid:2 cites 3, stub; pmid:5 cites 1, 2, 3; pmid:8 cites 7
    assert sim[("pmid:2", "pmid:3")] == (2, 0)         # cited together by 1 and 5
    assert sim[("pmid:3", STUB)] == (2, 0)             # cited together by 1 and 2
    assert sim[("pmid:1", "pmid:2")] == (1, 2)         # co-cited by 5; both cite 3 and the stub
    assert sim[("pmid:1", "pmid:5")] == (0, 2)         # share references 2 and 3
    assert sim[("pmid:2", "pmid:5")] == (0, 1)         # share reference 3
    assert all(a < b for a, b in sim)
    assert not any("pmid:7" in pair or "pmid:8" in pair for pair in sim)
    assert len(sim) == 10


def test_similarity_function_matches_brute_force():
    import random

    rng = random.Random(7)
    n = 40
    edges = sorted({(a, b) for a, b in ((rng.randrange(n), rng.randrange(n)) for _ in range(150)) if a != b})
    keys, cocit, coupl = graph.similarity(n, [a for a, _ in edges], [b for _, b in edges])
    got = {(int(k) // n, int(k) % n): (int(c), int(p)) for k, c, p in zip(keys, cocit, coupl)}
    refs = {v: {b for a, b in edges if a == v} for v in range(n)}
    citers = {v: {a for a, b in edges if b == v} for v in range(n)}
    expected = {}
    for a in range(n):
        for b in range(a + 1, n):
            pair = (len(citers[a] & citers[b]), len(refs[a] & refs[b]))
            if pair != (0, 0):
                expected[(a, b)] = pair
    assert got == expected


@pytest.mark.parametrize("compiled", [True, False])
def test_similar_pairs_by_blocks_equal_the_whole_computation(compiled, monkeypatch):
    # the per-node loop compiled by numba (large graphs), and the blocked numpy computation (bounded memory:
    # small graphs, or without numba), keep exactly the pairs top_pairs keeps of all candidate pairs, whatever
    # the block size: one paper per block, a few, all at once
    import numpy as np

    if compiled:
        assert graph._compiled("choices", graph._node_choices) is not None
        monkeypatch.setattr(graph, "COMPILED_MIN_EDGES", 0)
    else:
        monkeypatch.setitem(graph._COMPILED, "choices", None)
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(2, 50))
        pairs = sorted({(int(a), int(b)) for a, b in rng.integers(0, n, (int(rng.integers(0, 300)), 2)) if a != b})
        src = np.array([a for a, _ in pairs], dtype=np.int64)
        dst = np.array([b for _, b in pairs], dtype=np.int64)
        stub = rng.random(n) < 0.3
        fanout, per_paper, per_stub = int(rng.integers(2, 12)), int(rng.integers(1, 5)), int(rng.integers(0, 3))
        keys, cocit, coupl = graph.similarity(n, src, dst, fanout)
        keep = graph.top_pairs(n, keys, cocit + coupl, stub, per_paper, per_stub)
        want = [keys[keep].tolist(), cocit[keep].tolist(), coupl[keep].tolist()]
        for block in (1, 7, 10 ** 9):
            got = graph.similar_pairs(n, src, dst, stub, fanout, per_paper, per_stub, block_pairs=block)
            assert [x.tolist() for x in got] == want


def test_max_fanout_skips_hubs():
    # paper 0 cites 1..5: with max_fanout 4 it adds no co-citation pairs
    keys, cocit, coupl = graph.similarity(6, [0] * 5, [1, 2, 3, 4, 5], max_fanout=4)
    assert len(keys) == 0
    keys, cocit, coupl = graph.similarity(6, [0] * 5, [1, 2, 3, 4, 5], max_fanout=5)
    assert len(keys) == 10 and set(cocit.tolist()) == {1}


def test_concept_edges_by_hand(db):
    # resolved papers N = 7; w: mri {1,4}, bone-marrow {1,4}, leukemia {1,5}, lymphoma {2}, neuroblastoma {2,3}
    edges = {(r["concept_a"], r["concept_b"]): (r["papers"], r["strength"]) for r in db["concept_edges"].rows}
    assert edges == {
        ("bone-marrow", "mri"): (2, pytest.approx(7 * 2 / (2 * 2))),
        ("bone-marrow", "leukemia"): (1, pytest.approx(7 * 1 / (2 * 2))),
        ("leukemia", "mri"): (1, pytest.approx(7 * 1 / (2 * 2))),
        ("lymphoma", "neuroblastoma"): (1, pytest.approx(7 * 1 / (1 * 2))),
    }
    counts = {r["id"]: (r["paper_count"], r["first_year"], r["last_year"]) for r in db["concepts"].rows}
    assert counts["neuroblastoma"] == (2, 2000, 2005)
    assert counts["mri"] == (2, 2008, 2011)


def test_concept_citations_by_hand(db):
    cites = {(r["concept_a"], r["concept_b"]): r["citations"] for r in db["concept_citations"].rows}
    # leukemia papers 1 and 5 each cite 2 and 3, which carry neuroblastoma
    assert cites[("leukemia", "neuroblastoma")] == 4
    assert cites[("mri", "neuroblastoma")] == 2            # 1 -> 2, 1 -> 3
    assert cites[("neuroblastoma", "neuroblastoma")] == 1  # 2 -> 3
    assert cites[("leukemia", "leukemia")] == 1            # 5 -> 1
    assert ("neuroblastoma", "leukemia") not in cites


def test_networkx_views(db):
    g = graph.citation_graph(db)
    assert g.number_of_nodes() == 8 and g.number_of_edges() == 10
    assert g.nodes["pmid:1"]["is_seed"] == 1 and g.nodes["pmid:1"]["concepts"] == "MRI; Bone marrow; Leukemia"
    assert "hop" not in g.nodes["pmid:7"]                      # None is left out, never written
    assert g.edges["pmid:1", "pmid:2"]["origin"] == "pubmed-reflist"
    c = graph.concept_graph(db)
    assert c.number_of_nodes() == 5 and c.edges["bone-marrow", "mri"]["weight"] == 2
    b = graph.paper_concept_graph(db)
    assert b.number_of_edges() == 9 and b.nodes["concept:mri"]["bipartite"] == 1
    assert nx.is_bipartite(b)


def test_array_louvain_finds_planted_communities_like_networkx():
    import numpy as np

    g = nx.planted_partition_graph(6, 30, 0.4, 0.01, seed=5)
    e = np.array(sorted(g.edges()))
    labels = graph.louvain(g.number_of_nodes(), e[:, 0], e[:, 1], seed=42)
    parts = {}
    for node, label in enumerate(labels):
        parts.setdefault(label, set()).add(node)
    assert sorted(map(sorted, parts.values())) == [list(range(i * 30, i * 30 + 30)) for i in range(6)]
    ours = nx.community.modularity(g, parts.values())
    theirs = nx.community.modularity(g, nx.community.louvain_communities(g, seed=42))
    assert ours == pytest.approx(theirs, rel=0.02)
    assert graph.louvain(g.number_of_nodes(), e[:, 0], e[:, 1], seed=42) == labels


def test_compiled_local_moving_gives_the_python_loop_communities(monkeypatch):
    # louvain's local moving compiled by numba visits, sums and chooses as the Python loop does: the same
    # labels on random graphs (levels with unit and with summed weights) and on planted partitions
    import numpy as np

    rng = np.random.default_rng(0)
    graphs = [(int(n), rng.integers(0, n, m), rng.integers(0, n, m))
              for n, m in zip(rng.integers(2, 200, 25), rng.integers(0, 1500, 25))]
    g = nx.planted_partition_graph(6, 30, 0.4, 0.01, seed=5)
    e = np.array(sorted(g.edges()))
    graphs.append((g.number_of_nodes(), e[:, 0], e[:, 1]))
    assert graph._local_moving_compiled() is not None
    compiled = [graph.louvain(n, src, dst) for n, src, dst in graphs]
    monkeypatch.setitem(graph._COMPILED, "moving", None)
    assert [graph.louvain(n, src, dst) for n, src, dst in graphs] == compiled


def test_large_graphs_use_the_array_louvain(tmp_path, monkeypatch):
    monkeypatch.setattr(graph, "NX_LOUVAIN_MAX_EDGES", 3)
    path = tmp_path / "kb.db"
    summary = build(record_files(FIXTURE), path)
    assert "kb.graph.louvain" in summary["counts"]["community_method"]
    rows = {r["id"]: r["community"] for r in sqlite_utils.Database(path).query("SELECT id, community FROM papers")}
    assert rows["pmid:7"] == rows["pmid:8"] != rows["pmid:1"]


def test_components_match_networkx():
    import random

    rng = random.Random(3)
    n = 60
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(45)]
    labels = graph.components(n, [a for a, _ in edges], [b for _, b in edges]).tolist()
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    expected = sorted(sorted(c) for c in nx.connected_components(g))
    assert sorted(sorted(c) for c in graph._groups(labels)) == expected
    assert all(labels[v] == min(c) for c in expected for v in c)


def test_hops_match_networkx_shortest_paths():
    import numpy as np

    rng = np.random.default_rng(7)
    for _ in range(30):
        n = int(rng.integers(1, 40))
        src, dst = rng.integers(0, n, 60), rng.integers(0, n, 60)
        seeds = sorted(set(rng.integers(0, n, 2).tolist()))
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(src.tolist(), dst.tolist()))
        want = nx.multi_source_dijkstra_path_length(g, seeds) if seeds else {}
        assert graph.hops(n, src, dst, seeds) == [want.get(i) for i in range(n)]
    assert graph.hops(3, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []) == [None] * 3
