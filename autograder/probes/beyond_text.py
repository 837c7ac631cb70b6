"""Outside checks of chapter 8c (the same GPT on pixels): ``image_to_tokens`` / ``tokens_to_image``,
``image_nll`` and ``complete_images``.

Each probe runs its notebook test on the same inputs and returns what that test judges. Where the test compares
with a value it computes itself (the hidden tests' reference tokens, log-likelihoods and greedy completions), the
reference here is the course's fallback, which ``tests/test_08c_beyond_text.py`` checks against the solution. Where
the test judges a property (the probabilities of all continuations sum to 1, the greedy choice is the argmax, the
same seed gives the same samples, sampled frequencies within 0.05 of the model's probabilities), the probe returns
the same property, judged by the same threshold. Random GPTs are the notebook's ``random_gpt``, built here with
the course's chapter 5a (its fallback on both sides).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autograder.probes import Probe, at_most, close, equal, tokens

# ---------------------------------------------------------------------------------------------------------------
# helpers (run in the probe process, on both sides)


def _random_gpt(seed, vocab_size=5, n_layer=2, n_head=2, n_embd=16, block_size=16, std=0.3):
    """The notebook's ``random_gpt``: weight matrices and embeddings ~ N(0, std^2), in ``parameters()`` order."""
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std, generator=gen)
    return model


class _Uniform(nn.Module):
    """The notebook's ``UniformModel``: every logit zero."""

    def __init__(self, vocab_size, block_size):
        from llmcourse.chapters.multi_head_attention import GPTConfig

        super().__init__()
        self.config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=1, n_embd=1)
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.config.vocab_size) + self.unused, None


def _raised(action, error) -> bool:
    """Did ``action()`` raise ``error`` (or a subclass), as the notebook's ``except error`` accepts?"""
    try:
        action()
    except error:
        return True
    except Exception:  # noqa: BLE001 - another error fails the notebook's test as well
        return False
    return False


def _near(target: float, atol: float):
    """The student's number is within ``atol`` of ``target`` (the notebook checks a known value, not the
    reference's)."""

    def compare(got, expected):
        try:
            value = float(np.asarray(got, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            return f"not a number: {got!r:.60}"
        return None if abs(value - target) <= atol else f"{value:.6g}, expected {target:g} within {atol:g}"

    return compare


def _same_within(atol: float, rtol: float):
    """[a, b], two results of the student's own code, agree within ``atol + rtol * |b|`` (as check_close)."""

    def compare(got, expected):
        try:
            a, b = (np.asarray(v, dtype=np.float64) for v in got)
        except (TypeError, ValueError):
            return f"got {got!r:.60}, expected two lists of numbers"
        if a.shape != b.shape:
            return f"shapes {a.shape} and {b.shape} differ"
        if not np.all(np.abs(a - b) <= atol + rtol * np.abs(b)):
            return f"alone {a.tolist()}, in the batch {b.tolist()}"
        return None

    return compare


def _frequencies(atol: float):
    """Sampled frequencies (the student's) within ``atol`` of the model's probabilities (the reference's)."""

    def compare(got, expected):
        try:
            freq = np.asarray(got["freq"], dtype=np.float64)
            probs = np.asarray(expected["probs"], dtype=np.float64)
        except (TypeError, ValueError, KeyError, IndexError):
            return f"got {got!r:.60}, expected sampled frequencies"
        if freq.shape != probs.shape:
            return f"{freq.size} frequencies, expected {probs.size}"
        worst = float(np.max(np.abs(freq - probs)))
        if not worst <= atol:
            return (f"sampled frequencies {np.round(freq, 3).tolist()}, the model's probabilities "
                    f"{np.round(probs, 3).tolist()} (off by {worst:.3f}, {atol:g} allowed)")
        return None

    return compare


# ---------------------------------------------------------------------------------------------------------------
# 8c.1 image_to_tokens, tokens_to_image


def tokens_visible(m):
    from llmcourse import pixels

    out = {}
    image = torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]])
    hand = m.image_to_tokens(image[None], levels=4)
    out["hand"] = hand
    out["hand_dtype"] = str(hand.dtype)
    out["raster"] = m.image_to_tokens(torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]), levels=2)
    out["nearest"] = m.image_to_tokens(torch.tensor([[[0.1, 0.2], [0.55, 0.9]]]), levels=4)
    images = pixels.sample_images(8, seed=0)
    sampled = m.image_to_tokens(images)
    out["sampled"] = sampled
    out["round_trip"] = m.tokens_to_image(sampled)
    out["back"] = m.tokens_to_image(torch.tensor([[4, 0, 1, 2, 3]]), levels=4)
    return out


_TOKENS_VISIBLE = {"hand": equal(), "hand_dtype": equal(), "raster": equal(), "nearest": equal(),
                   "sampled": equal(), "round_trip": close(1e-6, 0.0), "back": close(1e-6, 0.0)}

HIDDEN_IMAGES = [(2, (3, 4, 4)), (3, (2, 5, 7)), (4, (4, 8, 8)), (16, (2, 6, 3))]


