"""A real browser on a real `kb serve`: the graph pages draw, links work, and nothing leaves 127.0.0.1.

Headless Chromium from Debian's package (/usr/bin/chromium), driven by Playwright's Python package.
Saves screenshots of the citation and concept graph pages to $KB_SCREENSHOTS (default: a folder in the
system's temporary directory); `KB_SCREENSHOTS=docs/screenshots make test` refreshes the README's pictures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from serving import kb_serve

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("KB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
PROJECT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(os.environ.get("KB_SCREENSHOTS") or Path(tempfile.gettempdir()) / "kb-screenshots").resolve()
RECORDS = Path(__file__).parent / "fixtures" / "publish" / "records.jsonl"


def _need_browser():
    reason = None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = f"headless Chromium not found at {CHROMIUM} (apt-get install chromium, or scripts/ensure-chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright's Python package is not installed (pip install playwright)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason + " -- required in CI")
        pytest.skip(reason)


def run_kb_serve(tmp: Path, *extra: str):
    """Start `kb serve` on 127.0.0.1 with a free port in `tmp`; yields its base URL, stops it afterwards."""
    with kb_serve(tmp / "kb.db", *extra, cwd=tmp) as (base, _):
        yield base


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`kb serve` of the test records (it builds the database first, since it is missing)."""
    _need_browser()
    tmp = tmp_path_factory.mktemp("browser")
    data = tmp / "data"
    (data / "records").mkdir(parents=True)
    shutil.copy(RECORDS, data / "records" / "records.jsonl")
    yield from run_kb_serve(tmp, "--data", str(data))


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """`kb serve` as on a fresh clone: no data directory, so it builds the embedded Kato 2011 dataset."""
    _need_browser()
    yield from run_kb_serve(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.kb_requests = []
    page.kb_errors = []
    page.on("request", lambda request: page.kb_requests.append(request.url))
    page.on("pageerror", lambda error: page.kb_errors.append(str(error)))
    yield page
    context.close()


def assert_local_only(page):
    hosts = {urlsplit(url).hostname for url in page.kb_requests}
    assert hosts == {"127.0.0.1"}, f"requests left the machine: {sorted(hosts)}"
    assert page.kb_errors == []


def painted_pixels(page, selector: str) -> int:
    """Non-white pixels on the graph's canvas: a drawn graph has thousands, a blank one none."""
    return page.evaluate("""(sel) => {
        const canvas = document.querySelector(sel + ' canvas');
        const ctx = canvas.getContext('2d');
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] > 0 && (data[i] < 240 || data[i + 1] < 240 || data[i + 2] < 240)) n++;
        }
        return n;
    }""", selector)


def test_citation_graph_draws_and_links(server, page):
    expected = urllib.request.urlopen(server + "/-/kb/citations.json").read()
    import json

    data = json.loads(expected)
    page.goto(server + "/-/kb/citations")
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    graph = page.locator("#kb-graph")
    assert graph.get_attribute("data-nodes-drawn") == str(len(data["nodes"])) == "11"
    assert graph.get_attribute("data-edges-drawn") == str(len(data["edges"]))
    assert painted_pixels(page, "#kb-graph") > 2000
    legend = page.locator("#kb-legend").inner_text()
    assert "MRI" in legend and "seed paper" in legend
    assert "Showing 11 of 11 papers" in page.locator("#kb-status").inner_text()
    # Colour by community: the legend switches.
    page.select_option("#kb-colour", "community")
    assert "community 1" in page.locator("#kb-legend").inner_text()
    page.select_option("#kb-colour", "concept")
    # Hover shows details; clicking the seed pins them, with a link to its row page.
    point = page.evaluate("""() => {
        const box = document.getElementById('kb-graph');
        const net = box.kbNetwork;
        const pos = net.canvasToDOM(net.getPositions(['pmid:21400001'])['pmid:21400001']);
        const rect = box.getBoundingClientRect();
        return {x: rect.left + pos.x, y: rect.top + pos.y};
    }""")
    page.mouse.move(point["x"], point["y"])
    page.wait_for_function("document.getElementById('kb-details').innerText.includes('Case series')", timeout=5000)
    # A click selects the paper and shows its details (it does not navigate: a double-click focuses instead);
    # the panel's "Open paper page" link opens the row page.
    page.mouse.click(point["x"], point["y"])
    page.wait_for_selector("#kb-details a[data-action=open]", timeout=5000)
    assert page.url == server + "/-/kb/citations"
    with page.expect_navigation():
        page.click("#kb-details a[data-action=open]")
    assert page.url == server + "/kb/papers/pmid~3A21400001"
    assert "This paper in the knowledge base" in page.content()
    assert_local_only(page)


def test_focus_view_from_the_paper_page(server, page):
    page.goto(server + "/kb/papers/pmid~3A9900002")
    page.click("text=Focus on this paper in the citation graph")
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    assert "focus=pmid:9900002" in page.url
    # 9900002 cites 9800001 and is cited by the seed, 10500005 and 12500007.
    assert page.locator("#kb-graph").get_attribute("data-nodes-drawn") == "5"
    assert "focus on one paper" in page.locator("h1").inner_text()
    assert_local_only(page)


def test_concept_graph_draws(server, page):
    page.goto(server + "/-/kb/concepts")
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    assert page.locator("#kb-graph").get_attribute("data-nodes-drawn") == "5"
    assert int(page.locator("#kb-graph").get_attribute("data-edges-drawn")) == 8
    assert painted_pixels(page, "#kb-graph") > 2000
    assert_local_only(page)


def test_screenshots_of_the_embedded_default(default_server, page):
    """What a fresh clone shows: the seed paper and its five references; screenshots for the docs."""
    import json

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    data = json.loads(urllib.request.urlopen(default_server + "/-/kb/citations.json").read())
    assert [n["id"] for n in data["nodes"] if n["is_seed"]] == ["doi:10.1007/s12185-011-0842-7"]
    page.goto(default_server + "/-/kb/citations")
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    assert page.locator("#kb-graph").get_attribute("data-nodes-drawn") == str(len(data["nodes"]))
    assert int(page.locator("#kb-graph").get_attribute("data-edges-drawn")) == len(data["edges"])
    assert painted_pixels(page, "#kb-graph") > 2000
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "citation-graph.png"), full_page=True)
    page.goto(default_server + "/-/kb/concepts")
    page.wait_for_selector("#kb-graph[data-nodes-drawn]", timeout=30000)
    assert int(page.locator("#kb-graph").get_attribute("data-nodes-drawn")) >= 2
    assert painted_pixels(page, "#kb-graph") > 2000
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / "concept-graph.png"), full_page=True)
    assert (SCREENSHOTS / "citation-graph.png").stat().st_size > 10000
    assert_local_only(page)


def test_timeline_draws(server, page):
    page.goto(server + "/-/kb/timeline")
    page.wait_for_selector("#kb-timeline[data-series-drawn]", timeout=30000)
    assert page.locator("#kb-timeline").get_attribute("data-series-drawn") == "5"
    assert page.locator("#kb-timeline .main-svg").count() >= 1
    assert "Leukemia" in page.locator("#kb-timeline").inner_text()
    # Whole papers: integer ticks, each once (plotly's own choice for 0-2 papers would be 0, 0.5, 1, 1.5, 2).
    ticks = [t.strip() for t in page.locator("#kb-timeline .ytick text").all_text_contents()]
    assert ticks and all(t.isdigit() for t in ticks) and len(set(ticks)) == len(ticks), ticks
    assert_local_only(page)
