"""``python -m autograder feedback``: one HTML page and one short text file per student, from the grading results.

``<root>/autograder/feedback/<student>/index.html`` shows, per chapter, the status and what it means, the score,
and for every graded cell whether it passed and, when not, its message (shape, largest error, first wrong
token). Tests are grouped under the exercise they check, with the exercise's heading and statement from the
instructor notebook, math typeset by a local copy of MathJax. ``feedback.txt`` beside it is a plain summary to
paste into an LMS.

Feedback never shows the source of any test (nbgrader's own feedback shows hidden tests): only grade ids,
points and messages. Every text that comes from a result is student-controlled: it goes through the course's
:class:`~autograder.gradesheet.Redactor` (a line that quotes a hidden test, however disguised or encoded, is
removed; the rest is cut to ``MAX_MESSAGE_BYTES``) and is escaped. The pages use no network: MathJax is copied once
from the ``sphinx-mathjax-offline`` package into ``feedback/_static/mathjax`` and linked relatively.
"""

from __future__ import annotations

import html
import importlib.metadata
import re
import shutil
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from autograder.course import CommandError
from autograder.gradesheet import (
    MAX_MESSAGE_BYTES,
    GradedCell,
    Gradesheet,
    Outline,
    Redactor,
    add_root_argument,
    course_root,
    load_gradesheet,
    number_text,
    warn_problems,
)
from autograder.layout import CourseLayout
from autograder.results import NOTEBOOK_RUN, STATUSES, CellResult, Result, atomic_write, check_student_id

MATHJAX_DIST = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "static/mathjax/tex-chtml.js"
STATIC = "_static"
MAX_SAMPLE_BYTES = 2000  # of the assembled model's generated text

MATH_RE = re.compile(
    r"(?P<code>(?P<ticks>`+).+?(?P=ticks))"  # code spans stay as they are
    r"|\$\$(?P<display>.+?)\$\$"
    r"|(?<![\\$\w])\$(?P<inline>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?![\w$])",
    re.DOTALL,
)
LINK_RE = re.compile(r"!?\[(?P<text>[^\]]*)\]\([^)]*\)")
URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
pre { white-space: pre-wrap; margin: 0.3rem 0; font-size: 0.9em; }
.pass { color: #1a7f37; } .fail { color: #c62828; }
.exercise { background: #f6f8fa; border-left: 4px solid #8aa; padding: 0.2rem 1rem; margin-top: 1.5rem; }
.status { font-size: 1.05em; }
"""

MATHJAX_CONFIG = r"""<script>
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]]},
  options: {ignoreHtmlClass: "tex2jax_ignore", processHtmlClass: "tex2jax_process"},
  loader: {load: ["ui/safe"]}
};
</script>"""


# ---------------------------------------------------------------------------------------------------------------
# MathJax, offline


def mathjax_source() -> Path | None:
    """The installed MathJax folder of ``sphinx-mathjax-offline`` (found from its package metadata), or None."""
    try:
        files = importlib.metadata.files(MATHJAX_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).replace("\\", "/").endswith(MATHJAX_ENTRY):
            entry = Path(file.locate())
            return entry.parent if entry.is_file() else None
    return None


def install_mathjax(feedback_dir: Path) -> bool:
    """Copy MathJax into ``feedback_dir/_static/mathjax`` unless it is there already; False when unavailable."""
    target = feedback_dir / STATIC / "mathjax"
    if (target / "tex-chtml.js").is_file():
        return True
    source = mathjax_source()
    if source is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".mathjax-"))
    try:
        shutil.copytree(source, staging / "mathjax")
        if target.exists():  # a half copy from an interrupted run
            shutil.rmtree(target)
        (staging / "mathjax").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


# ---------------------------------------------------------------------------------------------------------------
# markdown with math (trusted text from the instructor notebook, still rendered without raw HTML or links)


def _plain_markdown(text: str) -> str:
    return "".join(f"<p>{html.escape(part).replace(chr(10), '<br>')}</p>" for part in text.split("\n\n"))


def markdown_html(text: str) -> str:
    """Markdown to HTML, with ``$...$`` / ``$$...$$`` kept intact for MathJax and no links or raw HTML."""
    text = URL_RE.sub("", LINK_RE.sub(lambda m: m["text"], text))
    maths: list[str] = []

    def protect(match: re.Match) -> str:
        if match["code"]:
            return match["code"]
        if match["display"] is not None:
            maths.append(r"\[" + html.escape(match["display"]) + r"\]")
        else:
            maths.append(r"\(" + html.escape(match["inline"]) + r"\)")
        return f"MATHPLACEHOLDER{len(maths) - 1}END"

    text = MATH_RE.sub(protect, text)
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # markdown-it comes with Jupyter Book; without it, paragraphs of plain text
        rendered = _plain_markdown(text)
    else:
        rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return re.sub(r"MATHPLACEHOLDER(\d+)END", lambda m: maths[int(m[1])], rendered)


# ---------------------------------------------------------------------------------------------------------------
# one student's page


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def cell_message(cell: CellResult, redactor: Redactor) -> str:
    """What the student may see of a cell's message (of any cell, visible or hidden: both are student-controlled
    text, since the student's code can raise anything)."""
    return redactor.redact(str(cell.message or "").strip(), MAX_MESSAGE_BYTES).strip()


