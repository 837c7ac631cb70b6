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


def _config():
    """A small GPTConfig from chapter 4b (its fallback, when the grader runs a later chapter)."""
    from llmcourse.chapters.multi_head_attention import GPTConfig

    return GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=4, n_embd=32)


def _with_weights(module, seed: int):
    """The module in eval mode with deterministic weights, set by parameter name (so both sides agree)."""
    g = _gen(seed)
    state = module.state_dict()
    for name in sorted(state):
        if state[name].is_floating_point():
            state[name] = torch.randn(state[name].shape, generator=g) * 0.3
    module.load_state_dict(state)
    return module.eval()


def _x(seed: int = 3):
    return torch.randn(2, 7, 32, generator=_gen(seed))


def _split_heads(m):
    return {"split": m.split_heads(_x(), 4)}


def _merge_heads(m):
    return {"merge": m.merge_heads(torch.randn(2, 4, 7, 8, generator=_gen(9)))}


def _self_attention(m):
    return {"out": _with_weights(m.CausalSelfAttention(_config()), 4)(_x())}


def _gelu(m):
    return {"tanh": m.gelu(torch.linspace(-8, 8, 101))}


def _gelu_exact(m):
    return {"exact": m.gelu_exact(torch.linspace(-8, 8, 101))}


def _mlp(m):
    return {"out": _with_weights(m.MLP(_config()), 5)(_x())}


def _layernorm(m):
    return {"bias": _with_weights(m.LayerNorm(32), 6)(_x() * 4 + 1),
            "no_bias": _with_weights(m.LayerNorm(32, bias=False), 7)(_x())}


def _block(m):
    return {"out": _with_weights(m.Block(_config()), 8)(_x())}


PROBES: dict[str, list[Probe]] = {
    "attention": [
        Probe("softmax", ("test_softmax", "test_softmax_hidden"), _softmax),
        Probe("scaled_dot_product_attention", ("test_sdpa", "test_sdpa_hidden"), _attention),
        Probe("causal_mask", ("test_causal_mask", "test_causal_mask_hidden"), _causal_mask, atol=0.0),
    ],
    "multi_head_attention": [
        Probe("split_heads", ("test_split_heads", "test_split_heads_hidden"), _split_heads, atol=0.0),
        Probe("merge_heads", ("test_merge_heads", "test_merge_heads_hidden"), _merge_heads, atol=0.0),
        Probe("causal_self_attention", ("test_causal_self_attention", "test_causal_self_attention_hidden"),
              _self_attention, atol=1e-4),
    ],
    "feed_forward": [
        Probe("gelu_exact", ("test_gelu_exact", "test_gelu_exact_hidden"), _gelu_exact),
        Probe("gelu", ("test_gelu", "test_gelu_hidden"), _gelu),
        Probe("mlp", ("test_mlp", "test_mlp_hidden"), _mlp, atol=1e-4),
    ],
    "residual_and_layernorm": [
        Probe("LayerNorm", ("test_layernorm", "test_layernorm_hidden"), _layernorm, atol=1e-4),
        Probe("Block", ("test_block", "test_block_hidden"), _block, atol=1e-4),
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
