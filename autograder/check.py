"""``python -m autograder check CHAPTER``: run your notebook the way the grader does and say which tests pass.

For students, before submitting. The notebook (default ``chapters/<id>/<id>.ipynb``) runs top to bottom in a
fresh ``python3`` kernel, in its own folder, with a time limit per cell. Each graded cell is then judged by
nbgrader's rule: it fails when it shows an error **or writes anything to stderr** (a warning too). Only the
error's name and message are printed, not the traceback. The exit status is 1 when a graded cell fails or the
notebook cannot be run, 0 when every graded cell passes (``nbgrader validate`` always exits 0).

Hidden tests are not in your notebook: their cells pass here and run for real when you are graded.

Then the grader's **outside checks** of the visible tests run on your exported code (the ``#| export`` cells), in a
process of their own, exactly as when you are graded: they are what earns the points. A function that passes
the notebook's test but fails its outside check (say, it leans on a variable of the notebook that is not
exported) is reported here. ``--no-outside`` skips them.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from tqdm import tqdm

from autograder.course import CommandError
from autograder.gradesheet import add_root_argument, course_root, number_text
from llmcourse import registry

DEFAULT_TIMEOUT = 300
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_MESSAGE = 1500  # characters of one error message printed
STDERR_NOTE = ("it wrote to stderr, and nbgrader fails a graded cell that writes anything to stderr, "
               "warnings included: fix or silence the warning")


@dataclass
class CellVerdict:
    index: int  # 1-based position among all cells, as in Jupyter's cell count
    grade_id: str
    points: float
    graded: bool
    passed: bool
    hidden_only: bool  # the cell holds only comments: its hidden tests are added when grading
    message: str = ""


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def _has_code(source: str) -> bool:
    return any(line.strip() and not line.strip().startswith("#") for line in source.splitlines())


def judge(cell, index: int, timed_out: bool = False, ran: bool = True, timeout: float = DEFAULT_TIMEOUT
          ) -> CellVerdict:
    """The verdict on one executed code cell, by nbgrader's rule (an error or any stderr output fails)."""
    meta = cell.get("metadata", {}).get("nbgrader", {}) or {}
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    stderr = "".join(o.get("text", "") for o in cell.get("outputs", [])
                     if o.get("output_type") == "stream" and o.get("name") == "stderr")
    if not ran:
        passed, message = False, "not run: the kernel died before this cell"
    elif errors:
        error = errors[0]
        passed = False
        message = f"{error.get('ename', 'Error')}: {strip_ansi(str(error.get('evalue', '')))}".strip()
        if timed_out:
            message = f"ran past the time limit ({number_text(timeout)} s per cell) and was interrupted"
    elif stderr:
        passed = False
        message = f"{STDERR_NOTE}:\n{strip_ansi(stderr).strip()}"
    else:
        passed, message = True, ""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " ..."
    return CellVerdict(index, str(meta.get("grade_id", "")), float(meta.get("points") or 0),
                       bool(meta.get("grade")), passed, not _has_code(cell.get("source", "")), message)


def read_notebook(path: Path):
    """The notebook at ``path``, or a clear error when it is missing or not a notebook."""
    if not path.is_file():
        raise CommandError(f"{path}: no such notebook")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises many kinds (JSON, validation, version)
        raise CommandError(f"{path} is not a readable notebook: {err}") from None