def kernel_message(cell: CellResult, redactor: Redactor) -> str:
    """What the notebook's own test said, when it failed and said something other than the outside check."""
    said = str(getattr(cell, "kernel_message", "") or "").strip()
    return "" if not said or said == str(cell.message or "").strip() else \
        redactor.redact(said, MAX_MESSAGE_BYTES).strip()


def _cell_row(cell: CellResult, outline: Outline, redactor: Redactor) -> str:
    known = outline.cell(cell.grade_id)
    hidden = cell.hidden or bool(known and known.hidden)
    verdict = '<span class="pass">passed</span>' if cell.passed else '<span class="fail">failed</span>'
    detail = ""
    if not cell.passed:
        message = cell_message(cell, redactor)
        detail = f"<pre>{esc(message)}</pre>" if message else ""
    said = kernel_message(cell, redactor)
    if said:
        detail += f"<p>Your notebook's own run of this test said:</p><pre>{esc(said)}</pre>"
    if not cell.passed and hidden:
        detail += "<p>(a hidden test: its checks run only when you are graded and are not shown)</p>"
    points = f"{number_text(cell.points)} / {number_text(cell.max_points)}"
    return (f"<tr><td><code>{esc(cell.grade_id)}</code></td><td>{'hidden' if hidden else 'visible'}</td>"
            f"<td>{points}</td><td>{verdict}{detail}</td></tr>")


def _tests_table(cells: list[CellResult], outline: Outline, redactor: Redactor) -> str:
    rows = "".join(_cell_row(cell, outline, redactor) for cell in cells)
    return f"<table><tr><th>test</th><th>kind</th><th>points</th><th>result</th></tr>{rows}</table>"


def group_by_exercise(cells: list[CellResult], outline: Outline) -> list[tuple[str, list[CellResult]]]:
    """The result's cells grouped by the exercise they test, in the notebook's order ("" for no exercise)."""
    order = {c.grade_id: i for i, c in enumerate(outline.cells)}
    groups: dict[str, list[CellResult]] = {}
    for cell in sorted(cells, key=lambda c: order.get(c.grade_id, len(order))):
        known: GradedCell | None = outline.cell(cell.grade_id)
        groups.setdefault(known.exercise if known else "", []).append(cell)
    return sorted(groups.items(), key=lambda item: item[0] == "")


def _exercise_block(exercise_id: str, outline: Outline) -> str:
    exercise = outline.exercises.get(exercise_id)
    if exercise is None:
        return '<div class="exercise"><h3>Other graded cells</h3></div>'
    if exercise.heading:
        body = markdown_html(exercise.heading)
    else:
        body = f"<h3>Exercise <code>{esc(exercise.grade_id)}</code></h3>"
    return f'<div class="exercise tex2jax_process">{body}</div>'


def chapter_html(result: Result, outline: Outline, redactor: Redactor) -> str:
    """One chapter's section: status and meaning, score, message, and every graded cell by exercise."""
    chapter = esc(result.chapter)
    meaning = STATUSES.get(result.status, "")
    parts = [
        f'<section id="{chapter}"><h2>{chapter}: {number_text(result.score)} / {number_text(result.max_score)}'
        " points</h2>",
        f'<p class="status">Status: <strong>{esc(result.status)}</strong>'
        + (f" ({esc(meaning)})" if meaning and meaning != result.status else "") + "</p>",
    ]
    if result.message and result.message != meaning:
        parts.append(f"<pre>{esc(redactor.redact(result.message, MAX_MESSAGE_BYTES))}</pre>")
    if result.notebook not in ("", "ok"):
        parts.append(f"<p>Your notebook's own run: {esc(NOTEBOOK_RUN.get(result.notebook, result.notebook))}. It "
                     "gives no points: they come from the grader's checks of your exported code.</p>")
    for exercise_id, cells in group_by_exercise(result.cells, outline):
        parts.append(_exercise_block(exercise_id, outline))
        parts.append(_tests_table(cells, outline, redactor))
    parts.append("</section>")
    return "\n".join(parts)


