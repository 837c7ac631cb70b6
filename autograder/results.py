"""The grading results: one JSON file per student and chapter, written atomically, plus a log of completed grades.

``autograder/results/<student>/<chapter>.json`` holds a :class:`Result`; ``autograder/results/log.jsonl`` gets one
line each time a grading completes (``grade --resume`` skips what is already there, so nobody is graded twice).
The assembly score lives beside the chapters, as ``autograder/results/<student>/assembly.json``.

Everything here is read by ``feedback``, ``export`` and ``report``. Messages in it come from student code
(error messages of failed tests): treat them as untrusted text (escape them in HTML).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autograder.course import AUTOGRADER_DIR

RESULTS_DIR = AUTOGRADER_DIR / "results"
STUDENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")

#: What happened to a submission, from best to worst.
STATUSES = {
    "graded": "graded: every point from the outside checks",
    "flagged": "graded, but for some test the outside check and the notebook's own test disagreed (both are "
               "shown; the points follow the outside check)",
    "timeout": "a cell or the whole submission ran out of time (results of an older grader)",
    "crashed": "the notebook's kernel died (results of an older grader)",
    "invalid": "the submitted file is not a usable notebook for this chapter",
    "missing": "no submission",
    "grader-error": "not graded: the grader itself failed on this submission (see autograder/logs/); grade again",
}

#: How the notebook's own run (nbgrader, in the sandbox) went. It gives no points, so none of these costs any.
NOTEBOOK_RUN = {
    "ok": "ran to the end",
    "cell-timeout": "a cell ran out of time and was interrupted",
    "timeout": "did not finish in time",
    "crashed": "its kernel died",
    "failed": "nbgrader could not run it",
    "": "",
}


@dataclass
class CellResult:
    grade_id: str
    points: float
    max_points: float
    passed: bool
    hidden: bool  # a hidden test: its source is never shown to the student
    message: str = ""  # for a failed cell: the outside check's diagnosis (the grader's own words)
    kernel_passed: bool | None = None  # the notebook's own test in the kernel (None: it gave no verdict)
    kernel_message: str = ""  # what that test said when it failed (student-controlled text: redact it)


@dataclass
class ProbeResult:
    exercise: str  # grade_id of the solution cell the probe checks
    verdict: str  # "pass", "fail" or "error"
    detail: str = ""


@dataclass
class Result:
    student: str
    chapter: str
    status: str
    score: float
    max_score: float
    message: str = ""
    cells: list[CellResult] = field(default_factory=list)
    probes: list[ProbeResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    submission_sha256: str = ""
    duration_s: float = 0.0
    graded_at: str = ""
    sandboxed: bool = True
    notebook: str = ""  # how the notebook's own run went (a key of NOTEBOOK_RUN; "" before this field existed)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        """A result from its JSON; fields added or dropped between grader versions are tolerated."""
        data = _known(cls, data)
        data["cells"] = [CellResult(**_known(CellResult, c)) for c in data.get("cells", [])]
        data["probes"] = [ProbeResult(**_known(ProbeResult, p)) for p in data.get("probes", [])]
        return cls(**data)


def _known(cls, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in dict(data).items() if k in names}


@dataclass
class AssemblyResult:
    student: str
    status: str  # "passed", "failed", "error", "timeout", "incomplete" (a chapter is missing)
    score: float  # 1.0 when the student's own pieces train and generate, else 0.0
    message: str = ""
    losses: list[float] = field(default_factory=list)
    loss_bound: float = 0.0
    sample: str = ""
    duration_s: float = 0.0
    graded_at: str = ""
    # the application stage (chapter 6b): the student's pieces fine-tune course-tiny on one task, the grader scores
    # it. "" when the course or the student has no chapter 6b; else "passed", "failed" or "error".
    application_status: str = ""
    application_task: str = ""
    application_score: float = 0.0  # the grader's token F1 on held-out examples, 0..1
    application_exact_match: float = 0.0
    application_bound: float = 0.0
    application_message: str = ""
    # the modern stage (chapter 4e): the student's ModernGPT, trained by their pieces and measured by the grader as
    # Hugging Face's Llama. "" when the course or the student has no chapter 4e; else "passed", "failed" or "error".
    modern_status: str = ""
    modern_val_loss: float = 0.0  # the grader's validation loss, nats per token
    modern_bound: float = 0.0
    modern_losses: list[float] = field(default_factory=list)  # the student's training losses, as they reported
    modern_sample: str = ""
    modern_message: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False)


def check_student_id(student: str) -> str:
    if not STUDENT_ID_RE.match(student or ""):
        raise ValueError(f"{student!r} is not a usable student id: letters, digits and _ . @ + - only, "
                         "starting with a letter or digit, at most 100 characters")
    return student


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """``log_name`` is the completion log this process appends to: shards write their own (``log-2of8.jsonl``),
    so machines never append to one file together; :meth:`log` reads them all."""

    def __init__(self, folder: Path = RESULTS_DIR, log_name: str = "log.jsonl"):
        self.folder = Path(folder)
        self.log_name = log_name

    def path(self, student: str, chapter: str) -> Path:
        return self.folder / check_student_id(student) / f"{chapter}.json"

    def save(self, result: Result) -> None:
        atomic_write(self.path(result.student, result.chapter), result.to_json())
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"student": result.student, "chapter": result.chapter, "status": result.status,
                           "score": result.score, "graded_at": result.graded_at}) + "\n"
        with open(self.folder / self.log_name, "a", encoding="utf-8") as log:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())

    def load(self, student: str, chapter: str) -> Result | None:
        path = self.path(student, chapter)
        if not path.is_file():
            return None
        return Result.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def all(self) -> list[Result]:
        results = []
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*/*.json")):
                if path.name != "assembly.json":
                    results.append(Result.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        return results

    def save_assembly(self, result: AssemblyResult) -> None:
        atomic_write(self.folder / check_student_id(result.student) / "assembly.json", result.to_json())

    def assemblies(self) -> dict[str, dict]:
        found = {}
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*/assembly.json")):
                found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        return found

    def log(self) -> list[dict]:
        """Every completion line, of every shard's log, oldest first."""
        lines = []
        for path in sorted(self.folder.glob("log*.jsonl")) if self.folder.is_dir() else []:
            lines += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return sorted(lines, key=lambda entry: str(entry.get("graded_at", "")))
