"""llmcourse.data: the course corpus, its exact entropy rate and exact probabilities.

Statistical checks use fixed seeds, so they are deterministic; their tolerances are a few standard errors
estimated from independent replicates (different seeds), so a correct source passes them with overwhelming
probability whatever the seeds, and each says why its bound is what it is.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from llmcourse.data import MarkovTextSource, course_corpus, course_source, entropy_floor, train_val_text


@pytest.fixture(scope="module")
def source():
    return course_source()


def logsumexp(values):
    values = [v for v in values if v > -math.inf]
    if not values:
        return -math.inf
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


# --- determinism, sizes, decodability ---------------------------------------------------------------------------
def test_same_seed_same_text_different_seeds_differ():
    assert course_corpus(5000, seed=3) == course_corpus(5000, seed=3)
    texts = {course_corpus(2000, seed=s) for s in range(5)}
    assert len(texts) == 5


def test_sizes_are_exact_and_shorter_texts_are_prefixes(source):
    long = course_corpus(30_000, seed=7)
    for n in (0, 1, 2, 17, 4095, 4096, 4097, 10_000, 30_000):
        text = course_corpus(n, seed=7)
        assert len(text) == n
        assert long.startswith(text)
    assert len(source.text(n_words=0, seed=1)) == 0
    assert len(source.text(n_words=250, seed=1).split(" ")) == 250
    words = source.sample_words(9000, seed=2)  # more than one block of uniforms
    assert source.sample_words(100, seed=2) == words[:100]


def test_text_decodes_to_its_words_and_states(source):
    states = source.sample_states(3000, seed=11)
    text = source.text(n_words=3000, seed=11)
    assert text == " ".join(source.words[s] for s in states)
    assert source.parse(text) == states  # the text determines the states, not only the words
    assert " ".join(source.words[s] for s in source.parse(text)) == text
    assert "  " not in text and not text.startswith(" ") and not text.endswith(" ")


def test_the_text_reads_like_simple_english(source):
    text = course_corpus(20_000, seed=0)
    assert set(text) <= set(source.alphabet) == set("abcdefghijklmnopqrstuvwxyz .")
    sentences = text.split(" . ")[:-1]
    assert len(sentences) > 300
    for sentence in sentences:
        first = sentence.split(" ")[0]
        assert first in _WORDS_THAT_START_A_SENTENCE, sentence
    lengths = [len(s.split(" ")) for s in sentences]
    assert min(lengths) == 2 and 5 < np.mean(lengths) < 10  # "he runs ."
    assert "a old" not in text and "an big" not in text
    assert 200 <= len(source.vocabulary) <= 400


_WORDS_THAT_START_A_SENTENCE = set(
    "the a an my your his her our this that every one tom anna max lily sam mia ben emma leo zoe he she it".split())


def test_bad_arguments_are_refused(source):
    with pytest.raises(ValueError, match="n_chars"):
        course_corpus(-1)
    with pytest.raises(TypeError, match="n_chars"):
        course_corpus(10.0)
    with pytest.raises(ValueError, match="seed"):
        course_corpus(10, seed=-3)
    with pytest.raises(TypeError, match="seed"):
        course_corpus(10, seed="0")
    with pytest.raises(TypeError, match="exactly one"):
        source.text(10, n_words=3)
    with pytest.raises(TypeError, match="exactly one"):
        source.text()
    with pytest.raises(ValueError, match="n"):
        source.sample_words(-5)
    with pytest.raises(ValueError, match="n_val_chars"):
        train_val_text(10, -1)
    with pytest.raises(TypeError, match="text"):
        source.log_prob(b"the cat")
    with pytest.raises(ValueError, match="cannot write"):
        source.parse("cat the")


# --- exact quantities ------------------------------------------------------------------------------------------
def test_stationary_distribution_is_exact(source):
    P, pi = source.transition_matrix, source.stationary()
    assert pi.shape == (len(source),) and (pi > 0).all()
    assert abs(pi.sum() - 1) < 1e-12
    np.testing.assert_allclose(pi @ P, pi, rtol=0, atol=1e-14)
    # the same as the eigenvector of P^T for eigenvalue 1, and as the limit of the chain from its start
    values, vectors = np.linalg.eig(P.T)
    v = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    np.testing.assert_allclose(v / v.sum(), pi, rtol=0, atol=1e-12)
    row = np.zeros(len(source))
    row[source.start] = 1.0
    for _ in range(200):  # |second eigenvalue| is about 0.65, so 0.65**200 is far below the tolerance
        row = row @ P
    np.testing.assert_allclose(row, pi, rtol=0, atol=1e-12)


def test_state_frequencies_in_long_samples_match_pi(source):
    """Class frequencies over 20 samples of 20,000 words (after a 100-word burn-in: 0.65**100 < 1e-18) agree
    with pi within 5 standard errors of the replicates' mean."""
    labels = sorted(set(source.labels))
    pi_class = np.array([sum(p for p, lab in zip(source.stationary(), source.labels) if lab == c) for c in labels])
    freqs = []
    for seed in range(20):
        counts = Counter(source.labels[s] for s in source.sample_states(20_100, seed=seed)[100:])
        freqs.append([counts[c] / 20_000 for c in labels])
    freqs = np.array(freqs)
    se = freqs.std(axis=0, ddof=1) / math.sqrt(len(freqs))
    assert (np.abs(freqs.mean(axis=0) - pi_class) <= 5 * se).all()


