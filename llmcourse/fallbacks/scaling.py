"""Chapter 8a's exports, in plain PyTorch (``LLMCOURSE_FALLBACK=scaling``).

``non_embedding_params`` counts the parameters of a GPT without its embeddings from the shapes of the layers (no
model is built), ``power_law`` evaluates E + A n^-alpha in float64, and ``fit_power_law`` minimises the squared
error of log L by a coarse search over E (for each E, the best A and alpha of log(L - E) = log A - alpha log n
in closed form) followed by L-BFGS on the exact objective. No SciPy. ``tests/test_08a_scaling.py`` checks them
against the model's own count, exact values and ``scipy.optimize.least_squares``.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["non_embedding_params", "power_law", "fit_power_law"]


def _check_config(config) -> None:
    missing = [name for name in ("n_layer", "n_embd", "bias") if not hasattr(config, name)]
    if missing:
        raise TypeError(f"config should be a GPTConfig (with n_layer, n_embd and bias), got a "
                        f"{type(config).__name__} without {', '.join(missing)}")
    for name in ("n_layer", "n_embd"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"config.{name} should be a positive int, got {value!r}")
    if not isinstance(config.bias, bool):
        raise ValueError(f"config.bias should be True or False, got {config.bias!r}")


def non_embedding_params(config) -> int:
    """Parameters of GPT(config) outside the token and position embeddings (Kaplan et al.'s N)."""
    _check_config(config)
    C, bias = int(config.n_embd), config.bias
    linear = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)]  # c_attn, attn.c_proj, c_fc, mlp.c_proj: (in, out)
    block = sum(k * d + (d if bias else 0) for k, d in linear) + 2 * (2 * C if bias else C)  # + ln_1, ln_2
    return int(config.n_layer) * block + (2 * C if bias else C)  # + ln_f


def _as_sizes(n, name: str = "n") -> torch.Tensor:
    if isinstance(n, bool) or isinstance(n, str):
        raise TypeError(f"{name} should be numbers (a number, a list or a tensor), got {type(n).__name__} {n!r}")
    try:
        values = torch.tensor(n.tolist() if isinstance(n, torch.Tensor) else n, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} should be numbers (a number, a list or a tensor), got {n!r:.60} ({err})") from None
    if not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
        raise ValueError(f"{name} should hold positive, finite numbers, got {values.flatten()[:8].tolist()}")
    return values


def _check_law(E, A, alpha) -> None:
    for name, value in (("E", E), ("A", A), ("alpha", alpha)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} should be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} should be finite, got {value}")


def power_law(n, E: float, A: float, alpha: float) -> torch.Tensor:
    """E + A * n^(-alpha), element by element, as a float64 tensor of n's shape."""
    _check_law(E, A, alpha)
    n = _as_sizes(n)
    return torch.exp(torch.log(n) * -float(alpha)) * float(A) + float(E)


def _check_fit_arguments(n, loss, steps) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps should be an int, got {type(steps).__name__} {steps!r}")
    if steps < 1:
        raise ValueError(f"steps should be at least 1, got {steps}")
    n, loss = _as_sizes(n, "n").flatten(), _as_sizes(loss, "loss").flatten()
    if len(n) != len(loss):
        raise ValueError(f"n has {len(n)} values but loss has {len(loss)}: one loss per size")
    if len(n) < 3:
        raise ValueError(f"a fit of three parameters (E, A, alpha) needs at least 3 points, got {len(n)}")
    if len(set(n.tolist())) < 3:
        raise ValueError(f"n should hold at least 3 different sizes, got {sorted(set(n.tolist()))}")
    return n, loss


def _log_sse(E, A, alpha, log_n, log_loss) -> torch.Tensor:
    return ((E + A * torch.exp(-alpha * log_n)).log() - log_loss).pow(2).sum()


def fit_power_law(n, loss, steps: int = 500) -> tuple[float, float, float]:
    """(E, A, alpha) minimising sum_i (log(E + A n_i^-alpha) - log loss_i)^2; no SciPy."""
    n, loss = _check_fit_arguments(n, loss, steps)
    log_n, log_loss, lowest = n.log(), loss.log(), float(loss.min())
    center = log_n.mean()
    # a start: for E on a grid below the smallest loss, log(L - E) is a line in log n (least squares in closed form)
    best = None
    for fraction in torch.linspace(0.0, 0.995, 200, dtype=torch.float64).tolist():
        E = fraction * lowest
        y = (loss - E).log()
        slope = ((log_n - center) * (y - y.mean())).sum() / (log_n - center).pow(2).sum()
        alpha = max(float(-slope), 1e-3)
        log_a = float(y.mean() + alpha * center)
        err = float(_log_sse(E, math.exp(log_a), alpha, log_n, log_loss))
        if best is None or err < best[0]:
            best = (err, E, log_a, alpha)
    _, E0, log_a0, alpha0 = best
    # then L-BFGS on the exact objective: E = lowest * sigmoid(e), A at n = exp(center) is exp(a), alpha = exp(b)
    fraction = min(max(E0 / lowest, 1e-6), 1 - 1e-6)
    with torch.enable_grad():
        e = torch.tensor(math.log(fraction / (1 - fraction)), dtype=torch.float64, requires_grad=True)
        a = torch.tensor(log_a0 - alpha0 * float(center), dtype=torch.float64, requires_grad=True)
        b = torch.tensor(math.log(alpha0), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([e, a, b], lr=1.0, max_iter=steps, history_size=20, tolerance_grad=1e-12,
                                      tolerance_change=1e-15, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            alpha = b.exp()
            error = _log_sse(lowest * torch.sigmoid(e), a.exp(), alpha, log_n - center, log_loss)
            error.backward()
            return error

        optimizer.step(closure)
    with torch.no_grad():
        alpha = float(b.exp())
        return float(lowest * torch.sigmoid(e)), float(torch.exp(a + alpha * center)), alpha
