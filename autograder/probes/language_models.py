"""Outside checks of chapter 2 (language models): the bigram model, sampling, the log-probability of a sequence,
cross-entropy and perplexity.

Each probe mirrors its test cell: the same models, sequences, seeds and tolerances. Where the test compares with a
property rather than with a value (sampling frequencies against the true transition table, a fair coin, a
cross-entropy against the entropy rate of its source), the probe returns what the property is computed from and a
comparator below judges it the way the test does. The fallback samples by inverse CDF, not with
``torch.multinomial``, so no probe compares a student's samples with the fallback's token for token.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import torch

from autograder.probes import Probe, close, equal, tokens


class _Table:
    """A model given by its table, as the notebook's TableModel: table[a, b] = P(next = b | previous = a)."""

    def __init__(self, table):
        self.table = torch.as_tensor(table, dtype=torch.float64)  # (V, V), rows sum to 1
        self.vocab_size = self.table.shape[0]

    def next_token_probs(self, previous):
        return self.table[torch.as_tensor(previous)]  # (..., V)


def _token_list(x) -> list[int]:
    """A token sequence as check_tokens reads it."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().reshape(-1).tolist()
    return [int(t) for t in x]


def _raises(f, *args) -> str:
    """"ValueError" when f(*args) raises one, "no error" when it returns, else the exception's name."""
    try:
        f(*args)
    except ValueError:
        return "ValueError"
    except Exception as err:  # noqa: BLE001 - the student's code may raise anything
        return type(err).__name__
    return "no error"


# ---------------------------------------------------------------------------------------------------------------
# Exercise 2.1: BigramModel


def bigram_visible(m):
    model = m.BigramModel(vocab_size=3, k=1.0).fit(torch.tensor([0, 1, 1, 2]))
    out = {"counts": model.counts, "after_1": model.next_token_probs(1), "after_2": model.next_token_probs(2),
           "repeated_pairs_k0": m.BigramModel(3, k=0.0).fit([0, 1, 0, 1, 0, 2]).next_token_probs(0)}
    probs = model.next_token_probs(torch.tensor([[0, 1], [2, 2]]))
    out["batch_shape"] = list(probs.shape)
    out["batch_row_sums"] = probs.sum(dim=-1)
    return out


def bigram_hidden(m):
    out = {}
    toy = [0, 1, 0, 0, 1, 2]
    for k in (1.0, 0.5):
        model = m.BigramModel(3, k=k).fit(toy)
        out[f"toy_counts_k{k}"] = model.counts
        for a in range(3):
            out[f"toy_probs_k{k}_after{a}"] = model.next_token_probs(a)
    model = m.BigramModel(5, k=0.25).fit(torch.tensor([0, 1, 2, 1, 0, 1, 2]))  # tokens 3 and 4 never occur
    out["k025_after0"] = model.next_token_probs(0)  # the test checks its dtype
    out["k025_shape_0d"] = list(model.next_token_probs(torch.tensor(0)).shape)
    batch = model.next_token_probs(torch.tensor([[0, 3], [4, 1], [2, 2]]))
    out["k025_batch_shape"] = list(batch.shape)
    out["k025_batch_row_sums"] = batch.sum(-1)
    out["k025_batch00"] = batch[0, 0]
    out["k025_unseen_context"] = model.next_token_probs(3)
    out["k025_unseen_tokens_positive"] = bool((model.next_token_probs(torch.arange(5))[:, 3:] > 0).all())
    out["k0_after1"] = m.BigramModel(5, k=0.0).fit([0, 1, 2, 1, 0, 1, 2]).next_token_probs(1)
    gen = torch.Generator().manual_seed(21)
    seq = torch.randint(0, 7, (5000,), generator=gen)
    model = m.BigramModel(7, k=0.5).fit(seq)
    out["random_counts"] = model.counts
    out["random_probs"] = model.next_token_probs(torch.arange(7))
    out["random_pairs"] = model.counts.sum()
    model.fit([1, 2])
    out["refit_pairs"] = model.counts.sum()
    for i, short in enumerate(([], [3], torch.tensor([], dtype=torch.long))):
        model = m.BigramModel(4, k=1.0).fit(short)
        out[f"short{i}_counts"] = model.counts
        out[f"short{i}_probs"] = model.next_token_probs(torch.arange(4))
    return out


