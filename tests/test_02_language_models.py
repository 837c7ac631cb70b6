"""Chapter 2: every graded test rejects plausible wrong answers; the public fallback agrees with the solution.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ROOT
from notebook_harness import failed, run_notebook, wrong_answer_tests

CHAPTER = "02_language_models"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

BIGRAM_TESTS = {"test_bigram_model", "test_bigram_model_hidden"}
SAMPLE_TESTS = {"test_sample_tokens", "test_sample_tokens_hidden"}
LOGPROB_TESTS = {"test_sequence_log_prob", "test_sequence_log_prob_hidden"}
CE_TESTS = {"test_cross_entropy_and_perplexity", "test_cross_entropy_and_perplexity_hidden"}


def bigram(fit_body: str, probs_body: str) -> str:
    """A BigramModel cell with the given bodies for fit and next_token_probs (the rest as in the notebook)."""
    return f'''
#| export
class BigramModel:
    def __init__(self, vocab_size, k=1.0):
        self.vocab_size, self.k = vocab_size, float(k)
        self.counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)

    def fit(self, tokens):
        tokens = _as_token_ids(tokens, self.vocab_size, sequence=True)
        self.counts = torch.zeros(self.vocab_size, self.vocab_size, dtype=torch.float64)
{fit_body}
        return self

    def next_token_probs(self, previous):
        previous = _as_token_ids(previous, self.vocab_size)
{probs_body}
'''


FIT = '''
        ones = torch.ones(len(tokens) - 1, dtype=torch.float64)
        self.counts.index_put_((tokens[:-1], tokens[1:]), ones, accumulate=True)
'''
PROBS = '''
        c = self.counts[previous]
        return (c + self.k) / (c.sum(-1, keepdim=True) + self.k * self.vocab_size)
'''


def sampler(body: str) -> str:
    return f'''
#| export
def sample_tokens(model, first, n, generator):
    first = int(_as_token_ids(first, model.vocab_size))
{body}
'''


def log_prob(body: str) -> str:
    return f'''
#| export
def sequence_log_prob(model, tokens):
    tokens = _as_token_ids(tokens, model.vocab_size, sequence=True)
    if len(tokens) < 2:
        return 0.0
{body}
'''


def ce_and_ppl(ce_body: str, ppl_body: str = "    return math.exp(cross_entropy_per_token(model, tokens))") -> str:
    return f'''
#| export
def cross_entropy_per_token(model, tokens):
    tokens = _as_token_ids(tokens, model.vocab_size, sequence=True)
{ce_body}


def perplexity(model, tokens):
{ppl_body}
'''


CE_GUARD = '''
    if len(tokens) < 2:
        raise ValueError("no prediction")
'''

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "smoothing denominator without k * V": ("bigram_model", bigram(FIT, '''
        c = self.counts[previous]
        return (c + self.k) / (c.sum(-1, keepdim=True) + self.k)
'''), BIGRAM_TESTS),
    "maximum likelihood with a uniform row for unseen contexts (k ignored)": ("bigram_model", bigram(FIT, '''
        c = self.counts[previous]
        total = c.sum(-1, keepdim=True)
        return torch.where(total > 0, c / total.clamp(min=1), torch.full_like(c, 1 / self.vocab_size))
'''), BIGRAM_TESTS),
    "counts transposed: counts[next, previous]": ("bigram_model", bigram('''
        ones = torch.ones(len(tokens) - 1, dtype=torch.float64)
        self.counts.index_put_((tokens[1:], tokens[:-1]), ones, accumulate=True)
''', PROBS), BIGRAM_TESTS),
    "counts[a, b] += 1 with index tensors (repeated pairs counted once)": ("bigram_model", bigram('''
        self.counts[tokens[:-1], tokens[1:]] += 1
''', PROBS), BIGRAM_TESTS),
    "the last pair is not counted": ("bigram_model", bigram('''
        for a, b in zip(tokens[:-2].tolist(), tokens[1:-1].tolist()):
            self.counts[a, b] += 1
''', PROBS), BIGRAM_TESTS),
    "greedy: argmax instead of sampling": ("sample_tokens", sampler('''
    tokens = [first]
    for _ in range(n):
        tokens.append(int(model.next_token_probs(tokens[-1]).argmax()))
    return torch.tensor(tokens)
'''), SAMPLE_TESTS),
    "every token drawn after the first token": ("sample_tokens", sampler('''
    probs = model.next_token_probs(first)
    new = [int(torch.multinomial(probs, 1, generator=generator)) for _ in range(n)]
    return torch.tensor([first] + new, dtype=torch.long)
'''), SAMPLE_TESTS),
    "sampling from the global random state, not the generator": ("sample_tokens", sampler('''
    tokens = [first]
    for _ in range(n):
        tokens.append(int(torch.multinomial(model.next_token_probs(tokens[-1]), 1)))
    return torch.tensor(tokens, dtype=torch.long)
'''), SAMPLE_TESTS),
    "returns the n new tokens without first": ("sample_tokens", sampler('''
    tokens = [first]
    for _ in range(n):
        tokens.append(int(torch.multinomial(model.next_token_probs(tokens[-1]), 1, generator=generator)))
    return torch.tensor(tokens[1:], dtype=torch.long)
'''), SAMPLE_TESTS),
    "uniformly random tokens": ("sample_tokens", sampler('''
    new = torch.randint(0, model.vocab_size, (n,), generator=generator)
    return torch.cat([torch.tensor([first]), new])
'''), SAMPLE_TESTS),
    "log of the product (underflows on long sequences)": ("sequence_log_prob", log_prob('''
    probs = model.next_token_probs(tokens[:-1])
    return math.log(probs[torch.arange(len(tokens) - 1), tokens[1:]].prod().item())
'''), {"test_sequence_log_prob_hidden"}),
    "context and target swapped: P(previous | next)": ("sequence_log_prob", log_prob('''
    probs = model.next_token_probs(tokens[1:])
    return probs[torch.arange(len(tokens) - 1), tokens[:-1]].log().sum().item()
'''), LOGPROB_TESTS),
    "off by one: each token predicted from itself": ("sequence_log_prob", log_prob('''
    probs = model.next_token_probs(tokens[1:])
    return probs[torch.arange(len(tokens) - 1), tokens[1:]].log().sum().item()
'''), LOGPROB_TESTS),
    "log base 2": ("sequence_log_prob", log_prob('''
    probs = model.next_token_probs(tokens[:-1])
    return probs[torch.arange(len(tokens) - 1), tokens[1:]].log2().sum().item()
'''), LOGPROB_TESTS),
    "mean instead of sum": ("sequence_log_prob", log_prob('''
    probs = model.next_token_probs(tokens[:-1])
    return probs[torch.arange(len(tokens) - 1), tokens[1:]].log().mean().item()
'''), LOGPROB_TESTS),
    "perplexity as the exponential of the sum": ("cross_entropy_and_perplexity", ce_and_ppl(
        CE_GUARD + "    return -sequence_log_prob(model, tokens)"), CE_TESTS),
    "mean over n tokens instead of n - 1 predictions": ("cross_entropy_and_perplexity", ce_and_ppl(
        CE_GUARD + "    return -sequence_log_prob(model, tokens) / len(tokens)"), CE_TESTS),
    "cross-entropy in bits, perplexity 2 ** bits": ("cross_entropy_and_perplexity", ce_and_ppl(
        CE_GUARD + "    return -sequence_log_prob(model, tokens) / (len(tokens) - 1) / math.log(2)",
        "    return 2 ** cross_entropy_per_token(model, tokens)"), CE_TESTS),
    "perplexity as one over the mean probability": ("cross_entropy_and_perplexity", ce_and_ppl(
        CE_GUARD + "    return -sequence_log_prob(model, tokens) / (len(tokens) - 1)", '''
    tokens = _as_token_ids(tokens, model.vocab_size, sequence=True)
    probs = model.next_token_probs(tokens[:-1])
    return 1 / probs[torch.arange(len(tokens) - 1), tokens[1:]].mean().item()'''), CE_TESTS),
    "no error for sequences without a prediction": ("cross_entropy_and_perplexity", ce_and_ppl(
        "    return -sequence_log_prob(model, tokens) / max(len(tokens) - 1, 1)"),
        {"test_cross_entropy_and_perplexity_hidden"}),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


FALLBACK_CELLS = {
    "bigram_model": "#| export\nfrom llmcourse.fallbacks.language_models import BigramModel",
    "sample_tokens": "#| export\nfrom llmcourse.fallbacks.language_models import sample_tokens",
    "sequence_log_prob": "#| export\nfrom llmcourse.fallbacks.language_models import sequence_log_prob",
    "cross_entropy_and_perplexity": ("#| export\nfrom llmcourse.fallbacks.language_models import "
                                     "cross_entropy_per_token, perplexity"),
}


def test_fallback_passes_every_graded_test():
    """The fallback in place of every exercise passes the notebook's own tests, the hidden ones included."""
    results = run_notebook(SOLUTION, replace=FALLBACK_CELLS)
    assert not failed(results)
    assert all(r.error is None and not r.stderr for r in results)


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import language_models as ours
    from llmcourse.fallbacks import language_models as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"CharTokenizer", "BigramModel", "sample_tokens", "sequence_log_prob",
                      "cross_entropy_per_token", "perplexity"}
    assert public <= set(vars(fallback))

    from llmcourse.data import course_corpus, course_source
    alphabet = course_source().alphabet
    text = course_corpus(20_000, seed=1)
    tok, tok_fb = ours.CharTokenizer(alphabet), fallback.CharTokenizer(alphabet)
    ids = tok.encode(text)
    assert torch.equal(ids, tok_fb.encode(text)) and ids.dtype == torch.long
    assert tok_fb.decode(ids) == tok.decode(ids) == text
    assert tok_fb.encode("").shape == (0,) and tok_fb.decode([]) == ""
    for bad in ("the Cat", "é"):
        with pytest.raises(ValueError):
            tok_fb.encode(bad)
    with pytest.raises(ValueError):
        fallback.CharTokenizer("abca")

    V = len(alphabet)
    for k in (0.0, 0.01, 1.0):
        a, b = ours.BigramModel(V, k).fit(ids[:5000]), fallback.BigramModel(V, k).fit(ids[:5000])
        assert torch.equal(a.counts, b.counts)
        previous = torch.arange(V) if k > 0 else ids[:100]  # with k = 0, unseen contexts are undefined
        torch.testing.assert_close(a.next_token_probs(previous), b.next_token_probs(previous), rtol=1e-12, atol=0)
        held_out = ids[5000:9000]
        for f in ("sequence_log_prob", "cross_entropy_per_token", "perplexity"):
            x, y = getattr(ours, f)(a, held_out), getattr(fallback, f)(b, held_out)
            assert x == pytest.approx(y, rel=1e-12) or (math.isinf(x) and x == y), (f, k, x, y)
    for short in ([], [3]):
        assert fallback.sequence_log_prob(b, short) == ours.sequence_log_prob(a, short) == 0.0
        with pytest.raises(ValueError):
            fallback.cross_entropy_per_token(b, short)
    with pytest.raises(ValueError):
        fallback.BigramModel(V).fit([0, V])

    # sampling: reproducible with the generator, and the right transition frequencies (same bound as the notebook)
    model = fallback.BigramModel(V, k=1.0).fit(ids)
    s1 = fallback.sample_tokens(model, 0, 3000, torch.Generator().manual_seed(5))
    s2 = fallback.sample_tokens(model, 0, 3000, torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2) and s1.shape == (3001,) and s1.dtype == torch.long and s1[0] == 0
    T = torch.tensor([[0.1, 0.6, 0.3, 0.0], [0.5, 0.0, 0.25, 0.25], [0.2, 0.2, 0.2, 0.4], [0.0, 0.0, 0.9, 0.1]],
                     dtype=torch.float64)

    class Table:
        vocab_size = 4

        def next_token_probs(self, previous):
            return T[torch.as_tensor(previous)]

    out = fallback.sample_tokens(Table(), 3, 20_000, torch.Generator().manual_seed(2024))
    pairs = torch.bincount(out[:-1] * 4 + out[1:], minlength=16).reshape(4, 4).double()
    visits = pairs.sum(1, keepdim=True)
    assert ((pairs - visits * T).abs() <= 5 * (visits * T * (1 - T)).sqrt() + 1).all()


