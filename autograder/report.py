"""``python -m autograder report``: the instructor's summary of a graded class, as one HTML page with figures.

``<root>/autograder/reports/report.html`` (or ``-o DIR``) with PNG figures beside it:

- the score distribution of each chapter (histogram, ``scores_<chapter>.png``);
- the graded tests that fail most, per chapter (bar chart, ``failures_<chapter>.png``): where teaching helps;
- how many submissions of each chapter timed out, crashed, were invalid, flagged or missing
  (``statuses.png`` and a table);
- a table of the flagged submissions with their flags (an outside check disagreed with the notebook's tests);
- the assembly results, counted by status.

The page is self-contained (no scripts, no network); student-controlled text (flags and messages) goes through
the course's :class:`~autograder.gradesheet.Redactor`, which removes what quotes a hidden test, and is escaped.
"""

from __future__ import annotations

import html
import statistics
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from autograder.gradesheet import (
    Gradesheet,
    add_root_argument,
    course_root,
    load_gradesheet,
    number_text,
    warn_problems,
)
from autograder.layout import CourseLayout
from autograder.results import STATUSES, atomic_write

BAD_STATUSES = ("timeout", "crashed", "invalid", "flagged", "missing")
TOP_FAILURES = 15  # tests shown per chapter in the failure chart
MAX_FLAG_BYTES = 1000  # of one flag shown (after redaction)
MAX_REPORT_MESSAGE_BYTES = 2000  # of one submission's message shown


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _figure(width: float, height: float):
    """A matplotlib figure that needs no display and no pyplot state (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# the numbers


def chapter_scores(sheet: Gradesheet, chapter: str) -> list[float]:
    """The scores of the students who submitted the chapter (a missing submission is no score)."""
    results = (sheet.result(student, chapter) for student in sheet.students)
    return [result.score for result in results if result.status != "missing"]


def failure_counts(sheet: Gradesheet, chapter: str) -> list[tuple[str, int, int]]:
    """(grade_id, students failing it, students graded on it), most failed first, over the results with cells."""
    failed, graded = Counter(), Counter()
    for student in sheet.students:
        for cell in sheet.result(student, chapter).cells:
            graded[cell.grade_id] += 1
            failed[cell.grade_id] += not cell.passed
    order = {c.grade_id: i for i, c in enumerate(sheet.outlines[chapter].cells)}
    ranked = sorted(graded, key=lambda g: (-failed[g], order.get(g, len(order)), g))
    return [(grade_id, failed[grade_id], graded[grade_id]) for grade_id in ranked]


def status_counts(sheet: Gradesheet, chapter: str) -> Counter:
    return Counter(sheet.result(student, chapter).status for student in sheet.students)


def flagged(sheet: Gradesheet) -> list[tuple[str, str, list[str], str]]:
    """(student, chapter, flags, message) of every flagged submission, or one with flags."""
    rows = []
    for student in sheet.students:
        for chapter in sheet.chapters:
            result = sheet.result(student, chapter)
            if result.status == "flagged" or result.flags:
                rows.append((student, chapter, list(result.flags), result.message))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the figures


def score_bins(top: float) -> list[float] | int:
    """One bar per whole point (centred on it) when there are few points, else 20 bars."""
    if float(top).is_integer() and top <= 40:
        return [i - 0.5 for i in range(int(top) + 2)]
    return 20


def _integer_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_scores(sheet: Gradesheet, chapter: str, path: Path) -> None:
    scores = chapter_scores(sheet, chapter)
    top = sheet.max_score(chapter) or max(scores, default=1) or 1
    fig = _figure(5, 3)
    ax = fig.add_subplot()
    ax.hist(scores, bins=score_bins(top), range=(-0.5, top + 0.5), color="#4c72b0", edgecolor="white")
    ax.set_xlabel(f"score (of {number_text(top)})")
    ax.set_ylabel("students")
    _integer_axis(ax.yaxis)
    ax.set_title(f"{chapter}: scores of {len(scores)} submissions")
    fig.savefig(path, dpi=100)


def plot_failures(sheet: Gradesheet, chapter: str, path: Path) -> bool:
    """A bar chart of the most failed tests; False (and no file) when no test was graded."""
    counts = failure_counts(sheet, chapter)[:TOP_FAILURES]
    if not counts:
        return False
    outline = sheet.outlines[chapter]
    labels = [f"{g} (hidden)" if (c := outline.cell(g)) and c.hidden else g for g, _, _ in counts]
    fig = _figure(6, 0.8 + 0.35 * len(counts))
    ax = fig.add_subplot()
    ax.barh(range(len(counts)), [failed for _, failed, _ in counts], color="#c44e52")
    ax.set_yticks(range(len(counts)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("students failing it")
    _integer_axis(ax.xaxis)
    ax.set_title(f"{chapter}: the tests that fail most")
    fig.savefig(path, dpi=100)
    return True


def plot_statuses(sheet: Gradesheet, path: Path) -> None:
    """One group of bars per chapter: how many submissions ended in each bad status."""
    fig = _figure(max(5, 1.2 * len(sheet.chapters)), 3.5)
    ax = fig.add_subplot()
    width = 0.8 / len(BAD_STATUSES)
    for k, status in enumerate(BAD_STATUSES):
        heights = [status_counts(sheet, chapter)[status] for chapter in sheet.chapters]
        ax.bar([i + k * width for i in range(len(sheet.chapters))], heights, width, label=status)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(sheet.chapters))], sheet.chapters, rotation=30,
                  ha="right")
    ax.set_ylabel("submissions")
    _integer_axis(ax.yaxis)
    ax.set_title("submissions that did not grade cleanly")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------------------------
# the page


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; the cells are already escaped."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def overview_table(sheet: Gradesheet) -> str:
    rows = []
    for chapter in sheet.chapters:
        scores, counts = chapter_scores(sheet, chapter), status_counts(sheet, chapter)
        mean = number_text(round(statistics.fmean(scores), 2)) if scores else ""
        median = number_text(statistics.median(scores)) if scores else ""
        rows.append([esc(chapter), number_text(sheet.max_score(chapter)), mean, median, str(counts["graded"])]
                    + [str(counts[s]) for s in BAD_STATUSES])
    return _table(["chapter", "points", "mean of submitted", "median", "graded", *BAD_STATUSES], rows)


def failures_table(sheet: Gradesheet, chapter: str) -> str:
    outline = sheet.outlines[chapter]
    rows = []
    for grade_id, failed, graded in failure_counts(sheet, chapter)[:TOP_FAILURES]:
        known = outline.cell(grade_id)
        exercise = outline.exercises.get(known.exercise) if known else None
        rows.append([f"<code>{esc(grade_id)}</code>", "hidden" if known and known.hidden else "visible",
                     esc(f"Exercise {exercise.number}" if exercise and exercise.number else ""),
                     f"{failed} / {graded}"])
    return _table(["test", "kind", "exercise", "students failing / graded"], rows)


def flagged_table(sheet: Gradesheet) -> str:
    """The flagged submissions; flags and messages hold student-controlled text (what the notebook's own tests
    said), so they go through the redactor like feedback does."""
    rows = flagged(sheet)
    if not rows:
        return "<p>No submission was flagged.</p>"
    redact = sheet.redactor.redact
    return _table(["student", "chapter", "flags", "message"],
                  [[esc(s), esc(c), "<br>".join(esc(redact(f, MAX_FLAG_BYTES)) for f in flags),
                    f"<pre>{esc(redact(m, MAX_REPORT_MESSAGE_BYTES))}</pre>"] for s, c, flags, m in rows])


def assembly_table(sheet: Gradesheet) -> str:
    counts = Counter(str(data.get("status", "")) for data in sheet.assemblies.values())
    if not counts:
        return "<p>No assembly results.</p>"
    table = _table(["status", "students"], [[esc(s), str(n)] for s, n in sorted(counts.items())])
    applications = Counter(str(data.get("application_status")) for data in sheet.assemblies.values()
                           if data.get("application_status"))
    if applications:
        table += "<h3>Application (chapter 6b's pieces fine-tune course-tiny)</h3>" + _table(
            ["status", "students"], [[esc(s), str(n)] for s, n in sorted(applications.items())])
    modern = Counter(str(data.get("modern_status")) for data in sheet.assemblies.values()
                     if data.get("modern_status"))
    if modern:
        table += "<h3>Modern (chapter 4e's ModernGPT, measured as Hugging Face's Llama)</h3>" + _table(
            ["status", "students"], [[esc(s), str(n)] for s, n in sorted(modern.items())])
    return table


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
pre { white-space: pre-wrap; margin: 0; }
img { max-width: 100%; }
"""


