"""Chapter 3: the tokenizer against Hugging Face's GPT-2 tokenizer, graded tests against plausible wrong answers, and
the public fallback against the solution.

The heart of the chapter is that our byte-level BPE *is* GPT-2's: files our tokenizer saves load in Hugging Face
(``transformers.GPT2Tokenizer`` and a bare ``tokenizers`` GPT-2 pipeline) and give the same ids on every text; files
Hugging Face saves load in ours and give the same ids; every text round-trips. Everything is offline: the only
tokenizer files are the ones these tests write.
(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest
import torch
from conftest import ROOT, import_from_solutions
from notebook_harness import wrong_answer_tests

CHAPTER = "03_tokens_and_positions"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
EOT = "<|endoftext|>"

MERGE_TESTS = {"test_merge", "test_merge_hidden"}
TRAIN_TESTS = {"test_train_bpe", "test_train_bpe_hidden"}
APPLY_TESTS = {"test_apply_merges", "test_apply_merges_hidden"}
ENCODE_TESTS = {"test_encode_ordinary", "test_encode_ordinary_hidden"}
DECODE_TESTS = {"test_decode", "test_decode_hidden"}
ALPHABET_TESTS = {"test_bytes_to_unicode", "test_bytes_to_unicode_hidden"}
SINUSOID_TESTS = {"test_sinusoidal_positions", "test_sinusoidal_positions_hidden"}
EMBEDDING_TESTS = {"test_embedding", "test_embedding_hidden"}

TRAIN_BPE = '''
#| export
def train_bpe(counts, vocab_size):
    words = [(list(word), n) for word, n in counts.items()]
    merges = {{}}
    for new in range({start}, {stop}):
        pair_counts = Counter()
        for ids, n in words:
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += {weight}
        if not pair_counts:
            break
        best = {choose}
        merges[best] = new
        words = [(merge(ids, best, new), n) for ids, n in words]
    return merges
'''


def train_bpe(start="256", stop="vocab_size", weight="n",
              choose="min(pair_counts.items(), key=lambda item: (-item[1], item[0]))[0]"):
    return TRAIN_BPE.format(start=start, stop=stop, weight=weight, choose=choose)


ENCODE_ORDINARY = '''
#| export
def encode_ordinary(text, merges, byte_ids=None):
    byte_ids = range(256) if byte_ids is None else byte_ids
    ids = []
    for piece in {pieces}:
        ids.extend(apply_merges([{byte} for b in piece.encode("utf-8")], merges))
    return ids
'''

SINUSOID = '''
#| export
def sinusoidal_positions(T, d):
    pos = torch.arange({first}, T + {first}, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d, 2, dtype=torch.float64)
    angles = pos / 10000 ** ({exponent} / d)
    pe = torch.zeros(T, d, dtype=torch.float64)
    pe[:, 0::2] = torch.{even}(angles)
    pe[:, 1::2] = torch.{odd}(angles{cos_columns})
    return pe.float()
'''


def sinusoid(first="0", exponent="two_i", even="sin", odd="cos", cos_columns="[:, : d // 2]"):
    return SINUSOID.format(first=first, exponent=exponent, even=even, odd=odd, cos_columns=cos_columns)


EMBEDDING = '''
#| export
class TokenAndPositionEmbedding(nn.Module):
    def __init__(self, vocab_size, block_size, n_embd):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)

    def forward(self, idx):
        T = idx.size(-1)
        return {body}
'''

BYTES_TO_UNICODE = '''
#| export
def bytes_to_unicode():
    printable = [*range(ord("!"), ord("~"){end}), *range(ord("¡"), ord("¬"){end}), *range(ord("®"), ord("ÿ"){end})]
    printable = [b for b in printable if b < {limit}]
    alphabet, n = {{}}, 0
    for b in range(256):
        if b in printable:
            alphabet[b] = chr(b)
        else:
            alphabet[b] = chr(256 + {shift})
            n += 1
    return alphabet
'''


def alphabet(end=" + 1", limit="256", shift="n"):
    return BYTES_TO_UNICODE.format(end=end, limit=limit, shift=shift)


# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "merge that does not skip the second half of a merged pair": ("merge", '''
#| export
def merge(ids, pair, new):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new)
        elif i > 0 and (ids[i - 1], ids[i]) == tuple(pair):
            continue
        else:
            out.append(ids[i])
    return out
''', MERGE_TESTS),
    "merge of the first occurrence only": ("merge", '''
#| export
def merge(ids, pair, new):
    ids = list(ids)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new] + ids[i + 2:]
    return ids
''', MERGE_TESTS),
    "merge that loses the last element": ("merge", '''
#| export
def merge(ids, pair, new):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
''', MERGE_TESTS),
    "training with ties broken by the pair counted first": (
        "train_bpe", train_bpe(choose="pair_counts.most_common(1)[0][0]"), TRAIN_TESTS),
    "training with ties broken by the largest pair": (
        "train_bpe", train_bpe(choose="max(pair_counts.items(), key=lambda item: (item[1], item[0]))[0]"), TRAIN_TESTS),
    "training that ignores how often each piece occurs": ("train_bpe", train_bpe(weight="1"), TRAIN_TESTS),
    "training with vocab_size merges instead of vocab_size - 256": (
        "train_bpe", train_bpe(stop="256 + vocab_size"), TRAIN_TESTS),
    "encoding by frequency in the text instead of by rank": ("apply_merges", '''
#| export
def apply_merges(ids, merges):
    ids = list(ids)
    while True:
        counts = Counter(p for p in zip(ids, ids[1:]) if p in merges)
        if not counts:
            return ids
        pair = counts.most_common(1)[0][0]
        ids = merge(ids, pair, merges[pair])
''', APPLY_TESTS),
    "encoding the leftmost mergeable pair first": ("apply_merges", '''
#| export
def apply_merges(ids, merges):
    ids = list(ids)
    while True:
        for pair in zip(ids, ids[1:]):
            if pair in merges:
                ids = merge(ids, pair, merges[pair])
                break
        else:
            return ids
''', APPLY_TESTS),
    "encoding with one merge only": ("apply_merges", '''
#| export
def apply_merges(ids, merges):
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    ids = list(ids)
    if len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, len(ranks)))
        if pair in ranks:
            ids = merge(ids, pair, merges[pair])
    return ids
''', APPLY_TESTS),
    "encoding without pre-tokenization": ("encode_ordinary", ENCODE_ORDINARY.format(
        pieces="[text]", byte="byte_ids[b]"), ENCODE_TESTS),
    "pre-tokenization without the leading space": ("encode_ordinary", ENCODE_ORDINARY.format(
        pieces=r"""regex.findall(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", text)""",
        byte="byte_ids[b]"), ENCODE_TESTS),
    "pre-tokenization by str.split": ("encode_ordinary", ENCODE_ORDINARY.format(
        pieces="text.split()", byte="byte_ids[b]"), ENCODE_TESTS),
    "encoding that ignores byte_ids": ("encode_ordinary", ENCODE_ORDINARY.format(
        pieces="pretokenize(text)", byte="b"), ENCODE_TESTS),
    "decoding each token on its own": ("decode", '''
#| export
def decode(ids, vocab):
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)
''', DECODE_TESTS),
    "decoding with strict UTF-8": ("decode", '''
#| export
def decode(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8")
''', DECODE_TESTS),
    "decoding that drops invalid bytes": ("decode", '''
#| export
def decode(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore")
''', DECODE_TESTS),
    "alphabet with the other bytes at chr(256 + byte)": ("bytes_to_unicode", alphabet(shift="b"), ALPHABET_TESTS),
    "alphabet that keeps only ASCII printable": ("bytes_to_unicode", alphabet(limit="128"), ALPHABET_TESTS),
    "alphabet with the ranges' ends left out": ("bytes_to_unicode", alphabet(end=""), ALPHABET_TESTS),
    "sinusoids with sin and cos swapped": ("sinusoidal_positions", sinusoid(even="cos", odd="sin"), SINUSOID_TESTS),
    "sinusoids with the exponent i/d instead of 2i/d": (
        "sinusoidal_positions", sinusoid(exponent="(two_i / 2)"), SINUSOID_TESTS),
    "sinusoids with positions from 1": ("sinusoidal_positions", sinusoid(first="1"), SINUSOID_TESTS),
    "sinusoids as a sine half and a cosine half": ("sinusoidal_positions", '''
#| export
def sinusoidal_positions(T, d):
    pos = torch.arange(T, dtype=torch.float64).unsqueeze(1)
    angles = pos / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :d].float()
''', SINUSOID_TESTS),
    "sinusoids that only work for an even width": (
        "sinusoidal_positions", sinusoid(cos_columns=""), {"test_sinusoidal_positions_hidden"}),
    "embedding with positions from 1": (
        "embedding", EMBEDDING.format(body="self.wte(idx) + self.wpe(torch.arange(1, T + 1, device=idx.device))"),
        EMBEDDING_TESTS),
    "embedding that looks positions up by token id": (
        "embedding", EMBEDDING.format(body="self.wte(idx) + self.wpe(idx)"), EMBEDDING_TESTS),
    "embedding without positions": ("embedding", EMBEDDING.format(body="self.wte(idx)"), EMBEDDING_TESTS),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# --- the tokenizer against Hugging Face ---------------------------------------------------------------------------

