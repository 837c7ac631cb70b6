"""Hidden tests never reach feedback, the report or the grades CSV, whatever a student's code puts in a message.

A student's code can raise an error whose message is the source of the hidden test cells: read from IPython's
input history (``In``, ``_ih``, ``get_ipython().history_manager``) or from the notebook file, and disguised
(zero-width spaces, non-breaking spaces, upper case, base64, hex, ...). Here a synthetic course (the real 4a
instructor notebook and a tiny one of our own) gets, for each such trick, a student whose every student-controlled
field holds it: the messages of a hidden and of a visible cell, what the notebook's own tests said, the result's
message, the flags, the assembly's message and sample. No run of the hidden tests' tokens may appear in any file
the commands write (read back with the trick undone), beyond what an honest student's pages show anyway.

And the redaction must leave honest feedback alone: the real messages of the course's checks on wrong answers
pass unchanged.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import html
import json
import re
import shutil
import time
import unicodedata
import zlib

import nbformat
import pytest
import torch
from conftest import ROOT

from autograder import export, feedback, gradesheet, notebook_model, redaction, report
from autograder.redaction import MAX_MESSAGE_BYTES, REDACTED_LINE, Redactor
from autograder.results import AssemblyResult, CellResult, Result, ResultStore
from llmcourse import checks, registry

CHAPTER, SYNTH = "04a_attention", "09_leaky"
WINDOW = redaction.LEAK_WINDOW
HIDDEN_9 = '''# Hidden tests for Exercise 9.1 run when your notebook is graded.
### BEGIN HIDDEN TESTS
gen = torch.Generator().manual_seed(7)
for lo, hi in [(-1.0, 1.0), (0.0, 0.5), (-3.0, -2.0)]:
    x = torch.randn(4, 5, generator=gen) * 4
    check_close(clip(x, lo, hi), x.clamp(lo, hi), name=f"clip(x, {lo}, {hi})")
# the input is left as it was
x0 = x.clone()
clip(x, -1.0, 1.0)
check(torch.equal(x, x0), "clip must not modify its input")
secret_case = clip(torch.tensor([float("nan"), 2.5]), 0.0, 1.0)
check(torch.isnan(secret_case[0]) and secret_case[1] == 1.0, "clip should keep NaN as NaN")
### END HIDDEN TESTS'''
HONEST_9 = ("AssertionError: clip(x, -1.0, 1.0): values differ: max abs error 0.5 at index (1, 2): got 1.5, "
            "expected 1.0 (3 of 20 elements outside atol=1e-05, rtol=1e-05)")


def synthetic_notebook() -> nbformat.NotebookNode:
    def meta(grade_id, **flags):
        return {"nbgrader": {"grade_id": grade_id, "locked": not flags.get("solution", False), "schema_version": 3,
                             "solution": False, "grade": False, "task": False, **flags}}

    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 9. Leaky\n\n### Exercise 9.1: clip\n\nClip $x$ to $[lo, hi]$."),
        nbformat.v4.new_code_cell("import torch\nfrom llmcourse.checks import check, check_close"),
        nbformat.v4.new_code_cell("def clip(x, lo, hi):\n    ### BEGIN SOLUTION\n    return x.clamp(lo, hi)\n"
                                  "    ### END SOLUTION", metadata=meta("clip", solution=True)),
        nbformat.v4.new_code_cell('check_close(clip(torch.tensor([2.0]), 0.0, 1.0), torch.tensor([1.0]), '
                                  'name="clip([2], 0, 1)")', metadata=meta("test_clip", grade=True, points=1)),
        nbformat.v4.new_code_cell(HIDDEN_9, metadata=meta("test_clip_hidden", grade=True, points=2)),
    ])


# ---------------------------------------------------------------------------------------------------------------
# the tricks: (what the student's code raises, given the notebook's cells) and how to read the trick back


def _code_cells(notebook_text: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(notebook_text)["cells"] if c["cell_type"] == "code"]


def _around_hidden(notebook_text: str) -> tuple[list[str], str]:
    """The first hidden cell and the code cell after it (what In[-2:] holds when that one runs), and the first."""
    cells = _code_cells(notebook_text)
    i = next(i for i, c in enumerate(cells) if notebook_model.BEGIN_HIDDEN in c)
    return cells[i: i + 2], cells[i]


def _from_hidden(text: str) -> str:
    """``text`` from a little before its first hidden-test marker (so that a 1000-character cut keeps it)."""
    return text[max(0, text.find("BEGIN HIDDEN") - 120):]


def _spaced(text: str) -> str:
    return " ".join(text)


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


TRICKS = {
    # name: (the message, from (the notebook's text, its cells, the hidden cell); how to undo it on any text)
    "verbatim": (lambda nb, cells, h: f"AssertionError: {h}", None),
    "In": (lambda nb, cells, h: f"NameError: {cells!r}", None),
    "_ih_joined": (lambda nb, cells, h: "ValueError: " + "\n".join(cells), None),
    "history_manager": (lambda nb, cells, h: "RuntimeError: " + repr([(0, n, c) for n, c in enumerate(cells)]),
                        None),
    "numbered_lines": (lambda nb, cells, h: "E: " + "\n".join(f"{n:4d}| {line}" for n, line in
                                                          enumerate(h.splitlines(), 1)), None),
    "notebook_file": (lambda nb, cells, h: "OSError: " + _from_hidden(nb)[:12000], None),
    "notebook_json_one_line": (lambda nb, cells, h: "OSError: " + _from_hidden(json.dumps(json.loads(nb)))[:12000],
                               None),
    "zero_width": (lambda nb, cells, h: "AssertionError: " + "\u200b".join(h), None),
    "nbsp": (lambda nb, cells, h: "AssertionError: " + h.replace(" ", "\u00a0"), None),
    "upper": (lambda nb, cells, h: "AssertionError: " + h.upper(), None),
    "base64": (lambda nb, cells, h: "AssertionError: " + base64.b64encode(h.encode()).decode(), "base64"),
    "base64_wrapped": (lambda nb, cells, h: "E: " + base64.encodebytes(h.encode()).decode(), "base64"),
    "zlib_base64": (lambda nb, cells, h: "E: " + base64.b64encode(zlib.compress(h.encode())).decode(), "zlib"),
    "hex": (lambda nb, cells, h: "AssertionError: " + h.encode().hex(), "hex"),
    "hex_escapes": (lambda nb, cells, h: "E: " + "".join(f"\\x{b:02x}" for b in h.encode()), "hex"),
    "code_points": (lambda nb, cells, h: "E: " + str([ord(c) for c in h]), "numbers"),
    "html_escaped": (lambda nb, cells, h: "E: " + html.escape(h), None),
    "fullwidth": (lambda nb, cells, h: "E: " + _fullwidth(h), None),
    "rot13": (lambda nb, cells, h: "E: " + codecs.encode(h, "rot13"), "rot13"),
    "reversed": (lambda nb, cells, h: "E: " + h[::-1], "reversed"),
    "letters_spaced_out": (lambda nb, cells, h: "E: " + _spaced(h), "spaced"),
}


def _decoded_runs(text: str, pattern: str, decode) -> str:
    found = []
    for run in re.findall(pattern, text):
        try:
            found.append(decode(run))
        except (ValueError, zlib.error):
            pass
    return "\n".join(found)


def _b64(run: str) -> bytes:
    run = re.sub(r"\s", "", run)
    return base64.b64decode(run[: len(run) // 4 * 4])


UNDO = {
    None: lambda text: text,
    "base64": lambda text: _decoded_runs(text, r"[A-Za-z0-9+/=\s]{16,}", lambda r: _b64(r).decode("utf-8", "replace")),
    "zlib": lambda text: _decoded_runs(text, r"[A-Za-z0-9+/=]{16,}",
                                       lambda r: zlib.decompressobj().decompress(_b64(r)).decode("utf-8", "replace")),
    "hex": lambda text: _decoded_runs(re.sub(r"\\x", "", text), r"[0-9a-f]{16,}",
                                      lambda r: bytes.fromhex(r[: len(r) // 2 * 2]).decode("utf-8", "replace")),
    "numbers": lambda text: _decoded_runs(text, r"(?:\d+, )+\d+",
                                          lambda r: "".join(chr(int(n)) for n in r.split(", "))),
    "rot13": lambda text: codecs.encode(text, "rot13"),
    "reversed": lambda text: text[::-1],
    "spaced": lambda text: re.sub(r"(?<=\S) (?=\S)|(?<= ) (?= )", "", text),
}


# ---------------------------------------------------------------------------------------------------------------
# runs of hidden-test tokens, found independently of the redactor's own folding


def tokens_of(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", html.unescape(text))
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C" or c in "\n\t").casefold()
    text = text.replace("\\n", " ").replace('\\"', '"').replace("\\\\", "\\")
    return re.findall(r"[^\W\d]\w*|\d+(?:\.\d+)?|[^\w\s\"'\\]", text)


def windows(text: str) -> set[tuple[str, ...]]:
    """Every run of WINDOW tokens of ``text`` that holds two names or more (so not "( 2 , 3 , 4")."""
    tokens = tokens_of(text)
    runs = (tuple(tokens[i:i + WINDOW]) for i in range(len(tokens) - WINDOW + 1))
    return {run for run in runs if sum(t[0].isalpha() or t[0] == "_" for t in run) >= 2}


def hidden_windows(*notebook_texts: str) -> set[tuple[str, ...]]:
    """The runs of the hidden tests that the released notebook does not show anyway (its narrative and visible
    tests hold "(T, T):" too)."""
    hidden, public = set(), set()
    for nb in notebook_texts:
        for cell in json.loads(nb)["cells"]:
            source = "".join(cell["source"])
            spans = notebook_model.hidden_spans(source)
            for span in spans:
                hidden |= windows(span)
                source = source.replace(span, "\n")
            public |= windows(source)
    return hidden - public


def run_command(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


# ---------------------------------------------------------------------------------------------------------------
# the course


def _results(student: str, message_for) -> list[Result]:
    """The student's results for both chapters, every student-controlled field set by ``message_for(chapter)``."""
    results = []
    for chapter, cells in ((SYNTH, [("test_clip", 1, False), ("test_clip_hidden", 2, True)]),
                           (CHAPTER, [("test_softmax", 1, False), ("test_softmax_hidden", 2, True)])):
        message = message_for(chapter)
        results.append(Result(
            student, chapter, "flagged", 0, 3, message=message,
            cells=[CellResult(g, 0, p, False, hidden, message if hidden else message[:1000], kernel_passed=False,
                              kernel_message=f"(the kernel said) {message}") for g, p, hidden in cells],
            flags=[f"{cells[1][0]}: the notebook's own test failed ({message}), but the outside check passed"]))
    return results


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course root with the real 4a notebook, a synthetic chapter, an honest student and one per trick; the
    feedback, report and CSV written."""
    root = tmp_path_factory.mktemp("leaky_course")
    shutil.copytree(ROOT / "solutions" / CHAPTER, root / "solutions" / CHAPTER)
    (root / "solutions" / SYNTH).mkdir(parents=True)
    nbformat.write(synthetic_notebook(), root / "solutions" / SYNTH / f"{SYNTH}.ipynb")
    notebooks = {c: registry.notebook_path(root / "solutions", c).read_text(encoding="utf-8") for c in (CHAPTER, SYNTH)}
    store = ResultStore(root / "autograder" / "results")
    for result in _results("honest", lambda chapter: HONEST_9 if chapter == SYNTH else
                           "AssertionError: softmax of logits around ±1e4: 6 element(s) are nan where a finite value"
                           " is expected; the first at index (0, 0) (expected 0.0900306)."):
        store.save(result)
    store.save_assembly(AssemblyResult("honest", "failed", 0.0, message="the loss did not fall", sample="the cat"))
    for name, (make, _) in TRICKS.items():
        messages = {c: make(nb, *_around_hidden(nb)) for c, nb in notebooks.items()}
        for result in _results(f"s_{name}", messages.get):
            store.save(result)
        store.save_assembly(AssemblyResult(f"s_{name}", "failed", 0.0, message=messages[SYNTH],
                                           sample=messages[CHAPTER]))
    started = time.perf_counter()
    assert run_command(feedback, ["feedback", "--root", str(root)]) == 0
    assert run_command(report, ["report", "-o", str(root / "report"), "--root", str(root)]) == 0
    assert run_command(export, ["export", "-o", str(root / "grades.csv"), "--root", str(root)]) == 0
    return {"root": root, "hidden": hidden_windows(*notebooks.values()), "seconds": time.perf_counter() - started}


def outputs(root, student: str) -> dict[str, str]:
    folder = root / "autograder" / "feedback" / student
    return {"index.html": (folder / "index.html").read_text(encoding="utf-8"),
            "feedback.txt": (folder / "feedback.txt").read_text(encoding="utf-8"),
            "report.html": (root / "report" / "report.html").read_text(encoding="utf-8"),
            "grades.csv": (root / "grades.csv").read_text(encoding="utf-8")}


@pytest.mark.parametrize("trick", list(TRICKS))
def test_no_hidden_test_in_any_output(course, trick):
    undo = UNDO[TRICKS[trick][1]]
    honest = outputs(course["root"], "honest")  # what is shown anyway (the exercise's statement)
    shown_anyway = windows(undo(html.unescape(honest["index.html"]))) | windows(undo(honest["feedback.txt"]))
    for name, text in outputs(course["root"], f"s_{trick}").items():
        shown = undo(text if name == "grades.csv" else html.unescape(text))
        leaked = (windows(shown) & course["hidden"]) - shown_anyway
        assert not leaked, f"{name} shows hidden-test text: {[' '.join(w) for w in sorted(leaked)[:5]]}"
    page = outputs(course["root"], f"s_{trick}")["index.html"]
    assert "quoting a hidden test" in page  # removed, and said so


def test_the_tricks_do_leak_without_redaction(course):
    """The check above is not vacuous: each trick's message, read back, holds the hidden tests."""
    notebooks = [registry.notebook_path(course["root"] / "solutions", c).read_text(encoding="utf-8")
                 for c in (CHAPTER, SYNTH)]
    for name, (make, undo) in TRICKS.items():
        for nb in notebooks:
            message = make(nb, *_around_hidden(nb))
            assert len(windows(UNDO[undo](message)) & course["hidden"]) > 10, name
            assert len(windows(UNDO[undo](message[:1000])) & course["hidden"]) > 3, name  # a visible cell's cut


