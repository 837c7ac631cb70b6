"""python -m autograder assemble: a student's own pieces, and only theirs, train and generate (or say why not)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_grading import sandbox_or_skip

from autograder.assemble import APPLICATION, APPLICATION_OPTIONAL, LOSS_FRACTION, judge, required_chapters
from autograder.results import ResultStore

pytestmark = pytest.mark.slow


def submit_reference(root: Path, student: str, chapters: list[str], edit: dict[str, tuple[str, str]] | None = None):
    """The instructor notebooks as one student's submission; ``edit`` replaces text in a chapter's notebook."""
    for chapter in chapters:
        text = (ROOT / "solutions" / chapter / f"{chapter}.ipynb").read_text()
        changes = (edit or {}).get(chapter, [])
        for old, new in [changes] if isinstance(changes, tuple) else changes:
            assert old in text, f"{chapter}: {old!r} not found"
            text = text.replace(old, new)
        path = root / "autograder" / "submitted" / student / chapter / f"{chapter}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def assembled(tmp_path_factory):
    sandbox_or_skip()
    root = tmp_path_factory.mktemp("assembly")
    needed = required_chapters(ROOT)
    application = [*APPLICATION_OPTIONAL, APPLICATION]
    for chapter in needed + application:
        shutil.copytree(ROOT / "solutions" / chapter, root / "solutions" / chapter)
    submit_reference(root, "works", needed + application)
    # chapter 6b's fine-tuning loop never steps: the model assembles, but the application stage learns nothing
    submit_reference(root, "app_never_steps", needed + application,
                     {APPLICATION: ('"        optimizer.step()\\n",', '"        pass\\n",')})
    # a training step that never updates the weights: every piece imports and runs, but nothing learns
    submit_reference(root, "never_steps", needed, {"05b_training": ('"    optimizer.step()\\n",', '"    pass\\n",')})
    # the same, and an estimate_loss that lies: the grader measures the loss itself, on the saved weights
    signature = 'model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 32,\\n",'
    fake_loss = (f'"def estimate_loss({signature}',
                 f'"def estimate_loss(*args, **kwargs):\\n", "    return 0.01\\n", "\\n", "def _honest({signature}')
    submit_reference(root, "forges_loss", needed,
                     {"05b_training": [('"    optimizer.step()\\n",', '"    pass\\n",'), fake_loss]})
    # an MLP that crashes: the error names the chapter
    submit_reference(root, "broken_mlp", needed, {"04c_feed_forward": ("def gelu(x", "def gelu(x, _broken")})
    submit_reference(root, "incomplete", [c for c in needed if c != "04c_feed_forward"])
    proc = subprocess.run([sys.executable, "-m", "autograder", "assemble", "--root", str(root)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ResultStore(root / "autograder" / "results").assemblies()


def test_the_reference_pieces_assemble_into_a_model_that_learns_and_writes(assembled):
    result = assembled["works"]
    assert (result["status"], result["score"]) == ("passed", 1.0), result["message"]
    assert result["losses"][-1] < result["losses"][0]
    assert result["sample"].startswith("the cat ") and len(result["sample"]) > len("the cat ") + 20


def test_the_reference_pieces_fine_tune_the_checkpoint(assembled):
    result = assembled["works"]
    assert result["application_status"] == "passed", result["application_message"]
    assert result["application_task"] == "qa" and 0.0 <= result["application_score"] <= 1.0
    assert "loss on held-out answers" in result["application_message"]


def test_a_fine_tuning_loop_that_never_steps_fails_the_application_only(assembled):
    result = assembled["app_never_steps"]
    assert (result["status"], result["score"]) == ("passed", 1.0), result["message"]
    assert result["application_status"] == "failed", result["application_message"]
    assert "to pass, at most" in result["application_message"]


def test_without_chapter_6b_there_is_no_application_stage(assembled):
    assert assembled["never_steps"]["application_status"] == ""


def test_a_model_that_does_not_learn_fails(assembled):
    result = assembled["never_steps"]
    assert (result["status"], result["score"]) == ("failed", 0.0)
    assert "did not learn enough" in result["message"]


def test_a_forged_loss_does_not_pass(assembled):
    result = assembled["forges_loss"]
    assert (result["status"], result["score"]) == ("failed", 0.0), result["message"]
    assert "did not learn enough" in result["message"]


def test_a_crashing_piece_fails_and_names_its_chapter(assembled):
    result = assembled["broken_mlp"]
    assert (result["status"], result["score"]) == ("failed", 0.0)
    assert "chapter" in result["message"] and "TypeError" in result["message"]


def test_a_missing_chapter_makes_the_assembly_incomplete(assembled):
    result = assembled["incomplete"]
    assert (result["status"], result["score"]) == ("incomplete", 0.0)
    assert "04c_feed_forward" in result["message"]


def test_judge_checks_every_field_of_the_untrusted_report():
    good = {"losses": [5.0, 2.0], "val_loss": 2.0, "vocab_size": 320, "generated_ids": [1, 2, 3], "sample": "ab"}
    assert judge("s", good, 1.0).status == "passed"
    bound = LOSS_FRACTION * 5.768320995
    assert judge("s", {**good, "val_loss": bound + 0.01}, 1.0).status == "failed"
    for bad in ({"val_loss": float("nan")}, {"val_loss": "1.0"}, {"generated_ids": [1, 999]},
                {"generated_ids": []}, {"generated_ids": ["1"]}, {"vocab_size": "320"}, {"error": "boom"}):
        assert judge("s", {**good, **bad}, 1.0).status == "failed", bad


def test_the_application_verdict_is_the_graders_measurement():
    from autograder.assemble import APPLICATION_LOSS_FRACTION, judge_application, trusted_application
    from autograder.results import AssemblyResult

    def verdict(child, measured):
        return judge_application(AssemblyResult("s", "passed", 1.0),
                                 {"application": trusted_application(child, measured)})

    # the child (the student's code) claims a perfect fine-tuning; the grader measured no learning
    child = {"application": {"losses": [], "error": None, "f1": 1.0, "loss": 0.0, "loss_before": 9.0,
                             "exact_match": 1.0}}
    flat = {"application": {"loss": 8.0, "loss_before": 9.0, "f1": 0.0, "exact_match": 0.0, "examples": []}}
    result = verdict(child, flat)
    assert (result.application_status, result.application_score) == ("failed", 0.0)
    learned = {"application": {"loss": 2.0, "loss_before": 9.0, "f1": 0.25, "exact_match": 0.1,
                               "examples": [{"target": "the cat", "answer": "a cat"}]}}
    result = verdict(child, learned)
    assert (result.application_status, result.application_score) == ("passed", 0.25)
    assert result.application_bound == round(APPLICATION_LOSS_FRACTION * 9.0, 4)
    assert "'the cat' -> 'a cat'" in result.application_message
    # the stage's own failure is the student's; a missing or broken measurement is the grader's
    result = verdict({"application": {"error": "chapter 6b: finetune: ValueError: boom"}}, learned)
    assert result.application_status == "failed" and "boom" in result.application_message
    assert verdict(child, {}).application_status == "error"
    nan = {"application": {**learned["application"], "loss": float("nan")}}
    assert verdict(child, nan).application_status == "failed"
    # no application stage at all: nothing to say
    assert judge_application(AssemblyResult("s", "passed", 1.0), {}).application_status == ""
