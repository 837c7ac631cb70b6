"""Each edition of the built book, read in headless Chromium (tests/browser.py): every page loads with no console
error or failed request, shows its images, typesets its formulas, opens its "show code" toggles and does not
overflow sideways at 1280 px; every internal link and anchor lands; the offline search finds "attention". Screenshots
of four pages go to ``_build/.../screenshots/<edition>/`` for a look by eye."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from browser import CHROMIUM, Chromium, check_links, check_page, check_search, pages, screenshot
from conftest import ROOT

EDITIONS = ("reader", "student", "instructor")
SCREENSHOTS = {
    "landing": "index.html",
    "attention": "solutions/04a_attention/04a_attention.html",
    "search": "search.html?q=attention",
    "glossary": "book/glossary.html",
}
# Folded "show code" cells (details.hide) expected at least, in all chapter pages together. The reader and
# instructor editions fold the solutions; the student edition shows stubs, which may be left unfolded.
MIN_TOGGLES = {"reader": 1, "instructor": 1, "student": 0}


def toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [f"{toc['root']}.html"] + [f"{entry['file']}.html" for part in toc["parts"] for entry in part["chapters"]]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize("edition", EDITIONS)
def test_edition_in_a_browser(editions, edition):
    if edition not in editions:
        pytest.skip(f"the {edition} edition was not built")
    html = Path(editions[edition])
    site = pages(html)
    missing = [page for page in toc_pages() if page not in site]
    assert not missing and "index.html" in site, f"pages of the table of contents not in the site: {missing}"

    problems: dict[str, list[str]] = defaultdict(list)
    stats: dict[str, int] = {}
    problems["(links, all pages)"] = check_links(html, stats)
    seconds: dict[str, float] = {}
    start = time.monotonic()
    with Chromium() as browser:
        for page in site:
            began = time.monotonic()
            problems[page] += check_page(browser, html, page, stats)
            seconds[page] = time.monotonic() - began
        problems["search.html?q=attention"] += check_search(browser, html, "attention")
        shots = html.parent / "screenshots" / edition
        for name, page in SCREENSHOTS.items():
            assert screenshot(browser, html, page, shots / f"{name}.png").stat().st_size > 10_000, name
    slowest = max(seconds, key=seconds.get)
    print(f"\n{edition}: {len(site)} pages in {sum(seconds.values()):.1f} s "
          f"({sum(seconds.values()) / len(site):.2f} s a page, slowest {slowest} {seconds[slowest]:.2f} s), "
          f"{time.monotonic() - start:.1f} s with search and screenshots; seen: {stats}")

    # the checks saw something: a suite that passes on an empty site is worthless
    chapters = [page for page in site if page.startswith("solutions/")]
    assert chapters, "no chapter page"
    assert stats["pages"] == len(site) and stats["link_pages"] == len(site) + 2  # + genindex.html, search.html
    assert stats["links"] > 50 * len(site) and stats["fragments"] > len(site), f"too few links checked: {stats}"
    assert stats["formulas"] > 10 * len(chapters), f"too few typeset formulas: {stats}"
    assert stats["images"] >= len(chapters) // 2, f"too few images: {stats}"
    assert stats["toggles"] >= MIN_TOGGLES[edition], f"too few 'show code' toggles opened: {stats}"

    report = "\n".join(f"{page}:\n" + "\n".join(f"    {p}" for p in found) for page, found in problems.items() if found)
    assert not report, f"{sum(map(len, problems.values()))} problems in the {edition} edition:\n{report}"
