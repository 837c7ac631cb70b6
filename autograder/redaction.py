"""Keeping hidden tests out of everything that is shown: :class:`Redactor`.

Every text that reaches feedback, the report or the CSV and could come from a run of student code goes through
:meth:`Redactor.redact`; the grader's own diagnoses need none, but pass through it harmlessly.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import functools
import html
import itertools
import re
import unicodedata
import urllib.parse
import zlib
from collections.abc import Iterable, Sequence

from autograder.notebook_model import BEGIN_HIDDEN, END_HIDDEN

#
# Every text that reaches feedback, the report or the CSV and could come from a run of student code goes through
# Redactor.redact. Such a text can hold anything the student's code chose to put there: the hidden test cells
# read from IPython's history (In, _ih) or from the notebook file, disguised or encoded. The message and the hidden
# tests are both folded (escapes decoded, Unicode compatibility forms, case, invisible characters, whitespace)
# and cut into tokens (names, numbers, operators). A stretch of LEAK_WINDOW tokens or more that occurs, in that
# order, at one place of a hidden test and holds MIN_LEAK_NAMES names (MIN_LEAK_CODE_NAMES of them in code) is a
# quotation of it; the lines that hold one are removed. The thresholds were measured on the course's real messages
# (every chapter's wrong answers, the notebooks' own tests and the outside checks: 802 messages, 480 distinct):
# none is altered; with 3 names instead of 4, 13 are ("softmax(x, dim=", "attn.c_attn.weight',").

LEAK_WINDOW = 6  # tokens: "x0 = x.clone()" is 7; with 5, 2 real messages are altered
LOOSE_WINDOW = 3  # tokens: once a text quotes a hidden test, lines that hold this many of it in a row go too
MIN_LEAK_NAMES = 4  # names in a quotation (of variables, functions, keywords; or words in a string literal) ...
MIN_LEAK_CODE_NAMES = 2  # ... of which this many in code, not in string literals; see Redactor
MAX_MESSAGE_BYTES = 4000  # of one message, after redaction (UTF-8); the rest is cut
SCAN_CHARS = 32768  # of a message, at least: only its beginning is read (SCAN_FACTOR * max_bytes when more)
SCAN_FACTOR = 8
REDACTED_LINE = "[a line quoting a hidden test was removed]"
REDACTED_LINES = "[{n} lines quoting a hidden test were removed]"

_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers: letters that show nothing
_DROPPED = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Mn", "Me"})  # controls, format (zero width), marks, unassigned
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")
_ASCII_SPACES = str.maketrans("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", " " * 9)
_ESCAPE_RE = re.compile(r"""
    (?P<join>\\n["']\s*,\s*[rbuRBU]?["'])                   # lines of a JSON or repr list: "a\n", "b"
  | \\(?:U(?P<u8>[0-9a-fA-F]{8})|u(?P<u4>[0-9a-fA-F]{4})|x(?P<x2>[0-9a-fA-F]{2})|(?P<oct>[0-7]{3})
         |(?P<space>[nrtfvb])|(?P<char>["'\\/]))
  | (?P<entity>&(?:\#[0-9]{1,7}|\#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});)
  | (?P<percent>(?:%[0-9a-fA-F]{2})+)
""", re.VERBOSE)
_TOKEN_RE = re.compile(r"""
    (?P<skip>\\)                                         # a backslash left after decoding separates tokens
  | (?P<word>[^\W\d]\w*)                                # names (any script), keywords
  | (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)
  | (?P<op>==|!=|<=|>=|\*\*|//|->|:=|<<|>>|[-+*/%&|^~<>=!@:;,.()\[\]{}\#$?])
""", re.VERBOSE)  # quotes and any other symbol separate tokens too (a repr's quotes differ from the source's)
# where Python source has string literals and comments (a tolerant scanner: cells may hold magics or be cut)
_PY_PIECE_RE = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?<!\w)[rRbBuUfF]{0,2}(?P<q3>\"\"\"|''')(?P<text3>.*?)(?:(?P=q3)|\Z)
  | (?<!\w)[rRbBuUfF]{0,2}(?P<q1>["'])(?P<text1>(?:\\.|[^\\\n])*?)(?:(?P=q1)|(?=\n)|\Z)
""", re.VERBOSE | re.DOTALL)
_MARKER_RE = re.compile(r"#\s*#\s*#\s*(?:begin|end)\s*hidden\s*tests")  # in folded text
_BASE64_RUN_RE = re.compile(r"[A-Za-z0-9+/_-]+=*")
_HEX_REGION_RE = re.compile(r"(?:(?:0x|\\x|%)?[0-9a-fA-F]{2}[\s,;:-]*){8,}")
_NUMBER_LIST_RE = re.compile(r"(?:\d{1,7}\s*[,;]\s*){7,}\d{1,7}")

def _sub_mapped(text: str, where: Sequence[int], pattern: re.Pattern, replace) -> tuple[str, list[int]]:
    """``pattern.sub(replace, text)``, keeping ``where`` (what each character came from) up to date."""
    out, index, at = [], [], 0
    for m in pattern.finditer(text):
        new = replace(m)
        out += [text[at:m.start()], new]
        index += [*where[at:m.start()], *[where[m.start()]] * len(new)]
        at = m.end()
    out.append(text[at:])
    index += where[at:]
    return "".join(out), index


def _unescape(m: re.Match) -> str:
    """One escape decoded: \\x63 \\u0063 \\143 -> c, \\n -> space, \\" -> ", &quot; &#99; -> " c, %63%68 -> ch."""
    if m["u8"] or m["u4"] or m["x2"] or m["oct"]:
        code = int(m["oct"], 8) if m["oct"] else int(m["u8"] or m["u4"] or m["x2"], 16)
        return chr(code) if code < 0x110000 and not 0xD800 <= code < 0xE000 else " "
    if m["space"] or m["join"]:
        return " "
    if m["char"]:
        return m["char"]
    if m["entity"]:
        return html.unescape(m["entity"])
    return urllib.parse.unquote(m["percent"], errors="replace")


@functools.lru_cache(maxsize=65536)
def _fold_char(ch: str, casefold: bool) -> str:
    """One character as the redactor compares it: "" for what shows nothing (zero-width, format and control
    characters, combining marks, fillers), " " for any space (NBSP, ideographic, line breaks), else its
    compatibility decomposition (fullwidth -> ASCII, ligatures split, accents dropped), casefolded."""
    if ch.isspace() or ch == "\u2800":
        return " "
    if ch.isascii() and ch.isprintable():
        return ch.lower() if casefold else ch
    if ch in _FILLERS or unicodedata.category(ch) in _DROPPED:
        return ""
    folded = unicodedata.normalize("NFKD", ch)
    if casefold:
        folded = folded.casefold()
    return "".join(" " if c.isspace() else c for c in folded if unicodedata.category(c) not in _DROPPED)


def fold(text: str, casefold: bool = True) -> tuple[str, Sequence[int]]:
    """``text`` as the redactor compares it, and for each of its characters the index of the original one.

    Escapes are decoded first (a few rounds: JSON in a repr), then each character is folded (see
    :func:`_fold_char`). ``casefold=False`` keeps the case (for base64) and the escapes."""
    where: Sequence[int] = range(len(text))
    if casefold:
        for _ in range(3):
            if "\\" not in text and "&" not in text and "%" not in text:
                break
            decoded, index = _sub_mapped(text, where, _ESCAPE_RE, _unescape)
            if decoded == text:
                break
            text, where = decoded, index
    if text.isascii() and not _CONTROL_RE.search(text):  # the common case, quickly
        text = text.translate(_ASCII_SPACES)
        return (text.lower() if casefold else text), where
    chars = [_fold_char(ch, casefold) for ch in text]
    index = list(itertools.chain.from_iterable(map(itertools.repeat, where, map(len, chars))))
    return "".join(chars), index


def _tokens(folded: str) -> list[tuple[str, int, int, bool]]:
    """(token, start, end, is a name) of a folded text."""
    return [(m[0], m.start(), m.end(), m.lastgroup == "word")
            for m in _TOKEN_RE.finditer(folded) if m.lastgroup != "skip"]


def _python_pieces(source: str) -> list[tuple[str, bool]]:
    """``source`` cut into (text, is code): string literals' contents are not code; comments are."""
    pieces, at = [], 0
    for m in _PY_PIECE_RE.finditer(source):
        if m["comment"] is not None:
            continue
        pieces += [(source[at:m.start()], True), (m["text3"] if m["q3"] else m["text1"], False), (" ", True)]
        at = m.end()
    pieces.append((source[at:], True))
    return pieces


def _text_like(decoded: str) -> bool:
    """Whether a decoding gave text rather than noise (a wrong offset or alphabet gives noise)."""
    shown = sum(c.isprintable() or c in "\n\t\r" for c in decoded)
    return len(decoded) >= 8 and shown >= 0.9 * len(decoded)


def _decode_bytes(data: bytes) -> str:
    """Bytes as text, also when they are zlib or gzip compressed (at most 1 MiB of it)."""
    if data[:1] == b"\x78" or data[:2] == b"\x1f\x8b":
        try:
            data = zlib.decompressobj(47).decompress(data, 1 << 20)  # 47: a zlib or a gzip header
        except zlib.error:
            pass
    return data.decode("utf-8", errors="replace")


def _base64_decodings(run: str) -> list[str]:
    """What a base64 run (standard or URL-safe alphabet, at any alignment) may encode."""
    run = re.sub(r"\s", "", run).rstrip("=").replace("-", "+").replace("_", "/")
    found = []
    for offset in range(4):
        part = run[offset:]
        part = part[: len(part) // 4 * 4]
        try:
            found.append(_decode_bytes(base64.b64decode(part, validate=True)))
        except (ValueError, binascii.Error):
            pass
    return found


def _hex_decodings(region: str) -> list[str]:
    digits = re.sub(r"0x|\\x|[^0-9a-fA-F]", "", region)
    return [_decode_bytes(bytes.fromhex(digits[o:][: (len(digits) - o) // 2 * 2])) for o in (0, 1)]


def _number_decodings(region: str) -> list[str]:
    """A list of numbers read as bytes (UTF-8) or as code points."""
    numbers = [int(n) for n in re.findall(r"\d+", region)]
    found = [_decode_bytes(bytes(numbers))] if max(numbers) < 256 else []
    return found + ["".join(chr(n) for n in numbers if n < 0x110000 and not 0xD800 <= n < 0xE000)]


def _base64_runs(text: str) -> list[tuple[int, int]]:
    """Runs of base64 characters 16 or more long; the lines of a wrapped encoding (each a multiple of 4 long,
    76 for MIME) are joined into one run."""
    runs, last = [], 0  # last: the length of the last line of the last run
    for m in _BASE64_RUN_RE.finditer(text):
        length = m.end() - m.start()
        if runs and last >= 16 and last % 4 == 0 and text[runs[-1][1]:m.start()].isspace():
            runs[-1] = (runs[-1][0], m.end())
        elif length >= 16:
            runs.append((m.start(), m.end()))
        else:
            continue
        last = length
    return runs


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line of ``text``, its line break included."""
    spans, at = [], 0
    for line in text.splitlines(keepends=True):
        spans.append((at, at + len(line)))
        at += len(line)
    return spans


def _despaced(text: str) -> tuple[str, list[int]]:
    """``text`` without its whitespace, and where each character was."""
    where = [i for i, ch in enumerate(text) if not ch.isspace()]
    return "".join(text[i] for i in where), where


def cap_bytes(text: str, max_bytes: int | None, total: int | None = None) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8, on a character boundary, ending with a note that says
    how long it was; ``total``: the length in bytes of what ``text`` was taken from, when that was longer."""
    data = text.encode("utf-8", errors="replace")
    if max_bytes is None or (len(data) <= max_bytes and total is None):
        return text
    note = f"\n... [cut: {max(total or 0, len(data))} bytes in all]"
    keep = max_bytes - len(note.encode())
    if keep <= 0:
        return data[:max_bytes].decode("utf-8", errors="ignore")
    return data[:keep].decode("utf-8", errors="ignore") + note


class _HiddenIndex:
    """The tokens of the hidden tests, and where each window of ``window`` tokens occurs in them."""

    MAX_PLACES = 64  # of one window: one that occurs more often is too common to tell anything apart

    def __init__(self, window: int):
        self.window = window
        self.places: dict[tuple[str, ...], list[int]] = {}
        self.code_names = [0]  # self.code_names[i]: names in code (not in string literals) among the first i tokens
        self.names = [0]  # self.names[i]: names among the first i tokens

    def add(self, pieces: list[tuple[str, bool]]) -> None:
        """Add one source, cut into (text, is code) pieces; no window spans two sources."""
        tokens = [(token, code, name) for text, code in pieces for token, _, _, name in _tokens(fold(text)[0])]
        offset = len(self.names) - 1
        for _, code, name in [*tokens, ("", False, False)]:  # and a gap after the source
            self.code_names.append(self.code_names[-1] + (code and name))
            self.names.append(self.names[-1] + name)
        for i in range(len(tokens) - self.window + 1):
            places = self.places.setdefault(tuple(t[0] for t in tokens[i:i + self.window]), [])
            if len(places) < self.MAX_PLACES:
                places.append(offset + i)

    def quotations(self, tokens: list[str]) -> list[tuple[int, int, int, int]]:
        """(first, end, names in code, names) of every stretch of ``tokens`` that occurs at one place of the hidden
        tests and is ``window`` tokens or longer, found by following each place window by window."""
        k, found = self.window, []
        alive: dict[int, int] = {}  # place in the hidden tests of the current window -> where its stretch began
        for i in range(len(tokens) - k + 2):
            places = self.places.get(tuple(tokens[i:i + k]), ()) if i <= len(tokens) - k else ()
            following = {p: alive.get(p - 1, i) for p in places}
            for p, start in alive.items():
                if p + 1 not in following:  # the stretch ends with window i - 1, at place p
                    first, end = p - (i - 1 - start), p + k
                    found.append((start, i - 1 + k, self.code_names[end] - self.code_names[first],
                                  self.names[end] - self.names[first]))
            alive = following
        return found


class Redactor:
    """Removes from a text every line that quotes a hidden test, however disguised, and caps its length.

    >>> Redactor(["x0 = x.clone()\\nsoftmax(x)\\ncheck(torch.equal(x, x0), 'must not modify x')"]).redact(
    ...     "ValueError: see\\nCHECK(torch.equal(x, x0), ...)", max_bytes=200)
    'ValueError: see\\n[a line quoting a hidden test was removed]'

    A quotation is a stretch of ``window`` tokens or more that occurs, in the same order, at one place of a hidden
    test, after both are folded: escapes decoded (so the JSON of a notebook file or a repr reads like the source),
    Unicode compatibility forms (fullwidth, NBSP), case, zero-width and format characters, combining marks;
    quotes separate tokens. It must hold ``min_names`` names, ``min_code_names`` of them in the test's code, not
    in its string literals: a hidden test's own messages are its string literals (meant to be seen), and honest
    messages echo short calls and arguments ("softmax(x, dim=1)", "n_head=2, n_embd=32"). Any longer copy of test
    code has them: a dump of a cell is one stretch. Once a text holds a quotation, the lines of it that are mostly
    shorter runs of a hidden test (LOOSE_WINDOW tokens) go too: a dump with line numbers, or a notebook file's
    JSON, cuts the source into lines. Also found: the nbgrader markers; the source in base64 (wrapped or not,
    URL-safe, zlib-compressed, base64 of base64), in hex, as a list of byte or code point numbers, escaped
    (\\x63, %63, &#99;), reversed, in ROT13, and with its letters spaced out.

    What it cannot see: a text the student's code recoded some other way (junk between every few tokens, a
    cipher, homoglyphs). The hidden tests decide no points (the outside checks do); this keeps them private.
    """

    def __init__(self, hidden_sources: Iterable[str], window: int = LEAK_WINDOW, min_names: int = MIN_LEAK_NAMES,
                 min_code_names: int = MIN_LEAK_CODE_NAMES):
        self.window, self.min_names, self.min_code_names = window, min_names, min_code_names
        self.index = _HiddenIndex(window)  # the hidden tests' tokens
        self.spaceless = _HiddenIndex(window)  # the same, of the tests with every space removed
        self.loose = _HiddenIndex(LOOSE_WINDOW)  # shorter runs, looked for once a text is known to quote
        self._done: dict[tuple[str, int | None], str] = {}  # redact()'s recent answers (a message recurs)
        for source in [*(str(s) for s in hidden_sources), f"{BEGIN_HIDDEN}\n{END_HIDDEN}"]:
            pieces = _python_pieces(f"{BEGIN_HIDDEN}\n{source}\n{END_HIDDEN}")  # the markers belong to a dump
            self.index.add(pieces)
            self.loose.add(pieces)
            self.spaceless.add([(re.sub(r"\s+", "", text), code) for text, code in pieces])

    # -- finding quotations ---------------------------------------------------------------------------------------
    def _stretches(self, folded: str, index: _HiddenIndex) -> tuple[list, list]:
        tokens = _tokens(folded)
        return tokens, index.quotations([t[0] for t in tokens])

    def _direct(self, text: str, view: tuple[str, Sequence[int]] | None = None,
                index: _HiddenIndex | None = None) -> list[tuple[int, int]]:
        """Spans (character offsets) of ``text`` that quote a hidden test token by token, from their first name
        to their last (a bracket at the end of the line before is not part of it). ``view``: a folded form of
        ``text`` (maybe reversed) and where each of its characters came from; ``fold(text)`` by default."""
        folded, where = view or fold(text)
        tokens, stretches = self._stretches(folded, index or self.index)
        spans = []
        for start, end, code_names, names in stretches:
            if code_names >= self.min_code_names and names >= self.min_names:
                named = [t for t in tokens[start:end] if t[3]]
                ends = where[named[0][1]], where[named[-1][2] - 1]
                spans.append((min(ends), max(ends) + 1))
        return spans

    def _loose_lines(self, text: str, view: tuple[str, Sequence[int]]) -> list[tuple[int, int]]:
        """The lines of ``text`` at least half of whose tokens are runs of LOOSE_WINDOW or more (with a name)
        found in a hidden test: in a text that quotes one, the short lines of a dump that decorations (line
        numbers, a JSON file's quotes and commas) cut off from the rest."""
        folded, where = view
        tokens, stretches = self._stretches(folded, self.loose)
        covered = [False] * len(tokens)
        for start, end, _, names in stretches:
            if names:
                covered[start:end] = [True] * (end - start)
        lines = _lines(text)
        starts = [start for start, _ in lines]
        count, hits = [0] * len(lines), [0] * len(lines)
        for token, hit in zip(tokens, covered):
            line = bisect.bisect_right(starts, where[token[1]]) - 1
            count[line] += 1
            hits[line] += hit
        return [lines[i] for i in range(len(lines)) if count[i] and 2 * hits[i] >= count[i]]

    def _encoded(self, text: str, depth: int) -> list[tuple[int, int]]:
        """Spans of ``text`` holding base64, hex or a list of numbers whose decoding quotes a hidden test."""
        folded, where = fold(text, casefold=False)
        candidates = [(m.start(), m.end(), _hex_decodings) for m in _HEX_REGION_RE.finditer(folded)]
        candidates += [(m.start(), m.end(), _number_decodings) for m in _NUMBER_LIST_RE.finditer(folded)]
        candidates += [(start, end, _base64_decodings) for start, end in _base64_runs(folded)]
        return [(where[start], where[end - 1] + 1) for start, end, decode in candidates
                if any(_text_like(d) and self._quotes(d, depth + 1) for d in decode(folded[start:end]))]

    def _quotes(self, text: str, depth: int) -> bool:
        """Whether ``text`` (decoded from something) quotes a hidden test, itself or encoded once more."""
        return bool(self._direct(text)) or (depth < 2 and bool(self._encoded(text, depth)))

    def leaks(self, text: str) -> list[tuple[int, int]]:
        """The spans of ``text`` (character offsets) that quote a hidden test, in any of the forms it knows."""
        folded, where = fold(text)
        views = [(folded, where), (codecs.encode(folded, "rot13"), where), (folded[::-1], where[::-1])]
        spans = [span for view in views for span in self._direct(text, view)] + self._encoded(text, 0)
        despaced, kept = _despaced(folded)  # letters spaced out: c h e c k ( x )
        spans += self._direct(text, (despaced, [where[i] for i in kept]), self.spaceless)
        spans += [(where[m.start()], where[m.end() - 1] + 1) for m in _MARKER_RE.finditer(folded)]  # the markers
        if spans:  # a quotation: look closer
            spans += [span for view in views for span in self._loose_lines(text, view)]
        return sorted(spans)

    # -- removing them ---------------------------------------------------------------------------------------------
    def redact(self, text, max_bytes: int | None = MAX_MESSAGE_BYTES) -> str:
        """``text`` (None reads as "") without its lines that quote a hidden test, each group of them replaced
        by one line that says so, then cut to ``max_bytes`` bytes of UTF-8 (None: no limit). Only the beginning
        of a huge text is read, as only that can be shown."""
        text = "" if text is None else str(text)
        if not text:
            return text
        if (text, max_bytes) in self._done:
            return self._done[text, max_bytes]
        redacted = self._redact(text, max_bytes)
        if len(text) <= SCAN_CHARS:
            if len(self._done) >= 4096:
                self._done.clear()
            self._done[text, max_bytes] = redacted
        return redacted

    def _redact(self, text: str, max_bytes: int | None) -> str:
        text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates (from JSON) -> "?"
        total = len(text.encode("utf-8"))
        scan = max(SCAN_CHARS, SCAN_FACTOR * max_bytes) if max_bytes is not None else len(text)
        cut = len(text) > scan
        text = text[:scan]
        spans = self.leaks(text)
        kept, removed = [], 0
        for start, end in _lines(text):
            line = text[start:end]
            if any(s < end and start < e for s, e in spans):
                removed += 1
                continue
            if removed:
                kept.append((REDACTED_LINE if removed == 1 else REDACTED_LINES.format(n=removed)) + "\n")
                removed = 0
            kept.append(line)
        if removed:
            kept.append(REDACTED_LINE if removed == 1 else REDACTED_LINES.format(n=removed))
        return cap_bytes("".join(kept), max_bytes, total if cut else None)


