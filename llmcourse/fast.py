"""The fast path of the course's GPT: the same model, with PyTorch's fused kernels in place of the chapters' ops.

``model.use_fused_kernels()`` (chapter 5a) calls :func:`use_fused_kernels`. The chapters write LayerNorm (4d), GELU
(4c) and attention (4a) as several small tensor operations, which is how they teach the math; each one reads and
writes the whole activation tensor, so on a CPU they cost more than the matrix products of a small model. The fast
path swaps in one fused kernel for each, on the **same parameters** (no copy: the weights the student's modules
hold are the weights the fused modules use, and ``state_dict()`` keeps its names):

- every LayerNorm -> :class:`FusedLayerNorm` (``torch.nn.functional.layer_norm``),
- every MLP -> :class:`FusedMLP` (``torch.nn.functional.gelu(approximate="tanh")``, GPT-2's GELU),
- every attention layer -> ``use_torch_sdpa = True`` (``scaled_dot_product_attention``),

and generation (chapter 5c's ``forward_with_cache``) goes through :func:`forward_with_static_cache`, which keeps
the keys and values in buffers allocated once for the model's whole context and written in place, step by step.
:func:`fused_optimizer` gives the trainer AdamW's fused kernel (one kernel for all parameters' updates).

The fast path is tested equal to the plain one within float32 rounding (``tests/test_fast.py``); the modules it
swaps are recognised by their GPT-2 names (``ln_1``, ``ln_2``, ``ln_f``, ``mlp`` with ``c_fc`` and ``c_proj``),
which every chapter's model and the Hugging Face format share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORMS = ("ln_1", "ln_2", "ln_f")


class FusedLayerNorm(nn.Module):
    """``F.layer_norm`` on the gain and bias Parameters of another LayerNorm (shared, not copied)."""

    def __init__(self, plain: nn.Module):
        super().__init__()
        self.weight = plain.weight
        self.bias = getattr(plain, "bias", None)
        self.eps = float(getattr(plain, "eps", 1e-5))
        self.normalized_shape = tuple(plain.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class FusedMLP(nn.Module):
    """GPT-2's MLP on another MLP's layers (shared): c_proj(GELU_tanh(c_fc(x))) with the fused GELU kernel."""

    def __init__(self, plain: nn.Module):
        super().__init__()
        self.c_fc = plain.c_fc
        self.c_proj = plain.c_proj
        self.dropout = getattr(plain, "dropout", nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


def _swaps(model: nn.Module):
    """(path, parent module, attribute name, module) for every LayerNorm and MLP of a GPT."""
    t = model.transformer
    yield "ln_f", t, "ln_f", t.ln_f
    for i, block in enumerate(t.h):
        for name in ("ln_1", "ln_2", "mlp"):
            yield f"h.{i}.{name}", block, name, getattr(block, name)


def use_fused_kernels(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Put ``model`` (a GPT of chapter 5a) on the fast path, or back on the plain one with enabled=False.

    Returns the model. Parameters, their names and the optimizer's references to them are unchanged.
    """
    plain = model.__dict__.setdefault("_plain_modules", {})  # kept outside the module tree: not in state_dict
    if enabled and not getattr(model, "fused_kernels", False):
        for path, parent, name, module in list(_swaps(model)):
            if name == "mlp":
                for layer in ("c_fc", "c_proj"):
                    if not hasattr(module, layer):
                        raise TypeError(f"use_fused_kernels: {type(module).__name__} has no {layer}: the fast path "
                                        "needs GPT-2's MLP (c_fc, GELU, c_proj)")
                fused = FusedMLP(module)
            else:
                if not isinstance(getattr(module, "weight", None), nn.Parameter):
                    raise TypeError(f"use_fused_kernels: {name} ({type(module).__name__}) has no weight Parameter")
                fused = FusedLayerNorm(module)
            plain[path] = module
            setattr(parent, name, fused)
    elif not enabled and getattr(model, "fused_kernels", False):
        for path, parent, name, _module in list(_swaps(model)):
            setattr(parent, name, plain.pop(path))
    for block in model.transformer.h:
        block.attn.use_torch_sdpa = enabled
    model.fused_kernels = enabled
    return model


