"""The reader edition builds with warnings as errors, renders the chapters from solutions/, bundles MathJax, and
publishes neither hidden tests nor the instructor notebooks. (Every page of every edition in a browser:
test_browser.py; the editions themselves: test_editions.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import ROOT

from llmcourse.registry import chapters_in

ATTENTION = Path("solutions/04a_attention/04a_attention.html")


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [entry["file"] for entry in part["chapters"]]
    return files


@pytest.fixture(scope="module")
def html(editions) -> Path:
    """The reader edition (``jupyter-book build . -W -n --keep-going``, through the session's ``editions``)."""
    return editions["reader"]


def test_every_chapter_is_in_the_book_from_solutions():
    files = toc_files()
    for chapter in chapters_in(ROOT / "solutions"):
        assert f"solutions/{chapter}/{chapter}" in files
    assert not any(f.startswith("chapters/") for f in files), "the book shows instructor notebooks, executed"


@pytest.mark.slow
def test_attention_chapter_is_rendered(html):
    page = (html / ATTENTION).read_text()
    assert "4a. Scaled dot-product attention" in page
    assert len(re.findall(r'<img [^>]*src="[^"]*_images/[^"]+\.png"', page)) >= 2, "the figures are missing"
    assert page.count('class="admonition hide above-input"') == 3, "each of the 3 solutions is collapsed"
    assert "Exercise 4a.1: visible tests passed" in page, "the visible tests ran"
    assert "Traceback" not in page
    assert "output stderr" not in page, "a cell wrote to stderr (a warning?) when the book executed it"


@pytest.mark.slow
def test_every_page_executed_cleanly(html):
    """Every cell of every executed page ran without an error and wrote nothing to stderr (a warning, a progress
    bar on stderr). The book's build is the one full run of each instructor notebook in the tests; its points
    are checked where nbgrader grades it (test_grade_course.py)."""
    executed = sorted((html.parent / "jupyter_execute").rglob("*.ipynb"))
    chapters = {f"{chapter}.ipynb" for chapter in chapters_in(ROOT / "solutions")}
    assert chapters <= {path.name for path in executed}, "a chapter was not executed by the book's build"
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells, 1):
            for output in cell.get("outputs", []):
                assert output.output_type != "error", f"{path.name}, cell {index} raised {output.get('ename')}"
                assert not (output.output_type == "stream" and output.name == "stderr"), (
                    f"{path.name}, cell {index} wrote to stderr:\n{output.text[:2000]}")


@pytest.mark.slow
def test_no_hidden_tests_or_sources_are_published(html):
    assert not (html / "_sources").exists()
    # the only notebooks are the released student notebooks (test_editions.py compares them byte for byte)
    assert not [p for p in html.rglob("*.ipynb") if p.parent != html / "_notebooks"]
    for page in html.rglob("*.html"):
        text = page.read_text()
        assert "HIDDEN TESTS" not in text and "manual_seed(41)" not in text, f"{page}: shows a hidden test"
        assert "btn-download" not in text, f"{page}: has a download button"


@pytest.mark.slow
def test_mathjax_is_bundled(html):
    page = (html / ATTENTION).read_text()
    assert '<script defer="defer" src="../../_static/mathjax/tex-chtml.js' in page or \
        'src="../../_static/mathjax/tex-chtml.js' in page
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    for src in re.findall(r'<script[^>]*\ssrc="([^"]+)"', page):
        assert not src.startswith(("http:", "https:", "//")), f"script loaded from the network: {src}"


def test_notebooks_executed_in_parallel_land_in_the_cache_as_jupyter_book_would_store_them(tmp_path):
    """``python -m autograder book --jobs N``: the chapters the cache lacks are run N at a time, each in its own
    folder; a run that fails is not stored (the build runs it again and reports it). That jupyter-book's myst-nb
    then finds every stored run ("Using cached notebook") is checked on the real book in test_editions."""
    from jupyter_cache import get_cache

    from autograder.book import execute_into_cache

    sources = {"01_ok": "import os\nprint(os.path.basename(os.getcwd()), 2 + 2)",
               "02_bad": "raise ValueError('a broken chapter')",
               "03_ok": "print('three')"}
    for chapter, source in sources.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
        (tmp_path / "solutions" / chapter).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "solutions" / chapter / f"{chapter}.ipynb")
    (tmp_path / "_config.yml").write_text("execute:\n  timeout: 60\n")
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro", "parts": [
        {"caption": "c", "chapters": [{"file": f"solutions/{c}/{c}"} for c in sources]}]}))
    said = []
    stored = execute_into_cache(tmp_path, tmp_path / "out", jobs=2, progress=said.append)
    assert sorted(stored) == ["01_ok", "03_ok"], said
    assert any("02_bad: failed" in line for line in said)
    cache = get_cache(str(tmp_path / "out" / "_build" / ".jupyter_cache"))
    nb = nbformat.read(tmp_path / "solutions" / "01_ok" / "01_ok.ipynb", as_version=4)
    record = cache.match_cache_notebook(nb)
    assert record.data["execution_seconds"] == stored["01_ok"] > 0
    _, merged = cache.merge_match_into_notebook(nb)
    assert merged.cells[0].outputs[0]["text"] == "01_ok 4\n"  # run in the notebook's own folder, as myst-nb does
    with pytest.raises(KeyError):
        cache.match_cache_notebook(nbformat.read(tmp_path / "solutions" / "02_bad" / "02_bad.ipynb", as_version=4))
    # a second run executes only what the cache still lacks
    said.clear()
    assert execute_into_cache(tmp_path, tmp_path / "out", jobs=2, progress=said.append) == {}
    assert said[0].startswith("executing 1 notebooks") and any("02_bad: failed" in line for line in said)