MIXED = (
    "The quick brown fox jumps over the lazy dog. It's a dog's life, isn't it? We'll see; they've said so, I'm sure.\n"
    "In 2024, 1,234,567 people paid $3.50 each (that's 4,320,984.50 dollars!) on 2024-01-01 at 12:30.\n"
    "def forward(self, x):\n    return self.c_proj(self.attn(self.ln_1(x))) + x  # residual\n\n"
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n"
    "Naïve café, résumé, Ångström, façade; Привет, мир! Γειά σου κόσμε. 你好，世界！日本語のテキスト。한국어.\n"
    "مرحبا بالعالم — שלום עולם. Emoji: 😀😀 👍🏽 👨\u200d👩\u200d👧 ❤️ “quotes” ‘here’ «guillemets».\n"
    "Spaces    and\ttabs\r\nand CRLF\r\n\r\n   indented\n\n\n"
)

TEXTS = [
    "", " ", "  ", "\n", "a", "A", "Hello, world!", "Hello world", " Hello world", "hello  world", "hello   world ",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "It's, I'm, we're, they've, you'll, she'd, 'twas, IT'S, rock 'n' roll, don't, ''s, 'S 'Re",
    "it’s — a curly apostrophe is not a contraction",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }", "if x==1&&y!=2||z>=3: pass",
    "3.14159 2024-01-01 1,000,000 $42.00 -7e-3 0x1F 123456789012345 1st 2nd 3rd",
    "\u0663\u0664\u0665 \u2460\u2461\u2462 \u216b 42 \u00bd \u00b2",
    "naïve café résumé Ångström", "e\u0301 a\u0308 n\u0303 \u0301\u0301 \u0301a",
    "Привет, мир! Γειά σου κόσμε! שלום עולם! مرحبا بالعالم हिन्दी",
    "你好，世界！日本語のテキスト。한국어 텍스트",
    "😀😃😄 👍🏽 👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 ❤️ 🇫🇷",
    "\x00\x01\x02\x1b[31mred\x1b[0m\x7f\x85\x1c\x1d\x1e\x1f\x0b\x0c",
    "\r\n\r\nline\r\nline2\n\n\n\t\t\t", "a\r\rb\r\n", "\r",
    " " * 40 + "x", "\n" * 10 + "y", "\t \t \n  \u00a0\u2003\u3000 z", "x" + " " * 17, "   ", "  \n  ",
    "\u2028\u2029 separators \u200b zero width \u00ad soft hyphen",
    EOT, f"a{EOT}b", f" {EOT} ", EOT * 2, "<|endoftext", "<|endoftext|", "<|ENDOFTEXT|>", f"x{EOT}\n{EOT} the",
    f"{EOT[:5]}{EOT}{EOT[5:]}",
    "\ufeffBOM, \ufffd replacement, \U0010ffff and \U000e0001 at the top",
    "mixed123abc456 abc_def-ghi.jkl/mno", "https://example.com/path?query=1&b=2#frag",
    "the small cat sees a red ball . tom runs to the old house .",
]


