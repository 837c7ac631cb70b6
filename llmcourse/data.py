"""The course corpus: readable English-like text from a source whose entropy rate is known exactly.

Every chapter that trains a model trains it on text from :func:`course_corpus`. The text comes from a small
probabilistic grammar, written as a first-order Markov chain over *words in a role*: the chain's states are
words like ``cat`` (as a subject), ``cat`` (as an object), ``the`` (opening a subject) and the sentence end
``.``; each state is written as its spelling, and the words are separated by single spaces::

    the small cat sees a red ball . tom runs to the old house . she likes him . ...

Because the source is known exactly, so is the best loss any model can reach on it: the **entropy rate**,
in nats per character (:func:`entropy_floor`). A model of any kind, with any tokenizer, is compared with it by
its cross-entropy per *character* (its total negative log-likelihood divided by the number of characters).

How the rate is computed. Let ``P`` be the transition matrix over states and ``pi`` its stationary
distribution (``pi P = pi``). The entropy per word is

    H = - sum_i pi_i sum_j P_ij log P_ij,

and since every word, with the space after it, takes ``len(word) + 1`` characters, the entropy per character is
``H / E_pi[len(word) + 1]``. Two properties make this exact for the text, not only for the state sequence:

- the text determines the state sequence: from any state, the possible next states have different spellings
  (the chain is *unifilar*), so reading the text word by word from the start state recovers every state;
- the words are space-separated, so the character string determines the word sequence (a prefix-free code).

The text of n words therefore carries exactly the information of n states, about ``n H`` nats, in about
``n E[len + 1]`` characters (the renewal argument), and a text's exact probability is a product of transition
probabilities (:meth:`MarkovTextSource.log_prob`). The chain is irreducible and aperiodic (checked when a
source is built), so ``pi`` is unique and long samples reach it whatever the start.

Example::

    >>> from llmcourse.data import course_corpus, entropy_floor
    >>> course_corpus(40, seed=0)            # exactly 40 characters, the same for the same seed
    >>> entropy_floor()                      # nats per character: no model can do better on average

Chapter 6's tasks. :func:`task_examples` makes input-output pairs for four tasks, written with the same words as the
corpus. Each example has exactly one correct answer (``target``); a model reads ``prompt`` and should write
``completion`` (a space, then the target); ``prompt + completion`` plus one end-of-text token fits in 64 tokens of
the course-tiny tokenizer. A stable hash of the source keeps "test" examples apart from "train" ones::

    >>> ex = task_examples("qa", 2000, seed=0)[0]        # list[TaskExample]; split="test" for held-out ones
    >>> ex.prompt, ex.completion

- **translation** into the invented language *zet* (:func:`to_zet`, :data:`ZET_LEXICON`): its own words, verb
  last, adjectives and then the determiner after the noun, postpositions; word-by-word substitution is wrong.
  ``english: this new queen draws a shoe there . zet:`` -> ``sifo fizi da firo ta sive nazu .``
- **qa**: a context of 2-3 sentences and a "who ...?" or "what does ...?" question; the answer is the one span of
  the context that answers it.
  ``zoe watches our coat . tom has my box . question: what does zoe watch ? answer:`` -> ``our coat``
- **summarization**: a story of 3-4 sentences, 2-3 of them about its main character; the summary is the main
  character and their actions in order, joined by "and" (the first sentence alone is only part of it).
  ``mia draws the coat . mia knows my table . this queen reads his farmer . summary:``
  -> ``mia draws the coat and knows my table .``
- **sentiment**: verbs of feeling, maybe negated: the label is the verb's polarity, flipped by "not"/"never"
  (:data:`SENTIMENT_LABELS`); half the sentences are negated, so no single word tells the label.
  ``my cow will not avoid this clock . sentiment:`` -> ``positive``
"""

from __future__ import annotations

import bisect
import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MarkovTextSource", "course_source", "course_corpus", "entropy_floor", "train_val_text",
           "TASKS", "SENTIMENT_LABELS", "TaskExample", "task_examples", "ZET_LEXICON", "to_zet", "TASK_BLOCK_SIZE"]

