"""The class's grades as one table, and what each chapter's instructor notebook says about its graded cells.

``export``, ``feedback`` and ``report`` all need the same two things:

- the **results** of every student for every chapter, read from ``<root>/autograder/results`` with
  :class:`~autograder.results.ResultStore`, with a ``missing`` result wherever a student has none (and a
  corrupt file reported instead of stopping the whole command);
- the **outline** of each chapter from ``<root>/solutions/<id>/<id>.ipynb``: its graded cells with their points,
  which are hidden, which exercise (solution cell) each test belongs to, and that exercise's heading. The
  outline is what lets feedback say "this test checks Exercise 4a.2" without showing the test.

And one guard: :class:`Redactor`, built from every chapter's hidden tests (``Gradesheet.redactor``), through which
every student-controlled text goes before it is shown (messages, flags, the assembly's text): it removes the lines
that quote a hidden test, however disguised or encoded, and caps the length.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course import CommandError
from autograder.layout import CourseLayout
from autograder.notebook_model import CourseNotebook, hidden_spans  # noqa: F401 (re-exported)
from autograder.redaction import MAX_MESSAGE_BYTES, REDACTED_LINE, Redactor, cap_bytes  # noqa: F401
from autograder.results import STATUSES, Result, ResultStore, check_student_id
from llmcourse import registry

EXERCISE_HEADING_RE = re.compile(r"^(?P<hashes>#{1,6})\s+.*?Exercise\s+(?P<number>\d+[a-z]?\.\d+)")
HEADING_RE = re.compile(r"^(?P<hashes>#{1,6})\s")
MIN_LEAK_LINE = 12  # Outline.hidden_lines: the hidden-test lines this long or longer


def add_root_argument(parser) -> None:
    """The ``--root`` option every command shares: which course folder to work on."""
    parser.add_argument("--root", type=Path, default=registry.COURSE_ROOT, metavar="ROOT",
                        help="the course folder (holding solutions/ and autograder/); default: %(default)s")


def course_root(path: Path) -> Path:
    """``path`` resolved, or a clear error when it is not a folder."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise CommandError(f"--root {path}: not a folder")
    return root


def results_dir(root: Path) -> Path:
    return CourseLayout(root).results


def number_text(value: float) -> str:
    """``3.0 -> "3"``, ``2.5 -> "2.5"``: points as people write them."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.4g}"


# ---------------------------------------------------------------------------------------------------------------
# the instructor notebook's outline


@dataclass
class Exercise:
    grade_id: str  # of the solution cell
    number: str = ""  # "4a.1", from the nearest "Exercise 4a.1" heading above the cell
    heading: str = ""  # markdown: that heading and the text under it (LaTeX math included)


@dataclass
class GradedCell:
    grade_id: str
    points: float
    hidden: bool
    exercise: str = ""  # grade_id of the solution cell above it ("" when there is none)


@dataclass
class Outline:
    chapter: str
    cells: list[GradedCell] = field(default_factory=list)
    exercises: dict[str, Exercise] = field(default_factory=dict)
    hidden_sources: list[str] = field(default_factory=list)  # the hidden tests' text, to keep out of feedback

    @property
    def hidden_lines(self) -> set[str]:
        """The hidden tests' lines that are long enough to recognise (what an older redaction looked for)."""
        return {line.strip() for source in self.hidden_sources for line in source.splitlines()
                if len(line.strip()) >= MIN_LEAK_LINE}

    @property
    def max_score(self) -> float:
        return sum(cell.points for cell in self.cells)

    def cell(self, grade_id: str) -> GradedCell | None:
        return next((cell for cell in self.cells if cell.grade_id == grade_id), None)


def exercise_section(markdown: str) -> tuple[str, str] | None:
    """The last ``Exercise N.M`` heading in a markdown cell and the text under it, as (number, markdown)."""
    lines = markdown.splitlines()
    starts = [(i, m) for i, line in enumerate(lines) if (m := EXERCISE_HEADING_RE.match(line))]
    if not starts:
        return None
    start, match = starts[-1]
    level = len(match["hashes"])
    end = len(lines)
    for i in range(start + 1, len(lines)):
        heading = HEADING_RE.match(lines[i])
        if heading and len(heading["hashes"]) <= level:
            end = i
            break
    return match["number"], "\n".join(lines[start:end]).strip()


def outline_of(nb: dict, chapter: str) -> Outline:
    """The graded cells and exercises of an instructor notebook (a notebook as plain JSON)."""
    outline = Outline(chapter)
    number, heading, exercise = "", "", ""
    for cell in CourseNotebook.from_json(nb).cells:
        if cell.cell_type == "markdown":
            section = exercise_section(cell.source)
            if section:
                number, heading = section
            continue
        outline.hidden_sources += cell.hidden  # hidden tests are secret in any cell
        if cell.is_solution and cell.grade_id:
            exercise = cell.grade_id
            outline.exercises[exercise] = Exercise(exercise, number, heading)
        if cell.is_grade and cell.grade_id:
            outline.cells.append(GradedCell(cell.grade_id, cell.points, cell.has_hidden, exercise))
    return outline


def read_outline(root: Path, chapter: str) -> Outline:
    """The outline of ``<root>/solutions/<chapter>``; an empty one when that notebook is absent or unreadable."""
    path = registry.notebook_path(Path(root) / "solutions", chapter)
    try:
        return outline_of(json.loads(path.read_text(encoding="utf-8")), chapter)
    except (OSError, ValueError, AttributeError, TypeError):
        return Outline(chapter)


