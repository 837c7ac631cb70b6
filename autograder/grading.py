"""``python -m autograder grade``: grade every student x chapter, in parallel, each in its own sandbox.

One grading job (a student's notebook for one chapter):

1. **pre-flight**: the file is checked as JSON before anything runs (:mod:`autograder.preflight`);
2. **a private course**: the job gets a folder of its own with a copy of the chapter's gradebook and the one
   submission, so parallel jobs share nothing and the class gradebook is never open while student code runs;
3. **nbgrader autograde** runs in the grader; its kernel runs in the sandbox (:mod:`autograder.sandbox`) as the
   worker's own unprivileged user, with every earlier chapter resolved to its public fallback, a per-cell time
   limit, a wall clock for the whole submission and an output cap in bytes;
4. **outside verdicts** for the key exercises (:mod:`autograder.probes`), compared in the grader;
5. the :class:`~autograder.results.Result` is written atomically; ``--resume`` skips submissions that already have
   one for the same file, so a batch killed halfway resumes without grading anyone twice.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from autograder import preflight, probes
from autograder.course import AUTOGRADER_DIR, CommandError, run_nbgrader
from autograder.results import CellResult, ProbeResult, Result, ResultStore, check_student_id
from autograder.sandbox import (
    SANDBOX_UID_BASE,
    GiB,
    Limits,
    Sandbox,
    SandboxUnavailable,
    check_available,
    write_kernelspec,
)
from llmcourse import registry

BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"


@dataclass
class Settings:
    cell_timeout: int = 120  # seconds per cell (nbgrader interrupts the cell, then goes on)
    submission_timeout: int = 900  # seconds for a whole submission, kernel start included
    memory_gib: float = 4.0  # address space per sandboxed process
    max_output_bytes: int = 1_000_000  # per cell
    insecure: bool = False  # no sandbox: only for code you trust


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def die_with_parent() -> None:
    """In a child process: be killed when the grader dies, so a killed batch leaves nothing running."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def earlier_modules(chapter: str) -> list[str]:
    """The modules of every chapter before ``chapter`` in the course: graded against their fallbacks."""
    order = list(registry.CHAPTER_IDS)
    index = order.index(chapter) if chapter in order else len(order)
    return [registry.module_name(c) for c in order[:index]]


