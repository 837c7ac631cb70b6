"""Outside checks of chapter 4b (multi-head attention): split_heads, merge_heads, CausalSelfAttention.

Also the helpers that the probes of the module chapters after it (4c, 4d) share: the configuration from chapter
4b (its public fallback when a later chapter is graded), deterministic weights set by parameter name, and
comparators for a *property* of the student's own outputs, where the notebook's test checks a property rather
than a value (no output before position t depends on what comes after it; the heads do not mix).
"""

from __future__ import annotations

import copy
import dataclasses
import zlib

import numpy as np
import torch

from autograder.probes import Comparator, Probe, close, equal


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def config(**fields):
    """A ``GPTConfig`` of chapter 4b (the student's when 4b is graded, its fallback when a later chapter is)."""
    from llmcourse.chapters.multi_head_attention import GPTConfig

    return GPTConfig(**fields)


@torch.no_grad()
def with_weights(module, seed: int, std: float | None = None):
    """``module`` with deterministic weights, each drawn from a seed made of ``seed`` and the parameter's name, so
    the student's module and the reference get the same numbers under the same names, whatever else either holds:
    matrices N(0, 1/fan_in) (queries, keys and hidden units of order 1: attention far from uniform, the GELU far
    from linear), LayerNorm gains 1 + N(0, 0.3^2), biases N(0, 0.3^2); every parameter N(0, std^2) when ``std`` is
    given. Buffers are left alone."""
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen(seed * 1_000_003 + zlib.crc32(name.encode())), dtype=p.dtype)
        if std is not None:
            p.copy_(noise * std)
        elif p.dim() >= 2:
            p.copy_(noise / p.shape[-1] ** 0.5)
        else:
            p.copy_(1 + 0.3 * noise if name.endswith("weight") else 0.3 * noise)
    return module


def pair(got: torch.Tensor, want: torch.Tensor) -> dict:
    """Two results of the student's code that must agree (see :func:`holds`)."""
    return {"got": got, "want": want}


def holds(atol: float = 1e-5, rtol: float = 1e-5) -> Comparator:
    """A property of the student's own outputs, judged as the notebook's ``check_close(got, want, atol, rtol)``
    judges it: the value is ``pair(got, want)``. The reference is not compared with: it only shows that the
    property holds for the course's code (the values themselves differ from the reference wherever the test
    compares the student's module with itself, e.g. a correct module with different weights)."""
    inner = close(atol, rtol, dtype=False)

    def compare(got, expected):
        if not isinstance(got, dict) or set(got) != {"got", "want"}:
            return "the check did not produce its two results"
        try:
            a, b = np.asarray(got["got"], dtype=np.float64), np.asarray(got["want"], dtype=np.float64)
        except (TypeError, ValueError):
            return "not arrays of numbers"
        return inner(a, b)

    return compare


def true(message: str) -> Comparator:
    """The student's side found a property true (a bool computed in the probe, as the notebook's ``check``)."""

    def compare(got, expected):
        return None if got is True else message

    return compare


def between(low: float, high: float, what: str) -> Comparator:
    """A number strictly between ``low`` and ``high`` (a statistical property, as the notebook's test states it)."""

    def compare(got, expected):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not low < got < high:
            return f"{what} is {got!r:.30}, expected between {low} and {high}"
        return None

    return compare


def dropout_check(module, x: torch.Tensor) -> dict:
    """The notebook's dropout test: with p = 0.5 in training mode about half the outputs are 0, the rest doubled."""
    with torch.no_grad():
        expected = module.eval()(x)
        torch.manual_seed(0)
        dropped = module.train()(x)
    module.eval()
    kept = dropped != 0
    return {"dropout_kept_fraction": kept.float().mean().item(),
            "dropout_kept_doubled": pair(dropped[kept], 2 * expected[kept])}


DROPOUT = {"dropout_kept_fraction": between(0.35, 0.65, "with dropout=0.5 in training mode, the fraction of outputs "
                                            "kept (dropout after c_proj)"),
           "dropout_kept_doubled": holds(1e-5)}


def grads(module, prefix: str = "grad ") -> dict:
    return {f"{prefix}{name}": p.grad if p.grad is not None else f"no gradient reaches {name}"
            for name, p in module.named_parameters()}