_BLOCK = 4096  # uniforms are drawn in blocks of this size, so a shorter sample is a prefix of a longer one


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.40}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _rng(seed) -> np.random.Generator:
    """numpy's PCG64 generator for ``seed``: a non-negative int (or a :class:`numpy.random.SeedSequence`)."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative int, got {type(seed).__name__} {seed!r:.40}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


class MarkovTextSource:
    """A first-order Markov chain over words (states), written out as space-separated text.

    ``words[i]`` is the spelling of state ``i`` (several states may share a spelling: ``cat`` as a subject and
    as an object), ``transitions[i, j]`` the probability that state ``j`` follows state ``i``, and ``start`` the
    state the chain is in before the first word (the course source starts as if a sentence had just ended).
    ``labels`` optionally name each state's class (``"noun_s"``), for reading only.

    The constructor checks what the entropy rate needs: rows are probability distributions; spellings are
    non-empty and contain no space; from each state the possible next states have different spellings (so the
    text determines the states); the chain is irreducible and aperiodic (so ``pi`` is unique).
    """

    def __init__(self, words: Sequence[str], transitions, start: int = 0, labels: Sequence[str] | None = None):
        self.words: list[str] = [str(w) for w in words]
        P = np.array(transitions, dtype=np.float64)
        n = len(self.words)
        if P.shape != (n, n):
            raise ValueError(f"transitions must have shape ({n}, {n}) for {n} words, got {P.shape}")
        if not np.all(np.isfinite(P)) or (P < 0).any():
            raise ValueError("transition probabilities must be finite and >= 0")
        if not np.allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12):
            bad = int(np.argmax(np.abs(P.sum(axis=1) - 1)))
            raise ValueError(f"row {bad} ({self.words[bad]!r}) of the transitions sums to {P[bad].sum()}, not 1")
        for w in self.words:
            if not w or " " in w:
                raise ValueError(f"spellings must be non-empty and contain no space, got {w!r}")
        if not 0 <= start < n:
            raise ValueError(f"start must be a state index in [0, {n}), got {start}")
        self.transition_matrix = P
        self.transition_matrix.setflags(write=False)
        self.start = int(start)
        self.labels = None if labels is None else [str(x) for x in labels]
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"labels must have one entry per word: {len(self.labels)} labels for {n} words")

        # successors of each state: indices, cumulative probabilities (for sampling), spelling -> (j, log P_ij)
        self._succ: list[list[int]] = []
        self._cum: list[list[float]] = []
        self._by_spelling: list[dict[str, tuple[int, float]]] = []
        for i in range(n):
            js = np.flatnonzero(P[i]).tolist()
            by_spelling = {}
            for j in js:
                if self.words[j] in by_spelling:
                    raise ValueError(
                        f"state {i} ({self.words[i]!r}) can be followed by two states spelled {self.words[j]!r}: "
                        "the text would not determine the states, and the entropy rate would not be exact")
                by_spelling[self.words[j]] = (j, math.log(P[i, j]))
            cum = np.cumsum(P[i, js]).tolist()
            cum[-1] = 1.0
            self._succ.append(js)
            self._cum.append(cum)
            self._by_spelling.append(by_spelling)
        self._check_irreducible_and_aperiodic()

    # --- structure -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return (f"MarkovTextSource({len(self)} states, {len(self.vocabulary)} words, "
                f"{self.entropy_per_char():.4f} nats/char)")

    @functools.cached_property
    def vocabulary(self) -> list[str]:
        """The distinct spellings, sorted."""
        return sorted(set(self.words))

    @functools.cached_property
    def alphabet(self) -> str:
        """Every character the text can contain (the space included), sorted: a character vocabulary."""
        return "".join(sorted(set("".join(self.words)) | {" "}))

    def _check_irreducible_and_aperiodic(self) -> None:
        """Every state reaches every other (BFS both ways), and the gcd of the cycle lengths is 1.

        The period is gcd over edges (u, v) of level(u) + 1 - level(v), with BFS levels from one state.
        """
        n = len(self)
        level = [-1] * n
        level[self.start] = 0
        frontier = [self.start]
        while frontier:
            nxt = []
            for u in frontier:
                for v in self._succ[u]:
                    if level[v] < 0:
                        level[v] = level[u] + 1
                        nxt.append(v)
            frontier = nxt
        reverse = [[] for _ in range(n)]
        for u in range(n):
            for v in self._succ[u]:
                reverse[v].append(u)
        seen, frontier = {self.start}, [self.start]  # the states from which the start can be reached
        while frontier:
            nxt = []
            for v in frontier:
                for u in reverse[v]:
                    if u not in seen:
                        seen.add(u)
                        nxt.append(u)
            frontier = nxt
        unreachable = [i for i in range(n) if level[i] < 0 or i not in seen]
        if unreachable:
            raise ValueError(f"the chain is not irreducible: e.g. state {unreachable[0]} "
                             f"({self.words[unreachable[0]]!r}) and the start do not reach each other")
        period = 0
        for u in range(n):
            for v in self._succ[u]:
                period = math.gcd(period, level[u] + 1 - level[v])
        if period != 1:
            raise ValueError(f"the chain is periodic (period {period}), so it has no limiting distribution")

    # --- exact quantities ----------------------------------------------------------------------------------
    def stationary(self) -> np.ndarray:
        """pi with pi P = pi and sum(pi) = 1, from one linear solve (float64, read-only)."""
        return self._stationary

    @functools.cached_property
    def _stationary(self) -> np.ndarray:
        n = len(self)
        A = self.transition_matrix.T - np.eye(n)  # (P^T - I) pi = 0 ...
        A[-1, :] = 1.0  # ... with one (redundant) equation replaced by sum(pi) = 1
        b = np.zeros(n)
        b[-1] = 1.0
        pi = np.linalg.solve(A, b)
        pi = np.clip(pi, 0.0, None)
        pi /= pi.sum()
        pi.setflags(write=False)
        return pi

    def entropy_per_word(self) -> float:
        """H = -sum_i pi_i sum_j P_ij log P_ij, in nats per word (per state)."""
        P = self.transition_matrix
        plogp = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
        return float(-(self.stationary() @ plogp.sum(axis=1)))

    def mean_chars_per_word(self) -> float:
        """E[len(word) + 1] under the stationary distribution: characters per word, the space included."""
        lengths = np.array([len(w) + 1 for w in self.words], dtype=np.float64)
        return float(self.stationary() @ lengths)

    def entropy_per_char(self) -> float:
        """The entropy rate of the text, in nats per character: entropy_per_word() / mean_chars_per_word()."""
        return self.entropy_per_word() / self.mean_chars_per_word()

    # --- sampling ------------------------------------------------------------------------------------------
    def _states(self, rng: np.random.Generator):
        """An endless stream of states from the start, one uniform per word, drawn in fixed-size blocks."""
        succ, cum, state = self._succ, self._cum, self.start
        while True:
            for u in rng.random(_BLOCK).tolist():
                row = cum[state]
                k = bisect.bisect_right(row, u)
                state = succ[state][min(k, len(row) - 1)]
                yield state

    def sample_states(self, n: int, seed: int = 0) -> list[int]:
        """n states of the chain, starting after the start state; the same for the same seed."""
        n = _check_count(n, "n")
        stream = self._states(_rng(seed))
        return [next(stream) for _ in range(n)]

    def sample_words(self, n: int, seed: int = 0) -> list[str]:
        """n words of text (their spellings); the same for the same seed."""
        return [self.words[s] for s in self.sample_states(n, seed)]

    def text(self, n_chars: int | None = None, *, n_words: int | None = None, seed: int = 0) -> str:
        """Text from the source: exactly ``n_chars`` characters, or ``n_words`` whole words (give one of them).

        ``n_chars`` cuts the endless text "w1 w2 w3 ..." after that many characters, so the last word may be cut
        short, and a shorter text is a prefix of a longer one with the same seed. ``n_words`` joins that many
        words with single spaces (no space at the end).
        """
        if (n_chars is None) == (n_words is None):
            raise TypeError("give exactly one of n_chars and n_words")
        if n_words is not None:
            return " ".join(self.sample_words(n_words, seed))
        n_chars = _check_count(n_chars, "n_chars")
        return self._text_chars(n_chars, _rng(seed))

    def _text_chars(self, n_chars: int, rng: np.random.Generator) -> str:
        words, total = self.words, 0
        parts = []
        for state in self._states(rng):
            if total > n_chars:  # the joined text is total - 1 characters long (no space after the last word)
                break
            parts.append(words[state])
            total += len(words[state]) + 1
        return " ".join(parts)[:n_chars] if n_chars else ""

    # --- probabilities -------------------------------------------------------------------------------------
    def parse(self, text: str) -> list[int]:
        """The states that wrote ``text``, a sequence of whole words separated by single spaces.

        Raises ValueError if the source cannot write ``text`` (from its start state).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        states, state = [], self.start
        for position, word in enumerate(text.split(" ") if text else []):
            found = self._by_spelling[state].get(word)
            if found is None:
                raise ValueError(f"the source cannot write word {position} ({word!r}) after {self.words[state]!r}")
            state = found[0]
            states.append(state)
        return states

    def log_prob(self, text: str) -> float:
        """log P(the source's text begins with ``text``), in nats; ``-inf`` if it cannot.

        For whole words this is the sum of log P_ij along the path from the start state; a last word that is
        not followed by a space may be cut short, and counts with the total probability of the words it begins.
        ``log_prob("")`` is 0. Per character, ``-log_prob(text) / len(text)`` tends to ``entropy_per_char()``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            return 0.0
        *whole, last = text.split(" ")
        total, state = 0.0, self.start
        by_spelling = self._by_spelling
        for word in whole:
            found = by_spelling[state].get(word)
            if found is None:
                return -math.inf
            state, logp = found
            total += logp
        if last:
            p = sum(math.exp(logp) for spelling, (_, logp) in by_spelling[state].items() if spelling.startswith(last))
            if p == 0.0:
                return -math.inf
            total += math.log(p)
        return total


# --- the course's source ---------------------------------------------------------------------------------------
# Word classes. Within a class, word r (counting from 0) has weight 1 / (r + 2): a gentle Zipf law, so the first
# words of each list are the common ones.
_WORDS = {
    "det": "the a an my your his her our this that every one".split(),
    "opin": "nice good bad happy sad funny pretty angry lovely strange clever lazy brave kind quiet busy".split(),
    "size": "big small little tall tiny huge long short fat thin".split(),
    "age": "old young new".split(),
    "col": "red blue green yellow white black brown grey pink purple".split(),
    "animal": ("cat dog bird girl boy man woman child fish horse cow pig duck mouse rabbit fox bear lion frog owl "
               "sheep goat elephant monkey baby teacher doctor farmer king queen friend baker sailor student uncle "
               "aunt").split(),
    "thing": ("ball book apple cake box hat cup key letter song story picture car boat bike kite toy egg bread "
              "chair table door window flower stone bag coat shoe pen lamp clock bell map umbrella").split(),
    "place": ("house garden park school river forest tree hill road city village farm shop kitchen room bed bridge "
              "beach field lake").split(),
    "name": "tom anna max lily sam mia ben emma leo zoe".split(),
    "pron_s": "he she it".split(),
    "pron_o": "him them it me us".split(),
    "vi": ("runs walks sleeps sings jumps sits waits laughs smiles swims plays dances falls cries works rests hides "
           "climbs shouts listens").split(),
    "vt": ("sees likes finds wants has eats takes holds makes opens loves helps calls follows watches carries buys "
           "needs draws reads brings hears knows meets").split(),
    "adv": "quickly slowly happily quietly loudly sadly again today now there here together outside well".split(),
    "prep": "to in on near under with behind at into from by over".split(),
    "conj": "and but so while because".split(),
    "end": ["."],
}
# The nouns that may fill each role: subjects are animate, objects anything, a preposition's object a place first.
_NOUNS = {"s": ["animal"], "o": ["thing", "animal"], "p": ["place", "thing", "animal"]}

# Class-level grammar: class -> {next class: probability}. Roles: s subject, o object, p after a preposition.
# A noun phrase is det (opin) (size) (age) (col) noun, adjectives in English order; or a name; or a pronoun.
_SUBJECT = {"det_s": 0.55, "name_s": 0.25, "pron_s": 0.20}
_GRAMMAR = {"end": _SUBJECT, "conj": _SUBJECT}
for _r in "sop":
    _GRAMMAR[f"det_{_r}"] = {f"opin_{_r}": 0.08, f"size_{_r}": 0.12, f"age_{_r}": 0.05, f"col_{_r}": 0.10,
                             f"noun_{_r}": 0.65}
    _GRAMMAR[f"opin_{_r}"] = {f"size_{_r}": 0.25, f"age_{_r}": 0.10, f"col_{_r}": 0.15, f"noun_{_r}": 0.50}
    _GRAMMAR[f"size_{_r}"] = {f"age_{_r}": 0.10, f"col_{_r}": 0.20, f"noun_{_r}": 0.70}
    _GRAMMAR[f"age_{_r}"] = {f"col_{_r}": 0.20, f"noun_{_r}": 0.80}
    _GRAMMAR[f"col_{_r}"] = {f"noun_{_r}": 1.0}
for _c in ("noun_s", "name_s", "pron_s"):
    _GRAMMAR[_c] = {"vi": 0.40, "vt": 0.60}
_GRAMMAR["vi"] = {"end": 0.35, "adv": 0.25, "prep": 0.30, "conj": 0.10}
_GRAMMAR["vt"] = {"det_o": 0.65, "name_o": 0.20, "pron_o": 0.15}
for _c in ("noun_o", "name_o", "pron_o"):
    _GRAMMAR[_c] = {"end": 0.55, "prep": 0.20, "adv": 0.10, "conj": 0.15}
_GRAMMAR["adv"] = {"end": 0.65, "prep": 0.20, "conj": 0.15}
_GRAMMAR["prep"] = {"det_p": 0.80, "name_p": 0.20}
for _c in ("noun_p", "name_p"):
    _GRAMMAR[_c] = {"end": 0.70, "prep": 0.10, "conj": 0.20}
del _r, _c


def _class_words(cls: str) -> list[str]:
    """The words of a grammar class: ``noun_o`` -> things then animals; ``det_s`` -> the determiners."""
    base, _, role = cls.partition("_")
    if base == "noun":
        return [w for group in _NOUNS[role] for w in _WORDS[group]]
    if cls in _WORDS:
        return _WORDS[cls]
    return _WORDS[base]


def _allowed(previous: str, word: str) -> bool:
    """Word-level rules on top of the class grammar: "a" before a consonant, "an" before a vowel."""
    if previous == "a":
        return word[0] not in "aeiou"
    if previous == "an":
        return word[0] in "aeiou"
    return True


@functools.cache
def course_source() -> MarkovTextSource:
    """The course's text source (built once, then cached): about 500 states over some 300 words."""
    classes = list(_GRAMMAR)
    states = [(cls, w) for cls in classes for w in _class_words(cls)]
    index = {state: i for i, state in enumerate(states)}
    weights = {cls: {w: 1.0 / (r + 2) for r, w in enumerate(_class_words(cls))} for cls in classes}
    P = np.zeros((len(states), len(states)))
    for (cls, word), i in index.items():
        for next_cls, p_class in _GRAMMAR[cls].items():
            allowed = {w: x for w, x in weights[next_cls].items() if _allowed(word, w)}
            total = sum(allowed.values())  # 0 for "an" before a colour: no colour starts with a vowel
            for w, x in allowed.items():
                P[i, index[(next_cls, w)]] += p_class * x / total
        P[i] /= P[i].sum()  # renormalised over the classes that remain (only "an"'s row changes)
    return MarkovTextSource([w for _, w in states], P, start=index[("end", ".")], labels=[c for c, _ in states])


