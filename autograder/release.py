"""``python -m autograder release``: instructor notebooks (``solutions/``) -> student notebooks (``chapters/``).

For each chapter:

1. **Book tags** on the instructor notebook, which the book renders: a solution cell gets ``hide-input``
   (collapsed behind "show code"), a cell with hidden tests gets ``remove-cell`` (absent from the page).
   Outputs are stripped, so notebooks are committed without them. A cell that mixes visible tests with hidden
   ones cannot be tagged correctly and is an error: put the hidden tests in a cell of their own.
2. **nbgrader** ``generate_assignment --force``: solution bodies become stubs, hidden tests disappear.
3. **Stubs name their exercise**: nbgrader's ``raise NotImplementedError()`` becomes
   ``raise NotImplementedError("Exercise 4a.1: write softmax ...")``, numbered from the nearest
   ``Exercise 4a.1`` heading above the cell.

``--check`` changes nothing: it fails when a notebook lacks its tags or has outputs, or when ``chapters/`` is
not exactly what release would write.
"""

from __future__ import annotations

import ast
import filecmp
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
from nbgrader.utils import compute_checksum, is_solution

from autograder.course import CommandError, run_nbgrader
from autograder.notebook_model import BEGIN_HIDDEN, without_hidden
from llmcourse import registry
from llmcourse.notebook import is_export

HIDE = "hide-input"
REMOVE = "remove-cell"
EXERCISE_RE = re.compile(r"Exercise\s+(\d+[a-z]?\.\d+)")
STUB_RE = re.compile(r"^(?P<indent>[ \t]*)raise NotImplementedError\(\)[ \t]*$", re.MULTILINE)
VOLATILE_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def _visible_code_outside_hidden(source: str) -> list[str]:
    """Lines of code (not comments or blank) outside the hidden-test block of a cell."""
    return [line for line in without_hidden(source).splitlines()
            if line.strip() and not line.strip().startswith("#")]


def normalize_source(nb, where: str) -> nbformat.NotebookNode:
    """The instructor notebook with its book tags applied and its outputs removed (a new notebook)."""
    nb = nbformat.from_dict(nb)
    for index, cell in enumerate(nb.cells, start=1):
        tags = list(cell.metadata.get("tags", []))
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            for key in VOLATILE_METADATA:
                cell.metadata.pop(key, None)
            if is_solution(cell) and HIDE not in tags:
                tags.append(HIDE)
            if BEGIN_HIDDEN in cell.source:
                visible = _visible_code_outside_hidden(cell.source)
                if visible:
                    raise CommandError(
                        f"{where}, cell {index}: it mixes visible tests ({visible[0].strip()!r}) with hidden "
                        "tests, so the book would show the hidden ones. Move the hidden tests into a cell of "
                        "their own (a comment line may stay outside the hidden block)."
                    )
                if REMOVE not in tags:
                    tags.append(REMOVE)
        if tags:
            cell.metadata["tags"] = tags
    return nb


def _enclosing_function(source: str, lineno: int) -> str | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    best = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= lineno <= node.end_lineno:
            if best is None or node.lineno > best.lineno:
                best = node
    return best.name if best else None


def name_stubs(nb, chapter: str, where: str) -> nbformat.NotebookNode:
    """Replace nbgrader's bare stubs with ones that say which exercise to do (a new notebook)."""
    nb = nbformat.from_dict(nb)
    number, module = registry.chapter_number(chapter), registry.module_name(chapter)
    exercise = None
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "markdown":
            found = EXERCISE_RE.findall(cell.source)
            exercise = found[-1] if found else exercise
            continue
        if cell.cell_type != "code" or not is_solution(cell) or not STUB_RE.search(cell.source):
            continue
        if exercise is None or not exercise.startswith(number + "."):
            raise CommandError(
                f"{where}, cell {index}: a solution cell needs a markdown heading 'Exercise {number}.N' above it "
                f"(found {'none' if exercise is None else 'Exercise ' + exercise})"
            )

        export = is_export(cell.source)

        def stub(match, source=cell.source, exercise=exercise, export=export):
            lineno = source.count("\n", 0, match.start()) + 1
            what = _enclosing_function(source, lineno)
            text = f"Exercise {exercise}: write {what} here" if what else f"Exercise {exercise}: write your code here"
            if export:
                text += f" (stuck? later chapters can use the course's version: LLMCOURSE_FALLBACK={module})"
            return f'{match["indent"]}raise NotImplementedError("{text}")'

        cell.source = STUB_RE.sub(stub, cell.source)
        cell.metadata.nbgrader["checksum"] = compute_checksum(cell)  # nbgrader's checksum of the new source
    return nb


def _write_if_changed(nb, path: Path) -> bool:
    text = nbformat.writes(nb) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def _generate(chapter: str, root: Path) -> None:
    run_nbgrader(["generate_assignment", chapter, "--force", "--no-db"], root=root)
    released = registry.notebook_path(root / "chapters", chapter)
    nb = nbformat.read(released, as_version=4)
    _write_if_changed(name_stubs(nb, chapter, str(released)), released)


def _diff_trees(expected: Path, actual: Path) -> list[str]:
    """Files that differ between two folders, as relative paths."""
    if not actual.is_dir():
        return [f"{actual} is missing"]
    cmp = filecmp.dircmp(expected, actual)
    problems = []

    def walk(c, prefix=""):
        problems.extend(f"{prefix}{n}: not in chapters/ (release would write it)" for n in c.left_only)
        problems.extend(f"{prefix}{n}: in chapters/ but release would not write it" for n in c.right_only)
        for name in c.common_files:
            if not filecmp.cmp(Path(c.left) / name, Path(c.right) / name, shallow=False):
                problems.append(f"{prefix}{name}: differs from what release writes")
        for name, sub in c.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(cmp)
    return problems


def release(chapters: list[str] | None = None, root: Path = registry.COURSE_ROOT, check: bool = False,
            progress=None) -> list[str]:
    """Release the chapters (all in ``solutions/`` by default). With ``check``, change nothing and return the
    problems found (an empty list: everything is in sync)."""
    root = Path(root).resolve()
    solutions = root / "solutions"
    if chapters:
        try:
            ids = [registry.chapter_id(name, solutions) for name in chapters]
        except KeyError as err:
            raise CommandError(err.args[0]) from None
    else:
        ids = registry.chapters_in(solutions)
    if not ids:
        raise CommandError(f"no chapter notebooks in {solutions}")
    problems = []
    for chapter in ids:
        if progress:
            progress(chapter)
        source = registry.notebook_path(solutions, chapter)
        if not source.is_file():
            raise CommandError(f"{chapter}: no instructor notebook at {source}")
        where = str(source.relative_to(root))
        nb = normalize_source(nbformat.read(source, as_version=4), where)
        if not check:
            _write_if_changed(nb, source)
            _generate(chapter, root)
            continue
        if source.read_text(encoding="utf-8") != nbformat.writes(nb) + "\n":
            problems.append(f"{where}: book tags missing or outputs present; run python -m autograder release")
        with tempfile.TemporaryDirectory(prefix="release-check-") as tmp:
            tmp = Path(tmp)
            shutil.copytree(source.parent, tmp / "solutions" / chapter)
            _write_if_changed(nb, registry.notebook_path(tmp / "solutions", chapter))
            _generate(chapter, tmp)
            problems += [f"chapters/{chapter}/{p}" for p in
                         _diff_trees(tmp / "chapters" / chapter, root / "chapters" / chapter)]
    return problems