# ---------------------------------------------------------------------------------------------------------------
# 4b.1 split_heads, 4b.2 merge_heads


def split_visible(m):
    heads = m.split_heads(torch.arange(2 * 6).view(1, 2, 6), 2)
    x = torch.randn(2, 5, 12, generator=gen(11))
    random_heads = m.split_heads(x, 4)
    return {"arange": heads, "shape": list(random_heads.shape), "b1_h2_t3": random_heads[1, 2, 3]}


def split_hidden(m):
    g = gen(45)
    out = {}
    for B, T, C, nh in [(1, 1, 4, 1), (2, 3, 8, 2), (3, 7, 24, 4), (1, 5, 12, 12), (2, 9, 768, 12), (4, 1, 64, 8)]:
        out[f"split_heads(x{[B, T, C]}, {nh})"] = m.split_heads(torch.randn(B, T, C, generator=g), nh)
    qkv = torch.randn(2, 6, 3 * 16, generator=g)
    for j, part in enumerate(qkv.split(16, dim=2)):
        out[f"fused part {j}"] = m.split_heads(part, 4)
    with torch.enable_grad():
        x = torch.randn(2, 3, 8, dtype=torch.float64, generator=g, requires_grad=True)
        x0 = x.detach().clone()
        heads = m.split_heads(x, 2)
        weight = torch.randn(heads.shape, dtype=torch.float64, generator=g)
        (heads * weight).sum().backward()
    out["dtype of split_heads(float64)"] = str(heads.dtype)
    out["gradient"] = x.grad if x.grad is not None else "no gradient reaches x"
    out["input unchanged"] = bool(torch.equal(x.detach(), x0))
    return out


def merge_visible(m):
    y = torch.tensor([[[[0, 1, 2], [6, 7, 8]], [[3, 4, 5], [9, 10, 11]]]])
    x = torch.randn(2, 5, 12, generator=gen(12))
    heads = torch.randn(2, 4, 5, 3, generator=gen(13))
    return {"arange": m.merge_heads(y), "merge_heads(split_heads(x, 4))": m.merge_heads(m.split_heads(x, 4)),
            "b1_t3": m.merge_heads(heads)[1, 3]}


def merge_hidden(m):
    g = gen(46)
    out = {}
    for B, nh, T, hs in [(1, 1, 1, 4), (2, 2, 3, 4), (3, 4, 7, 6), (1, 12, 5, 1), (2, 12, 9, 64), (4, 8, 1, 8)]:
        for contiguous in (True, False):
            y = torch.randn(B, nh, T, hs, generator=g)
            if not contiguous:  # heads as attention returns them from a transposed computation
                y = torch.randn(B, T, nh, hs, generator=g).transpose(1, 2)
            out[f"merge_heads(y{[B, nh, T, hs]}{'' if contiguous else ', not contiguous'})"] = m.merge_heads(y)
    x = torch.randn(3, 6, 32, generator=g)
    out["merge_heads(split x)"] = m.merge_heads(x.view(3, 6, 8, 4).transpose(1, 2))
    with torch.enable_grad():
        y = torch.randn(2, 2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
        merged = m.merge_heads(y)
        weight = torch.randn(merged.shape, dtype=torch.float64, generator=g)
        (merged * weight).sum().backward()
    out["dtype of merge_heads(float64)"] = str(merged.dtype)
    out["gradient"] = y.grad if y.grad is not None else "no gradient reaches y"
    return out


# ---------------------------------------------------------------------------------------------------------------
# 4b.3 CausalSelfAttention


def attention_visible(m):
    g = gen(19)
    attn = with_weights(m.CausalSelfAttention(config(block_size=16, n_head=4, n_embd=32)), 19)
    x = torch.randn(2, 6, 32, generator=g)
    out = attn(x)
    value_0 = attn.c_attn(x[:, :1])[..., 2 * 32:]  # position 0 sees only itself: c_proj of its own value
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 32, generator=g)
    result = {"shape": list(out.shape), "output at position 0": pair(out[:, :1], attn.c_proj(value_0)),
              "outputs 0..3 after changing positions 4..5": pair(attn(x2)[:, :4], out[:, :4])}
    attn.use_torch_sdpa = True
    result["use_torch_sdpa=True"] = pair(attn(x), out)
    return result