def test_honest_feedback_is_kept(course):
    page = html.unescape(outputs(course["root"], "honest")["index.html"])
    assert HONEST_9 in page and "softmax of logits around ±1e4: 6 element(s) are nan" in page
    assert "quoting a hidden test" not in page
    assert f"own run of this test said:</p><pre>(the kernel said) {HONEST_9}" in page
    assert course["seconds"] < 120, f"feedback, report and export took {course['seconds']:.0f} s"


def test_report_and_csv_redact_flags(course):
    page = outputs(course["root"], "honest")["report.html"]
    assert "s_verbatim" in page and REDACTED_LINE in html.unescape(page)
    assert "the notebook&#x27;s own test failed" in page  # the grader's words around the removed quotation stay


# ---------------------------------------------------------------------------------------------------------------
# the redactor on its own


@pytest.fixture(scope="module")
def synthetic_redactor():
    return Redactor(notebook_model.hidden_spans(HIDDEN_9))


@pytest.mark.parametrize("trick", list(TRICKS))
def test_each_trick_alone(synthetic_redactor, trick):
    make, undo = TRICKS[trick]
    nb = nbformat.writes(synthetic_notebook())
    message = make(nb, *_around_hidden(nb))
    hidden = hidden_windows(nb)
    for cut in (None, 1000):
        redacted = synthetic_redactor.redact(message[:cut], MAX_MESSAGE_BYTES)
        leaked = windows(UNDO[undo](redacted)) & hidden
        assert not leaked, f"cut at {cut}: {[' '.join(w) for w in sorted(leaked)[:5]]}"


