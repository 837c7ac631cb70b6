"""Outside checks of chapter 3 (tokens and positions): byte-level BPE (merge, train, apply, encode, decode, GPT-2's
byte alphabet), sinusoidal positions, the token + position embedding.

Each probe mirrors its test cell, on the same inputs: the hidden tests' texts and seeds are copied below, merges
that Hugging Face's trainer learns from the same sample (its trainer is deterministic), and merges learned by the
chapter's rule from the course corpus. Merges are returned as lists of ``[a, b, new]`` in rank order, token ids as
lists.

One exercise is not judged against the reference's output: ``train_bpe``. The fallback trains with Hugging Face,
which breaks ties between equally frequent pairs its own way, while the chapter (and its tests) ask for the
smallest pair. Its probes compare with the merges of that rule, computed here in the grader (:func:`rule_merges`).
"""

from __future__ import annotations

import functools
import json
import random
import tempfile
import unicodedata
from pathlib import Path

import regex
import torch

from autograder.probes import Probe, close, equal, tokens
from llmcourse.data import course_corpus

EOT = "<|endoftext|>"
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# the hidden tests' texts
SAMPLE = (
    "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it? We'll see; they've said so.\n"
    "In 2024, 1,234,567 people paid $3.50 each (that's 4,320,984.50 dollars!).\n"
    "def forward(self, x):\n    return self.proj(x) + x  # residual\n\n"
    "for i in range(10):\n\tprint(i ** 2, end=' ')\n"
    "Naïve café, résumé, Ångström; Привет, мир! Γειά σου κόσμε. 你好，世界！日本語のテキスト。\n"
    "Emoji: 😀😀 👍🏽 👨‍👩‍👧 ❤️ — and “quotes” ‘here’.   Spaces    and\ttabs\r\nand CRLF.\n"
) * 3

TEXTS = [
    "", " ", "  ", "a", "Hello, world!", "Hello world", " Hello world", "hello  world", "hello   world ",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "It's, I'm, we're, they've, you'll, she'd, 'twas, IT'S, rock 'n' roll, don't, ''s \"quoted\"",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "3.14159 2024-01-01 1,000,000 $42.00 -7e-3 0x1F 123456789012345",
    "\u0663\u0664\u0665 \u2460\u2461\u2462 \u216b 42",
    "naïve café résumé Ångström", "e\u0301 a\u0308 n\u0303 \u0301\u0301",
    "Привет, мир! Γειά σου κόσμε! שלום עולם! مرحبا بالعالم",
    "你好，世界！日本語のテキスト。한국어 텍스트",
    "😀😃😄 👍🏽 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 ❤️",
    "\x00\x01\x02\x1b[31mred\x1b[0m\x7f\x85\x1c\x1d\x1e\x1f",
    "\r\n\r\nline\r\nline2\n\n\n\t\t\t", "a\r\rb\r\n",
    " " * 40 + "x", "\n" * 10 + "y", "\t \t \n  \u00a0\u2003\u3000 z", "x" + " " * 17, "   ",
    "\u2028\u2029 separators \u200b zero width",
    "<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>", "<|endoftext",
    "<|endoftext|", "<|ENDOFTEXT|>", "x<|endoftext|>\n<|endoftext|> the",
    "\ufeffBOM, \ufffd replacement, \U0010ffff and \U000e0001 at the top",
    "mixed123abc456 abc_def-ghi.jkl/mno", "https://example.com/path?query=1&b=2#frag",
    "the small cat sees a red ball . tom runs to the old house .",
]