def attention_hidden(m):
    g = gen(47)
    out = {}
    # parity with the reference (equal to HF's GPT2Attention) with the same weights, both attention paths
    for i, cfg in enumerate([config(block_size=8, n_head=1, n_embd=8), config(block_size=12, n_head=2, n_embd=32),
                             config(block_size=16, n_head=4, n_embd=64, dropout=0.1),
                             config(block_size=64, n_head=12, n_embd=768, dropout=0.2)]):
        attn = with_weights(m.CausalSelfAttention(cfg), 470 + i).eval()
        for T in (1, cfg.block_size):
            x = torch.randn(2, T, cfg.n_embd, generator=g)
            for use_torch_sdpa in (False, True):
                attn.use_torch_sdpa = use_torch_sdpa
                out[f"n_head={cfg.n_head}, n_embd={cfg.n_embd}, T={T}, use_torch_sdpa={use_torch_sdpa}"] = attn(x)
    # float64, tight tolerance
    attn = with_weights(m.CausalSelfAttention(config(block_size=10, n_head=2, n_embd=16)).double(), 474).eval()
    out["float64"] = attn(torch.randn(3, 10, 16, generator=g, dtype=torch.float64))
    # gradients reach every parameter and equal the reference's
    attn = with_weights(m.CausalSelfAttention(config(block_size=7, n_head=4, n_embd=16)).double(), 475)
    x = torch.randn(2, 7, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 7, 16, generator=g, dtype=torch.float64)
    with torch.enable_grad():
        (attn(x) * weight).sum().backward()
    out.update(grads(attn))
    # each position sees only the past, on both paths
    attn = with_weights(m.CausalSelfAttention(config(block_size=9, n_head=3, n_embd=24)), 476).eval()
    x = torch.randn(2, 9, 24, generator=g)
    for use_torch_sdpa in (False, True):
        attn.use_torch_sdpa = use_torch_sdpa
        before = attn(x)
        for t in (0, 3, 8):
            x2 = x.clone()
            x2[:, t:] += torch.randn(2, 9 - t, 24, generator=g)
            after = attn(x2)
            out[f"outputs before {t} after changing {t}..8 (use_torch_sdpa={use_torch_sdpa})"] = pair(
                after[:, :t], before[:, :t])
            out[f"outputs from {t} change (use_torch_sdpa={use_torch_sdpa})"] = not torch.allclose(
                after[:, t:], before[:, t:], atol=1e-4)
    # heads are independent: with c_proj = identity, changing head h's slices of c_attn changes only its channels
    C, nh, hs = 32, 4, 8
    attn = with_weights(m.CausalSelfAttention(config(block_size=6, n_head=nh, n_embd=C)), 477).eval()
    attn.c_proj.weight.copy_(torch.eye(C))
    attn.c_proj.bias.zero_()
    x = torch.randn(2, 6, C, generator=g)
    for use_torch_sdpa in (False, True):
        attn.use_torch_sdpa = use_torch_sdpa
        base = attn(x)
        for h in range(nh):
            changed = copy.deepcopy(attn)
            for part in range(3):  # head h's rows of W^Q, W^K and W^V
                rows = slice(part * C + h * hs, part * C + (h + 1) * hs)
                changed.c_attn.weight[rows] += torch.randn(hs, C, generator=g)
                changed.c_attn.bias[rows] += torch.randn(hs, generator=g)
            result = changed(x)
            mine = torch.zeros(C, dtype=torch.bool)
            mine[h * hs:(h + 1) * hs] = True
            out[f"other heads' channels after changing head {h} (use_torch_sdpa={use_torch_sdpa})"] = pair(
                result[..., ~mine], base[..., ~mine])
            out[f"head {h}'s channels change (use_torch_sdpa={use_torch_sdpa})"] = not torch.allclose(
                result[..., mine], base[..., mine], atol=1e-3)
    # any batch size: each sequence is processed on its own
    attn = with_weights(m.CausalSelfAttention(config(block_size=5, n_head=2, n_embd=16)), 478).eval()
    x = torch.randn(5, 5, 16, generator=g)
    out["each sequence alone vs in a batch of 5"] = pair(torch.cat([attn(x[b:b + 1]) for b in range(5)]), attn(x))
    # bias=False: only the two weights, and the same result as zero biases
    cfg_nb = config(block_size=6, n_head=2, n_embd=16, bias=False)
    attn_nb = with_weights(m.CausalSelfAttention(cfg_nb), 479).eval()
    out["state dict with bias=False"] = sorted(attn_nb.state_dict())
    attn_b = m.CausalSelfAttention(dataclasses.replace(cfg_nb, bias=True)).eval()
    attn_b.c_attn.weight.copy_(attn_nb.c_attn.weight)
    attn_b.c_proj.weight.copy_(attn_nb.c_proj.weight)
    attn_b.c_attn.bias.zero_()
    attn_b.c_proj.bias.zero_()
    x = torch.randn(2, 6, 16, generator=g)
    out["bias=False vs zero biases"] = pair(attn_nb(x), attn_b(x))
    # the learned tensors only (no mask buffer), with GPT-2's names and shapes
    attn = m.CausalSelfAttention(config(block_size=8, n_head=2, n_embd=16))
    out["state dict"] = {k: list(v.shape) for k, v in attn.state_dict().items()}
    # dropout on the output only
    attn = with_weights(m.CausalSelfAttention(config(block_size=8, n_head=2, n_embd=64, dropout=0.5)), 480)
    out.update(dropout_check(attn, torch.randn(4, 8, 64, generator=g)))
    return out


