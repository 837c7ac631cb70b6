"""Outside checks of chapter 6a (metrics): SQuAD's normalization, exact match and token F1, n-gram counts, corpus
BLEU, the longest common subsequence and ROUGE-L.

Each probe runs the notebook test's inputs: the visible tests' hand-made cases, and the hidden tests' random cases
from the same generators with the same seeds (copied below), plus their edge cases. The reference is the public
fallback, which calls sacrebleu, rouge-score and NLTK; the notebook's hidden tests compare with the same libraries
(SQuAD's rules are the official script's, in both). Scores are compared within the tests' tolerances (1e-6 on
BLEU's 0..100 scale, 1e-9 on the others), and each score must be a Python float, as the tests require.

Own work, as in the hidden tests: the student's function must not reach a scoring library (sacrebleu, rouge_score,
NLTK, evaluate, torchmetrics, or the course's fallbacks) through a global name, and must give the same results
with those libraries unimportable (``sys.modules[name] = None`` while it runs, restored after). The reference side
is library-backed by design, so its own-work value is not a model: that comparator looks at the student's value
only ("" means no problem).
"""

from __future__ import annotations

import contextlib
import random
import sys
import types

from autograder.probes import Probe, close, equal

# ---------------------------------------------------------------------------------------------------------------
# the hidden tests' random cases: the same generators, the same seeds

ANSWER_WORDS = ["the", "The", "THE", "a", "A", "an", "An", "cat", "Cat", "ball", "red", "and", "ANd", "another",
                "theme", "there", "anna", "a-team", "don't", "U.S.", "1990", "ça", "naïve", "(big)", "well,", "ok!",
                "an.", "'the'", "x", "—", "…", "Tom's"]
BLEU_WORDS = ["the", "cat", "dog", "sees", "a", "red", "ball", ".", "tom", "and", "eats", "cake"]
ROUGE_WORDS = ["Tom", "tom", "finds", "a", "ball", "and", "eats", "cake", "cake.", "The", "the", "dog's",
               "well-known", "3", "2nd", "café", "—", "!!", "e-mail", "Anna,", "naïve", "x", "(a)"]
SEPARATORS = [" ", " ", " ", " ", "  ", "\t", " \n"]


def random_words(rng, words, lo=0, hi=8):
    return [rng.choice(words) for _ in range(rng.randint(lo, hi))]