def random_texts(n: int, seed: int) -> list[str]:
    """Random texts of every kind of character that this Python's Unicode tables know (see the chapter's note on
    Unicode versions), mixed with spaces, newlines, contractions and special tokens."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7F), (0x00, 0x20), (0x80, 0x800), (0x800, 0x3000), (0x4E00, 0xA000), (0xAC00, 0xD7A4),
              (0x1F300, 0x1FB00), (0xE000, 0xF900), (0x10000, 0x110000)]
    words = [" ", "  ", "   ", "\n", "\n\n", "\r\n", "\t", "'s", "'ll", "'t", " the", "The", "2024", " 42", EOT,
             "e\u0301", "?!", " (", "\u00a0"]
    texts = []
    for _ in range(n):
        out = []
        for _ in range(rng.randint(1, 80)):
            if rng.random() < 0.35:
                out.append(rng.choice(words))
                continue
            lo, hi = rng.choice(ranges)
            c = rng.randrange(lo, hi)
            if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn":
                out.append(chr(c))
        texts.append("".join(out))
    return texts


def repository_texts() -> list[str]:
    """The course's own prose and code, in chunks: real English, Markdown and Python."""
    files = sorted([ROOT / "README.md", *ROOT.glob("book/*.md"), *ROOT.glob("llmcourse/*.py")])
    chunks = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        chunks += [text[i: i + 3000] for i in range(0, len(text), 3000)]
    return chunks


