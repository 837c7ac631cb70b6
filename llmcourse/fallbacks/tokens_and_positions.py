"""Chapter 3's exports, from Hugging Face ``tokenizers`` and PyTorch (``LLMCOURSE_FALLBACK=tokens_and_positions``).

The tokenizer is Hugging Face's byte-level BPE: its trainer learns the merges, its ``BPE`` model with the
``ByteLevel`` pre-tokenizer and decoder encodes and decodes, and its ``model.save`` / ``BPE.from_file`` write and read
GPT-2's ``vocab.json`` + ``merges.txt``. The merges it learns need not equal the chapter's (Hugging Face breaks ties
between equally frequent pairs its own way), but its files are GPT-2's format and its encode/decode round-trip.
The small BPE helpers (``merge``, ``apply_merges``) are plain Python, the position pieces plain PyTorch.

One known difference from the chapter's tokenizer: Hugging Face's regular expressions use their own Unicode tables,
so on characters added in the newest Unicode version the two may pre-tokenize differently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn

GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@cache
def _splitter() -> pre_tokenizers.Split:
    return pre_tokenizers.Split(Regex(GPT2_SPLIT_PATTERN), behavior="isolated")


@cache
def _alphabet() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode as hf_bytes_to_unicode

    return dict(hf_bytes_to_unicode())


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable character for each byte: ``transformers``' own table."""
    return dict(_alphabet())


def pretokenize(text: str) -> list[str]:
    """GPT-2's pieces of ``text``: Hugging Face's ``Split`` pre-tokenizer with GPT-2's pattern."""
    return [piece for piece, _ in _splitter().pre_tokenize_str(text)]


def word_counts(text: str) -> Counter:
    """Each distinct piece of ``text``, as UTF-8 bytes, with how often it occurs."""
    return Counter(piece.encode("utf-8") for piece in pretokenize(text))


def merge(ids: Sequence[int], pair: tuple[int, int], new: int) -> list[int]:
    """``ids`` with each occurrence of ``pair`` (left to right, no overlaps) replaced by ``new``."""
    first, second = pair
    out: list[int] = []
    previous_merged = False
    for i, x in enumerate(ids):
        if previous_merged:
            previous_merged = False
            continue
        if x == first and i + 1 < len(ids) and ids[i + 1] == second:
            out.append(new)
            previous_merged = True
        else:
            out.append(x)
    return out


def _as_string(token: bytes) -> str:
    alphabet = _alphabet()
    return "".join(alphabet[b] for b in token)


def train_bpe(counts: dict[bytes, int], vocab_size: int) -> dict[tuple[int, int], int]:
    """Up to ``vocab_size - 256`` merges learned by Hugging Face's ``BpeTrainer`` from the pieces and their counts,
    numbered 256, 257, ... over byte ids 0..255 (ties may be broken differently from the chapter's rule)."""
    if vocab_size <= 256:
        return {}
    tok = Tokenizer(models.BPE())  # no pre-tokenizer: each piece, already cut, is one word
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(_alphabet().values()),
                                  show_progress=False)
    words = (_as_string(piece) for piece, n in counts.items() for _ in range(n))
    tok.train_from_iterator(words, trainer=trainer)
    learned = json.loads(tok.to_str())["model"]["merges"]
    ids_of = {_alphabet()[b]: b for b in range(256)}
    merges: dict[tuple[int, int], int] = {}
    for left, right in (m.split(" ") if isinstance(m, str) else m for m in learned):
        joined = left + right
        if joined not in ids_of:  # Hugging Face may learn one token by two merges: it keeps one id for it
            ids_of[joined] = len(ids_of)
        merges[(ids_of[left], ids_of[right])] = ids_of[joined]
    return merges


def apply_merges(ids: Sequence[int], merges: dict[tuple[int, int], int]) -> list[int]:
    """Merge the earliest-learned adjacent pair, again and again, until no adjacent pair is a merge."""
    order = list(merges)
    rank = {pair: r for r, pair in enumerate(order)}
    parts = list(ids)
    while len(parts) > 1:
        ranked = [rank[p] for p in zip(parts, parts[1:]) if p in rank]
        if not ranked:
            break
        pair = order[min(ranked)]
        parts = merge(parts, pair, merges[pair])
    return parts


def _bytes_of(merges: dict[tuple[int, int], int], byte_ids: Sequence[int]) -> dict[int, bytes]:
    tokens = {i: bytes([b]) for b, i in enumerate(byte_ids)}
    for (a, b), new in merges.items():
        tokens[new] = tokens[a] + tokens[b]
    return tokens


def _hf_tokenizer(vocab: dict[int, bytes], merges: dict[tuple[int, int], int],
                  special_tokens: dict[str, int]) -> Tokenizer:
    """Hugging Face's GPT-2 pipeline (byte-level BPE) for the chapter's vocab, merges and special tokens."""
    names = {i: name for name, i in special_tokens.items()}
    strings = {i: names[i] if i in names else _as_string(t) for i, t in vocab.items()}
    model = models.BPE(vocab={s: i for i, s in strings.items()},
                       merges=[(strings[a], strings[b]) for a, b in merges])
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if special_tokens:
        tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in special_tokens])
    return tok


def encode_ordinary(text: str, merges: dict[tuple[int, int], int], byte_ids: Sequence[int] | None = None) -> list[int]:
    """Token ids of ``text`` (special tokens not treated specially), by Hugging Face's byte-level BPE."""
    byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
    tok = _hf_tokenizer(_bytes_of(merges, byte_ids), merges, {})
    return tok.encode(text, add_special_tokens=False).ids