def report_html(sheet: Gradesheet, figures: dict[str, str]) -> str:
    meanings = "".join(f"<li><strong>{esc(s)}</strong>: {esc(m)}</li>" for s, m in STATUSES.items())
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Grading report</title>"
             f"<style>{STYLE}</style></head><body>",
             "<h1>Grading report</h1>",
             f"<p>{len(sheet.students)} students, {len(sheet.chapters)} chapters.</p>",
             "<h2>Overview</h2>", overview_table(sheet), f"<ul>{meanings}</ul>"]
    if "statuses" in figures:
        parts.append(f'<img src="{esc(figures["statuses"])}" alt="status counts per chapter">')
    parts += ["<h2>Flagged submissions</h2>", flagged_table(sheet)]
    for chapter in sheet.chapters:
        parts.append(f"<h2>{esc(chapter)}</h2>")
        if f"scores_{chapter}" in figures:
            parts.append(f'<img src="{esc(figures[f"scores_{chapter}"])}" alt="score distribution">')
        if f"failures_{chapter}" in figures:
            parts.append(f'<img src="{esc(figures[f"failures_{chapter}"])}" alt="most failed tests">')
            parts.append(failures_table(sheet, chapter))
    parts += ["<h2>Assembly</h2>", assembly_table(sheet), "</body></html>\n"]
    return "\n".join(parts)


