"""export, feedback and report on a synthetic graded class: a course root holding the real 04a instructor
notebook and a synthetic chapter whose hidden test carries a canary string, with results written by ResultStore.

What matters most: feedback never shows hidden tests (the canary appears in no feedback file, even when a result
message tries to quote it), escapes student-controlled text, and loads nothing from the network."""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess

import nbformat
import pytest
from conftest import ROOT

from autograder import export, feedback, gradesheet, report
from autograder.results import STATUSES, AssemblyResult, CellResult, Result, ResultStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CANARY = "CANARY_7f3a_hidden_check"
HIDDEN_LINE = f'assert add(2, 3) == 5, "{CANARY}: add(2, 3)"'
CHAPTER, SYNTH = "04a_attention", "09_canary"
A04 = [("test_softmax", 1, False), ("test_softmax_hidden", 2, True), ("test_sdpa", 2, False),
       ("test_sdpa_hidden", 2, True), ("test_causal_mask", 1, False), ("test_causal_mask_hidden", 1, True)]


def synthetic_notebook() -> nbformat.NotebookNode:
    """A one-exercise instructor notebook; its hidden test holds the canary."""
    def meta(grade_id, **flags):
        return {"nbgrader": {"grade_id": grade_id, "locked": not flags.get("solution", False), "schema_version": 3,
                             "solution": False, "grade": False, "task": False, **flags}}

    cells = [
        nbformat.v4.new_markdown_cell("# 9. Canary\n\n### Exercise 9.1: add\n\nWrite $a + b$, where "
                                      "$\\frac{a}{1} < 2$ and [a link](https://example.org/x)."),
        nbformat.v4.new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                                  metadata=meta("add", solution=True)),
        nbformat.v4.new_code_cell("assert add(1, 1) == 2", metadata=meta("test_add", grade=True, points=1)),
        nbformat.v4.new_code_cell(f"# hidden\n### BEGIN HIDDEN TESTS\n{HIDDEN_LINE}\n### END HIDDEN TESTS",
                                  metadata=meta("test_add_hidden", grade=True, points=2)),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def cells_04a(failing: set[str], message: str = "") -> list[CellResult]:
    return [CellResult(g, 0 if g in failing else p, p, g not in failing, hidden, message if g in failing else "")
            for g, p, hidden in A04]


@pytest.fixture
def course(tmp_path):
    """A course root with two chapters and the results of four students."""
    shutil.copytree(ROOT / "solutions" / CHAPTER, tmp_path / "solutions" / CHAPTER)
    (tmp_path / "solutions" / SYNTH).mkdir(parents=True)
    nbformat.write(synthetic_notebook(), tmp_path / "solutions" / SYNTH / f"{SYNTH}.ipynb")
    store = ResultStore(tmp_path / "autograder" / "results")
    store.save(Result("alice", CHAPTER, "graded", 9, 9, cells=cells_04a(set())))
    store.save(Result("alice", SYNTH, "graded", 1, 3, cells=[
        CellResult("test_add", 1, 1, True, False),
        CellResult("test_add_hidden", 0, 2, False, True,
                   f"AssertionError: <script>alert('x')</script> & more \\(\\href{{javascript:alert(1)}}{{x}}\\)\n"
                   f"line quoting the test: {HIDDEN_LINE}"),
    ]))
    store.save(Result("bob", CHAPTER, "flagged", 7, 9, message="probe disagreed",
                      cells=cells_04a({"test_sdpa_hidden"}, "AssertionError: attention: max error 0.5 at [0, 1]"),
                      flags=["probe scaled_dot_product_attention: fail <b>"]))
    store.save_assembly(AssemblyResult("bob", "passed", 1.0, losses=[4.0, 2.5], loss_bound=3.0, sample="<the> cat",
                                       application_status="passed", application_task="qa", application_score=0.8125,
                                       application_message="qa: token F1 0.812", modern_status="failed",
                                       modern_val_loss=4.125, modern_bound=3.7430, modern_losses=[6.25, 4.5],
                                       modern_sample="<b>the cat</b>", modern_message="validation loss 4.125 <x>"))
    store.save_assembly(AssemblyResult("dave", "timeout", 0.0, "assembly did not finish within 900 s",
                                       application_status="timeout", modern_status="timeout"))
    store.save(Result("carol", CHAPTER, "timeout", 2, 9, message="cell test_sdpa_hidden ran out of time",
                      cells=cells_04a({"test_sdpa", "test_sdpa_hidden", "test_causal_mask",
                                       "test_causal_mask_hidden"}, "NotImplementedError: Exercise 4a.2")))
    store.save(Result("carol", SYNTH, "crashed", 0, 3, message="the kernel died"))
    store.save(Result("dave", CHAPTER, "invalid", 0, 9, message="not a notebook"))
    return tmp_path