def execute(nb, folder: Path, timeout: int, kernel: str) -> tuple[set[int], set[int], str]:
    """Run every cell of ``nb`` in place; returns (indexes of cells run, of cells that timed out, why it stopped)."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    started, ran, timed_out = {}, set(), set()
    code_cells = sum(1 for cell in nb.cells if cell.cell_type == "code")
    bar = tqdm(total=code_cells, desc="running", unit="cell", file=sys.stderr, disable=None)

    def on_start(cell, cell_index, **_):
        started[cell_index] = time.monotonic()

    def on_done(cell, cell_index, **_):
        ran.add(cell_index)
        if time.monotonic() - started.get(cell_index, time.monotonic()) >= timeout:
            timed_out.add(cell_index)
        bar.update()

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(folder)}},
                            on_cell_execute=on_start, on_cell_executed=on_done)
    stopped = ""
    try:
        client.execute()
    except NoSuchKernel:
        raise CommandError(f"there is no Jupyter kernel called {kernel!r} (see: jupyter kernelspec list)") from None
    except DeadKernelError as err:
        stopped = f"the kernel died ({err}): a crash, or memory ran out"
    except CellTimeoutError as err:
        stopped = f"a cell ran out of time: {err}"
    except RuntimeError as err:
        raise CommandError(f"could not run the notebook: {err}") from None
    finally:
        bar.close()
    return ran, timed_out, stopped


def verdicts(nb, ran: set[int], timed_out: set[int], timeout: float) -> list[CellVerdict]:
    """A verdict for every code cell (graded or not), in notebook order."""
    return [judge(cell, i + 1, timed_out=i in timed_out, ran=i in ran, timeout=timeout)
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())


def report(chapter: str, cells: list[CellVerdict], stopped: str) -> tuple[str, bool]:
    """The text printed for the student, and whether every graded cell passed."""
    graded = [c for c in cells if c.graded]
    lines = []
    for cell in cells:
        if not cell.graded and not cell.passed and cell.message:
            lines.append(f"  note: cell {cell.index} (not graded) failed; later tests may fail because of it:")
            lines.append(_indent(cell.message.splitlines()[0]))
            continue
        if not cell.graded:
            continue
        mark = "PASS" if cell.passed else "FAIL"
        hidden = "  (hidden tests: they run when you are graded)" if cell.hidden_only and cell.passed else ""
        earned = cell.points if cell.passed else 0
        lines.append(f"  {mark} {cell.grade_id or f'cell {cell.index}'} "
                     f"[{number_text(earned)}/{number_text(cell.points)}]{hidden}")
        if cell.message:
            lines.append(_indent(cell.message))
    passing = [c for c in graded if c.passed]
    hidden_points = sum(c.points for c in graded if c.hidden_only)
    summary = (f"{chapter}: {len(passing)}/{len(graded)} graded cells pass, "
               f"{number_text(sum(c.points for c in passing))}/{number_text(sum(c.points for c in graded))} points")
    if hidden_points:
        summary += (f" ({number_text(hidden_points)} of the {number_text(sum(c.points for c in graded))} points are"
                    " for hidden tests, which run only when you are graded)")
    if stopped:
        lines.append(f"  the notebook did not run to the end: {stopped}")
    if not graded:
        lines.append("  this notebook has no graded cells (nbgrader metadata): is it the right file?")
    lines.append(summary)
    return "\n".join(lines), bool(graded) and len(passing) == len(graded) and not stopped


def outside_preview(chapter: str, notebook: Path, timeout: float = 600) -> tuple[str, bool]:
    """The grader's outside checks of the visible tests, on the exported cells of ``notebook`` (earlier chapters
    on their fallbacks, as when grading), without a sandbox: it is the student's own code on their own machine."""
    import os
    import tempfile

    from autograder.grading import earlier_modules, normalised_submission
    from autograder.notebook_model import CourseNotebook
    from autograder.outside import GraderError, OutsideCheck, compute_reference
    from autograder.probes import chapter_probes

    module = registry.module_name(chapter)
    probes = chapter_probes(module)
    if not probes:
        return "", True
    model = CourseNotebook.read(notebook)
    hidden = {c.grade_id for c in model.graded() if c.source.strip() and all(
        line.strip().startswith("#") or not line.strip() for line in c.source.splitlines())}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = tmp / "exported"
        target = registry.notebook_path(tree, chapter)
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(normalised_submission(model, json.loads(notebook.read_text("utf-8")))))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
        env.update(LLMCOURSE_SOURCE=str(tree), LLMCOURSE_FALLBACK=",".join(earlier_modules(chapter)))
        try:
            reference = compute_reference(module, tmp / "reference", timeout=timeout)
            verdicts = OutsideCheck(module, reference, lambda argv, out: (argv, env),
                                    timeout=150 + sum(p.timeout for p in probes)).run(tmp)
        except GraderError as err:
            return f"  the outside checks could not run here: {err}", True
    lines = ["the grader's outside checks of the visible tests (these earn the points):"]
    ok = True
    for verdict in verdicts:
        if verdict.cell in hidden:
            continue
        ok &= verdict.verdict == "pass"
        lines.append(f"  {'PASS' if verdict.verdict == 'pass' else 'FAIL'} {verdict.cell}")
        if verdict.detail:
            lines.append(_indent(verdict.detail))
    return "\n".join(lines), ok


def run(args) -> int:
    root = course_root(args.root)
    try:
        chapter = registry.chapter_id(args.chapter, tree=root / "chapters")
    except KeyError as err:
        raise CommandError(err.args[0]) from None
    path = Path(args.notebook) if args.notebook else registry.notebook_path(root / "chapters", chapter)
    path = path.expanduser().resolve()
    nb = read_notebook(path)
    print(f"{chapter}: running {path} (at most {number_text(args.timeout)} s per cell) ...", flush=True)
    ran, timed_out, stopped = execute(nb, path.parent, args.timeout, args.kernel)
    text, ok = report(chapter, verdicts(nb, ran, timed_out, args.timeout), stopped)
    print(text)
    if not args.no_outside:
        print(f"{chapter}: running the grader's outside checks of your exported code ...", flush=True)
        outside, outside_ok = outside_preview(chapter, path)
        print(outside)
        ok = ok and outside_ok
    return 0 if ok else 1


def add_command(commands) -> None:
    p = commands.add_parser(
        "check",
        help="run your notebook like the grader and say which graded cells pass (exit 1 if any fails)",
        description="Run a chapter notebook top to bottom in a fresh kernel (in its own folder) and report, for "
        "every graded cell, pass or fail by nbgrader's rule: an error or any output on stderr (warnings too) "
        "fails the cell. Exit status 1 when a graded cell fails or the notebook cannot run, else 0.",
    )
    p.add_argument("chapter", metavar="CHAPTER", help="chapter id or module name (04a_attention or attention)")
    p.add_argument("--notebook", metavar="PATH", help="the notebook to check; default: ROOT/chapters/<id>/<id>.ipynb")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="time limit per cell (default: %(default)s)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel to run it in (default: %(default)s)")
    p.add_argument("--no-outside", action="store_true",
                   help="skip the grader's outside checks of your exported code (they earn the points)")
    add_root_argument(p)
    p.set_defaults(run=run)
