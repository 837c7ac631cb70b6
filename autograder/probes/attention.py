"""Outside checks of chapter 4a (attention): softmax, scaled dot-product attention, the causal mask."""

from __future__ import annotations

import torch

from autograder.probes import Probe, close, equal


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def softmax_visible(m):
    x = torch.randn(2, 3, 4, generator=_gen(1))
    return {"123": m.softmax(torch.tensor([1.0, 2.0, 3.0])),
            "shifted": m.softmax(torch.tensor([1001.0, 1002.0, 1003.0])),
            "dim1": m.softmax(x, dim=1)}


def softmax_hidden(m):
    g = _gen(41)
    out = {}
    for i, (shape, dim) in enumerate([((7,), 0), ((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((2, 3, 4), -2),
                                      ((2, 1, 6), 2)]):
        out[f"shape{i}"] = m.softmax(torch.randn(shape, generator=g) * 3, dim=dim)
    big = torch.tensor([[0.0, 1.0, 2.0], [1e4, 1e4 + 1.0, 1e4 - 3.0], [-1e4, -1e4 + 2.0, -1e4]])
    out["large"] = m.softmax(big)
    out["large_T"] = m.softmax(big.T, dim=0)
    out["inf64"] = m.softmax(torch.tensor([[0.5, float("-inf"), 2.0], [3.0, 1.0, float("-inf")]],
                                          dtype=torch.float64))
    x = torch.randn(4, 5, generator=g)
    x0 = x.clone()
    m.softmax(x)
    out["input_unchanged"] = bool(torch.equal(x, x0))
    with torch.enable_grad():
        x = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
        w = torch.randn(3, 4, dtype=torch.float64, generator=g)
        (m.softmax(x, dim=-1) * w).sum().backward()
        out["grad"] = x.grad
    return out


def sdpa_visible(m):
    g = _gen(2)
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q, kk, vv = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    return {"uniform": m.scaled_dot_product_attention(torch.zeros(1, 2), torch.randn(3, 2, generator=g), v),
            "picks": m.scaled_dot_product_attention(torch.tensor([[0.0, 50.0]]), k, v),
            "masked": m.scaled_dot_product_attention(torch.zeros(1, 2), k, v, torch.tensor([[True, False, True]])),
            "batched": m.scaled_dot_product_attention(q, kk, vv)}


def sdpa_hidden(m):
    g = _gen(42)

    def rand(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=dtype)

    out = {}
    for i, (qs, ks, vs) in enumerate([((5, 16), (5, 16), (5, 16)), ((2, 4, 16), (2, 6, 16), (2, 6, 3)),
                                      ((2, 3, 7, 16), (2, 3, 7, 16), (2, 3, 7, 16)),
                                      ((1, 2, 9, 64), (1, 2, 9, 64), (1, 2, 9, 64))]):
        out[f"shapes{i}"] = m.scaled_dot_product_attention(rand(*qs), rand(*ks), rand(*vs))
    q, k, v = rand(2, 3, 6, 16), rand(2, 3, 6, 16), rand(2, 3, 6, 16)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    masks = {"causal": causal, "random_bool": (torch.rand(2, 1, 6, 6, generator=g) > 0.5) | torch.eye(6).bool(),
             "float_inf": torch.zeros(6, 6).masked_fill(~causal, float("-inf")), "float_bias": rand(6, 6) * 2}
    for label, mask in masks.items():
        out[f"mask_{label}"] = m.scaled_dot_product_attention(q, k, v, mask)
    q4 = rand(2, 4, 16)
    mask = torch.rand(4, 6, generator=g) > 0.3
    mask[:, 0] = True
    out["rect_mask"] = m.scaled_dot_product_attention(q4, k[:, 0], v[:, 0], mask)
    x = rand(2, 5, 16, dtype=torch.float64) * 50
    v64 = rand(2, 5, 4, dtype=torch.float64)
    out["large64"] = m.scaled_dot_product_attention(x, x, v64)
    xs = rand(2, 5, 16) * 50
    out["large32"] = m.scaled_dot_product_attention(xs, xs, v64.float(), causal[:5, :5])
    with torch.enable_grad():
        q, k, v = (rand(2, 4, 3, dtype=torch.float64).requires_grad_() for _ in range(3))
        w = rand(2, 4, 3, dtype=torch.float64)
        (m.scaled_dot_product_attention(q, k, v, causal[:4, :4]) * w).sum().backward()
        out.update(grad_q=q.grad, grad_k=k.grad, grad_v=v.grad)
    return out


def mask_visible(m):
    return {"T4": m.causal_mask(4)}


def mask_hidden(m):
    out = {f"T{T}": m.causal_mask(T) for T in (1, 2, 5, 6, 17)}  # 6: the mask the test attends with
    out["device"] = m.causal_mask(3, device="cpu").device.type
    return out


PROBES = [
    Probe("test_softmax", softmax_visible, {"123": close(1e-6), "shifted": close(1e-6)}, forbid=("softmax",)),
    Probe("test_softmax_hidden", softmax_hidden, {"inf64": close(1e-12), "input_unchanged": equal(),
                                                  "grad": close(1e-8)}, forbid=("softmax",)),
    Probe("test_sdpa", sdpa_visible, {"picks": close(1e-4)}, forbid=("scaled_dot_product_attention",)),
    Probe("test_sdpa_hidden", sdpa_hidden, {"large64": close(1e-8), "grad_q": close(1e-8), "grad_k": close(1e-8),
                                            "grad_v": close(1e-8)}, forbid=("scaled_dot_product_attention",)),
    Probe("test_causal_mask", mask_visible, equal()),
    Probe("test_causal_mask_hidden", mask_hidden, equal()),
]