# ---------------------------------------------------------------------------------------------------------------
# the class's results


NOT_GRADED_YET = "submitted, but not graded yet (python -m autograder grade)"


def missing_result(student: str, chapter: str, max_score: float = 0.0, submitted: bool = False) -> Result:
    """The result of a chapter that has none: 0 points, status ``missing``."""
    return Result(student=student, chapter=chapter, status="missing", score=0.0, max_score=max_score,
                  message=NOT_GRADED_YET if submitted else STATUSES["missing"])


@dataclass
class Gradesheet:
    """Students x chapters: every result, with what is needed to explain it (outlines, assemblies)."""

    root: Path
    chapters: list[str]
    students: list[str]
    results: dict[tuple[str, str], Result]
    assemblies: dict[str, dict]
    outlines: dict[str, Outline]
    problems: list[str] = field(default_factory=list)
    submitted: set[tuple[str, str]] = field(default_factory=set)  # (student, chapter) with a submitted notebook

    @functools.cached_property
    def redactor(self) -> Redactor:
        """The redactor of every chapter's hidden tests: what any text shown from a result must go through."""
        return Redactor([source for outline in self.outlines.values() for source in outline.hidden_sources])

    def max_score(self, chapter: str) -> float:
        """The chapter's points: from its instructor notebook, else the largest max_score among its results."""
        from_notebook = self.outlines[chapter].max_score if chapter in self.outlines else 0.0
        if from_notebook:
            return from_notebook
        return max((r.max_score for (_, c), r in self.results.items() if c == chapter), default=0.0)

    def result(self, student: str, chapter: str) -> Result:
        """The student's result for the chapter, or a ``missing`` one."""
        found = self.results.get((student, chapter))
        if found is not None:
            return found
        return missing_result(student, chapter, self.max_score(chapter), (student, chapter) in self.submitted)

    def total(self, student: str) -> tuple[float, float]:
        """(points, possible points) over all chapters."""
        return (sum(self.result(student, c).score for c in self.chapters),
                sum(self.max_score(c) for c in self.chapters))


def _ordered_chapters(chapters: set[str]) -> list[str]:
    order = {cid: i for i, cid in enumerate(registry.CHAPTER_IDS)}
    return sorted(chapters, key=lambda cid: (order.get(cid, len(order)), cid))


def _read_results(store: ResultStore, problems: list[str]) -> dict[tuple[str, str], Result]:
    """Every readable result file; a corrupt one becomes a line in ``problems``, not a crash."""
    found = {}
    if not store.folder.is_dir():
        return found
    for path in sorted(store.folder.glob("*/*.json")):
        student, chapter = path.parent.name, path.stem
        if path.name == "assembly.json":
            continue
        if not registry.CHAPTER_ID_RE.match(chapter):
            problems.append(f"{path}: {chapter!r} is not a chapter id, ignored")
            continue
        try:
            check_student_id(student)
            result = store.load(student, chapter)
        except (ValueError, TypeError, KeyError, OSError) as err:
            problems.append(f"{path}: unreadable result ({err})")
            continue
        if result is not None:
            found[(student, chapter)] = result
    return found


def _read_assemblies(store: ResultStore, problems: list[str]) -> dict[str, dict]:
    """``store.assemblies()``; when one file is corrupt, every readable one, and the others in ``problems``."""
    try:
        found = store.assemblies()
    except (ValueError, OSError):
        found = {}
        for path in sorted(store.folder.glob("*/assembly.json")):
            try:
                found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError) as err:
                problems.append(f"{path}: unreadable assembly result ({err})")
    usable = {}
    for student, data in found.items():
        if isinstance(data, dict) and valid_student_id(student):
            usable[student] = data
        else:
            problems.append(f"{store.folder / student / 'assembly.json'}: not an assembly result")
    return usable


def valid_student_id(student: str) -> bool:
    """Whether ``student`` is a usable student id (a folder in results/ may be anything)."""
    try:
        check_student_id(student)
    except ValueError:
        return False
    return True


def _submissions(root: Path) -> set[tuple[str, str]]:
    """(student, chapter) of every notebook in ``<root>/autograder/submitted`` (graded or not)."""
    folder = CourseLayout(root).submitted
    found = set()
    for path in folder.glob("*/*/*.ipynb") if folder.is_dir() else []:
        student, chapter = path.parent.parent.name, path.parent.name
        if path.stem == chapter and registry.CHAPTER_ID_RE.match(chapter) and valid_student_id(student):
            found.add((student, chapter))
    return found


def load_gradesheet(root: Path) -> Gradesheet:
    """Everything graded so far in the course at ``root``: chapters from ``solutions/`` plus any in the results;
    students with a result, an assembly result or a submission (a student never drops out of the table)."""
    root = Path(root)
    problems: list[str] = []
    store = ResultStore(results_dir(root))
    results = _read_results(store, problems)
    assemblies = _read_assemblies(store, problems)
    submitted = _submissions(root)
    chapters = _ordered_chapters(set(registry.chapters_in(root / "solutions")) | {c for _, c in results})
    students = sorted({s for s, _ in results} | set(assemblies) | {s for s, _ in submitted})
    outlines = {chapter: read_outline(root, chapter) for chapter in chapters}
    return Gradesheet(root, chapters, students, results, assemblies, outlines, problems, submitted)


def warn_problems(sheet: Gradesheet) -> None:
    """Tell the user about result files that could not be read (they count as missing)."""
    for problem in sheet.problems:
        print(f"warning: {problem}; counted as missing", file=sys.stderr)
