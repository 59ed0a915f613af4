"""The graph pages' JSON on a generated knowledge base of ~4,800 papers (tests/largekb.py), as issue 11 asks:
the citation graph draws linked papers (edges > 0, nodes connected) in the seed view, the focus view and under
year and concept filters; labels read "Author Year"; edges carry their sources; the similarity view and layer."""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict

import pytest
from largekb import large_kb  # noqa: F401  (the session fixture)

from kb.publish import graphview
from kb.publish import make_datasette
from serving import started_datasette

LABEL = re.compile(r"^[A-Z][A-Za-z' -]+ (19|20)\d\d$")


@pytest.fixture
async def ds(large_kb):  # noqa: F811
    return await started_datasette(large_kb.db)


async def get(ds, path):
    response = await ds.client.get(path)
    assert response.status_code == 200, (path, response.text[:300])
    return response.json()


def linked(data) -> tuple[int, int]:
    """(nodes with at least one drawn edge, nodes) of a citation graph answer; edges end at drawn nodes."""
    ids = {n["id"] for n in data["nodes"]}
    touched = set()
    for e in data["edges"]:
        assert e["from"] in ids and e["to"] in ids
        touched |= {e["from"], e["to"]}
    return len(touched & ids), len(ids)


def real_edges(db, ids) -> set:
    conn = sqlite3.connect(db)
    marks = ",".join("?" * len(ids))
    return set(conn.execute(f"select citing_id, cited_id from citations where citing_id in ({marks}) "
                            f"and cited_id in ({marks})", list(ids) * 2))


async def test_seed_view_draws_a_linked_graph(ds, large_kb):  # noqa: F811
    data = await get(ds, "/-/kb/citations.json")
    assert data["total"] == large_kb.counts["papers"] > 4000
    assert data["shown"] == len(data["nodes"]) == 150 and data["method"] == "grown"
    touched, n = linked(data)
    assert touched == n                              # every drawn paper has a drawn citation
    assert len(data["edges"]) > 300                  # (the old top-150 by PageRank drew 0 here)
    assert {(e["from"], e["to"]) for e in data["edges"]} == real_edges(large_kb.db, [x["id"] for x in data["nodes"]])
    assert data["total_edges"] == large_kb.counts["citations"]
    seed = [x for x in data["nodes"] if x["is_seed"]]
    assert [x["id"] for x in seed] == [large_kb.seed] and seed[0]["label"] == "Kato 2011"
    # the seed's resolved neighbours come first: all of them are drawn
    conn = sqlite3.connect(large_kb.db)
    neighbours = {r[0] for r in conn.execute(
        """select p.id from papers p where p.resolved = 1 and p.id in (
               select cited_id from citations where citing_id = :s
               union select citing_id from citations where cited_id = :s)""",
        {"s": large_kb.seed})}
    assert neighbours and neighbours <= {x["id"] for x in data["nodes"]}
    # readable labels on every paper with a full record; stubs are labelled from their reference text
    for node in data["nodes"]:
        if node["resolved"]:
            assert LABEL.match(node["label"]), node["label"]
    assert sum(not x["resolved"] for x in data["nodes"]) <= 150 // graphview.SHARED_SHARE


async def test_stubs_drawn_only_when_shared(ds, large_kb):  # noqa: F811
    data = await get(ds, "/-/kb/citations.json")
    ids = {x["id"] for x in data["nodes"]}
    citers = defaultdict(int)
    for e in data["edges"]:
        citers[e["to"]] += 1
    stubs = [x for x in data["nodes"] if not x["resolved"]]
    assert stubs, "works that several drawn papers cite are drawn"
    assert all(citers[x["id"]] >= 2 for x in stubs)
    hidden = await get(ds, "/-/kb/citations.json?stubs=hide")
    assert all(x["resolved"] for x in hidden["nodes"]) and len(hidden["nodes"]) == 150
    assert ids != {x["id"] for x in hidden["nodes"]}