def parity_texts() -> list[str]:
    from llmcourse.data import course_corpus

    return TEXTS + random_texts(1000, seed=1) + repository_texts() + [MIXED, course_corpus(20_000, seed=7)]


def training_text() -> str:
    from llmcourse.data import course_corpus

    return course_corpus(30_000, seed=0) + EOT + MIXED * 2 + EOT + "".join(repository_texts()[:12])


@pytest.fixture(scope="module")
def chapter():
    """The solution's chapter module, imported once from solutions/ (the environment is restored at once)."""
    (tokens_and_positions,) = import_from_solutions("tokens_and_positions")
    return tokens_and_positions


@pytest.fixture(scope="module")
def ours(chapter):
    return chapter.BPETokenizer.train(training_text(), vocab_size=1200)


@pytest.fixture(scope="module")
def saved(ours, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ours")
    ours.save(folder)
    return folder


def hf_transformers(folder: Path):
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer.from_pretrained(str(folder))


def hf_pipeline(folder: Path, special: bool = True):
    """A bare Hugging Face ``tokenizers`` GPT-2 pipeline: byte-level BPE from vocab.json and merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if special:
        tok.add_special_tokens([EOT])
    return tok


def hf_trained(folder: Path, text: str, vocab_size: int) -> Path:
    """Hugging Face's byte-level BPE trainer, saved in GPT-2's format."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(folder))
    return folder


def test_saved_files_are_gpt2_format(ours, saved, chapter):
    lines = (saved / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[-1] == ""
    alphabet = chapter.bytes_to_unicode()
    strings = {i: "".join(alphabet[b] for b in t) for i, t in ours.vocab.items()}
    strings[ours.eot_id] = EOT
    assert lines[1:-1] == [f"{strings[a]} {strings[b]}" for a, b in ours.merges]  # in rank order
    vocab = json.loads((saved / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == {s: i for i, s in strings.items()}
    assert sorted(vocab.values()) == list(range(ours.vocab_size)) and ours.vocab_size == 1200
    assert vocab["Ġ"] == 32 and vocab[EOT] == ours.eot_id == 1199  # bytes first, the special token last
    assert len(ours.merges) == 1200 - 256 - 1


def test_same_ids_as_hugging_face_transformers(ours, saved):
    """transformers' GPT2Tokenizer, loaded from our files, agrees with us on every text, special tokens included."""
    hf = hf_transformers(saved)
    texts = parity_texts()
    for text in texts:
        assert hf(text)["input_ids"] == ours.encode(text), f"different ids on {text[:80]!r}"
        assert hf(text, split_special_tokens=True)["input_ids"] == ours.encode(text, allowed_special="none"), text
    assert len(texts) > 1000 and sum(map(len, texts)) > 140_000


def test_same_ids_as_hugging_face_tokenizers(ours, saved):
    """A bare ``tokenizers`` GPT-2 pipeline, loaded from our files: the same ids, and the same decoding."""
    with_special, without = hf_pipeline(saved), hf_pipeline(saved, special=False)
    for text in parity_texts():
        ids = ours.encode(text)
        assert with_special.encode(text).ids == ids, f"different ids on {text[:80]!r}"
        assert without.encode(text).ids == ours.encode(text, allowed_special="none"), text
        assert with_special.decode(ids, skip_special_tokens=False) == ours.decode(ids) == text


def test_round_trip_on_any_unicode(ours):
    for text in parity_texts() + random_texts(400, seed=2):
        assert ours.decode(ours.encode(text)) == text, f"round trip of {text[:80]!r}"
        assert ours.decode(ours.encode(text, allowed_special="none")) == text


def test_any_ids_decode_like_hugging_face(ours, saved):
    hf = hf_pipeline(saved)
    rng = random.Random(3)
    for _ in range(2000):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randint(0, 12))]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False), ids


def test_hugging_face_files_load_in_ours(chapter, tmp_path):
    """Files written by Hugging Face's trainer (bytes numbered in its own order, the special token at id 0)."""
    folder = hf_trained(tmp_path / "hf", training_text(), vocab_size=900)
    loaded = chapter.BPETokenizer.load(folder)
    assert loaded.special_tokens == {EOT: 0} and loaded.eot_id == 0 and loaded.vocab_size == 900
    assert loaded.byte_ids != list(range(256))  # a real test of byte_ids
    hf, pipeline = hf_transformers(folder), hf_pipeline(folder)
    for text in parity_texts():
        ids = loaded.encode(text)
        assert ids == hf(text)["input_ids"] == pipeline.encode(text).ids, f"different ids on {text[:80]!r}"
        assert loaded.decode(ids) == text
    # and saved again by us, byte for byte the same content
    loaded.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "vocab.json").read_text(encoding="utf-8")) == json.loads(
        (folder / "vocab.json").read_text(encoding="utf-8"))
    assert (tmp_path / "again" / "merges.txt").read_text(encoding="utf-8").split() == (
        folder / "merges.txt").read_text(encoding="utf-8").split()