def tokens_hidden(m):
    out = {}
    gen = torch.Generator().manual_seed(81)
    for levels, shape in HIDDEN_IMAGES:
        images = torch.rand(shape, generator=gen)
        key = f"{levels}/{'x'.join(map(str, shape))}"
        tokens_ = m.image_to_tokens(images, levels)
        out[f"dtype/{key}"] = str(tokens_.dtype)
        out[f"tokens/{key}"] = tokens_
        out[f"one/{key}"] = m.image_to_tokens(images[0], levels)
        out[f"float64/{key}"] = m.image_to_tokens(images.double(), levels)
        if shape[1] == shape[2]:
            back = m.tokens_to_image(tokens_, levels)
            out[f"back/{key}"] = back
            out[f"round_trip_error/{key}"] = float((back - images).abs().max())
            out[f"back_one/{key}"] = m.tokens_to_image(tokens_[0], levels)
    out["refused"] = [
        _raised(lambda: m.image_to_tokens(torch.zeros(2, 2), 1), ValueError),
        _raised(lambda: m.image_to_tokens(torch.zeros(2, 2, dtype=torch.long)), TypeError),
        _raised(lambda: m.image_to_tokens(torch.full((2, 2), 1.5)), ValueError),
        _raised(lambda: m.tokens_to_image(torch.tensor([0, 0, 1, 2, 3])), ValueError),
        _raised(lambda: m.tokens_to_image(torch.tensor([4, 0, 1, 2])), ValueError)]
    return out


def _tokens_hidden_compare():
    compare = {"refused": equal()}
    for levels, shape in HIDDEN_IMAGES:
        key = f"{levels}/{'x'.join(map(str, shape))}"
        compare |= {f"dtype/{key}": equal(), f"tokens/{key}": equal(), f"one/{key}": equal(),
                    f"float64/{key}": equal(), f"back/{key}": close(1e-6, 0.0), f"back_one/{key}": close(0.0, 0.0),
                    f"round_trip_error/{key}": at_most(0.5 / (levels - 1) + 1e-6)}
    return compare


# ---------------------------------------------------------------------------------------------------------------
# 8c.2 image_nll


def nll_visible(m):
    out = {}
    uniform = _Uniform(vocab_size=5, block_size=16)
    out["uniform"] = m.image_nll(uniform, torch.tensor([[4, 0, 1, 2, 3], [4, 3, 3, 3, 3]]))
    model = _random_gpt(0)
    everything = torch.tensor([[4, a, b] for a in range(5) for b in range(5)])
    nll = m.image_nll(model, everything)
    out["requires_grad"] = bool(nll.requires_grad)
    out["positive"] = bool((nll > 0).all())
    out["total_probability"] = float(torch.exp(-nll.detach().double()).sum())
    out["alone_vs_batch"] = [m.image_nll(model, everything[7:8]).detach().tolist(), nll[7:8].detach().tolist()]
    return out


_NLL_VISIBLE = {"uniform": close(1e-5, 1e-5), "requires_grad": equal(), "positive": equal(),
                "total_probability": _near(1.0, 1e-5), "alone_vs_batch": _same_within(1e-5, 1e-5)}

HIDDEN_NLL = [(1, 5, 16, 4, 17), (2, 3, 8, 3, 5), (3, 9, 12, 2, 13), (4, 5, 16, 5, 2)]


def nll_hidden(m):
    out = {}
    gen = torch.Generator().manual_seed(82)
    for seed, vocab_size, block_size, n, length in HIDDEN_NLL:
        model = _random_gpt(seed, vocab_size=vocab_size, block_size=block_size)
        tokens_ = torch.randint(0, vocab_size, (n, length), generator=gen)
        model.train()
        nll = m.image_nll(model, tokens_)
        out[f"mode_kept/{seed}"] = bool(model.training)
        out[f"requires_grad/{seed}"] = bool(nll.requires_grad)
        out[f"nll/{seed}"] = nll.detach()
    model = _random_gpt(0)
    out["refused"] = [
        _raised(lambda: m.image_nll(model, torch.zeros(2, 18, dtype=torch.long)), ValueError),
        _raised(lambda: m.image_nll(model, torch.zeros(2, 5)), TypeError),
        _raised(lambda: m.image_nll(model, torch.full((2, 5), 5)), ValueError),
        _raised(lambda: m.image_nll("a model", torch.zeros(2, 5, dtype=torch.long)), TypeError)]
    return out


def _nll_hidden_compare():
    compare = {"refused": equal()}
    for seed, *_ in HIDDEN_NLL:
        compare |= {f"mode_kept/{seed}": equal(), f"requires_grad/{seed}": equal(), f"nll/{seed}": close(1e-4, 1e-5)}
    return compare


# ---------------------------------------------------------------------------------------------------------------
# 8c.3 complete_images