async def test_focus_on_a_paper_with_many_references(ds, large_kb):  # noqa: F811
    conn = sqlite3.connect(large_kb.db)
    refs, stub_refs = conn.execute(
        """select count(*), sum(p.resolved = 0) from citations c join papers p on p.id = c.cited_id
           where c.citing_id = ?""", (large_kb.big,)).fetchone()
    assert refs >= 130
    data = await get(ds, "/-/kb/citations.json?focus=" + large_kb.big)
    assert data["focus"] == large_kb.big and data["nodes"][0]["id"] == large_kb.big
    touched, n = linked(data)
    assert touched == n and len(data["edges"]) >= n - 1
    # the reference-only works are collapsed into one count node, not drawn as a tangle of 100+ dots
    assert n < 60
    more = {m["kind"]: m for m in data["more"]}
    drawn_stubs = sum(not x["resolved"] for x in data["nodes"])
    assert more["stubs"]["count"] + drawn_stubs == stub_refs and more["stubs"]["of"] == large_kb.big
    assert more["stubs"]["label"] == f"+{more['stubs']['count']} reference-only works"
    assert data["total"] == 1 + len({r[0] for r in conn.execute(
        "select cited_id from citations where citing_id = :p union select citing_id from citations where cited_id = :p",
        {"p": large_kb.big})})
    # all of them on request, and a second hop
    every = await get(ds, "/-/kb/citations.json?stubs=all&limit=500&focus=" + large_kb.big)
    assert len(every["nodes"]) == every["total"] and not every["more"]
    two = await get(ds, "/-/kb/citations.json?hops=2&focus=" + large_kb.big)
    assert len(two["nodes"]) == 150 and linked(two)[0] == 150 and two["total"] > 150
    # a bare PMID names the same paper
    bare = await get(ds, "/-/kb/citations.json?focus=" + large_kb.big.split(":")[1])
    assert bare["focus"] == large_kb.big and len(bare["nodes"]) == n
    assert (await ds.client.get("/-/kb/citations.json?focus=pmid:1")).status_code == 404


async def test_year_filter_keeps_drawing_edges(ds, large_kb):  # noqa: F811
    data = await get(ds, "/-/kb/citations.json?year_min=2005&year_max=2010")
    assert data["nodes"] and all(2005 <= x["year"] <= 2010 for x in data["nodes"])
    touched, n = linked(data)
    assert len(data["edges"]) > 50 and touched == n
    assert data["total_edges"] >= len(data["edges"])
    assert data["shown"] <= data["total"]


async def test_concept_filter_keeps_drawing_edges(ds, large_kb):  # noqa: F811
    conn = sqlite3.connect(large_kb.db)
    data = await get(ds, "/-/kb/citations.json?concept=neuroblastoma")
    carriers = {r[0] for r in conn.execute("select paper_id from paper_concepts where concept_id = 'neuroblastoma'")}
    assert {x["id"] for x in data["nodes"]} <= carriers
    touched, n = linked(data)
    assert n == 150 and len(data["edges"]) > 100 and touched == n
    both = await get(ds, "/-/kb/citations.json?concept=lymphoma&year_min=2000")
    touched, n = linked(both)
    assert len(both["edges"]) > 20 and touched == n


async def test_edges_carry_their_sources(ds, large_kb):  # noqa: F811
    data = await get(ds, "/-/kb/citations.json")
    sources = {s["source"]: s["edges"] for s in data["edge_sources"]}
    assert {"europepmc", "opencitations", "elink:pubmed_pubmed_refs", "pubmed-reflist"} <= set(sources)
    several = [e for e in data["edges"] if len(e["sources"]) > 1]
    assert several and all(e["sources"] == sorted(e["sources"]) for e in data["edges"])
    assert sources["pubmed-reflist"] == sum("pubmed-reflist" in e["sources"] for e in data["edges"])