def test_files_saved_by_transformers_load_in_ours(chapter, saved, tmp_path):
    hf = hf_transformers(saved)
    hf.backend_tokenizer.model.save(str(tmp_path))  # GPT2Tokenizer's own vocab.json + merges.txt
    loaded, ours = chapter.BPETokenizer.load(tmp_path), chapter.BPETokenizer.load(saved)
    assert loaded.vocab == ours.vocab and loaded.merges == ours.merges and loaded.special_tokens == ours.special_tokens


def test_merges_apply_by_rank_not_frequency(chapter, tmp_path):
    """A hand-made tokenizer whose merge order and pair frequencies disagree: ids by rank, as Hugging Face."""
    vocab = {i: bytes([i]) for i in range(256)}
    merges = {(98, 99): 256, (97, 98): 257, (257, 257): 258, (99, 100): 259}  # bc, ab, abab, cd
    for (a, b), new in merges.items():
        vocab[new] = vocab[a] + vocab[b]
    vocab[260] = EOT.encode()
    tok = chapter.BPETokenizer(vocab, merges, {EOT: 260})
    assert tok.encode("ababc") == [257, 97, 256]  # by frequency: ab ab c -> abab c
    assert tok.encode("abcd") == [97, 256, 100]  # leftmost first: ab cd
    tok.save(tmp_path)
    hf = hf_transformers(tmp_path)
    for text in ["ababc", "abcd", "abababcd", "cdab abcd", "ab" * 9 + "c", f"ab{EOT}cd"]:
        assert tok.encode(text) == hf(text)["input_ids"], text


def test_special_tokens(ours, chapter):
    eot = ours.eot_id
    assert ours.encode(EOT) == [eot] and ours.encode(EOT * 3) == [eot] * 3
    assert ours.encode(f"a{EOT}b") == ours.encode("a") + [eot] + ours.encode("b")
    assert eot not in ours.encode(EOT, allowed_special="none")
    assert ours.encode(f"x{EOT}", allowed_special={EOT}) == ours.encode(f"x{EOT}")
    assert ours.encode(f"x{EOT}", allowed_special=set()) == ours.encode(f"x{EOT}", allowed_special="none")
    assert ours.decode([eot]) == EOT
    with pytest.raises(ValueError):
        ours.encode("x", allowed_special={"<|nope|>"})
    # training never learns from the special token's characters
    tok = chapter.BPETokenizer.train((EOT + "ab ") * 50, vocab_size=300)
    assert all(b"<|" not in t and b"endoftext" not in t for i, t in tok.vocab.items() if i != tok.eot_id)
    # two special tokens, one inside the other's name: the longest wins
    tok = chapter.BPETokenizer.train("hello world", vocab_size=266, special_tokens=(EOT, "<|end|>"))
    assert tok.encode(f"a{EOT}<|end|>") == tok.encode("a") + [tok.special_tokens[EOT], tok.special_tokens["<|end|>"]]
    assert tok.vocab_size == 266 and sorted(tok.special_tokens.values()) == [264, 265]


