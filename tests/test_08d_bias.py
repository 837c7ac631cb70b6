"""Chapter 8d: every graded test rejects plausible wrong answers; the public fallback agrees with the solution, with
the model's own loss and with hand-computed scores; the corpus generator of ``llmcourse.data`` ("chapter 8d") has
exactly the association it states, is deterministic, and refuses bad input.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests

from llmcourse import data

CHAPTER = "08d_bias"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

LOG_PROB = {"test_continuation_log_prob", "test_continuation_log_prob_hidden"}
SCORE = {"test_association_score", "test_association_score_hidden"}
COUNT = {"test_count_association", "test_count_association_hidden"}
SCORE_HIDDEN = {"test_association_score_hidden"}  # the visible test's model gives log-probabilities whatever it reads
HIDDEN = {"test_continuation_log_prob_hidden", "test_association_score_hidden", "test_count_association_hidden"}

edit = solution_editor(SOLUTION)

_MEAN_OF_PROBABILITIES = """    def p(word):
        return sum(math.exp(continuation_log_prob(model, encode(c), encode(" " + word))) for c in contexts)

    return math.log(p(a) / p(b))
"""

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it). A mistake in
# continuation_log_prob also shows in 8d.2's tests, whose scores are made of it (in the visible one unless the
# mistake is invisible on a model whose outputs are log-probabilities that do not depend on its input).
WRONG_ANSWERS = {
    # 8d.1 continuation_log_prob
    "off by one: the model is fed the tokens it should predict": ("continuation_log_prob", edit(
        "continuation_log_prob", ("inputs, targets = ids[:-1][-block_size:], ids[1:][-block_size:]",
                                  "inputs, targets = ids[1:][-block_size:], ids[1:][-block_size:]")),
        LOG_PROB | SCORE_HIDDEN),
    "probabilities instead of log-probabilities": ("continuation_log_prob", edit(
        "continuation_log_prob", ("F.log_softmax(logits.float(), dim=-1)", "F.softmax(logits.float(), dim=-1)")),
        LOG_PROB | SCORE),
    "log_softmax over the positions, not the vocabulary": ("continuation_log_prob", edit(
        "continuation_log_prob", ("F.log_softmax(logits.float(), dim=-1)", "F.log_softmax(logits.float(), dim=0)")),
        LOG_PROB | SCORE),
    "raw logits, not normalised": ("continuation_log_prob", edit(
        "continuation_log_prob", ("F.log_softmax(logits.float(), dim=-1).cpu()", "logits.float().cpu()")),
        LOG_PROB | SCORE_HIDDEN),
    "no cropping to block_size (a long context fails)": ("continuation_log_prob", edit(
        "continuation_log_prob", ("inputs, targets = ids[:-1][-block_size:], ids[1:][-block_size:]",
                                  "inputs, targets = ids[:-1], ids[1:]")), HIDDEN - COUNT),
    "cropping that keeps the first block_size tokens, not the last": ("continuation_log_prob", edit(
        "continuation_log_prob", ("inputs, targets = ids[:-1][-block_size:], ids[1:][-block_size:]",
                                  "inputs, targets = ids[:-1][:block_size], ids[1:][:block_size]")), HIDDEN - COUNT),
    "mean over the continuation's tokens instead of the sum": ("continuation_log_prob", edit(
        "continuation_log_prob", ("float(picked.double().sum())", "float(picked.double().mean())")),
        LOG_PROB | SCORE),
    "only the continuation's first token": ("continuation_log_prob", edit(
        "continuation_log_prob", ("picked = log_probs[-n:].gather(1, targets[-n:, None])",
                                  "picked = log_probs[-n:-n + 1].gather(1, targets[-n:-n + 1, None])")),
        LOG_PROB | SCORE),
    "the model read in training mode (dropout on)": ("continuation_log_prob", edit(
        "continuation_log_prob", ("    model.eval()\n", "")), {"test_continuation_log_prob_hidden"}),
    "the model left in eval mode": ("continuation_log_prob", edit(
        "continuation_log_prob", ("        model.train(was_training)\n", "        pass\n")),
        {"test_continuation_log_prob_hidden"}),
    # 8d.2 association_score
    "the words encoded without their leading space": ("association_score", edit(
        "association_score", ('encode(" " + a)', "encode(a)"), ('encode(" " + b)', "encode(b)")),
        {"test_association_score_hidden"}),
    "b against a (the sign flipped)": ("association_score", edit(
        "association_score", ('continuation_log_prob(model, ids, encode(" " + a)) - continuation_log_prob(model, ids, '
                              'encode(" " + b))', 'continuation_log_prob(model, ids, encode(" " + b)) - '
                              'continuation_log_prob(model, ids, encode(" " + a))')), SCORE),
    "the sum over the contexts, not the mean": ("association_score", edit(
        "association_score", ("return total / len(contexts)", "return total")), SCORE),
    "the log of the ratio of mean probabilities": ("association_score", edit(
        "association_score", ("""    total = 0.0
    for context in contexts:
        ids = encode(context)
        total += continuation_log_prob(model, ids, encode(" " + a)) - continuation_log_prob(model, ids, encode(" " + b))
    return total / len(contexts)