def _attention_hidden_compare() -> dict[str, Comparator]:
    compare: dict[str, Comparator] = {"float64": close(1e-12, 1e-10), "state dict with bias=False": equal(),
                                      "state dict": equal(), "bias=False vs zero biases": holds(1e-6),
                                      "each sequence alone vs in a batch of 5": holds(1e-6), **DROPOUT}
    for name in ("c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"):
        compare[f"grad {name}"] = close(1e-10)
    for use_torch_sdpa in (False, True):
        for t in (0, 3, 8):
            compare[f"outputs before {t} after changing {t}..8 (use_torch_sdpa={use_torch_sdpa})"] = holds(1e-6)
            compare[f"outputs from {t} change (use_torch_sdpa={use_torch_sdpa})"] = true(
                f"changing positions {t}..8 should change the outputs there (use_torch_sdpa={use_torch_sdpa})")
        for h in range(4):
            compare[f"other heads' channels after changing head {h} (use_torch_sdpa={use_torch_sdpa})"] = holds(1e-6)
            compare[f"head {h}'s channels change (use_torch_sdpa={use_torch_sdpa})"] = true(
                f"changing head {h}'s slices of c_attn should change channels {h * 8}..{h * 8 + 7} "
                f"(use_torch_sdpa={use_torch_sdpa})")
    return compare


class _Default(dict):
    """Comparators by name, with ``default`` for the names not listed (the parity outputs)."""

    def __init__(self, default: Comparator, named: dict[str, Comparator]):
        super().__init__(named)
        self.default = default

    def __missing__(self, name):
        return self.default

    def __contains__(self, name):
        return True


def by_name(default: Comparator, **named: Comparator) -> dict[str, Comparator]:
    """Per-output comparators, ``default`` for every output not named."""
    return _Default(default, named)


PROBES = [
    Probe("test_split_heads", split_visible, {"arange": equal(), "shape": equal()}),
    Probe("test_split_heads_hidden", split_hidden, by_name(close(0, 0), **{
        "dtype of split_heads(float64)": equal(), "input unchanged": equal()})),
    Probe("test_merge_heads", merge_visible, {"arange": equal()}),
    Probe("test_merge_heads_hidden", merge_hidden, by_name(close(0, 0), **{
        "dtype of merge_heads(float64)": equal()})),
    Probe("test_causal_self_attention", attention_visible, {
        "shape": equal(), "output at position 0": holds(), "outputs 0..3 after changing positions 4..5": holds(),
        "use_torch_sdpa=True": holds(1e-6)}),
    Probe("test_causal_self_attention_hidden", attention_hidden, by_name(close(2e-5, 1e-5),
                                                                         **_attention_hidden_compare())),
]
