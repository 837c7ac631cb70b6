"""Outside checks of chapter 8a (scaling laws): ``non_embedding_params``, ``power_law`` and ``fit_power_law``.

Each probe runs its notebook test on the same inputs. Counts and law values are compared with the course's fallback
exactly (counts) or to 1e-12 (float64 values, dtype included). Fits are judged as the notebook judges them: on
exact data of a known law, the fitted parameters within 1% of that law's (the reference is not used); on noisy data,
the squared error of log L of the student's fit at most 0.1% above the reference fit's (the fallback here; an L-BFGS
started at the true law in the notebook; both find the same minimum, checked in ``tests/test_08a_scaling.py``).
The fit runs with SciPy unavailable on the student's side, and with gradients on or off around it, as in the
notebook.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from autograder.probes import Probe, close, equal
from autograder.probes import raised as _raises

# ---------------------------------------------------------------------------------------------------------------
# helpers (run in the probe process, on both sides)


def _config(n_layer, n_head, n_embd, bias=True, block_size=16, vocab_size=37):
    from llmcourse.chapters.multi_head_attention import GPTConfig

    return GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                     bias=bias)



def _without_scipy(action):
    """``action()`` with SciPy unavailable (an import of it raises ImportError)."""
    saved = {k: v for k, v in sys.modules.items() if k == "scipy" or k.startswith("scipy.")}
    for k in saved:
        del sys.modules[k]
    sys.modules["scipy"] = None
    try:
        return action()
    finally:
        del sys.modules["scipy"]
        sys.modules.update(saved)


def _fitted(values) -> list:
    """A fit's result as plain data: [E, A, alpha] when it is a tuple of three floats, else a description."""
    if isinstance(values, tuple) and len(values) == 3 and all(type(v) is float for v in values):
        return list(values)
    return f"not a tuple of three floats: {values!r:.80}"


def _log_sse(params, n, loss) -> float:
    E, A, alpha = params
    n, loss = np.asarray(n, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    with np.errstate(all="ignore"):
        value = float(np.sum((np.log(E + A * n ** -alpha) - np.log(loss)) ** 2))
    return value if math.isfinite(value) else math.inf


# ---------------------------------------------------------------------------------------------------------------
# 8a.1 non_embedding_params


def params_visible(m):
    tiny = _config(2, 4, 64, block_size=64, vocab_size=512)
    n = m.non_embedding_params(tiny)
    return {"course_tiny": n, "is_int": type(n) is int,
            "small": m.non_embedding_params(_config(1, 2, 8, block_size=8, vocab_size=10))}


HIDDEN_CONFIGS = [(1, 1, 4, True), (3, 4, 24, True), (2, 2, 16, False), (4, 4, 32, False), (6, 6, 48, True)]


def params_hidden(m):
    from llmcourse.chapters.multi_head_attention import GPTConfig

    out = {}
    for L, H, C, bias in HIDDEN_CONFIGS:
        n = m.non_embedding_params(_config(L, H, C, bias))
        out[f"{L}x{C}/{bias}"] = [n, type(n) is int]
    out["gpt2"] = m.non_embedding_params(GPTConfig(n_layer=12, n_head=12, n_embd=768))
    out["gpt3"] = m.non_embedding_params(GPTConfig(n_layer=96, n_head=96, n_embd=12288))
    out["refused"] = [_raises(lambda: m.non_embedding_params("course-tiny")),
                      _raises(lambda: m.non_embedding_params(dict(n_layer=2, n_embd=64, bias=True)))]
    return out


# ---------------------------------------------------------------------------------------------------------------
# 8a.2 power_law


def _law_value(value) -> dict:
    if not isinstance(value, torch.Tensor):
        return {"dtype": type(value).__name__, "value": float("nan")}
    return {"dtype": str(value.dtype), "value": value.detach().double()}


def law_visible(m):
    a = _law_value(m.power_law(torch.tensor([1e4, 1e6]), 0.7, 30.0, 0.5))
    b = _law_value(m.power_law(100, 1.0, 10.0, 1.0))
    return {"dtype": a["dtype"], "values": a["value"], "scalar_dtype": b["dtype"], "scalar": b["value"]}


SIZES = [12768, 39520, 100096, 335712, 793344, 85056000]
HIDDEN_LAWS = [(0.69, 40.0, 0.4), (1.69, 406.4, 0.34), (0.0, 3.0, 0.076), (2.5, 0.5, 1.5)]


def law_hidden(m):
    out = {}
    for k, (E, A, alpha) in enumerate(HIDDEN_LAWS):
        for kind, n in (("int64", torch.tensor(SIZES)), ("list", SIZES),
                        ("float32", torch.tensor(SIZES, dtype=torch.float32))):
            value = _law_value(m.power_law(n, E, A, alpha))
            out[f"dtype/{k}/{kind}"] = value["dtype"]
            out[f"value/{k}/{kind}"] = value["value"]
    grid = _law_value(m.power_law(torch.tensor([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]]), 0.5, 2.0, 1.0))
    out["grid_dtype"], out["grid"] = grid["dtype"], grid["value"]
    out["refused"] = [_raises(lambda bad=bad: m.power_law(bad, 0.7, 1.0, 0.5))
                      for bad in ([100.0, 0.0], [-5.0], [float("nan")], "1e4")]
    return out


LAW_VISIBLE_COMPARE = {"dtype": equal(), "scalar_dtype": equal(), "values": close(1e-12, 1e-12),
                       "scalar": close(1e-12, 1e-12)}


