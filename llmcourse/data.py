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
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MarkovTextSource", "course_source", "course_corpus", "entropy_floor", "train_val_text"]

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
