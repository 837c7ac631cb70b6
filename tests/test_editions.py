"""The book's three editions (``python -m autograder book --edition all``, built once per session by the
``built_book`` fixture): the student edition shows no solution code, in its pages or its search index; every
chapter page of every edition links the released student notebook byte for byte, tables its exercises with their
points and says how long its notebook ran; the instructor edition adds the guide and the hidden-test summaries
and no edition shows a hidden test's code; the editions share one execution cache."""

from __future__ import annotations

import ast
import functools
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from jupyter_cache import get_cache

from autograder.book import GUIDE, toc_chapters
from autograder.book_pages import EDITIONS, NOTEBOOKS, exercise_rows, hidden_tests
from autograder.gradesheet import number_text, read_outline
from autograder.notebook_model import CourseNotebook, without_hidden

pytestmark = pytest.mark.slow

CHAPTERS = toc_chapters(yaml.safe_load((ROOT / "_toc.yml").read_text()))
CARD = re.compile(r'<div class="admonition note course-chapter-card">(.*?)</div>', re.S)


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def page_text(path: Path) -> str:
    """What a page shows (tags, scripts and styles removed, entities decoded), whitespace collapsed."""
    return normal(_raw_text(path))


def _raw_text(path: Path) -> str:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return "".join(parser.parts)


def page_lines(path: Path) -> set[str]:
    """The lines a page shows, each with its whitespace collapsed (code keeps its lines in ``<pre>``)."""
    return {normal(line) for line in _raw_text(path).splitlines()} - {""}


def site_text(html_root: Path) -> str:
    return "\n".join(page_text(p) for p in sorted(html_root.rglob("*.html")))


def site_lines(html_root: Path) -> set[str]:
    return set().union(*(page_lines(p) for p in sorted(html_root.rglob("*.html"))))


