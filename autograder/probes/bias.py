"""Outside checks of chapter 8d (data bias): ``continuation_log_prob``, ``association_score`` and
``count_association``.

Each probe runs its notebook test's cases. The notebook compares with the model's own cross-entropy loss, with
hand-computed scores of a model whose next-token probabilities are fixed, and with counts; here the reference is
the course's fallback on the same inputs (``tests/test_08d_bias.py`` checks the fallback against the model's loss,
the fixed model and a regular-expression count). Models are built from fixed seeds, so both sides hold the same
numbers. Log-probabilities agree within atol = rtol = 1e-4, the notebook's own tolerance (float32 logits, sums
in another order differ by about 1e-6); counts and errors must be equal.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from autograder.probes import Probe, close, equal
from autograder.probes import raised as _raises

NUMBER = close(1e-4, 1e-4, dtype=False)


def _random_gpt(seed, vocab_size=20, n_layer=2, n_head=2, n_embd=16, block_size=8, std=0.3, dropout=0.0):
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd, dropout=dropout)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda item: item[0]):
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


class _FixedNextToken(nn.Module):
    """The notebook's stand-in for a GPT: the same next-token probabilities after any context."""

    def __init__(self, probs, block_size=8):
        super().__init__()
        from llmcourse.chapters.multi_head_attention import GPTConfig

        self.config = GPTConfig(block_size=block_size, vocab_size=len(probs), n_layer=1, n_head=1, n_embd=4)
        self.log_probs = nn.Parameter(torch.tensor(probs).log(), requires_grad=False)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        return self.log_probs.expand(B, T, -1), None



def _number(value):
    """A float result as a number, or its type's name (so a non-float fails the comparison with a clear message)."""
    return float(value) if isinstance(value, float) else f"not a float: {type(value).__name__}"


# ---------------------------------------------------------------------------------------------------------------
# 8d.1 continuation_log_prob


def log_prob_visible(m):
    model = _random_gpt(0)
    context = [3, 1, 4, 1]
    one = m.continuation_log_prob(model, context, [5])
    return {"is_float": isinstance(one, float), "one": _number(one),
            "next_tokens": [_number(m.continuation_log_prob(model, context, [t])) for t in range(20)],
            "two": _number(m.continuation_log_prob(model, context, [5, 9])),
            "then_9": _number(m.continuation_log_prob(model, context + [5], [9]))}


HIDDEN_CASES = [(1, 1, 1), (2, 3, 4), (3, 7, 1), (4, 12, 3), (5, 30, 8), (6, 2, 8)]


def log_prob_hidden(m):
    out = {}
    gen = torch.Generator().manual_seed(81)
    for seed, n_context, n_cont in HIDDEN_CASES:
        model = _random_gpt(seed)
        context = torch.randint(0, 20, (n_context,), generator=gen).tolist()
        continuation = torch.randint(0, 20, (n_cont,), generator=gen).tolist()
        out[f"lists/{seed}"] = _number(m.continuation_log_prob(model, context, continuation))
        out[f"tensors/{seed}"] = _number(m.continuation_log_prob(model, torch.tensor(context),
                                                                 torch.tensor(continuation)))
    model = _random_gpt(7, dropout=0.5).train()
    out["dropout"] = [_number(m.continuation_log_prob(model, [1, 2, 3], [4, 5])) for _ in range(3)]
    out["still_training"] = bool(model.training)
    model = _random_gpt(8).eval()
    m.continuation_log_prob(model, [1], [2])
    out["still_eval"] = not model.training
    out["refused"] = [_raises(lambda bad=bad: m.continuation_log_prob(model, *bad)) for bad in
                      [([], [1]), ([1], []), ([1], [1] * 9), (torch.tensor([1.0]), [1]), ([1], "ab")]]
    return out


_HIDDEN_LOG_PROB = {"still_training": equal(), "still_eval": equal(), "refused": equal(), "dropout": NUMBER} | {
    f"{kind}/{seed}": NUMBER for seed, _, _ in HIDDEN_CASES for kind in ("lists", "tensors")}


# ---------------------------------------------------------------------------------------------------------------
# 8d.2 association_score

_TOY = ["the", "doctor", "says", "that", "he", "she", "s", "."]
_PROBS = [0.05, 0.05, 0.05, 0.05, 0.5, 0.125, 0.125, 0.05]


def _toy_encode(text):
    return [_TOY.index(w) for w in text.split()]


def _split_she(text):
    return [i for w in text.split() for i in ([6, 4] if w == "she" else [_TOY.index(w)])]