def course_corpus(n_chars: int, seed: int = 0) -> str:
    """Exactly ``n_chars`` characters of the course's text; the same for the same seed."""
    return course_source().text(n_chars, seed=seed)


def entropy_floor() -> float:
    """The course source's entropy rate in nats per character: the lowest cross-entropy any model can reach."""
    return course_source().entropy_per_char()


def train_val_text(n_train_chars: int, n_val_chars: int, seed: int = 0) -> tuple[str, str]:
    """Two independent texts of the course source, for training and validation.

    Each comes from its own random stream (``numpy.random.SeedSequence(seed).spawn(2)``), independent of the
    other and of ``course_corpus(..., seed)``.
    """
    n_train_chars = _check_count(n_train_chars, "n_train_chars")
    n_val_chars = _check_count(n_val_chars, "n_val_chars")
    _rng(seed)  # validates the seed
    train_seq, val_seq = np.random.SeedSequence(int(seed)).spawn(2)
    source = course_source()
    return source._text_chars(n_train_chars, _rng(train_seq)), source._text_chars(n_val_chars, _rng(val_seq))


# --- chapter 6: four small tasks in the course's language ---------------------------------------------------------
TASKS = ("translation", "qa", "summarization", "sentiment")
SENTIMENT_LABELS = ("negative", "positive")  # a sentiment example's label is the index of its target here