def _bigram_hidden_compare():
    exact_probs = close(atol=1e-15, rtol=0)  # the test: exact fractions within atol=1e-15, rtol=0
    compare = {f"toy_counts_k{k}": close(atol=0) for k in (1.0, 0.5)}
    compare |= {f"toy_probs_k{k}_after{a}": exact_probs for k in (1.0, 0.5) for a in range(3)}
    compare |= {"k025_shape_0d": equal(), "k025_batch_shape": equal(), "k025_batch_row_sums": close(atol=1e-12),
                "k025_batch00": close(atol=1e-15), "k025_unseen_context": close(atol=1e-15),
                "k025_unseen_tokens_positive": equal(), "k0_after1": close(atol=1e-15),
                "random_counts": close(atol=0), "random_probs": close(atol=1e-14)}
    return compare


# ---------------------------------------------------------------------------------------------------------------
# Exercise 2.2: sample_tokens

#: The hidden test's transition table.
T_HIDDEN = np.array([[0.1, 0.6, 0.3, 0.0], [0.5, 0.0, 0.25, 0.25], [0.2, 0.2, 0.2, 0.4], [0.0, 0.0, 0.9, 0.1]])


def sample_visible(m):
    cycle = _Table([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    out = m.sample_tokens(cycle, first=0, n=5, generator=torch.Generator().manual_seed(0))
    values = {"cycle_dtype": str(out.dtype), "cycle": _token_list(out),
              "n0": _token_list(m.sample_tokens(cycle, first=2, n=0, generator=torch.Generator()))}
    coin = _Table([[0.5, 0.5], [0.5, 0.5]])
    a = m.sample_tokens(coin, 0, 200, torch.Generator().manual_seed(1))
    b = m.sample_tokens(coin, 0, 200, torch.Generator().manual_seed(1))
    values["coin_same_seed_same_tokens"] = _token_list(a) == _token_list(b)
    values["coin_ones"] = a[1:].double().mean().item()
    return values


def fair_coin(got, expected):
    """The test's check, on the same seed: a fair coin comes up 1 in 35% to 65% of 200 draws (a correct sampler
    misses that with probability 2.7e-5; the reference, another sampler, is not compared draw by draw)."""
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"not a fraction: {got!r:.60}"
    return None if 0.35 < got < 0.65 else f"a fair coin came up 1 in {got:.0%} of 200 draws"


def sample_hidden(m):
    model = _Table(T_HIDDEN)
    n = 20_000
    out = m.sample_tokens(model, 3, n, torch.Generator().manual_seed(2024))
    values = {"shape": list(out.shape), "dtype": str(out.dtype), "first": out[0].item()}
    values["pairs"] = torch.bincount(out[:-1] * 4 + out[1:], minlength=16).reshape(4, 4).double()
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    torch.manual_seed(1)
    s1 = m.sample_tokens(model, 0, 300, g1)
    torch.manual_seed(2)
    s2 = m.sample_tokens(model, 0, 300, g2)
    values["same_seed_same_tokens"] = _token_list(s1) == _token_list(s2)
    s3 = m.sample_tokens(model, 0, 300, g1)  # g1 has moved on
    values["generator_continues"] = not torch.equal(s1, s3)
    values["seeds_differ"] = not torch.equal(s1, m.sample_tokens(model, 0, 300, torch.Generator().manual_seed(8)))
    repeat = _Table(torch.eye(3))  # no randomness where there is no choice
    values["always_repeats"] = _token_list(m.sample_tokens(repeat, 1, 4, torch.Generator().manual_seed(0)))
    return values


def transitions_follow_table(got, expected):
    """The test's check, on the same seed: given n_a visits to a, each count of a -> b is Binomial(n_a, T[a, b]);
    every count within 5 standard deviations + 1, transitions of probability 0 never sampled. Judged against the
    table, not against the reference's counts (another sampler). A correct sampler fails it with probability
    6e-6 (binomial tails over the 12 entries); 150 other seeds each of the solution's sampler and the fallback's
    all passed, the largest deviation 3.8 standard deviations (+1)."""
    pairs = np.asarray(got, dtype=np.float64)
    if pairs.shape != (4, 4):
        return f"transition counts of shape {pairs.shape}, expected (4, 4)"
    visits = pairs.sum(1, keepdims=True)
    if not (visits > 1000).all():
        return f"each token should be visited often in 20000 steps: {visits.flatten().tolist()}"
    sd = np.sqrt(visits * T_HIDDEN * (1 - T_HIDDEN))
    if (np.abs(pairs - visits * T_HIDDEN) > 5 * sd + 1).any():
        return (f"transition frequencies do not follow next_token_probs of the previous token: observed "
                f"{np.round(pairs / visits, 3).tolist()}, expected {T_HIDDEN.tolist()}")
    if pairs[0, 3] != 0 or pairs[1, 1] != 0:
        return "a transition of probability 0 was sampled"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Exercise 2.3: sequence_log_prob

_TWO = [[0.25, 0.75], [0.5, 0.5]]
_TOY = [[2 / 6, 3 / 6, 1 / 6], [2 / 5, 1 / 5, 2 / 5], [1 / 3, 1 / 3, 1 / 3]]


def log_prob_visible(m):
    model = _Table(_TWO)
    return {str(seq): m.sequence_log_prob(model, seq) for seq in ([0, 1], [0, 1, 0], [1, 0], [1], [])}


def log_prob_hidden(m):
    toy = _Table(_TOY)
    out = {"01220": m.sequence_log_prob(toy, [0, 1, 2, 2, 0]), "211": m.sequence_log_prob(toy, torch.tensor([2, 1, 1])),
           "102": m.sequence_log_prob(toy, [1, 0, 2])}
    out["is_float"] = isinstance(m.sequence_log_prob(toy, [0, 1, 2]), float)
    for i, short in enumerate(([], [2], torch.tensor([0]), torch.tensor([], dtype=torch.long))):
        out[f"short{i}"] = m.sequence_log_prob(toy, short)
    gen = torch.Generator().manual_seed(23)
    T = torch.softmax(torch.randn(6, 6, generator=gen, dtype=torch.float64) * 2, dim=-1)
    seq = torch.randint(0, 6, (3000,), generator=gen)
    out["long"] = m.sequence_log_prob(_Table(T), seq)
    zero = _Table([[0.0, 1.0], [1.0, 0.0]])
    out["impossible"] = m.sequence_log_prob(zero, [0, 1, 1])
    out["certain"] = m.sequence_log_prob(zero, [0, 1, 0, 1])
    return out


def minus_infinity(got, expected):
    """The test asks for exactly -inf (check(... == -math.inf))."""
    return None if got == -math.inf else f"log P of an impossible sequence should be -inf, got {got!r:.40}"


# ---------------------------------------------------------------------------------------------------------------
# Exercise 2.4: cross_entropy_per_token and perplexity


def ce_visible(m):
    uniform = _Table(torch.full((4, 4), 0.25))
    seq = [0, 3, 3, 1, 2, 0, 1]
    model = _Table(_TWO)
    return {"uniform_ce": m.cross_entropy_per_token(uniform, seq), "uniform_ppl": m.perplexity(uniform, seq),
            "ce": m.cross_entropy_per_token(model, [0, 1, 0]), "ppl": m.perplexity(model, [0, 1, 0])}


def _markov_chain():
    """The hidden test's source of known entropy rate: its table, its entropy rate H, and 60,001 tokens of it."""
    T = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.4, 0.4], [0.3, 0.3, 0.3, 0.1], [0.05, 0.05, 0.1, 0.8]],
                     dtype=torch.float64)
    evals, evecs = torch.linalg.eig(T.T)
    pi = evecs[:, torch.argmin((evals - 1).abs())].real
    pi = pi / pi.sum()
    H = -(pi * torch.where(T > 0, T * T.log(), torch.zeros_like(T)).sum(1)).sum().item()
    rng = torch.Generator().manual_seed(32)
    cum = T.cumsum(1).tolist()
    state, seq = 0, [0]
    for u in torch.rand(60_000, generator=rng, dtype=torch.float64).tolist():
        state = min(bisect.bisect_right(cum[state], u), 3)
        seq.append(state)
    return T, H, torch.tensor(seq)