def test_entropy_formulas(source):
    P, pi = source.transition_matrix, source.stationary()
    H = -sum(pi[i] * sum(p * math.log(p) for p in P[i] if p > 0) for i in range(len(source)))
    assert source.entropy_per_word() == pytest.approx(H, rel=1e-12)
    L = sum(pi[i] * (len(w) + 1) for i, w in enumerate(source.words))
    assert source.mean_chars_per_word() == pytest.approx(L, rel=1e-12)
    assert source.entropy_per_char() == pytest.approx(H / L, rel=1e-12)
    assert entropy_floor() == source.entropy_per_char()
    assert 0.5 < entropy_floor() < 1.0  # nats per character; the figure the course quotes is checked here
    assert entropy_floor() == pytest.approx(0.6901, abs=1e-4)


def test_entropy_rate_matches_the_negative_log_likelihood_of_long_samples(source):
    """-log_prob(text) / len(text) for 40 independent texts of 10,000 words (~44,000 characters): their mean is
    the rate within 4 standard errors of the replicates plus 10 / len(text) for the start (the first words come
    from the start state, not from pi: a shift of a few nats per text, O(1/len) per character)."""
    rates, per_word, chars_per_word = [], [], []
    for seed in range(100, 140):
        text = source.text(n_words=10_000, seed=seed)
        nll = -source.log_prob(text)
        rates.append(nll / len(text))
        per_word.append(nll / 10_000)
        chars_per_word.append((len(text) + 1) / 10_000)
    for values, exact in ((rates, source.entropy_per_char()), (per_word, source.entropy_per_word()),
                          (chars_per_word, source.mean_chars_per_word())):
        values = np.array(values)
        se = values.std(ddof=1) / math.sqrt(len(values))
        assert abs(values.mean() - exact) <= 4 * se + 10 / 40_000, (values.mean(), exact, se)


def test_log_prob_is_the_product_of_transition_probabilities(source):
    P = source.transition_matrix
    states = source.sample_states(500, seed=5)
    text = source.text(n_words=500, seed=5)
    path = [source.start] + states
    expected = sum(math.log(P[i, j]) for i, j in zip(path, path[1:]))
    assert source.log_prob(text) == pytest.approx(expected, rel=1e-12)
    assert source.log_prob(text + " ") == pytest.approx(expected, rel=1e-12)  # the space after a word is certain
    assert source.log_prob("") == 0.0


def test_log_prob_of_a_prefix_is_the_sum_over_its_continuations(source):
    """P(text begins with s) = sum over characters c of P(text begins with s + c): the chain rule over
    characters, which makes -log_prob(text) / len(text) a per-character cross-entropy."""
    text = course_corpus(400, seed=9)
    for n in (0, 1, 2, 3, 5, 8, 13, 40, 41, 42, 43, 44, 45, 100, 399):
        prefix = text[:n]
        continuations = [source.log_prob(prefix + c) for c in source.alphabet]
        assert logsumexp(continuations) == pytest.approx(source.log_prob(prefix), abs=1e-10), repr(prefix)
    # and per character, the chain-rule terms are log-probabilities
    steps = [source.log_prob(text[: i + 1]) - source.log_prob(text[:i]) for i in range(len(text))]
    assert all(s <= 1e-12 for s in steps)
    assert sum(steps) == pytest.approx(source.log_prob(text), rel=1e-12)


def test_impossible_texts_have_probability_zero(source):
    for text in ("cat the", "the  cat", "the xyz", " the", "sees", "the cat runs .."):
        assert source.log_prob(text) == -math.inf, text
    assert source.log_prob("the ca") > -math.inf  # a word cut short is possible
    assert source.log_prob("the cat runs .") > -math.inf


# --- the generic class -------------------------------------------------------------------------------------------
def test_a_small_source_with_known_entropy():
    """Two words "a" and "bb", each followed by either with probability 1/2: log 2 nats per word, 2.5 characters
    per word (the space included)."""
    src = MarkovTextSource(["a", "bb"], [[0.5, 0.5], [0.5, 0.5]], start=0)
    np.testing.assert_allclose(src.stationary(), [0.5, 0.5])
    assert src.entropy_per_word() == pytest.approx(math.log(2))
    assert src.mean_chars_per_word() == pytest.approx(2.5)
    assert src.entropy_per_char() == pytest.approx(math.log(2) / 2.5)
    assert src.log_prob("bb a a") == pytest.approx(3 * math.log(0.5))
    assert src.log_prob("bb a b") == pytest.approx(3 * math.log(0.5))  # "b" can only begin "bb"
    assert src.alphabet == " ab"


def test_bad_chains_are_refused():
    with pytest.raises(ValueError, match="sums to"):
        MarkovTextSource(["a", "b"], [[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(ValueError, match="shape"):
        MarkovTextSource(["a", "b"], [[1.0]])
    with pytest.raises(ValueError, match="spelled"):
        MarkovTextSource(["a", "a"], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="periodic"):
        MarkovTextSource(["a", "b"], [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="irreducible"):
        MarkovTextSource(["a", "b"], [[1.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="space"):
        MarkovTextSource(["a b", "c"], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match=">= 0"):
        MarkovTextSource(["a", "b"], [[1.5, -0.5], [0.5, 0.5]])


# --- module-level API ----------------------------------------------------------------------------------------------
def test_train_and_validation_texts_are_independent():
    train, val = train_val_text(3000, 1000, seed=4)
    assert len(train) == 3000 and len(val) == 1000
    assert train[:1000] != val
    assert train_val_text(3000, 1000, seed=4) == (train, val)
    assert train_val_text(3000, 1000, seed=5)[0] != train
    assert train != course_corpus(3000, seed=4) and val != course_corpus(1000, seed=4)
    assert train_val_text(0, 0) == ("", "")


def test_course_source_is_built_once_and_not_at_import():
    assert course_source() is course_source()
    code = "import llmcourse.data as d; print(d.course_source.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"