def complete_visible(m):
    out = {}
    model = _random_gpt(0)
    prefix = torch.tensor([[4, 0, 1, 2], [4, 3, 3, 3], [4, 0, 0, 0], [4, 2, 2, 1]])
    greedy = m.complete_images(model, prefix, 17, greedy=True)
    out["shape"] = list(greedy.shape)
    out["dtype"] = str(greedy.dtype)
    out["prefix_kept"] = bool(torch.equal(greedy[:, :4], prefix))
    out["no_start"] = bool((greedy[:, 4:] < 4).all())
    with torch.no_grad():
        logits = model(greedy[:, :-1])[0][:, 3:, :4]
    out["greedy_is_argmax"] = bool(torch.equal(greedy[:, 4:], logits.argmax(-1)))
    samples = m.complete_images(model, prefix, 17, generator=torch.Generator().manual_seed(0))
    out["sampled_prefix_and_pixels"] = bool(torch.equal(samples[:, :4], prefix) and (samples[:, 4:] < 4).all())
    again = m.complete_images(model, prefix, 17, generator=torch.Generator().manual_seed(0))
    out["same_seed_same"] = bool(torch.equal(samples, again))
    other = m.complete_images(model, prefix, 17, generator=torch.Generator().manual_seed(1))
    out["other_seed_differs"] = not torch.equal(samples, other)
    return out


HIDDEN_GREEDY = [(1, 5, 16, 1, 17), (2, 3, 8, 3, 9), (3, 9, 12, 5, 10), (4, 5, 16, 6, 6)]
SAMPLING_PREFIXES = [[4], [4, 1], [4, 3, 0], [4, 2, 2, 2]]


def complete_hidden_greedy(m):
    out = {}
    gen = torch.Generator().manual_seed(83)
    for seed, vocab_size, block_size, t0, length in HIDDEN_GREEDY:
        model = _random_gpt(seed, vocab_size=vocab_size, block_size=block_size)
        prefix = torch.cat([torch.full((3, 1), vocab_size - 1),
                            torch.randint(0, vocab_size - 1, (3, t0 - 1), generator=gen)], 1)
        model.train()
        result = m.complete_images(model, prefix, length, greedy=True)
        out[f"mode_kept/{seed}"] = bool(model.training)
        out[f"requires_grad/{seed}"] = bool(result.requires_grad)
        out[f"shape/{seed}"] = list(result.shape)
        out[f"greedy/{seed}"] = result
    return out


def _greedy_compare():
    compare = {}
    for seed, *_ in HIDDEN_GREEDY:
        compare |= {f"mode_kept/{seed}": equal(), f"requires_grad/{seed}": equal(), f"shape/{seed}": equal(),
                    f"greedy/{seed}": tokens()}
    return compare


def complete_hidden_sampling(m):
    """The first sampled pixel of 2000 copies of each prefix against the model's probabilities (the start token
    excluded), with the start token made likely; 50 sampled sequences without it; refused arguments."""
    out = {}
    model = _random_gpt(5)
    with torch.no_grad():
        model.transformer.wte.weight[4] *= 3
    for prefix in SAMPLING_PREFIXES:
        prefix = torch.tensor([prefix])
        result = m.complete_images(model, prefix.repeat(2000, 1), prefix.shape[1] + 1,
                                   generator=torch.Generator().manual_seed(prefix.shape[1]))
        freq = torch.bincount(result[:, -1].clamp(0, 4), minlength=5).double() / 2000
        with torch.no_grad():
            logits = model(prefix)[0][0, -1].clone()
        logits[4] = -math.inf
        out[f"first_pixel/{prefix.shape[1]}"] = {"freq": freq.tolist(),
                                                 "probs": F.softmax(logits.double(), -1).tolist()}
    many = m.complete_images(model, torch.full((50, 1), 4), 17, generator=torch.Generator().manual_seed(9))
    out["no_start"] = bool((many[:, 1:] < 4).all())
    out["refused"] = [
        _raised(lambda: m.complete_images(model, torch.full((2, 1), 4), 18), ValueError),
        _raised(lambda: m.complete_images(model, torch.full((2, 3), 4), 2), ValueError),
        _raised(lambda: m.complete_images(model, torch.full((2, 1), 4.0), 5), TypeError),
        _raised(lambda: m.complete_images(model, torch.full((2, 1), 4), 5, generator=0), TypeError)]
    return out


_SAMPLING = {f"first_pixel/{len(p)}": _frequencies(0.05) for p in SAMPLING_PREFIXES} | {
    "no_start": equal(), "refused": equal()}


PROBES = [
    Probe("test_pixels_as_tokens", tokens_visible, _TOKENS_VISIBLE),
    Probe("test_pixels_as_tokens_hidden", tokens_hidden, _tokens_hidden_compare()),
    Probe("test_image_nll", nll_visible, _NLL_VISIBLE),
    Probe("test_image_nll_hidden", nll_hidden, _nll_hidden_compare()),
    Probe("test_complete_images", complete_visible, equal()),
    Probe("test_complete_images_hidden", complete_hidden_greedy, _greedy_compare(), name="greedy"),
    Probe("test_complete_images_hidden", complete_hidden_sampling, _SAMPLING, name="sampling"),
]