def outputs(path: Path) -> str:
    """The text of a page's cell outputs."""
    blocks = re.findall(r'<div class="cell_output[^"]*">(.*?)</div>', path.read_text(encoding="utf-8"), re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", "\n".join(blocks)))


def chapter_page(html_root: Path, chapter: str) -> Path:
    return html_root / "solutions" / chapter / f"{chapter}.html"


@functools.cache
def public_text() -> str:
    """Everything a student has anyway: every released notebook and every page of the book, whitespace collapsed."""
    sources = [c.source for chapter in CHAPTERS
               for c in CourseNotebook.read(ROOT / "chapters" / chapter / f"{chapter}.ipynb").cells]
    sources += [page.read_text(encoding="utf-8") for page in sorted((ROOT / "book").rglob("*.md"))]
    return "\n".join(normal(line) for source in sources for line in source.splitlines())


def solution_lines(chapter: str) -> list[str]:
    """The lines of the chapter's solutions (between BEGIN and END SOLUTION, or whole solution cells without the
    markers) that no released notebook and no page has: what the student edition must not show."""
    released = public_text()
    lines = []
    for cell in CourseNotebook.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb").solutions():
        marked = "### BEGIN SOLUTION" in cell.source
        inside = not marked
        for line in cell.source.splitlines():
            stripped = normal(line)
            if stripped == "### BEGIN SOLUTION" or stripped == "### END SOLUTION":
                inside = stripped == "### BEGIN SOLUTION"
                continue
            if inside and len(stripped) >= 12 and stripped not in released:
                lines.append(stripped)
    return lines


def search_terms(html_root: Path) -> dict[str, set[str]]:
    """``{term: docnames}`` of a site's search index (Sphinx's ``searchindex.js``)."""
    text = (html_root / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(text[text.index("(") + 1:text.rindex(")")])
    docnames = index["docnames"]
    terms: dict[str, set[str]] = {}
    for key in ("terms", "titleterms"):
        for term, docs in index[key].items():
            docs = docs if isinstance(docs, list) else [docs]
            terms.setdefault(term, set()).update(docnames[d] for d in docs)
    return terms


def stem(word: str) -> str:
    from sphinx.search.en import SearchEnglish

    return SearchEnglish({}).stem(word.lower())


# ---------------------------------------------------------------------------------------------------------------


def test_the_student_edition_shows_no_solution_code(editions):
    """Every solution line the student notebook lacks is on the reader edition's page (so the search can find
    one) and on no page of the student edition."""
    reader, student = editions["reader"], editions["student"]
    student_text = site_text(student)
    assert "BEGIN SOLUTION" not in student_text and "HIDDEN TESTS" not in student_text
    student_site = site_lines(student)
    total = 0
    for chapter in CHAPTERS:
        lines = solution_lines(chapter)
        total += len(lines)
        shown = page_lines(chapter_page(reader, chapter))
        assert all(line in shown for line in lines), \
            f"{chapter}: the reader page lacks {[ln for ln in lines if ln not in shown][:3]} (is the search broken?)"
        leaked = [line for line in lines if line in student_site]
        assert not leaked, f"{chapter}: the student edition shows solution code: {leaked[:5]}"
    assert total > 200, f"only {total} solution lines to look for"


def test_the_student_search_index_holds_no_word_only_the_solutions_use(editions):
    """A word of a solution that appears nowhere in the student edition's pages is in the reader edition's search
    index (code is indexed) and not in the student edition's."""
    reader, student = search_terms(editions["reader"]), search_terms(editions["student"])
    shown = {stem(w) for w in re.findall(r"\w+", site_text(editions["student"]))}
    secret_in_reader = 0
    for chapter in CHAPTERS:
        doc = f"solutions/{chapter}/{chapter}"
        words = {stem(w) for line in solution_lines(chapter) for w in re.findall(r"[A-Za-z_]\w{3,}", line)}
        secret = words - shown
        secret_in_reader += sum(doc in reader.get(w, ()) for w in secret)
        leaked = sorted(w for w in secret if doc in student.get(w, ()))
        assert not leaked, f"{chapter}: the student search index has solution-only words {leaked[:10]}"
    assert secret_in_reader > 20, "the reader edition's index should hold the solutions' own words"


def test_the_student_edition_shows_the_stubs_and_where_to_work(editions):
    reader, student = editions["reader"], editions["student"]
    for chapter in CHAPTERS:
        page = page_text(chapter_page(student, chapter))
        for exercise in read_outline(ROOT, chapter).exercises.values():
            assert f"Your turn: Exercise {exercise.number}" in page, f"{chapter}: no box for {exercise.number}"
            assert f'raise NotImplementedError("Exercise {exercise.number}: write' in page or \
                f"raise NotImplementedError('Exercise {exercise.number}: write" in page, \
                f"{chapter}: the stub of {exercise.number} is not shown"
        assert f"chapters/{chapter}/{chapter}.ipynb" in page
        # the visible tests' verdicts are the reference's run: shown to readers, not under a student's stub
        verdicts = [outputs(chapter_page(tree, chapter)).count("tests passed") for tree in (reader, student)]
        assert verdicts[0] > 0 or chapter == "08a_scaling", f"{chapter}: no verdict in the reader edition?"
        assert verdicts[1] == 0, f"{chapter}: the student edition shows the reference's test verdicts"
        # the figures of the reference run are kept
        images = [len(re.findall(r"<img ", p.read_text())) for p in (chapter_page(reader, chapter),
                                                                     chapter_page(student, chapter))]
        assert images[0] == images[1], f"{chapter}: {images[0]} images in the reader edition, {images[1]} here"


def _card(html_root: Path, chapter: str) -> str:
    found = CARD.findall(chapter_page(html_root, chapter).read_text(encoding="utf-8"))
    assert len(found) == 1, f"{chapter}: {len(found)} chapter boxes"
    return found[0]


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_chapter_page_links_its_notebook_and_tables_its_exercises_and_time(editions, built_book, edition):
    cache = get_cache(str(built_book / "_build" / ".jupyter_cache"))
    runtimes = {Path(r.uri).stem: r.data["execution_seconds"] for r in cache.list_cache_records()}
    for chapter in CHAPTERS:
        card = _card(editions[edition], chapter)
        href = html.unescape(re.search(r'href="([^"]+)"', card)[1])
        assert href.endswith(f"{NOTEBOOKS}/{chapter}.ipynb")
        target = (chapter_page(editions[edition], chapter).parent / href).resolve()
        assert target.read_bytes() == (ROOT / "chapters" / chapter / f"{chapter}.ipynb").read_bytes(), \
            f"{chapter}: the download is not the released notebook"
        rows = re.findall(r"<tr><td>([^<]+)</td><td>.*?</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td>",
                          card)
        expected = [(r["number"], number_text(r["visible"]), number_text(r["hidden"]),
                     number_text(r["visible"] + r["hidden"])) for r in exercise_rows(read_outline(ROOT, chapter))]
        assert rows == expected and rows, f"{chapter}: exercise table {rows}, expected {expected}"
        total = sum(float(r[3]) for r in rows)
        assert total == CourseNotebook.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb").max_score
        seconds = re.search(r"ran this notebook in <strong>(\d+) s</strong>", card)
        assert seconds and int(seconds[1]) == round(runtimes[chapter]), f"{chapter}: time {seconds}"
        assert ("course-hidden-tests" in card) == (edition == "instructor")


def test_the_downloads_are_the_only_notebooks_published(editions):
    for edition, html_root in editions.items():
        published = sorted(p.relative_to(html_root).as_posix() for p in html_root.rglob("*.ipynb"))
        assert published == sorted(f"{NOTEBOOKS}/{c}.ipynb" for c in CHAPTERS), edition


def test_the_instructor_edition_adds_the_guide_and_every_hidden_test(editions):
    for edition, html_root in editions.items():
        for page in GUIDE:
            assert (html_root / f"{page}.html").is_file() == (edition == "instructor"), f"{edition}: {page}"
    instructor = editions["instructor"]
    summary = page_text(instructor / "book" / "instructor" / "hidden_tests.html")
    for chapter in CHAPTERS:
        tests = hidden_tests(ROOT, chapter)
        assert tests, chapter
        page = page_text(chapter_page(instructor, chapter))
        for test in tests:
            assert test["grade_id"] in summary and test["grade_id"] in page, f"{chapter}: {test['grade_id']}"
            assert test["checks"], f"{chapter}: nothing says what {test['grade_id']} checks"


def _is_text(line: str) -> bool:
    """A line that is only a string (a message continued over lines): its words may be shown."""
    try:
        return isinstance(ast.literal_eval(line.rstrip(",) ")), str)
    except (ValueError, SyntaxError):
        return False


def test_no_edition_shows_a_hidden_test_s_code(editions):
    """No line of hidden-test code (30 characters or more, not a comment or a lone string) is on any page of any
    edition, unless the same line is also in a visible cell of a notebook or on a page of the book."""
    notebooks = [CourseNotebook.read(ROOT / "solutions" / c / f"{c}.ipynb") for c in CHAPTERS]
    visible = {normal(line) for nb in notebooks for cell in nb.cells
               for line in without_hidden(cell.source).splitlines()}
    visible |= {normal(line) for page in (ROOT / "book").rglob("*.md") for line in page.read_text().splitlines()}
    hidden = {normal(line) for nb in notebooks for span in nb.hidden_sources() for line in span.splitlines()
              if len(line.strip()) >= 30 and not line.strip().startswith("#") and not _is_text(line.strip())}
    hidden -= visible
    assert len(hidden) > 300
    for edition, html_root in editions.items():
        text = site_lines(html_root)
        shown = sorted(line for line in hidden if line in text)
        assert not shown, f"{edition} shows hidden test code: {shown[:5]}"


def test_the_editions_share_one_execution_cache(built_book):
    """The reader build ran the notebooks (two at a time, before jupyter-book, which then found every chapter in the
    cache); the other editions ran none and took their outputs from its cache."""
    reader = (built_book / "_build" / "reader.log").read_text()
    chapters = toc_chapters(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    for chapter in chapters:
        line = next(line for line in reader.splitlines() if f"{chapter}.ipynb: " in line and "[mystnb]" in line)
        assert "Using cached notebook" in line, f"jupyter-book executed {chapter} again: {line}"
    for edition in ("student", "instructor"):
        log = (built_book / "_build" / edition / "build.log").read_text()
        assert "Executing notebook" not in log, f"the {edition} edition executed a notebook again"
        assert "Using cached notebook" in log, f"the {edition} edition's MyST pages should read the cache"
