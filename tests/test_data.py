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


# --- chapter 6's task generators ------------------------------------------------------------------------------------
from llmcourse.data import (  # noqa: E402
    SENTIMENT_LABELS,
    TASK_BLOCK_SIZE,
    TASKS,
    ZET_LEXICON,
    TaskExample,
    task_examples,
    to_zet,
)

CHECKPOINT = "llmcourse/checkpoints/course-tiny"


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from llmcourse.fallbacks.tokens_and_positions import BPETokenizer

    return BPETokenizer.load(CHECKPOINT)


@pytest.fixture(scope="module")
def examples():
    """1000 examples of each task from each split (seed 0): {(task, split): [...]}."""
    return {(task, split): task_examples(task, 1000, seed=0, split=split) for task in TASKS
            for split in ("train", "test")}


def test_the_task_api():
    assert TASKS == ("translation", "qa", "summarization", "sentiment")
    assert SENTIMENT_LABELS == ("negative", "positive")
    ex = TaskExample("the cat sees a ball .", "x", task="translation")
    assert (ex.question, ex.label) == ("", -1)
    with pytest.raises(AttributeError):
        ex.target = "y"  # frozen
    assert ex.prompt == "english: the cat sees a ball . zet:" and ex.completion == " x"
    qa = TaskExample("tom sees a ball .", "tom", question="who sees a ball ?", task="qa")
    assert qa.prompt == "tom sees a ball . question: who sees a ball ? answer:"
    assert TaskExample("s .", "t", task="summarization").prompt == "s . summary:"
    assert TaskExample("s .", "positive", label=1, task="sentiment").prompt == "s . sentiment:"
    with pytest.raises(ValueError, match="task"):
        TaskExample("s .", "t")


def test_every_example_is_well_formed(examples):
    for (task, _), exs in examples.items():
        assert len(exs) == 1000
        for ex in exs:
            assert isinstance(ex, TaskExample) and ex.task == task
            assert ex.completion == " " + ex.target and not ex.prompt.endswith(" ")
            assert ex.prompt.endswith({"translation": " zet:", "qa": " answer:", "summarization": " summary:",
                                       "sentiment": " sentiment:"}[task])
            assert ex.source.endswith(" .") and "  " not in ex.prompt + ex.completion
            assert (ex.question != "") == (task == "qa") and (ex.label != -1) == (task == "sentiment")


def test_examples_are_deterministic_and_prefixes(examples):
    for task in TASKS:
        assert task_examples(task, 1000, seed=0) == examples[task, "train"]
        assert task_examples(task, 300, seed=0, split="test") == examples[task, "test"][:300]
        assert task_examples(task, 50, seed=1) != examples[task, "train"][:50]
        assert task_examples(task, 0) == []