def test_sampling_checks_pass_correct_samplers_on_other_seeds(monkeypatch):
    """The outside checks of sampling judge frequencies against the table, not tokens against the reference's: two
    correct samplers (the solution's multinomial, the fallback's inverse CDF) pass them on other seeds too. (On
    150 seeds each, none failed; binomial tails put a correct sampler's chance of failing at 6e-6, the fair coin's
    at 2.7e-5.)"""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from autograder.probes.language_models import T_HIDDEN, _Table, fair_coin, transitions_follow_table
    from llmcourse.chapters import language_models as ours
    from llmcourse.fallbacks import language_models as fallback

    coin = _Table([[0.5, 0.5], [0.5, 0.5]])
    for impl in (ours, fallback):
        for seed in (11, 12):
            out = impl.sample_tokens(_Table(T_HIDDEN), 3, 20_000, torch.Generator().manual_seed(seed))
            pairs = torch.bincount(out[:-1] * 4 + out[1:], minlength=16).reshape(4, 4).double().numpy()
            assert transitions_follow_table(pairs, None) is None, (impl.__name__, seed)
            ones = impl.sample_tokens(coin, 0, 200, torch.Generator().manual_seed(seed))[1:].double().mean().item()
            assert fair_coin(ones, None) is None, (impl.__name__, seed)
    wrong = torch.tensor([[0.25] * 4] * 4, dtype=torch.float64)  # uniform transitions instead of the table's
    out = fallback.sample_tokens(_Table(wrong), 3, 20_000, torch.Generator().manual_seed(0))
    pairs = torch.bincount(out[:-1] * 4 + out[1:], minlength=16).reshape(4, 4).double().numpy()
    assert "do not follow" in transitions_follow_table(pairs, None)
