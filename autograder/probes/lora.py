"""Outside checks of chapter 6c (LoRA): ``LoRALinear`` (initialisation, forward, scale, merge and unmerge),
``add_lora`` and ``trainable_parameters``.

Each probe runs the notebook's test on the same kinds of inputs. Where the hidden tests compare with ``peft`` (the
same A and B copied into Hugging Face's GPT-2 with LoRA), the reference here is the course's fallback, which
``tests/test_06c_lora.py`` checks against ``peft`` on the same cases. Base layers and GPTs are built from fixed
seeds and A, B from a seeded generator, so both sides hold the same numbers; what the notebook judges by a
property (A's random initialisation, the weight restored by unmerge) is judged here by the same threshold.
The notebook runs with autograd on, and so do these probes (the grader's runner switches it off around a probe).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autograder.probes import Probe, at_most, close, equal
from autograder.probes import raised as _raises

# ---------------------------------------------------------------------------------------------------------------
# helpers (run in the probe process, on both sides)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_gpt(seed: int, vocab_size=64, n_layer=2, n_head=2, n_embd=16, block_size=32, std=0.3):
    """The notebook's ``random_gpt``: weight matrices and embeddings ~ N(0, std^2), drawn by parameter name."""
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd)).eval()
    g = _gen(seed)
    params = dict(model.named_parameters())  # the tied lm_head.weight appears once, as transformer.wte.weight
    with torch.no_grad():
        for name in sorted(params):
            if params[name].dim() > 1:
                params[name].copy_(torch.randn(params[name].shape, generator=g) * std)
    return model


def _linear(seed: int, k: int, d: int, dtype=torch.float32) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, d).to(dtype)


def _within(low: float, high: float):
    """The student's number lies in [low, high] (the reference is not used: the notebook checks a range)."""

    def compare(got, expected):
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"not a number: {got!r:.60}"
        return None if low <= value <= high else f"{value:.4g}, outside [{low:g}, {high:g}]"

    return compare



# ---------------------------------------------------------------------------------------------------------------
# 6c.1 LoRALinear


def lora_linear_visible(m):
    out = {}
    with torch.enable_grad():
        base = _linear(0, 8, 6)
        layer = m.LoRALinear(base, r=2, alpha=4)
        A, B = layer.lora_A, layer.lora_B
        out.update(A_shape=list(A.shape), B_shape=list(B.shape),
                   parameters=isinstance(A, nn.Parameter) and isinstance(B, nn.Parameter),
                   scaling_is_2=bool(layer.scaling == 2.0),
                   base_frozen=[bool(base.weight.requires_grad), bool(base.bias.requires_grad)],
                   lora_trainable=[bool(A.requires_grad), bool(B.requires_grad)],
                   B_zero=bool((B == 0).all()), A_random=bool((A != 0).any()))
        x = torch.randn(3, 8, generator=_gen(1))
        out["start"] = layer(x).detach()
        # the notebook's hand-computed case: W0 = I, b = 0, A = [1, 0], B = [0, 1]^T, alpha / r = 2
        base = _linear(1, 2, 2)
        layer = m.LoRALinear(base, r=1, alpha=2)
        with torch.no_grad():
            base.weight.copy_(torch.eye(2))
            base.bias.zero_()
            layer.lora_A.copy_(torch.tensor([[1.0, 0.0]]))
            layer.lora_B.copy_(torch.tensor([[0.0], [1.0]]))
        x = torch.tensor([[3.0, 5.0]])
        out["by_hand"] = layer(x).detach()
        layer.merge()
        out["merged_flag"] = bool(layer.merged)
        out["merged_weight"] = base.weight.detach().clone()
        out["merged_out"] = layer(x).detach()
        layer.unmerge()
        out["unmerged_flag"] = bool(layer.merged)
        out["unmerged_weight"] = base.weight.detach().clone()
    return out


