"""The grader's parts, each on its own: shards, the run folder, the workspace's normalised submission, the
outside check's handling of failures (the student's and the grader's), the combination into a result, and the
messages an instructor reads. (The whole grader on real classes: test_grading.py and test_grade_course.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from autograder.course import CommandError
from autograder.grading import (
    Grader,
    NotebookOutcome,
    RunFolder,
    Settings,
    combine,
    normalised_submission,
    parse_shard,
    shard_of,
)
from autograder.layout import CourseLayout
from autograder.notebook_model import CourseNotebook, hidden_spans, without_hidden
from autograder.outside import CellVerdict, GraderError, OutsideCheck, compute_reference
from autograder.preflight import check_submission
from autograder.results import Result, ResultStore

CHAPTER = "04a_attention"
SOURCE = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"


# --------------------------------------------------------------------------------------------------------------
# shards


def test_shards_split_every_job_exactly_once_and_deterministically():
    jobs = [(f"student{i:04d}", c) for i in range(500) for c in ("04a_attention", "05c_generation", "03_tok")]
    for n in (1, 2, 3, 8):
        shards = [{j for j in jobs if shard_of(*j, n) == k} for k in range(1, n + 1)]
        assert set().union(*shards) == set(jobs)
        assert sum(len(s) for s in shards) == len(jobs)
        assert min(len(s) for s in shards) > 0.7 * len(jobs) / n  # roughly even
    assert [shard_of("alice", CHAPTER, 7) for _ in range(3)] == [shard_of("alice", CHAPTER, 7)] * 3


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "3", "1/0", "-1/2"])
def test_bad_shards_say_what_is_expected(text):
    with pytest.raises(CommandError, match="K/N|between 1 and N"):
        parse_shard(text)
    assert parse_shard("3/4") == (3, 4)


# --------------------------------------------------------------------------------------------------------------
# the run folder


def test_run_folder_is_private_cleaned_first_locked_and_removed(tmp_path):
    layout = CourseLayout(tmp_path)
    stale = layout.run_folder("test")
    (stale / "staging" / "solutions").mkdir(parents=True, exist_ok=True)
    (stale / "staging" / "solutions" / "hidden.ipynb").write_text("### BEGIN HIDDEN TESTS")
    legacy = layout.grading / "work" / "staging-abc"
    legacy.mkdir(parents=True)
    with RunFolder(layout, "test") as run:
        assert run.path == stale
        assert not (stale / "staging").exists(), "a killed run's staging must be removed first"
        assert stat.S_IMODE(run.path.stat().st_mode) == 0o700
        assert not legacy.exists()
        with pytest.raises(CommandError, match="another grading run"):
            RunFolder(layout, "test").__enter__()
        job = run.job()
        assert job.parent == run.path
    assert not stale.exists()
    with RunFolder(layout, "test"):  # the lock was released
        pass


# --------------------------------------------------------------------------------------------------------------
# the notebook model and the normalised submission


def test_notebook_model_reads_points_hidden_cells_and_exercises():
    model = CourseNotebook.read(SOURCE)
    assert model.max_score == sum(model.points().values()) > 0
    assert model.hidden_cells() == {"test_softmax_hidden", "test_sdpa_hidden", "test_causal_mask_hidden"}
    assert model.exercise_of()["test_sdpa_hidden"] == "scaled_dot_product_attention"
    assert any("manual_seed(41)" in s for s in model.hidden_sources())
    assert hidden_spans("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc") == ["b"]
    assert without_hidden("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc") == "a\nc"
    odd = CourseNotebook.from_json({"cells": [1, {"metadata": "x"}, {"metadata": {"nbgrader": []}}, None]})
    assert odd.grade_ids() == [] and odd.max_score == 0


def test_normalised_submission_restores_locked_cells_and_keeps_student_helpers():
    source = CourseNotebook.read(SOURCE)
    nb = json.loads((ROOT / "chapters" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    for cell in nb["cells"]:
        gid = (cell["metadata"].get("nbgrader") or {}).get("grade_id")
        if gid == "setup":
            cell["source"] = "#| export\nimport os\nos._exit(1)"  # an edited locked cell
        if gid == "softmax":
            cell["source"] = "#| export\ndef softmax(x, dim=-1):\n    return _mine(x, dim)"
    helper = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": "#| export\ndef _mine(x, dim):\n    return x"}
    index = next(i for i, c in enumerate(nb["cells"]) if (c["metadata"].get("nbgrader") or {}).get("grade_id")
                 == "softmax")
    nb["cells"].insert(index + 1, helper)
    nb["cells"] = [c for c in nb["cells"] if (c["metadata"].get("nbgrader") or {}).get("grade_id") != "causal_mask"]
    out = normalised_submission(source, nb)
    sources = [c["source"] for c in out["cells"]]
    assert "os._exit(1)" not in "".join(sources)
    assert source.by_id()["setup"].source in sources
    at = sources.index("#| export\ndef softmax(x, dim=-1):\n    return _mine(x, dim)")
    assert sources[at + 1] == helper["source"]
    assert any("no solution submitted" in s for s in sources)  # the deleted solution cell


# --------------------------------------------------------------------------------------------------------------
# combining the two verdicts


def test_points_follow_the_outside_checks_and_disagreements_are_flagged():
    model = CourseNotebook.read(SOURCE)
    points = model.points()
    kernel = NotebookOutcome("ok", {gid: (True, "") for gid in points})
    verdicts = [CellVerdict(gid, "pass") for gid in points]
    verdicts[0] = CellVerdict(verdicts[0].cell, "fail", "out: max abs error 1 at index (0,)")
    result = combine("s", CHAPTER, model, kernel, verdicts, Settings())
    first = verdicts[0].cell
    assert result.status == "flagged"
    assert result.score == model.max_score - points[first]
    flag = next(f for f in result.flags if f.startswith(first))
    assert "own test passed" in flag and "max abs error 1" in flag
    cell = next(c for c in result.cells if c.grade_id == first)
    assert (cell.passed, cell.kernel_passed, cell.message) == (False, True, "out: max abs error 1 at index (0,)")

    crashed = combine("s", CHAPTER, model, NotebookOutcome("crashed"), [CellVerdict(g, "pass") for g in points],
                      Settings())
    assert (crashed.status, crashed.score, crashed.notebook) == ("graded", model.max_score, "crashed")
    assert any("kernel died" in f and "cost none" in f for f in crashed.flags)

    honest = combine("s", CHAPTER, model, NotebookOutcome("ok", {g: (False, "AssertionError: x") for g in points}),
                     [CellVerdict(g, "fail", "wrong") for g in points], Settings())
    assert (honest.status, honest.score, honest.flags) == ("graded", 0.0, [])
    assert Result.from_dict({**json.loads(honest.to_json()), "added_later": 1}).cells == honest.cells


# --------------------------------------------------------------------------------------------------------------
# the outside check: the student's failures and the grader's


def _tree(tmp_path: Path, replace: dict[str, str]) -> Path:
    nb = nbformat.read(SOURCE, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in replace:
            cell.source = replace[gid]
    tree = tmp_path / "tree"
    (tree / CHAPTER).mkdir(parents=True)
    nbformat.write(nb, tree / CHAPTER / f"{CHAPTER}.ipynb")
    return tree


def _plain_command(tree: Path, fail_first: int = 0):
    """Run the probe process without a sandbox (the tests' own code); the first ``fail_first`` starts fail."""
    calls = []

    def make(argv, out):
        calls.append(argv)
        if len(calls) <= fail_first:
            return ["/nonexistent/python"], dict(os.environ)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
        return argv, {**env, "LLMCOURSE_SOURCE": str(tree)}

    return make, calls


@pytest.fixture(scope="module")
def attention_reference(tmp_path_factory):
    return compute_reference("attention", tmp_path_factory.mktemp("ref"))


def test_a_grader_failure_is_retried_once(tmp_path, attention_reference):
    tree = _tree(tmp_path, {})
    make, calls = _plain_command(tree, fail_first=1)
    log = []
    verdicts = OutsideCheck("attention", attention_reference, make, 300, log).run(tmp_path)
    assert {v.verdict for v in verdicts} == {"pass"} and len(calls) == 2
    assert any("attempt 1" in line for line in log)


def test_a_grader_failure_twice_is_a_grader_error_not_the_students(tmp_path, attention_reference):
    make, calls = _plain_command(_tree(tmp_path, {}), fail_first=10)
    with pytest.raises(GraderError, match="failed twice before reaching the student's code"):
        OutsideCheck("attention", attention_reference, make, 300).run(tmp_path)
    assert len(calls) == 2


def test_a_crash_inside_the_students_code_fails_only_what_it_touches(tmp_path, attention_reference):
    crash = "#| export\nimport os\n\ndef softmax(x, dim=-1):\n    os._exit(3)\n"
    make, calls = _plain_command(_tree(tmp_path, {"softmax": crash}))
    verdicts = {v.cell: v for v in OutsideCheck("attention", attention_reference, make, 300).run(tmp_path)}
    assert verdicts["test_causal_mask"].verdict == verdicts["test_causal_mask_hidden"].verdict == "pass"
    for cell in ("test_softmax", "test_softmax_hidden", "test_sdpa", "test_sdpa_hidden"):
        assert verdicts[cell].verdict == "error" and "exited with status 3" in verdicts[cell].detail, verdicts[cell]


def test_a_hanging_import_is_the_students(tmp_path, attention_reference):
    hang = "#| export\nimport signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0)\n" \
           "signal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(60)\ndef softmax(x, dim=-1):\n    return x\n"
    make, _ = _plain_command(_tree(tmp_path, {"softmax": hang}))
    verdicts = OutsideCheck("attention", attention_reference, make, 8).run(tmp_path)
    assert {v.verdict for v in verdicts} == {"error"}
    assert all("importing the chapter's exported cells did not finish" in v.detail for v in verdicts)


def test_grader_error_is_reported_logged_and_retried_by_resume(tmp_path, monkeypatch):
    course = tmp_path / "course"
    for tree in ("solutions", "chapters"):
        (course / tree).mkdir(parents=True)
        os.symlink(ROOT / tree / CHAPTER, course / tree / CHAPTER)
    submission = CourseLayout(course).submission("alice", CHAPTER)
    submission.parent.mkdir(parents=True)
    submission.write_text((ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    grader = Grader(course, Settings(insecure=True, cell_timeout=60, submission_timeout=300))

    def broken(self, ws, slot):
        return lambda argv, out: (["/nonexistent/python"], dict(os.environ))

    monkeypatch.setattr(Grader, "_probe_command", broken)
    [result] = grader.run([("alice", CHAPTER)])
    assert result.status == "grader-error" and result.score == 0 and not result.flags
    assert "the grader failed on this submission, not the student" in result.message
    log = CourseLayout(course).log("alice", CHAPTER)
    assert log.is_file() and "could not start" in log.read_text()
    assert not grader.already_graded("alice", CHAPTER), "--resume must grade a grader error again"
    assert ResultStore(CourseLayout(course).results).load("alice", CHAPTER).status == "grader-error"
    assert not CourseLayout(course).run_folder().exists()


# --------------------------------------------------------------------------------------------------------------
# messages


def test_a_notebook_saved_under_another_name_is_named(tmp_path):
    folder = tmp_path / CHAPTER
    folder.mkdir()
    (folder / "attention (1).ipynb").write_text("{}")
    verdict = check_submission(folder / f"{CHAPTER}.ipynb", CHAPTER, {CHAPTER: {"softmax"}})
    assert verdict.status == "missing"
    assert "'attention (1).ipynb'" in verdict.message and f"rename the notebook to {CHAPTER}.ipynb" in \
        verdict.message


def test_sandbox_that_cannot_import_the_course_says_so(monkeypatch):
    from autograder import sandbox

    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
    monkeypatch.setattr(sandbox, "readable_paths", lambda: [sys.base_prefix])
    with pytest.raises(sandbox.SandboxUnavailable) as caught:
        sandbox.check_available()
    message = str(caught.value)
    assert "cannot import the course's packages" in message
    assert "Docker" not in message and "namespaces" not in message


def test_grade_from_another_folder_with_a_root_that_is_not_a_course(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "--root", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "not a course folder" in proc.stderr


def test_an_export_cell_cannot_switch_the_own_work_rule_off(tmp_path, attention_reference):
    disarm = ("#| export\nimport contextlib\nimport llmcourse.checks as _checks\n_checks.OWN_WORK.clear()\n"
              "_checks.builtins_unavailable = lambda *a: contextlib.nullcontext()\n\n"
              "def softmax(x, dim=-1):\n    return torch.softmax(x, dim=dim)\n")
    make, _ = _plain_command(_tree(tmp_path, {"softmax": disarm}))
    verdicts = {v.cell: v for v in OutsideCheck("attention", attention_reference, make, 300).run(tmp_path)}
    assert verdicts["test_softmax"].verdict == "error" and "not available" in verdicts["test_softmax"].detail