def fused_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same AdamW (same parameter groups and settings) with ``fused=True``: one kernel updates every parameter.

    Call it before the first step (it starts a new optimizer: no state is carried over). Other optimizers, and
    AdamW where the fused kernel does not exist (it does on CPU and CUDA in PyTorch >= 2.4), are returned as they are.
    """
    if type(optimizer) is not torch.optim.AdamW or any(optimizer.state.values()):
        return optimizer
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    try:
        return torch.optim.AdamW(groups, fused=True)
    except RuntimeError:  # a device or dtype without the fused kernel
        return optimizer


class _StaticKV:
    """Keys and values of every layer in buffers (L, B, nh, capacity, hs), allocated once, filled in place, and
    the model's weights per layer when every layer is the fast path's (then a step calls no module at all)."""

    def __init__(self, model: nn.Module, B: int, like: torch.Tensor):
        t = model.transformer
        first = t.h[0].attn
        self.nh, self.C = first.n_head, first.n_embd
        hs = self.C // self.nh
        L, capacity = len(t.h), model.config.block_size
        self.k = like.new_empty(L, B, self.nh, capacity, hs)
        self.v = like.new_empty(L, B, self.nh, capacity, hs)
        self.length = 0
        self.weights = _raw_weights(model, self.k, self.v)


def _raw_weights(model: nn.Module, k_buffers: torch.Tensor, v_buffers: torch.Tensor) -> list[tuple] | None:
    """Per layer: (ln_1, c_attn, c_proj, ln_2, c_fc, mlp c_proj, k buffer, v buffer) as tensors, or None when a
    layer is not exactly the fast path's (e.g. chapter 6c's LoRA wraps c_attn): then the modules are called."""
    t = model.transformer
    if model.training or not isinstance(t.ln_f, FusedLayerNorm):
        return None
    layers = []
    for i, block in enumerate(t.h):
        attn, mlp = block.attn, block.mlp
        linears = (attn.c_attn, attn.c_proj, mlp.c_fc if isinstance(mlp, FusedMLP) else None,
                   mlp.c_proj if isinstance(mlp, FusedMLP) else None)
        if not (isinstance(block.ln_1, FusedLayerNorm) and isinstance(block.ln_2, FusedLayerNorm)
                and all(type(layer) is nn.Linear for layer in linears)):
            return None
        layers.append(((block.ln_1.weight, block.ln_1.bias, block.ln_1.eps),
                       (attn.c_attn.weight, attn.c_attn.bias), (attn.c_proj.weight, attn.c_proj.bias),
                       (block.ln_2.weight, block.ln_2.bias, block.ln_2.eps),
                       (mlp.c_fc.weight, mlp.c_fc.bias), (mlp.c_proj.weight, mlp.c_proj.bias),
                       k_buffers[i], v_buffers[i]))
    return layers


def forward_with_static_cache(model: nn.Module, idx: torch.Tensor, cache=None,
                              attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Chapter 5c's ``forward_with_cache`` on the fast path: logits (B, T, V) of the new tokens idx (B, T).

    The cache's keys and values live in buffers for the model's whole context (``block_size`` positions),
    allocated at the first call and written in place; ``cache.layers[l]`` are views of the filled part, so
    ``len(cache)`` and code that reads the cache see what the plain path would give them. Same masking rules as
    ``attend_with_cache``: causal, left padding (attention_mask 0) never read, a padding position reads itself.
    In eval mode, with every layer the fast path's, a step reads the weights directly and calls no module (one
    token at a time, the calls' own overhead is a large part of the time); otherwise it calls the modules.
    """
    t = model.transformer
    B, T = idx.shape
    static = None if cache is None else getattr(cache, "static", None)
    if static is None or static.k.size(1) != B:
        if cache is not None and len(cache):
            raise ValueError("forward_with_static_cache: the cache was filled by the plain path; use one path per "
                             "generation")
        static = _StaticKV(model, B, t.wte.weight)
        if cache is not None:
            cache.static = static
    nh, C = static.nh, static.C
    hs = C // nh
    T_past = static.length
    S = T_past + T
    if attention_mask is None:
        pos = torch.arange(T_past, S, device=idx.device)  # (T,)
    else:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, T_past:]  # (B, T)
    mask, causal = _mask(T_past, T, attention_mask, idx.device)
    if static.weights is not None:  # eval mode, every layer the fast path's: no module calls, no dropout
        x = F.embedding(idx, t.wte.weight) + F.embedding(pos, t.wpe.weight)  # (B, T, C)
        for ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj, k_buf, v_buf in static.weights:
            h = F.layer_norm(x, (C,), *ln_1)
            q, k, v = F.linear(h, *c_attn).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
            keys, values = k_buf[:, :, :S], v_buf[:, :, :S]  # (B, nh, S, hs): views of the buffers
            keys[:, :, T_past:].copy_(k)
            values[:, :, T_past:].copy_(v)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), *c_proj)
            h = F.layer_norm(x, (C,), *ln_2)
            x = x + F.linear(F.gelu(F.linear(h, *c_fc), approximate="tanh"), *mlp_proj)
        logits = F.linear(t.ln_f(x), model.lm_head.weight, model.lm_head.bias)
    else:
        x = t.drop(t.wte(idx) + t.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(t.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
            keys, values = static.k[layer, :, :, :S], static.v[layer, :, :, :S]  # (B, nh, S, hs): views
            keys[:, :, T_past:].copy_(k)
            values[:, :, T_past:].copy_(v)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal)  # (B, nh, T, hs)
            x = x + attn.resid_dropout(attn.c_proj(y.transpose(1, 2).reshape(B, T, C)))
            x = x + block.mlp(block.ln_2(x))
        logits = model.lm_head(t.ln_f(x))  # (B, T, V)
    static.length = S
    if cache is not None:
        cache.layers = [(static.k[i, :, :, :S], static.v[i, :, :, :S]) for i in range(len(t.h))]
    return logits


def _mask(T_past: int, T: int, key_mask: torch.Tensor | None, device) -> tuple[torch.Tensor | None, bool]:
    """(attn_mask, is_causal) for T new queries after T_past cached positions (attend_with_cache's rules)."""
    if key_mask is None:
        if T == 1:
            return None, False  # the newest token reads every key
        if T_past == 0:
            return None, True  # plain causal attention
    S = T_past + T
    q_pos = torch.arange(T_past, S, device=device)
    k_pos = torch.arange(S, device=device)
    allowed = k_pos[None, :] <= q_pos[:, None]  # (T, S)
    if key_mask is not None:
        real = key_mask.bool()[:, None, None, :S]  # (B, 1, 1, S)
        allowed = (allowed & real) | (k_pos[None, :] == q_pos[:, None])  # (B, 1, T, S)
    return allowed, False