def _law_hidden_compare():
    compare = {"grid_dtype": equal(), "grid": close(1e-14, 1e-14), "refused": equal()}
    for k in range(len(HIDDEN_LAWS)):
        for kind in ("int64", "list", "float32"):
            compare[f"dtype/{k}/{kind}"] = equal()
            compare[f"value/{k}/{kind}"] = close(1e-13, 1e-13)
    return compare


# ---------------------------------------------------------------------------------------------------------------
# 8a.3 fit_power_law


def _recovers(true):
    """The student's [E, A, alpha] within 1% of the law that made the (exact) data; the reference is not used."""

    def compare(got, expected):
        if not isinstance(got, list):
            return str(got)
        for name, value, want in zip(("E", "A", "alpha"), got, true):
            if not abs(value - want) <= 0.01 * want:
                return f"on exact data of E, A, alpha = {true}: {name} = {value:.5g} (1% allowed)"
        return None

    return compare


def _as_good_as_reference(got, expected):
    """[student's squared error of log L, ...] at most 0.1% (+1e-12) above the reference fit's, point by point."""
    if not isinstance(got, list) or len(got) != len(expected):
        return f"got {got!r:.60}, expected {len(expected)} errors"
    for k, (g, e) in enumerate(zip(got, expected)):
        if g is None or not isinstance(g, (int, float)) or not g <= e * (1 + 1e-3) + 1e-12:
            return f"noisy data set {k}: squared error of log L {g!r:.8}, the reference fit reaches {e:.6g}"
    return None


VISIBLE_TRUE = (0.69, 40.0, 0.4)


def fit_visible(m):
    sizes = torch.logspace(4, 6, 5, dtype=torch.float64)
    losses = VISIBLE_TRUE[0] + VISIBLE_TRUE[1] * sizes ** -VISIBLE_TRUE[2]
    with torch.enable_grad():
        fitted = _fitted(m.fit_power_law(sizes, losses))
        refused = _raises(lambda: m.fit_power_law([1e4, 1e5], [2.0, 1.0]))
    return {"fitted": fitted, "two_points": refused}


EXACT_CASES = [((0.3, 5.0, 0.2), np.logspace(3, 7, 6)), ((2.0, 1000.0, 0.7), np.logspace(4, 6, 4)),
               ((0.69, 40.0, 0.4), np.array([1e4, 3e4, 1e5])),
               ((0.7, 12.0, 0.25), np.array([12768.0, 39520, 100096, 335712, 793344]))]
NOISY_CASES = [((0.7, 20.0, 0.35), np.logspace(4, 6, 6), 0.01), ((0.69, 60.0, 0.5), np.logspace(4, 6, 5), 0.02),
               ((1.2, 8.0, 0.3), np.logspace(3, 8, 10), 0.01)]
BAD_FITS = [(([1e4, 1e5], [2.0, 1.0]), {}), (([1e4, 1e5, 1e6], [2.0, 1.0]), {}),
            (([1e4, -1e5, 1e6], [2.0, 1.5, 1.0]), {}), (([1e4, 1e5, 1e6], [2.0, 0.0, 1.0]), {}),
            (([1e4, 1e5, 1e6], [2.0, float("inf"), 1.0]), {}), (([1e4, 1e5, 1e6], [2.0, 1.5, 1.0], 0), {})]


def fit_hidden(m):
    out = {"uses_scipy": "scipy" in getattr(getattr(m.fit_power_law, "__code__", None), "co_names", ())}
    for k, (true, n) in enumerate(EXACT_CASES):
        loss = true[0] + true[1] * n ** -true[2]
        args = (torch.tensor(n), torch.tensor(loss)) if k < 2 else (n.tolist(), loss.tolist())
        with torch.set_grad_enabled(k % 2 == 0):
            out[f"exact/{k}"] = _fitted(_without_scipy(lambda args=args: m.fit_power_law(*args)))
    rng = np.random.default_rng(83)
    errors, unchanged = [], []
    for true, n, noise in NOISY_CASES:
        loss = (true[0] + true[1] * n ** -true[2]) * np.exp(rng.normal(0.0, noise, len(n)))
        before = torch.tensor(loss)
        with torch.enable_grad():
            fitted = _fitted(_without_scipy(lambda n=n, before=before: m.fit_power_law(n.tolist(), before)))
        errors.append(_log_sse(fitted, n, loss) if isinstance(fitted, list) else None)
        unchanged.append(bool(torch.equal(before, torch.tensor(loss))))
    out["noisy_log_sse"], out["input_unchanged"] = errors, unchanged
    out["refused"] = [_raises(lambda args=args: m.fit_power_law(*args)) for args, _ in BAD_FITS]
    return out


def _fit_hidden_compare():
    compare = {"uses_scipy": equal(), "noisy_log_sse": _as_good_as_reference, "input_unchanged": equal(),
               "refused": equal()}
    for k, (true, _) in enumerate(EXACT_CASES):
        compare[f"exact/{k}"] = _recovers(true)
    return compare


PROBES = [
    Probe("test_non_embedding_params", params_visible, equal()),
    Probe("test_non_embedding_params_hidden", params_hidden, equal()),
    Probe("test_power_law", law_visible, LAW_VISIBLE_COMPARE),
    Probe("test_power_law_hidden", law_hidden, _law_hidden_compare()),
    Probe("test_fit_power_law", fit_visible, {"fitted": _recovers(VISIBLE_TRUE), "two_points": equal()}),
    Probe("test_fit_power_law_hidden", fit_hidden, _fit_hidden_compare()),
]