""", _MEAN_OF_PROBABILITIES)), {"test_association_score_hidden"}),
    "only each word's first token": ("association_score", edit(
        "association_score", ('encode(" " + a)', 'encode(" " + a)[:1]'), ('encode(" " + b)', 'encode(" " + b)[:1]')),
        SCORE),
    # 8d.3 count_association
    "substrings, not whole words (text.count)": ("count_association", edit(
        "count_association", ("""    words, cue_words = text.split(), cue.split()
    k = len(cue_words)
    following = [words[i + k] for i in range(len(words) - k) if words[i:i + k] == cue_words]
    return following.count(a), following.count(b)
""", """    return text.count(f"{cue} {a}"), text.count(f"{cue} {b}")
""")), {"test_count_association_hidden"}),
    "the cue matched inside a longer word (no boundary before it)": ("count_association", edit(
        "count_association", ("""    words, cue_words = text.split(), cue.split()
    k = len(cue_words)
    following = [words[i + k] for i in range(len(words) - k) if words[i:i + k] == cue_words]
""", """    import re
    following = re.findall(re.escape(" ".join(cue.split())) + r" (\\S+)", text)
""")), {"test_count_association_hidden"}),
    "(n_a, n_a + n_b) instead of (n_a, n_b)": ("count_association", edit(
        "count_association", ("return following.count(a), following.count(b)",
                              "return following.count(a), following.count(a) + following.count(b)")), COUNT),
    "words split at single spaces only": ("count_association", edit(
        "count_association", ("words, cue_words = text.split(), cue.split()",
                              "words, cue_words = text.split(' '), cue.split()")), {"test_count_association_hidden"}),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the fallback against the solution, the model's own loss and hand-computed scores


def _random_gpt(seed, vocab_size=30, block_size=8, dropout=0.0):
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16,
                          dropout=dropout)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=gen)
    return model


def test_fallback_agrees_with_solution(monkeypatch, fallback_gpt):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.setenv("LLMCOURSE_FALLBACK", ",".join(m for m in ("gpt", "multi_head_attention",
                                                                  "residual_and_layernorm", "attention",
                                                                  "feed_forward", "tokens_and_positions")))
    from llmcourse.chapters import bias as ours
    from llmcourse.chapters import reload_all
    from llmcourse.fallbacks import bias as fallback

    reload_all()
    from llmcourse.chapters import bias as ours  # noqa: F811 - reloaded from the solutions

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"continuation_log_prob", "association_score", "count_association"}
    assert public <= set(vars(fallback))
    gen = torch.Generator().manual_seed(0)
    for seed in range(6):
        model = _random_gpt(seed)
        context = torch.randint(0, 30, (int(torch.randint(1, 20, (1,), generator=gen)),), generator=gen).tolist()
        continuation = torch.randint(0, 30, (int(torch.randint(1, 9, (1,), generator=gen)),), generator=gen).tolist()
        a = ours.continuation_log_prob(model, context, continuation)
        b = fallback.continuation_log_prob(model, context, continuation)
        assert isinstance(a, float) and isinstance(b, float)
        assert a == pytest.approx(b, abs=1e-5, rel=1e-5)
    vocab = "the doctor teacher says that he she runs .".split()

    def encode(text):
        return [vocab.index(w) for w in text.split()]

    model = _random_gpt(9)
    contexts = ["the doctor says that", "he runs . the teacher says that", "that"]
    assert ours.association_score(model, encode, contexts) == pytest.approx(
        fallback.association_score(model, encode, contexts), abs=1e-5)
    text = data.association_corpus(30_000, seed=4)
    for cue in ("doctor says that", "says that", "the", "teacher says"):
        for words in (("he", "she"), ("she", "he"), ("runs", "he")):
            assert ours.count_association(text, cue, *words) == fallback.count_association(text, cue, *words)
    for impl in (ours, fallback):
        with pytest.raises(ValueError):
            impl.continuation_log_prob(model, [], [1])
        with pytest.raises(ValueError):
            impl.association_score(model, encode, contexts, "he", "he")
        with pytest.raises(TypeError):
            impl.count_association(b"text", "cue")


def test_fallback_log_prob_equals_the_models_loss(fallback_gpt):
    """The sum of the continuation's log-probabilities is -(number of tokens) x the model's own cross-entropy on
    them (GPT's forward with targets, the context's targets ignored), on the last block_size + 1 tokens."""
    from llmcourse.fallbacks.bias import continuation_log_prob

    gen = torch.Generator().manual_seed(1)
    for seed, n_context, n_cont in [(0, 1, 1), (1, 5, 3), (2, 20, 8), (3, 8, 8), (4, 3, 1)]:
        model = _random_gpt(seed, dropout=0.3).train()
        context = torch.randint(0, 30, (n_context,), generator=gen).tolist()
        continuation = torch.randint(0, 30, (n_cont,), generator=gen).tolist()
        got = continuation_log_prob(model, context, continuation)
        assert model.training
        ids = torch.tensor([context + continuation])[:, -9:]
        targets = ids[:, 1:].clone()
        targets[:, : targets.size(1) - n_cont] = -100
        with torch.no_grad():
            loss = model.eval()(ids[:, :-1], targets)[1]
        assert got == pytest.approx(-n_cont * float(loss), abs=1e-4)


def test_fallback_score_by_hand():
    """A model with the same next-token probabilities after any context: the score is log P(a) / P(b), and a word
    of two tokens sums its two log-probabilities."""
    from torch import nn

    from llmcourse.fallbacks.bias import association_score

    class Fixed(nn.Module):
        def __init__(self, probs):
            super().__init__()
            self.config = type("Config", (), {"block_size": 4})()
            self.log_probs = nn.Parameter(torch.tensor(probs).log(), requires_grad=False)

        def forward(self, idx, targets=None):
            return self.log_probs.expand(*idx.shape, -1), None

    model = Fixed([0.1, 0.6, 0.2, 0.1])  # "x", "he", "she", "s"
    words = {"x": [0], "he": [1], "she": [2]}

    def encode(text):
        return [i for w in text.split() for i in words[w]]

    assert association_score(model, encode, ["x", "x x x x x x"]) == pytest.approx(math.log(3))
    words["she"] = [3, 1]
    assert association_score(model, encode, ["x"]) == pytest.approx(math.log(0.6) - math.log(0.1 * 0.6))


# ---------------------------------------------------------------------------------------------------------------
# the corpus generator (llmcourse.data, chapter 8d)


def test_association_is_exact_in_the_source():
    source = data.association_source(data.BIASED_ASSOCIATION)
    for occupation, p in data.BIASED_ASSOCIATION.items():
        for before in ("the", "tom runs . the old", "a lazy"):
            prefix = f"{before} {occupation} says that"
            he = source.log_prob(prefix + " he ") - source.log_prob(prefix + " ")
            she = source.log_prob(prefix + " she ") - source.log_prob(prefix + " ")
            assert math.exp(he) == pytest.approx(p, abs=1e-12) and math.exp(she) == pytest.approx(1 - p, abs=1e-12)
            assert math.exp(he) + math.exp(she) == pytest.approx(1.0, abs=1e-12)  # nothing else follows
        assert data.exact_log_odds()[occupation] == pytest.approx(math.log(p / (1 - p)))
        assert source.log_prob(f"the {occupation} runs") == -math.inf  # an occupation as subject always speaks
    assert data.exact_log_odds(data.BALANCED_ASSOCIATION) == {o: 0.0 for o in data.BALANCED_ASSOCIATION}


def test_association_source_keeps_the_course_source():
    """Only the subject nouns' weights and the occupations' own rows change: the rest is the course source."""
    base, source = data.course_source(), data.association_source()
    n = len(base)
    assert source.words[:n] == base.words and source.labels[:n] == base.labels
    P, Q = source.transition_matrix[:n, :n], base.transition_matrix
    nouns = np.array([label == "noun_s" for label in base.labels])
    occupations = [i for i, (w, label) in enumerate(zip(base.words, base.labels))
                   if label == "noun_s" and w in data.BIASED_ASSOCIATION]
    others = [i for i in range(n) if i not in occupations]
    np.testing.assert_allclose(P[others][:, ~nouns], Q[others][:, ~nouns], atol=1e-12)  # other classes: unchanged
    np.testing.assert_allclose(P[others][:, nouns].sum(1), Q[others][:, nouns].sum(1), atol=1e-12)  # nor their total
    the = base.words.index("the")  # det_s "the": the occupations take 4/5 of its subject nouns, in equal parts
    assert P[the, occupations] == pytest.approx([0.8 * Q[the, nouns].sum() / len(occupations)] * len(occupations))
    assert 0 < source.entropy_per_char() < data.entropy_floor()


def test_association_counts_match_p():
    """In a generated text the counts are binomial draws with the stated p: within 4 standard deviations."""
    text = data.association_corpus(300_000, seed=0)
    for occupation, p in data.BIASED_ASSOCIATION.items():
        he = len(re.findall(rf"(?<!\S){occupation} says that he(?!\S)", text))
        she = len(re.findall(rf"(?<!\S){occupation} says that she(?!\S)", text))
        n = he + she
        assert n > 300
        assert abs(he - n * p) < 4 * math.sqrt(n * p * (1 - p)), (occupation, he, she, p)
        assert len(re.findall(rf"(?<!\S){occupation} says that(?!\S)", text)) == n


def test_association_corpus_is_deterministic():
    a = data.association_corpus(5_000, seed=1)
    assert len(a) == 5_000 and a == data.association_corpus(5_000, seed=1)
    assert a != data.association_corpus(5_000, seed=2)
    assert data.association_corpus(2_000, seed=1) == a[:2_000]
    train, val = data.association_train_val_text(3_000, 1_000, seed=1)
    assert (len(train), len(val)) == (3_000, 1_000) and train != val
    assert (train, val) == data.association_train_val_text(3_000, 1_000, seed=1)
    assert data.association_source() is data.association_source(dict(data.BIASED_ASSOCIATION))  # cached
    balanced = data.association_corpus(5_000, data.BALANCED_ASSOCIATION, seed=1)
    assert balanced != a and set(balanced.split()) <= set(data.association_source().vocabulary)


@pytest.mark.parametrize("p_he, share, error", [
    ({"nurse": 0.5}, 0.5, ValueError), ({"doctor": 1.0}, 0.5, ValueError), ({"doctor": 0.0}, 0.5, ValueError),
    ({"doctor": "0.5"}, 0.5, TypeError), ({"doctor": True}, 0.5, TypeError), ({}, 0.5, ValueError),
    ([("doctor", 0.5)], 0.5, TypeError), ({"doctor": 0.5}, 1.0, ValueError), ({"doctor": 0.5}, 0, ValueError),
    ({"doctor": 0.5}, "half", TypeError), ({"doctor": float("nan")}, 0.5, ValueError)])
def test_association_source_refuses_bad_input(p_he, share, error):
    with pytest.raises(error):
        data.association_source(p_he, share)


def test_association_text_refuses_bad_counts_and_seeds():
    for bad, error in [((-1, 10), ValueError), ((1.5, 10), TypeError), ((10, -1), ValueError)]:
        with pytest.raises(error):
            data.association_train_val_text(*bad)
    with pytest.raises(ValueError):
        data.association_corpus(10, seed=-1)
    with pytest.raises(TypeError):
        data.exact_log_odds("doctor")