_VISIBLE_LINEAR = {name: equal() for name in ("A_shape", "B_shape", "parameters", "scaling_is_2", "base_frozen",
                                              "lora_trainable", "B_zero", "A_random", "merged_flag",
                                              "unmerged_flag")}

HIDDEN_RANKS = [(1, 1.0), (4, 8.0), (8, 2.0), (3, 5.0)]


def lora_linear_hidden_peft(m):
    """The notebook's comparison with peft's layer (here: the fallback), for four (r, alpha)."""
    out = {}
    g = _gen(61)
    with torch.enable_grad():
        for r, alpha in HIDDEN_RANKS:
            base = _linear(100 + r, 16, 24)
            layer = m.LoRALinear(base, r, alpha)
            out[f"scaling/{r}"] = float(layer.scaling)
            with torch.no_grad():
                layer.lora_A.copy_(torch.randn(r, 16, generator=g) * 0.3)
                layer.lora_B.copy_(torch.randn(24, r, generator=g) * 0.3)
            x = torch.randn(2, 5, 16, generator=g)
            w = torch.randn(2, 5, 24, generator=g)
            y = layer(x)
            (y * w).sum().backward()
            out[f"out/{r}"] = y.detach()
            out[f"grad_A/{r}"] = layer.lora_A.grad
            out[f"grad_B/{r}"] = layer.lora_B.grad
            out[f"base_gets_no_gradient/{r}"] = base.weight.grad is None and base.bias.grad is None
            original = base.weight.detach().clone()
            with torch.no_grad():
                layer.merge()
                out[f"merged_weight/{r}"] = base.weight.detach().clone()
                out[f"merged_out/{r}"] = layer(x)
                layer.unmerge()
                out[f"unmerge_error/{r}"] = float((base.weight - original).abs().max())
                out[f"after_out/{r}"] = layer(x)
            layer.merge()
            out[f"refusals/{r}"] = [_raises(layer.merge), _raises(layer.unmerge), _raises(layer.unmerge)]
    return out


def _hidden_peft_compare():
    compare = {}
    for r, _ in HIDDEN_RANKS:
        compare |= {f"scaling/{r}": close(1e-9, 1e-9, dtype=False), f"base_gets_no_gradient/{r}": equal(),
                    f"unmerge_error/{r}": at_most(1e-6), f"refusals/{r}": equal()}
    return compare


def lora_linear_hidden_init(m):
    """A's initialisation (U(-1/sqrt(k), 1/sqrt(k))), B = 0, the base weight's dtype, refused arguments."""
    with torch.enable_grad():
        layer = m.LoRALinear(_linear(7, 256, 64), 16, 16)
        A, bound = layer.lora_A.detach().double(), 1 / math.sqrt(256)
        out = {"A_max_over_bound": float(A.abs().max() / bound),
               "A_std_over_expected": float(A.std() / (bound / math.sqrt(3))),
               "A_distinct_rows": len(set(map(tuple, A.tolist()))),
               "B_zero": bool((layer.lora_B == 0).all())}
        base = _linear(8, 6, 4, torch.float64)
        layer = m.LoRALinear(base, 2, 4)
        out["dtypes"] = [str(layer.lora_A.dtype), str(layer.lora_B.dtype)]
        out["float64_start"] = layer(torch.randn(3, 6, dtype=torch.float64, generator=_gen(2))).detach()
        out["refused"] = [_raises(lambda: m.LoRALinear(nn.Linear(4, 4), 0, 1.0)),
                          _raises(lambda: m.LoRALinear(nn.Linear(4, 4), 2, 0.0)),
                          _raises(lambda: m.LoRALinear(nn.Conv1d(4, 4, 1), 2, 1.0))]
    return out


_HIDDEN_INIT = {"A_max_over_bound": at_most(1.0), "A_std_over_expected": _within(0.9, 1.1),
                "A_distinct_rows": equal(), "B_zero": equal(), "dtypes": equal(), "refused": equal()}


# ---------------------------------------------------------------------------------------------------------------
# 6c.2 add_lora, trainable_parameters


