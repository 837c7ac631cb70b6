"""One model of a course notebook for the whole grader: its cells, grade ids, points, solutions and hidden tests.

Every part of the grader that needs to know about a notebook's nbgrader cells (pre-flight, grading, feedback,
release, collect) reads it through :class:`CourseNotebook`. It accepts any JSON (a submission is untrusted: cells
that are not objects, metadata of the wrong type) and never raises on odd content; nbgrader's own predicates
(:mod:`nbgrader.utils`) decide what a grade, solution or locked cell is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode, from_dict
from nbgrader import utils as nbgrader_utils

from llmcourse.notebook import is_export

BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"


def hidden_spans(source: str) -> list[str]:
    """The text between each ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` of a cell (an unclosed
    span runs to the end of the cell)."""
    spans, current = [], None
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN_HIDDEN:
            current = []
        elif stripped == END_HIDDEN and current is not None:
            spans.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        spans.append("\n".join(current))
    return spans


def without_hidden(source: str) -> str:
    """The cell's source with its hidden spans (markers included) removed."""
    kept, inside = [], False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN_HIDDEN:
            inside = True
        elif stripped == END_HIDDEN and inside:
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


@dataclass
class Cell:
    index: int  # 1-based position in the notebook
    cell_type: str
    source: str
    meta: dict  # metadata.nbgrader ({} when absent or not an object)
    node: NotebookNode | None = None

    @property
    def grade_id(self) -> str | None:
        value = self.meta.get("grade_id")
        return value if isinstance(value, str) and value else None

    def _is(self, predicate) -> bool:
        try:
            return bool(self.node is not None and predicate(self.node))
        except (KeyError, AttributeError, TypeError):
            return False

    @property
    def is_grade(self) -> bool:
        return self._is(nbgrader_utils.is_grade)

    @property
    def is_solution(self) -> bool:
        return self._is(nbgrader_utils.is_solution)

    @property
    def is_locked(self) -> bool:
        return self._is(nbgrader_utils.is_locked)

    @property
    def points(self) -> float:
        value = self.meta.get("points", 0)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

    @property
    def hidden(self) -> list[str]:
        return hidden_spans(self.source)

    @property
    def has_hidden(self) -> bool:
        return any(line.strip() == BEGIN_HIDDEN for line in self.source.splitlines())

    @property
    def is_export(self) -> bool:
        return self.cell_type == "code" and is_export(self.source)


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


@dataclass
class CourseNotebook:
    cells: list[Cell] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, nb) -> CourseNotebook:
        cells = []
        raw_cells = nb.get("cells") if isinstance(nb, dict) else None
        for index, cell in enumerate(raw_cells if isinstance(raw_cells, list) else [], start=1):
            if not isinstance(cell, dict):
                continue
            metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
            meta = metadata.get("nbgrader") if isinstance(metadata.get("nbgrader"), dict) else {}
            node = from_dict({"metadata": {"nbgrader": meta}}) if meta else None
            cell_type = cell.get("cell_type") if isinstance(cell.get("cell_type"), str) else ""
            cells.append(Cell(index, cell_type, _source(cell), meta, node))
        return cls(cells, nb if isinstance(nb, dict) else {})

    @classmethod
    def read(cls, path: Path) -> CourseNotebook:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    # --- what the grader asks -----------------------------------------------------------------------------------
    def grade_ids(self) -> list[str]:
        """grade_ids of the cells nbgrader knows, in order."""
        return [c.grade_id for c in self.cells if c.grade_id]

    def graded(self) -> list[Cell]:
        return [c for c in self.cells if c.is_grade and c.grade_id]

    def solutions(self) -> list[Cell]:
        return [c for c in self.cells if c.is_solution and c.grade_id]

    def by_id(self) -> dict[str, Cell]:
        return {c.grade_id: c for c in self.cells if c.grade_id}

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.graded())

    def points(self) -> dict[str, float]:
        return {c.grade_id: c.points for c in self.graded()}

    def hidden_cells(self) -> set[str]:
        """grade_ids of the graded cells that hold hidden tests."""
        return {c.grade_id for c in self.graded() if c.has_hidden}

    def hidden_sources(self) -> list[str]:
        """The text of every hidden span: what feedback must never show."""
        return [span for c in self.cells for span in c.hidden]

    def exercise_of(self) -> dict[str, str]:
        """For each graded cell, the grade_id of the solution cell above it ("" when none)."""
        found, current = {}, ""
        for cell in self.cells:
            if cell.is_solution and cell.grade_id:
                current = cell.grade_id
            if cell.is_grade and cell.grade_id:
                found[cell.grade_id] = current
        return found
