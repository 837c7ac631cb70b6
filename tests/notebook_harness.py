"""Run a course notebook's code cells in this process, the way nbgrader grades them, but in milliseconds.

Cells run top to bottom in one namespace; an error in one cell is recorded and the next cell still runs, as
in nbgrader. A graded cell passes when it raised nothing and wrote nothing to stderr. Solution cells can be
replaced by grade_id, which is how the tests try plausible wrong answers against the graded tests.
(The real nbgrader is exercised in test_autograde.py; this is for the many cases in between.)
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402

from llmcourse.chapters import reload_all  # noqa: E402
from llmcourse.notebook import is_export  # noqa: E402


@dataclass
class CellResult:
    index: int  # 1-based
    grade_id: str | None
    graded: bool
    points: float
    error: BaseException | None
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        return self.error is None and not self.stderr


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


@contextlib.contextmanager
def _logging_to(stream):
    """Send every logging handler that writes to a stream (transformers' writes to stderr) to ``stream``: in a
    kernel, that output would land in the cell's stderr. (Handlers made during an earlier cell hold that cell's
    buffer, so every stream handler is moved, not only those on the real stderr.)"""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict))]
    moved = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                    and handler.stream is not stream:
                # assigned, not setStream(): that flushes the old stream, which may be closed (a handler made while
                # an earlier test's captured stderr was sys.stderr)
                moved.append((handler, handler.stream))
                handler.stream = stream
    try:
        yield
    finally:
        for handler, old in moved:
            with contextlib.suppress(ValueError):  # a stream closed meanwhile has nothing left to flush
                handler.flush()
            handler.stream = old


def _kernel_warning_filters() -> None:
    """Python's default warning filters, as in a Jupyter kernel (pytest's own filters do not apply)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def is_essential(cell) -> bool:
    """Cells that grading depends on: nbgrader's cells (setup, exercises, tests) and exported code."""
    return bool(nbgrader_meta(cell)) or is_export(cell.source)


