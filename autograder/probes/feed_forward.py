"""Outside checks of chapter 4c (feed-forward): the exact GELU, GPT-2's tanh GELU, the MLP.

The two GELUs run with PyTorch's GELU unavailable (``forbid``): writing them is the exercise. Gradients are compared
with the reference's autograd gradients within gradcheck's own tolerances (atol 1e-5, rtol 1e-3), which is what
the notebook's ``gradcheck`` against finite differences accepts.
"""

from __future__ import annotations

import dataclasses

import torch

from autograder.probes import Probe, close, equal
from autograder.probes.multi_head_attention import (
    DROPOUT,
    by_name,
    config,
    dropout_check,
    gen,
    grads,
    holds,
    pair,
    true,
    with_weights,
)

GRADCHECK = close(1e-5, 1e-3)


def _visible(fn):
    def run(m):
        f = getattr(m, fn)
        return {"f([-1, 0, 1])": f(torch.tensor([-1.0, 0.0, 1.0])), "f([-8, 8])": f(torch.tensor([-8.0, 8.0])),
                "f(x)": f(torch.randn(2, 3, 4, generator=gen(14)))}

    run.__name__ = f"{fn}_visible"
    return run


def _hidden(fn, seed, large):
    def run(m):
        f = getattr(m, fn)
        g = gen(seed)
        out = {}
        for dtype in (torch.float32, torch.float64):
            for shape in [(), (7,), (3, 5), (2, 3, 4, 5)]:
                out[f"{fn}(x{list(shape)}, {dtype})"] = f(torch.randn(shape, generator=g, dtype=dtype) * 3)
            out[f"{fn} for large |x| ({dtype})"] = f(torch.tensor(large, dtype=dtype))
        x = torch.randn(4, 5, generator=g)
        x0 = x.clone()
        f(x)
        out["input unchanged"] = bool(torch.equal(x, x0))
        with torch.enable_grad():
            x = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
            weight = torch.randn(3, 4, dtype=torch.float64, generator=g)
            (f(x) * weight).sum().backward()
        out["gradient"] = x.grad if x.grad is not None else "no gradient reaches x"
        return out

    run.__name__ = f"{fn}_hidden"
    return run


def _hidden_compare(fn, tol32):
    compare = {"input unchanged": equal(), "gradient": GRADCHECK}
    for dtype, tol in ((torch.float32, tol32), (torch.float64, 1e-12)):
        for shape in [(), (7,), (3, 5), (2, 3, 4, 5)]:
            compare[f"{fn}(x{list(shape)}, {dtype})"] = close(tol, tol)
        compare[f"{fn} for large |x| ({dtype})"] = close(tol, tol)
    return compare


def mlp_visible(m):
    cfg = config(block_size=8, n_head=2, n_embd=16)
    mlp = with_weights(m.MLP(cfg), 20)
    x = torch.randn(2, 5, 16, generator=gen(20))
    out = {"parameters": {name: list(p.shape) for name, p in mlp.named_parameters()}, "MLP(x)": mlp(x)}
    for p in mlp.parameters():
        p.zero_()
    out["MLP with all weights and biases 0"] = mlp(x)
    return out


