"""Chapter 6a: every graded test rejects plausible wrong answers; the public fallback agrees with the solution; both
equal the reference implementations (SQuAD v1.1's script, sacrebleu, rouge-score) on random and edge cases.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import pytest
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests

from autograder.probes.metrics import (
    ANSWER_WORDS,
    ROUGE_WORDS,
    joined,
    random_corpus,
    random_pair,
    random_words,
)

CHAPTER = "06a_metrics"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

NORMALIZE = {"test_normalize_answer", "test_normalize_answer_hidden"}
F1 = {"test_token_f1", "test_token_f1_hidden"}
NGRAMS = {"test_ngram_counts", "test_ngram_counts_hidden"}
BLEU = {"test_corpus_bleu", "test_corpus_bleu_hidden"}
LCS = {"test_lcs_length", "test_lcs_length_hidden"}
ROUGE = {"test_rouge_l", "test_rouge_l_hidden"}


edit = solution_editor(SOLUTION)


ARTICLES = '    s = re.sub(r"\\b(a|an|the)\\b", " ", s)  # whole words only: "another" and "theme" stay\n'
PUNCTUATION = ('    s = "".join(ch for ch in s if ch not in string.punctuation)  # before the articles: "a-team" '
               '-> "ateam"\n')
BLEU_BODY_START = "    matches, totals = [0] * 4, [0] * 4"

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    # 6a.1 normalize_answer, exact_match
    # (token_f1 normalizes with normalize_answer, so its tests fail too)
    "exact_match without removing articles": ("normalize_answer", edit("normalize_answer", (ARTICLES, "")),
                                              NORMALIZE | F1),
    "articles removed before the punctuation": ("normalize_answer", edit(
        "normalize_answer", (PUNCTUATION + ARTICLES, ARTICLES + PUNCTUATION)), NORMALIZE | {"test_token_f1_hidden"}),
    "articles removed as substrings (str.replace)": ("normalize_answer", edit(
        "normalize_answer", (ARTICLES, '    for article in ("the", "an", "a"):\n'
                                       '        s = s.replace(article, " ")\n')), NORMALIZE | F1),
    "exact_match on the raw strings": ("normalize_answer", edit(
        "normalize_answer", ("return float(normalize_answer(prediction) == normalize_answer(truth))",
                             "return float(prediction == truth)")), NORMALIZE),
    "exact_match returning a bool": ("normalize_answer", edit(
        "normalize_answer", ("return float(normalize_answer(prediction) == normalize_answer(truth))",
                             "return normalize_answer(prediction) == normalize_answer(truth)")), NORMALIZE),
    # 6a.2 token_f1
    "F1 without normalization": ("token_f1", edit(
        "token_f1", ("normalize_answer(prediction).split(), normalize_answer(truth).split()",
                     "prediction.split(), truth.split()")), F1),
    "F1 counting every predicted token found in the truth (no multiset)": ("token_f1", edit(
        "token_f1", ("sum((Counter(pred) & Counter(gold)).values())", "sum(token in gold for token in pred)")), F1),
    "F1 scoring two empty answers 1 (SQuAD 2.0's rule)": ("token_f1", edit(
        "token_f1", ("    if common == 0:\n", "    if not pred or not gold:\n        return float(pred == gold)\n"
                                              "    if common == 0:\n")), F1),
    "token_f1 imported from the course's fallback": ("token_f1", "#| export\n"
                                                     "from llmcourse.fallbacks.metrics import token_f1\n",
                                                     {"test_token_f1_hidden"}),
    # 6a.3 ngram_counts
    "n-gram counts missing the last n-gram": ("ngram_counts", edit(
        "ngram_counts", ("range(len(tokens) - n + 1)", "range(len(tokens) - n)")), NGRAMS | BLEU),
    "n-grams as joined strings instead of tuples": ("ngram_counts", edit(
        "ngram_counts", ("tuple(tokens[i:i + n])", '" ".join(tokens[i:i + n])')), NGRAMS),
    # 6a.4 corpus_bleu
    "BLEU without the brevity penalty": ("corpus_bleu", edit(
        "corpus_bleu", ("brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)",
                        "brevity = 1.0")), BLEU),
    "BLEU averaged over sentences instead of corpus-level": ("corpus_bleu", edit(
        "corpus_bleu", ("def corpus_bleu(", "def _corpus_bleu_of("))
        + "\n\ndef corpus_bleu(hypotheses, references):\n"
          "    scores = [_corpus_bleu_of([h], [r]) for h, r in zip(hypotheses, references)]\n"
          "    return sum(scores) / len(scores)\n", BLEU),
    "BLEU without clipping": ("corpus_bleu", edit(
        "corpus_bleu", ("min(count, ref_counts[gram])", "(count if gram in ref_counts else 0)")), BLEU),
    "BLEU without smoothing": ("corpus_bleu", edit(
        "corpus_bleu", ("            halvings += 1\n            m = 0.5**halvings\n", "            return 0.0\n")),
        BLEU),
    "BLEU with the arithmetic mean of the precisions": ("corpus_bleu", edit(
        "corpus_bleu", ("log_precision += math.log(m / t) / 4", "log_precision += m / t / 4"),
        ("100 * brevity * math.exp(log_precision)", "100 * brevity * log_precision")), BLEU),
    "BLEU that calls sacrebleu": ("corpus_bleu", "#| export\nimport sacrebleu\n\n\n"
                                  "def corpus_bleu(hypotheses, references):\n"
                                  "    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize='none').score\n",
                                  {"test_corpus_bleu_hidden"}),
    "BLEU that imports sacrebleu's BLEU inside the function": ("corpus_bleu", edit(
        "corpus_bleu", (BLEU_BODY_START, "    from sacrebleu.metrics import BLEU\n\n    return BLEU(tokenize='none')"
                                         ".corpus_score(hypotheses, [references]).score\n" + BLEU_BODY_START)),
        {"test_corpus_bleu_hidden"}),
    # 6a.5 lcs_length
    "LCS off by one (the last token of a left out)": ("lcs_length", edit(
        "lcs_length", ("for i in range(1, len(a) + 1):", "for i in range(1, len(a)):")), LCS | ROUGE),
    "longest common substring instead of subsequence": ("lcs_length", edit(
        "lcs_length", ("                L[i][j] = max(L[i - 1][j], L[i][j - 1])", "                L[i][j] = 0"),
        ("    return L[len(a)][len(b)]", "    return max(max(row) for row in L)")), LCS | ROUGE),
    "LCS that calls rouge-score": ("lcs_length", "#| export\nfrom rouge_score.rouge_scorer import _lcs_table\n\n\n"
                                   "def lcs_length(a, b):\n    return _lcs_table(a, b)[-1][-1]\n",
                                   {"test_lcs_length_hidden", "test_rouge_l_hidden"}),
    # 6a.6 rouge_l
    "ROUGE-L on characters instead of tokens": ("rouge_l", edit(
        "rouge_l", ('hyp = re.sub(r"[^a-z0-9]+", " ", hypothesis.lower()).split()',
                    'hyp = list(re.sub(r"[^a-z0-9]+", "", hypothesis.lower()))'),
        ('ref = re.sub(r"[^a-z0-9]+", " ", reference.lower()).split()',
         'ref = list(re.sub(r"[^a-z0-9]+", "", reference.lower()))')), ROUGE),
    "ROUGE-L recall instead of F-measure": ("rouge_l", edit(
        "rouge_l", ("    return 2 * precision * recall / (precision + recall)", "    return recall")), ROUGE),
    "ROUGE-L on str.split() tokens (case and punctuation kept)": ("rouge_l", edit(
        "rouge_l", ('hyp = re.sub(r"[^a-z0-9]+", " ", hypothesis.lower()).split()', "hyp = hypothesis.split()"),
        ('ref = re.sub(r"[^a-z0-9]+", " ", reference.lower()).split()', "ref = reference.split()")), ROUGE),
    "ROUGE-L that calls rouge-score": ("rouge_l", "#| export\nfrom rouge_score import rouge_scorer\n\n\n"
                                       "def rouge_l(hypothesis, reference):\n"
                                       "    scorer = rouge_scorer.RougeScorer(['rougeL'])\n"
                                       "    return scorer.score(reference, hypothesis)['rougeL'].fmeasure\n",
                                       ROUGE),  # visible too: rouge-score's 0 is an int
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the references, and both implementations against them

def squad_normalize_answer(s):  # evaluate-v1.1.py, as written
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1_score(prediction, ground_truth):  # evaluate-v1.1.py, as written
    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def sacrebleu_score(hypotheses, references):
    import sacrebleu

    return sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none", force=True).score


def rouge_score_l(hypothesis, reference):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"].fmeasure


@pytest.fixture(params=["solution", "fallback"])
def impl(request, monkeypatch):
    if request.param == "fallback":
        from llmcourse.fallbacks import metrics
        yield metrics
        return
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.delenv("LLMCOURSE_FALLBACK", raising=False)
    from llmcourse.chapters import reload_all
    reload_all()
    import importlib
    module = importlib.import_module("llmcourse.chapters.metrics")
    yield module
    reload_all()


BLEU_WORDS_FOR_COUNTS = ["the", "cat", "the", "a", "."]
ANSWER_EDGES = [("", ""), ("", "cat"), ("cat", ""), ("the", "a"), ("A AN The", ""), ("The Cat.", "cat"),
                ("x x x y", "x y"), ("a-team", "team"), ("another theme", "nother heme"), ("U.S.", "us"),
                ("one", "one"), ("\tThe\n cat\u00a0 sat ", "cat sat"), ("ça — naïve", "ça naïve")]
BLEU_EDGES = [(["tom eats a red cake ."], ["tom eats a red cake ."]), (["the cat ."], ["the cat ."]),
              (["dog dog"], ["cat cat"]), ([""], ["the cat sees a ball"]), (["the cat sees a ball"], [""]),
              ([""], [""]), (["cat"], ["cat"]), (["cat"], ["the cat sees a ball"]),
              (["the the the the the the the"], ["the cat is on the mat"]),
              (["the cat is on"], ["the cat is on the mat"]),
              (["a b c", "d e"], ["a b c", "d e"]), (["a b c d", "x"], ["a b c d e f g h", "x"]),
              (["the  cat\tsees a  ball .\n"], ["the cat sees a ball ."]), (["a b c d e"], ["a b c d"])]
ROUGE_EDGES = [("", ""), ("", "a cat"), ("a cat", ""), ("!!", "!!"), ("tom", "tom"), ("Tom's CAKE.", "toms cake"),
               ("café", "caf"), ("well-known", "well known"), ("b a", "a b"), ("a a a", "a"),
               ("tom eats a cake", "Tom finds a ball and eats a cake.")]


def test_squad_metrics_equal_the_official_script(impl):
    rng = random.Random(1)
    pairs = ANSWER_EDGES + [random_pair(rng, ANSWER_WORDS) for _ in range(300)]
    for prediction, truth in pairs:
        for text in (prediction, truth):
            assert impl.normalize_answer(text) == squad_normalize_answer(text), text
        em = impl.exact_match(prediction, truth)
        assert type(em) is float and em == float(squad_normalize_answer(prediction) == squad_normalize_answer(truth))
        f1 = impl.token_f1(prediction, truth)
        assert type(f1) is float and abs(f1 - squad_f1_score(prediction, truth)) <= 1e-12, (prediction, truth)


def test_ngram_counts_and_bleu_equal_sacrebleu(impl):
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    rng = random.Random(2)
    for _ in range(200):
        tokens, n = random_words(rng, "abc", 0, 10), rng.randint(1, 5)
        expected, _ = extract_all_word_ngrams(" ".join(tokens), n, n)
        assert impl.ngram_counts(tokens, n) == expected
    cases = BLEU_EDGES + [random_corpus(rng) for _ in range(300)]
    for hypotheses, references in cases:
        bleu = impl.corpus_bleu(hypotheses, references)
        assert isinstance(bleu, float)
        assert abs(bleu - sacrebleu_score(hypotheses, references)) <= 1e-6, (hypotheses, references)
    assert impl.corpus_bleu(["tom eats a red cake ."], ["tom eats a red cake ."]) == pytest.approx(100.0)
    assert impl.corpus_bleu(["the cat ."], ["the cat ."]) == 0.0  # no 4-gram at all
    assert impl.corpus_bleu([""], ["a b c d"]) == 0.0


def test_lcs_and_rouge_l_equal_rouge_score(impl):
    from rouge_score.rouge_scorer import _lcs_table

    rng = random.Random(3)
    for _ in range(200):
        a, b = random_words(rng, "abcd", 0, 12), random_words(rng, "abcd", 0, 12)
        assert impl.lcs_length(a, b) == _lcs_table(a, b)[-1][-1], (a, b)
    assert impl.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    pairs = ROUGE_EDGES + [random_pair(rng, ROUGE_WORDS, 0, 10) for _ in range(300)]
    for hypothesis, reference in pairs:
        score = impl.rouge_l(hypothesis, reference)
        assert isinstance(score, float)
        assert abs(score - rouge_score_l(hypothesis, reference)) <= 1e-9, (hypothesis, reference)


def test_bad_inputs_raise_clear_errors(impl):
    for call in (lambda: impl.normalize_answer(None), lambda: impl.exact_match("a", 1),
                 lambda: impl.token_f1(b"a", "a"), lambda: impl.rouge_l("a", ["a"]),
                 lambda: impl.corpus_bleu("a cat", ["a cat"]), lambda: impl.corpus_bleu(["a", 2], ["a", "b"]),
                 lambda: impl.ngram_counts("a b", 1),
                 lambda: impl.lcs_length("abc", ["a"])):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        impl.corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        impl.corpus_bleu([], [])
    with pytest.raises(ValueError, match="n should be"):
        impl.ngram_counts(["a"], 0)


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.delenv("LLMCOURSE_FALLBACK", raising=False)
    from llmcourse.chapters import reload_all

    reload_all()
    try:
        from llmcourse.chapters import metrics as ours
        from llmcourse.fallbacks import metrics as fallback

        public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
                  and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
        assert public == {"normalize_answer", "exact_match", "token_f1", "ngram_counts", "corpus_bleu", "lcs_length",
                          "rouge_l"}
        assert public <= set(fallback.__all__)
        rng = random.Random(4)
        for _ in range(200):
            prediction, truth = random_pair(rng, ANSWER_WORDS)
            assert ours.normalize_answer(prediction) == fallback.normalize_answer(prediction)
            assert ours.exact_match(prediction, truth) == fallback.exact_match(prediction, truth)
            assert ours.token_f1(prediction, truth) == pytest.approx(fallback.token_f1(prediction, truth), abs=1e-12)
            tokens, n = joined(rng, random_words(rng, BLEU_WORDS_FOR_COUNTS)).split(), rng.randint(1, 4)
            assert ours.ngram_counts(tokens, n) == fallback.ngram_counts(tokens, n)
            hypotheses, references = random_corpus(rng)
            assert ours.corpus_bleu(hypotheses, references) == pytest.approx(
                fallback.corpus_bleu(hypotheses, references), abs=1e-9)
            hypothesis, reference = random_pair(rng, ROUGE_WORDS)
            assert ours.rouge_l(hypothesis, reference) == pytest.approx(fallback.rouge_l(hypothesis, reference),
                                                                        abs=1e-12)
            a, b = hypothesis.split(), reference.split()
            assert ours.lcs_length(a, b) == fallback.lcs_length(a, b)
    finally:
        reload_all()