async def test_similar_layer_and_view(ds, large_kb):  # noqa: F811
    layer = await get(ds, "/-/kb/citations.json?similar=1")
    ids = {x["id"] for x in layer["nodes"]}
    assert layer["similar_edges"] and all(e["from"] in ids and e["to"] in ids for e in layer["similar_edges"])
    assert "similar_edges" not in await get(ds, "/-/kb/citations.json")
    view = await get(ds, "/-/kb/similar.json")
    assert view["paper"] == large_kb.seed and view["nodes"][0]["id"] == large_kb.seed
    assert len(view["nodes"]) == graphview.SIMILAR_DEFAULT
    assert view["sources"] == {"paper_similarity": True, "similar_articles": False}
    first = [e for e in view["edges"] if e["from"] == large_kb.seed]
    assert len(first) == len(view["nodes"]) - 1
    strengths = [e["strength"] for e in first]
    assert strengths == sorted(strengths, reverse=True) and strengths[-1] > 0
    page = await ds.client.get("/-/kb/similar?paper=" + large_kb.big)
    assert page.status_code == 200 and "Similar papers" in page.text


async def test_similar_articles_are_used_when_present(large_kb, tmp_path):  # noqa: F811
    """With PubMed's neighbours (table made by the MESH-SIMILAR stage), they join the similarity view."""
    import shutil

    db = tmp_path / "kb.db"
    shutil.copy(large_kb.db, db)
    conn = sqlite3.connect(db)
    conn.execute("drop table if exists similar_articles")
    conn.execute("create table similar_articles (paper_id text, similar_id text, score integer, rank integer, "
                 "primary key (paper_id, similar_id))")
    far = [r[0] for r in conn.execute("select id from papers where resolved = 1 and id != ? order by id desc limit 3",
                                      (large_kb.seed,))]
    conn.executemany("insert into similar_articles values (?, ?, ?, ?)",
                     [(large_kb.seed, pid, 90000000 - i, i + 1) for i, pid in enumerate(far)])
    conn.commit()
    conn.close()
    datasette = make_datasette(db)
    await datasette.invoke_startup()
    view = (await datasette.client.get("/-/kb/similar.json")).json()
    pubmed = {e["to"]: e for e in view["edges"] if e["from"] == large_kb.seed and e["pubmed_rank"]}
    assert set(pubmed) == set(far) and view["sources"]["similar_articles"]
    assert pubmed[far[0]]["kind"].endswith("pubmed")


async def test_pages_render(ds, large_kb):  # noqa: F811
    for path in ("/-/kb/citations", f"/-/kb/citations?focus={large_kb.big}&hops=2", "/-/kb/similar",
                 "/-/kb/concepts", "/-/kb/timeline"):
        response = await ds.client.get(path)
        assert response.status_code == 200, path
    page = (await ds.client.get(f"/-/kb/citations?focus={large_kb.seed}")).text
    assert "Kato 2011" in page and 'name="hops"' in page and 'name="kb-layout" value="years"' in page


async def test_timeline_counts_whole_papers(ds, large_kb):  # noqa: F811
    data = await get(ds, "/-/kb/timeline.json")
    conn = sqlite3.connect(large_kb.db)
    assert sum(n for _y, n in data["total"]) == conn.execute(
        "select count(*) from papers where resolved = 1 and year is not null").fetchone()[0]
    assert all(isinstance(n, int) for s in data["series"] for _y, n in s["points"])


def test_labels():
    assert graphview.paper_label("Daldrup-Link HE", 2007) == "Daldrup-Link 2007"
    assert graphview.paper_label("van der Berg J", 2001) == "van der Berg 2001"
    assert graphview.paper_label(None, None, "Smith J, Lee K. Title words. Nat Prod Rep. 2014 Dec;31(12):1234-45.") \
        == "Smith 2014"
    assert graphview.paper_label(None, 1999, "Bone marrow imaging") == "Bone marrow imaging (1999)"
    assert graphview.paper_label("Kato M", 2011, stored="Kato 2011a") == "Kato 2011a"