def mlp_hidden(m):
    g = gen(50)
    out = {}
    # parity with the reference (equal to HF's GPT2MLP) with the same weights
    for i, cfg in enumerate([config(block_size=4, n_head=1, n_embd=8), config(block_size=9, n_head=2, n_embd=32),
                             config(block_size=16, n_head=4, n_embd=64, dropout=0.1),
                             config(block_size=32, n_head=12, n_embd=768, dropout=0.2)]):
        mlp = with_weights(m.MLP(cfg), 500 + i).eval()
        for B, T in [(1, 1), (3, cfg.block_size)]:
            out[f"MLP, n_embd={cfg.n_embd}, x of shape {(B, T, cfg.n_embd)}"] = mlp(
                torch.randn(B, T, cfg.n_embd, generator=g))
    # float64, and gradients that reach every parameter and equal the reference's
    cfg = config(block_size=6, n_head=2, n_embd=16)
    mlp = with_weights(m.MLP(cfg).double(), 504)
    x = torch.randn(2, 6, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 6, 16, generator=g, dtype=torch.float64)
    with torch.enable_grad():
        y = mlp(x)
        (y * weight).sum().backward()
    out["float64"] = y
    out.update(grads(mlp))
    # position-wise
    mlp = with_weights(m.MLP(cfg), 505).eval()
    x = torch.randn(3, 6, 16, generator=g)
    base = mlp(x)
    out["each position alone"] = pair(torch.cat([mlp(x[:, t:t + 1]) for t in range(6)], dim=1), base)
    perm = torch.randperm(6, generator=g)
    out["permuted positions"] = pair(mlp(x[:, perm]), base[:, perm])
    x2 = x.clone()
    x2[:, 2] += torch.randn(3, 16, generator=g)
    after = mlp(x2)
    others = [0, 1, 3, 4, 5]
    out["positions other than 2 after changing position 2"] = pair(after[:, others], base[:, others])
    out["position 2 changes"] = not torch.allclose(after[:, 2], base[:, 2], atol=1e-4)
    out["(B*T, 1, C) vs (B, T, C)"] = pair(mlp(x.reshape(18, 1, 16)).reshape(3, 6, 16), base)
    # no residual: zero weights give zeros; with c_proj zero, every output is c_proj's bias
    for p in mlp.parameters():
        p.zero_()
    out["all weights and biases 0"] = mlp(x)
    mlp.c_proj.bias.copy_(torch.arange(16.0))
    out["c_proj.weight = 0, c_proj.bias = arange"] = mlp(x)
    # parameter names and shapes, GPT-2 small's size; bias=False
    out["parameters of MLP(GPTConfig())"] = {n: list(p.shape) for n, p in m.MLP(config()).named_parameters()}
    cfg_nb = config(block_size=4, n_head=2, n_embd=8, bias=False)
    mlp_nb = with_weights(m.MLP(cfg_nb), 506)
    out["state dict with bias=False"] = sorted(mlp_nb.state_dict())
    mlp_b = m.MLP(dataclasses.replace(cfg_nb, bias=True))
    mlp_b.c_fc.weight.copy_(mlp_nb.c_fc.weight)
    mlp_b.c_proj.weight.copy_(mlp_nb.c_proj.weight)
    mlp_b.c_fc.bias.zero_()
    mlp_b.c_proj.bias.zero_()
    x = torch.randn(2, 4, 8, generator=g)
    out["bias=False vs zero biases"] = pair(mlp_nb(x), mlp_b(x))
    # dropout on the output
    mlp = with_weights(m.MLP(config(block_size=8, n_head=2, n_embd=64, dropout=0.5)), 507)
    out.update(dropout_check(mlp, torch.randn(4, 8, 64, generator=g)))
    return out


MLP_HIDDEN = {
    "float64": close(1e-12, 1e-10), **{f"grad {n}": close(1e-10) for n in ("c_fc.weight", "c_fc.bias",
                                                                           "c_proj.weight", "c_proj.bias")},
    "each position alone": holds(1e-6), "permuted positions": holds(1e-6),
    "positions other than 2 after changing position 2": holds(1e-6),
    "position 2 changes": true("changing position 2 should change its output"),
    "(B*T, 1, C) vs (B, T, C)": holds(1e-6), "all weights and biases 0": close(0, 0),
    "c_proj.weight = 0, c_proj.bias = arange": close(0, 0), "parameters of MLP(GPTConfig())": equal(),
    "state dict with bias=False": equal(), "bias=False vs zero biases": holds(1e-6), **DROPOUT,
}

PROBES = [
    Probe("test_gelu_exact", _visible("gelu_exact"), {"f([-1, 0, 1])": close(1e-6), "f([-8, 8])": close(1e-6),
                                                      "f(x)": close(2e-6)}, forbid=("gelu",)),
    Probe("test_gelu_exact_hidden", _hidden("gelu_exact", 48, [-1e4, -1e3, -50.0, -10.0, -5.0, -0.75, 0.75, 5.0,
                                                               10.0, 50.0, 1e3, 1e4]),
          _hidden_compare("gelu_exact", 2e-6), forbid=("gelu",)),
    Probe("test_gelu", _visible("gelu"), close(1e-6), forbid=("gelu",)),
    Probe("test_gelu_hidden", _hidden("gelu", 49, [-1e30, -1e13, -1e4, -50.0, -10.0, -3.0, -0.75, 0.75, 3.0, 10.0,
                                                   50.0, 1e4, 1e13, 1e30]),
          _hidden_compare("gelu", 1e-6), forbid=("gelu",)),
    Probe("test_mlp", mlp_visible, {"parameters": equal()}),
    Probe("test_mlp_hidden", mlp_hidden, by_name(close(2e-5, 1e-5), **MLP_HIDDEN)),
]
