"""Chapter 2's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=language_models``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _token_ids(tokens, vocab_size: int, sequence: bool = False) -> torch.Tensor:
    t = torch.as_tensor(tokens)
    if t.numel() == 0:
        t = t.to(torch.long)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"token ids must be integers, got a tensor of {t.dtype}")
    t = t.to(torch.long)
    if sequence and t.dim() != 1:
        raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(t.shape)}")
    if t.numel() and not bool(((t >= 0) & (t < vocab_size)).all()):
        raise ValueError(f"token ids must be in [0, {vocab_size})")
    return t


class CharTokenizer:
    """Characters <-> token ids (position in ``alphabet``), through a code-point lookup table."""

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"the alphabet has a repeated character: {alphabet!r}")
        self.alphabet = alphabet
        self.vocab_size = len(alphabet)
        points = self._code_points(alphabet)
        self._lookup = torch.full((int(points.max()) + 2 if len(points) else 1,), -1, dtype=torch.long)
        self._lookup[points] = torch.arange(len(points))
        self._points = points

    @staticmethod
    def _code_points(text: str) -> torch.Tensor:
        if not text:
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).to(torch.long)

    def encode(self, text: str) -> torch.Tensor:
        points = self._code_points(text).clamp(max=len(self._lookup) - 1)
        ids = self._lookup[points]
        if (ids < 0).any():
            bad = text[int((ids < 0).nonzero()[0])]
            raise ValueError(f"character {bad!r} is not in the alphabet {self.alphabet!r}")
        return ids

    def decode(self, ids) -> str:
        points = self._points[_token_ids(ids, self.vocab_size, sequence=True)].to(torch.int32)
        return points.numpy().tobytes().decode("utf-32-le") if len(points) else ""


class BigramModel:
    """Bigram counts from ``torch.bincount``; add-k probabilities by L1-normalising counts + k."""

    def __init__(self, vocab_size: int, k: float = 1.0):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        if not k >= 0:
            raise ValueError(f"k must be >= 0, got {k!r}")
        self.vocab_size = vocab_size
        self.k = float(k)
        self.counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)

    def fit(self, tokens) -> BigramModel:
        t = _token_ids(tokens, self.vocab_size, sequence=True)
        V = self.vocab_size
        pairs = t[:-1] * V + t[1:]
        self.counts = torch.bincount(pairs, minlength=V * V).reshape(V, V).to(torch.float64)
        return self

    def next_token_probs(self, previous) -> torch.Tensor:
        rows = self.counts[_token_ids(previous, self.vocab_size)]
        return F.normalize(rows + self.k, p=1.0, dim=-1, eps=0.0)


def sample_tokens(model, first: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Inverse-CDF sampling: a uniform from ``generator`` located in the cumulative next-token probabilities."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    out = torch.empty(n + 1, dtype=torch.long)
    out[0] = int(_token_ids(first, model.vocab_size))
    uniforms = torch.rand(n, generator=generator, dtype=torch.float64)
    for i in range(n):
        cdf = torch.cumsum(model.next_token_probs(out[i]), dim=-1)
        out[i + 1] = torch.searchsorted(cdf, uniforms[i] * cdf[-1], right=True).clamp(max=model.vocab_size - 1)
    return out


def sequence_log_prob(model, tokens) -> float:
    t = _token_ids(tokens, model.vocab_size, sequence=True)
    if t.numel() < 2:
        return 0.0
    log_probs = torch.log(model.next_token_probs(t[:-1]))
    return -F.nll_loss(log_probs, t[1:], reduction="sum").item()


def cross_entropy_per_token(model, tokens) -> float:
    t = _token_ids(tokens, model.vocab_size, sequence=True)
    if t.numel() < 2:
        raise ValueError(f"cross-entropy needs at least 2 tokens (one prediction), got {t.numel()}")
    return F.nll_loss(torch.log(model.next_token_probs(t[:-1])), t[1:], reduction="mean").item()


def perplexity(model, tokens) -> float:
    return math.exp(cross_entropy_per_token(model, tokens))