def test_examples_do_not_depend_on_the_hash_seed():
    code = ("import hashlib; from llmcourse.data import task_examples, TASKS; "
            "print(hashlib.sha256(repr([task_examples(t, 200, seed=5, split=s) for t in TASKS "
            "for s in ('train', 'test')]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**__import__("os").environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert len(digests) == 1


def test_test_sources_are_never_train_sources(examples):
    for task in TASKS:
        train = {ex.source for ex in task_examples(task, 5000, seed=0)} | {ex.source for ex in
                                                                       task_examples(task, 2000, seed=9)}
        test = {ex.source for ex in examples[task, "test"]}
        assert not train & test
        # about one source in five is a test source: a run of draws keeps about 4 train per test example
        assert len(test) > 800  # and the test split is not a handful of repeated sources


def test_bad_task_arguments_are_refused():
    with pytest.raises(ValueError, match="translation, qa, summarization, sentiment"):
        task_examples("poetry", 3)
    with pytest.raises(TypeError, match="task"):
        task_examples(None, 3)
    with pytest.raises(TypeError, match="n must be an int"):
        task_examples("qa", 2.0)
    with pytest.raises(TypeError, match="n must be an int"):
        task_examples("qa", True)
    with pytest.raises(ValueError, match="n must be >= 0"):
        task_examples("qa", -1)
    with pytest.raises(ValueError, match="split"):
        task_examples("qa", 3, split="validation")
    with pytest.raises(TypeError, match="split"):
        task_examples("qa", 3, split=None)
    with pytest.raises(ValueError, match="seed"):
        task_examples("qa", 3, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        task_examples("qa", 3, seed="0")


def test_every_example_fits_the_model(examples, tiny_tokenizer):
    from llmcourse.data import _fits

    for (task, split), exs in examples.items():
        lengths = [len(tiny_tokenizer.encode(ex.prompt + ex.completion)) + 1 for ex in exs]
        assert max(lengths) <= TASK_BLOCK_SIZE, (task, split, max(lengths))
    # the generator's word-by-word count is the tokenizer's count (checked where it matters: near the limit)
    for task in ("qa", "summarization"):
        for ex in task_examples(task, 300, seed=3):
            longer = TaskExample(ex.source + " " + ex.source, ex.target, ex.question, ex.label, task)
            for e in (ex, longer):
                assert _fits(e) == (len(tiny_tokenizer.encode(e.prompt + e.completion)) + 1 <= TASK_BLOCK_SIZE)


def test_generators_are_fast():
    import time

    task_examples("qa", 10)  # loads the tokenizer
    for task in TASKS:
        start = time.process_time()
        task_examples(task, 5000, seed=1, split="test")  # the slower split: 4 in 5 draws are skipped
        assert time.process_time() - start < 3.0, task  # about 0.5 s on an idle core


# translation
def test_zet_lexicon_is_one_to_one_and_readable():
    words = [w for w in ZET_LEXICON if w != "an"]
    assert ZET_LEXICON["an"] == ZET_LEXICON["a"]
    assert len(set(ZET_LEXICON[w] for w in words)) == len(words)  # no two English words share a zet word
    english = {w for ws in __import__("llmcourse.data", fromlist=["_WORDS"])._WORDS.values() for w in ws}
    for word, zet in ZET_LEXICON.items():
        assert zet.isalpha() and zet.islower() and 2 <= len(zet) <= 4 and zet not in english, (word, zet)
    assert ZET_LEXICON["cat"].endswith("o") and ZET_LEXICON["red"].endswith("i") and ZET_LEXICON["sees"].endswith("u")


def test_to_zet_follows_its_rules():
    z = ZET_LEXICON
    assert to_zet("the small cat sees a red ball in the park .") == " ".join(
        [z["cat"], z["small"], z["the"], z["ball"], z["red"], z["a"], z["park"], z["the"], z["in"], z["sees"], "."])
    assert to_zet("tom runs quickly .") == f"tom {z['quickly']} {z['runs']} ."
    assert to_zet("anna sees tom .") == f"anna tom {z['sees']} ."
    assert to_zet("an old dog sleeps .") == f"{z['dog']} {z['old']} {z['a']} {z['sleeps']} ."
    for bad in ("the cat sees a ball", "the cat .", "cat sees a ball .", "the cat sees a zebra .", "sees tom ."):
        with pytest.raises(ValueError, match="to_zet"):
            to_zet(bad)
    with pytest.raises(TypeError):
        to_zet(["the", "cat"])


def test_translation_targets_and_why_copying_fails(examples):
    for split in ("train", "test"):
        for ex in examples["translation", split]:
            assert ex.target == to_zet(ex.source)
            word_by_word = " ".join(ZET_LEXICON.get(w, w) for w in ex.source.split())
            assert word_by_word != ex.target  # the order always changes
            assert sorted(word_by_word.split()) == sorted(ex.target.split())  # ... and only the order
            assert ex.target.split()[-2] == ZET_LEXICON[[w for w in ex.source.split() if ZET_LEXICON.get(w, "")
                                                         .endswith("u")][0]]  # the verb is last


# question answering
def test_qa_answers_are_unique_spans_of_the_context(examples):
    from llmcourse.data import _WORDS, _base_form

    verbs = {_base_form(v): v for v in _WORDS["vt"]}
    assert {k: verbs[k] for k in ("have", "watch", "carry", "see")} == {
        "have": "has", "watch": "watches", "carry": "carries", "see": "sees"}
    kinds = Counter()
    for split in ("train", "test"):
        for ex in examples["qa", split]:
            sentences = [s.strip() for s in ex.source.split(" .")[:-1]]
            assert 2 <= len(sentences) <= 3
            assert f" {ex.source} ".count(f" {ex.target} ") == 1  # a span, and the only occurrence
            q = ex.question.split()
            assert q[-1] == "?"
            if q[0] == "who":
                kinds["who"] += 1
                clause = " ".join(q[1:-1])  # "<verb> <object>": exactly one sentence is "<answer> <verb> <object>"
                assert [s for s in sentences if s.startswith(ex.target + " " + clause)] != []
                assert sum((" " + s + " ").count(" " + clause + " ") for s in sentences) == 1
            else:
                kinds["what"] += 1
                assert q[:2] == ["what", "does"]
                subject, verb = " ".join(q[2:-2]), verbs[q[-2]]
                matching = [s for s in sentences if s.startswith(f"{subject} {verb} ")]
                assert len(matching) == 1 and matching[0].startswith(f"{subject} {verb} {ex.target}")
    assert min(kinds.values()) > 800  # both kinds of question, about half each


# summarization
def summary_by_the_rule(story: str) -> str:
    """The documented rule: the first sentence's subject (a name) and every action of theirs, joined by "and"."""
    sentences = [s.strip() for s in story.split(" .")[:-1]]
    main = sentences[0].split()[0]
    return main + " " + " and ".join(s[len(main) + 1:] for s in sentences if s.split()[0] == main) + " ."


def subject_of(sentence: str) -> str:
    from llmcourse.data import _WORDS

    words = sentence.split()
    verb = next(i for i, w in enumerate(words) if w in _WORDS["vt"] or w in _WORDS["vi"])
    return " ".join(words[:verb])


def test_summaries_follow_the_rule_and_lead_1_is_partial(examples):
    from llmcourse.data import _NAMES

    sizes = Counter()
    for split in ("train", "test"):
        for ex in examples["summarization", split]:
            sentences = [s.strip() for s in ex.source.split(" .")[:-1]]
            main = sentences[0].split()[0]
            assert main in _NAMES and 3 <= len(sentences) <= 4
            mentions = sum(s.startswith(main + " ") for s in sentences)
            others = [s for s in sentences if not s.startswith(main + " ")]
            assert 2 <= mentions <= 3 and 1 <= len(others) <= 2
            subjects = [subject_of(s) for s in sentences]
            assert subjects[0] == main and all(subjects.count(x) == 1 for x in subjects if x != main)
            assert ex.target == summary_by_the_rule(ex.source)
            lead_1 = sentences[0] + " ."
            assert lead_1 != ex.target and ex.target.startswith(lead_1[:-2] + " and ")
            sizes[len(sentences), mentions] += 1
    assert set(sizes) == {(3, 2), (4, 2), (4, 3)}


# sentiment
def sentiment_by_the_rule(sentence: str) -> int:
    """Positive verbs are positive, negative verbs negative; "not" or "never" flips it."""
    from llmcourse.data import _NEGATIVE_VERBS, _POSITIVE_VERBS, _base_form

    words = sentence.split()
    positive = {v for v in _POSITIVE_VERBS} | {_base_form(v) for v in _POSITIVE_VERBS}
    negative = {v for v in _NEGATIVE_VERBS} | {_base_form(v) for v in _NEGATIVE_VERBS}
    (polarity,) = [w in positive for w in words if w in positive | negative]
    return int(polarity != ("not" in words or "never" in words))


def test_sentiment_labels_come_from_the_sentence_and_are_balanced(examples):
    exs = examples["sentiment", "train"] + examples["sentiment", "test"]
    for ex in exs:
        assert ex.label == sentiment_by_the_rule(ex.source) and ex.target == SENTIMENT_LABELS[ex.label]
    labels = np.array([ex.label for ex in exs])
    negated = np.array([(" not " in ex.source or " never " in ex.source) for ex in exs])
    for values in (labels, negated, labels[negated], labels[~negated]):
        assert abs(values.mean() - 0.5) < 0.05  # 2000 fair coins: one standard error is about 0.011
    for word in ("hates", "hate", "loves", "love", "not", "never", "will"):  # no word tells the label
        having = labels[[word in ex.source.split() for ex in exs]]
        assert abs(having.mean() - 0.5) < 0.15, word


def test_bag_of_words_cannot_tell_the_sentiment():
    import torch

    train = task_examples("sentiment", 2000, seed=0)
    test = task_examples("sentiment", 1000, seed=0, split="test")
    vocab = {w: i for i, w in enumerate(sorted({w for ex in train for w in ex.source.split()}))}

    def features(exs):
        x = torch.zeros(len(exs), len(vocab))
        for row, ex in enumerate(exs):
            for w in ex.source.split():
                if w in vocab:
                    x[row, vocab[w]] += 1
        return x, torch.tensor([float(ex.label) for ex in exs])

    (x, y), (x_test, y_test) = features(train), features(test)
    torch.manual_seed(0)
    model = torch.nn.Linear(len(vocab), 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = ((model(x_test).squeeze(1) > 0).float() == y_test).float().mean().item()
    assert accuracy < 0.85  # measured: 0.49 (chance); the labels are the XOR of verb polarity and negation
