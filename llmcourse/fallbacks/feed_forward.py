"""Chapter 4c's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=feed_forward``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation: ``F.gelu(x, approximate="tanh")``."""
    return F.gelu(x, approximate="tanh")


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """x * Phi(x), with the normal CDF Phi: ``F.gelu(x)``."""
    return F.gelu(x)


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(0, x), the original Transformer's activation: ``F.relu``."""
    return F.relu(x)


class MLP(nn.Module):
    """GPT-2's position-wise feed-forward network: c_fc (C -> 4C), GELU, c_proj (4C -> C), dropout."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(gelu(self.c_fc(x))))
