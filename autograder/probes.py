"""Outside verdicts: the key exercises, checked in a process whose results cannot be faked from inside the kernel.

nbgrader decides whether a test passed by looking at the kernel's outputs, and code in the kernel can patch
anything the tests use (``torch.allclose``, the check helpers, IPython's error display). So for the key exercises
the grader also runs each probe below twice: on the student's exported module, in a separate sandboxed process
that returns only plain arrays (``.npz`` read with ``allow_pickle=False``); and on the course's public fallback,
in the grader. The grader compares. An exercise whose in-kernel tests passed but whose probe disagrees is flagged.

This file runs inside the sandbox (``python -m autograder.probes MODULE OUT``): it imports torch and numpy only.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Probe:
    exercise: str  # grade_id of the solution cell
    cells: tuple[str, ...]  # the graded cells whose in-kernel verdict this probe cross-checks
    run: Callable  # module -> dict of name -> tensor
    atol: float = 1e-5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _softmax(m):
    x = torch.randn(3, 5, 7, generator=_gen(1)) * 4
    big = torch.tensor([[1e4, 1e4 + 1.0, 1e4 - 2.0], [-3.0, 0.0, 3.0]])
    return {"last": m.softmax(x, dim=-1), "dim1": m.softmax(x, dim=1), "large": m.softmax(big, dim=-1)}


def _attention(m):
    g = _gen(2)
    q, k, v = (torch.randn(2, 3, 6, 16, generator=g) for _ in range(3))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    return {"plain": m.scaled_dot_product_attention(q, k, v),
            "causal": m.scaled_dot_product_attention(q, k, v, causal),
            "float": m.scaled_dot_product_attention(q, k, v, torch.randn(6, 6, generator=g))}


def _causal_mask(m):
    return {f"T{T}": m.causal_mask(T).to(torch.int64) for T in (1, 4, 9)}


PROBES: dict[str, list[Probe]] = {
    "attention": [
        Probe("softmax", ("test_softmax", "test_softmax_hidden"), _softmax),
        Probe("scaled_dot_product_attention", ("test_sdpa", "test_sdpa_hidden"), _attention),
        Probe("causal_mask", ("test_causal_mask", "test_causal_mask_hidden"), _causal_mask, atol=0.0),
    ],
}


def run_probes(module, probes: list[Probe]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Run each probe on ``module``: arrays named ``<exercise>/<output>``, and the errors by exercise."""
    arrays, errors = {}, {}
    for probe in probes:
        try:
            with torch.no_grad():
                outputs = probe.run(module)
            for name, value in outputs.items():
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"{name}: returned {type(value).__name__}, not a tensor")
                arrays[f"{probe.exercise}/{name}"] = value.detach().cpu().numpy()
        except Exception as err:  # noqa: BLE001 - the student's code may raise anything
            errors[probe.exercise] = f"{type(err).__name__}: {err}"[:500]
    return arrays, errors


def compare(probe: Probe, theirs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
            error: str | None) -> tuple[str, str]:
    """("pass" | "fail" | "error", detail) for one probe, from plain arrays only."""
    if error:
        return "error", error
    for key, expected in reference.items():
        if not key.startswith(probe.exercise + "/"):
            continue
        got = theirs.get(key)
        name = key.split("/", 1)[1]
        if got is None:
            return "fail", f"{name}: no output"
        if got.shape != expected.shape:
            return "fail", f"{name}: shape {got.shape}, expected {expected.shape}"
        if got.dtype.kind not in "biuf":
            return "fail", f"{name}: dtype {got.dtype} is not numeric"
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        diff = np.where(np.isnan(diff), np.inf, diff)
        if diff.size and float(diff.max()) > probe.atol + 1e-5 * float(np.abs(expected).max(initial=0.0)):
            return "fail", f"{name}: max abs error {float(diff.max()):.3g}"
    return "pass", ""


def main(argv: list[str]) -> int:
    """In the sandbox: import the student's module (LLMCOURSE_SOURCE says where) and save the probes' outputs."""
    module_name, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    try:
        module = importlib.import_module(f"llmcourse.chapters.{module_name}")
    except BaseException as err:  # noqa: BLE001
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()[:500]
        (out / "errors.json").write_text(json.dumps({p.exercise: f"import failed: {detail}"
                                                     for p in PROBES[module_name]}))
        return 0
    arrays, errors = run_probes(module, PROBES[module_name])
    np.savez(out / "outputs.npz", **arrays)
    (out / "errors.json").write_text(json.dumps(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