def test_quotation_inside_honest_text_removes_only_its_lines(synthetic_redactor):
    message = ("AssertionError: clip(x, 0, 1): wrong\nfor reference:\n    x = torch.randn(4, 5, generator=gen) * 4\n"
               "(that is all)")
    assert synthetic_redactor.redact(message) == (
        f"AssertionError: clip(x, 0, 1): wrong\nfor reference:\n{REDACTED_LINE}\n(that is all)")


def test_hidden_markers_are_removed(synthetic_redactor):
    assert synthetic_redactor.redact("### BEGIN HIDDEN TESTS") == REDACTED_LINE


def test_caps_bytes_on_a_character_boundary(synthetic_redactor):
    for limit in (1, 7, 50, 101, 4000):
        capped = synthetic_redactor.redact("é€😀" * 3000, limit)  # 2, 3 and 4 bytes
        assert len(capped.encode("utf-8")) <= limit
        assert limit < 50 or (capped.startswith("é€😀") and capped.endswith("[cut: 27000 bytes in all]"))
    assert synthetic_redactor.redact("short", 100) == "short"
    assert synthetic_redactor.redact("é" * 100, 100).endswith("[cut: 200 bytes in all]")


def test_odd_text_never_crashes(synthetic_redactor):
    assert synthetic_redactor.redact(None) == ""
    assert synthetic_redactor.redact("lone \ud800 surrogate") == "lone ? surrogate"
    assert synthetic_redactor.redact("\x00\x1b[31m\u202e\ufeff ok", 100).endswith("ok")
    Redactor(["def f(:\n  x = '''unclosed", "%%timeit\n!ls 'it's"]).redact("anything")  # any cell source