def score_visible(m):
    model = _FixedNextToken(_PROBS)
    contexts = ["the doctor says that", "doctor says that", "that"]
    score = m.association_score(model, _toy_encode, contexts)
    return {"is_float": isinstance(score, float), "score": _number(score),
            "swapped": _number(m.association_score(model, _toy_encode, contexts, a="she", b="he")),
            "two_token_she": _number(m.association_score(model, _split_she, contexts))}


CONTEXTS = ["the doctor says that", "tom sees a red ball . a busy teacher says that",
            "she runs to the old house . my cat likes it . the farmer says that", "baker"]
PAIRS = [("he", "she"), ("doctor", "teacher"), ("sailor", "it")]


def score_hidden(m):
    import llmcourse
    from llmcourse.chapters.tokens_and_positions import BPETokenizer

    tokenizer = BPETokenizer.load(Path(llmcourse.__file__).parent / "checkpoints" / "course-tiny")
    model = _random_gpt(11, vocab_size=tokenizer.vocab_size, block_size=16, n_embd=32)
    out = {}
    for a, b in PAIRS:
        out[f"{a}-{b}"] = _number(m.association_score(model, tokenizer.encode, CONTEXTS, a, b))
        out[f"{a}-{b}/each"] = [_number(m.association_score(model, tokenizer.encode, [c], a, b)) for c in CONTEXTS]
    out["refused"] = [_raises(lambda bad=bad: m.association_score(model, tokenizer.encode, *bad)) for bad in
                      [([],), ("the doctor says that",), (["ok "],), (CONTEXTS, "he", "he"), (CONTEXTS, "he", "sh e")]]
    return out


_HIDDEN_SCORE = {"refused": equal()} | {f"{a}-{b}{each}": NUMBER for a, b in PAIRS for each in ("", "/each")}


# ---------------------------------------------------------------------------------------------------------------
# 8d.3 count_association

_VISIBLE_TEXT = ("the doctor says that he runs . a doctor says that she sings . tom sleeps . "
                 "the old doctor says that he sits . the teacher says that she reads .")


def _counts(value):
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else f"not a pair: {type(value).__name__}"


def count_visible(m):
    return {"doctor": _counts(m.count_association(_VISIBLE_TEXT, "doctor says that")),
            "teacher": _counts(m.count_association(_VISIBLE_TEXT, "teacher says that")),
            "swapped": _counts(m.count_association(_VISIBLE_TEXT, "says that", "she", "he")),
            "absent": _counts(m.count_association(_VISIBLE_TEXT, "baker says that"))}


COUNT_CASES = [
    ("the headteacher says that he runs . the teacher says that she runs .", "teacher says that"),
    ("doctor says that henry runs . the doctor says that he runs .", "doctor says that"),
    ("doctor says that he", "doctor says that"),
    ("the doctor says that", "doctor says that"),
    ("a doctor  says that\nshe sings .\tthe doctor says that he", "doctor says that"),
    ("the doctor says that he says that she runs .", "says that"),
    ("the doctor says thathe runs . the doctor says that shes .", "doctor says that"),
    ("he she he", "he"),
]


def count_hidden(m):
    from llmcourse.data import BIASED_ASSOCIATION, association_train_val_text

    out = {}
    for i, (text, cue) in enumerate(COUNT_CASES):
        out[f"case/{i}"] = _counts(m.count_association(text, cue))
        out[f"swapped/{i}"] = _counts(m.count_association(text, cue, "she", "he"))
    text = association_train_val_text(20_000, 0, seed=3)[0]
    for occupation in BIASED_ASSOCIATION:
        out[f"generated/{occupation}"] = _counts(m.count_association(text, f"{occupation} says that"))
    refused = [(None, "doctor"), ("text", ""), ("text", "doctor", "he", "he"), ("text", "doctor", "he", "s he")]
    out["refused"] = [_raises(lambda bad=bad: m.count_association(*bad)) for bad in refused]
    return out


PROBES = [
    Probe("test_continuation_log_prob", log_prob_visible, {"is_float": equal(), "one": NUMBER, "next_tokens": NUMBER,
                                                           "two": NUMBER, "then_9": NUMBER}),
    Probe("test_continuation_log_prob_hidden", log_prob_hidden, _HIDDEN_LOG_PROB),
    Probe("test_association_score", score_visible, {"is_float": equal(), "score": NUMBER, "swapped": NUMBER,
                                                    "two_token_she": NUMBER}),
    Probe("test_association_score_hidden", score_hidden, _HIDDEN_SCORE),
    Probe("test_count_association", count_visible, equal()),
    Probe("test_count_association_hidden", count_hidden, equal()),
]

assert math.isclose(sum(_PROBS), 1.0)
