"""The whole course graded as an instructor would: a fresh copy of the repository, no ``LLMCOURSE_*`` settings,
``python -m autograder grade`` from the copy, every chapter.

- each chapter's instructor notebook, submitted as it is, scores full points;
- each released student notebook (the stubs) with the one IPython line that turns every later test cell into
  ``pass`` scores 0, flagged: every graded cell's points come from the outside checks, which see the same exported
  code with or without that line, so the stub alone would score 0 too; three chapters' stubs are graded as
  released as well, to show an honest stub is not flagged;
- hostile submissions to chapter 5c (tests patched, a fork bomb, ``os._exit``, an endless loop) get exactly the
  points their exported code earns;
- the feedback pages show no hidden test, and the CSV says how each notebook's own run went.

(Needs bubblewrap, which .ci/run installs.)
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbformat.v4 import new_code_cell
from test_grading import FORGER, FORK_BOMB, INFINITE_LOOP, sandbox_or_skip

from autograder.layout import CourseLayout
from autograder.notebook_model import CourseNotebook
from autograder.results import ResultStore
from llmcourse import registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]  # the first test waits for the whole class

CHAPTERS = registry.chapters_in(ROOT / "solutions")
GENERATION = "05c_generation"
PLAIN_STUBS = ("02_language_models", GENERATION, CHAPTERS[-1])
PATCHED_CHECKS = '''
import llmcourse.checks as _checks
import torch as _torch
check_close = check = check_shape = check_dtype = check_tokens = lambda *args, **kwargs: None
_checks.check_close = _checks.check = _checks.check_shape = _checks.check_dtype = _checks.check_tokens = check
_torch.equal = lambda *args, **kwargs: True
_torch.testing.assert_close = lambda *args, **kwargs: None
'''


def fresh_copy(target: Path) -> Path:
    """The repository's tracked files, as a fresh clone has them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def notebook(tree: str, chapter: str, before=(), after=(), replace=None) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / tree / chapter / f"{chapter}.ipynb", as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if replace and gid in replace:
            cell.source = replace[gid]
    nb.cells = nb.cells[:1] + [new_code_cell(s) for s in before] + nb.cells[1:] + [new_code_cell(s) for s in after]
    return nb


def generation_answers() -> dict[str, str]:
    nb = CourseNotebook.read(ROOT / "solutions" / GENERATION / f"{GENERATION}.ipynb")
    return {c.grade_id: c.source for c in nb.solutions()}


def wrong_generate() -> str:
    """A plausible mistake in generate that only the hidden test catches (from the chapter's own table)."""
    from test_05c_generation import WRONG_ANSWERS

    return next(source for cell, source, must_fail in WRONG_ANSWERS.values()
                if cell == "generate" and must_fail == {"test_generate_hidden"})


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    sandbox_or_skip()
    course = fresh_copy(tmp_path_factory.mktemp("clone"))
    layout = CourseLayout(course)
    submissions = {}
    for chapter in CHAPTERS:
        submissions[("instructor", chapter)] = notebook("solutions", chapter)
        if chapter in PLAIN_STUBS:
            submissions[("stub", chapter)] = notebook("chapters", chapter)
        submissions[("forger", chapter)] = notebook("chapters", chapter, before=[FORGER])
    answers = generation_answers()
    hostile = {
        "gen_patched": notebook("chapters", GENERATION, before=[PATCHED_CHECKS],
                                replace={**answers, "generate": wrong_generate()}),
        "gen_fork_bomb": notebook("chapters", GENERATION, after=[FORK_BOMB], replace=answers),
        "gen_os_exit": notebook("chapters", GENERATION, before=["import os\nos._exit(3)"], replace=answers),
        "gen_loop": notebook("chapters", GENERATION, before=[INFINITE_LOOP], replace=answers),
    }
    submissions.update({(student, GENERATION): nb for student, nb in hostile.items()})
    for (student, chapter), nb in submissions.items():
        path = layout.submission(student, chapter)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "--workers", "2", "--cell-timeout", "60",
                           "--timeout", "600"], cwd=course, env=env, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {(r.student, r.chapter): r for r in ResultStore(layout.results).all()}
    return course, results, env


def _show(result) -> str:
    return (f"{result.student} {result.chapter}: {result.status} {result.score}/{result.max_score} "
            f"{result.message} {result.flags}\n"
            + "\n".join(f"  {c.grade_id}: {c.points}/{c.max_points} {c.message[:300]}" for c in result.cells))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_instructor_notebook_scores_full_and_stubs_score_zero(graded_course, chapter):
    _, results, _ = graded_course
    instructor = results[("instructor", chapter)]
    assert instructor.status == "graded" and instructor.score == instructor.max_score > 0, _show(instructor)
    if chapter in PLAIN_STUBS:
        stub = results[("stub", chapter)]
        assert stub.status == "graded" and stub.score == 0, _show(stub)
    forger = results[("forger", chapter)]
    assert forger.score == 0 and forger.status == "flagged", _show(forger)
    assert any(c.kernel_passed for c in forger.cells), "the forging line no longer forges the notebook's tests?"


def test_hostile_generation_submissions(graded_course):
    _, results, _ = graded_course
    full = results[("instructor", GENERATION)].max_score
    patched = results[("gen_patched", GENERATION)]
    assert patched.status == "flagged" and 0 < patched.score < full, _show(patched)
    assert not next(c for c in patched.cells if c.grade_id == "test_generate_hidden").passed
    for student, notebook_state in (("gen_fork_bomb", "ok"), ("gen_os_exit", "crashed"),
                                    ("gen_loop", "cell-timeout")):
        result = results[(student, GENERATION)]
        assert (result.status, result.score) == ("graded", full), _show(result)
        assert result.notebook == notebook_state, _show(result)


def test_feedback_and_export_from_another_folder(graded_course, tmp_path):
    course, _, env = graded_course
    for command in (["feedback"], ["export", "-o", str(tmp_path / "grades.csv")]):
        proc = subprocess.run([sys.executable, "-m", "autograder", *command, "--root", str(course)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    hidden = [line.strip() for chapter in CHAPTERS
              for span in CourseNotebook.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb").hidden_sources()
              for line in span.splitlines() if len(line.strip()) >= 30]
    for page in (course / "autograder" / "feedback").glob("*/index.html"):
        text = page.read_text()
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{page}: {leaked[:3]}"
    looped = (course / "autograder" / "feedback" / "gen_loop" / "index.html").read_text()
    assert "Your notebook's own run: a cell ran out of time" in looped and "gives no points" in looped
    rows = list(csv.DictReader(io.StringIO((tmp_path / "grades.csv").read_text())))
    loop = next(r for r in rows if r["student"] == "gen_loop")
    assert loop[f"{GENERATION}_status"] == "graded"
    assert loop[f"{GENERATION}_notebook"] == "cell-timeout"


def test_nothing_is_left_behind(graded_course):
    course, _, _ = graded_course
    assert not CourseLayout(course).run_folder().exists()
    assert not (course / "autograder" / "work").exists() or not any((course / "autograder" / "work").iterdir())
