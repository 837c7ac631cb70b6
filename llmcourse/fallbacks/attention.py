"""Chapter 4a's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=attention``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim``: ``torch.softmax``."""
    return torch.softmax(x, dim=dim)


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool: True where query t may attend to key s, that is where s <= t."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k) + mask) v: ``torch.nn.functional.scaled_dot_product_attention``.

    A query that the mask lets read no key at all gets NaN, as the formula gives (a softmax over nothing but
    -inf); PyTorch's built-in returns zeros there, which would hide a mask that forgets such a row."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        allowed = mask if mask.dtype == torch.bool else mask > float("-inf")
        reads_nothing = ~allowed.any(dim=-1, keepdim=True)
        if reads_nothing.any():
            out = out.masked_fill(reads_nothing, float("nan"))
    return out