def perturbed(rng, tokens, words):
    out = list(tokens)
    for _ in range(rng.randint(0, 3)):
        op = rng.random()
        if op < 0.35 and out:
            del out[rng.randrange(len(out))]
        elif op < 0.7:
            out.insert(rng.randint(0, len(out)), rng.choice(words))
        elif len(out) > 1:
            i = rng.randrange(len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def joined(rng, tokens):
    return "".join(token + rng.choice(SEPARATORS) for token in tokens).rstrip(" ") if tokens else rng.choice(["", " "])


def random_pair(rng, words, lo=0, hi=8):
    truth = random_words(rng, words, lo, hi)
    other = perturbed(rng, truth, words) if rng.random() < 0.7 else random_words(rng, words, lo, hi)
    return joined(rng, other), joined(rng, truth)


def random_corpus(rng):
    pairs = [random_pair(rng, BLEU_WORDS, 0, 12) for _ in range(rng.randint(1, 6))]
    return [h for h, _ in pairs], [r for _, r in pairs]


# ---------------------------------------------------------------------------------------------------------------
# own work (the notebook's setup cell has the same functions)

# The exercises are to write the metrics yourself: the hidden tests run your functions with the scoring libraries
# (and the course's own version of this chapter) unavailable, and compare them with those libraries outside.
SCORING_LIBRARIES = ("sacrebleu", "rouge_score", "nltk", "evaluate", "torchmetrics", "llmcourse.fallbacks")


def _is_scoring(name) -> bool:
    if not isinstance(name, str):
        return False
    return (name.partition(".")[0] in SCORING_LIBRARIES or name == "llmcourse.fallbacks"
            or name.startswith("llmcourse.fallbacks."))


def _library_of(value) -> str:
    name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
    return name if _is_scoring(name) else ""


def library_used(fn, _seen=None) -> str:
    """The scoring library that fn comes from, or reaches by a global name (or through a function it calls by
    name), or ''."""
    seen = set() if _seen is None else _seen
    if id(fn) in seen:
        return ""
    seen.add(id(fn))
    if _library_of(fn) or not isinstance(fn, types.FunctionType):
        return _library_of(fn)
    names, codes = set(), [fn.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    values = [fn.__globals__[n] for n in names if n in fn.__globals__]
    for cell in fn.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
            values.append(cell.cell_contents)
    values += list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values())
    for value in values:
        found = _library_of(value) or library_used(value, seen)
        if found:
            return found
    return ""


@contextlib.contextmanager
def libraries_unavailable():
    """Inside the block, importing a scoring library fails as if it were not installed."""
    blocked = {name for name in sys.modules if _is_scoring(name)} | set(SCORING_LIBRARIES)
    saved = {name: sys.modules[name] for name in blocked if name in sys.modules}
    try:
        for name in blocked:
            sys.modules[name] = None
        yield
    finally:
        for name in blocked:
            if name in saved:
                sys.modules[name] = saved[name]
            else:
                sys.modules.pop(name, None)


def _own(fn, calls):
    """(fn's results on calls, "" or what is wrong with its own work): no scoring library by a global name, and
    the same results with the libraries unimportable."""
    values = [fn(*args) for args in calls]
    used = library_used(fn)
    if used:
        return values, f"{getattr(fn, '__name__', 'the function')} uses {used}: the exercise is to write it yourself"
    try:
        with libraries_unavailable():
            blocked = [fn(*args) for args in calls]
    except Exception as err:  # noqa: BLE001 - the student's code may raise anything
        return values, (f"{getattr(fn, '__name__', 'the function')} fails with the scoring libraries unavailable "
                        f"({type(err).__name__}: {err})"[:200])
    if any(not (a == b or (a != a and b != b)) for a, b in zip(blocked, values)):
        return values, "gives other results with the scoring libraries unavailable: the exercise is to write it"
    return values, ""


def _only_theirs(got, expected):
    # the reference (the library-backed fallback) is not a model here: only the student's value counts
    if got == "":
        return None
    return str(got)[:200] if isinstance(got, str) else f"got {got!r:.80}"


def _is_float(values):
    return [isinstance(v, float) for v in values]


def _scores(values):
    # numbers as they are (a bool too: the float flags judge the type); anything else by its repr, never a number
    return [v if isinstance(v, (bool, int, float)) else repr(v)[:60] for v in values]


def _counts(value):
    if not isinstance(value, dict):
        return repr(value)[:200]
    return sorted([repr(k), v if isinstance(v, (int, float)) else repr(v)] for k, v in value.items())


# ---------------------------------------------------------------------------------------------------------------
# 6a.1 normalize_answer, exact_match

NORMALIZE_VISIBLE = ["The  Red Ball!", "an apple, and another theme.", "A-team", "  the  "]
EXACT_VISIBLE = [("The ball.", "ball"), ("a red ball", "the ball"), ("Tom's  cat", "toms cat")]


def normalize_visible(m):
    em = [m.exact_match(p, t) for p, t in EXACT_VISIBLE]
    return {"normalized": [m.normalize_answer(t) for t in NORMALIZE_VISIBLE], "exact_match": _scores(em),
            "is_float": _is_float(em)}


def normalize_hidden(m):
    rng = random.Random(61)
    texts = ["", " ", "the", "A AN The", "another theme there", "an.", "'the'", "a-team", "U.S.A.", "don't",
             "\tThe\n cat\u00a0 sat ", "ça va — naïve", "THE END", "the_cat", "a1 the2 an3", "x.y,z!"]
    texts += [joined(rng, random_words(rng, ANSWER_WORDS)) for _ in range(200)]
    normalized, problem_n = _own(m.normalize_answer, [(t,) for t in texts])
    pairs = [("", ""), ("the", ""), ("a", "an"), ("Cat", "cat."), ("cat", "cats"), ("a-team", "team")]
    pairs += [random_pair(rng, ANSWER_WORDS) for _ in range(200)]
    em, problem_e = _own(m.exact_match, pairs)
    return {"normalized": normalized, "exact_match": _scores(em), "is_float": _is_float(em),
            "own_work": problem_n or problem_e}


# ---------------------------------------------------------------------------------------------------------------
# 6a.2 token_f1

F1_VISIBLE = [("the red ball", "a ball"), ("The Cat!", "cat"), ("tom tom", "tom sees"), ("cat", "dog"), ("", "")]


def f1_visible(m):
    f1 = [m.token_f1(p, t) for p, t in F1_VISIBLE]
    return {"f1": _scores(f1), "is_float": _is_float(f1)}


def f1_hidden(m):
    rng = random.Random(62)
    pairs = [("", ""), ("", "cat"), ("cat", ""), ("the", "a"), ("x x x y", "x y"), ("x y", "x x x y"),
             ("The Cat.", "cat"), ("red ball", "ball red"), ("a-team", "team"), ("cat cat", "cat cat cat")]
    pairs += [random_pair(rng, ANSWER_WORDS) for _ in range(250)]
    f1, problem = _own(m.token_f1, pairs)
    return {"f1": _scores(f1), "is_float": _is_float(f1), "own_work": problem}


# ---------------------------------------------------------------------------------------------------------------
# 6a.3 ngram_counts

def ngram_visible(m):
    tokens = "the cat sees the cat".split()
    got = [m.ngram_counts(tokens, n) for n in (1, 2, 5, 6)]
    return {"is_dict": [isinstance(c, dict) for c in got], "counts": [_counts(c) for c in got]}


def ngram_hidden(m):
    rng = random.Random(63)
    cases = [([], 1), ([], 4), (["a"], 1), (["a"], 2), (["a", "a", "a", "a"], 2), (["a b", "c"], 1)]
    cases += [(random_words(rng, "abc", 0, 10), rng.randint(1, 5)) for _ in range(200)]
    got, problem = _own(m.ngram_counts, cases)
    return {"is_dict": [isinstance(c, dict) for c in got], "counts": [_counts(c) for c in got], "own_work": problem}


# ---------------------------------------------------------------------------------------------------------------
# 6a.4 corpus_bleu

BLEU_VISIBLE = [(["tom eats a red cake ."], ["tom eats a red cake ."]), (["dog dog sees"], ["the cat eats"]),
                (["the the the the the the the"], ["the cat is on the mat"]),
                (["the cat is on"], ["the cat is on the mat"]),
                (["tom sees the red ball", "a dog"], ["tom sees the red ball", "the cat"])]


def bleu_visible(m):
    bleu = [m.corpus_bleu(h, r) for h, r in BLEU_VISIBLE]
    return {"bleu": _scores(bleu), "is_float": _is_float(bleu)}


def bleu_hidden(m):
    rng = random.Random(64)
    cases = [(["tom eats a red cake ."], ["tom eats a red cake ."]), (["the cat ."], ["the cat ."]),
             (["dog dog"], ["cat cat"]), ([""], ["the cat sees a ball"]), (["the cat sees a ball"], [""]),
             ([""], [""]), (["", ""], ["", ""]), (["cat"], ["cat"]), (["cat"], ["the cat sees a ball"]),
             (["the the the the the the the"], ["the cat is on the mat"]),
             (["the cat is on"], ["the cat is on the mat"]),
             (["a b c", "d e"], ["a b c", "d e"]), (["a b c", "d e f g h"], ["a b c", "d e f g h"]),
             (["the  cat\tsees a  ball .\n"], ["the cat sees a ball ."]), (["ça va très bien"], ["ça va très bien !"]),
             (["the cat sees a ball and the dog sees a cat ."], ["the cat sees ."]),
             (["a b c d", "x"], ["a b c d e f g h", "x"]), (["a b c d e"], ["a b c d"])]
    cases += [random_corpus(rng) for _ in range(250)]
    bleu, problem = _own(m.corpus_bleu, cases)
    return {"bleu": _scores(bleu), "is_float": _is_float(bleu), "own_work": problem}


# ---------------------------------------------------------------------------------------------------------------
# 6a.5 lcs_length

LCS_VISIBLE = [(list("ABCBDAB"), list("BDCABA")), (["tom", "eats"], ["tom", "eats"]),
               ("a b c".split(), "c b a".split()),
               ("tom finds a ball and eats a cake".split(), "tom eats a cake".split()), ([], ["a"]), (["a"], ["b"])]


def lcs_visible(m):
    return {"lcs": _scores([m.lcs_length(a, b) for a, b in LCS_VISIBLE])}


def lcs_hidden(m):
    rng = random.Random(65)
    cases = [([], []), ([], ["a"]), (["a"], []), (["a"], ["a"]), (["a"] * 5, ["a"] * 3),
             (list("abcd"), list("dcba")), (list("abcdef"), list("acf")), (list("xaybzc"), list("abc")),
             (list("abc"), list("xaybzc"))]
    cases += [(random_words(rng, "abcd", 0, 12), random_words(rng, "abcd", 0, 12)) for _ in range(250)]
    lcs, problem = _own(m.lcs_length, cases)
    return {"lcs": _scores(lcs), "own_work": problem}


# ---------------------------------------------------------------------------------------------------------------
# 6a.6 rouge_l

ROUGE_VISIBLE = [("tom eats a cake", "Tom finds a ball and eats a cake."), ("The cat!", "the cat"), ("b a", "a b"),
                 ("cat", "dog"), ("...", "a cat")]


def rouge_visible(m):
    rouge = [m.rouge_l(h, r) for h, r in ROUGE_VISIBLE]
    return {"rouge_l": _scores(rouge), "is_float": _is_float(rouge)}


def rouge_hidden(m):
    rng = random.Random(66)
    pairs = [("", ""), ("", "a cat"), ("a cat", ""), ("!!", "!!"), ("tom", "tom"), ("Tom's CAKE.", "toms cake"),
             ("café", "caf"), ("é", "e"), ("well-known", "well known"), ("2nd 3", "2nd  3!"), ("b a", "a b"),
             ("a a a", "a"), ("tom eats a cake and finds a ball .", "tom finds a ball and eats a cake .")]
    pairs += [random_pair(rng, ROUGE_WORDS, 0, 10) for _ in range(250)]
    rouge, problem = _own(m.rouge_l, pairs)
    return {"rouge_l": _scores(rouge), "is_float": _is_float(rouge), "own_work": problem}


EXACT = close(0.0, 0.0)
TIGHT = close(1e-9, 0.0)  # the tests' check_score default
BLEU = close(1e-6, 0.0)  # on BLEU's 0..100 scale, as the tests

PROBES = [
    Probe("test_normalize_answer", normalize_visible,
          {"normalized": equal(), "exact_match": TIGHT, "is_float": equal()}),
    Probe("test_normalize_answer_hidden", normalize_hidden,
          {"normalized": equal(), "exact_match": EXACT, "is_float": equal(), "own_work": _only_theirs}),
    Probe("test_token_f1", f1_visible, {"f1": TIGHT, "is_float": equal()}),
    Probe("test_token_f1_hidden", f1_hidden, {"f1": TIGHT, "is_float": equal(), "own_work": _only_theirs}),
    Probe("test_ngram_counts", ngram_visible, equal()),
    Probe("test_ngram_counts_hidden", ngram_hidden, {"is_dict": equal(), "counts": equal(),
                                                     "own_work": _only_theirs}),
    Probe("test_corpus_bleu", bleu_visible, {"bleu": BLEU, "is_float": equal()}),
    Probe("test_corpus_bleu_hidden", bleu_hidden, {"bleu": BLEU, "is_float": equal(), "own_work": _only_theirs}),
    Probe("test_lcs_length", lcs_visible, equal()),
    Probe("test_lcs_length_hidden", lcs_hidden, {"lcs": equal(), "own_work": _only_theirs}),
    Probe("test_rouge_l", rouge_visible, {"rouge_l": TIGHT, "is_float": equal()}),
    Probe("test_rouge_l_hidden", rouge_hidden, {"rouge_l": TIGHT, "is_float": equal(), "own_work": _only_theirs}),
]