class Grader:
    def __init__(self, root: Path = registry.COURSE_ROOT, settings: Settings | None = None):
        self.root = Path(root).resolve()
        self.settings = settings or Settings()
        self.store = ResultStore(self.root / "autograder" / "results")
        self.work = self.root / "autograder" / "work"
        self.sources = {c: registry.notebook_path(self.root / "solutions", c)
                        for c in registry.chapters_in(self.root / "solutions")}
        self.expected_ids = preflight.chapter_ids(self.sources)
        self._staging: Path | None = None

    # ----------------------------------------------------------------------------------------------------------
    def students(self) -> list[str]:
        submitted = self.root / "autograder" / "submitted"
        if not submitted.is_dir():
            return []
        return sorted(d.name for d in submitted.iterdir() if d.is_dir() and not d.name.startswith("."))

    def prepare(self, chapters: list[str]) -> None:
        """A gradebook holding every chapter to grade, made once per batch and copied into each job."""
        if not self.settings.insecure:
            check_available()
        self.work.mkdir(parents=True, exist_ok=True)
        for stale in self.work.glob("job-*"):  # left by a batch that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=self.work))
        (staging / "autograder").mkdir()
        for chapter in chapters:
            shutil.copytree(self.sources[chapter].parent, staging / "solutions" / chapter)
            run_nbgrader(["generate_assignment", chapter, "--force"], root=staging)
        self._staging = staging

    def cleanup(self) -> None:
        if self._staging:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    # ----------------------------------------------------------------------------------------------------------
    def grade_one(self, student: str, chapter: str, slot: int = 0) -> Result:
        """Grade one submission and save its result."""
        check_student_id(student)
        started = time.monotonic()
        submission = registry.notebook_path(self.root / "autograder" / "submitted" / student, chapter)
        verdict = preflight.check_submission(submission, chapter, self.expected_ids)
        max_score = self._max_score(chapter)
        if not verdict.ok:
            result = Result(student, chapter, verdict.status, 0.0, max_score, verdict.message,
                            submission_sha256=verdict.sha256, sandboxed=not self.settings.insecure)
        else:
            job = Path(tempfile.mkdtemp(prefix=f"job-{student}-{chapter}-", dir=self.work))
            try:
                result = self._autograde(job, student, chapter, slot, submission, verdict.sha256, max_score)
            finally:
                shutil.rmtree(job, ignore_errors=True)
        result.duration_s = round(time.monotonic() - started, 2)
        result.graded_at = now()
        self.store.save(result)
        return result

    def _max_score(self, chapter: str) -> float:
        nb = json.loads(self.sources[chapter].read_text(encoding="utf-8"))
        return float(sum(c["metadata"]["nbgrader"].get("points", 0) for c in nb["cells"]
                         if c.get("metadata", {}).get("nbgrader", {}).get("grade")))

    def _sandbox(self, slot: int, writable: list[Path], cwd: Path, env: dict[str, str],
                 readable: tuple[Path, ...] = ()) -> Sandbox:
        limits = Limits(memory_bytes=int(self.settings.memory_gib * GiB),
                        cpu_seconds=max(60, 2 * self.settings.submission_timeout))
        uid = SANDBOX_UID_BASE + slot if os.getuid() == 0 else None
        for path in writable:  # the sandbox user must be able to write there
            path.mkdir(parents=True, exist_ok=True)
            if uid is not None:
                os.chown(path, uid, uid)
        return Sandbox(writable=[str(p) for p in writable], cwd=str(cwd), env=env, limits=limits, uid=uid,
                       enabled=not self.settings.insecure, readable=[str(p) for p in readable])

    def _autograde(self, job: Path, student: str, chapter: str, slot: int, submission: Path, sha: str,
                   max_score: float) -> Result:
        assert self._staging is not None, "call prepare() first"
        (job / "autograder").mkdir()
        shutil.copy2(self._staging / "autograder" / "gradebook.db", job / "autograder" / "gradebook.db")
        shutil.copytree(self.sources[chapter].parent, job / "solutions" / chapter)
        target = registry.notebook_path(job / "autograder" / "submitted" / student, chapter)
        target.parent.mkdir(parents=True)
        shutil.copyfile(submission, target)
        student_tree = job / "autograder" / "autograded" / student
        chapter_dir = student_tree / chapter
        env = {"LLMCOURSE_SOURCE": str(student_tree), "LLMCOURSE_FALLBACK": ",".join(earlier_modules(chapter))}
        runtime = Path(tempfile.mkdtemp(prefix="lg-", dir="/tmp"))  # short: unix socket paths are limited
        try:
            sandbox = self._sandbox(slot, [chapter_dir, runtime], chapter_dir, env)
            settings_file = job / "sandbox.json"
            settings_file.write_text(sandbox.to_json())
            write_kernelspec(job / "jupyter", settings_file)
            # nbgrader re-creates the autograded folder by copying the submitted one: keep it writable
            os.chmod(target.parent, 0o777)
            if sandbox.uid is not None:
                os.chown(target.parent, sandbox.uid, sandbox.uid)
            shutil.rmtree(chapter_dir)
            log, timed_out = self._run_autograde(job, student, chapter, runtime)
        finally:
            shutil.rmtree(runtime, ignore_errors=True)
        result = self._collect(job, student, chapter, slot, sha, max_score, log, timed_out)
        self._keep_autograded(job, student, chapter)
        return result

    def _keep_autograded(self, job: Path, student: str, chapter: str) -> None:
        """The executed notebook, for the instructor: autograder/autograded/<student>/<chapter>/."""
        executed = registry.notebook_path(job / "autograder" / "autograded" / student, chapter)
        keep = registry.notebook_path(self.root / "autograder" / "autograded" / student, chapter)
        keep.parent.mkdir(parents=True, exist_ok=True)
        if executed.is_file() and executed.stat().st_size < 50 * 1024**2:
            shutil.copyfile(executed, keep)
        else:
            keep.unlink(missing_ok=True)

    def _run_autograde(self, job: Path, student: str, chapter: str, runtime: Path) -> tuple[str, bool]:
        s = self.settings
        args = [sys.executable, "-m", "nbgrader", "autograde", chapter, "--student", student, "--force",
                f"--CourseDirectory.root={job}",
                f"--CourseDirectory.db_url=sqlite:///{job / 'autograder' / 'gradebook.db'}",
                f"--Execute.timeout={s.cell_timeout}", f"--CappedExecute.max_output_bytes={s.max_output_bytes}"]
        if not s.insecure:
            args += ["--Execute.kernel_name=llmcourse-sandbox"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCOURSE_", "JPY_"))}
        env.update(JUPYTER_PATH=str(job / "jupyter"), JUPYTER_RUNTIME_DIR=str(runtime),
                   AUTOGRADER_KERNEL_IPC="" if s.insecure else str(runtime / "k"),
                   PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
        if s.insecure:  # no sandbox: the kernel still gets the course settings
            env.update(LLMCOURSE_SOURCE=str(job / "autograder" / "autograded" / student),
                       LLMCOURSE_FALLBACK=",".join(earlier_modules(chapter)))
        log_path = job / "nbgrader.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(args, cwd=AUTOGRADER_DIR, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=die_with_parent)
            try:
                proc.wait(timeout=s.submission_timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                timed_out = True
        return log_path.read_text(errors="replace")[-20000:], timed_out

    # ----------------------------------------------------------------------------------------------------------
    def _collect(self, job: Path, student: str, chapter: str, slot: int, sha: str, max_score: float,
                 log: str, timed_out: bool) -> Result:
        sandboxed = not self.settings.insecure
        if timed_out:
            return Result(student, chapter, "timeout", 0.0, max_score,
                          f"the submission did not finish within {self.settings.submission_timeout} s",
                          submission_sha256=sha, sandboxed=sandboxed)
        grades = self._grades(job, student, chapter)
        if grades is None:
            died = "DeadKernelError" in log or "Kernel died" in log or "kernel died" in log.lower()
            why = "its kernel died (os._exit, a crash or a resource limit)" if died else "nbgrader failed"
            return Result(student, chapter, "crashed", 0.0, max_score, f"the notebook could not be graded: {why}",
                          submission_sha256=sha, sandboxed=sandboxed)
        cells = self._cells(job, student, chapter, grades)
        result = Result(student, chapter, "graded", 0.0, max_score, cells=cells, submission_sha256=sha,
                        sandboxed=sandboxed)
        if self._a_cell_timed_out(job, student, chapter):
            result.status = "timeout"
            result.flags.append(f"a cell ran longer than {self.settings.cell_timeout} s and was interrupted")
        if sandboxed and registry.module_name(chapter) in probes.PROBES:
            self._cross_check(job, student, chapter, slot, result)
        result.score = float(sum(c.points for c in result.cells))
        return result

    def _grades(self, job: Path, student: str, chapter: str) -> dict[str, tuple[float, float]] | None:
        from nbgrader.api import Gradebook, MissingEntry

        try:
            with Gradebook(f"sqlite:///{job / 'autograder' / 'gradebook.db'}") as gb:
                notebook = gb.find_submission_notebook(chapter, chapter, student)
                if any(g.auto_score is None for g in notebook.grades):
                    return None  # nbgrader registered the submission, but its notebook never finished running
                return {g.name: (float(g.score or 0.0), float(g.max_score)) for g in notebook.grades}
        except MissingEntry:
            return None

    def _autograded(self, job: Path, student: str, chapter: str) -> dict:
        path = registry.notebook_path(job / "autograder" / "autograded" / student, chapter)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"cells": []}

    def _cells(self, job: Path, student: str, chapter: str, grades: dict) -> list[CellResult]:
        source = json.loads(self.sources[chapter].read_text(encoding="utf-8"))
        hidden = {c["metadata"]["nbgrader"]["grade_id"] for c in source["cells"]
                  if c.get("metadata", {}).get("nbgrader", {}).get("grade") and BEGIN_HIDDEN in "".join(c["source"])}
        messages = {}
        for cell in self._autograded(job, student, chapter)["cells"]:
            grade_id = (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")
            if grade_id in grades:
                messages[grade_id] = _failure_message(cell)
        cells = []
        for grade_id, (points, max_points) in grades.items():
            passed = points >= max_points
            cells.append(CellResult(grade_id, points, max_points, passed, grade_id in hidden,
                                    "" if passed else messages.get(grade_id, "")))
        return cells

    def _a_cell_timed_out(self, job: Path, student: str, chapter: str) -> bool:
        return any(o.get("ename") == "CellTimeoutError" for c in self._autograded(job, student, chapter)["cells"]
                   for o in c.get("outputs", []) if isinstance(o, dict))

    def _cross_check(self, job: Path, student: str, chapter: str, slot: int, result: Result) -> None:
        """Run the probes on the student's module in a fresh sandbox, compare here, flag disagreements."""
        module = registry.module_name(chapter)
        student_tree = job / "autograder" / "autograded" / student
        out = job / "probe-out"
        env = {"LLMCOURSE_SOURCE": str(student_tree), "LLMCOURSE_FALLBACK": ",".join(earlier_modules(chapter))}
        sandbox = self._sandbox(slot, [out], student_tree / chapter, env,
                                readable=(student_tree, *grader_files("probes.py")))
        cmd = sandbox.command([sys.executable, "-m", "autograder.probes", module, str(out)])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                                  timeout=max(60, self.settings.cell_timeout), preexec_fn=die_with_parent)
            last_words = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][-300:]
        except subprocess.TimeoutExpired:
            last_words = "it ran out of time"
        theirs, errors = _read_probe_output(out)
        reference = _reference_outputs(module)
        by_id = {c.grade_id: c for c in result.cells}
        for probe in probes.PROBES[module]:
            error = errors.get(probe.exercise)
            if not theirs and not errors:
                error = f"the outside check produced no output ({last_words})"
            verdict, detail = probes.compare(probe, theirs, reference, error)
            result.probes.append(ProbeResult(probe.exercise, verdict, detail))
            trusted = [by_id[c] for c in probe.cells if c in by_id and by_id[c].passed]
            if verdict != "pass" and trusted:
                result.status = "flagged"
                result.flags.append(
                    f"{probe.exercise}: the notebook's tests passed, but the same code failed the outside check "
                    f"({detail}); its points are withdrawn. Exported code must work on its own (define helpers in "
                    "#| export cells) and must not change the tests.")
                for cell in trusted:
                    cell.points, cell.passed = 0.0, False
                    cell.message = f"withdrawn: outside check failed ({detail})"

    # ----------------------------------------------------------------------------------------------------------
    def run(self, jobs: list[tuple[str, str]], workers: int = 1, resume: bool = False, progress=None) -> list[Result]:
        """Grade ``jobs`` (student, chapter) with ``workers`` in parallel; returns the results in job order."""
        if resume:
            jobs = [(s, c) for s, c in jobs if not self._already_graded(s, c)]
        if not jobs:
            return []
        self.prepare(sorted({c for _, c in jobs}))
        try:
            return self.run_prepared(jobs, workers, progress)
        finally:
            self.cleanup()

    def run_prepared(self, jobs: list[tuple[str, str]], workers: int, progress=None) -> list[Result]:
        """Grade ``jobs`` after :meth:`prepare`, ``workers`` at a time, each worker with its own sandbox user."""
        slots: queue.Queue[int] = queue.Queue()
        for slot in range(workers):
            slots.put(slot)
        lock = threading.Lock()

        def work(job):
            slot = slots.get()
            try:
                return self.grade_one(*job, slot=slot)
            finally:
                slots.put(slot)
                if progress:
                    with lock:
                        progress(job)

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(work, jobs))

    def _already_graded(self, student: str, chapter: str) -> bool:
        result = self.store.load(student, chapter)
        if result is None:
            return False
        submission = registry.notebook_path(self.root / "autograder" / "submitted" / student, chapter)
        return result.submission_sha256 == preflight.file_sha256(submission)


