"""Chapter 8d's exports, in plain PyTorch (``LLMCOURSE_FALLBACK=bias``).

``continuation_log_prob`` is the model's own next-token log-softmax gathered at the continuation's tokens (the
window cropped to the model's last ``block_size`` tokens); ``association_score`` averages the difference of two
words' log-probabilities over contexts; ``count_association`` counts, word by word, which of two words follows a cue
in a text. ``tests/test_08d_bias.py`` checks the first against the model's own cross-entropy loss and against a
model whose next-token probabilities are known, and the counts against the generator's exact probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["continuation_log_prob", "association_score", "count_association"]


def _token_ids(ids, name: str) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or torch.is_floating_point(ids) or ids.dtype == torch.bool:
            raise TypeError(f"{name} should be a 1-D tensor or list of token ids, got a {ids.dtype} tensor of shape "
                            f"{tuple(ids.shape)}")
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{name} should be a list of token ids, got {type(ids).__name__}")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise TypeError(f"{name} should hold int token ids, got {ids!r:.60}")
    if not ids:
        raise ValueError(f"{name} is empty: it needs at least one token")
    if min(ids) < 0:
        raise ValueError(f"{name} holds a negative token id: {min(ids)}")
    return list(ids)


def _check_word(word, name: str) -> str:
    if not isinstance(word, str):
        raise TypeError(f"{name} should be a word (a str), got {type(word).__name__}")
    if not word or word.split() != [word]:
        raise ValueError(f"{name} should be one word without spaces, got {word!r}")
    return word


def continuation_log_prob(model: nn.Module, context, continuation) -> float:
    """log P(continuation | context) under ``model``: the sum of its tokens' log-probabilities, in nats."""
    context = _token_ids(context, "context")
    continuation = _token_ids(continuation, "continuation")
    block_size = model.config.block_size
    if len(continuation) > block_size:
        raise ValueError(f"the continuation has {len(continuation)} tokens, more than block_size={block_size}")
    ids = torch.tensor(context + continuation)
    inputs, targets = ids[:-1][-block_size:], ids[1:][-block_size:]  # (T,), (T,)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(inputs[None].to(device))[0][0]  # (T, vocab)
    finally:
        model.train(was_training)
    log_probs = F.log_softmax(logits.float(), dim=-1).cpu()  # (T, vocab)
    n = len(continuation)
    return float(log_probs[-n:].gather(1, targets[-n:, None]).double().sum())


def association_score(model: nn.Module, encode: Callable[[str], list[int]], contexts: Sequence[str],
                      a: str = "he", b: str = "she") -> float:
    """Mean over ``contexts`` of log P(" " + a | context) - log P(" " + b | context), in nats."""
    _check_word(a, "a")
    _check_word(b, "b")
    if a == b:
        raise ValueError(f"a and b are the same word {a!r}: the score compares two different words")
    if isinstance(contexts, str) or not isinstance(contexts, Sequence):
        raise TypeError(f"contexts should be a list of texts, got {type(contexts).__name__}")
    if not contexts:
        raise ValueError("contexts is empty: the score is an average over at least one context")
    for context in contexts:
        if not isinstance(context, str) or not context.strip() or context != context.rstrip():
            raise ValueError(f"each context should be non-empty text that does not end in a space, got {context!r:.60}")
    total = 0.0
    for context in contexts:
        ids = encode(context)
        total += continuation_log_prob(model, ids, encode(" " + a)) - continuation_log_prob(model, ids, encode(" " + b))
    return total / len(contexts)


def count_association(text: str, cue: str, a: str = "he", b: str = "she") -> tuple[int, int]:
    """(times the whole words of ``cue`` are followed by the word ``a``, ... by ``b``) in ``text``."""
    if not isinstance(text, str):
        raise TypeError(f"text should be a str, got {type(text).__name__}")
    if not isinstance(cue, str):
        raise TypeError(f"cue should be a str, got {type(cue).__name__}")
    _check_word(a, "a")
    _check_word(b, "b")
    if a == b:
        raise ValueError(f"a and b are the same word {a!r}: count two different words")
    cue_words = cue.split()
    if not cue_words:
        raise ValueError("cue is empty: give the words that come before the pronoun, e.g. 'doctor says that'")
    words, k = text.split(), len(cue_words)
    following = [words[i + k] for i in range(len(words) - k) if words[i:i + k] == cue_words]
    return following.count(a), following.count(b)