def decode(ids: Iterable[int], vocab: dict[int, bytes]) -> str:
    """The text of token ids: Hugging Face's ``ByteLevel`` decoder (invalid UTF-8 becomes U+FFFD)."""
    return decoders.ByteLevel().decode([_as_string(vocab[i]) for i in ids])


class BPETokenizer:
    """GPT-2's byte-level BPE tokenizer on Hugging Face ``tokenizers``, with the chapter's interface."""

    def __init__(self, vocab: dict[int, bytes], merges: dict[tuple[int, int], int],
                 special_tokens: dict[str, int] | None = None):
        self.vocab = dict(vocab)
        self.merges = dict(merges)
        self.special_tokens = dict(special_tokens or {})
        special_ids = set(self.special_tokens.values())
        single = {t: i for i, t in self.vocab.items() if len(t) == 1 and i not in special_ids}
        missing = [b for b in range(256) if bytes([b]) not in single]
        if missing:
            raise ValueError(f"the vocabulary lacks the one-byte tokens of bytes {missing[:8]}: every byte needs one")
        self.byte_ids = [single[bytes([b])] for b in range(256)]
        self._tok = _hf_tokenizer(self.vocab, self.merges, self.special_tokens)

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Sequence[str] = ("<|endoftext|>",)) -> BPETokenizer:
        """Hugging Face's BPE trainer on ``text`` (special tokens cut out first); the special tokens come last."""
        special_tokens = list(dict.fromkeys(special_tokens))
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size={vocab_size} leaves no room for 256 bytes and {len(special_tokens)} specials")
        counts: Counter = Counter()
        for k, part in enumerate(_split_around(text, special_tokens)):
            if k % 2 == 0:
                counts.update(word_counts(part))
        merges = train_bpe(counts, vocab_size - len(special_tokens))
        vocab = _bytes_of(merges, range(256))
        next_id = max(vocab) + 1
        specials = {name: next_id + k for k, name in enumerate(special_tokens)}
        vocab.update({i: name.encode("utf-8") for name, i in specials.items()})
        return cls(vocab, merges, specials)

    @property
    def vocab_size(self) -> int:
        return max(self.vocab) + 1

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get("<|endoftext|>")

    def encode(self, text: str, allowed_special: str | Iterable[str] = "all") -> list[int]:
        """Token ids; special tokens in the text become their ids when allowed ("all", "none" or a collection)."""
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special == "none":
            allowed = set()
        else:
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        if allowed == set(self.special_tokens):
            return self._encode(text, split_special=False)
        ids: list[int] = []
        for k, part in enumerate(_split_around(text, allowed)):
            ids.extend([self.special_tokens[part]] if k % 2 else self._encode(part, split_special=True))
        return ids

    def _encode(self, text: str, split_special: bool) -> list[int]:
        self._tok.encode_special_tokens = split_special  # True: special tokens are encoded as ordinary text
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        finally:
            self._tok.encode_special_tokens = False

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def save(self, directory: str | Path) -> None:
        """GPT-2's ``vocab.json`` and ``merges.txt``, written by Hugging Face's ``BPE.save``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.model.save(str(directory))

    @classmethod
    def load(cls, directory: str | Path) -> BPETokenizer:
        """Read GPT-2's files with Hugging Face's ``BPE.from_file``; entries that are neither a byte nor made by a
        merge are special tokens."""
        directory = Path(directory)
        model = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
        saved = json.loads(Tokenizer(model).to_str())["model"]
        token_ids: dict[str, int] = saved["vocab"]
        merges = {}
        for left, right in (m.split(" ") if isinstance(m, str) else m for m in saved["merges"]):
            merges[(token_ids[left], token_ids[right])] = token_ids[left + right]
        byte_of = {c: b for b, c in _alphabet().items()}
        ordinary = {token_ids[c] for c in byte_of if c in token_ids} | set(merges.values())
        vocab, specials = {}, {}
        for name, i in token_ids.items():
            if i in ordinary:
                vocab[i] = bytes(byte_of[c] for c in name)
            else:
                vocab[i], specials[name] = name.encode("utf-8"), i
        return cls(vocab, merges, specials)


def _split_around(text: str, specials: Iterable[str]) -> list[str]:
    """[text, special, text, ..., text]: ``text`` cut around the special tokens (the longest name first)."""
    names = sorted(specials, key=len, reverse=True)
    if not names:
        return [text]
    return re.split("(" + "|".join(re.escape(name) for name in names) + ")", text)


def sinusoidal_positions(T: int, d: int) -> torch.Tensor:
    """(T, d) float32 with sin(pos / 10000^(2i/d)) in column 2i and cos of the same angle in column 2i + 1."""
    inv_freq = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float64) / d)  # (ceil(d/2),)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, ceil(d/2))
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :d].float()  # interleaved, (T, d)


class TokenAndPositionEmbedding(nn.Module):
    """x[b, t] = wte[idx[b, t]] + wpe[t], with GPT-2's parameter names."""

    def __init__(self, vocab_size: int, block_size: int, n_embd: int):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[-1]
        if T > self.block_size:
            raise ValueError(f"a sequence of {T} tokens is longer than block_size={self.block_size}")
        return self.wte(idx) + self.wpe.weight[:T]
