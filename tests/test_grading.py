"""The grader on a class of synthetic submissions to chapter 4a, honest and hostile, graded in sandboxes.

Each submission must end with its expected points and status, whatever the others do; a batch killed halfway
resumes with every student graded exactly once. (Needs Debian's bubblewrap; .ci/run installs it.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbformat.v4 import new_code_cell
from notebook_harness import solution_cells
from test_04a_attention import WRONG_ANSWERS

from autograder.grading import Grader, Settings, shard_of
from autograder.layout import CourseLayout
from autograder.notebook_model import CourseNotebook
from autograder.preflight import chapter_ids, check_submission
from autograder.results import ResultStore
from autograder.sandbox import SandboxUnavailable, check_available

CHAPTER = "04a_attention"
MODEL = CourseNotebook.read(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb")
POINTS = MODEL.points()
FULL = MODEL.max_score
SOFTMAX = POINTS["test_softmax"] + POINTS["test_softmax_hidden"]
SDPA = POINTS["test_sdpa"] + POINTS["test_sdpa_hidden"]
MASK = POINTS["test_causal_mask"] + POINTS["test_causal_mask_hidden"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]  # the first test waits for the whole class


def sandbox_or_skip():
    try:
        check_available()
    except SandboxUnavailable as err:
        if os.environ.get("CI"):
            raise  # CI installs bubblewrap: a missing sandbox there is a failure, not a skip
        pytest.skip(str(err))


def course(tmp: Path) -> Path:
    """A course folder with chapter 4a (to grade) and 4d (whose notebook someone submits by mistake)."""
    for tree in ("solutions", "chapters"):
        for chapter in (CHAPTER, "04d_residual_and_layernorm"):
            shutil.copytree(ROOT / tree / chapter, tmp / tree / chapter)
    (tmp / "autograder" / "submitted").mkdir(parents=True)
    return tmp


def answers() -> dict[str, str]:
    return solution_cells(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb")


def submission(replace=None, extra_cells=(), drop=(), edit=None, at_end=()):
    """The student release with solution cells filled in, extra cells after the setup cell (or at the end),
    cells dropped or edited by grade_id."""
    nb = nbformat.read(ROOT / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    fill = {**answers(), **(replace or {})}
    cells = []
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in drop:
            continue
        if grade_id in fill:
            cell.source = fill[grade_id]
        if edit and grade_id in edit:
            cell.source = edit[grade_id]
        cells.append(cell)
        if grade_id == "setup":
            cells += [new_code_cell(src) for src in extra_cells]
    nb.cells = cells + [new_code_cell(src) for src in at_end]
    return nbformat.writes(nb)


NAIVE_SOFTMAX = WRONG_ANSWERS["softmax without subtracting the maximum"][1]
NO_SQRT = WRONG_ANSWERS["attention without the sqrt(d_k) scaling"][1]

INFINITE_LOOP = "while True:\n    pass"
MEMORY_BOMB = """
def bomb():
    hoard = []
    while True:
        hoard.append(bytearray(10**8))
try:
    bomb()
except MemoryError:
    print("memory bomb: stopped by the memory limit")
"""
FORK_BOMB = """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            while True:
                time.sleep(1)
        children += 1
except OSError as err:
    print(f"fork bomb: stopped after {children} processes ({type(err).__name__})")
"""
NETWORK = """
import socket, urllib.request
for target in [("127.0.0.1", 22), ("10.0.0.1", 80), ("8.8.8.8", 53)]:
    try:
        socket.create_connection(target, timeout=2).close()
        print("network: reached", target)
    except OSError as err:
        print("network: unreachable", target, type(err).__name__)
try:
    urllib.request.urlopen("http://example.com", timeout=2)
    print("network: reached example.com")
except Exception as err:
    print("network: unreachable example.com", type(err).__name__)
