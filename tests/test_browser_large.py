"""The explorer's graphs in a real browser on a generated knowledge base of ~4,800 papers (tests/largekb.py).

Issue 11: at this size the citation graph must still draw edges (counted from the page's own state), readable
"Author Year" labels, a focus view and a year filter that keep edges, a year-axis layout, and double-click must
focus (a single click only selects and shows the details). Screenshots of the seed view and of the year-axis
layout go to $KB_SCREENSHOTS (`KB_SCREENSHOTS=docs/screenshots` refreshes the README's pictures).
"""

from __future__ import annotations

import re

import pytest
from largekb import large_kb  # noqa: F401  (the session fixture)
from serving import kb_serve
from test_browser import SCREENSHOTS, _need_browser, assert_local_only, browser, page, painted_pixels  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def large_server(large_kb):  # noqa: F811
    _need_browser()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with kb_serve(large_kb.db, cwd=large_kb.data) as (base, _):
        yield base


def open_graph(page, url):  # noqa: F811
    page.goto(url)
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    return page.evaluate("() => document.getElementById('kb-graph').kbState")


def node_point(page, node_id):  # noqa: F811
    """Where a node is on the screen."""
    return page.evaluate("""(id) => {
        const box = document.getElementById('kb-graph');
        const net = box.kbNetwork;
        const pos = net.canvasToDOM(net.getPositions([id])[id]);
        const rect = box.getBoundingClientRect();
        return {x: rect.left + pos.x, y: rect.top + pos.y};
    }""", node_id)


def drawn(page):  # noqa: F811
    """The nodes (id, label, x) and citation arrows the network holds, and the on-screen label size."""
    return page.evaluate("""() => {
        const box = document.getElementById('kb-graph');
        const net = box.kbNetwork;
        const nodes = net.body.data.nodes.get();
        const pos = net.getPositions();
        return {nodes: nodes.map(n => ({id: n.id, label: n.label || null, x: pos[n.id].x})),
                arrows: net.body.data.edges.get({filter: e => e.kb_kind === 'cites'}).map(e => [e.from, e.to]),
                labelPx: box.kbLabelPx, axis: box.kbAxisYears || []};
    }""")


def test_seed_view_draws_edges_and_labels(large_server, large_kb, page):  # noqa: F811
    state = open_graph(page, large_server + "/-/kb/citations")
    seen = drawn(page)
    assert state["nodes"] == 150 and state["edges"] == len(seen["arrows"]) > 300
    ends = {a for pair in seen["arrows"] for a in pair}
    assert {n["id"] for n in seen["nodes"]} <= ends           # every drawn paper has an arrow
    labels = [n["label"] for n in seen["nodes"] if n["label"]]
    assert 20 <= len(labels) <= 45 and "Kato 2011" in labels
    assert sum(bool(re.fullmatch(r"[A-Z][\w' -]+ (19|20)\d\d", label)) for label in labels) >= len(labels) - 2
    assert seen["labelPx"] >= 12                                # legible on screen, whatever the zoom
    assert painted_pixels(page, "#kb-graph") > 20000
    status = page.locator("#kb-status").inner_text()
    assert "Showing 150 of 4,838 papers" in status and "citations among them" in status
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "citation-graph-large.png"), full_page=True)

    # A single click selects and shows the details, with an explicit link; it does not navigate.
    point = node_point(page, large_kb.seed)
    page.mouse.click(point["x"], point["y"])
    page.wait_for_function("document.getElementById('kb-details').innerText.includes('Kato 2011')", timeout=5000)
    assert page.url == large_server + "/-/kb/citations"
    assert page.locator("#kb-details a[data-action=open]").get_attribute("href").endswith("/kb/papers/pmid~3A21547618")
    # Zoomed out, the labels keep their size on screen.
    page.evaluate("() => { const n = document.getElementById('kb-graph').kbNetwork; "
                  "n.moveTo({scale: n.getScale() / 2}); }")
    page.wait_for_timeout(200)
    assert drawn(page)["labelPx"] >= 12
    # The arrows can be coloured by source, with a legend naming the sources.
    page.select_option("#kb-edge-colour", "source")
    legend = page.locator("#kb-legend").inner_text()
    assert "europepmc" in legend and "opencitations" in legend and "pubmed-reflist" in legend
    page.click(".kb-source-item[data-source=europepmc]")
    colours = page.evaluate("""() => document.getElementById('kb-graph').kbNetwork.body.data.edges
        .get({filter: e => e.kb_kind === 'cites'}).map(e => [e.sources.includes('europepmc'), e.color.color])""")
    assert {c for on, c in colours if not on} == {"#eceef1"} and len({c for on, c in colours if on}) == 1
    assert_local_only(page)