def test_huge_messages_stay_small_and_fast(tmp_path):
    """A message of megabytes (with a quotation at its start and at its end) costs little time and space."""
    root = tmp_path
    (root / "solutions" / SYNTH).mkdir(parents=True)
    nbformat.write(synthetic_notebook(), root / "solutions" / SYNTH / f"{SYNTH}.ipynb")
    hidden_code = notebook_model.hidden_spans(HIDDEN_9)[0]
    huge = hidden_code + "\n" + "\u200bwhy not " * 200_000 + "\n" + hidden_code
    store = ResultStore(root / "autograder" / "results")
    store.save(Result("big", SYNTH, "flagged", 0, 3, message=huge,
                      cells=[CellResult(g, 0, p, False, h, huge, kernel_passed=False, kernel_message=huge)
                             for g, p, h in (("test_clip", 1, False), ("test_clip_hidden", 2, True))]))
    store.save_assembly(AssemblyResult("big", "failed", 0.0, message=huge, sample=huge))
    started = time.perf_counter()
    assert run_command(feedback, ["feedback", "--root", str(root)]) == 0
    assert time.perf_counter() - started < 60
    page = (root / "autograder" / "feedback" / "big" / "index.html").read_text(encoding="utf-8")
    text = (root / "autograder" / "feedback" / "big" / "feedback.txt").read_text(encoding="utf-8")
    assert len(page.encode()) < 80_000 and len(text.encode()) < 10_000
    assert "bytes in all]" in page and "manual_seed" not in page and "manual_seed" not in text