"""
HUGE_OUTPUT = "for _ in range(60):\n    print('x' * 1_000_000)"
WARNING_SOFTMAX = '''
#| export
import warnings


def softmax(x, dim=-1):
    warnings.warn("this softmax is perfectly correct, but it warns")
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)
'''
# A wrong softmax whose cell also disarms every check the tests use: in the kernel, all tests "pass".
PATCHED_TESTS = NAIVE_SOFTMAX + '''
import torch as _torch

import llmcourse.checks as _checks

check_close = check = check_shape = check_dtype = lambda *args, **kwargs: None
_checks.check_close = _checks.check = _checks.check_shape = _checks.check_dtype = check
_torch.allclose = lambda *args, **kwargs: True
_torch.testing.assert_close = lambda *args, **kwargs: None
_torch.autograd.gradcheck = lambda *args, **kwargs: True
'''


def cheat_softmax(root: Path) -> str:
    """A 'solution' that copies the instructor's softmax, if it can read solutions/ (it cannot)."""
    paths = [str(root / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"),
             str(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb")]
    return f'''
#| export
import json as _json

def softmax(x, dim=-1):
    for path in {paths!r}:
        try:
            cells = _json.load(open(path))["cells"]
        except OSError as err:
            print("cheat: cannot read", path, type(err).__name__)
            continue
        source = next("".join(c["source"]) for c in cells if "def softmax" in "".join(c["source"]))
        namespace = {{}}
        exec(source.replace("#| export", ""), {{"torch": torch, **namespace}}, namespace)
        return namespace["softmax"](x, dim)
    raise RuntimeError("no solutions to copy")
'''


def gradebook_writer(root: Path) -> str:
    return f'''
import glob, os, sqlite3
targets = glob.glob({str(root)!r} + "/autograder/**/*.db", recursive=True) + ["../../../gradebook.db"]
for path in targets:
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET manual_score = 999")
        db.commit()
        print("gradebook: wrote", path)
    except Exception as err:
        print("gradebook: cannot write", path, type(err).__name__)
for path in glob.glob({str(root)!r} + "/**", recursive=True):
    if path.endswith(".db") or "submitted" in path or "solutions" in path or "results" in path:
        print("gradebook: can see", path)
'''


PRINT_200MB = "print('x' * 200_000_000)"
# the one line that made every later test cell `pass`: the notebook's own tests all pass, the outside checks none
FORGER = "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])"
# a softmax whose error message is the source of the test cell running it (the hidden one included)
LEAKS_HISTORY = """
#| export
def softmax(x, dim=-1):
    raise ValueError("LEAK " + "\\n".join(get_ipython().user_ns["In"][-1:]))
"""


# student -> (notebook text or bytes, expected status, expected points)
def the_class(root: Path) -> dict[str, tuple[str | bytes, str, float]]:
    # a softmax that overflows loses its own points and attention's hidden ones (scores ~1e4)
    naive = FULL - SOFTMAX - POINTS["test_sdpa_hidden"]
    return {
        "correct": (submission(), "graded", FULL),
        "partly_wrong": (submission({"scaled_dot_product_attention": NO_SQRT}), "graded", FULL - SDPA),
        "stub": (submission({g: s for g, s in _stubs().items()}), "graded", 0.0),
        "forger": (submission({g: s for g, s in _stubs().items()}, extra_cells=[FORGER]), "flagged", 0.0),
        "edited_tests": (submission({"softmax": NAIVE_SOFTMAX},
                                   edit={"test_softmax": "pass", "test_softmax_hidden": "pass"}), "graded", naive),
        "deleted_tests": (submission({"softmax": NAIVE_SOFTMAX}, drop={"test_softmax", "test_softmax_hidden"}),
                          "graded", naive),
        "warns": (submission({"softmax": WARNING_SOFTMAX}), "graded", FULL),
        # the notebook's own run breaks in many ways; the points, from the outside checks, do not
        "infinite_loop": (submission(extra_cells=[INFINITE_LOOP]), "graded", FULL),
        "memory_bomb": (submission(extra_cells=[MEMORY_BOMB]), "graded", FULL),
        "fork_bomb": (submission(at_end=[FORK_BOMB]), "graded", FULL),
        "fork_bomb_first": (submission(extra_cells=[FORK_BOMB]), "graded", FULL),
        "os_exit": (submission(extra_cells=["import os\nos._exit(3)"]), "graded", FULL),
        "network": (submission(extra_cells=[NETWORK]), "graded", FULL),
        "print_200mb": (submission(extra_cells=[PRINT_200MB]), "graded", FULL),
        # its softmax raises, and attention calls it: only the causal mask's points remain
        "reads_solutions": (submission({"softmax": cheat_softmax(root)}), "graded", MASK),
        "leaks_history": (submission({"softmax": LEAKS_HISTORY}), "graded", MASK),
        "writes_gradebook": (submission({"softmax": NAIVE_SOFTMAX}, extra_cells=[gradebook_writer(root)]),
                             "graded", naive),
        "patches_tests": (submission({"softmax": PATCHED_TESTS}), "flagged", naive),
        "huge_output": (submission(extra_cells=[HUGE_OUTPUT]), "graded", FULL),
        "invalid_json": (b'{"cells": [ this is not json', "invalid", 0.0),
        "wrong_notebook": ((ROOT / "chapters" / "04d_residual_and_layernorm" /
                            "04d_residual_and_layernorm.ipynb").read_text(), "invalid", 0.0),
    }


def _stubs() -> dict[str, str]:
    return solution_cells(ROOT / "chapters" / CHAPTER / f"{CHAPTER}.ipynb")


def write_submissions(root: Path, students: dict) -> None:
    for student, (content, _, _) in students.items():
        path = root / "autograder" / "submitted" / student / CHAPTER / f"{CHAPTER}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    sandbox_or_skip()
    root = course(tmp_path_factory.mktemp("class"))
    students = the_class(root)
    write_submissions(root, students)
    grader = Grader(root, Settings(cell_timeout=20, submission_timeout=240))
    started = time.monotonic()
    results = grader.run([(s, CHAPTER) for s in students], workers=2)
    return root, students, {r.student: r for r in results}, time.monotonic() - started


def autograded_output(root: Path, student: str) -> str:
    nb = json.loads((root / "autograder" / "autograded" / student / CHAPTER / f"{CHAPTER}.ipynb").read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])


@pytest.mark.parametrize("student", list(the_class(Path("/nonexistent"))))
def test_each_submission_gets_its_expected_points_and_status(graded_class, student):
    root, students, results, _ = graded_class
    _, status, points = students[student]
    result = results[student]
    assert (result.status, result.score) == (status, points), (
        f"{student}: {result.status} {result.score}/{result.max_score} {result.message} {result.flags}\n"
        + "\n".join(f"  {c.grade_id}: {c.points}/{c.max_points} {c.message[:200]}" for c in result.cells))
    assert result.max_score == FULL
    assert result.sandboxed


def test_results_are_saved_and_logged_once(graded_class):
    root, students, _, seconds = graded_class
    store = ResultStore(root / "autograder" / "results")
    assert {r.student for r in store.all()} == set(students)
    logged = [(e["student"], e["chapter"]) for e in store.log()]
    assert sorted(logged) == sorted((s, CHAPTER) for s in students)
    print(f"graded {len(students)} submissions in {seconds:.0f} s with 2 workers")


def test_hostile_submissions_were_contained(graded_class):
    root, _, results, _ = graded_class
    assert "memory bomb: stopped by the memory limit" in autograded_output(root, "memory_bomb")
    assert "fork bomb: stopped after" in autograded_output(root, "fork_bomb")
    network = autograded_output(root, "network")
    assert "reached" not in network.replace("unreachable", "") and network.count("network: unreachable") == 4
    cheat = autograded_output(root, "reads_solutions")
    assert cheat.count("cheat: cannot read") >= 2 and "FileNotFoundError" in cheat
    writer = autograded_output(root, "writes_gradebook")
    assert "gradebook: wrote" not in writer and "gradebook: can see" not in writer
    huge = (root / "autograder" / "autograded" / "huge_output" / CHAPTER / f"{CHAPTER}.ipynb").stat().st_size
    assert huge < 3_000_000, f"the capped notebook is {huge} bytes"
    assert "[output truncated" in autograded_output(root, "huge_output")
    big = (root / "autograder" / "autograded" / "print_200mb" / CHAPTER / f"{CHAPTER}.ipynb").stat().st_size
    assert big < 3_000_000 and "[output truncated in the kernel" in autograded_output(root, "print_200mb")
    users = ",".join(str(61000 + offset + slot) for offset in (0, 100, 200) for slot in range(2))
    assert not subprocess.run(["pgrep", "-u", users], capture_output=True).stdout, "sandbox left processes"


def test_tampering_is_flagged_by_the_outside_check(graded_class):
    _, _, results, _ = graded_class
    flagged = results["patches_tests"]
    failed = {p.exercise for p in flagged.probes if p.verdict != "pass"}
    assert failed == {"test_softmax", "test_softmax_hidden", "test_sdpa_hidden"}
    assert all(c.kernel_passed for c in flagged.cells), "the patched checks made every notebook test pass"
    assert any(f.startswith("test_softmax:") and "own test passed" in f and "outside check failed" in f
               for f in flagged.flags)
    forger = results["forger"]
    assert all(c.kernel_passed for c in forger.cells) and all(not c.passed for c in forger.cells)
    assert len(forger.flags) == len(forger.cells)
    honest = results["correct"]
    assert {p.verdict for p in honest.probes} == {"pass"} and not honest.flags


def test_the_notebooks_own_trouble_is_shown_but_costs_nothing(graded_class):
    root, _, results, _ = graded_class
    assert results["os_exit"].notebook == "crashed" and any("kernel died" in f for f in results["os_exit"].flags)
    assert results["infinite_loop"].notebook == "cell-timeout"
    assert any("ran longer than" in f for f in results["infinite_loop"].flags)
    for student in ("os_exit", "infinite_loop", "print_200mb", "fork_bomb_first"):
        log = CourseLayout(root).log(student, CHAPTER)
        assert log.is_file() and "the notebook's own run" in log.read_text(), student


def test_hidden_tests_do_not_leak_into_feedback(graded_class):
    root, _, results, _ = graded_class
    leaked = results["leaks_history"]
    assert any("LEAK" in c.kernel_message and "manual_seed(41)" in c.kernel_message for c in leaked.cells), \
        "the hostile submission should have put a hidden test's source into its message"
    proc = subprocess.run([sys.executable, "-m", "autograder", "feedback", "--root", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = (root / "autograder" / "feedback" / "leaks_history" / "index.html").read_text()
    for hidden in MODEL.hidden_sources():
        for line in hidden.splitlines():
            if len(line.strip()) >= 30:
                assert line.strip() not in page, line


def test_invalid_submissions_say_why(graded_class):
    _, _, results, _ = graded_class
    assert "not valid notebook JSON" in results["invalid_json"].message
    assert "notebook of chapter 04d_residual_and_layernorm" in results["wrong_notebook"].message


def test_preflight_rejects_broken_notebooks(tmp_path):
    ids = chapter_ids({CHAPTER: ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"})
    good = submission()
    cases = {
        "not_utf8.ipynb": (b"\xff\xfe" + good.encode("utf-16-le"), "not UTF-8"),
        "oversize.ipynb": (b" " * (21 * 1024**2), "MB allowed"),
        "not_a_notebook.ipynb": (b'{"hello": 1}', "not a notebook"),
        "schema.ipynb": (good.replace('"schema_version": 3', '"schema_version": 99', 1).encode(), "schema_version"),
        "duplicated.ipynb": (_duplicated(good).encode(), "duplicated"),
        "no_metadata.ipynb": (_strip_metadata(good).encode(), "none of the exercise or test cells"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        verdict = check_submission(path, CHAPTER, ids)
        assert verdict.status == "invalid" and message in verdict.message, (name, verdict)
    assert check_submission(tmp_path / "absent.ipynb", CHAPTER, ids).status == "missing"


def _duplicated(text: str) -> str:
    nb = nbformat.reads(text, as_version=4)
    graded = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    copy = nbformat.from_dict(json.loads(json.dumps(graded)))
    copy["id"] = "duplicate-cell"
    nb.cells.append(copy)
    return nbformat.writes(nb)


def _strip_metadata(text: str) -> str:
    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    return nbformat.writes(nb)


def test_refuses_to_grade_without_a_sandbox(tmp_path, monkeypatch):
    root = course(tmp_path)
    write_submissions(root, {"someone": (submission(), "graded", FULL)})
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "--root", str(root)],
                          capture_output=True, text=True, env={**os.environ, "PATH": "/nonexistent"})
    assert proc.returncode == 1
    assert "refusing to grade" in proc.stderr and "bubblewrap is not installed" in proc.stderr
    assert "--insecure" in proc.stderr
    assert not (root / "autograder" / "results").exists()


def test_killed_batch_resumes_without_grading_anyone_twice(tmp_path):
    sandbox_or_skip()
    root = course(tmp_path)
    students = {f"s{i}": (submission(), "graded", FULL) for i in range(3)}
    write_submissions(root, students)
    cmd = [sys.executable, "-m", "autograder", "grade", "--root", str(root), "--workers", "1",
           "--chapter", CHAPTER]
    batch = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = root / "autograder" / "results"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(results.glob("*/*.json"))) < 1:
        time.sleep(0.5)
    os.killpg(batch.pid, signal.SIGKILL)
    batch.wait()
    done_before = len(list(results.glob("*/*.json")))
    assert 1 <= done_before < len(students), "the batch should have been killed halfway"
    time.sleep(1)
    assert not subprocess.run(["pgrep", "-f", str(root)], capture_output=True).stdout, "killed batch left processes"

    run_folder = CourseLayout(root).run_folder()
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not run_folder.exists(), "the killed run's folder (staging with hidden tests) was left behind"
    assert not list((root / "autograder").glob("work/*")), "grading left files in autograder/work"
    store = ResultStore(results)
    logged = sorted(e["student"] for e in store.log())
    assert logged == sorted(students), f"graded more than once or not at all: {logged}"
    assert all(r.score == FULL for r in store.all())


def _comparable(result) -> dict:
    data = json.loads(result.to_json())
    for key in ("duration_s", "graded_at"):
        data.pop(key)
    return data


def test_shards_run_separately_give_the_results_of_one_run(tmp_path):
    """--shard K/N on N 'machines' (here: one after the other, each its own process) over one results folder
    gives exactly what one run gives, and each shard keeps its own completion log."""
    sandbox_or_skip()
    students = {"correct": (submission(), "graded", FULL),
                "partly_wrong": (submission({"scaled_dot_product_attention": NO_SQRT}), "graded", FULL - SDPA),
                "forger": (submission({g: s for g, s in _stubs().items()}, extra_cells=[FORGER]), "flagged", 0.0)}
    one, sharded = course(tmp_path / "one"), course(tmp_path / "sharded")
    for root in (one, sharded):
        write_submissions(root, students)
    base = [sys.executable, "-m", "autograder", "grade", "--workers", "1", "--chapter", CHAPTER]
    proc = subprocess.run(base + ["--root", str(one)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for k in (1, 2):
        proc = subprocess.run(base + ["--root", str(sharded), "--shard", f"{k}/2"], capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    whole = {r.student: _comparable(r) for r in ResultStore(one / "autograder" / "results").all()}
    parts = {r.student: _comparable(r) for r in ResultStore(sharded / "autograder" / "results").all()}
    assert whole == parts and set(whole) == set(students)
    logs = sorted(p.name for p in (sharded / "autograder" / "results").glob("log*.jsonl"))
    assert {shard_of(s, CHAPTER, 2) for s in students} == {1, 2}, "each shard should get a student"
    assert logs == ["log-1of2.jsonl", "log-2of2.jsonl"]
    assert sorted(e["student"] for e in ResultStore(sharded / "autograder" / "results").log()) == sorted(students)
