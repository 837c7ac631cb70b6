"""python -m autograder check: a student's notebook, run like the grader, with nbgrader's pass rule and an exit
status that means something (nbgrader validate always exits 0). Three runs start a kernel; the rest is unit
tests of the verdicts and the summary."""

from __future__ import annotations

import argparse
import shutil

import nbformat
import pytest
from conftest import ROOT

from autograder import check
from autograder.course import CommandError

A = "04a_attention"


def run_check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    check.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check", *argv])
    return args.run(args)


def graded(source: str, grade_id: str, points: float = 1) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {
        "grade": True, "grade_id": grade_id, "points": points, "solution": False, "locked": True,
        "schema_version": 3, "task": False}})


# ---------------------------------------------------------------------------------------------------------------
# with a kernel


def test_solution_notebook_passes(tmp_path, capsys):
    shutil.copytree(ROOT / "solutions" / A, tmp_path / "solutions" / A)
    notebook = tmp_path / "solutions" / A / f"{A}.ipynb"
    before = notebook.read_bytes()
    assert run_check(["attention", "--notebook", str(notebook), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{A}: 6/6 graded cells pass, 9/9 points" in out
    assert "FAIL" not in out and "PASS test_sdpa_hidden [2/2]" in out
    assert notebook.read_bytes() == before  # the notebook itself is not changed


def test_student_release_fails_with_the_exercise_named(tmp_path, capsys):
    shutil.copytree(ROOT / "chapters" / A, tmp_path / "chapters" / A)
    assert run_check([A, "--root", str(tmp_path)]) == 1  # the default notebook: ROOT/chapters/<id>/<id>.ipynb
    out = capsys.readouterr().out
    assert "FAIL test_softmax [0/1]" in out
    assert "NotImplementedError: Exercise 4a.1: write softmax here" in out
    assert "Traceback" not in out and "----> " not in out  # the error, not the traceback
    assert "PASS test_softmax_hidden [2/2]  (hidden tests: they run when you are graded)" in out
    assert f"{A}: 3/6 graded cells pass, 5/9 points (5 of the 9 points are for hidden tests" in out
    assert "(not graded) failed" in out  # the plots that call the stubs explain later failures


def test_the_outside_checks_catch_what_the_notebook_hides(tmp_path, capsys):
    """softmax leans on a helper defined in a cell that is not exported: the notebook's tests pass, but the
    grader imports only the exported cells, so the outside check (which earns the points) fails, and says why."""
    nb = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax")
    nb.cells[at].source = "#| export\ndef softmax(x, dim=-1):\n    return _notebook_only(x, dim)\n"
    nb.cells.insert(at, nbformat.v4.new_code_cell(
        "def _notebook_only(x, dim):\n    e = (x - x.amax(dim=dim, keepdim=True)).exp()\n"
        "    return e / e.sum(dim=dim, keepdim=True)"))
    notebook = tmp_path / A / f"{A}.ipynb"
    notebook.parent.mkdir()
    nbformat.write(nb, notebook)
    assert run_check([A, "--notebook", str(notebook), "--root", str(ROOT)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" not in out.split("outside checks")[0], "the notebook's own tests all pass"
    outside = out.split("outside checks of the visible tests")[1]
    assert "FAIL test_softmax" in outside and "NameError" in outside and "_notebook_only" in outside
    assert "PASS test_causal_mask" in outside


def test_warning_fails_a_graded_cell_like_nbgrader(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import sys, warnings\nfrom pathlib import Path"),
        graded("assert Path('here.txt').read_text() == 'in the notebook folder'", "test_cwd"),
        graded("warnings.warn('careful: this is deprecated')", "test_warns", points=2),
        graded("print('to stdout is fine')", "test_prints"),
        graded("raise ValueError('\\x1b[31mred\\x1b[0m and wrong')", "test_raises"),
    ])
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "here.txt").write_text("in the notebook folder")
    assert run_check([A, "--notebook", str(tmp_path / "nb.ipynb"), "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "PASS test_cwd [1/1]" in out and "PASS test_prints [1/1]" in out
    assert "FAIL test_warns [0/2]" in out and "warnings included" in out and "careful: this is deprecated" in out
    assert "ValueError: red and wrong" in out  # no terminal colour codes
    assert f"{A}: 2/4 graded cells pass, 2/5 points" in out


# ---------------------------------------------------------------------------------------------------------------
# without a kernel


def executed(outputs: list[dict], source: str = "x = 1") -> nbformat.NotebookNode:
    cell = graded(source, "test_x", points=2)
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def test_judge_follows_nbgrader_rule():
    ok = check.judge(executed([{"output_type": "stream", "name": "stdout", "text": "fine\n"}]), 3)
    assert ok.passed and ok.graded and ok.points == 2 and ok.grade_id == "test_x" and ok.message == ""
    stderr = check.judge(executed([{"output_type": "stream", "name": "stderr", "text": "UserWarning: hm\n"}]), 3)
    assert not stderr.passed and "stderr" in stderr.message and "UserWarning: hm" in stderr.message
    error = check.judge(executed([{"output_type": "error", "ename": "AssertionError", "evalue": "shape (2, 3)",
                                   "traceback": ["Traceback: secret source line"]}]), 3)
    assert not error.passed and error.message == "AssertionError: shape (2, 3)"
    timeout = check.judge(executed([{"output_type": "error", "ename": "KeyboardInterrupt", "evalue": "",
                                     "traceback": []}]), 3, timed_out=True, timeout=30)
    assert "ran past the time limit (30 s per cell)" in timeout.message
    not_run = check.judge(executed([]), 3, ran=False)
    assert not not_run.passed and "kernel died" in not_run.message
    assert check.judge(executed([], source="# hidden tests"), 3).hidden_only


def test_report_summary_and_exit_logic():
    cells = [check.CellVerdict(1, "test_a", 1, True, True, False), check.CellVerdict(2, "test_b", 2, True, False,
                                                                                     False, "ValueError: no")]
    text, ok = check.report(A, cells, "")
    assert not ok and text.endswith(f"{A}: 1/2 graded cells pass, 1/3 points") and "    ValueError: no" in text
    assert check.report(A, cells[:1], "")[1]
    assert not check.report(A, cells[:1], "the kernel died")[1]
    text, ok = check.report(A, [], "")
    assert not ok and "no graded cells" in text


def test_clear_errors(tmp_path):
    with pytest.raises(CommandError, match="no chapter is called 'nonsense'"):
        run_check(["nonsense", "--root", str(tmp_path)])
    with pytest.raises(CommandError, match="no such notebook"):
        run_check([A, "--root", str(tmp_path)])
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(CommandError, match="not a readable notebook"):
        run_check([A, "--notebook", str(tmp_path / "bad.ipynb"), "--root", str(tmp_path)])
