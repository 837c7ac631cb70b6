"""``python -m autograder book --edition reader|student|instructor``: the book in three editions, from one source.

- **reader** (``_build/html``): ``jupyter-book build .``: the instructor notebooks of ``solutions/``, executed
  (cached by cell content in ``_build/.jupyter_cache``), solutions folded under "show code", hidden tests never
  on a page. Every other edition starts by building this one: its execution cache is what they reuse, so no
  notebook runs twice.
- **student** (``_build/student/html``): the same pages with every solution cell replaced by the released stub
  (``chapters/``), the hidden-test cells left out, a box before each exercise saying which notebook to open, and
  no output under a stub or a visible test. Every other output (figures, printed numbers) is the reader
  edition's. It can be published while students do the exercises: no solution code is in its HTML or its search
  index (``tests/test_editions.py`` greps both for every solution line).
- **instructor** (``_build/instructor/html``): the reader edition plus the instructor's guide (``book/instructor/``:
  release, grading, the grader's guarantees, and every chapter's hidden tests: names, points, what they check,
  never their code).

Every chapter page, in every edition, has a box under its title (:mod:`autograder.book_pages`): the student
notebook to download (the released file, byte for byte), the exercise table with points, and the time the build
took to run the notebook.

Before the reader edition's ``jupyter-book build``, the chapter notebooks the cache lacks are executed ``--jobs``
at a time (default: one per core, at most 4), each in its own kernel in the notebook's folder, with the book's
timeout, exactly as Jupyter Book would execute them one after the other, and stored in its cache
(:func:`execute_into_cache`); the build then finds every chapter in the cache. A notebook that fails there is not
stored: the build runs it again and reports the failure as it always does.

The student and instructor editions are built from a generated source folder, ``_build/<edition>/src``: the
book's pages, a table of contents and a configuration for the edition, and the chapter notebooks as the reader
build executed them (read from its cache). Sphinx builds it with ``-W``; chapter notebooks are not executed
again, and the pages that are MyST notebooks (``book/background.md``) take their outputs from the same cache.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

from autograder.book_pages import EDITIONS, hidden_tests, hidden_tests_html
from autograder.course import CommandError
from autograder.gradesheet import add_root_argument, course_root, read_outline
from autograder.notebook_model import CourseNotebook
from llmcourse import registry

STRICT = ["-W", "-n", "--keep-going"]  # warnings are errors, as in the course's tests
GUIDE = ["book/instructor/release", "book/instructor/grading", "book/instructor/guarantees",
         "book/instructor/hidden_tests"]


def html_dir(out: Path, edition: str) -> Path:
    """Where an edition's site is written under ``out``."""
    return out / "_build" / ("html" if edition == "reader" else f"{edition}/html")


def _jupyter_book(source: Path, output: Path, log: Path) -> None:
    """``jupyter-book build source`` into ``output/_build``, its output kept in ``log``."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(source), "--path-output", str(output), *STRICT]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise CommandError(f"jupyter-book build of {source} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")


def read_yaml(path: Path) -> dict:
    """The book's ``_toc.yml`` or ``_config.yml``."""
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def reader_cache(out: Path):
    """The reader build's execution cache (``out/_build/.jupyter_cache``), where myst-nb keeps each run."""
    from jupyter_cache import get_cache

    return get_cache(str(cache_path(out)))


def cache_path(out: Path) -> Path:
    return out / "_build" / ".jupyter_cache"


def toc_chapters(toc: dict) -> list[str]:
    """The chapter ids the table of contents lists, in order."""
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    return [f.split("/")[1] for f in files
            if f.startswith("solutions/") and len(f.split("/")) == 3 and f.split("/")[1] == f.split("/")[2]]


# ---------------------------------------------------------------------------------------------------------------
# the chapter notebooks of an edition


def executed_notebook(cache, root: Path, chapter: str) -> tuple[nbformat.NotebookNode, float | None]:
    """The instructor notebook with the outputs of its run in the reader edition's cache, and that run's time."""
    nb = nbformat.read(registry.notebook_path(root / "solutions", chapter), as_version=4)
    try:
        record = cache.match_cache_notebook(nb)
        _, merged = cache.merge_match_into_notebook(nb)
    except KeyError:
        raise CommandError(f"the reader edition's execution cache has no run of {chapter} as it is now: build "
                           "the reader edition first (python -m autograder book --edition reader)") from None
    return merged, record.data.get("execution_seconds")