def add_lora_visible(m):
    with torch.enable_grad():
        model = _random_gpt(0)
        idx = torch.randint(0, 64, (2, 12), generator=_gen(1))
        out = {"count_before": m.trainable_parameters(model)}
        result = m.add_lora(model, r=4, alpha=8)
        out["returns_the_model"] = result is model
        out["c_attn_wrapped"] = [isinstance(b.attn.c_attn, m.LoRALinear) for b in model.transformer.h]
        out["others_plain"] = [isinstance(b.attn.c_proj, nn.Linear) and isinstance(b.mlp.c_fc, nn.Linear)
                               for b in model.transformer.h]
        with torch.no_grad():
            out["logits"] = model(idx)[0]
        out["count_after"] = m.trainable_parameters(model)
        out["wte_frozen"] = not model.transformer.wte.weight.requires_grad
    return out


_VISIBLE_ADD = {"count_before": equal(), "returns_the_model": equal(), "c_attn_wrapped": equal(),
                "others_plain": equal(), "count_after": equal(), "wte_frozen": equal()}

HIDDEN_TARGETS = [(4, 8.0, ("c_attn",)), (2, 3.0, ("c_attn", "c_proj")), (8, 4.0, ("c_fc",))]


def add_lora_hidden(m):
    """The notebook's comparison with peft on HF GPT-2 (here: the fallback), for three (r, alpha, targets)."""
    out = {}
    g = _gen(62)
    idx = torch.randint(0, 64, (3, 10), generator=g)
    with torch.enable_grad():
        for r, alpha, targets in HIDDEN_TARGETS:
            key = "+".join(targets)
            model = _random_gpt(5)
            m.add_lora(model, r, alpha, targets)
            out[f"count/{key}"] = m.trainable_parameters(model)
            with torch.no_grad():
                out[f"unchanged/{key}"] = model(idx)[0]
            wrapped = sorted(name for name, module in model.named_modules() if isinstance(module, m.LoRALinear))
            out[f"wrapped/{key}"] = wrapped
            with torch.no_grad():
                for name in wrapped:
                    layer = model.get_submodule(name)
                    k, d = layer.base.in_features, layer.base.out_features
                    layer.lora_A.copy_(torch.randn(r, k, generator=g) * 0.3)
                    layer.lora_B.copy_(torch.randn(d, r, generator=g) * 0.3)
            logits = model(idx)[0]
            out[f"logits/{key}"] = logits.detach()
            logits.logsumexp(-1).mean().backward()
            out[f"gradients_reach/{key}"] = sorted(n for n, p in model.named_parameters() if p.grad is not None)
            with torch.no_grad():
                for name in wrapped:
                    model.get_submodule(name).merge()
                out[f"merged/{key}"] = model(idx)[0]
                for name in wrapped:
                    model.get_submodule(name).unmerge()
                out[f"unmerged/{key}"] = model(idx)[0]
        model = _random_gpt(3)
        out["count_gpt"] = m.trainable_parameters(model)
        model.transformer.ln_f.requires_grad_(False)
        out["count_without_ln_f"] = m.trainable_parameters(model)
    return out


def _hidden_add_compare():
    compare = {"count_gpt": equal(), "count_without_ln_f": equal()}
    for _, _, targets in HIDDEN_TARGETS:
        key = "+".join(targets)
        compare |= {f"count/{key}": equal(), f"wrapped/{key}": equal(), f"gradients_reach/{key}": equal()}
    return compare


PROBES = [
    Probe("test_lora_linear", lora_linear_visible, _VISIBLE_LINEAR),
    Probe("test_lora_linear_hidden", lora_linear_hidden_peft, _hidden_peft_compare(), name="peft"),
    Probe("test_lora_linear_hidden", lora_linear_hidden_init, _HIDDEN_INIT, name="init"),
    Probe("test_add_lora", add_lora_visible, _VISIBLE_ADD),
    Probe("test_add_lora_hidden", add_lora_hidden, _hidden_add_compare()),
]
