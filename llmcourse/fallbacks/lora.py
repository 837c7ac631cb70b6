"""Chapter 6c's exports, in plain PyTorch (``LLMCOURSE_FALLBACK=lora``).

LoRA (Hu et al., 2021) as the ``peft`` library implements it for a linear layer, with its initialisation
(``kaiming_uniform_(a=sqrt(5))`` for A, zeros for B) and its scale ``alpha / r``: the weight update is ``B @ A``
computed with ``F.linear``, merged into the frozen base weight in place. ``tests/test_06c_lora.py`` checks it against
``peft`` on Hugging Face's GPT-2 with the same A and B.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "add_lora", "trainable_parameters"]


def _check_rank_and_alpha(r, alpha) -> None:
    if isinstance(r, bool) or not isinstance(r, numbers.Integral):
        raise TypeError(f"r (the rank) should be an int, got {type(r).__name__} {r!r}")
    if r < 1:
        raise ValueError(f"r (the rank) should be at least 1, got {r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha should be a number, got {type(alpha).__name__} {alpha!r}")
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha should be a positive number (the update is scaled by alpha / r), got {alpha}")


def _check_base(base) -> None:
    if isinstance(base, LoRALinear):
        raise TypeError("the base layer already has LoRA (a LoRALinear): wrap its .base, or add one adapter only")
    if not isinstance(base, nn.Linear):
        raise TypeError(f"LoRA wraps an nn.Linear layer, got {type(base).__name__}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + (x A^T B^T) * alpha / r``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        _check_base(base)
        _check_rank_and_alpha(r, alpha)
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha = int(r), float(alpha)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(self.r, base.in_features, **like))   # (r, in)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))                      # as peft does
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.r, **like))  # (out, r): starts at the base
        self.scaling = self.alpha / self.r
        self.merged = False

    def _delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            raise RuntimeError("this LoRALinear is already merged: unmerge() first")
        self.base.weight.add_(self._delta())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise RuntimeError("this LoRALinear is not merged: there is nothing to unmerge")
        self.base.weight.sub_(self._delta())
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, merged={self.merged}"


def _lora_targets(model: nn.Module, targets) -> tuple[str, ...]:
    """The target names as a tuple; ValueError (listing the model's Linear layers) when none names a Linear."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"add_lora needs an nn.Module, got {type(model).__name__}")
    if isinstance(targets, str):
        targets = (targets,)
    try:
        targets = tuple(targets)
    except TypeError:
        raise TypeError(f"targets should be a tuple of layer names, got {type(targets).__name__}") from None
    if not targets or not all(isinstance(t, str) for t in targets):
        raise TypeError(f"targets should be a non-empty tuple of layer names (str), got {targets!r}")
    wrapped = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoRALinear)})
    if set(targets) & set(wrapped):
        raise ValueError(f"the layers {sorted(set(targets) & set(wrapped))} already have LoRA; add it once")
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    if not any(n.rsplit(".", 1)[-1] in targets for n in linear):
        names = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ValueError(f"targets {targets!r} name no nn.Linear layer of the model; its Linear layers are "
                         f"called {names} (e.g. {linear[:3]})")
    return targets


def add_lora(model: nn.Module, r: int, alpha: float, targets: tuple[str, ...] = ("c_attn",)) -> nn.Module:
    """Freeze every parameter of ``model`` and replace each ``nn.Linear`` whose attribute name is in ``targets``
    by ``LoRALinear(it, r, alpha)``, in place; returns ``model``."""
    _check_rank_and_alpha(r, alpha)
    targets = _lora_targets(model, targets)
    model.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, r, alpha))
    return model


def trainable_parameters(model: nn.Module) -> int:
    """The number of parameters with ``requires_grad`` (a parameter shared by two layers counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
