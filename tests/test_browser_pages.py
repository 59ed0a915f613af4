"""In headless Chromium on `kb serve` of the generated large KB: from a canned query to a paper's page in one
click, with the paper's title at the top of the page (issue 11, findings 3 and 4)."""

from __future__ import annotations

import sqlite3

import pytest
from largekb import large_kb  # noqa: F401  (session fixture)
from serving import kb_serve
from test_browser import SCREENSHOTS, assert_local_only, browser  # noqa: F401  (the module fixture)

pytestmark = pytest.mark.browser


def test_canned_query_link_opens_the_paper_page(large_kb, browser):  # noqa: F811
    seed_pmid = large_kb.seed.split(":", 1)[1]
    conn = sqlite3.connect(large_kb.db)
    with kb_serve(large_kb.db) as (base, _):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.kb_requests, page.kb_errors = [], []
        page.on("request", lambda request: page.kb_requests.append(request.url))
        page.on("pageerror", lambda error: page.kb_errors.append(str(error)))
        # A bare PMID as the parameter, as a student would paste it.
        page.goto(f"{base}/kb/citing_papers?paper={seed_pmid}")
        links = page.locator("td.col-paper a.kb-paper-link")
        expected = conn.execute("select count(*) from citations where cited_id = ?", [large_kb.seed]).fetchone()[0]
        assert links.count() == expected > 0
        target = links.first.inner_text()
        with page.expect_navigation():
            links.first.click()
        assert page.url.startswith(base + "/kb/papers/") and target.replace(":", "~3A") in page.url
        title, first_author = conn.execute(
            """select p.title, a.name from papers p join paper_authors pa on pa.paper_id = p.id and pa.position = 1
               join authors a on a.id = pa.author_id where p.id = ?""", [target]).fetchone()
        heading = page.locator("h1.kb-title")
        assert heading.inner_text() == title
        assert heading.bounding_box()["y"] < 150                   # at the top, not 2,500 px down
        assert page.title().startswith(title[:40])
        authors = page.locator(".kb-authors")
        assert first_author in authors.inner_text() and authors.bounding_box()["y"] < 250
        references = page.locator("text=References (").first.bounding_box()["y"]
        assert references < 900                                   # the neighbourhood starts on the first screen
        raw = page.locator("details#kb-raw")
        assert raw.get_attribute("open") is None                  # the raw columns are folded
        # Screenshots for the README ($KB_SCREENSHOTS): the seed's page and a concept's page.
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.goto(f"{base}/kb/papers/{large_kb.seed.replace(':', '~3A')}")
        page.screenshot(path=str(SCREENSHOTS / "paper-page.png"))
        page.goto(f"{base}/kb/concepts/leukemia")
        assert page.locator("h1.kb-title").inner_text() == "Leukemia"
        assert page.locator("#kb-concept-papers li").count() > 0
        page.screenshot(path=str(SCREENSHOTS / "concept-page.png"))
        assert_local_only(page)
        context.close()