def random_texts(n: int, seed: int) -> list[str]:
    """The hidden tests' random texts: every kind of character (assigned in this Python's Unicode tables)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7F), (0x00, 0x20), (0x80, 0x800), (0x800, 0x3000), (0x4E00, 0xA000),
              (0x1F300, 0x1FB00), (0xE000, 0xF900), (0x10000, 0x110000)]
    words = [" ", "  ", "\n", "\r\n", "\t", "'s", "'ll", " the", "The", "2024", EOT, "e\u0301"]
    texts = []
    for _ in range(n):
        out = []
        for _ in range(rng.randint(1, 60)):
            if rng.random() < 0.3:
                out.append(rng.choice(words))
                continue
            lo, hi = rng.choice(ranges)
            c = rng.randrange(lo, hi)
            if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn":
                out.append(chr(c))
        texts.append("".join(out))
    return texts


# ---------------------------------------------------------------------------------------------------------------
# the grader's own BPE: inputs for the probes, and the rule that train_bpe is judged by


def piece_counts(text: str) -> dict[bytes, int]:
    """Each distinct piece of ``text`` (GPT-2's pattern), as UTF-8 bytes, with its count, in order of appearance."""
    counts: dict[bytes, int] = {}
    for piece in regex.findall(PATTERN, text):
        counts[piece.encode("utf-8")] = counts.get(piece.encode("utf-8"), 0) + 1
    return counts


def _merge(ids, pair, new):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def rule_merges(counts: dict[bytes, int], vocab_size: int) -> dict[tuple[int, int], int]:
    """The chapter's training rule: the most frequent pair (pieces weighted by their counts), ties to the
    smallest pair, numbered 256, 257, ...; stops when nothing is left to merge."""
    words, merges = [(list(w), n) for w, n in counts.items()], {}
    for new in range(256, vocab_size):
        pairs: dict[tuple[int, int], int] = {}
        for ids, n in words:
            for p in zip(ids, ids[1:]):
                pairs[p] = pairs.get(p, 0) + n
        if not pairs:
            break
        best = min(pairs.items(), key=lambda item: (-item[1], item[0]))[0]
        merges[best] = new
        words = [(_merge(ids, best, new), n) for ids, n in words]
    return merges


def _rank_apply(ids, merges):
    ranks = {p: r for r, p in enumerate(merges)}
    ids = list(ids)
    while len(ids) > 1:
        p = min(zip(ids, ids[1:]), key=lambda q: ranks.get(q, len(ranks)))
        if p not in ranks:
            return ids
        ids = _merge(ids, p, merges[p])
    return ids


def _vocab_of(merges) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new in merges.items():
        vocab[new] = vocab[a] + vocab[b]
    return vocab


@functools.cache
def _corpus_merges() -> dict[tuple[int, int], int]:
    """The notebook's ``merges``: trained on course_corpus(50_000, seed=0) with vocab_size=1024 (by the rule)."""
    return rule_merges(piece_counts(course_corpus(50_000, seed=0)), 1024)


def corpus_merges() -> tuple[dict[tuple[int, int], int], dict[int, bytes]]:
    """Fresh copies of the notebook's ``merges`` and ``vocab`` (the student's code may change what it is given)."""
    merges = dict(_corpus_merges())
    return merges, _vocab_of(merges)


def _gpt2_alphabet() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return dict(bytes_to_unicode())


def hf_trained(text: str, vocab_size: int, folder: Path) -> Path:
    """Hugging Face's byte-level BPE trained on ``text``, saved in GPT-2's format into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(folder))
    return folder


def read_gpt2_files(folder: Path):
    """(id -> bytes, merges (id, id) -> id in rank order, byte_ids, vocab.json as read) of GPT-2 files."""
    b2u = _gpt2_alphabet()
    u2b = {c: b for b, c in b2u.items()}
    token_ids = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = [x for x in (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
             if x and not x.startswith("#version")]
    merges = {}
    for line in lines:
        a, b = line.split(" ")
        merges[(token_ids[a], token_ids[b])] = token_ids[a + b]
    vocab = {i: (t.encode() if t == EOT else bytes(u2b[c] for c in t)) for t, i in token_ids.items()}
    byte_ids = [token_ids[b2u[x]] for x in range(256)]
    return vocab, merges, byte_ids, token_ids


def hf_merges(text: str, vocab_size: int):
    """(vocab, merges, byte_ids, vocab.json) of Hugging Face's trainer on ``text``: bytes numbered its own way."""
    with tempfile.TemporaryDirectory() as folder:
        return read_gpt2_files(hf_trained(text, vocab_size, Path(folder)))


# ---------------------------------------------------------------------------------------------------------------
# comparators


def triples(merges) -> list[list[int]]:
    """A merges dict as ``[[a, b, new], ...]`` in its order (the rank order)."""
    if not isinstance(merges, dict):
        raise TypeError(f"train_bpe should return a dict, got {type(merges).__name__}")
    return [[int(a), int(b), int(new)] for (a, b), new in merges.items()]


def each(compare):
    """A list of results compared item by item with ``compare``; the diagnosis says which item."""

    def compare_each(got, expected):
        if not isinstance(got, list):
            return f"expected a list of {len(expected)} results, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{len(got)} results, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = compare(g, e)
            if problem:
                return f"item {i}: {problem}"
        return None

    return compare_each


def fixed(value):
    """Equal to ``value``, whatever the reference: the test's own expected value."""
    inner = equal()
    return lambda got, expected: inner(got, value)


def merges_by_rule(counts: dict[bytes, int], vocab_size: int):
    """Equal to the merges of the chapter's rule on these counts (computed in the grader, once): not to the
    reference's, whose trainer breaks ties its own way."""
    inner = equal()

    @functools.cache
    def target():
        return triples(rule_merges(counts, vocab_size))

    def compare(got, expected):
        if not isinstance(got, list):
            return f"not a list of merges: {got!r:.60}"
        e = target()
        for rank, (g, want) in enumerate(zip(got, e)):
            if g != want:
                return (f"merge number {rank} is {tuple(g[:2])} -> {g[2]}, expected {tuple(want[:2])} -> {want[2]}"
                        if isinstance(g, list) and len(g) == 3 else inner(got, e))
        return None if len(got) == len(e) else f"{len(got)} merges, expected {len(e)}"

    return compare


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.1: merge


def merge_visible(m):
    return {"12312": m.merge([1, 2, 3, 1, 2], pair=(1, 2), new=4), "absent": m.merge([5, 6, 7], (6, 8), 9),
            "empty": m.merge([], (1, 2), 3), "no_overlap": m.merge([1, 1, 1], (1, 1), 9),
            "table_step0": m.merge(list(b"aaabdaaabac"), (97, 97), 256)}


def merge_hidden(m):
    out = {"1111": m.merge([1, 1, 1, 1], (1, 1), 9), "11111": m.merge([1, 1, 1, 1, 1], (1, 1), 9),
           "21212": m.merge([2, 1, 2, 1, 2], (1, 2), 7), "at_end": m.merge([3, 1, 2], (1, 2), 8),
           "one": m.merge([1], (1, 2), 8), "ordered": m.merge([2, 1], (1, 2), 8), "whole": m.merge([1, 2], (1, 2), 300)}
    ids = [1, 2, 1, 2]
    out["is_list"] = isinstance(m.merge(ids, (1, 2), 5), list)
    out["input_unchanged"] = ids == [1, 2, 1, 2]
    out["tuple"] = m.merge((1, 2, 3), (2, 3), 4)
    rng = random.Random(31)
    random_cases = []
    for _ in range(300):
        ids = [rng.randrange(4) for _ in range(rng.randrange(0, 30))]
        pair = (rng.randrange(4), rng.randrange(4))
        random_cases.append(m.merge(ids, pair, 99))
    out["random"] = random_cases
    return out


_MERGE_HIDDEN = {name: tokens() for name in ("1111", "11111", "21212", "at_end", "one", "ordered", "whole", "tuple")}


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.2: train_bpe

_TRAIN_VISIBLE = {  # the visible test's cases and its hand-written answers
    "table": (({b"aaabdaaabac": 1}, 259), [[97, 97, 256], [97, 98, 257], [256, 257, 258]]),
    "weighted": (({b"ab": 2, b"xy": 3}, 257), [[120, 121, 256]]),
    "ties": (({b"abcd": 1}, 259), [[97, 98, 256], [99, 100, 257], [256, 257, 258]]),
    "single_bytes": (({b"a": 5, b"b": 2}, 300), []),
    "no_room": (({b"abc": 1}, 256), []),
}


def train_visible(m):
    return {name: triples(m.train_bpe(dict(counts), size)) for name, ((counts, size), _) in _TRAIN_VISIBLE.items()}


def _random_tie_cases() -> list[tuple[dict[bytes, int], int]]:
    rng = random.Random(32)
    cases = []
    for _ in range(40):
        counts = {bytes(rng.choice(b"abc ") for _ in range(rng.randint(1, 7))): rng.randint(1, 3) for _ in range(6)}
        cases.append((counts, 256 + rng.randint(0, 8)))
    return cases


@functools.cache
def _train_hidden_cases() -> dict[str, tuple[dict[bytes, int], int]]:
    cases = {"abc_400": ({b"abc": 4}, 400), "course_corpus": (piece_counts(course_corpus(20_000, seed=3)), 600),
             "mixed_sample": (piece_counts(SAMPLE), 500), "many_texts": (piece_counts("".join(TEXTS) * 2), 420)}
    cases |= {f"random_ties{i}": case for i, case in enumerate(_random_tie_cases())}
    return cases


def train_hidden(m):
    out = {name: triples(m.train_bpe(dict(counts), size)) for name, (counts, size) in _train_hidden_cases().items()}
    counts = piece_counts(course_corpus(8_000, seed=4))
    forward = m.train_bpe(dict(counts), 400)
    backward = m.train_bpe(dict(reversed(list(counts.items()))), 400)
    out["order_independent"] = list(forward.items()) == list(backward.items())
    counts = {b"hello": 2, b" world": 1}
    m.train_bpe(counts, 260)
    out["counts_unchanged"] = counts == {b"hello": 2, b" world": 1}
    return out


def _train_hidden_compare():
    compare = {name: merges_by_rule(counts, size) for name, (counts, size) in _train_hidden_cases().items()}
    return compare | {"order_independent": fixed(True), "counts_unchanged": fixed(True)}


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.3: apply_merges


def apply_visible(m):
    toy = {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    merges, _ = corpus_merges()
    return {"by_rank": m.apply_merges([97, 98, 97, 98, 99], {(98, 99): 256, (97, 98): 257}),
            "no_merges": m.apply_merges([97, 98, 99], {}), "empty": m.apply_merges([], {(1, 2): 3}),
            "toy": m.apply_merges(list(b"aaabdaaabac"), toy),
            "corpus_the_tokens": len(m.apply_merges(list(b" the"), merges))}


def apply_hidden(m):
    out = {}
    ranked = {(98, 99): 256, (97, 98): 257, (99, 100): 258}
    out["abcd"] = m.apply_merges(list(b"abcd"), ranked)
    out["abcabcab"] = m.apply_merges(list(b"abcabcab"), ranked)
    out["abababc"] = m.apply_merges(list(b"abababc"), {(98, 99): 256, (97, 98): 257, (257, 257): 258})
    nested = {(97, 97): 256, (256, 256): 257, (257, 257): 258, (258, 97): 259}
    out["a_runs"] = [m.apply_merges([97] * n, dict(nested)) for n in range(12)]
    ids = [97, 98, 99]
    m.apply_merges(ids, {(97, 98): 256})
    out["input_unchanged"] = ids == [97, 98, 99]
    out["is_list"] = isinstance(m.apply_merges((97, 98), {(97, 98): 256}), list)
    _, merges_h, byte_ids_h, _ = hf_merges(SAMPLE, 700)
    texts = TEXTS + random_texts(100, 33) + [SAMPLE]
    pieces = sorted({p for t in texts for p in regex.findall(PATTERN, t)})
    out["hf_pieces"] = [m.apply_merges([byte_ids_h[b] for b in piece.encode("utf-8")], merges_h) for piece in pieces]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.4: encode_ordinary


def encode_visible(m):
    merges, vocab = corpus_merges()
    spaces = {(32, 32): 256}
    out = {"hi!": m.encode_ordinary("hi!", {}), "two_bytes": m.encode_ordinary("é", {}),
           "byte_ids": m.encode_ordinary("hi", {}, byte_ids=[b + 1000 for b in range(256)]),
           "empty": m.encode_ordinary("", dict(merges)), "two_spaces": m.encode_ordinary("a  b", spaces),
           "three_spaces": m.encode_ordinary("a   b", dict(spaces))}
    out["corpus_pieces"] = [vocab[i] for i in m.encode_ordinary(" the cat sees the dog .", merges)]
    return out


def encode_hidden(m):
    texts = TEXTS + random_texts(150, 34) + [SAMPLE]
    _, merges_h, byte_ids_h, _ = hf_merges(SAMPLE, 700)
    out = {"hf_files": [m.encode_ordinary(text, dict(merges_h), list(byte_ids_h)) for text in texts]}
    merges_r = rule_merges(piece_counts(SAMPLE + course_corpus(5_000, seed=5)), 600)
    out["rule_merges"] = [m.encode_ordinary(text, dict(merges_r)) for text in texts[:80]]
    out["is_list"] = isinstance(m.encode_ordinary("a b", merges_r), list)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.5: decode


def decode_visible(m):
    merges, vocab = corpus_merges()
    split = {0: b"\xf0\x9f", 1: b"\x98\x80"}
    out = {"hi": m.decode([104, 105], {104: b"h", 105: b"i"}), "empty": m.decode([], vocab),
           "split_character": m.decode([0, 1], split), "half_character": m.decode([0], split)}
    # as in the test: the student's encode_ordinary, then decode
    out["round_trips"] = [m.decode(m.encode_ordinary(text, dict(merges)), vocab)
                          for text in ["the cat sees the dog .", "你好 😀, e\u0301", "\x00 \r\n\t  end  "]]
    return out


def decode_hidden(m):
    merges_r = rule_merges(piece_counts(SAMPLE), 600)
    vocab_r = _vocab_of(merges_r)
    round_trips = []
    for text in TEXTS + random_texts(150, 35):
        ids = [i for p in regex.findall(PATTERN, text) for i in _rank_apply(list(p.encode("utf-8")), merges_r)]
        round_trips.append(m.decode(ids, vocab_r))
    out = {"round_trips": round_trips, "iterator": m.decode(iter([104, 105]), vocab_r),
           "list_from_tensor": m.decode(torch.tensor([104, 105]).tolist(), vocab_r)}
    vocab_h, _, _, token_ids = hf_merges(SAMPLE, 600)
    rng = random.Random(35)
    n = len(token_ids)
    any_ids = []
    for length in list(range(0, 6)) * 60 + [40] * 20:
        ids = [rng.randrange(n) for _ in range(length)]
        any_ids.append(m.decode(ids, vocab_h))
    out["any_ids"] = any_ids
    out["invalid_bytes"] = [m.decode(list(raw), vocab_r) for raw in [
        b"\xe4", b"\xe4\xbd", b"\xf0\x9f\x98", b"\xc0\x80", b"\xed\xa0\x80", b"\xff\xfe", b"a\x80b",
        b"\xf4\x90\x80\x80"]]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.6: bytes_to_unicode

_SPOTS = [ord("A"), ord("!"), ord("~"), ord("é"), ord(" "), ord("\n"), 0, 127, 173]


def alphabet_visible(m):
    alphabet = m.bytes_to_unicode()
    return {"maps_bytes": isinstance(alphabet, dict) and sorted(alphabet) == list(range(256)),
            "distinct": len(set(alphabet.values())), "spots": [alphabet[b] for b in _SPOTS],
            "printable": all(c.isprintable() and not c.isspace() for c in alphabet.values())}


def alphabet_hidden(m):
    alphabet = m.bytes_to_unicode()
    out = {"table": sorted(alphabet.items())}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vocab_h, merges_h, _, token_ids = read_gpt2_files(hf_trained(SAMPLE, 600, folder / "hf"))
        ours = m.BPETokenizer(vocab_h, merges_h, {EOT: token_ids[EOT]})
        ours.save(folder / "ours")
        lines = (folder / "ours" / "merges.txt").read_text(encoding="utf-8").split("\n")
        out["merges_first_line"] = lines[0]
        out["merges_lines"] = [x for x in lines if x]
        out["vocab_json"] = json.loads((folder / "ours" / "vocab.json").read_text(encoding="utf-8"))
        loaded = m.BPETokenizer.load(folder / "hf")
        out["loaded_vocab"] = sorted([i, list(t)] for i, t in loaded.vocab.items())
        out["loaded_special_tokens"] = dict(loaded.special_tokens)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.7: sinusoidal_positions


def sinusoid_visible(m):
    pe = m.sinusoidal_positions(50, 16)
    return {"shape": list(pe.shape), "dtype": str(pe.dtype), "position0": pe[0], "position1": pe[1, :2],
            "position7": pe[7, 2:4], "T2_d4": m.sinusoidal_positions(2, 4)}


_SHAPES = [(1, 2), (3, 2), (10, 8), (64, 64), (128, 32), (100, 768), (5, 7), (20, 1), (9, 3), (33, 129)]


def sinusoid_hidden(m):
    out = {f"T{T}_d{d}": m.sinusoidal_positions(T, d) for T, d in _SHAPES}
    out["T1024_d64"] = m.sinusoidal_positions(1024, 64)
    out["T0_shape"] = list(m.sinusoidal_positions(0, 8).shape)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Exercise 3.8: TokenAndPositionEmbedding


def embedding_visible(m):
    emb = m.TokenAndPositionEmbedding(vocab_size=20, block_size=6, n_embd=4)
    with torch.no_grad():  # as in the test: token i's row is all i, position t's row all 100 t
        emb.wte.weight.copy_(torch.arange(20.0).unsqueeze(1).expand(20, 4))
        emb.wpe.weight.copy_(100 * torch.arange(6.0).unsqueeze(1).expand(6, 4))
    return {"x": emb(torch.tensor([[3, 1, 3, 5], [0, 0, 19, 2]]))}


def embedding_hidden(m):
    gen = torch.Generator().manual_seed(38)
    emb = m.TokenAndPositionEmbedding(vocab_size=50, block_size=12, n_embd=16)
    with torch.no_grad():
        emb.wte.weight.copy_(torch.randn(50, 16, generator=gen))
        emb.wpe.weight.copy_(torch.randn(12, 16, generator=gen))
    out = {}
    for B, T in [(1, 1), (2, 5), (3, 12), (1, 12), (4, 7)]:
        out[f"B{B}_T{T}"] = emb(torch.randint(0, 50, (B, T), generator=gen))
    idx = torch.randint(0, 50, (2, 5), generator=gen)
    with torch.enable_grad():
        emb.zero_grad()
        emb(idx).sum().backward()
    out["grads_reach_both"] = emb.wpe.weight.grad is not None and emb.wte.weight.grad is not None
    out["wpe_grad"] = emb.wpe.weight.grad
    try:
        emb(torch.zeros(1, 13, dtype=torch.long))
        out["too_long_raises"] = False
    except Exception:  # noqa: BLE001 - as the test: any error will do
        out["too_long_raises"] = True
    out["parameters"] = sorted(n for n, _ in emb.named_parameters())
    return out


PROBES = [
    Probe("test_merge", merge_visible, tokens()),
    Probe("test_merge_hidden", merge_hidden,
          _MERGE_HIDDEN | {"is_list": equal(), "input_unchanged": equal(), "random": each(tokens())}),
    Probe("test_train_bpe", train_visible, {name: fixed(value) for name, (_, value) in _TRAIN_VISIBLE.items()}),
    Probe("test_train_bpe_hidden", train_hidden, _train_hidden_compare()),
    Probe("test_apply_merges", apply_visible, {"corpus_the_tokens": fixed(1)} | {
        name: tokens() for name in ("by_rank", "no_merges", "empty", "toy")}),
    Probe("test_apply_merges_hidden", apply_hidden,
          {"abcd": tokens(), "abcabcab": tokens(), "abababc": tokens(), "a_runs": each(tokens()),
           "input_unchanged": equal(), "is_list": equal(), "hf_pieces": each(tokens())}),
    Probe("test_encode_ordinary", encode_visible, {"corpus_pieces": equal()} | {
        name: tokens() for name in ("hi!", "two_bytes", "byte_ids", "empty", "two_spaces", "three_spaces")}),
    Probe("test_encode_ordinary_hidden", encode_hidden,
          {"hf_files": each(tokens()), "rule_merges": each(tokens()), "is_list": equal()}),
    Probe("test_decode", decode_visible, equal()),
    Probe("test_decode_hidden", decode_hidden, equal()),
    Probe("test_bytes_to_unicode", alphabet_visible, equal()),
    Probe("test_bytes_to_unicode_hidden", alphabet_hidden, equal()),
    Probe("test_sinusoidal_positions", sinusoid_visible, {"shape": equal(), "dtype": equal()}),
    Probe("test_sinusoidal_positions_hidden", sinusoid_hidden,
          {"T0_shape": equal(), "T1024_d64": close(atol=1e-3, rtol=0)} | {
              f"T{T}_d{d}": close(atol=1e-4, rtol=0) for T, d in _SHAPES}),
    Probe("test_embedding", embedding_visible),
    Probe("test_embedding_hidden", embedding_hidden,
          {"grads_reach_both": equal(), "too_long_raises": equal(), "parameters": equal()} | {
              f"B{B}_T{T}": close(atol=1e-6) for B, T in [(1, 1), (2, 5), (3, 12), (1, 12), (4, 7)]}),
]
