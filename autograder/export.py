"""``python -m autograder export``: the class's grades as one CSV file, one row per student.

Columns, in a fixed order so that a spreadsheet or an LMS import can rely on them: ``student``, then for each
chapter in course order its score (``04a_attention``), status (``04a_attention_status``: graded, flagged,
invalid, missing or grader-error) and how the notebook's own run went (``04a_attention_notebook``: ok,
cell-timeout, timeout, crashed, failed; it gives no points, so none of these costs any), then ``total`` and
``max_total`` over the chapters, then ``assembly`` and ``assembly_status`` (empty when the student has no
assembly result), then ``application_f1`` and ``application_status`` (the assembly's chapter-6b stage: the grader's
token F1 of the student's fine-tuned model; empty when it was not measured), then ``modern_val_loss`` and
``modern_status`` (the assembly's chapter-4e stage: the grader's validation loss of the student's ModernGPT, in nats
per token; empty when it was not measured). A chapter without a result counts 0 with
status ``missing``. Every student with a result, an assembly result or a submitted notebook has a row, sorted by
student id; the chapters are those of ``solutions/`` (and any others that have results).
"""

from __future__ import annotations

import csv
import io
import sys
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
from autograder.results import atomic_write


def header(chapters: list[str]) -> list[str]:
    columns = ["student"]
    for chapter in chapters:
        columns += [chapter, f"{chapter}_status", f"{chapter}_notebook"]
    return columns + ["total", "max_total", "assembly", "assembly_status", "application_f1", "application_status",
                      "modern_val_loss", "modern_status"]


def row(sheet: Gradesheet, student: str) -> list[str]:
    """One student's line: chapter scores and statuses, totals, assembly."""
    cells = [student]
    for chapter in sheet.chapters:
        result = sheet.result(student, chapter)
        cells += [number_text(result.score), result.status, result.notebook]
    total, possible = sheet.total(student)
    assembly = sheet.assemblies.get(student)
    if assembly:
        status = sheet.redactor.redact(assembly.get("status", ""), 100)  # written by the grader; cheap to be sure
        assembly_cells = [number_text(assembly.get("score") or 0), status]
        app_status = sheet.redactor.redact(str(assembly.get("application_status") or ""), 100)
        score = assembly.get("application_score")
        scored = app_status in ("passed", "failed") and isinstance(score, (int, float))
        assembly_cells += [number_text(score) if scored else "", app_status]
        modern_status = sheet.redactor.redact(str(assembly.get("modern_status") or ""), 100)
        loss = assembly.get("modern_val_loss")
        measured = modern_status in ("passed", "failed") and isinstance(loss, (int, float)) and loss > 0
        assembly_cells += [number_text(loss) if measured else "", modern_status]
    else:
        assembly_cells = ["", "", "", "", "", ""]
    return cells + [number_text(total), number_text(possible)] + assembly_cells


def grades_csv(sheet: Gradesheet, progress: bool = True) -> str:
    """The whole CSV file as text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header(sheet.chapters))
    for student in tqdm(sheet.students, desc="export", unit="student", file=sys.stderr,
                        disable=None if progress else True):
        writer.writerow(row(sheet, student))
    return buffer.getvalue()


def run(args) -> int:
    root = course_root(args.root)
    sheet = load_gradesheet(root)
    warn_problems(sheet)
    text = grades_csv(sheet)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    output = Path(args.output) if args.output else CourseLayout(root).reports / "grades.csv"
    atomic_write(output, text)
    print(f"wrote {output}: {len(sheet.students)} student(s), {len(sheet.chapters)} chapter(s)")
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "export",
        help="write the class's grades as CSV (one row per student)",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the CSV ('-' for standard output); "
                        "default: ROOT/autograder/reports/grades.csv")
    add_root_argument(p)
    p.set_defaults(run=run)