def assembly_html(assembly: dict | None, redactor: Redactor) -> str:
    """The assembly section: does the student's own model train and generate?"""
    if not assembly:
        return ""
    parts = ['<section id="assembly"><h2>Assembly: your pieces together</h2>',
             f"<p class=\"status\">Status: <strong>{esc(redactor.redact(assembly.get('status', ''), 100))}</strong>, "
             f"score {esc(number_text(assembly.get('score') or 0))}</p>"]
    if assembly.get("message"):
        parts.append(f"<pre>{esc(redactor.redact(assembly['message'], MAX_MESSAGE_BYTES))}</pre>")
    losses = assembly.get("losses") or []
    if losses:
        bound = assembly.get("loss_bound") or 0
        parts.append(f"<p>Training loss: first {esc(f'{losses[0]:.4g}')}, last {esc(f'{losses[-1]:.4g}')}"
                     + (f" (to pass, below {esc(f'{bound:.4g}')})" if bound else "") + "</p>")
    if assembly.get("sample"):
        parts.append(f"<p>Generated text:</p><pre>{esc(redactor.redact(assembly['sample'], MAX_SAMPLE_BYTES))}</pre>")
    if assembly.get("application_status"):
        status = esc(redactor.redact(str(assembly["application_status"]), 100))
        task = esc(redactor.redact(str(assembly.get("application_task") or ""), 100))
        score = assembly.get("application_score")
        score = number_text(score) if isinstance(score, (int, float)) else "0"
        parts.append(f"<h3>Application: your pieces fine-tune the course-tiny checkpoint ({task})</h3>"
                     f"<p class=\"status\">Status: <strong>{status}</strong>, token F1 {esc(score)}</p>")
        if assembly.get("application_message"):
            parts.append(f"<pre>{esc(redactor.redact(str(assembly['application_message']), MAX_MESSAGE_BYTES))}</pre>")
    if assembly.get("modern_status"):
        status = esc(redactor.redact(str(assembly["modern_status"]), 100))
        parts.append("<h3>Today's block: your ModernGPT (chapter 4e), trained by your pieces, measured as Hugging "
                     f"Face's Llama</h3><p class=\"status\">Status: <strong>{status}</strong></p>")
        if assembly.get("modern_message"):
            parts.append(f"<pre>{esc(redactor.redact(str(assembly['modern_message']), MAX_MESSAGE_BYTES))}</pre>")
        losses = [x for x in assembly.get("modern_losses") or [] if isinstance(x, (int, float))]
        if losses:
            parts.append(f"<p>Training loss: first {esc(f'{losses[0]:.4g}')}, last {esc(f'{losses[-1]:.4g}')}</p>")
        if assembly.get("modern_sample"):
            parts.append("<p>Generated text:</p>"
                         f"<pre>{esc(redactor.redact(str(assembly['modern_sample']), MAX_SAMPLE_BYTES))}</pre>")
    parts.append("</section>")
    return "\n".join(parts)


def summary_table(sheet: Gradesheet, student: str) -> str:
    rows = []
    for chapter in sheet.chapters:
        result = sheet.result(student, chapter)
        rows.append(f'<tr><td><a href="#{esc(chapter)}">{esc(chapter)}</a></td><td>{esc(result.status)}</td>'
                    f"<td>{number_text(result.score)} / {number_text(result.max_score)}</td></tr>")
    total, possible = sheet.total(student)
    rows.append(f"<tr><th>total</th><th></th><th>{number_text(total)} / {number_text(possible)}</th></tr>")
    return f"<table><tr><th>chapter</th><th>status</th><th>score</th></tr>{''.join(rows)}</table>"