def _failure_message(cell: dict) -> str:
    """What a failed test cell said: the error's name and message, or its stderr; never a traceback."""
    for output in cell.get("outputs", []):
        if not isinstance(output, dict):
            continue
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"[:1000]
    stderr = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                     for o in cell.get("outputs", []) if isinstance(o, dict) and o.get("name") == "stderr")
    if stderr:
        return f"wrote to stderr (nbgrader fails a test cell on any stderr output): {stderr[-500:]}"
    return ""


def grader_files(*names: str) -> tuple[Path, ...]:
    """The files that make ``autograder.<name>`` (and nothing else of the grader) importable in a sandbox."""
    package = Path(__file__).resolve().parent
    return tuple(package / name for name in ("__init__.py", *names))


def _read_probe_output(out: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays, errors = {}, {}
    npz = out / "outputs.npz"
    if npz.is_file() and npz.stat().st_size < 50 * 1024**2:
        try:
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError):
            arrays = {}
    try:
        loaded = json.loads((out / "errors.json").read_text(encoding="utf-8")[:100_000])
        errors = {str(k): str(v)[:500] for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        errors = {}
    return arrays, errors


_REFERENCE_CACHE: dict[str, dict[str, np.ndarray]] = {}


def _reference_outputs(module: str) -> dict[str, np.ndarray]:
    """The probes run on the course's public fallback, in the grader (trusted code: torch built-ins)."""
    if module not in _REFERENCE_CACHE:
        import importlib

        fallback = importlib.import_module(f"llmcourse.fallbacks.{module}")
        arrays, errors = probes.run_probes(fallback, probes.PROBES[module])
        if errors:
            raise RuntimeError(f"the reference for {module} failed: {errors}")
        _REFERENCE_CACHE[module] = arrays
    return _REFERENCE_CACHE[module]


# --------------------------------------------------------------------------------------------------------------
def _grade_command(args) -> int:
    from tqdm import tqdm

    settings = Settings(cell_timeout=args.cell_timeout, submission_timeout=args.timeout,
                        memory_gib=args.memory_gib, insecure=args.insecure)
    grader = Grader(Path(args.root), settings)
    chapters = [registry.chapter_id(c, grader.root / "solutions") for c in args.chapter] or list(grader.sources)
    unknown = [c for c in chapters if c not in grader.sources]
    if unknown:
        raise CommandError(f"no instructor notebook for {', '.join(unknown)} in {grader.root / 'solutions'}")
    students = args.student or grader.students()
    if not students:
        raise CommandError(f"no submissions in {grader.root / 'autograder' / 'submitted'} (run collect first)")
    for student in students:
        try:
            check_student_id(student)
        except ValueError as err:
            raise CommandError(str(err)) from None
    jobs = [(s, c) for s in students for c in chapters]
    if settings.insecure:
        print("WARNING: --insecure: student code runs without a sandbox, as you. Only for code you trust.",
              file=sys.stderr)
    bar = tqdm(total=len(jobs), desc="grading", unit="notebook", file=sys.stderr)
    if args.resume:
        skipped = sum(grader._already_graded(s, c) for s, c in jobs)
        bar.update(skipped)
    try:
        results = grader.run(jobs, workers=args.workers, resume=args.resume, progress=lambda job: bar.update(1))
    except SandboxUnavailable as err:
        raise CommandError(f"refusing to grade: {err}") from None
    finally:
        bar.close()
    for r in results:
        print(f"{r.student:20s} {r.chapter:28s} {r.status:8s} {r.score:g}/{r.max_score:g}"
              + (f"  {r.message}" if r.message else "") + ("".join(f"\n    flag: {f}" for f in r.flags)))
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "grade", help="grade every submission (student x chapter) in sandboxes, in parallel",
        description="Autograde autograder/submitted/<student>/<chapter>/<chapter>.ipynb with nbgrader, each "
        "submission in its own sandbox, earlier chapters resolved to their public fallbacks. Results go to "
        "autograder/results/.")
    p.add_argument("--chapter", action="append", default=[], metavar="C", help="only this chapter (repeatable)")
    p.add_argument("--student", action="append", default=[], metavar="S", help="only this student (repeatable)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="submissions graded at the same time (default: half the CPU cores)")
    p.add_argument("--resume", action="store_true",
                   help="skip submissions that already have a result for the same file (after a crash or kill)")
    p.add_argument("--cell-timeout", type=int, default=Settings.cell_timeout, help="seconds per cell")
    p.add_argument("--timeout", type=int, default=Settings.submission_timeout, help="seconds per submission")
    p.add_argument("--memory-gib", type=float, default=Settings.memory_gib, help="memory per sandboxed process")
    p.add_argument("--insecure", action="store_true", help="grade WITHOUT a sandbox (trusted code only)")
    p.add_argument("--root", default=str(registry.COURSE_ROOT), help="the course folder (default: this repository)")
    p.set_defaults(run=_grade_command)
