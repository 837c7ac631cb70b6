"""The grader's side of the outside checks (:mod:`autograder.probes`): the reference, the sandboxed run of the
student's module, and the verdict of each graded cell, compared here, in the grader's process.

- :func:`compute_reference` runs every probe of a chapter on the public fallbacks (``LLMCOURSE_FALLBACK=all``,
  nothing of the current folder or environment), in a trusted process of its own, once per batch.
- :class:`OutsideCheck` runs the probes on a student's module in a fresh sandboxed process (its own uid, so a
  fork bomb left by the notebook's kernel cannot starve it), and tells apart what is the student's (an error, a
  timeout or a crash *while their code runs*: that probe fails, the others are run again without it) from what is
  the grader's (the process never reached the student's code, or wrote nothing): retried once, then
  :class:`GraderError`, never a failure charged to the student.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course import die_with_parent, tail_of
from autograder.probes import Probe, chapter_probes, judge, load_output


class GraderError(RuntimeError):
    """The outside check failed for a reason of the grader's own (not of the student's code)."""


@dataclass
class CellVerdict:
    cell: str
    verdict: str  # "pass", "fail" or "error" (the student's code raised or ran out of time)
    detail: str = ""


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCOURSE_", "JPY_"))}
    env.update(extra)
    return env


def read_outputs(out: Path, probes: list[Probe]) -> dict[str, dict | None]:
    return {p.key: load_output(out, p.key) for p in probes}


def compute_reference(module: str, folder: Path, timeout: float = 900) -> dict[str, dict]:
    """Every probe of ``module`` run on the course's public fallbacks, in a process of its own with every chapter
    forced to its fallback, started in an empty folder (so neither the current folder nor ``LLMCOURSE_*`` settings
    can change it). Raises :class:`GraderError` when a probe fails on the reference: that is a bug of the course.
    """
    probes = chapter_probes(module)
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    empty, out = folder / "empty", folder / "out"
    empty.mkdir(parents=True)
    env = _clean_env({"LLMCOURSE_FALLBACK": "all", "LLMCOURSE_SOURCE": str(empty), "OMP_NUM_THREADS": "1",
                      "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    proc = subprocess.run([sys.executable, "-m", "autograder.probes", module, str(out), "--reference"],
                          cwd=empty, env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
    outputs = read_outputs(out, probes)
    broken = {k: (v or {}).get("error") or "no output" for k, v in outputs.items() if v is None or v.get("error")}
    if proc.returncode != 0 or broken:
        raise GraderError(f"the reference outputs of {module} could not be computed "
                          f"(exit {proc.returncode}): {broken or proc.stderr[-2000:]}")
    return outputs


def verdicts(probes: list[Probe], theirs: dict[str, dict | None], reference: dict[str, dict]) -> list[CellVerdict]:
    """One verdict per graded cell: it passes when all of its probes pass; the first problem is its detail."""
    cells: dict[str, CellVerdict] = {}
    for probe in probes:
        verdict, detail = judge(probe, theirs.get(probe.key), reference[probe.key])
        current = cells.setdefault(probe.cell, CellVerdict(probe.cell, "pass"))
        if current.verdict == "pass" and verdict != "pass":
            current.verdict = verdict
            current.detail = f"{probe.name}: {detail}" if probe.name else detail
    return list(cells.values())


@dataclass
class ProgressLog:
    """What the probe process wrote in ``progress.log``: how far it got."""

    lines: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, out: Path) -> ProgressLog:
        try:
            text = (out / "progress.log").read_text(encoding="utf-8", errors="replace")[:1_000_000]
        except OSError:
            text = ""
        return cls(text.splitlines())

    @property
    def reached_student_code(self) -> bool:
        return "import" in self.lines

    @property
    def finished(self) -> bool:
        return bool(self.lines) and self.lines[-1] == "end"

    def running(self) -> str | None:
        """The probe that was running when the process stopped, if one was."""
        started = [ln[6:] for ln in self.lines if ln.startswith("probe ")]
        done = {ln[5:] for ln in self.lines if ln.startswith("done ")}
        pending = [k for k in started if k not in done]
        return pending[-1] if pending else None


class OutsideCheck:
    """Run a chapter's probes on one student's module in sandboxes and judge them against the reference.

    ``make_command(argv, out)`` returns (the sandboxed command line for ``argv`` with ``out`` writable, its
    environment);
    ``timeout`` bounds all of it, every process together (a probe's own limit is in the probe): code that hangs
    and ignores the probe's alarm costs its remaining probes, never hours of a grading worker.
    """

    def __init__(self, module: str, reference: dict[str, dict], make_command, timeout: float, log=None):
        self.module = module
        self.probes = chapter_probes(module)
        self.reference = reference
        self.make_command = make_command
        self.timeout = timeout
        self.log = log if log is not None else []

    def run(self, work: Path) -> list[CellVerdict]:
        outputs: dict[str, dict | None] = {}
        charged: dict[str, str] = {}  # probe key -> what its process did while it ran (the student's)
        infra_failures = 0
        attempt = 0
        deadline = time.monotonic() + self.timeout
        while True:
            todo = [p for p in self.probes if p.key not in outputs and p.key not in charged]
            if not todo:
                break
            left = deadline - time.monotonic()
            if left <= 1:
                if infra_failures:
                    raise GraderError("the outside check failed before reaching the student's code, and then ran "
                                      "out of time")
                for p in todo:
                    charged[p.key] = f"not run: the outside checks used up their {self.timeout:g} s"
                break
            attempt += 1
            if attempt > len(self.probes) + 2:
                raise GraderError("the outside check did not converge")
            out = Path(tempfile.mkdtemp(prefix="probe-", dir=work))
            os.chmod(out, 0o777)
            skip = sorted(set(outputs) | set(charged))
            argv = [sys.executable, "-m", "autograder.probes", self.module, str(out)]
            if skip:
                argv += ["--skip", ",".join(skip)]
            how = self._run_process(argv, out, left)
            progress = ProgressLog.read(out)
            got = {k: v for k, v in read_outputs(out, todo).items() if v is not None}
            outputs.update(got)
            missing = [p.key for p in todo if p.key not in got]
            if not missing:
                continue
            if not progress.reached_student_code:  # the sandbox or the checker itself failed: the grader's
                infra_failures += 1
                self.log.append(f"outside check attempt {attempt}: {how}; progress {progress.lines[-5:]}")
                if infra_failures >= 2:
                    raise GraderError(f"the outside check failed twice before reaching the student's code ({how})")
                continue
            running = progress.running()
            started_any = any(line.startswith("probe ") for line in progress.lines)
            if running is not None and running in missing:
                charged[running] = (f"the check's process {how} while this ran (the code exited, crashed, or ran "
                                    "out of memory or time)")
            elif not started_any:  # it stopped while importing the student's exported cells
                for key in missing:
                    charged[key] = f"importing the chapter's exported cells did not finish: the process {how}"
            elif progress.finished or not got:
                for key in missing:  # the student's code removed or broke the results
                    charged[key] = "its result was missing or unreadable after the check ran"
        theirs = {k: v for k, v in outputs.items()}
        for key, why in charged.items():
            theirs[key] = {"values": {}, "error": why}
        return verdicts(self.probes, theirs, self.reference)

    def _run_process(self, argv: list[str], out: Path, timeout: float) -> str:
        """Run one probe process; returns how it ended, in words."""
        from autograder.sandbox import SandboxUnavailable

        try:
            cmd, env = self.make_command(argv, out)
        except (SandboxUnavailable, OSError) as err:
            return f"could not start ({err})"
        log_path = out.parent / f"{out.name}.log"
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                      timeout=timeout, preexec_fn=die_with_parent)
            how = f"exited with status {proc.returncode}"
        except subprocess.TimeoutExpired:
            how = f"ran past the time left to the checks ({timeout:.0f} s)"
        except OSError as err:
            how = f"could not start ({err})"
        tail = tail_of(log_path)
        if tail:
            self.log.append(f"{' '.join(argv[2:4])}: {how}\n{tail}")
        return how


__all__ = ["CellVerdict", "GraderError", "OutsideCheck", "compute_reference", "verdicts"]
