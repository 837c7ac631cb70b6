"""autograder.probes: every graded cell of every chapter has an outside check; the instructor's code passes them
all, the released stubs fail them all, and the comparison says what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT
from probe_harness import outside_verdicts, reference

from autograder.probes import Probe, chapter_probes, close, equal, judge, tokens
from llmcourse import registry
from llmcourse.checks import OWN_WORK

CHAPTERS = registry.chapters_in(ROOT / "solutions")


def graded_cells(chapter: str) -> set[str]:
    nb = json.loads((ROOT / "solutions" / chapter / f"{chapter}.ipynb").read_text())
    return {c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("grade")}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_graded_cell_has_an_outside_check(chapter):
    probes = chapter_probes(registry.module_name(chapter))
    cells = {p.cell for p in probes}
    assert cells == graded_cells(chapter), (f"graded cells without a probe: {sorted(graded_cells(chapter) - cells)}; "
                                            f"probes of no graded cell: {sorted(cells - graded_cells(chapter))}")
    assert len({p.key for p in probes}) == len(probes), "two probes with the same key"
    for probe in probes:
        assert set(probe.forbid) <= set(OWN_WORK), probe.key


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solution_passes_and_stub_fails_every_outside_check(chapter):
    solution = outside_verdicts(ROOT / "solutions" / chapter / f"{chapter}.ipynb")
    assert {c: v for c, v in solution.items() if v[0] != "pass"} == {}
    stub = outside_verdicts(ROOT / "chapters" / chapter / f"{chapter}.ipynb")
    assert {c for c, v in stub.items() if v[0] == "pass"} == set(), "a stub passes an outside check"


def test_reference_is_independent_of_folder_and_settings(monkeypatch, tmp_path):
    """The reference is computed with every chapter on its fallback, whatever the caller's settings."""
    from autograder.outside import compute_reference

    monkeypatch.setenv("LLMCOURSE_SOURCE", "chapters")  # the stubs: they would raise NotImplementedError
    monkeypatch.chdir(tmp_path)
    got = compute_reference("residual_and_layernorm", tmp_path / "ref")
    expected = reference("residual_and_layernorm")
    assert got.keys() == expected.keys()
    for key in got:
        for name, value in expected[key]["values"].items():
            assert np.array_equal(np.asarray(got[key]["values"][name]), np.asarray(value)), (key, name)


def test_comparators_diagnose():
    assert close()(np.ones((2, 3)), np.ones((2, 3))) is None
    assert "shape (3, 2), expected (2, 3)" in close()(np.ones((3, 2)), np.ones((2, 3)))
    wrong = np.ones((2, 3))
    wrong[1, 2] = 1.5
    assert "max abs error 0.5 at index (1, 2): got 1.5, expected 1" in close()(wrong, np.ones((2, 3)))
    assert close()(np.full((2, 3), np.nan), np.ones((2, 3))) is not None
    assert "dtype float32, expected float64" in close()(np.ones(3, np.float32), np.ones(3))
    assert close()(np.array(["a", "b"]), np.ones(2)) is not None
    assert close()(np.array([np.inf, 1.0]), np.array([np.inf, 1.0])) is None
    assert "first wrong token at position 2: got 9, expected 3" in tokens()([1, 2, 9], [1, 2, 3])
    assert "got 2 tokens, expected 3" in tokens()([1, 2], [1, 2, 3])
    assert "dtype int64, expected bool" in equal()(np.ones(3, np.int64), np.ones(3, bool))
    assert equal()({"a": [1, 2]}, {"a": [1, 2]}) is None
    assert equal()("abc", "abd") is not None
    assert equal()(True, 1) is not None


def test_judge_reports_errors_missing_outputs_and_wrong_values():
    probe = Probe("test_x", lambda m: {}, close())
    ref = {"values": {"out": np.ones(2)}, "error": None}
    assert judge(probe, {"values": {"out": np.ones(2)}, "error": None}, ref) == ("pass", "")
    assert judge(probe, None, ref)[0] == "error"
    assert judge(probe, {"values": {}, "error": "NameError: x"}, ref) == ("error", "NameError: x")
    assert judge(probe, {"values": {}, "error": None}, ref) == ("fail", "out: no result")
    assert judge(probe, {"values": {"out": np.zeros(2)}, "error": None}, ref)[0] == "fail"
