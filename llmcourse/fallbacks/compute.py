"""Chapter 8b's exports, measured on the model itself and built from PyTorch's own quantization
(``LLMCOURSE_FALLBACK=compute``).

The counts are not formulas here: the parameter count and the training memory are read off a GPT built on the
``meta`` device (shapes without storage, so even GPT-3's shape costs nothing), the KV-cache size off the cache that
chapter 5c's ``forward_with_cache`` fills on that model, and the int8 codes come from
``torch.quantize_per_channel`` (symmetric, zero point 0, one scale per output row).
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn

# the chapter imports these from chapter 5a, so its module re-exports them
from llmcourse.chapters.gpt import GPT, GPTConfig  # noqa: F401

__all__ = ["GPT", "GPTConfig", "count_params", "training_memory", "kv_cache_bytes", "quantize_int8",
           "dequantize_int8", "Int8Linear", "quantize_model"]

_CONFIG_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "bias")


def _check_config(config) -> None:
    missing = [name for name in _CONFIG_FIELDS if not hasattr(config, name)]
    if missing:
        raise TypeError(f"config should be a GPTConfig (with {', '.join(_CONFIG_FIELDS)}), got "
                        f"{type(config).__name__} without {', '.join(missing)}")


def _check_dtype(dtype) -> int:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype should be a floating-point torch.dtype (like torch.float32), got {dtype!r}")
    return dtype.itemsize


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} should be at least 1, got {value}")
    return value


@contextlib.contextmanager
def _no_init():
    """``torch.nn.init``'s functions do nothing inside the block: initialising meta tensors has no use, and
    PyTorch's meta ``normal_`` takes seconds the first time."""
    names = [name for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")]
    old = {name: getattr(nn.init, name) for name in names}
    for name in names:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, f in old.items():
            setattr(nn.init, name, f)


def _meta_gpt(config, dtype=torch.float32) -> nn.Module:
    """GPT(config) on the meta device: every parameter's shape and dtype, no storage."""
    with _no_init(), torch.device("meta"):
        return GPT(config).to(dtype)


def count_params(config) -> int:
    """Every parameter of ``GPT(config)``, the tied token embedding / output weight once."""
    _check_config(config)
    return _meta_gpt(config).num_params()


def training_memory(config, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Bytes of the weights, their gradients and AdamW's two moments (all in ``dtype``), and their total."""
    _check_config(config)
    _check_dtype(dtype)
    params = list(_meta_gpt(config, dtype).parameters())  # each shared parameter once
    weights = sum(p.numel() * p.element_size() for p in params)
    moments = sum(2 * torch.zeros_like(p).numel() * p.element_size() for p in params)  # exp_avg, exp_avg_sq
    return {"weights": weights, "gradients": weights, "optimizer": moments, "total": 2 * weights + moments}


def kv_cache_bytes(config, batch_size: int, context: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the keys and values ``forward_with_cache`` keeps for ``batch_size`` rows of ``context`` tokens."""
    from llmcourse.chapters.generation import KVCache, forward_with_cache

    _check_config(config)
    _check_dtype(dtype)
    _check_count(batch_size, "batch_size")
    _check_count(context, "context")
    if context > config.block_size:
        raise ValueError(f"context={context} is longer than the model's block_size={config.block_size}")
    model = _meta_gpt(config, dtype)
    cache = KVCache(config.n_layer)
    forward_with_cache(model, torch.zeros(batch_size, context, dtype=torch.long, device="meta"), cache)
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in layer)


def _check_weight(w) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w should be a tensor, got {type(w).__name__}")
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"w should be a 2-D floating-point weight (out_features, in_features), got {w.dtype} "
                         f"of shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("w holds NaN or infinite values, which int8 cannot represent")


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.quantize_per_channel`` with absmax scales (max |row| / 127, 1 for a row of zeros): int8 codes
    (out, in) and float32 scales (out,)."""
    _check_weight(w)
    w = w.detach().float()
    scale = w.abs().amax(dim=1) / 127
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.zeros(w.size(0), dtype=torch.long, device=w.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's notice that quantized tensors are deprecated
        q = torch.quantize_per_channel(w, scale.double(), zero, 0, torch.qint8).int_repr()
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 weights back from int8 codes (out, in) and scales (out,): q * scale per row."""
    if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
        raise TypeError("q and scale should be tensors")
    if q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError(f"q should be a 2-D int8 tensor, got {q.dtype} of shape {tuple(q.shape)}")
    if scale.shape != (q.size(0),) or not scale.is_floating_point():
        raise ValueError(f"scale should be a float tensor of shape ({q.size(0)},), one per row of q, got "
                         f"{scale.dtype} of shape {tuple(scale.shape)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros(q.size(0), dtype=torch.long, device=q.device), 0)
        return torch.dequantize(quantized).float()


class Int8Linear(nn.Module):
    """An ``nn.Linear`` stored as int8 codes (``weight_int8``) and per-row ``scale`` buffers; computes in the
    input's dtype with the dequantized weight."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int8Linear quantizes an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_int8(linear.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, dequantize_int8(self.weight_int8, self.scale).to(x.dtype),
                        None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_model(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` of ``model`` whose attribute name is not in ``skip`` by an
    ``Int8Linear``; returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_model needs an nn.Module, got {type(model).__name__}")
    if isinstance(skip, str) or not isinstance(skip, (tuple, list, set, frozenset)) or \
            not all(isinstance(s, str) for s in skip):
        raise TypeError(f"skip should be a tuple of layer names (str), got {skip!r}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name not in skip:
                setattr(parent, name, Int8Linear(child))
    return model
