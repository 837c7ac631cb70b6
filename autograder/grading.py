"""``python -m autograder grade``: grade every student x chapter, in parallel, each in its own sandboxes.

A grader made of parts, one job (a student's notebook for one chapter) going through them in order:

1. **pre-flight** (:mod:`autograder.preflight`): the file is checked as JSON before anything runs;
2. a **workspace** (:class:`Workspace`): a private course for the job, inside the batch's private run folder
   (:class:`RunFolder`), with a copy of the chapter's gradebook and the one submission;
3. the **notebook's own run** (:class:`NotebookRun`): nbgrader autograde, its kernel in the sandbox as the
   worker's kernel user, every earlier chapter on its public fallback, time and output limits. Its verdicts are
   what the student sees in the notebook, and a consistency check; they give no points;
4. the **outside checks** (:mod:`autograder.outside`): the student's exported code in a fresh sandboxed process,
   as another user, writing only data, compared here with the reference from the public fallbacks. They decide
   every point. A cell where the two disagree is flagged, with both verdicts shown;
5. the **result** (:func:`combine`) is written atomically, the job's log kept under ``autograder/logs/``.
   ``--resume`` skips submissions that already have a result for the same file (grader errors are retried).

``--shard K/N`` grades a deterministic 1/N of the jobs, so a class larger than one machine can be spread by a
scheduler (a Slurm array, a Kubernetes Indexed Job, GNU parallel) over a shared results folder.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from autograder import preflight
from autograder.course import AUTOGRADER_DIR, CommandError, die_with_parent, run_nbgrader, tail_of
from autograder.layout import CourseLayout
from autograder.notebook_model import CourseNotebook
from autograder.outside import CellVerdict, GraderError, OutsideCheck, compute_reference
from autograder.probes import chapter_probes
from autograder.results import CellResult, ProbeResult, Result, ResultStore, check_student_id
from autograder.sandbox import SandboxFactory, SandboxUnavailable, grader_files, write_kernelspec
from llmcourse import registry


@dataclass
class Settings:
    cell_timeout: int = 120  # seconds per cell (nbgrader interrupts the cell, then goes on)
    submission_timeout: int = 900  # seconds for a whole submission, kernel start included
    memory_gib: float = 4.0  # address space per sandboxed process
    max_output_bytes: int = 1_000_000  # per cell, capped in the kernel and again in the grader
    insecure: bool = False  # no sandbox: only for code you trust


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def earlier_modules(chapter: str) -> list[str]:
    """The modules of every chapter before ``chapter`` in the course: graded against their fallbacks."""
    order = list(registry.CHAPTER_IDS)
    index = order.index(chapter) if chapter in order else len(order)
    return [registry.module_name(c) for c in order[:index]]


# --------------------------------------------------------------------------------------------------------------
# shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): shard K of N, 1 <= K <= N."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise CommandError(f"--shard {text!r}: expected K/N, like 1/4 (shard K of N, counted from 1)") from None
    if not 1 <= k <= n:
        raise CommandError(f"--shard {text!r}: K must be between 1 and N (got K={k}, N={n})")
    return k, n


def shard_of(student: str, chapter: str, n: int) -> int:
    """The shard (1..n) that grades (student, chapter): a hash of the two, so every machine agrees without
    seeing the same list of submissions."""
    digest = hashlib.sha256(f"{student}\0{chapter}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


# --------------------------------------------------------------------------------------------------------------
# the run folder


class RunFolder:
    """The private (mode 0700) folder of one grading run: staging, job folders, kernel runtime files.

    Entering removes what a killed run of the same course and shard left there, and takes a lock so that two
    runs never share it; leaving removes it. ``--resume`` and a normal run leave nothing behind."""

    def __init__(self, layout: CourseLayout, name: str = "all"):
        self.path = layout.run_folder(name)
        self.name = name
        self._lock = None
        self._legacy = layout.grading / "work"

    def __enter__(self) -> RunFolder:
        lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = open(lock_path, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise CommandError(f"another grading run ({self.name}) of this course is still running on this "
                               f"machine (it holds {lock_path}); wait for it, or grade another --shard") from None
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(mode=0o700)
        os.chmod(self.path, 0o700)
        for stale in (*self._legacy.glob("staging-*"), *self._legacy.glob("job-*")):  # older layouts
            shutil.rmtree(stale, ignore_errors=True)
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def job(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.path))


# --------------------------------------------------------------------------------------------------------------
# one job's workspace


def normalised_submission(source: CourseNotebook, submitted: dict) -> dict:
    """The notebook whose exported cells are the student's code, as nbgrader grades it: the instructor's cells
    in the instructor's order, each solution cell with the student's source, every other nbgrader cell with the
    instructor's (a locked cell edited or deleted by the student is restored), and the student's own extra cells
    (helpers in new ``#| export`` cells) kept after the cell they followed."""
    student = CourseNotebook.from_json(submitted)
    solutions = {c.grade_id: c.source for c in student.cells if c.grade_id and c.is_solution}
    known = set(source.by_id())
    extras: dict[str, list[str]] = {}
    after = ""
    for cell in student.cells:
        if cell.grade_id in known:
            after = cell.grade_id
        elif cell.cell_type == "code" and not cell.grade_id:
            extras.setdefault(after, []).append(cell.source)
    cells = [_code(src) for src in extras.get("", [])]
    for cell in source.cells:
        if cell.grade_id and cell.is_solution:
            text = solutions.get(cell.grade_id, "raise NotImplementedError('no solution submitted')")
        else:
            text = cell.source
        cells.append(_code(text) if cell.cell_type == "code" else {"cell_type": "markdown", "metadata": {},
                                                                     "source": text})
        if cell.grade_id:
            cells += [_code(src) for src in extras.get(cell.grade_id, [])]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


@dataclass
class Workspace:
    """A job's private course: ``job/solutions/<chapter>``, ``job/autograder/{gradebook.db, submitted,
    autograded}``, the kernel's runtime folder, and ``job/exported/<chapter>/<chapter>.ipynb``, the normalised
    submission that the outside checks import."""

    job: Path
    student: str
    chapter: str

    @property
    def course(self) -> CourseLayout:
        return CourseLayout(self.job)

    @property
    def submitted(self) -> Path:
        return self.course.submission(self.student, self.chapter)

    @property
    def student_tree(self) -> Path:
        return self.course.autograded / self.student

    @property
    def chapter_dir(self) -> Path:
        return self.student_tree / self.chapter

    @property
    def runtime(self) -> Path:
        return self.job / "rt"

    @property
    def exported(self) -> Path:
        return self.job / "exported"

    @classmethod
    def create(cls, job: Path, student: str, chapter: str, staging: Path, source: Path, submission: Path,
               model: CourseNotebook) -> Workspace:
        ws = cls(job, student, chapter)
        ws.course.grading.mkdir()
        shutil.copy2(CourseLayout(staging).gradebook, ws.course.gradebook)
        shutil.copytree(source.parent, ws.course.source(chapter).parent)
        ws.submitted.parent.mkdir(parents=True)
        shutil.copyfile(submission, ws.submitted)
        exported = registry.notebook_path(ws.exported, chapter)
        exported.parent.mkdir(parents=True)
        submitted = json.loads(submission.read_text(encoding="utf-8"))
        exported.write_text(json.dumps(normalised_submission(model, submitted)), encoding="utf-8")
        ws.runtime.mkdir()
        return ws


# --------------------------------------------------------------------------------------------------------------
# the notebook's own run


@dataclass
class NotebookOutcome:
    """What the notebook's own run (nbgrader in the sandboxed kernel) said."""

    state: str  # "ok", "timeout" (the whole submission), "crashed" (the kernel died), "failed" (nbgrader failed)
    cells: dict[str, tuple[bool, str]] = field(default_factory=dict)  # grade_id -> (passed, message)
    cell_timed_out: bool = False
    log: str = ""


class NotebookRun:
    """nbgrader autograde of one workspace, its kernel in a sandbox made by ``sandboxes``."""

    def __init__(self, settings: Settings, sandboxes: SandboxFactory):
        self.settings = settings
        self.sandboxes = sandboxes

    def run(self, ws: Workspace, slot: int) -> NotebookOutcome:
        s = self.settings
        env = {"LLMCOURSE_SOURCE": str(ws.student_tree), "LLMCOURSE_FALLBACK": ",".join(earlier_modules(ws.chapter)),
               "AUTOGRADER_KERNEL_OUTPUT_CAP": str(s.max_output_bytes * 9 // 10)}  # under the grader's cap
        sandbox = self.sandboxes.make("kernel", slot, [ws.chapter_dir, ws.runtime], ws.chapter_dir, env,
                                      readable=grader_files("kernel_setup.py"))
        settings_file = ws.job / "sandbox.json"
        settings_file.write_text(sandbox.to_json())
        write_kernelspec(ws.job / "jupyter", settings_file)
        # nbgrader re-creates the autograded folder by copying the submitted one: keep it writable
        os.chmod(ws.submitted.parent, 0o777)
        if sandbox.uid is not None:
            os.chown(ws.submitted.parent, sandbox.uid, sandbox.uid)
        shutil.rmtree(ws.chapter_dir)
        args = [sys.executable, "-m", "autograder.nbgrader_main", "autograde", ws.chapter, "--student", ws.student,
                "--force",
                f"--CourseDirectory.root={ws.job}", f"--CourseDirectory.db_url=sqlite:///{ws.course.gradebook}",
                f"--Execute.timeout={s.cell_timeout}", f"--CappedExecute.max_output_bytes={s.max_output_bytes}"]
        if not s.insecure:
            args += ["--Execute.kernel_name=llmcourse-sandbox"]
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCOURSE_", "JPY_"))}
        run_env.update(JUPYTER_PATH=str(ws.job / "jupyter"), JUPYTER_RUNTIME_DIR=str(ws.runtime),
                       AUTOGRADER_KERNEL_IPC="" if s.insecure else str(ws.runtime / "k"),
                       PATH=os.pathsep.join([str(Path(sys.executable).parent), run_env.get("PATH", "")]))
        if s.insecure:  # no sandbox: the kernel still gets the course settings
            run_env.update(env)
        log_path = ws.job / "nbgrader.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, cwd=AUTOGRADER_DIR, stdout=log, stderr=subprocess.STDOUT, env=run_env,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
            try:
                proc.wait(timeout=s.submission_timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                timed_out = True
        log_text = tail_of(log_path, 200_000)
        if timed_out:
            return NotebookOutcome("timeout", log=log_text)
        grades = self._grades(ws)
        if grades is None:
            died = "deadkernelerror" in log_text.lower() or "kernel died" in log_text.lower()
            return NotebookOutcome("crashed" if died else "failed", log=log_text)
        executed = _read_json(ws.course.autograded_notebook(ws.student, ws.chapter))
        messages, cell_timed_out = {}, False
        for cell in executed.get("cells", []) if isinstance(executed.get("cells"), list) else []:
            if not isinstance(cell, dict):
                continue
            outputs = [o for o in cell.get("outputs", []) if isinstance(o, dict)]
            cell_timed_out |= any(o.get("ename") == "CellTimeoutError" for o in outputs)
            grade_id = ((cell.get("metadata") or {}).get("nbgrader") or {}).get("grade_id")
            if grade_id in grades:
                messages[grade_id] = _failure_message(outputs)
        cells = {gid: (score >= max_score, messages.get(gid, "")) for gid, (score, max_score) in grades.items()}
        return NotebookOutcome("ok", cells, cell_timed_out, log_text)

    @staticmethod
    def _grades(ws: Workspace) -> dict[str, tuple[float, float]] | None:
        from nbgrader.api import Gradebook, MissingEntry

        try:
            with Gradebook(f"sqlite:///{ws.course.gradebook}") as gb:
                notebook = gb.find_submission_notebook(ws.chapter, ws.chapter, ws.student)
                if any(g.auto_score is None for g in notebook.grades):
                    return None  # nbgrader registered the submission, but its notebook never finished running
                return {g.name: (float(g.score or 0.0), float(g.max_score)) for g in notebook.grades}
        except MissingEntry:
            return None


def _read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > 200 * 1024**2:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _failure_message(outputs: list[dict]) -> str:
    """What a failed test cell said: the error's name and message, or its stderr; never a traceback."""
    for output in outputs:
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"[:1000]
    stderr = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                     for o in outputs if o.get("name") == "stderr")
    if stderr:
        return f"wrote to stderr (nbgrader fails a test cell on any stderr output): {stderr[-500:]}"
    return ""


# --------------------------------------------------------------------------------------------------------------
# the result


NOTEBOOK_STATES = {
    "timeout": "the notebook's own run did not finish within {timeout} s",
    "crashed": "the notebook's kernel died while it ran (os._exit, a crash or a resource limit)",
    "failed": "nbgrader could not run the notebook",
}


def combine(student: str, chapter: str, model: CourseNotebook, notebook: NotebookOutcome,
            verdicts: list[CellVerdict], settings: Settings) -> Result:
    """The result of one job: every cell's points from its outside verdict; the notebook's own verdict kept beside
    it, and every disagreement flagged with both."""
    outside = {v.cell: v for v in verdicts}
    hidden = model.hidden_cells()
    cells, flags, probes = [], [], []
    disagreements = 0
    for cell in model.graded():
        gid, max_points = cell.grade_id, cell.points
        kernel = notebook.cells.get(gid) if notebook.state == "ok" else None
        verdict = outside.get(gid)
        if verdict is None:  # a chapter without outside checks for this cell: the notebook's verdict, flagged
            passed = bool(kernel and kernel[0])
            disagreements += 1
            flags.append(f"{gid}: no outside check exists for this cell; its points come from the notebook's own "
                         "run, which the student's code can change")
            message = "" if passed else (kernel[1] if kernel else "the notebook's own run gave no verdict")
        else:
            passed = verdict.verdict == "pass"
            message = "" if passed else verdict.detail
            probes.append(ProbeResult(gid, verdict.verdict, verdict.detail))
            if kernel is not None and kernel[0] != passed:
                disagreements += 1
                theirs = "passed" if kernel[0] else f"failed ({kernel[1] or 'no message'})"
                ours = "passed" if passed else f"failed ({verdict.detail})"
                flags.append(f"{gid}: the notebook's own test {theirs}, but the outside check {ours}; the points "
                             f"follow the outside check")
        cells.append(CellResult(gid, max_points if passed else 0.0, max_points, passed, gid in hidden, message,
                                kernel_passed=None if kernel is None else kernel[0],
                                kernel_message="" if kernel is None or kernel[0] else kernel[1]))
    if notebook.state != "ok":
        flags.append(NOTEBOOK_STATES[notebook.state].format(timeout=settings.submission_timeout)
                     + "; its points come from the outside checks, so this cost none")
    elif notebook.cell_timed_out:
        flags.append(f"a cell of the notebook ran longer than {settings.cell_timeout} s and was interrupted; the "
                     "points come from the outside checks")
    return Result(student, chapter, "flagged" if disagreements else "graded",
                  float(sum(c.points for c in cells)), model.max_score, cells=cells, probes=probes, flags=flags,
                  notebook=notebook.state if not notebook.cell_timed_out else "cell-timeout",
                  sandboxed=not settings.insecure)


# --------------------------------------------------------------------------------------------------------------
# the grader


class Grader:
    """Grades (student, chapter) jobs: workspace -> notebook run -> outside checks -> result."""

    def __init__(self, root: Path = registry.COURSE_ROOT, settings: Settings | None = None,
                 layout: CourseLayout | None = None):
        self.layout = layout or CourseLayout(root)
        self.root = self.layout.root
        self.settings = settings or Settings()
        self.store = ResultStore(self.layout.results)
        self.sandboxes = SandboxFactory(self.settings.memory_gib, 2 * self.settings.submission_timeout,
                                        self.settings.insecure)
        self.sources = {c: self.layout.source(c) for c in self.layout.source_chapters()}
        self.models = {c: CourseNotebook.read(p) for c, p in self.sources.items()}
        self.expected_ids = {c: set(m.grade_ids()) for c, m in self.models.items()}
        self.references: dict[str, dict] = {}
        self.run_folder: RunFolder | None = None
        self._staging: Path | None = None

    def students(self) -> list[str]:
        return self.layout.students()

    # ----------------------------------------------------------------------------------------------------------
    def prepare(self, chapters: list[str], run_folder: RunFolder, workers: int = 1) -> None:
        """Once per batch: the sandbox works, a gradebook of every chapter to grade, each chapter's reference.

        The references (one process per chapter) are computed ``workers`` at a time while nbgrader adds the
        chapters to the gradebook one after the other (one gradebook, one writer)."""
        self.sandboxes.check()
        self.run_folder = run_folder
        staging = run_folder.path / "staging"
        CourseLayout(staging).grading.mkdir(parents=True)
        probed = [c for c in chapters if chapter_probes(registry.module_name(c))]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            references = {c: pool.submit(compute_reference, registry.module_name(c),
                                         run_folder.path / f"reference-{c}") for c in probed}
            try:
                for chapter in chapters:
                    shutil.copytree(self.sources[chapter].parent, staging / "solutions" / chapter)
                    run_nbgrader(["generate_assignment", chapter, "--force"], root=staging)
                for chapter, future in references.items():
                    try:
                        self.references[chapter] = future.result()
                    except GraderError as err:
                        raise CommandError(str(err)) from None
            finally:
                for future in references.values():
                    future.cancel()
        self._staging = staging

    # ----------------------------------------------------------------------------------------------------------
    def grade_one(self, student: str, chapter: str, slot: int = 0) -> Result:
        """Grade one submission and save its result (and its log)."""
        check_student_id(student)
        started = time.monotonic()
        submission = self.layout.submission(student, chapter)
        verdict = preflight.check_submission(submission, chapter, self.expected_ids)
        model = self.models[chapter]
        log: list[str] = []
        if not verdict.ok:
            result = Result(student, chapter, verdict.status, 0.0, model.max_score, verdict.message,
                            submission_sha256=verdict.sha256, sandboxed=not self.settings.insecure)
        else:
            assert self.run_folder is not None and self._staging is not None, "call prepare() first"
            job = self.run_folder.job()
            try:
                result = self._grade(job, student, chapter, slot, submission, model, log)
            except GraderError as err:
                log.append(f"grader error: {err}")
                result = Result(student, chapter, "grader-error", 0.0, model.max_score,
                                f"the grader failed on this submission, not the student ({err}); the log is "
                                f"{self.layout.log(student, chapter)}. Grade it again (grade --resume retries it).",
                                sandboxed=not self.settings.insecure)
            finally:
                shutil.rmtree(job, ignore_errors=True)
            result.submission_sha256 = verdict.sha256
        result.duration_s = round(time.monotonic() - started, 2)
        result.graded_at = now()
        self._keep_log(student, chapter, result, log)
        self.store.save(result)
        return result

    def _grade(self, job: Path, student: str, chapter: str, slot: int, submission: Path, model: CourseNotebook,
               log: list[str]) -> Result:
        ws = Workspace.create(job, student, chapter, self._staging, self.sources[chapter], submission, model)
        notebook = NotebookRun(self.settings, self.sandboxes).run(ws, slot)
        log.append(f"--- the notebook's own run: {notebook.state}\n{notebook.log}")
        self._keep_autograded(ws)
        verdicts: list[CellVerdict] = []
        if chapter in self.references:
            check = OutsideCheck(registry.module_name(chapter), self.references[chapter],
                                 self._probe_command(ws, slot), self._probe_timeout(chapter), log=log)
            verdicts = check.run(ws.job)
            log.append("--- outside checks: " + ", ".join(f"{v.cell} {v.verdict}" for v in verdicts))
        return combine(student, chapter, model, notebook, verdicts, self.settings)

    def _probe_timeout(self, chapter: str) -> float:
        return 150 + sum(p.timeout for p in chapter_probes(registry.module_name(chapter)))

    def _probe_command(self, ws: Workspace, slot: int):
        def make(argv: list[str], out: Path):
            env = {"LLMCOURSE_SOURCE": str(ws.exported),
                   "LLMCOURSE_FALLBACK": ",".join(earlier_modules(ws.chapter)) or "none"}
            if env["LLMCOURSE_FALLBACK"] == "none":
                del env["LLMCOURSE_FALLBACK"]
            sandbox = self.sandboxes.make("probe", slot, [out], ws.exported / ws.chapter, env,
                                          readable=(ws.exported, *grader_files("probes")))
            run_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
            if not sandbox.enabled:
                run_env.update(env)
            return sandbox.command(argv), run_env

        return make

    def _keep_autograded(self, ws: Workspace) -> None:
        """The executed notebook, for the instructor: autograder/autograded/<student>/<chapter>/."""
        executed = ws.course.autograded_notebook(ws.student, ws.chapter)
        keep = self.layout.autograded_notebook(ws.student, ws.chapter)
        keep.parent.mkdir(parents=True, exist_ok=True)
        if executed.is_file() and executed.stat().st_size < 50 * 1024**2:
            shutil.copyfile(executed, keep)
        else:
            keep.unlink(missing_ok=True)

    def _keep_log(self, student: str, chapter: str, result: Result, log: list[str]) -> None:
        path = self.layout.log(student, chapter)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = f"{result.student} {result.chapter}: {result.status} {result.score:g}/{result.max_score:g}\n"
        text = head + "\n".join(log)
        path.write_text(text[-1_000_000:], encoding="utf-8", errors="replace")

    # ----------------------------------------------------------------------------------------------------------
    def run(self, jobs: list[tuple[str, str]], workers: int = 1, resume: bool = False, progress=None,
            run_name: str = "all") -> list[Result]:
        """Grade ``jobs`` (student, chapter) with ``workers`` in parallel; returns the results in job order."""
        if resume:
            jobs = [(s, c) for s, c in jobs if not self.already_graded(s, c)]
        if not jobs:
            return []
        with RunFolder(self.layout, run_name) as folder:
            self.prepare(sorted({c for _, c in jobs}), folder, workers)
            try:
                return self.run_prepared(jobs, workers, progress)
            finally:
                self.run_folder = self._staging = None

    def run_prepared(self, jobs: list[tuple[str, str]], workers: int, progress=None) -> list[Result]:
        """Grade ``jobs`` after :meth:`prepare`, ``workers`` at a time, each worker with its own sandbox users."""
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

    def already_graded(self, student: str, chapter: str) -> bool:
        try:
            result = self.store.load(student, chapter)
        except (ValueError, TypeError, KeyError, OSError):
            return False
        if result is None or result.status == "grader-error":
            return False
        return result.submission_sha256 == preflight.file_sha256(self.layout.submission(student, chapter))


# --------------------------------------------------------------------------------------------------------------
def _grade_command(args) -> int:
    from tqdm import tqdm

    settings = Settings(cell_timeout=args.cell_timeout, submission_timeout=args.timeout,
                        memory_gib=args.memory_gib, insecure=args.insecure)
    layout = CourseLayout(Path(args.root))
    if not layout.solutions.is_dir():
        raise CommandError(f"--root {args.root}: no solutions/ folder there, so it is not a course folder")
    grader = Grader(settings=settings, layout=layout)
    chapters = []
    for name in args.chapter:
        try:
            chapters.append(registry.chapter_id(name, layout.solutions))
        except KeyError as err:
            raise CommandError(str(err.args[0])) from None
    chapters = chapters or list(grader.sources)
    unknown = [c for c in chapters if c not in grader.sources]
    if unknown:
        raise CommandError(f"no instructor notebook for {', '.join(unknown)} in {layout.solutions}")
    students = args.student or grader.students()
    if not students:
        raise CommandError(f"no submissions in {layout.submitted} (run collect first)")
    for student in students:
        try:
            check_student_id(student)
        except ValueError as err:
            raise CommandError(str(err)) from None
    jobs = [(s, c) for s in students for c in chapters]
    run_name = "all"
    if args.shard:
        k, n = parse_shard(args.shard)
        jobs = [(s, c) for s, c in jobs if shard_of(s, c, n) == k]
        run_name = f"{k}of{n}"
        grader.store.log_name = f"log-{k}of{n}.jsonl"
    if settings.insecure:
        print("WARNING: --insecure: student code runs without a sandbox, as you. Only for code you trust.",
              file=sys.stderr)
    bar = tqdm(total=len(jobs), desc="grading" + (f" shard {args.shard}" if args.shard else ""), unit="notebook",
               file=sys.stderr)
    if args.resume:
        bar.update(sum(grader.already_graded(s, c) for s, c in jobs))
    try:
        results = grader.run(jobs, workers=args.workers, resume=args.resume, progress=lambda job: bar.update(1),
                             run_name=run_name)
    except SandboxUnavailable as err:
        raise CommandError(f"refusing to grade: {err}") from None
    finally:
        bar.close()
    for r in results:
        print(f"{r.student:20s} {r.chapter:28s} {r.status:12s} {r.score:g}/{r.max_score:g}"
              + (f"  {r.message}" if r.message else "") + ("".join(f"\n    flag: {f}" for f in r.flags)))
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "grade", help="grade every submission (student x chapter) in sandboxes, in parallel",
        description="Grade autograder/submitted/<student>/<chapter>/<chapter>.ipynb: every point from outside "
        "checks of the student's exported code in a sandbox, compared in the grader; the notebook's own tests run "
        "in nbgrader (sandboxed) as a consistency check. Results go to autograder/results/, logs to "
        "autograder/logs/.")
    p.add_argument("--chapter", action="append", default=[], metavar="C", help="only this chapter (repeatable)")
    p.add_argument("--student", action="append", default=[], metavar="S", help="only this student (repeatable)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="submissions graded at the same time (default: half the CPU cores)")
    p.add_argument("--resume", action="store_true",
                   help="skip submissions that already have a result for the same file (after a crash or kill); "
                        "grader errors are graded again")
    p.add_argument("--shard", metavar="K/N",
                   help="grade only shard K of N (1 <= K <= N): a fixed 1/N of the (student, chapter) jobs, so "
                        "N machines can share a class over one results folder")
    p.add_argument("--cell-timeout", type=int, default=Settings.cell_timeout, help="seconds per cell")
    p.add_argument("--timeout", type=int, default=Settings.submission_timeout, help="seconds per submission")
    p.add_argument("--memory-gib", type=float, default=Settings.memory_gib, help="memory per sandboxed process")
    p.add_argument("--insecure", action="store_true", help="grade WITHOUT a sandbox (trusted code only)")
    p.add_argument("--root", default=str(registry.COURSE_ROOT), help="the course folder (default: this repository)")
    p.set_defaults(run=_grade_command)


__all__ = ["Grader", "Settings", "RunFolder", "Workspace", "NotebookRun", "NotebookOutcome", "combine",
           "normalised_submission", "parse_shard", "shard_of", "earlier_modules", "die_with_parent", "now"]
