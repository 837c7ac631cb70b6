"""Where everything of a course lives: one object for every path the grader reads or writes.

``CourseLayout(root)`` names the instructor and student trees, the grading folders under ``autograder/`` (the
submitted and autograded notebooks, results, logs, feedback, reports) and the private run folder of a grading
batch. No other module builds ``root / "autograder" / ...`` by hand.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmcourse import registry


@dataclass(frozen=True)
class CourseLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # --- the trees -----------------------------------------------------------------------------------------------
    @property
    def solutions(self) -> Path:
        return self.root / "solutions"

    @property
    def chapters(self) -> Path:
        return self.root / "chapters"

    def source(self, chapter: str) -> Path:
        """The instructor notebook of ``chapter``."""
        return registry.notebook_path(self.solutions, chapter)

    def release(self, chapter: str) -> Path:
        """The student notebook of ``chapter``."""
        return registry.notebook_path(self.chapters, chapter)

    def source_chapters(self) -> list[str]:
        return registry.chapters_in(self.solutions)

    # --- grading -------------------------------------------------------------------------------------------------
    @property
    def grading(self) -> Path:
        return self.root / "autograder"

    @property
    def submitted(self) -> Path:
        return self.grading / "submitted"

    @property
    def autograded(self) -> Path:
        return self.grading / "autograded"

    @property
    def results(self) -> Path:
        return self.grading / "results"

    @property
    def logs(self) -> Path:
        return self.grading / "logs"

    @property
    def feedback(self) -> Path:
        return self.grading / "feedback"

    @property
    def reports(self) -> Path:
        return self.grading / "reports"

    @property
    def gradebook(self) -> Path:
        return self.grading / "gradebook.db"

    def submission(self, student: str, chapter: str) -> Path:
        return registry.notebook_path(self.submitted / student, chapter)

    def autograded_notebook(self, student: str, chapter: str) -> Path:
        return registry.notebook_path(self.autograded / student, chapter)

    def log(self, student: str, chapter: str) -> Path:
        """The kept log of one grading job (nbgrader's output, the outside check's attempts)."""
        return self.logs / student / f"{chapter}.log"

    def students(self) -> list[str]:
        """The students with a folder in ``submitted/``."""
        if not self.submitted.is_dir():
            return []
        return sorted(d.name for d in self.submitted.iterdir() if d.is_dir() and not d.name.startswith("."))

    def run_folder(self, name: str = "all") -> Path:
        """The private folder of one grading run (``name`` tells shards apart): staging, job folders and kernel
        runtime files, all under it. It is in the system's temporary folder (unix socket paths must stay short),
        named after the course, so the next run of the same course and shard finds it and removes it first."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"llmcourse-grade-{digest}-{name}"