def ce_hidden(m):
    toy = _Table(_TOY)
    out = {"ce_01220": m.cross_entropy_per_token(toy, [0, 1, 2, 2, 0]), "ppl_01220": m.perplexity(toy, [0, 1, 2, 2, 0]),
           "ppl_10": m.perplexity(toy, torch.tensor([1, 0]))}
    for name, f in (("ce", m.cross_entropy_per_token), ("ppl", m.perplexity)):
        out[f"{name}_is_float"] = isinstance(f(toy, [0, 1]), float)
        out[f"{name}_short"] = [_raises(f, toy, short) for short in ([], [1], torch.tensor([2]))]
    gen = torch.Generator().manual_seed(31)
    for V in (2, 5, 26):
        seq = torch.randint(0, V, (4000,), generator=gen)
        out[f"uniform{V}_ppl"] = m.perplexity(_Table(torch.full((V, V), 1 / V)), seq)
    T, H, seq = _markov_chain()
    # the reference side's H is the target: the student's side computes it too, but only its value is read
    out["source_ce"] = {"value": m.cross_entropy_per_token(_Table(T), seq), "H": H}
    out["source_ppl"] = {"value": m.perplexity(_Table(T), seq), "H": H}
    return out


def _near_entropy(exp: bool, atol: float, rtol: float):
    def compare(got, expected):
        """The test's check: the true model's cross-entropy on 60,000 tokens of its own source is the source's
        entropy rate H (computed on the reference side) within atol=0.02 (perplexity: exp(H) within rtol=0.02)."""
        value = got.get("value") if isinstance(got, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"not a number: {value!r:.60}"
        target = math.exp(expected["H"]) if exp else expected["H"]
        if abs(value - target) <= atol + rtol * abs(target):
            return None
        return f"got {value:.6g}, expected {target:.6g} ({'exp H' if exp else 'H'}, atol={atol:g}, rtol={rtol:g})"

    return compare


PROBES = [
    Probe("test_bigram_model", bigram_visible, {"batch_shape": equal()}),
    Probe("test_bigram_model_hidden", bigram_hidden, _bigram_hidden_compare()),
    Probe("test_sample_tokens", sample_visible,
          {"cycle_dtype": equal(), "cycle": tokens(), "n0": tokens(), "coin_same_seed_same_tokens": equal(),
           "coin_ones": fair_coin}),
    Probe("test_sample_tokens_hidden", sample_hidden,
          {"shape": equal(), "dtype": equal(), "first": equal(), "pairs": transitions_follow_table,
           "same_seed_same_tokens": equal(), "generator_continues": equal(), "seeds_differ": equal(),
           "always_repeats": tokens()}),
    Probe("test_sequence_log_prob", log_prob_visible),
    Probe("test_sequence_log_prob_hidden", log_prob_hidden,
          {"01220": close(rtol=1e-6), "211": close(rtol=1e-6), "102": close(rtol=1e-6), "is_float": equal(),
           "long": close(rtol=1e-6), "impossible": minus_infinity}),
    Probe("test_cross_entropy_and_perplexity", ce_visible),
    Probe("test_cross_entropy_and_perplexity_hidden", ce_hidden,
          {"ce_01220": close(rtol=1e-6), "ppl_01220": close(rtol=1e-6), "ppl_10": close(rtol=1e-6),
           "ce_is_float": equal(), "ppl_is_float": equal(), "ce_short": equal(), "ppl_short": equal(),
           "uniform2_ppl": close(rtol=1e-9), "uniform5_ppl": close(rtol=1e-9), "uniform26_ppl": close(rtol=1e-9),
           "source_ce": _near_entropy(False, atol=0.02, rtol=1e-5),
           "source_ppl": _near_entropy(True, atol=1e-5, rtol=0.02)}),
]
