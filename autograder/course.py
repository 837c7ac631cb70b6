"""Where the course's folders are, and how to run nbgrader on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from llmcourse.registry import COURSE_ROOT

AUTOGRADER_DIR = Path(__file__).resolve().parent


class CommandError(RuntimeError):
    """A step of an autograder command failed; the message says which and why."""


def run_nbgrader(args: list[str], root: Path = COURSE_ROOT, timeout: float | None = None,
                 extra_env: dict[str, str] | None = None) -> str:
    """Run ``nbgrader ARGS`` on the course at ``root`` with ``autograder/nbgrader_config.py``; returns its log.

    nbgrader reads ``nbgrader_config.py`` from its working folder, so it runs in ``autograder/``; the
    course root and the gradebook are passed explicitly, so a copy of the course can be used too. The
    caller's ``LLMCOURSE_*`` settings are not passed on (a notebook imports from its own tree), except those
    in ``extra_env``.
    """
    from autograder.layout import CourseLayout

    root = Path(root).resolve()
    cmd = [
        sys.executable, "-m", "autograder.nbgrader_main", *args,
        f"--CourseDirectory.root={root}",
        f"--CourseDirectory.db_url=sqlite:///{CourseLayout(root).gradebook}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")} | (extra_env or {})
    # nbgrader runs tools of its environment by name (alembic, for the gradebook): find this Python's first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run(cmd, cwd=AUTOGRADER_DIR, capture_output=True, text=True, timeout=timeout, env=env)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or "[ERROR]" in log:
        raise CommandError(f"nbgrader {' '.join(args)} failed (exit {proc.returncode}):\n{log.strip()}")
    return log


def die_with_parent() -> None:
    """In a child process (``preexec_fn``): be killed when the grader dies, so a killed batch leaves nothing
    running."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def tail_of(path: Path, size: int = 4000) -> str:
    """The last ``size`` bytes of a log file as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
