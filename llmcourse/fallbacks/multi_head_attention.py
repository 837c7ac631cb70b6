"""Chapter 4b's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=multi_head_attention``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# the chapter imports these from chapter 4a, so its module re-exports them; here they are 4a's fallbacks
from llmcourse.fallbacks.attention import causal_mask, scaled_dot_product_attention  # noqa: F401


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT. Defaults are GPT-2 small's (124M parameters)."""

    block_size: int = 1024  # longest sequence the model reads: the number of learned positions
    vocab_size: int = 50257  # GPT-2's: 256 bytes + 50,000 merges + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in the Linear layers and LayerNorms, as in GPT-2

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs): head h gets channels h*hs .. (h+1)*hs - 1."""
    return x.unflatten(-1, (n_head, -1)).transpose(1, 2)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, nh * hs): the inverse of ``split_heads``."""
    return y.transpose(1, 2).flatten(-2)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's parameter names, on ``F.scaled_dot_product_attention``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # as in chapter 4b: False means code that reads this flag (chapter 5c's cached attention) uses chapter 4a's
        # scaled_dot_product_attention; this module's own forward is PyTorch's fused kernel either way
        self.use_torch_sdpa = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
