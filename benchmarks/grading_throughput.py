"""Grading throughput: the sandboxed grader against plain nbgrader, and the gain from parallel workers.

    python benchmarks/grading_throughput.py [--students 4] [--repeats 2]

1. Sandbox overhead: one correct chapter-4a submission graded by ``autograder grade`` (sandbox, resource limits,
   and the outside checks, which run the student's code a second time in a process of their own) against plain
   ``nbgrader autograde`` of the same notebook in the same kind of private course folder, alternating, best of
   ``--repeats``. Target: <= 1.6x (it was 1.3x before every point came from the outside checks).
2. Class throughput: ``--students`` submissions graded with 1 worker, then with 2. Target: >= 1.6x on 2 cores
   (it cannot exceed the number of free cores; the script prints the machine's core count beside it).

Both are ratios measured in the same run on the same machine, so they do not depend on how fast it is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.course import run_nbgrader  # noqa: E402
from autograder.grading import Grader, RunFolder, Settings  # noqa: E402

CHAPTER = "04a_attention"


def correct_submission() -> str:
    solution = nbformat.read(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    answers = {c.metadata.nbgrader["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(ROOT / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return nbformat.writes(nb)


def make_course(folder: Path, students: list[str]) -> Path:
    shutil.copytree(ROOT / "solutions" / CHAPTER, folder / "solutions" / CHAPTER)
    text = correct_submission()
    for student in students:
        path = folder / "autograder" / "submitted" / student / CHAPTER / f"{CHAPTER}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(text)
    return folder


def plain_nbgrader(folder: Path) -> float:
    """nbgrader autograde of one submission, as an instructor would run it, without any of our machinery."""
    run_nbgrader(["generate_assignment", CHAPTER, "--force"], root=folder)
    started = time.perf_counter()
    run_nbgrader(["autograde", CHAPTER, "--student", "s0", "--force"], root=folder)
    return time.perf_counter() - started


def ours(folder: Path, students: list[str], workers: int) -> float:
    grader = Grader(folder, Settings())
    with RunFolder(grader.layout, "benchmark") as run:
        grader.prepare([CHAPTER], run)  # the gradebook and the reference are made once per batch
        started = time.perf_counter()
        jobs = [(s, CHAPTER) for s in students]
        if workers == 1:
            results = [grader.grade_one(s, c) for s, c in jobs]
        else:
            results = grader.run_prepared(jobs, workers)
        elapsed = time.perf_counter() - started
    assert all(r.status == "graded" and r.score == r.max_score for r in results), [r.status for r in results]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain, sandboxed = [], []
        for i in range(args.repeats):
            plain.append(plain_nbgrader(make_course(tmp / f"plain{i}", ["s0"])))
            sandboxed.append(ours(make_course(tmp / f"ours{i}", ["s0"]), ["s0"], workers=1))
        print(f"one submission: plain nbgrader {min(plain):.1f} s, sandboxed grader {min(sandboxed):.1f} s "
              f"-> overhead {min(sandboxed) / min(plain):.2f}x (target <= 1.6x)")
        students = [f"s{i}" for i in range(args.students)]
        one = ours(make_course(tmp / "w1", students), students, workers=1)
        two = ours(make_course(tmp / "w2", students), students, workers=2)
        print(f"{args.students} submissions: 1 worker {one:.1f} s, 2 workers {two:.1f} s -> throughput "
              f"{one / two:.2f}x (target >= 1.6x; {os.cpu_count()} CPU cores here)")


if __name__ == "__main__":
    main()
