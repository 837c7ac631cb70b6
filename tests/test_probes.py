"""autograder.probes: every outside check names real cells, and the solutions pass it while wrong answers fail."""

from __future__ import annotations

import importlib
import json

import pytest
from conftest import ROOT

from autograder import probes
from autograder.grading import earlier_modules
from llmcourse import registry


@pytest.mark.parametrize("module", list(probes.PROBES))
def test_probes_name_the_chapter_cells(module):
    chapter = registry.chapter_id(module)
    nb = json.loads((ROOT / "solutions" / chapter / f"{chapter}.ipynb").read_text())
    meta = [c.get("metadata", {}).get("nbgrader", {}) for c in nb["cells"]]
    solutions = {m["grade_id"] for m in meta if m.get("solution")}
    graded = {m["grade_id"] for m in meta if m.get("grade")}
    for probe in probes.PROBES[module]:
        assert probe.exercise in solutions, f"{module}: no exercise {probe.exercise}"
        assert set(probe.cells) <= graded, f"{module}: {set(probe.cells) - graded} are not graded cells"


@pytest.mark.parametrize("module", list(probes.PROBES))
def test_solution_passes_and_reference_runs(module, monkeypatch):
    """The instructor's module, with earlier chapters on their fallbacks as in grading, agrees with the fallback."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.setenv("LLMCOURSE_FALLBACK", ",".join(earlier_modules(registry.chapter_id(module))))
    theirs, errors = probes.run_probes(importlib.import_module(f"llmcourse.chapters.{module}"), probes.PROBES[module])
    reference, ref_errors = probes.run_probes(importlib.import_module(f"llmcourse.fallbacks.{module}"),
                                              probes.PROBES[module])
    assert not errors and not ref_errors
    for probe in probes.PROBES[module]:
        assert probes.compare(probe, theirs, reference, None) == ("pass", ""), probe.exercise


def test_compare_rejects_wrong_shapes_values_and_types():
    import numpy as np

    probe = probes.Probe("f", ("t",), lambda m: {})
    ref = {"f/out": np.ones((2, 3))}
    assert probes.compare(probe, {"f/out": np.ones((2, 3))}, ref, None)[0] == "pass"
    assert probes.compare(probe, {"f/out": np.ones((3, 2))}, ref, None)[0] == "fail"
    assert probes.compare(probe, {"f/out": np.ones((2, 3)) * 1.1}, ref, None)[0] == "fail"
    assert probes.compare(probe, {"f/out": np.full((2, 3), np.nan)}, ref, None)[0] == "fail"
    assert probes.compare(probe, {"f/out": np.array(["a"] * 6).reshape(2, 3)}, ref, None)[0] == "fail"
    assert probes.compare(probe, {}, ref, None)[0] == "fail"
    assert probes.compare(probe, {}, ref, "NameError: x")[0] == "error"
