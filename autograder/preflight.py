"""Pre-flight checks of a submitted notebook, before any of its code runs (pure JSON, in the grader).

A submission that fails one of them gets the status ``invalid`` (or ``missing``) with a message that says what
is wrong, and the batch goes on: nbgrader itself would abort a whole batch on, say, a corrupt schema_version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.notebook_model import CourseNotebook

MAX_BYTES = 20 * 1024**2  # a course notebook without outputs is < 100 kB; with outputs, a few MB


@dataclass(frozen=True)
class Verdict:
    status: str  # "ok", "invalid" or "missing"
    message: str = ""
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def graded_ids(nb: dict) -> list[str]:
    """grade_ids of the cells nbgrader knows (solution, test and locked cells), in order."""
    return CourseNotebook.from_json(nb).grade_ids()


def chapter_ids(sources: dict[str, Path]) -> dict[str, set[str]]:
    """The grade_ids of each chapter's instructor notebook."""
    return {chapter: set(graded_ids(json.loads(path.read_text(encoding="utf-8")))) for chapter, path in sources.items()}


def _check_metadata(nb: dict) -> str | None:
    seen = {}
    for index, cell in enumerate(nb["cells"], start=1):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            continue
        if not isinstance(meta, dict):
            return f"cell {index}: its nbgrader metadata is not an object"
        if meta.get("schema_version") != 3:
            return (f"cell {index}: nbgrader schema_version {meta.get('schema_version')!r}, expected 3 "
                    "(was the notebook edited by another tool?)")
        grade_id = meta.get("grade_id")
        if not isinstance(grade_id, str) or not grade_id:
            return f"cell {index}: nbgrader metadata without a grade_id"
        for key in ("grade", "solution", "locked"):
            if key in meta and not isinstance(meta[key], bool):
                return f"cell {index} ({grade_id}): nbgrader '{key}' is {meta[key]!r}, expected true or false"
        if meta.get("grade") and not isinstance(meta.get("points"), (int, float)):
            return f"cell {index} ({grade_id}): a graded cell without a number of points"
        if grade_id in seen:
            return (f"cells {seen[grade_id]} and {index} are both '{grade_id}': a cell was duplicated. "
                    "Delete the copy and submit again.")
        seen[grade_id] = index
    return None


def check_submission(path: Path, chapter: str, expected_ids: dict[str, set[str]]) -> Verdict:
    """Is ``path`` a notebook nbgrader can grade as ``chapter``? ``expected_ids`` maps every chapter to its
    grade_ids, so that another chapter's notebook is recognised as such."""
    path = Path(path)
    if not path.is_file():
        return Verdict("missing", _missing_message(path))
    size = path.stat().st_size
    if size > MAX_BYTES:
        return Verdict("invalid", f"the notebook is {size / 1024**2:.1f} MB, more than the "
                                  f"{MAX_BYTES // 1024**2} MB allowed (clear its outputs and submit again)")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Verdict("invalid", f"the file is not UTF-8 text (byte {err.start}), so it is not a notebook", sha)
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as err:
        return Verdict("invalid", f"the file is not valid notebook JSON ({err.msg} at line {err.lineno}, "
                                  f"column {err.colno}); was it edited outside Jupyter?", sha)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return Verdict("invalid", "the file is JSON but not a notebook (no list of cells)", sha)
    try:
        nbformat.validate(nbformat.from_dict(nb))
    except nbformat.ValidationError as err:
        return Verdict("invalid", f"the notebook does not follow the notebook format: {err.message[:200]}", sha)
    problem = _check_metadata(nb)
    if problem:
        return Verdict("invalid", problem, sha)
    ids = set(graded_ids(nb))
    own = _distinctive(expected_ids)  # ids like "imports" or "setup" are in every chapter: they say nothing
    if not ids & own.get(chapter, set()):
        others = sorted((len(ids & theirs), c) for c, theirs in own.items() if c != chapter and ids & theirs)
        if others:
            return Verdict("invalid", f"this is the notebook of chapter {others[-1][1]}, not {chapter}", sha)
        return Verdict("invalid", f"none of the exercise or test cells of chapter {chapter} are in this notebook "
                                  "(was it re-created by copying cells into a new notebook?)", sha)
    return Verdict("ok", "", sha)


def _missing_message(path: Path) -> str:
    """Why there is no notebook at ``path``, naming what the folder holds instead (a notebook saved under another
    name, say), so the student or instructor knows what to rename."""
    expected = f"{path.parent.name}/{path.name}"
    others = sorted(p.name for p in path.parent.glob("*.ipynb")) if path.parent.is_dir() else []
    if others:
        shown = ", ".join(repr(n) for n in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return (f"no notebook named {path.name}: the folder {path.parent.name}/ holds {shown} instead. The "
                f"grader reads only {expected}; rename the notebook to {path.name} (python -m autograder collect "
                "places notebooks by their content, whatever their file name).")
    return f"no notebook at {expected}"


def _distinctive(expected_ids: dict[str, set[str]]) -> dict[str, set[str]]:
    """Each chapter's grade_ids that no other chapter uses."""
    return {c: ids - set().union(*(o for d, o in expected_ids.items() if d != c)) for c, ids in expected_ids.items()}


def file_sha256(path: Path) -> str:
    """The submission's fingerprint ("" when there is no file): a result is reused only for the same file."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
