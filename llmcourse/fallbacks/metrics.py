"""Chapter 6a's exports, from the reference implementations (``LLMCOURSE_FALLBACK=metrics``).

``normalize_answer``, ``exact_match`` and ``token_f1`` follow the official SQuAD v1.1 evaluation script
(``evaluate-v1.1.py``, a few lines of the standard library, reproduced as written); ``ngram_counts`` counts
NLTK's ``ngrams``; ``corpus_bleu`` calls ``sacrebleu.corpus_bleu`` on whitespace tokens (``tokenize="none"``);
``lcs_length`` and ``rouge_l`` call Google's rouge-score (its LCS table, ``RougeScorer(["rougeL"])``). The three
libraries are installed with the course (NLTK as rouge-score's dependency).
"""

from __future__ import annotations

import re
import string
from collections import Counter

__all__ = ["normalize_answer", "exact_match", "token_f1", "ngram_counts", "corpus_bleu", "lcs_length", "rouge_l"]

_PUNCTUATION = frozenset(string.punctuation)


def _check_str(value, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} should be a str, got {type(value).__name__}")


def _check_tokens(tokens, name: str) -> None:
    if isinstance(tokens, str) or not isinstance(tokens, (list, tuple)):
        raise TypeError(f"{name} should be a list of str tokens (e.g. text.split()), got {type(tokens).__name__}")
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise TypeError(f"{name}[{i}] should be a str, got {type(token).__name__}")


def _check_sequence(seq, name: str) -> None:
    if isinstance(seq, str) or not isinstance(seq, (list, tuple)):
        raise TypeError(f"{name} should be a list (or tuple) of tokens, got {type(seq).__name__}")


def _check_corpus(hypotheses, references) -> None:
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"{name} should be a list of str (one per segment), got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] should be a str, got {type(text).__name__}")
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses and {len(references)} references: BLEU needs one "
                         "reference per hypothesis")
    if not hypotheses:
        raise ValueError("no segments: BLEU needs at least one (hypothesis, reference) pair")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1: lower case, drop punctuation, drop the articles a/an/the, collapse whitespace.

    ``normalize_answer("The  Red ball!") -> "red ball"``
    """
    _check_str(s, "s")
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the two normalized answers are equal, else 0.0 (SQuAD's ``exact_match_score``)."""
    _check_str(prediction, "prediction")
    _check_str(truth, "truth")
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    """SQuAD's ``f1_score``: the harmonic mean of token precision and recall of the normalized answers, with
    tokens counted as a multiset; 0.0 when no token is shared (two empty answers included)."""
    _check_str(prediction, "prediction")
    _check_str(truth, "truth")
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def ngram_counts(tokens: list[str], n: int) -> Counter:
    """How often each n-gram (a tuple of n consecutive tokens) occurs: NLTK's ``ngrams``, counted.

    ``ngram_counts(["the", "cat", "the", "cat"], 2) -> Counter({("the", "cat"): 2, ("cat", "the"): 1})``
    """
    _check_tokens(tokens, "tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n should be an int >= 1, got {n!r}")
    from nltk.util import ngrams

    return Counter(ngrams(list(tokens), n))


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0..100) of whitespace tokens, one reference per hypothesis:
    ``sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score`` (n-grams 1..4, clipped counts
    summed over the corpus, brevity penalty, the "exp" smoothing of zero matches)."""
    _check_corpus(hypotheses, references)
    import sacrebleu

    # force=True only silences sacrebleu's "looks tokenized" warning (our texts end in " ."); the score is the same
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="none", force=True).score)


def lcs_length(a: list, b: list) -> int:
    """The length of the longest common subsequence of two token lists: rouge-score's LCS table.

    ``lcs_length(list("ABCBDAB"), list("BDCABA")) -> 4``
    """
    _check_sequence(a, "a")
    _check_sequence(b, "b")
    from rouge_score.rouge_scorer import _lcs_table

    return int(_lcs_table(list(a), list(b))[-1][-1])


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F-measure (0..1) of the longest common subsequence of tokens (lower case, [a-z0-9] runs):
    ``RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"].fmeasure``."""
    _check_str(hypothesis, "hypothesis")
    _check_str(reference, "reference")
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"].fmeasure)
