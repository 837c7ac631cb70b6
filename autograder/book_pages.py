"""What every chapter page of the book shows besides the notebook: a Sphinx extension, in every edition.

At the top of each chapter page (``solutions/<id>/<id>``), under its title, a box with

- a link to download the chapter's **student notebook**: the released ``chapters/<id>/<id>.ipynb``, copied byte
  for byte into the site as ``_notebooks/<id>.ipynb`` (it holds no solution and no hidden test);
- the **exercise table**: each exercise, what the student writes, the points of its visible and hidden tests;
- the notebook's **measured execution time**: how long the book's build took to run it (myst-nb's execution data,
  or, for an edition built from already executed notebooks, the time ``python -m autograder book`` read from the
  reader edition's execution cache and passed in ``course_page_data``).

In the instructor edition the box also lists the chapter's **hidden tests**: their names, points and what they
check, in the words of their comments and failure messages, never their code (:func:`hidden_test_summary`).

Configuration (``sphinx: config:`` in ``_config.yml``): ``course_root`` (the course folder holding ``solutions/``
and ``chapters/``; default: the book's source folder), ``course_edition`` (``reader``, ``student`` or
``instructor``; default ``reader``), ``course_page_data`` (a JSON file ``{chapter: {"execution_s": seconds}}``).
"""

from __future__ import annotations

import ast
import html
import io
import json
import re
import shutil
import tokenize
from pathlib import Path

from autograder.gradesheet import EXERCISE_HEADING_RE, Outline, number_text, read_outline
from autograder.notebook_model import CourseNotebook
from llmcourse import registry

EDITIONS = ("reader", "student", "instructor")
NOTEBOOKS = "_notebooks"  # the site's folder of student notebooks
MAX_SUMMARY_LINES = 12  # what a hidden test checks: at most this many lines of description


# ---------------------------------------------------------------------------------------------------------------
# what a chapter page says


def chapter_of(docname: str, root: Path) -> str | None:
    """``solutions/04a_attention/04a_attention`` -> ``04a_attention`` when that chapter exists, else None."""
    parts = docname.split("/")
    if len(parts) == 3 and parts[0] == "solutions" and parts[1] == parts[2]:
        if registry.CHAPTER_ID_RE.match(parts[1]) and (root / "solutions" / parts[1] / f"{parts[1]}.ipynb").is_file():
            return parts[1]
    return None


def _title(exercise_heading: str) -> str:
    """``### Exercise 4a.1: softmax\\n...`` -> ``softmax`` (the heading as the grader's outline finds it)."""
    first = exercise_heading.splitlines()[0] if exercise_heading else ""
    match = EXERCISE_HEADING_RE.match(first)
    return first[match.end():].lstrip(" :.-—").strip() if match else first.lstrip("# ").strip()


def _inline(markdown: str) -> str:
    """A heading's markdown as HTML: escaped, with `code` spans kept."""
    parts = re.split(r"(`[^`]+`)", markdown)
    return "".join(f"<code>{html.escape(p[1:-1])}</code>" if p.startswith("`") and p.endswith("`") and len(p) > 1
                   else html.escape(p.replace("*", "")) for p in parts)


def exercise_rows(outline: Outline) -> list[dict]:
    """One row per exercise: number, title, visible and hidden points."""
    rows = []
    for grade_id, exercise in outline.exercises.items():
        cells = [c for c in outline.cells if c.exercise == grade_id]
        rows.append({"number": exercise.number, "title": _title(exercise.heading) or grade_id,
                     "visible": sum(c.points for c in cells if not c.hidden),
                     "hidden": sum(c.points for c in cells if c.hidden)})
    return rows


def _text_of(node: ast.AST) -> str | None:
    """A string literal, or an f-string with each ``{...}`` shown as ``…``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    return None


def hidden_test_summary(span: str) -> list[str]:
    """What a hidden test checks, without its code: its comments and the messages and names its checks report,
    in the order of the test."""
    found: list[tuple[int, str]] = []
    try:
        comments = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(span).readline)
                    if tok.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        comments = [(n, line.strip()) for n, line in enumerate(span.splitlines(), start=1)
                    if line.strip().startswith("#")]
    found += [(n, text.lstrip("#").strip()) for n, text in comments if not text.startswith("###")]
    try:
        tree = ast.parse(span)
    except SyntaxError:
        tree = None
    for node in ast.walk(tree) if tree is not None else ():
        # llmcourse.checks' functions and a notebook's own check_* helpers: their messages and names
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check"):
            texts = [kw.value for kw in node.keywords if kw.arg in ("name", "message")]
            strings = [arg for arg in node.args if _text_of(arg)]
            texts += strings[-1:]
            for text in texts:
                described = _text_of(text)
                if described:
                    found.append((node.lineno, described if node.func.id == "check" else f"checks {described}"))
    seen, out = set(), []
    for _, line in sorted(found, key=lambda item: item[0]):
        line = re.sub(r"\s+", " ", line).strip()
        if line and line not in seen:
            seen.add(line)
            out.append(line)
    if len(out) > MAX_SUMMARY_LINES:
        out = out[:MAX_SUMMARY_LINES] + [f"… and {len(out) - MAX_SUMMARY_LINES} more"]
    return out


def hidden_tests(root: Path, chapter: str) -> list[dict]:
    """Each hidden test cell of a chapter: its grade id, points, exercise number and what it checks."""
    outline = read_outline(root, chapter)
    numbers = {grade_id: e.number for grade_id, e in outline.exercises.items()}
    nb = CourseNotebook.read(registry.notebook_path(root / "solutions", chapter))
    found = []
    for cell in nb.graded():
        if cell.has_hidden:
            graded = outline.cell(cell.grade_id)
            found.append({"grade_id": cell.grade_id, "points": cell.points,
                          "exercise": numbers.get(graded.exercise, "") if graded else "",
                          "checks": [line for span in cell.hidden for line in hidden_test_summary(span)]})
    return found


def hidden_tests_html(tests: list[dict]) -> str:
    items = []
    for test in tests:
        what = "".join(f"<li>{html.escape(line)}</li>" for line in test["checks"]) or "<li>(no description)</li>"
        exercise = f", Exercise {html.escape(test['exercise'])}" if test["exercise"] else ""
        items.append(f"<li><code>{html.escape(test['grade_id'])}</code> ({number_text(test['points'])} points"
                     f"{exercise})<ul>{what}</ul></li>")
    return f"<ul class=\"course-hidden-tests\">{''.join(items)}</ul>"


def chapter_card(root: Path, chapter: str, pathto_root: str, execution_s: float | None, edition: str) -> str:
    """The box under a chapter page's title, as HTML (``pathto_root``: the page's relative path to the site)."""
    outline = read_outline(root, chapter)
    rows = exercise_rows(outline)
    module = registry.module_name(chapter)
    download = f"{pathto_root}{NOTEBOOKS}/{chapter}.ipynb"
    total = number_text(sum(r["visible"] + r["hidden"] for r in rows))
    timing = (f"The book's build ran this notebook in <strong>{execution_s:.0f} s</strong>."
              if execution_s is not None else "")
    parts = [
        '<div class="admonition note course-chapter-card">',
        f'<p class="admonition-title">Exercises of this chapter: {len(rows)}, {total} points</p>',
        f'<p>Exercise notebook: <a class="reference download" href="{html.escape(download)}" '
        f'download="{chapter}.ipynb"><code>{chapter}.ipynb</code></a>, the same file as '
        f"<code>chapters/{chapter}/{chapter}.ipynb</code> in the course repository. {timing}</p>",
    ]
    if rows:
        body = "".join(
            f"<tr><td>{html.escape(r['number'])}</td><td>{_inline(r['title'])}</td>"
            f"<td>{number_text(r['visible'])}</td><td>{number_text(r['hidden'])}</td>"
            f"<td>{number_text(r['visible'] + r['hidden'])}</td></tr>" for r in rows)
        parts += [
            '<table class="table course-exercises" style="width: 100%"><thead><tr><th>Exercise</th>'
            "<th>You write</th><th>Visible</th><th>Hidden</th><th>Points</th></tr></thead>",
            f"<tbody>{body}</tbody></table>",
            "<p>Each exercise's points are those of its visible tests (in the notebook) and its hidden tests (run "
            f"when it is graded). Which ones pass? <code>python -m autograder check {module}</code> runs your "
            "notebook as the grader does and lists them.</p>",
        ]
    if edition == "instructor":
        tests = hidden_tests(root, chapter)
        if tests:
            parts += ["<p><strong>Hidden tests</strong> (instructor edition): what each checks, in the words of "
                      "its comments and messages; the points come from the grader's outside checks of the same "
                      f"cases (<code>autograder/probes/{module}.py</code>).</p>", hidden_tests_html(tests)]
    parts.append("</div>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# the Sphinx extension


def _root(app) -> Path:
    return Path(app.config.course_root or app.srcdir).resolve()


def _page_data(app) -> dict:
    path = app.config.course_page_data
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else {}


def _execution_s(app, docname: str, chapter: str) -> float | None:
    from myst_nb.sphinx_ import NbMetadataCollector

    data = NbMetadataCollector.get_exec_data(app.env, docname) or {}
    runtime = data.get("runtime")
    if runtime is None:
        runtime = _page_data(app).get(chapter, {}).get("execution_s")
    return float(runtime) if runtime is not None else None


def _add_card(app, doctree, docname: str) -> None:
    from docutils import nodes

    if app.builder.format != "html":
        return
    root = _root(app)
    chapter = chapter_of(docname, root)
    section = next(iter(doctree.findall(nodes.section)), None)
    if chapter is None or section is None:
        return
    pathto_root = "../" * docname.count("/")
    card = chapter_card(root, chapter, pathto_root, _execution_s(app, docname, chapter), app.config.course_edition)
    title = next((i for i, child in enumerate(section.children) if isinstance(child, nodes.title)), -1)
    section.insert(title + 1, nodes.raw("", card, format="html"))


def _copy_notebooks(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    root = _root(app)
    target = Path(app.outdir) / NOTEBOOKS
    for docname in app.env.found_docs:
        chapter = chapter_of(docname, root)
        if chapter is not None:
            released = registry.notebook_path(root / "chapters", chapter)
            if not released.is_file():
                raise FileNotFoundError(f"{released}: the student notebook of {chapter} is missing; run "
                                        f"python -m autograder release {chapter}")
            target.mkdir(exist_ok=True)
            shutil.copyfile(released, target / released.name)


def _one_of_each_script(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated scripts from a page's head. sphinx-thebe and sphinx-togglebutton each add their inline
    configuration twice (once with the file ``None``, once ``""``, so Sphinx does not see the copies as equal); the
    second ``const THEBE_JS_URL`` throws "Identifier 'THEBE_JS_URL' has already been declared" in the browser."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for script in scripts:
        # the same file, or the same inline body (its file given as None once and as "" once)
        attributes = getattr(script, "attributes", None) or {}
        key = (str(getattr(script, "filename", script) or ""), repr(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def _check_edition(app, config) -> None:
    if config.course_edition not in EDITIONS:
        raise ValueError(f"course_edition = {config.course_edition!r}: expected one of {', '.join(EDITIONS)}")


def setup(app):
    app.add_config_value("course_root", "", "env")
    app.add_config_value("course_edition", "reader", "env")
    app.add_config_value("course_page_data", "", "env")
    app.connect("config-inited", _check_edition)
    app.connect("doctree-resolved", _add_card)
    app.connect("build-finished", _copy_notebooks)
    app.connect("html-page-context", _one_of_each_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