# ---------------------------------------------------------------------------------------------------------------
# no false positives: the course's real messages pass unchanged


@pytest.fixture(scope="module")
def course_redactor():
    """The redactor feedback uses for the real course: every chapter's hidden tests."""
    return Redactor([source for chapter in registry.chapters_in(ROOT / "solutions")
                     for source in gradesheet.read_outline(ROOT, chapter).hidden_sources])


def check_messages() -> list[str]:
    """Messages of llmcourse.checks on wrong answers, as a failed test cell reports them."""
    wrong = torch.tensor([[0.1, 0.2, 0.7], [0.3, 0.3, 0.5]])
    right = torch.softmax(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]), dim=-1)
    calls = [
        lambda: checks.check_close(wrong, right, name="softmax(x)"),
        lambda: checks.check_close(wrong, right, atol=1e-6, name="softmax(x[2, 3], dim=-1)"),
        lambda: checks.check_close(torch.tensor([float("nan"), 1.0]), torch.tensor([0.5, 0.5]),
                                   name="softmax of logits around ±1e4"),
        lambda: checks.check_close(wrong.double(), right, name="attention with a causal (T, T) mask"),
        lambda: checks.check_shape(torch.zeros(2, 3), (2, 3, 4), name="split_heads(x, 2)"),
        lambda: checks.check_dtype(torch.zeros(2), torch.bool, name="causal_mask(4)"),
        lambda: checks.check_tokens([1, 2, 3, 5, 6], [1, 2, 3, 7, 6], name="encode('hello world')"),
        lambda: checks.check_tokens([1, 2], [1, 2, 3], name="generate(idx, max_new_tokens=1)"),
        lambda: checks.check(False, "softmax must not modify its input in place"),
        lambda: checks.check_close("not a tensor", right, name="MLP vs HF GPT2MLP, n_embd=16"),
    ]
    found = []
    for call in calls:
        with pytest.raises(AssertionError) as err:
            call()
        found.append(f"{err.type.__name__}: {err.value}")
    with checks.builtins_unavailable("softmax"), pytest.raises(checks.BuiltinUnavailable) as err:
        torch.softmax(wrong, dim=-1)
    return found + [f"{err.type.__name__}: {err.value}"]


def notebook_messages(chapter: str) -> list[str]:
    """The messages of every failing graded cell, notebook's own (as nbgrader reports them) and outside checks'
    (the grader's diagnoses), on each of the chapter's WRONG_ANSWERS."""
    import importlib

    from notebook_harness import run_notebook
    from probe_harness import outside_verdicts

    module = importlib.import_module(f"test_{chapter}")
    found = []
    for cell, source, _ in module.WRONG_ANSWERS.values():
        for result in run_notebook(module.SOLUTION, replace={cell: source}, only_essential=True):
            if result.graded and not result.passed:
                found.append(f"{type(result.error).__name__}: {result.error}" if result.error else result.stderr)
        found += [detail for verdict, detail in outside_verdicts(module.SOLUTION, {cell: source}).values()
                  if verdict != "pass"]
    return found


def test_real_messages_pass_unchanged(course_redactor):
    messages = [m[:1000] for m in check_messages() + notebook_messages(CHAPTER) if m]
    assert len(messages) >= 40
    altered = [m for m in messages if course_redactor.redact(m) != m]
    assert not altered, f"{len(altered)} of {len(messages)} honest messages altered, e.g. {altered[:3]}"