def your_turn(chapter: str, number: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(
        f":::{{admonition}} Your turn: Exercise {number}\n:class: tip\n"
        f"Open `chapters/{chapter}/{chapter}.ipynb` in Jupyter (the download link at the top of this page is the "
        "same file) and replace the `raise NotImplementedError(...)` line in the cell below with your code. The "
        "visible tests under it run in your notebook; the hidden tests run when it is graded.\n:::")


def student_notebook(executed: nbformat.NotebookNode, root: Path, chapter: str) -> nbformat.NotebookNode:
    """The executed instructor notebook with each solution replaced by the released stub, the hidden-test cells
    left out, a "your turn" box before each exercise, and the outputs of the stubs and of the visible tests
    dropped (they would be the reference's); every other output is the reference run's."""
    released = CourseNotebook.read(registry.notebook_path(root / "chapters", chapter)).by_id()
    numbers = {grade_id: e.number for grade_id, e in read_outline(root, chapter).exercises.items()}
    nb = copy.deepcopy(executed)
    cells = []
    for cell in nb.cells:
        model = CourseNotebook.from_json({"cells": [dict(cell)]}).cells[0]
        if model.has_hidden:
            continue
        if model.is_grade and cell.cell_type == "code":  # "tests passed" is the reference's run, not theirs
            cell.outputs, cell.execution_count = [], None
        if model.is_solution:
            stub = released.get(model.grade_id)
            if stub is None:
                raise CommandError(f"chapters/{chapter}: no released cell {model.grade_id!r}; run "
                                   f"python -m autograder release {chapter}")
            cell.source = stub.source
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            tags = [t for t in cell.metadata.get("tags", []) if t != "hide-input"]
            cell.metadata["tags"] = tags
            if not tags:
                del cell.metadata["tags"]
            if model.grade_id in numbers:
                cells.append(your_turn(chapter, numbers[model.grade_id]))
        cells.append(cell)
    nb.cells = cells
    return nb


def hidden_tests_page(root: Path, chapters: list[str]) -> str:
    """``book/instructor/hidden_tests.md`` of the instructor edition."""
    lines = ["# Hidden tests, chapter by chapter", "",
             "What each hidden test checks, in the words of its comments and failure messages, and its points. The "
             "code is in `solutions/`; the points come from the grader's outside checks of the same cases "
             "(`autograder/probes/`). Each chapter page of this edition shows its own list too.", ""]
    for chapter in chapters:
        nb = CourseNotebook.read(registry.notebook_path(root / "solutions", chapter))
        title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
                      if c.cell_type == "markdown" and c.source.startswith("# ")), chapter)
        tests = hidden_tests(root, chapter)
        lines += [f"## {title}", "", f"[The chapter](../../solutions/{chapter}/{chapter}.ipynb): "
                  f"{len(tests)} hidden tests, {sum(t['points'] for t in tests):g} points.", "",
                  "```{raw} html", hidden_tests_html(tests), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# the edition's source folder


def edition_source(root: Path, out: Path, edition: str) -> Path:
    """Write ``out/_build/<edition>/src``: pages, table of contents, configuration, executed notebooks."""
    src = out / "_build" / edition / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    shutil.copytree(root / "book", src / "book")
    toc = read_yaml(root / "_toc.yml")
    chapters = toc_chapters(toc)
    if edition == "instructor":
        toc["parts"].append({"caption": "Instructor's guide", "chapters": [{"file": f} for f in GUIDE]})
        (src / "book" / "instructor").mkdir(exist_ok=True)
        (src / "book" / "instructor" / "hidden_tests.md").write_text(hidden_tests_page(root, chapters),
                                                                     encoding="utf-8")
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True), encoding="utf-8")

    cache = reader_cache(out)
    page_data = {}
    for chapter in chapters:
        executed, seconds = executed_notebook(cache, root, chapter)
        nb = student_notebook(executed, root, chapter) if edition == "student" else executed
        path = registry.notebook_path(src / "solutions", chapter)
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
        page_data[chapter] = {"execution_s": seconds}
    (src / "course_pages.json").write_text(json.dumps(page_data, indent=1), encoding="utf-8")

    config = read_yaml(root / "_config.yml")
    config["title"] = f"{config['title']} ({edition} edition)"
    # the chapter notebooks hold the reader build's outputs; the MyST pages with code take theirs from its cache
    config["execute"].update(execute_notebooks="cache", cache=str(cache_path(out).resolve()),
                             exclude_patterns=["*.ipynb"])
    config["sphinx"].setdefault("config", {}).update(
        course_root=str(root), course_edition=edition, course_page_data=str((src / "course_pages.json").resolve()))
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return src


