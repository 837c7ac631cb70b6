"""python -m autograder assemble: a student's own pieces, and only theirs, train and generate (or say why not)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_grading import sandbox_or_skip

from autograder.assemble import (
    APPLICATION,
    APPLICATION_OPTIONAL,
    LOSS_FRACTION,
    MODERN,
    MODERN_AGREEMENT,
    judge,
    judge_modern,
    required_chapters,
    trusted_stage,
)
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
    for chapter in needed + application + [MODERN]:
        shutil.copytree(ROOT / "solutions" / chapter, root / "solutions" / chapter)
    submit_reference(root, "works", needed + application + [MODERN])
    # chapter 4e's RoPE pairs neighbouring features (GPT-J's layout), not i with i + hs/2 (Llama's): the model
    # trains as well, but it is not Llama's function of its weights, and the grader measures it as Llama
    submit_reference(root, "rope_pairs_neighbours", needed + [MODERN], {MODERN: [
        ("angles = torch.cat([angles, angles], dim=-1)", "angles = angles.repeat_interleave(2, dim=-1)"),
        ("x1, x2 = x.chunk(2, dim=-1)", "x1, x2 = x[..., 0::2], x[..., 1::2]"),
        ("return torch.cat([-x2, x1], dim=-1)", "return torch.stack([-x2, x1], dim=-1).flatten(-2)")]})
    # chapter 6b's fine-tuning loop never steps: the model assembles, but the application stage learns nothing
    submit_reference(root, "app_never_steps", needed + application,
                     {APPLICATION: ('"        optimizer.step()\\n",', '"        pass\\n",')})
    # a training step that never updates the weights: every piece imports and runs, but nothing learns
    submit_reference(root, "never_steps", needed, {"05b_training": ('"    optimizer.step()\\n",', '"    pass\\n",')})
    # the same, and an estimate_loss that lies: the grader measures the loss itself, on the saved weights (of the
    # assembly and of chapter 4e's ModernGPT)
    signature = 'model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 32,\\n",'
    fake_loss = (f'"def estimate_loss({signature}',
                 f'"def estimate_loss(*args, **kwargs):\\n", "    return 0.01\\n", "\\n", "def _honest({signature}')
    submit_reference(root, "forges_loss", needed + [MODERN],
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


def test_the_reference_modern_gpt_trains_and_is_measured_as_hugging_face_llama(assembled):
    result = assembled["works"]
    assert result["modern_status"] == "passed", result["modern_message"]
    assert 0 < result["modern_val_loss"] <= result["modern_bound"] == round(LOSS_FRACTION * math.log(512), 4)
    assert result["modern_losses"][-1] < result["modern_losses"][0] and len(result["modern_losses"]) > 100
    assert "LlamaForCausalLM" in result["modern_message"] and "your own code measured" not in result["message"]
    assert result["modern_sample"].startswith("the cat ") and len(result["modern_sample"]) > 30


def test_a_modern_gpt_that_is_not_llamas_function_fails_though_it_learns(assembled):
    result = assembled["rope_pairs_neighbours"]
    assert (result["status"], result["score"]) == ("passed", 1.0), result["message"]  # chapters 3-5c are fine
    assert result["modern_status"] == "failed", result["modern_message"]
    assert result["modern_val_loss"] <= result["modern_bound"]  # it learned: only the disagreement fails it
    assert "does not compute what Llama computes" in result["modern_message"]
    # the instructor's guide quotes this case's two numbers: they are this run's (to 0.02, for other CPUs' rounding)
    guide = (ROOT / "book" / "instructor" / "guarantees.md").read_text(encoding="utf-8")
    quoted = re.search(r"GPT-J's pairing: ([0-9.]+) by the student's code, ([0-9.]+) as Llama", guide)
    claimed = float(re.search(r"your own code measured ([0-9.]+)", result["modern_message"]).group(1))
    assert quoted and abs(float(quoted.group(1)) - claimed) < 0.02, (quoted, claimed)
    assert abs(float(quoted.group(2)) - result["modern_val_loss"]) < 0.02, (quoted, result["modern_val_loss"])


def test_a_modern_gpt_that_does_not_learn_fails_whatever_the_student_reports(assembled):
    result = assembled["forges_loss"]
    assert result["modern_status"] == "failed", result["modern_message"]
    assert result["modern_val_loss"] > result["modern_bound"]
    assert "your own code measured 0.010" in result["modern_message"]


def test_without_chapter_4e_there_is_no_modern_stage(assembled):
    assert assembled["never_steps"]["modern_status"] == "" and assembled["incomplete"]["modern_status"] == ""


def test_a_missing_chapter_makes_the_assembly_incomplete(assembled):
    result = assembled["incomplete"]
    assert (result["status"], result["score"]) == ("incomplete", 0.0)
    assert "04c_feed_forward" in result["message"]


def test_an_assembly_out_of_time_says_so_for_every_stage_it_had(tmp_path):
    sandbox_or_skip()
    chapters = required_chapters(ROOT) + [*APPLICATION_OPTIONAL, APPLICATION, MODERN]
    for chapter in chapters:
        shutil.copytree(ROOT / "solutions" / chapter, tmp_path / "solutions" / chapter)
    submit_reference(tmp_path, "slow", chapters)
    proc = subprocess.run([sys.executable, "-m", "autograder", "assemble", "--root", str(tmp_path), "--timeout", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = ResultStore(tmp_path / "autograder" / "results").assemblies()["slow"]
    assert (result["status"], result["application_status"], result["modern_status"]) == ("timeout",) * 3
    assert "within 3 s" in result["modern_message"]


def test_judge_checks_every_field_of_the_untrusted_report():
    good = {"losses": [5.0, 2.0], "val_loss": 2.0, "vocab_size": 320, "generated_ids": [1, 2, 3], "sample": "ab"}
    assert judge("s", good, 1.0).status == "passed"
    bound = LOSS_FRACTION * 5.768320995
    assert judge("s", {**good, "val_loss": bound + 0.01}, 1.0).status == "failed"
    for bad in ({"val_loss": float("nan")}, {"val_loss": "1.0"}, {"generated_ids": [1, 999]},
                {"generated_ids": []}, {"generated_ids": ["1"]}, {"vocab_size": "320"}, {"error": "boom"}):
        assert judge("s", {**good, **bad}, 1.0).status == "failed", bad


def test_the_application_verdict_is_the_graders_measurement():
    from autograder.assemble import APPLICATION_LOSS_FRACTION, judge_application
    from autograder.results import AssemblyResult

    def verdict(child, measured):
        return judge_application(AssemblyResult("s", "passed", 1.0),
                                 {"application": trusted_stage(child, measured, "application")})

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


def test_the_modern_verdict_is_the_graders_measurement():
    from autograder.results import AssemblyResult

    def verdict(child, measured):
        return judge_modern(AssemblyResult("s", "passed", 1.0), {"modern": trusted_stage(child, measured, "modern")})

    honest = {"modern": {"losses": [6.2, 2.5], "val_loss": 2.5, "generated_ids": [1, 2, 3], "error": None}}
    measured = {"modern": {"val_loss": 2.5 + MODERN_AGREEMENT / 2, "vocab_size": 512, "sample": "the cat"}}
    result = verdict(honest, measured)
    assert result.modern_status == "passed", result.modern_message
    assert (result.modern_losses, result.modern_sample) == ([6.2, 2.5], "the cat")
    # the grader's loss above the bound fails, whatever the student's code claimed
    high = {"modern": {**measured["modern"], "val_loss": 5.2}}
    assert verdict({"modern": {**honest["modern"], "val_loss": 5.2}}, high).modern_status == "failed"
    # a claim that disagrees with the grader's measurement, or none, fails: the model is not Llama's function
    for claim in (2.5 + 2 * MODERN_AGREEMENT, 0.85, None, float("nan"), "2.5"):
        result = verdict({"modern": {**honest["modern"], "val_loss": claim}}, measured)
        assert result.modern_status == "failed" and "does not compute" in result.modern_message, claim
    # generate's ids are checked too: out of the vocabulary, not ints, or none
    for ids in ([1, 512], ["1"], [], None):
        result = verdict({"modern": {**honest["modern"], "generated_ids": ids}}, measured)
        assert (result.modern_status, result.modern_message) == ("failed", "generate returned invalid token ids")
    # the stage's own failure is the student's; a missing or broken measurement is the grader's
    result = verdict({"modern": {"error": "chapter 4e: ModernGPT.save_pretrained: ValueError: unexpected"}}, measured)
    assert result.modern_status == "failed" and "save_pretrained" in result.modern_message
    assert verdict(honest, {}).modern_status == "error"
    assert verdict(honest, {"modern": {"error": "a Llama of the shape asked for"}}).modern_status == "failed"
    assert verdict(honest, {"modern": {"val_loss": float("nan"), "vocab_size": 512}}).modern_status == "failed"
    assert judge_modern(AssemblyResult("s", "passed", 1.0), {}).modern_status == ""


def test_the_judge_reads_only_files_written_inside_the_childs_folder(tmp_path):
    """A link, or a stage's folder linked elsewhere, could hand the grader another model's weights."""
    from autograder.assembly_judge import measure, measure_modern, written_here

    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    (elsewhere / "modern").mkdir(parents=True)
    (elsewhere / "modern" / "model.safetensors").write_bytes(b"weights")
    out.mkdir()
    assert written_here(elsewhere / "modern" / "model.safetensors", elsewhere)
    (out / "modern").symlink_to(elsewhere / "modern", target_is_directory=True)
    assert not written_here(out / "modern" / "model.safetensors", out)
    assert "wrote no model.safetensors" in measure_modern(out)["error"]
    (out / "model.safetensors").symlink_to(elsewhere / "modern" / "model.safetensors")
    assert not written_here(out / "model.safetensors", out)
    assert "wrote no model.safetensors" in measure(out)["error"]
