"""The outside checks (:mod:`autograder.probes`) on a notebook, in this process, in milliseconds.

:func:`outside_failed` runs a chapter's probes on the exported cells of its instructor notebook with some solution
cells replaced (a wrong answer), as the grader's sandboxed probe process would, round-trips every result through
the same files (safetensors + JSON), and judges it against the reference computed by the grader's own function
(a separate process, every chapter on its fallback). The real sandboxed run is exercised in test_grading.py.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import tempfile
from pathlib import Path

import nbformat

from autograder.grading import earlier_modules
from autograder.outside import compute_reference, verdicts
from autograder.probes import chapter_probes, load_output, run_probe, save_output
from llmcourse import registry
from llmcourse.chapters import reload_all


@functools.cache
def reference(module: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return compute_reference(module, Path(tmp))


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def outside_verdicts(notebook: Path, replace: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """{graded cell: (verdict, detail)} of the outside checks on ``notebook`` with solution cells replaced."""
    notebook = Path(notebook)
    chapter = notebook.stem
    module = registry.module_name(chapter)
    probes = chapter_probes(module)
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if replace and grade_id in replace:
            cell.source = replace[grade_id]
    with tempfile.TemporaryDirectory() as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "out"
        (tree / chapter).mkdir(parents=True)
        out.mkdir()
        nbformat.write(nb, tree / chapter / f"{chapter}.ipynb")
        theirs = {}
        with _env(LLMCOURSE_SOURCE=str(tree), LLMCOURSE_FALLBACK=",".join(earlier_modules(chapter)) or ""):
            reload_all()
            try:
                try:
                    mod, error = importlib.import_module(f"llmcourse.chapters.{module}"), None
                except Exception as err:  # noqa: BLE001
                    mod, error = None, f"import failed: {type(err).__name__}: {err}"
                for probe in probes:
                    values, problem = (None, error) if mod is None else run_probe(mod, probe)
                    save_output(out, probe.key, values, problem, 0.0)
                    theirs[probe.key] = load_output(out, probe.key)
            finally:
                reload_all()
        return {v.cell: (v.verdict, v.detail) for v in verdicts(probes, theirs, reference(module))}


def outside_failed(notebook: Path, replace: dict[str, str] | None = None) -> set[str]:
    """The graded cells whose outside check fails."""
    return {cell for cell, (verdict, _) in outside_verdicts(notebook, replace).items() if verdict != "pass"}