def default_jobs() -> int:
    """Notebooks executed at a time: one per core, at most 4 (each kernel holds a model and its data)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _stderr_to(log: str) -> None:
    """In a pool worker: its stderr, and its kernels', goes to ``log`` (the kernels' start-up chatter)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def _execute(path: str, timeout: int) -> tuple[str, float, str | None]:
    """Run one notebook as myst-nb's cache mode does (its folder as the working directory); the executed notebook
    as JSON, the seconds it took, and the traceback if it failed."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), allow_errors=False, timeout=timeout,
                                 meta_override=True)
    return nbformat.writes(nb), result.time, result.exc_string if result.err else None


def execute_into_cache(root: Path, out: Path, jobs: int, progress=print) -> dict[str, float]:
    """Execute, ``jobs`` at a time, the chapter notebooks whose current content the reader build's execution cache
    (``out/_build/.jupyter_cache``) has no run of, and store each successful run there as myst-nb would; ``{chapter:
    seconds}`` of the runs stored. Failed runs are not stored (the build runs them again and reports them)."""
    from jupyter_cache.base import CacheBundleIn

    timeout = int((read_yaml(root / "_config.yml").get("execute") or {}).get("timeout", 30))
    cache = reader_cache(out)
    todo = {}
    for chapter in toc_chapters(read_yaml(root / "_toc.yml")):
        path = registry.notebook_path(root / "solutions", chapter)
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo[chapter] = path
    stored = {}
    if not todo:
        return stored
    log = out / "_build" / "execute.log"
    progress(f"executing {len(todo)} notebooks, {jobs} at a time (kernels' stderr: {log}) ...")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, initializer=_stderr_to,
                                                initargs=(str(log),)) as pool:
        runs = {pool.submit(_execute, str(path), timeout): chapter for chapter, path in todo.items()}
        for run in concurrent.futures.as_completed(runs):
            chapter = runs[run]
            text, seconds, error = run.result()
            if error:
                progress(f"  {chapter}: failed after {seconds:.1f} s (the build will run it again and report it)")
                continue
            record = cache.add_nb_to_project(str(todo[chapter]))
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(text, as_version=4), record.uri,
                                                      data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            stored[chapter] = seconds
            progress(f"  {chapter}: {seconds:.1f} s")
    return stored


def build(editions: list[str], root: Path = registry.COURSE_ROOT, out: Path | None = None,
          progress=print, jobs: int = 1) -> dict[str, Path]:
    """Build ``editions`` of the book of ``root`` into ``out`` (default ``root``); ``{edition: html folder}``.
    With ``jobs`` > 1 the chapter notebooks are executed that many at a time first (:func:`execute_into_cache`)."""
    root, out = Path(root).resolve(), Path(out or root).resolve()
    built = {}
    started = time.monotonic()
    if jobs > 1:
        execute_into_cache(root, out, jobs, progress)
    progress(f"reader edition: jupyter-book build {root} ...")
    _jupyter_book(root, out, out / "_build" / "reader.log")
    built["reader"] = html_dir(out, "reader")
    progress(f"reader edition: {built['reader']} ({time.monotonic() - started:.0f} s)")
    for edition in [e for e in EDITIONS if e in editions and e != "reader"]:
        started = time.monotonic()
        src = edition_source(root, out, edition)
        work = out / "_build" / edition / "work"
        _jupyter_book(src, work, out / "_build" / edition / "build.log")
        target = html_dir(out, edition)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work / "_build" / "html", target)
        built[edition] = target
        progress(f"{edition} edition: {target} ({time.monotonic() - started:.0f} s)")
    return built


def run(args) -> int:
    editions = list(EDITIONS) if "all" in args.edition else args.edition
    root = course_root(args.root)
    if args.jobs < 1:
        raise CommandError(f"--jobs should be at least 1, not {args.jobs}")
    build(editions, root, Path(args.path_output).resolve() if args.path_output else root, jobs=args.jobs)
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "book",
        help="build the book: the reader, student or instructor edition",
        description="Build the book. reader (_build/html): today's book, the instructor notebooks executed, "
        "solutions folded. student (_build/student/html): every solution replaced by the exercise stub, safe to "
        "publish while students work. instructor (_build/instructor/html): the reader edition plus the "
        "instructor's guide and every chapter's hidden-test summary. The reader edition is built first; the "
        "others reuse its executed notebooks (nothing runs twice).",
    )
    p.add_argument("--edition", nargs="+", choices=[*EDITIONS, "all"], default=["reader"],
                   help="which editions to build (default: reader); each builds the reader edition first")
    p.add_argument("--path-output", metavar="DIR",
                   help="write the build under DIR/_build instead of ROOT/_build (as jupyter-book's option)")
    p.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                   help="execute N chapter notebooks at a time before the reader build (default: one per core, at "
                        "most 4; 1: Jupyter Book executes them one after the other)")
    add_root_argument(p)
    p.set_defaults(run=run)
