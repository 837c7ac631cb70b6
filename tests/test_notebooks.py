"""What every chapter notebook must satisfy, checked for each chapter in solutions/.

- committed without outputs, in stable JSON;
- the released stubs fail every graded test (hidden ones included) and earn nothing;
- the student notebook fails only with the NotImplementedError of an unfinished exercise;
- every exercise has visible and hidden tests;
- ``#| export`` cells hold definitions only;
- the public fallback provides every piece the chapter exports.
(Chapter-specific tests, plausible wrong answers among them, are in test_<chapter>.py. The instructor notebook's
full run, with no error and nothing on stderr, is the book's build, checked in test_book.py; its full points are
checked where nbgrader grades it, in test_grade_course.py.)
"""

from __future__ import annotations

import ast
import importlib
import inspect

import nbformat
import pytest
from conftest import ROOT
from notebook_harness import nbgrader_meta, run_notebook, solution_cells

from llmcourse import registry
from llmcourse.notebook import is_export

CHAPTERS = registry.chapters_in(ROOT / "solutions")


def solution(chapter):
    return registry.notebook_path(ROOT / "solutions", chapter)


def student(chapter):
    return registry.notebook_path(ROOT / "chapters", chapter)


def test_there_are_chapters():
    assert "04a_attention" in CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_committed_without_outputs_in_stable_json(chapter):
    for path in (solution(chapter), student(chapter)):
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
        assert text == nbformat.writes(nb) + "\n", f"{path}: not in nbformat's stable JSON layout"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path}: committed with outputs"
        assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_stubs_fail_every_graded_test(chapter):
    """The released stubs against every graded test, hidden ones included, as nbgrader grades them."""
    stubs = solution_cells(student(chapter))
    assert set(stubs) == set(solution_cells(solution(chapter)))
    results = run_notebook(solution(chapter), replace=stubs)
    passing = [r.grade_id for r in results if r.graded and r.passed]
    assert not passing, f"{chapter}: graded tests that pass on the stubs: {passing}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_student_notebook_fails_only_at_unfinished_exercises(chapter):
    for r in run_notebook(student(chapter)):
        if r.error is None:
            assert not r.stderr, f"{chapter}, cell {r.index} wrote to stderr:\n{r.stderr}"
            continue
        assert isinstance(r.error, NotImplementedError), f"{chapter}, cell {r.index}: {r.error!r}"
        assert str(r.error).startswith("Exercise "), f"{chapter}, cell {r.index}: {r.error}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_exercise_has_visible_and_hidden_tests(chapter):
    nb = nbformat.read(solution(chapter), as_version=4)
    exercises, current = {}, None
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            current = meta["grade_id"]
            exercises[current] = {"visible": 0, "hidden": 0}
        elif meta.get("grade") and current:
            exercises[current]["hidden" if "### BEGIN HIDDEN TESTS" in cell.source else "visible"] += 1
    assert exercises
    for name, counts in exercises.items():
        assert counts["visible"] and counts["hidden"], f"{chapter}, exercise {name}: {counts}"


ALLOWED_IN_EXPORTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                      ast.AnnAssign)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_export_cells_hold_definitions_only(chapter):
    nb = nbformat.read(solution(chapter), as_version=4)
    exports = [c for c in nb.cells if c.cell_type == "code" and is_export(c.source)]
    assert exports, f"{chapter} exports nothing"
    for cell in exports:
        for node in ast.parse(cell.source).body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert docstring or isinstance(node, ALLOWED_IN_EXPORTS), (
                f"{chapter}: an #| export cell runs {type(node).__name__} at line {node.lineno}; "
                "exported cells hold definitions only")


def exported_pieces(module) -> set[str]:
    """Public functions and classes that chapter modules define (their own or re-exported from another)."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
            and getattr(value, "__module__", "").startswith("llmcourse.chapters.")}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_fallback_provides_every_exported_piece(chapter, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    name = registry.module_name(chapter)
    module = importlib.import_module(f"llmcourse.chapters.{name}")
    fallback = importlib.import_module(f"llmcourse.fallbacks.{name}")
    missing = exported_pieces(module) - set(vars(fallback))
    assert not missing, f"llmcourse/fallbacks/{name}.py lacks {sorted(missing)}"
