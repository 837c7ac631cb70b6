"""Read the ``#| export`` cells of a chapter notebook and run them as a module.

A code cell whose first line is ``#| export`` belongs to its chapter's module. Each cell is compiled under a
file name that names the notebook and the cell, and its lines are put in :mod:`linecache`, so a traceback
through imported chapter code shows ``File ".../04a_attention.ipynb, cell 12 (softmax)", line 9`` and the line.
"""

from __future__ import annotations

import json
import linecache
import types
from dataclasses import dataclass
from pathlib import Path

EXPORT_MARKER = "#| export"


@dataclass(frozen=True)
class ExportCell:
    notebook: Path
    index: int  # 1-based position of the cell in the notebook, as Jupyter shows cells top to bottom
    source: str
    grade_id: str | None

    @property
    def filename(self) -> str:
        label = f", {self.grade_id}" if self.grade_id else ""
        return f"{self.notebook}, cell {self.index}{label}"


class NotebookError(ImportError):
    """A chapter notebook that cannot be read."""


def read_notebook(path: Path) -> dict:
    """The notebook's JSON, or a :class:`NotebookError` that says what is wrong with the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise NotebookError(f"{path} is not UTF-8 text, so it cannot be a notebook") from None
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as err:
        raise NotebookError(
            f"{path} is not valid notebook JSON ({err.msg} at line {err.lineno}, column {err.colno}). "
            "Was it edited outside Jupyter? Restore it from your last checkpoint or from git."
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path} is JSON but not a notebook: expected an object with a list of 'cells'")
    return nb


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def is_export(source: str) -> bool:
    """The cell's first line that is not blank is ``#| export``."""
    return source.lstrip().split("\n", 1)[0].rstrip() == EXPORT_MARKER


def export_body(source: str) -> str:
    """The cell's code after its ``#| export`` line."""
    stripped = source.lstrip()
    return stripped.split("\n", 1)[1] if "\n" in stripped else ""


def export_cells(path: Path) -> list[ExportCell]:
    """The ``#| export`` code cells of a notebook, in order."""
    path = Path(path)
    cells = []
    for index, cell in enumerate(read_notebook(path)["cells"], start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell_source(cell)
        if is_export(source):
            grade_id = (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")
            cells.append(ExportCell(path, index, source, grade_id if isinstance(grade_id, str) else None))
    return cells


def exec_cells(module: types.ModuleType, cells: list[ExportCell]) -> None:
    """Run the cells in the module's namespace; an error says which notebook cell it came from."""
    for cell in cells:
        lines = cell.source.splitlines(keepends=True)
        linecache.cache[cell.filename] = (len(cell.source), None, lines, cell.filename)
        try:
            code = compile(cell.source, cell.filename, "exec", dont_inherit=True)
            exec(code, module.__dict__)
        except BaseException as err:
            if isinstance(err, Exception):
                err.add_note(f"(while importing {module.__name__} from {cell.filename})")
            raise