def test_double_click_focuses_and_focus_view_has_edges(large_server, large_kb, page):  # noqa: F811
    open_graph(page, large_server + "/-/kb/citations")
    point = node_point(page, large_kb.seed)
    with page.expect_navigation():
        page.mouse.dblclick(point["x"], point["y"])
    assert page.url.endswith("/-/kb/citations?focus=pmid:21547618")
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    # The paper with 140 references: its reference-only works are one box, the rest is linked.
    state = open_graph(page, large_server + "/-/kb/citations?focus=" + large_kb.big)
    seen = drawn(page)
    assert state["more"] == 1 and "more:stubs" in {n["id"] for n in seen["nodes"]}
    assert state["nodes"] < 60 and state["edges"] >= state["nodes"] - 1
    assert "reference-only works" in page.locator("#kb-status").inner_text()
    # A year filter keeps choosing linked papers.
    state = open_graph(page, large_server + "/-/kb/citations?year_min=2005&year_max=2010")
    assert state["edges"] > 50 and state["nodes"] > 50
    assert_local_only(page)


def test_year_axis_layout(large_server, large_kb, page):  # noqa: F811
    open_graph(page, large_server + "/-/kb/citations")
    page.check("input[name=kb-layout][value=years]")
    page.wait_for_selector("#kb-graph[data-layout=years][data-nodes-drawn]", timeout=30000)
    assert "layout=years" in page.url
    years = page.evaluate("""() => { const d = {}; document.getElementById('kb-graph').kbNetwork.body.data.nodes
        .forEach(n => { d[n.id] = n.x; }); return d; }""")
    data = page.evaluate("""(u) => fetch(u).then(r => r.json())""", large_server + "/-/kb/citations.json")
    by_year = sorted((n["year"], years[n["id"]]) for n in data["nodes"] if n["year"])
    assert all(x1 <= x2 for (_y1, x1), (_y2, x2) in zip(by_year, by_year[1:]))   # x follows the year
    seen = drawn(page)
    assert len(seen["axis"]) >= 5 and seen["labelPx"] >= 12
    assert len(seen["arrows"]) > 300
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "citation-graph-years.png"), full_page=True)
    # The layout is kept in the URL: a reload draws by year again.
    page.reload()
    page.wait_for_selector("#kb-graph[data-layout=years][data-nodes-drawn]", timeout=30000)
    assert_local_only(page)


def test_concept_double_click_shows_its_papers(large_server, page):  # noqa: F811
    open_graph(page, large_server + "/-/kb/concepts")
    point = node_point(page, "leukemia")
    page.mouse.click(point["x"], point["y"])
    page.wait_for_function("document.getElementById('kb-details').innerText.includes('Leukemia')", timeout=5000)
    assert page.url == large_server + "/-/kb/concepts"
    with page.expect_navigation():
        page.mouse.dblclick(point["x"], point["y"])
    assert page.url.endswith("/-/kb/citations?concept=leukemia")
    state = open_graph(page, page.url)
    assert state["edges"] > 50
    assert_local_only(page)


def test_similarity_view(large_server, large_kb, page):  # noqa: F811
    state = open_graph(page, large_server + "/-/kb/similar")
    assert state["nodes"] == 40 and state["edges"] >= 39
    assert "most similar to Kato 2011" in page.locator("#kb-status").inner_text()
    assert_local_only(page)


def test_timeline_counts_whole_papers(large_server, page):  # noqa: F811
    page.goto(large_server + "/-/kb/timeline")
    page.wait_for_selector("#kb-timeline[data-series-drawn]", timeout=30000)
    ticks = [t.strip().replace(",", "") for t in page.locator("#kb-timeline .ytick text").all_text_contents()]
    assert len(ticks) >= 3 and all(re.fullmatch(r"\d+", t) for t in ticks), ticks   # no 0.5 papers
    assert len(set(ticks)) == len(ticks)
    assert_local_only(page)
