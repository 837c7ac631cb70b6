"""python -m autograder release: chapters/ is what release makes of solutions/, with the book's tags."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT

from autograder.course import CommandError
from autograder.release import normalize_source, release
from llmcourse.registry import chapters_in


def test_chapters_are_in_sync_with_solutions():
    """Fails when someone edits solutions/ without releasing, or edits chapters/ by hand."""
    assert chapters_in(ROOT / "solutions"), "no chapters to release"
    assert chapters_in(ROOT / "chapters") == chapters_in(ROOT / "solutions")
    problems = release(check=True)
    assert problems == [], "\n".join(problems)


def test_release_check_cli_exit_code():
    proc = subprocess.run([sys.executable, "-m", "autograder", "release", "--check", "attention"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "chapters/ matches solutions/" in proc.stdout


@pytest.fixture
def course_copy(tmp_path):
    """A copy of the course's solutions and chapters, for release to write into."""
    for tree in ("solutions", "chapters"):
        shutil.copytree(ROOT / tree / "04a_attention", tmp_path / tree / "04a_attention")
    (tmp_path / "autograder").mkdir()
    return tmp_path


def test_check_catches_a_hand_edited_student_notebook(course_copy):
    path = course_copy / "chapters" / "04a_attention" / "04a_attention.ipynb"
    path.write_text(path.read_text().replace("Exercise 4a.1", "Exercise 4a.one"))
    problems = release(check=True, root=course_copy)
    assert problems == ["chapters/04a_attention/04a_attention.ipynb: differs from what release writes"]


def test_check_catches_missing_tags_and_outputs(course_copy):
    path = course_copy / "solutions" / "04a_attention" / "04a_attention.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("tags", None)
    nbformat.write(nb, path)
    problems = release(check=True, root=course_copy)
    assert any("book tags missing" in p for p in problems)
    release(root=course_copy)  # release puts them back
    assert release(check=True, root=course_copy) == []
    assert path.read_text() == (ROOT / "solutions" / "04a_attention" / "04a_attention.ipynb").read_text()


def test_tags_hide_solutions_and_remove_hidden_tests():
    nb = nbformat.read(ROOT / "solutions" / "04a_attention" / "04a_attention.ipynb", as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            assert "hide-input" in tags
        if "### BEGIN HIDDEN TESTS" in cell.source:
            assert "remove-cell" in tags
        elif meta.get("grade"):
            assert "remove-cell" not in tags, "visible tests stay on the page"


def test_a_cell_mixing_visible_and_hidden_tests_is_refused():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS\n")])
    with pytest.raises(CommandError, match="cell 1: it mixes visible tests .*'assert f\\(1\\) == 2'"):
        normalize_source(nb, "x.ipynb")


def test_stubs_name_their_exercise():
    nb = nbformat.read(ROOT / "chapters" / "04a_attention" / "04a_attention.ipynb", as_version=4)
    stubs = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(stubs) == 3
    for number, name, stub in zip(("4a.1", "4a.2", "4a.3"),
                                  ("softmax", "scaled_dot_product_attention", "causal_mask"), stubs):
        assert f'raise NotImplementedError("Exercise {number}: write {name} here' in stub
        assert "### BEGIN SOLUTION" not in stub
        assert stub.startswith("#| export\ndef "), "the signature and docstring stay visible"
    text = (ROOT / "chapters" / "04a_attention" / "04a_attention.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in text and "manual_seed(41)" not in text


def test_an_exercise_without_a_heading_is_refused(course_copy):
    path = course_copy / "solutions" / "04a_attention" / "04a_attention.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("Exercise 4a.", "Task ")
    nbformat.write(nb, path)
    with pytest.raises(CommandError, match="needs a markdown heading 'Exercise 4a.N' above it"):
        release(root=course_copy)


def test_unknown_chapter_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "autograder", "release", "atention"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "no chapter is called 'atention'" in proc.stderr