def write_report(sheet: Gradesheet, out: Path, progress: bool = True) -> Path:
    """Draw the figures and write ``report.html`` in ``out``; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    if sheet.chapters and sheet.students:
        plot_statuses(sheet, out / "statuses.png")
        figures["statuses"] = "statuses.png"
    for chapter in tqdm(sheet.chapters, desc="report", unit="chapter", file=sys.stderr,
                        disable=None if progress else True):
        if not sheet.students:
            break
        plot_scores(sheet, chapter, out / f"scores_{chapter}.png")
        figures[f"scores_{chapter}"] = f"scores_{chapter}.png"
        if plot_failures(sheet, chapter, out / f"failures_{chapter}.png"):
            figures[f"failures_{chapter}"] = f"failures_{chapter}.png"
    page = out / "report.html"
    atomic_write(page, report_html(sheet, figures))
    return page


def run(args) -> int:
    root = course_root(args.root)
    sheet = load_gradesheet(root)
    warn_problems(sheet)
    out = Path(args.output) if args.output else CourseLayout(root).reports
    page = write_report(sheet, out)
    print(f"wrote {page} ({len(sheet.students)} student(s), {len(sheet.chapters)} chapter(s))")
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "report",
        help="write the instructor's summary: score distributions, most failed tests, statuses, flags",
        description="Write report.html and PNG figures (score histograms, the tests that fail most, status "
        "counts per chapter) and a table of flagged submissions, from ROOT/autograder/results.",
    )
    p.add_argument("-o", "--output", metavar="DIR", help="folder to write into; default: ROOT/autograder/reports")
    add_root_argument(p)
    p.set_defaults(run=run)
