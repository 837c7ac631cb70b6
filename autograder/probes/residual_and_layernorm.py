"""Outside checks of chapter 4d (residual and LayerNorm): LayerNorm and the pre-LN transformer block.

LayerNorm runs with PyTorch's normalization built-ins unavailable (``forbid``): writing it is the exercise. The
block is built from chapter 4b's attention and 4c's MLP, which are their public fallbacks on both sides.
"""

from __future__ import annotations

import torch

from autograder.probes import Probe, close, equal
from autograder.probes.multi_head_attention import by_name, config, gen, holds, pair, with_weights


def layernorm_visible(m):
    x = torch.randn(2, 5, 8, generator=gen(21)) * 7 + 3
    y = m.LayerNorm(8)(x)
    return {"LayerNorm(4)([1, 2, 3, 4])": m.LayerNorm(4)(torch.tensor([1.0, 2.0, 3.0, 4.0])), "LayerNorm(8)(x)": y,
            "mean of each output token": y.mean(dim=-1), "variance of each output token": y.var(dim=-1, unbiased=False)}


def layernorm_hidden(m):
    g = gen(44)
    out = {}
    # parity with torch.nn.LayerNorm, random gain and bias, several shapes
    for shape in [(6,), (3, 16), (2, 7, 32), (2, 3, 4, 24)]:
        C = shape[-1]
        ln = m.LayerNorm(C)
        ln.weight.copy_(torch.randn(C, generator=g))
        ln.bias.copy_(torch.randn(C, generator=g))
        out[f"LayerNorm({C}) on {list(shape)}"] = ln(torch.randn(shape, generator=g) * 5 + 2)
    # a large eps shows where it goes: inside the square root
    x = torch.randn(4, 10, generator=g)
    out["LayerNorm with eps=0.5"] = m.LayerNorm(10, eps=0.5)(x)
    # bias=False: no bias parameter, nothing added
    ln = m.LayerNorm(10, bias=False)
    out["bias=False: bias is None"] = ln.bias is None
    out["bias=False: parameters"] = [n for n, _ in ln.named_parameters()]
    ln.weight.copy_(torch.rand(10, generator=g) + 0.5)
    out["LayerNorm(bias=False)"] = ln(x)
    # each token on its own: changing one token changes no other token's output
    x = torch.randn(3, 5, 16, generator=g)
    x2 = x.clone()
    x2[1, 2] = x2[1, 2] * 100 + 7
    out["tokens whose output changes when token (1, 2) changes"] = (
        m.LayerNorm(16)(x) - m.LayerNorm(16)(x2)).abs().amax(dim=-1) > 1e-6
    # a constant token becomes the bias, without dividing by zero
    ln = m.LayerNorm(8)
    ln.bias.copy_(torch.arange(8.0))
    out["LayerNorm of a constant"] = ln(torch.full((2, 8), 3.0))
    # float64, and gradients for the input, the gain and the bias
    ln = with_weights(m.LayerNorm(6).double(), 440)
    with torch.enable_grad():
        x = torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
        weight = torch.randn(2, 3, 6, dtype=torch.float64, generator=g)
        (ln(x) * weight).sum().backward()
    for name, t in [("input", x), ("weight", ln.weight), ("bias", ln.bias)]:
        out[f"gradient of the {name}"] = t.grad if t.grad is not None else f"no gradient reaches the {name}"
    return out


def block_visible(m):
    block = with_weights(m.Block(config(block_size=16, vocab_size=100, n_layer=1, n_head=4, n_embd=32)), 22)
    x = torch.randn(2, 10, 32, generator=gen(22))
    out = {"shape": list(block(x).shape), "parameter names": [name for name, _ in block.named_parameters()]}
    for layer in (block.attn.c_proj, block.mlp.c_proj):  # sublayers that add nothing: the block is the identity
        layer.weight.zero_()
        layer.bias.zero_()
    out["Block with zeroed output projections"] = pair(block(x), x)
    return out


def block_hidden(m):
    g = gen(45)
    out = {}
    # equal to the reference (equal to HF's GPT2Block) with the same weights, for several shapes
    for i, (n_head, n_embd, T) in enumerate([(1, 8, 1), (2, 16, 5), (4, 32, 12), (12, 96, 9)]):
        cfg = config(block_size=16, vocab_size=64, n_layer=2, n_head=n_head, n_embd=n_embd, dropout=0.1)
        block = with_weights(m.Block(cfg), 450 + i, std=0.2).eval()
        out[f"Block (n_head={n_head}, n_embd={n_embd}, T={T})"] = block(torch.randn(3, T, n_embd, generator=g))
    # causal: changing a later token changes no earlier output
    cfg = config(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16)
    block = with_weights(m.Block(cfg), 454).eval()
    x = torch.randn(2, 8, 16, generator=g)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 3, 16, generator=g)
    out["Block outputs 0..4 after changing tokens 5..7"] = pair(block(x2)[:, :5], block(x)[:, :5])
    # bias=False builds LayerNorms without bias
    block = m.Block(config(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=8, bias=False))
    out["LayerNorm biases with bias=False are None"] = [block.ln_1.bias is None, block.ln_2.bias is None]
    out["shape with bias=False"] = list(block(torch.randn(1, 4, 8, generator=g)).shape)
    # every parameter gets a gradient
    block = with_weights(m.Block(cfg), 455)
    with torch.enable_grad():
        block(torch.randn(2, 6, 16, generator=g)).pow(2).sum().backward()
    out["parameters without a gradient"] = [n for n, p in block.named_parameters()
                                            if p.grad is None or p.grad.abs().sum() == 0]
    return out


PROBES = [
    Probe("test_layernorm", layernorm_visible, {"variance of each output token": close(1e-3)},
          forbid=("layer_norm",)),
    Probe("test_layernorm_hidden", layernorm_hidden, by_name(close(1e-5), **{
        "LayerNorm with eps=0.5": close(1e-6), "bias=False: bias is None": equal(),
        "bias=False: parameters": equal(),
        "LayerNorm(bias=False)": close(1e-6), "tokens whose output changes when token (1, 2) changes": equal(),
        "LayerNorm of a constant": close(1e-4), "gradient of the input": close(1e-5, 1e-3),
        "gradient of the weight": close(1e-5, 1e-3), "gradient of the bias": close(1e-5, 1e-3)}),
          forbid=("layer_norm",)),
    Probe("test_block", block_visible, {"shape": equal(), "parameter names": equal(),
                                        "Block with zeroed output projections": holds()}),
    Probe("test_block_hidden", block_hidden, by_name(close(1e-4), **{  # as the notebook: see its comment
        "Block outputs 0..4 after changing tokens 5..7": holds(1e-6),
        "LayerNorm biases with bias=False are None": equal(), "shape with bias=False": equal(),
        "parameters without a gradient": equal()})),
]
