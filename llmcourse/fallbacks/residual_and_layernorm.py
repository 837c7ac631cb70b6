"""Chapter 4d's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=residual_and_layernorm``).

The block is wired from chapters 4b and 4c through the import mechanism, so it uses the student's attention and
MLP unless those chapters are sent to their fallbacks too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.chapters.feed_forward import MLP
from llmcourse.chapters.multi_head_attention import CausalSelfAttention, GPTConfig  # noqa: F401 (re-exported)


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with an optional bias: ``F.layer_norm``."""

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Block(nn.Module):
    """A pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))