async def test_focus_caps_its_papers_with_a_count_box(ds, large_kb):  # noqa: F811
    conn = sqlite3.connect(large_kb.db)
    resolved = conn.execute(
        """select count(*) from papers p where p.resolved = 1 and p.id in (
               select cited_id from citations where citing_id = :p
               union select citing_id from citations where cited_id = :p)""", {"p": large_kb.big}).fetchone()[0]
    data = await get(ds, f"/-/kb/citations.json?limit=5&focus={large_kb.big}")
    more = {m["kind"]: m for m in data["more"]}
    assert len(data["nodes"]) == 5 and more["papers"]["count"] == resolved - 4
    assert more["papers"]["label"] == f"+{resolved - 4} more papers"
    # under a year filter the focus keeps only neighbours of those years, and their edges
    years = await get(ds, f"/-/kb/citations.json?year_min=2000&focus={large_kb.big}")
    assert years["nodes"][0]["id"] == large_kb.big
    assert all(n["year"] >= 2000 for n in years["nodes"][1:]) and linked(years)[0] == len(years["nodes"])


async def test_kb_whose_papers_only_cite_reference_only_works(tmp_path):
    """Like a KB imported from MEDLINE files: papers with full records never cite each other, only works known
    from their reference lists. The graph grows through the works they share instead of drawing lone dots."""
    import random

    from kb.records import provenance, write_records
    from kb.store import build

    rng = random.Random(5)
    pool = [f"Author{i} A, Other B. Shared work number {i}. J Test. {1980 + i % 30};{i % 50 + 1}:{i}-{i + 9}."
            for i in range(800)]
    papers = [{"type": "paper", "pmid": str(100 + n), "title": f"Paper {n} on bone marrow MRI", "year": 1995 + n % 20,
               "authors": [{"last": f"Writer{n}", "initials": "Q"}], "journal": {"title": "J Test"},
               "references": [{"citation": raw} for raw in rng.sample(pool[:200] if n % 2 else pool, 10)],
               "provenance": provenance("pubmed")} for n in range(300)]
    write_records(tmp_path / "records.jsonl", papers)
    build([tmp_path / "records.jsonl"], tmp_path / "kb.db")
    datasette = make_datasette(tmp_path / "kb.db")
    await datasette.invoke_startup()
    data = (await datasette.client.get("/-/kb/citations.json")).json()
    assert data["total"] > 900 and data["method"] == "grown"
    assert 100 <= len(data["nodes"]) + len(data["more"]) <= 150
    touched, n = linked(data)
    assert touched == n and len(data["edges"]) >= n - 1
    resolved = {x["id"] for x in data["nodes"] if x["resolved"]}
    assert len(resolved) >= 10            # several papers, joined by the works they cite in common
    # each drawn paper's other works are one "+N refs" box: N = its references not drawn
    drawn_refs = defaultdict(int)
    for e in data["edges"]:
        drawn_refs[e["from"]] += 1
    boxes = {m["of"]: m for m in data["more"]}
    assert boxes and set(boxes) <= resolved
    assert all(10 - drawn_refs[paper] < graphview.MIN_BOX for paper in resolved - set(boxes))
    for paper, box in boxes.items():
        assert box["count"] == 10 - drawn_refs[paper] >= graphview.MIN_BOX
        assert box["label"] == f"+{box['count']} ref" + ("s" if box["count"] != 1 else "")
    hidden = (await datasette.client.get("/-/kb/citations.json?stubs=hide")).json()
    assert all(x["resolved"] for x in hidden["nodes"]) and not hidden["edges"]   # honest: nothing links them


@pytest.mark.parametrize("filters", [{}, {"year_min": 2000}, {"hop_max": 3}])
def test_seeds_found_by_the_is_seed_index(large_kb, filters):  # noqa: F811
    # is_seed and resolved have two values each, so the statistics make either look like half the papers; the seed
    # query of a grown graph must still take the is_seed index (the resolved one scans most of the KB)
    conn = sqlite3.connect(large_kb.db)
    seen = []
    conn.set_trace_callback(seen.append)
    cond, params = graphview.filter_sql(filters)
    graphview._seeded_grower(conn, cond, params, 10)
    conn.set_trace_callback(None)
    seed_query = [q for q in seen if "is_seed" in q]
    assert len(seed_query) == 1
    plan = " ".join(r[3] for r in conn.execute("explain query plan " + seed_query[0], params))
    assert "idx_papers_is_seed" in plan, plan
