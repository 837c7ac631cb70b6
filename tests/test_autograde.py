"""nbgrader itself grades chapter 4a as intended: the solution gets full points, the stub none, and each of the
wrong answers the chapter names (no sqrt(d_k), mask after the softmax, softmax over the wrong axis) less than
full points."""

from __future__ import annotations

import shutil

import nbformat
import pytest
from conftest import ROOT
from nbgrader.api import Gradebook
from test_04a_attention import WRONG_ANSWERS

from autograder.course import run_nbgrader

CHAPTER = "04a_attention"
FULL = 9.0


def submission(replace: dict[str, str]) -> nbformat.NotebookNode:
    """The student notebook with some solution cells filled in (by grade_id)."""
    nb = nbformat.read(ROOT / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in replace:
            cell.source = replace[grade_id]
    return nb


@pytest.mark.slow
def test_nbgrader_autograde_scores(tmp_path):
    shutil.copytree(ROOT / "solutions" / CHAPTER, tmp_path / "solutions" / CHAPTER)
    (tmp_path / "autograder").mkdir()
    run_nbgrader(["generate_assignment", CHAPTER, "--force"], root=tmp_path)

    solution = nbformat.read(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    answers = {c.metadata.nbgrader["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    students = {
        "correct": submission(answers),
        "stub": submission({}),
        "no_sqrt": submission({**answers, "scaled_dot_product_attention":
                               WRONG_ANSWERS["attention without the sqrt(d_k) scaling"][1]}),
        "mask_after_softmax": submission({**answers, "scaled_dot_product_attention":
                                          WRONG_ANSWERS["attention with the mask applied after the softmax"][1]}),
        "wrong_axis": submission({**answers, "scaled_dot_product_attention":
                                  WRONG_ANSWERS["attention with the softmax over the queries"][1]}),
    }
    for student, nb in students.items():
        path = tmp_path / "autograder" / "submitted" / student / CHAPTER / f"{CHAPTER}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)

    run_nbgrader(["autograde", CHAPTER, "--force"], root=tmp_path, timeout=600)

    with Gradebook(f"sqlite:///{tmp_path / 'autograder' / 'gradebook.db'}") as gb:
        scores = {s: gb.find_submission(CHAPTER, s).score for s in students}
        assert gb.find_submission(CHAPTER, "correct").max_score == FULL
    assert scores["correct"] == FULL, scores
    assert scores["stub"] == 0, scores
    for wrong in ("no_sqrt", "mask_after_softmax", "wrong_axis"):
        assert scores[wrong] < FULL, (wrong, scores)
        assert scores[wrong] >= FULL - 4, f"{wrong}: only attention's 4 points should be lost: {scores}"