def student_page(sheet: Gradesheet, student: str, mathjax: bool) -> str:
    """The whole ``index.html`` of one student."""
    head = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Feedback: {esc(student)}"
            f"</title><style>{STYLE}</style>"]
    if mathjax:
        head.append(MATHJAX_CONFIG)
        head.append(f'<script defer src="../{STATIC}/mathjax/tex-chtml.js"></script>')
    head.append('</head><body class="tex2jax_ignore">')
    body = [f"<h1>Feedback for {esc(student)}</h1>", summary_table(sheet, student)]
    for chapter in sheet.chapters:
        body.append(chapter_html(sheet.result(student, chapter), sheet.outlines[chapter], sheet.redactor))
    body.append(assembly_html(sheet.assemblies.get(student), sheet.redactor))
    body.append("</body></html>\n")
    return "\n".join(head + body)


def _first_line(message: str, limit: int = 300) -> str:
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[:limit] + " ..."


def student_text(sheet: Gradesheet, student: str) -> str:
    """``feedback.txt``: scores and, per failed cell, its first message line."""
    lines = [f"Feedback for {student}", ""]
    for chapter in sheet.chapters:
        result, outline = sheet.result(student, chapter), sheet.outlines[chapter]
        lines.append(f"{chapter}: {number_text(result.score)}/{number_text(result.max_score)} ({result.status})")
        if result.status != "graded" and result.message:
            lines.append(f"  {_first_line(sheet.redactor.redact(result.message, MAX_MESSAGE_BYTES))}")
        for cell in result.cells:
            if cell.passed:
                continue
            known = outline.cell(cell.grade_id)
            exercise = outline.exercises.get(known.exercise) if known else None
            where = f"Exercise {exercise.number}, " if exercise and exercise.number else ""
            kind = "hidden" if cell.hidden or (known and known.hidden) else "visible"
            message = _first_line(cell_message(cell, sheet.redactor))
            points = f"{number_text(cell.max_points)} point{'' if cell.max_points == 1 else 's'}"
            lines.append(f"  failed {cell.grade_id} ({where}{kind}, {points})"
                         + (f": {message}" if message else ""))
    total, possible = sheet.total(student)
    lines += ["", f"Total: {number_text(total)}/{number_text(possible)}"]
    assembly = sheet.assemblies.get(student)
    if assembly:
        status = sheet.redactor.redact(assembly.get("status", ""), 100)
        lines.append(f"Assembly: {status} (score {number_text(assembly.get('score') or 0)})")
    lines += ["", "Details: index.html, in the same folder as this file."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# the command


def write_feedback(sheet: Gradesheet, students: list[str], out: Path, progress: bool = True) -> list[Path]:
    """Write every student's page and text file under ``out``; returns the pages written."""
    mathjax = install_mathjax(out)
    if not mathjax:
        print(f"warning: {MATHJAX_DIST} is not installed: formulas will show as TeX source", file=sys.stderr)
    pages = []
    for student in tqdm(students, desc="feedback", unit="student", file=sys.stderr,
                        disable=None if progress else True):
        folder = out / check_student_id(student)
        atomic_write(folder / "index.html", student_page(sheet, student, mathjax))
        atomic_write(folder / "feedback.txt", student_text(sheet, student))
        pages.append(folder / "index.html")
    return pages


def run(args) -> int:
    root = course_root(args.root)
    sheet = load_gradesheet(root)
    warn_problems(sheet)
    students = sheet.students
    if args.student:
        try:
            check_student_id(args.student)
        except ValueError as err:
            raise CommandError(str(err)) from None
        if args.student not in students:
            raise CommandError(f"no results for student {args.student!r} in {root / 'autograder' / 'results'}")
        students = [args.student]
    if not students:
        raise CommandError(f"no results in {root / 'autograder' / 'results'}: run python -m autograder grade first")
    out = CourseLayout(root).feedback
    pages = write_feedback(sheet, students, out)
    print(f"wrote feedback for {len(pages)} student(s) to {out}/<student>/index.html (and feedback.txt)")
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "feedback",
        help="write per-student feedback (HTML and text) from the grading results",
        description="Write ROOT/autograder/feedback/<student>/index.html and feedback.txt: per chapter the "
        "status, score and each graded cell's verdict and message, grouped by exercise. Hidden tests are never "
        "shown; formulas render offline.",
    )
    p.add_argument("--student", metavar="S", help="only this student (default: every student with a result)")
    add_root_argument(p)
    p.set_defaults(run=run)