def test_training_is_deterministic_and_tokenizer_checks_its_vocabulary(chapter):
    text = training_text()
    a = chapter.BPETokenizer.train(text, 700)
    b = chapter.BPETokenizer.train(text, 700)
    assert list(a.merges.items()) == list(b.merges.items())
    with pytest.raises(ValueError):
        chapter.BPETokenizer({i: bytes([i]) for i in range(255)}, {})
    with pytest.raises(ValueError):
        chapter.BPETokenizer.train("abc", vocab_size=256)


# --- the public fallback --------------------------------------------------------------------------------------------

def test_fallback_agrees_with_solution(chapter, tmp_path):
    from llmcourse.fallbacks import tokens_and_positions as fallback

    ours = chapter
    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"merge", "train_bpe", "apply_merges", "encode_ordinary", "decode", "bytes_to_unicode",
                      "pretokenize", "word_counts", "BPETokenizer", "sinusoidal_positions",
                      "TokenAndPositionEmbedding"}
    assert public <= set(vars(fallback)) and fallback.GPT2_SPLIT_PATTERN == ours.GPT2_SPLIT_PATTERN

    assert fallback.bytes_to_unicode() == ours.bytes_to_unicode()
    rng = random.Random(4)
    for _ in range(200):
        ids = [rng.randrange(3) for _ in range(rng.randrange(12))]
        assert fallback.merge(ids, (1, 1), 7) == ours.merge(ids, (1, 1), 7)
    texts = TEXTS + random_texts(100, seed=5)
    for text in texts:
        assert fallback.pretokenize(text) == ours.pretokenize(text)
    counts = ours.word_counts(training_text())
    assert fallback.word_counts(training_text()) == counts
    merges = ours.train_bpe(counts, 700)
    merges_fb = fallback.train_bpe(counts, 700)  # Hugging Face's ties: other merges, the same kind of result
    assert len(merges_fb) == len(merges) and list(merges_fb.values()) == list(range(256, 700))
    assert list(merges_fb)[:3] == list(merges)[:3]  # the most frequent pairs, without ties
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new in merges.items():
        vocab[new] = vocab[a] + vocab[b]
    for text in texts:
        assert fallback.encode_ordinary(text, merges) == ours.encode_ordinary(text, merges), text
    for piece in list(counts)[:200]:
        assert fallback.apply_merges(list(piece), merges) == ours.apply_merges(list(piece), merges)
    for _ in range(300):
        ids = [rng.randrange(700) for _ in range(rng.randrange(8))]
        assert fallback.decode(ids, vocab) == ours.decode(ids, vocab)

    # the tokenizer: the fallback's files load in ours and in Hugging Face, and they all agree
    tok_fb = fallback.BPETokenizer.train(training_text(), vocab_size=800)
    assert tok_fb.vocab_size == 800 and tok_fb.eot_id == 799
    tok_fb.save(tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    tok_ours, hf = ours.BPETokenizer.load(tmp_path), hf_transformers(tmp_path)
    again = fallback.BPETokenizer.load(tmp_path)
    for text in texts:
        ids = tok_fb.encode(text)
        assert ids == tok_ours.encode(text) == hf(text)["input_ids"] == again.encode(text), text
        assert tok_fb.encode(text, allowed_special="none") == tok_ours.encode(text, allowed_special="none")
        assert tok_fb.encode(text, allowed_special={EOT}) == ids
        assert tok_fb.decode(ids) == text
    # and ours, loaded into the fallback
    solution = ours.BPETokenizer.train(training_text(), vocab_size=800)
    solution.save(tmp_path / "ours")
    loaded = fallback.BPETokenizer.load(tmp_path / "ours")
    assert loaded.vocab == solution.vocab and loaded.merges == solution.merges
    assert all(loaded.encode(t) == solution.encode(t) for t in texts)

    for T, d in [(1, 2), (17, 8), (9, 7), (64, 33)]:
        torch.testing.assert_close(fallback.sinusoidal_positions(T, d), ours.sinusoidal_positions(T, d))
    a, b = ours.TokenAndPositionEmbedding(30, 8, 6), fallback.TokenAndPositionEmbedding(30, 8, 6)
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 30, (3, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b(idx), a(idx))
    with pytest.raises((ValueError, IndexError)):
        b(torch.zeros(1, 9, dtype=torch.long))