def run_notebook(path: Path, replace: dict[str, str] | None = None, only_essential: bool = False) -> list[CellResult]:
    """Run every code cell of the notebook at ``path`` (with its folder as working folder); with
    ``only_essential``, skip the narrative's demos and figures (see :func:`rejected_by`)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    replace = dict(replace or {})
    namespace = {"__name__": "__main__"}
    results = []
    old_cwd = os.getcwd()
    old_show = plt.show
    plt.show = lambda *a, **k: plt.close("all")
    reload_all()
    try:
        os.chdir(path.parent)
        for index, cell in enumerate(nb.cells, start=1):
            if cell.cell_type != "code" or (only_essential and not is_essential(cell)):
                continue
            meta = nbgrader_meta(cell)
            grade_id = meta.get("grade_id")
            source = replace.pop(grade_id, cell.source) if grade_id else cell.source
            out, err = io.StringIO(), io.StringIO()
            error = None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _logging_to(err), \
                    warnings.catch_warnings(record=True) as caught:
                _kernel_warning_filters()
                try:
                    exec(compile(source, f"{path.name}, cell {index}", "exec"), namespace)
                except Exception as exc:  # noqa: BLE001 - recorded, like a notebook cell error
                    error = exc
            for w in caught:  # a kernel prints warnings on stderr, which fails a graded cell
                err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
            results.append(CellResult(index, grade_id, bool(meta.get("grade")), float(meta.get("points", 0)),
                                      error, out.getvalue(), err.getvalue()))
    finally:
        os.chdir(old_cwd)
        plt.show = old_show
        plt.close("all")
        reload_all()
    if replace:
        raise KeyError(f"no cells with grade_id {sorted(replace)} in {path}")
    return results


def score(results: list[CellResult]) -> tuple[float, float]:
    """(points earned, points possible) over the graded cells."""
    graded = [r for r in results if r.graded]
    return sum(r.points for r in graded if r.passed), sum(r.points for r in graded)


def failed(results: list[CellResult]) -> set[str]:
    return {r.grade_id for r in results if r.graded and not r.passed}


def solution_cells(path: Path) -> dict[str, str]:
    """The solution (exercise) cells of a notebook, by grade_id."""
    nb = nbformat.read(path, as_version=4)
    return {nbgrader_meta(c)["grade_id"]: c.source for c in nb.cells if nbgrader_meta(c).get("solution")}


def solution_editor(path: Path):
    """``edit(grade_id, (old, new), ...)``: the solution cell ``grade_id`` of the notebook at ``path`` with each
    (old, new) replaced, ``old`` occurring in it exactly once. The chapters' tests write their plausible wrong answers
    with it, so that each differs from the solution in one mistake."""
    sources = solution_cells(path)

    def edit(grade_id: str, *replacements: tuple[str, str]) -> str:
        source = sources[grade_id]
        for old, new in replacements:
            assert source.count(old) == 1, f"{grade_id}: {old!r} occurs {source.count(old)} times"
            source = source.replace(old, new)
        return source

    return edit


@functools.cache
def _essentials_suffice(path: str, mtime: float) -> bool:
    """Does the solution earn full points when only the essential cells run? Then wrong answers can be tried
    that way, several times faster; otherwise (a test needs a demo's variable) every cell runs."""
    results = run_notebook(Path(path), only_essential=True)
    return all(r.passed for r in results if r.graded)


@contextlib.contextmanager
def graded_like_the_grader(path: Path):
    """Every chapter before the notebook's on its public fallback, as when the grader runs it."""
    from autograder.grading import earlier_modules

    earlier = earlier_modules(Path(path).stem)
    old = os.environ.get("LLMCOURSE_FALLBACK")
    os.environ["LLMCOURSE_FALLBACK"] = ",".join(earlier)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LLMCOURSE_FALLBACK", None)
        else:
            os.environ["LLMCOURSE_FALLBACK"] = old


def rejected_by(path: Path, grade_id: str, source: str) -> set[str]:
    """The graded cells that fail when the solution cell ``grade_id`` is replaced by ``source``, with the earlier
    chapters on their fallbacks, as when grading."""
    with graded_like_the_grader(path):
        fast = _essentials_suffice(str(path), Path(path).stat().st_mtime)
        return failed(run_notebook(path, replace={grade_id: source}, only_essential=fast))


def wrong_answer_tests(solution: Path, wrong_answers: dict[str, tuple[str, str, set[str]]]):
    """The two tests every chapter runs on its plausible wrong answers (``label -> (solution grade_id, wrong
    source, graded cells that must reject it)``): each is rejected by its cells, and every graded cell rejects
    at least one. A chapter's test module assigns them to test_* names."""
    import pytest

    @pytest.mark.parametrize("label", list(wrong_answers))
    def test_wrong_answer_is_rejected(label):
        from probe_harness import outside_verdicts

        cell, source, must_fail = wrong_answers[label]
        rejected = rejected_by(solution, cell, source)
        assert must_fail <= rejected, f"{label}: not rejected by {sorted(must_fail - rejected)}"
        # the points come from the outside checks: they must reject it too, and agree with the notebook's own
        # tests cell by cell (else an honest mistake would be flagged as a disagreement)
        outside = outside_verdicts(solution, {cell: source})
        failed_outside = {c for c, (verdict, _) in outside.items() if verdict != "pass"}
        assert failed_outside == rejected, (
            f"{label}: the notebook's tests reject {sorted(rejected)}, the outside checks "
            f"{sorted(failed_outside)}: {({c: outside[c][1] for c in failed_outside ^ rejected if c in outside})}")

    def test_every_graded_test_rejects_some_wrong_answer():
        rejecting = set().union(*(must for _, _, must in wrong_answers.values()))
        cells = nbformat.read(solution, as_version=4).cells  # nbgrader's metadata says which cells are graded
        graded = {nbgrader_meta(c)["grade_id"] for c in cells if nbgrader_meta(c).get("grade")}
        assert graded == rejecting, f"graded cells that reject no wrong answer: {sorted(graded - rejecting)}"

    return test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer
