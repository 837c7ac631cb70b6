"""Chapter 8c's exports, in plain PyTorch (``LLMCOURSE_FALLBACK=beyond_text``).

Pixels as tokens: grey values quantised with ``torch.round`` in raster order behind a start token (the id
``levels``); the negative log-likelihood of a sequence from ``F.cross_entropy`` (``reduction="none"``) summed over
its positions; completion one token at a time with the start token's logit at -inf, greedy (``argmax``) or sampled
(``torch.multinomial`` of the softmax with the caller's generator). ``tests/test_08c_beyond_text.py`` checks these
against the solution and against the generator's exact distribution (``llmcourse.pixels``).
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.pixels import LEVELS

__all__ = ["image_to_tokens", "tokens_to_image", "image_nll", "complete_images"]


def _integer_tensor(value, name: str) -> None:
    if not isinstance(value, torch.Tensor) or value.is_floating_point() or value.is_complex() or \
            value.dtype == torch.bool:
        kind = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
        raise TypeError(f"{name} should be an integer tensor of token ids, got {kind}")


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral):
        raise TypeError(f"levels should be an int (the number of grey levels), got {type(levels).__name__} "
                        f"{levels!r}")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels should be between 2 and 256, got {levels}")
    return int(levels)


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        kind = f"a {images.dtype} tensor" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images should be a float tensor of grey values in [0, 1], got {kind}")
    if images.dim() not in (2, 3) or 0 in images.shape[-2:]:
        raise ValueError(f"images should be (H, W) or (N, H, W) with H, W >= 1, got shape {tuple(images.shape)}")
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError("grey values should lie in [0, 1] (and not be NaN)")


def _check_tokens(tokens, levels: int) -> int:
    _integer_tensor(tokens, "tokens")
    if tokens.dim() not in (1, 2) or tokens.shape[-1] < 2:
        raise ValueError(f"tokens should be (1 + H*W,) or (N, 1 + H*W), got shape {tuple(tokens.shape)}")
    side = math.isqrt(tokens.shape[-1] - 1)
    if side * side != tokens.shape[-1] - 1:
        raise ValueError(f"{tokens.shape[-1]} tokens are a start token and {tokens.shape[-1] - 1} pixels, which "
                         "is not a square image")
    if tokens.numel() and not bool((tokens[..., 0] == levels).all()):
        raise ValueError(f"every sequence should begin with the start token {levels} (= levels)")
    if tokens.numel() and not bool(((tokens[..., 1:] >= 0) & (tokens[..., 1:] < levels)).all()):
        raise ValueError(f"pixel tokens should be grey levels 0 .. {levels - 1}")
    return side


def _check_model(model) -> tuple[int, int]:
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or not hasattr(config, "block_size") or not hasattr(config, "vocab_size"):
        raise TypeError(f"model should be a GPT (an nn.Module with .config.block_size and .config.vocab_size), got "
                        f"{type(model).__name__}")
    return config.block_size, config.vocab_size


def _check_sequences(model, tokens, least: int = 2, name: str = "tokens") -> None:
    block_size, vocab_size = _check_model(model)
    _integer_tensor(tokens, name)
    if tokens.dim() != 2 or tokens.shape[0] < 1 or not least <= tokens.shape[1] <= block_size + 1:
        raise ValueError(f"{name} should be (N, L) with N >= 1 and {least} <= L <= block_size + 1 = "
                         f"{block_size + 1}, got shape {tuple(tokens.shape)}")
    if not bool(((tokens >= 0) & (tokens < vocab_size)).all()):
        raise ValueError(f"{name} should be ids 0 .. {vocab_size - 1} (the model's vocabulary)")


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(mode)


def image_to_tokens(images: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """(H, W) or (N, H, W) grey values in [0, 1] -> (1 + H*W,) or (N, 1 + H*W) torch.long: the start token
    ``levels``, then round(v * (levels - 1)) in raster order."""
    levels = _check_levels(levels)
    _check_images(images)
    ids = torch.round(images.flatten(-2) * (levels - 1)).to(torch.long)
    return F.pad(ids, (1, 0), value=levels)


def tokens_to_image(tokens: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """(1 + S*S,) or (N, 1 + S*S) token ids, the start token first -> (S, S) or (N, S, S) float32 grey values."""
    levels = _check_levels(levels)
    side = _check_tokens(tokens, levels)
    return (tokens[..., 1:].to(torch.float32) / (levels - 1)).unflatten(-1, (side, side))


@torch.no_grad()
def image_nll(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """(N, L) token ids -> (N,): -sum_t log p(tokens[:, t] | tokens[:, :t]) for t = 1 .. L-1, in nats."""
    _check_sequences(model, tokens)
    with _evaluating(model):
        logits = model(tokens[:, :-1])[0].float()
        return F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none").sum(dim=1)


def _check_completion(model, prefix, length, greedy, generator) -> None:
    block_size, _ = _check_model(model)
    _check_sequences(model, prefix, least=1, name="prefix")
    if isinstance(length, bool) or not isinstance(length, numbers.Integral):
        raise TypeError(f"length should be an int, got {type(length).__name__} {length!r}")
    if not prefix.shape[1] <= length <= block_size + 1:
        raise ValueError(f"length should be between the prefix's {prefix.shape[1]} tokens and block_size + 1 = "
                         f"{block_size + 1}, got {length}")
    if not isinstance(greedy, bool):
        raise TypeError(f"greedy should be True or False, got {greedy!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator should be a torch.Generator or None, got {type(generator).__name__}")


@torch.no_grad()
def complete_images(model: nn.Module, prefix: torch.Tensor, length: int, greedy: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each row of prefix (N, T0) to ``length`` tokens, never choosing the start token (the last id)."""
    _check_completion(model, prefix, length, greedy, generator)
    excluded = model.config.vocab_size - 1
    out = prefix
    with _evaluating(model):
        for _ in range(length - prefix.shape[1]):
            logits = model(out)[0][:, -1, :].masked_fill(
                torch.arange(model.config.vocab_size, device=out.device) == excluded, -math.inf)
            if greedy:
                chosen = torch.argmax(logits, dim=-1, keepdim=True)
            else:
                chosen = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            out = torch.cat([out, chosen], dim=1)
    return out