def run_command(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


# ---------------------------------------------------------------------------------------------------------------
# the shared table


def test_outline_maps_tests_to_exercises(course):
    outline = gradesheet.read_outline(course, CHAPTER)
    assert [c.grade_id for c in outline.cells] == [g for g, _, _ in A04]
    assert outline.max_score == 9
    assert outline.cell("test_sdpa_hidden").exercise == "scaled_dot_product_attention"
    assert outline.cell("test_sdpa_hidden").hidden and not outline.cell("test_sdpa").hidden
    exercise = outline.exercises["scaled_dot_product_attention"]
    assert exercise.number == "4a.2" and exercise.heading.startswith("### Exercise 4a.2")
    assert "$-\\infty$" in exercise.heading  # the statement under the heading, math included
    assert HIDDEN_LINE in gradesheet.read_outline(course, SYNTH).hidden_lines


def test_gradesheet_reports_corrupt_results_instead_of_failing(course):
    (course / "autograder" / "results" / "erin").mkdir()
    (course / "autograder" / "results" / "erin" / f"{CHAPTER}.json").write_text("{not json")
    sheet = gradesheet.load_gradesheet(course)
    assert sheet.chapters == [CHAPTER, SYNTH]
    assert sheet.students == ["alice", "bob", "carol", "dave"]
    assert any("erin" in p for p in sheet.problems)
    assert sheet.result("bob", SYNTH).status == "missing" and sheet.result("bob", SYNTH).max_score == 3
    assert sheet.result("bob", SYNTH).message == STATUSES["missing"]


def test_gradesheet_includes_students_who_submitted_but_have_no_result(course):
    notebook = course / "autograder" / "submitted" / "zed" / SYNTH / f"{SYNTH}.ipynb"
    notebook.parent.mkdir(parents=True)
    notebook.write_text("{}")
    sheet = gradesheet.load_gradesheet(course)
    assert "zed" in sheet.students
    assert sheet.result("zed", SYNTH).status == "missing" and "not graded yet" in sheet.result("zed", SYNTH).message
    assert sheet.result("zed", CHAPTER).message == STATUSES["missing"]


# ---------------------------------------------------------------------------------------------------------------
# export


def test_export_csv(course, capsys):
    out = course / "grades.csv"
    assert run_command(export, ["export", "-o", str(out), "--root", str(course)]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["student", CHAPTER, f"{CHAPTER}_status", f"{CHAPTER}_notebook", SYNTH, f"{SYNTH}_status",
                       f"{SYNTH}_notebook", "total", "max_total", "assembly", "assembly_status", "application_f1",
                       "application_status", "modern_val_loss", "modern_status"]
    table = {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}
    assert list(table) == ["alice", "bob", "carol", "dave"]
    assert table["alice"] | {} == {"student": "alice", CHAPTER: "9", f"{CHAPTER}_status": "graded",
                                   f"{CHAPTER}_notebook": "", SYNTH: "1", f"{SYNTH}_status": "graded",
                                   f"{SYNTH}_notebook": "", "total": "10", "max_total": "12", "assembly": "",
                                   "assembly_status": "", "application_f1": "", "application_status": "",
                                   "modern_val_loss": "", "modern_status": ""}
    assert (table["bob"][SYNTH], table["bob"][f"{SYNTH}_status"]) == ("0", "missing")
    assert (table["bob"]["assembly"], table["bob"]["assembly_status"]) == ("1", "passed")
    assert (table["bob"]["application_f1"], table["bob"]["application_status"]) == ("0.8125", "passed")
    assert (table["bob"]["modern_val_loss"], table["bob"]["modern_status"]) == ("4.125", "failed")
    # dave's assembly ran out of time: statuses and no numbers, never a 0 that reads as a perfect loss
    assert (table["dave"]["assembly"], table["dave"]["assembly_status"]) == ("0", "timeout")
    assert (table["dave"]["application_f1"], table["dave"]["application_status"]) == ("", "timeout")
    assert (table["dave"]["modern_val_loss"], table["dave"]["modern_status"]) == ("", "timeout")
    assert table["bob"][f"{CHAPTER}_status"] == "flagged" and table["bob"]["total"] == "7"
    assert table["carol"][f"{SYNTH}_status"] == "crashed" and table["dave"]["max_total"] == "12"


def test_export_default_location_and_stdout(course, capsys):
    assert run_command(export, ["export", "--root", str(course)]) == 0
    assert (course / "autograder" / "reports" / "grades.csv").is_file()
    capsys.readouterr()
    assert run_command(export, ["export", "-o", "-", "--root", str(course)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("student,04a_attention,04a_attention_status")


# ---------------------------------------------------------------------------------------------------------------
# feedback


@pytest.fixture
def feedback_dir(course, capsys):
    assert run_command(feedback, ["feedback", "--root", str(course)]) == 0
    return course / "autograder" / "feedback"


def test_feedback_never_shows_hidden_tests(feedback_dir):
    files = [p for p in feedback_dir.rglob("*") if p.is_file() and "_static" not in p.parts]
    assert {p.relative_to(feedback_dir).as_posix() for p in files} == {
        f"{s}/{name}" for s in ("alice", "bob", "carol", "dave") for name in ("index.html", "feedback.txt")}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert CANARY not in text, path
        assert "BEGIN HIDDEN TESTS" not in text and "return a + b" not in text, path  # no test or solution source
    alice = (feedback_dir / "alice" / "index.html").read_text(encoding="utf-8")
    assert "a line quoting a hidden test was removed" in alice


def test_feedback_escapes_student_text(feedback_dir):
    alice = (feedback_dir / "alice" / "index.html").read_text(encoding="utf-8")
    assert "<script>alert" not in alice
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in alice
    bob = (feedback_dir / "bob" / "index.html").read_text(encoding="utf-8")
    assert "&lt;the&gt; cat" in bob and "<the>" not in bob


def test_feedback_is_offline_with_local_mathjax(feedback_dir):
    mathjax = feedback_dir / "_static" / "mathjax" / "tex-chtml.js"
    assert mathjax.is_file()
    for student in ("alice", "bob", "carol", "dave"):
        page = (feedback_dir / student / "index.html").read_text(encoding="utf-8")
        assert "http://" not in page and "https://" not in page, student
        assert 'src="../_static/mathjax/tex-chtml.js"' in page
        assert (feedback_dir / student / "../_static/mathjax/tex-chtml.js").resolve() == mathjax.resolve()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_feedback_formulas_are_typeset_offline(feedback_dir, tmp_path):
    page = feedback_dir / "alice" / "index.html"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    exercises = "".join(re.findall(r'<div class="exercise tex2jax_process">.*?</div>', page.read_text("utf-8"),
                                   re.DOTALL))
    source = exercises.count("\\(") + exercises.count("\\[")
    typeset = proc.stdout.count("<mjx-container")
    assert source >= 4 and typeset == source, f"{typeset} of {source} formulas typeset"  # not the student's \\(
    assert "&lt;script&gt;alert" in proc.stdout  # student text stays text


def test_feedback_copies_mathjax_once(course, feedback_dir, monkeypatch, capsys):
    marker = feedback_dir / "_static" / "mathjax" / "marker"
    marker.write_text("still here")
    monkeypatch.setattr(feedback, "mathjax_source", lambda: pytest.fail("MathJax copied a second time"))
    assert run_command(feedback, ["feedback", "--root", str(course)]) == 0
    assert marker.read_text() == "still here"


def test_feedback_content(feedback_dir):
    alice = (feedback_dir / "alice" / "index.html").read_text(encoding="utf-8")
    # exercises with their headings (math for MathJax, links reduced to their text), each test under its own
    assert "<h3>Exercise 4a.2: scaled dot-product attention</h3>" in alice
    assert alice.index("Exercise 4a.1") < alice.index("test_softmax_hidden") < alice.index("Exercise 4a.2") \
        < alice.index("<code>test_sdpa</code>") < alice.index("Exercise 4a.3")
    assert r"\(-\infty\)" in alice and r"\(\frac{a}{1} &lt; 2\)" in alice and "a link" in alice
    assert 'class="exercise tex2jax_process"' in alice and 'body class="tex2jax_ignore"' in alice
    assert "9 / 9 points" in alice and "total" in alice
    bob = (feedback_dir / "bob" / "index.html").read_text(encoding="utf-8")
    assert STATUSES["flagged"].replace("'", "&#x27;") in bob
    assert "AssertionError: attention: max error 0.5 at [0, 1]" in bob
    assert f"Status: <strong>missing</strong> ({STATUSES['missing']})" in bob
    assert "Assembly" in bob and "Training loss: first 4, last 2.5" in bob
    assert "Application" in bob and "token F1 0.8125" in bob
    assert "your ModernGPT (chapter 4e)" in bob and "validation loss 4.125 &lt;x&gt;" in bob
    assert "Training loss: first 6.25, last 4.5" in bob and "&lt;b&gt;the cat&lt;/b&gt;" in bob
    assert "probe scaled_dot_product_attention" not in bob  # flags are for the instructor
    carol = (feedback_dir / "carol" / "feedback.txt").read_text(encoding="utf-8")
    assert f"{CHAPTER}: 2/9 (timeout)" in carol and f"{SYNTH}: 0/3 (crashed)" in carol
    assert "failed test_sdpa (Exercise 4a.2, visible, 2 points): NotImplementedError: Exercise 4a.2" in carol
    assert "Total: 2/12" in carol


def test_feedback_one_student_and_errors(course, capsys):
    assert run_command(feedback, ["feedback", "--student", "bob", "--root", str(course)]) == 0
    written = sorted(p.name for p in (course / "autograder" / "feedback").iterdir())
    assert written == ["_static", "bob"]
    with pytest.raises(feedback.CommandError, match="no results for student 'zoe'"):
        run_command(feedback, ["feedback", "--student", "zoe", "--root", str(course)])
    with pytest.raises(feedback.CommandError, match="not a usable student id"):
        run_command(feedback, ["feedback", "--student", "../bob", "--root", str(course)])


def test_markdown_html_keeps_math_and_drops_raw_html():
    rendered = feedback.markdown_html("A $x_1 < y$ and `$not math$` <b>bold</b>\n\n$$\n\\sum_i x_i\n$$")
    assert r"\(x_1 &lt; y\)" in rendered and "<code>$not math$</code>" in rendered
    assert "&lt;b&gt;" in rendered and r"\[" in rendered and r"\sum_i x_i" in rendered


# ---------------------------------------------------------------------------------------------------------------
# report


def test_report(course, capsys):
    out = course / "report"
    assert run_command(report, ["report", "-o", str(out), "--root", str(course)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    for png in ("statuses.png", f"scores_{CHAPTER}.png", f"scores_{SYNTH}.png", f"failures_{CHAPTER}.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f'src="{png}"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "probe scaled_dot_product_attention: fail &lt;b&gt;" in page  # the flagged table, escaped
    assert "<td>bob</td><td>04a_attention</td>" in page
    modern = page[page.index("Modern (chapter 4e"):]
    assert "<td>timeout</td><td>1</td>" in modern and "<td>failed</td><td>1</td>" in modern


def test_report_numbers(course):
    sheet = gradesheet.load_gradesheet(course)
    failures = report.failure_counts(sheet, CHAPTER)
    assert failures[0] == ("test_sdpa_hidden", 2, 3)  # bob and carol fail it; three results have cells
    assert dict((g, f) for g, f, _ in failures)["test_softmax"] == 0
    counts = report.status_counts(sheet, SYNTH)
    assert (counts["graded"], counts["crashed"], counts["missing"]) == (1, 1, 2)
    assert [(s, c) for s, c, _, _ in report.flagged(sheet)] == [("bob", CHAPTER)]


def test_report_default_folder_empty_class(tmp_path, capsys):
    shutil.copytree(ROOT / "solutions" / CHAPTER, tmp_path / "solutions" / CHAPTER)
    assert run_command(report, ["report", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "autograder" / "reports" / "report.html").is_file()


# ---------------------------------------------------------------------------------------------------------------
# the commands are registered with python -m autograder


@pytest.mark.parametrize("command", ["collect", "export", "feedback", "report", "check"])
def test_commands_have_help(command, capsys):
    from autograder.__main__ import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "--root" in capsys.readouterr().out