_CUES = {"translation": "zet:", "qa": "answer:", "summarization": "summary:", "sentiment": "sentiment:"}


@dataclass(frozen=True)
class TaskExample:
    """One example of a task: what the model reads (``source``), the one correct answer (``target``).

    ``question`` is used by "qa" only, ``label`` by "sentiment" only (the index of ``target`` in
    :data:`SENTIMENT_LABELS`; -1 for the other tasks). ``prompt`` is the text a model is given, ending in the task's
    cue word (no space after it); ``completion`` is what it should write next: a space, then the target.
    """

    source: str
    target: str
    question: str = ""
    label: int = -1
    task: str = ""  # which of TASKS (it decides the prompt); task_examples always fills it in

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"TaskExample needs task= one of {TASKS}, got {self.task!r}")

    @property
    def prompt(self) -> str:
        if self.task == "translation":
            return f"english: {self.source} zet:"
        if self.task == "qa":
            return f"{self.source} question: {self.question} answer:"
        return f"{self.source} {_CUES[self.task]}"

    @property
    def completion(self) -> str:
        return " " + self.target


class _Draws:
    """Uniforms from a numpy generator, drawn in blocks (fast), with the small choices the tasks need."""

    def __init__(self, rng: np.random.Generator):
        def stream():
            while True:
                yield from rng.random(_BLOCK).tolist()

        self._next = stream().__next__

    def uniform(self) -> float:
        return self._next()

    def pick(self, options: Sequence):
        return options[int(self._next() * len(options))]

    def chance(self, p: float) -> bool:
        return self._next() < p

    def shuffle(self, items: list) -> list:
        for i in range(len(items) - 1, 0, -1):  # Fisher-Yates
            j = int(self._next() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items


# The tasks' words, all from _WORDS (the sentiment verbs are new). "a" becomes "an" before a vowel.
_DETS = [w for w in _WORDS["det"] if w != "an"]
_ADJECTIVES = [_WORDS[c] for c in ("opin", "size", "age", "col")]  # in English order: a big old red ball
_NEUTRAL_ADJECTIVES = [_WORDS[c] for c in ("size", "age", "col")]  # no "good"/"bad" in sentiment sentences
_ANIMATE, _THINGS, _PLACES, _NAMES = _WORDS["animal"], _WORDS["thing"], _WORDS["place"], _WORDS["name"]
_OBJECTS = _THINGS + _ANIMATE
_POSITIVE_VERBS = "likes loves helps enjoys trusts admires praises hugs".split()
_NEGATIVE_VERBS = "hates fears dislikes blames ignores avoids scolds hurts".split()


def _base_form(verb: str) -> str:
    """The bare verb after "does": has -> have, watches -> watch, carries -> carry, sees -> see."""
    if verb == "has":
        return "have"
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    if not verb.endswith("s"):
        raise ValueError(f"expected a verb ending in -s, got {verb!r}")
    return verb[:-1]


def _noun_phrase(draws: _Draws, nouns: Sequence[str], p_adjective: float = 0.0, two_adjectives: float = 0.0,
                 adjectives: Sequence[Sequence[str]] = _ADJECTIVES) -> str:
    """det (adjective) (adjective) noun, adjectives of different classes in English order."""
    words = [draws.pick(_DETS)]
    if draws.chance(p_adjective):
        if draws.chance(two_adjectives):
            first = int(draws.uniform() * (len(adjectives) - 1))
            second = first + 1 + int(draws.uniform() * (len(adjectives) - 1 - first))
            words += [draws.pick(adjectives[first]), draws.pick(adjectives[second])]
        else:
            words.append(draws.pick(draws.pick(adjectives)))
    words.append(draws.pick(nouns))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def _subject(draws: _Draws, p_name: float, p_adjective: float, two_adjectives: float = 0.0,
             adjectives: Sequence[Sequence[str]] = _ADJECTIVES) -> str:
    if draws.chance(p_name):
        return draws.pick(_NAMES)
    return _noun_phrase(draws, _ANIMATE, p_adjective, two_adjectives, adjectives)


def _place_phrase(draws: _Draws) -> str:
    """A preposition and what follows it: "in the old park", "with anna"."""
    if draws.chance(0.1):
        return f"{draws.pick(_WORDS['prep'])} {draws.pick(_NAMES)}"
    return f"{draws.pick(_WORDS['prep'])} {_noun_phrase(draws, _PLACES, 0.25)}"


def _predicate(draws: _Draws) -> str:
    """What someone does: "finds a red ball", "runs to the park", "sleeps quietly", "sings"."""
    if draws.chance(0.7):
        return f"{draws.pick(_WORDS['vt'])} {_noun_phrase(draws, _OBJECTS, 0.3)}"
    r = draws.uniform()
    verb = draws.pick(_WORDS["vi"])
    if r < 0.4:
        return f"{verb} {_place_phrase(draws)}"
    if r < 0.75:
        return f"{verb} {draws.pick(_WORDS['adv'])}"
    return verb


# --- translation: English -> zet -----------------------------------------------------------------------------
# Zet's words have a shape that shows their class: nouns end in -o, adjectives in -i, verbs in -u, adverbs in -e,
# determiners are a consonant and "a", postpositions a vowel and a consonant. Each English word gets the candidate
# of its shape at position crc32(word) (mod the number of candidates), or the next free one: a fixed, readable
# rule that needs no random generator and gives every English word its own zet word.
_ZET_CONSONANTS = "bdfgklmnprstvz"
_ZET_VOWELS = "aeiou"
_ZET_SHAPES = {  # English word classes -> the zet shape of their words
    ("det",): lambda: [c + "a" for c in _ZET_CONSONANTS],
    ("prep",): lambda: [v + c for v in _ZET_VOWELS for c in _ZET_CONSONANTS],
    ("animal", "thing", "place"): lambda: _zet_two_syllables("o"),
    ("opin", "size", "age", "col"): lambda: _zet_two_syllables("i"),
    ("vt", "vi"): lambda: _zet_two_syllables("u"),
    ("adv",): lambda: _zet_two_syllables("e"),
}


def _zet_two_syllables(ending: str) -> list[str]:
    return [c1 + v + c2 + ending for c1 in _ZET_CONSONANTS for v in _ZET_VOWELS for c2 in _ZET_CONSONANTS]


def _build_zet_lexicon() -> dict[str, str]:
    english = {w for words in _WORDS.values() for w in words}
    lexicon: dict[str, str] = {}
    for classes, shape in _ZET_SHAPES.items():
        candidates = [c for c in shape() if c not in english]
        taken: set[str] = set()
        for cls in classes:
            for word in _WORDS[cls]:
                if word == "an":
                    continue  # "a" and "an" are one word in zet
                k = zlib.crc32(word.encode()) % len(candidates)
                while candidates[k] in taken:
                    k = (k + 1) % len(candidates)
                taken.add(candidates[k])
                lexicon[word] = candidates[k]
    lexicon["an"] = lexicon["a"]
    return lexicon


ZET_LEXICON: dict[str, str] = _build_zet_lexicon()  # English word -> zet word; names and "." stay as they are
_ZET_CLASS = {w: cls for classes in _ZET_SHAPES for cls in classes for w in _WORDS[cls]}
for _w in _NAMES:
    _ZET_CLASS[_w] = "name"
del _w


def to_zet(sentence: str) -> str:
    """Translate one simple course sentence into zet.

    The sentence is read as phrases: a noun phrase is a determiner, adjectives and a noun ("the small cat") or a
    name; a place phrase is a preposition and a noun phrase ("in the park"). Zet then

    1. writes a noun phrase noun first, then its adjectives (in the same order), then its determiner:
       "the small cat" -> "cat small the";
    2. turns prepositions into postpositions: "in the park" -> "park the in";
    3. puts the verb last: subject, object, place phrases, adverbs, verb, ".";
    4. replaces every word by its zet word (ZET_LEXICON); names and "." stay.

    >>> to_zet("the small cat sees a red ball in the park .")  # cat small the | ball red a | park the in | sees
    'vavo nuzi sa dono sedi ta belo sa ef geru .'
    """
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a str, got {type(sentence).__name__}")
    words = sentence.split()
    if not words or words[-1] != ".":
        raise ValueError(f"to_zet: a sentence ends with ' .', got {sentence!r}")
    words.pop()
    subject, verb, obj, places, adverbs = None, None, None, [], []
    i = 0
    while i < len(words):
        cls = _ZET_CLASS.get(words[i])
        if cls in ("name", "det") and subject is None and verb is None:
            i, subject = _zet_noun_phrase(words, i, sentence)
        elif cls in ("name", "det") and verb is not None and obj is None and not places and not adverbs:
            i, obj = _zet_noun_phrase(words, i, sentence)
        elif cls == "prep" and verb is not None:
            preposition = ZET_LEXICON[words[i]]
            i, phrase = _zet_noun_phrase(words, i + 1, sentence)
            places += [*phrase, preposition]  # the preposition comes after its noun phrase: a postposition
        elif cls in ("vt", "vi") and subject is not None and verb is None:
            verb, i = ZET_LEXICON[words[i]], i + 1
        elif cls == "adv" and verb is not None:
            adverbs, i = adverbs + [ZET_LEXICON[words[i]]], i + 1
        else:
            raise ValueError(f"to_zet: cannot read word {i} ({words[i]!r}) of {sentence!r}: zet translates "
                             "'subject verb [object] [preposition noun phrase]... [adverb]... .'")
    if verb is None:
        raise ValueError(f"to_zet: no verb in {sentence!r}")
    return " ".join([*subject, *(obj or []), *places, *adverbs, verb, "."])


def _zet_noun_phrase(words: list[str], i: int, sentence: str) -> tuple[int, list[str]]:
    """Read the noun phrase starting at words[i]; return where it ends and its zet words (noun, adjectives, det)."""
    if i < len(words) and _ZET_CLASS.get(words[i]) == "name":
        return i + 1, [words[i]]
    j = i + 1
    while j < len(words) and _ZET_CLASS.get(words[j]) in ("opin", "size", "age", "col"):
        j += 1
    if i >= len(words) or _ZET_CLASS.get(words[i]) != "det" or j >= len(words) or \
            _ZET_CLASS.get(words[j]) not in ("animal", "thing", "place"):
        raise ValueError(f"to_zet: expected a noun phrase (a name, or determiner adjectives noun) at word {i} "
                         f"of {sentence!r}")
    det, *adjectives, noun = words[i:j + 1]
    return j + 1, [ZET_LEXICON[w] for w in (noun, *adjectives, det)]


# --- the four generators: each makes one example from the draws ----------------------------------------------------
def _translation_example(draws: _Draws, split: str) -> TaskExample | None:
    """A short course sentence: subject, verb, maybe an object, maybe a place phrase or an adverb."""
    words = [_subject(draws, p_name=0.25, p_adjective=0.35, two_adjectives=0.3)]
    if draws.chance(0.65):
        words.append(draws.pick(_WORDS["vt"]))
        words.append(draws.pick(_NAMES) if draws.chance(0.15) else _noun_phrase(draws, _OBJECTS, 0.4, 0.3))
        if draws.chance(0.25):
            words.append(_place_phrase(draws))
        elif draws.chance(0.15):
            words.append(draws.pick(_WORDS["adv"]))
    else:
        words.append(draws.pick(_WORDS["vi"]))
        r = draws.uniform()
        if r < 0.4:
            words.append(_place_phrase(draws))
        elif r < 0.7:
            words.append(draws.pick(_WORDS["adv"]))
        elif r < 0.8:
            words += [_place_phrase(draws), draws.pick(_WORDS["adv"])]
        elif words[0] in _NAMES:  # "tom sleeps ." would read the same word by word: "tom sleeps quietly ."
            words.append(draws.pick(_WORDS["adv"]))
    source = " ".join(words) + " ."
    if _split_of(source) != split:
        return None
    return TaskExample(source, to_zet(source), task="translation")


def _qa_sentence(draws: _Draws) -> tuple[str, str, str, str]:
    """(subject, verb, object, place phrase or ""): "the dog finds a red ball in the park ."."""
    subject = _subject(draws, p_name=0.4, p_adjective=0.25)
    verb = draws.pick(_WORDS["vt"])
    obj = _noun_phrase(draws, _THINGS, 0.3)
    place = _place_phrase(draws) if draws.chance(0.1) else ""
    if place.partition(" ")[2] in (subject, obj):  # not "tom sees a ball with tom"
        place = ""
    return subject, verb, obj, place


def _qa_example(draws: _Draws, split: str) -> TaskExample | None:
    """A context of 2-3 sentences "subject verb object (place) ." and a question about one of them.

    "who <verb> <object> ?" is answered by the sentence's subject, "what does <subject> <bare verb> ?" by its
    object. No noun phrase occurs twice in the context and the answer occurs once in it (else the sentences after
    the first are drawn again), so the answer is one span of the context, and the only right one.
    """
    first = _qa_sentence(draws)
    if _split_of(_qa_text([first])) != split:
        return None
    while True:
        sentences = [first] + [_qa_sentence(draws) for _ in range(1 if draws.chance(0.5) else 2)]
        phrases = [p for subject, _, obj, place in sentences for p in (subject, obj, place.partition(" ")[2]) if p]
        if len(set(phrases)) < len(phrases):
            continue
        context = _qa_text(sentences)
        subject, verb, obj, _ = draws.pick(sentences)
        if draws.chance(0.5):
            question, answer = f"who {verb} {obj} ?", subject
        else:
            question, answer = f"what does {subject} {_base_form(verb)} ?", obj
        if f" {context} ".count(f" {answer} ") == 1:
            return TaskExample(context, answer, question=question, task="qa")


def _qa_text(sentences) -> str:
    return " ".join(" ".join(w for w in sentence if w) + " ." for sentence in sentences)


def _summarization_example(draws: _Draws, split: str) -> TaskExample | None:
    """A story and its summary, by this rule.

    The story has 3 or 4 sentences. The main character is a name; the story opens with them, and they are the
    subject of 2 or 3 of its sentences; each other sentence is about someone else (a different name or an animal,
    never the same one twice). Every sentence is "subject action .", and the main character's actions differ.

    The summary is the main character's name, then their actions in the story's order joined by "and", then ".":

        tom finds a ball . the dog sleeps . tom eats a cake .   ->   tom finds a ball and eats a cake .

    So the first sentence alone (lead-1) is only part of the summary, and copying the story is wrong.
    """
    main = draws.pick(_NAMES)
    actions = [_predicate(draws)]
    if _split_of(f"{main} {actions[0]} .") != split:
        return None
    n_main, n_others = draws.pick(((2, 1), (2, 2), (3, 1)))
    while len(actions) < n_main:
        action = _predicate(draws)
        if action not in actions:
            actions.append(action)
    others: list[str] = []
    while len(others) < n_others:
        other = _subject(draws, p_name=0.5, p_adjective=0.2)
        if other != main and other not in others:
            others.append(other)
    order = draws.shuffle(["main"] * (n_main - 1) + ["other"] * n_others)
    main_actions, other_subjects = iter(actions[1:]), iter(others)
    sentences = [f"{main} {actions[0]} ."]
    for who in order:
        if who == "main":
            sentences.append(f"{main} {next(main_actions)} .")
        else:
            sentences.append(f"{next(other_subjects)} {_predicate(draws)} .")
    return TaskExample(" ".join(sentences), f"{main} {' and '.join(actions)} .", task="summarization")


def _sentiment_example(draws: _Draws, split: str) -> TaskExample | None:
    """subject, a verb of feeling (maybe negated), object; the label is the verb's polarity flipped by negation."""
    subject = _subject(draws, p_name=0.4, p_adjective=0.3, adjectives=_NEUTRAL_ADJECTIVES)
    positive = draws.chance(0.5)
    verb = draws.pick(_POSITIVE_VERBS if positive else _NEGATIVE_VERBS)
    negated = draws.chance(0.5)
    r = draws.uniform()  # half the verbs are written bare, negated or not, so the verb's form says nothing
    if not negated:
        verb_phrase = verb if r < 0.5 else f"will {_base_form(verb)}"
    else:
        verb_phrase = f"never {verb}" if r < 0.5 else f"{'does' if r < 0.75 else 'will'} not {_base_form(verb)}"
    if draws.chance(0.2):
        obj = draws.pick(_NAMES)
    else:
        obj = _noun_phrase(draws, _OBJECTS, 0.3, adjectives=_NEUTRAL_ADJECTIVES)
    sentence = f"{subject} {verb_phrase} {obj} ."
    if _split_of(sentence) != split:
        return None
    label = int(positive != negated)
    return TaskExample(sentence, SENTIMENT_LABELS[label], label=label, task="sentiment")


_MAKERS = {"translation": _translation_example, "qa": _qa_example, "summarization": _summarization_example,
           "sentiment": _sentiment_example}


def _split_of(source: str) -> str:
    """The split of a source: "test" when the crc32 of its first sentence is divisible by 5 (about one in five).

    The same source always lands in the same split, so no test source is a train source; and since only the first
    sentence decides, no test context or story even opens with the first sentence of a train one.
    """
    first = source[:source.index(" .") + 2] if " ." in source else source
    return "test" if zlib.crc32(first.encode()) % 5 == 0 else "train"


def task_examples(task: str, n: int, seed: int = 0, split: str = "train") -> list[TaskExample]:
    """``n`` examples of ``task`` (one of TASKS) from ``split`` ("train" or "test"); the same for the same arguments.

    Examples are drawn one after another from numpy's generator for ``seed`` and kept when their source belongs to
    ``split`` (a stable hash of the source's first sentence puts about one source in five in "test", see
    ``_split_of``), so no test source is ever a train source, and when ``prompt + completion`` and an end-of-text
    token fit in TASK_BLOCK_SIZE tokens of the course-tiny tokenizer (the few longer ones are skipped). The first
    k examples of a longer list are the list for k. TypeError/ValueError for an unknown task, a count that is not a
    non-negative int, a bad seed or a split other than "train"/"test".
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, one of {TASKS}, got {type(task).__name__} {task!r:.40}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: the tasks are {', '.join(TASKS)}")
    n = _check_count(n, "n")
    if not isinstance(split, str):
        raise TypeError(f"split must be 'train' or 'test', got {type(split).__name__} {split!r:.40}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    draws, make = _Draws(_rng(seed)), _MAKERS[task]
    examples: list[TaskExample] = []
    while len(examples) < n:
        example = make(draws, split)  # None when its source belongs to the other split
        if example is not None and _fits(example):
            examples.append(example)
    return examples


TASK_BLOCK_SIZE = 64  # every example's prompt + completion + one end-of-text token fits in this many tokens ...
_TASK_TOKENIZER = Path(__file__).resolve().parent / "checkpoints" / "course-tiny"  # ... of this tokenizer


@functools.cache
def _task_tokenizer():
    """The course-tiny tokenizer (Hugging Face byte-level BPE from its GPT-2 files), loaded on first use."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE.from_file(str(_TASK_TOKENIZER / "vocab.json"),
                                               str(_TASK_TOKENIZER / "merges.txt")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return tokenizer


def _fits(example: TaskExample) -> bool:
    """Whether prompt + completion + an end-of-text token fits in TASK_BLOCK_SIZE course-tiny tokens."""
    first, *rest = (example.prompt + example.completion).split(" ")
    return _tokens_in(first) + sum(_tokens_in(" " + word) for word in rest) + 1 <= TASK_BLOCK_SIZE


@functools.cache
def _tokens_in(piece: str) -> int:
    """Tokens of one word (with its leading space): GPT-2's pre-tokenizer never joins text across a space, so a
    text of single-space-separated words has as many tokens as its words have, counted one by one."""
    return len(_task_tokenizer().encode(piece, add_special_tokens=False).ids)


# --- chapter 8d: a corpus with a controlled association -----------------------------------------------------------
# The course source, changed in two places, so that the chance that an occupation is referred to as "he" rather
# than "she" is a number we choose:
#
# 1. an occupation as a subject ("the doctor", "a busy teacher") is always followed by "says that" and a subject
#    pronoun, "he" with probability p (the occupation's entry of the association) and "she" with 1 - p:
#        the old doctor says that he runs to the park .
#    ("says" and "that" are new states, one pair per occupation, so the chain remembers which occupation spoke;
#    the pronoun is the course source's own subject pronoun, and the sentence goes on as after any "he");
# 2. the occupations are made common: together they are ``occupation_share`` of the subject nouns (by default four
#    in five), in equal parts, so that a short text holds many of them and a small model learns them in seconds;
#    the other subject nouns keep their relative weights.
#
# Everything else is the course source. The result is again a unifilar Markov source, so its entropy rate is
# exact too, and so is the association: P(next word = "he" | "... <occupation> says that") = p exactly, whatever
# came before, and log(p / (1 - p)) is the true log-odds a model trained on the text should learn.
ASSOCIATION_OCCUPATIONS: tuple[str, ...] = ("doctor", "teacher", "farmer", "baker", "sailor", "student")
ASSOCIATION_PRONOUNS: tuple[str, str] = ("he", "she")  # (a, b): p is the probability of a
BIASED_ASSOCIATION: dict[str, float] = {"doctor": 0.9, "teacher": 0.25, "farmer": 0.8, "baker": 0.5}
BALANCED_ASSOCIATION: dict[str, float] = {occupation: 0.5 for occupation in BIASED_ASSOCIATION}

__all__ += ["ASSOCIATION_OCCUPATIONS", "ASSOCIATION_PRONOUNS", "BIASED_ASSOCIATION", "BALANCED_ASSOCIATION",
            "association_source", "association_corpus", "association_train_val_text", "exact_log_odds"]


def _check_association(p_he, occupation_share) -> tuple[tuple[tuple[str, float], ...], float]:
    """The association as a sorted tuple of (occupation, p) and the share, after checking both."""
    from collections.abc import Mapping

    if not isinstance(p_he, Mapping):
        raise TypeError(f"the association must be a dict {{occupation: P(he)}}, got {type(p_he).__name__}")
    if not p_he:
        raise ValueError("the association needs at least one occupation, e.g. {'doctor': 0.9}")
    items = []
    for occupation, p in p_he.items():
        if occupation not in ASSOCIATION_OCCUPATIONS:
            raise ValueError(f"unknown occupation {occupation!r}: the association's occupations are "
                             f"{', '.join(ASSOCIATION_OCCUPATIONS)}")
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise TypeError(f"P(he) of {occupation!r} must be a number, got {type(p).__name__} {p!r:.40}")
        if not 0.0 < float(p) < 1.0:
            raise ValueError(f"P(he) of {occupation!r} must lie strictly between 0 and 1 (its log-odds is finite), "
                             f"got {p}")
        items.append((str(occupation), float(p)))
    if isinstance(occupation_share, bool) or not isinstance(occupation_share, (int, float, np.floating)):
        raise TypeError(f"occupation_share must be a number, got {type(occupation_share).__name__}")
    if not 0.0 < float(occupation_share) < 1.0:
        raise ValueError(f"occupation_share (the occupations' share of the subject nouns) must lie strictly "
                         f"between 0 and 1, got {occupation_share}")
    return tuple(sorted(items)), float(occupation_share)


def association_source(p_he=BIASED_ASSOCIATION, occupation_share: float = 0.8) -> MarkovTextSource:
    """The course source with the association ``p_he`` (``{occupation: P(he)}``) built in (see above); cached.

    ``association_source(BALANCED_ASSOCIATION)`` is the balanced variant (P(he) = 1/2 for every occupation).
    TypeError/ValueError for an occupation not in ASSOCIATION_OCCUPATIONS, a probability not strictly between 0
    and 1, or a share not strictly between 0 and 1.
    """
    return _association_source(*_check_association(p_he, occupation_share))


@functools.cache
def _association_source(items: tuple[tuple[str, float], ...], share: float) -> MarkovTextSource:
    base = course_source()
    words, labels = list(base.words), list(base.labels)
    n = len(words)
    occupations = [occupation for occupation, _ in items]
    k = len(occupations)
    P = np.zeros((n + 2 * k, n + 2 * k))
    P[:n, :n] = base.transition_matrix
    subject_nouns = np.array([label == "noun_s" for label in labels])
    state = {(label, w): i for i, (w, label) in enumerate(zip(words, labels))}
    chosen = [state["noun_s", occupation] for occupation in occupations]
    others = subject_nouns.copy()
    others[chosen] = False
    for i in range(n):
        mass = P[i, :n][subject_nouns].sum()
        if mass == 0.0 or P[i, chosen].min() == 0.0:  # no subject noun follows, or not these ("an" + vowel only)
            continue
        rest = P[i, :n][others].sum()
        P[i, :n][others] = P[i, :n][others] * (mass * (1 - share) / rest)
        P[i, chosen] = mass * share / k
    pronoun = {w: i for i, (w, label) in enumerate(zip(words, labels)) if label == "pron_s"}
    for j, ((occupation, p), noun) in enumerate(zip(items, chosen)):
        says, that = n + 2 * j, n + 2 * j + 1
        words += ["says", "that"]
        labels += [f"says_{occupation}", f"that_{occupation}"]
        P[noun] = 0.0
        P[noun, says] = 1.0  # the occupation speaks ...
        P[says, that] = 1.0
        a, b = ASSOCIATION_PRONOUNS
        P[that, pronoun[a]] = p  # ... and is "he" with probability p
        P[that, pronoun[b]] = 1.0 - p
    return MarkovTextSource(words, P, start=base.start, labels=labels)


def association_corpus(n_chars: int, p_he=BIASED_ASSOCIATION, seed: int = 0, occupation_share: float = 0.8) -> str:
    """Exactly ``n_chars`` characters of :func:`association_source`'s text; the same for the same arguments."""
    return association_source(p_he, occupation_share).text(n_chars, seed=seed)


def association_train_val_text(n_train_chars: int, n_val_chars: int, p_he=BIASED_ASSOCIATION, seed: int = 0,
                               occupation_share: float = 0.8) -> tuple[str, str]:
    """Two independent texts of :func:`association_source`, for training and validation (as :func:`train_val_text`
    makes them from the course source: ``numpy.random.SeedSequence(seed).spawn(2)``)."""
    n_train_chars = _check_count(n_train_chars, "n_train_chars")
    n_val_chars = _check_count(n_val_chars, "n_val_chars")
    source = association_source(p_he, occupation_share)
    _rng(seed)  # validates the seed
    train_seq, val_seq = np.random.SeedSequence(int(seed)).spawn(2)
    return source._text_chars(n_train_chars, _rng(train_seq)), source._text_chars(n_val_chars, _rng(val_seq))


def exact_log_odds(p_he=BIASED_ASSOCIATION) -> dict[str, float]:
    """``{occupation: log(p / (1 - p))}``: the true association, in nats, that a perfect model would read off."""
    items, _ = _check_association(p_he, 0.8)
    return {occupation: math.log(p / (1.0 - p)) for occupation, p in items}
