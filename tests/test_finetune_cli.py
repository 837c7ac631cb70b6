"""``python -m llmcourse.finetune``: chapter 6's longer fine-tuning runs, and the results that ship with the course."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import ROOT

from llmcourse import finetune
from llmcourse.data import TASKS

SHIPPED = ROOT / "llmcourse" / "checkpoints" / "finetuned"


@pytest.fixture
def reference_code(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.delenv("LLMCOURSE_FALLBACK", raising=False)
    from llmcourse.chapters import reload_all

    reload_all()
    yield
    reload_all()


@pytest.mark.parametrize("task", ["qa", "sentiment"])
def test_a_short_run_logs_losses_and_scores_and_saves_the_model(task, tmp_path, reference_code):
    log = finetune.main(["--task", task, "--steps", "6", "--eval-every", "3", "--train-examples", "64",
                         "--eval-examples", "12", "--out", str(tmp_path)])
    assert len(log["losses"]) == 6 and all(math.isfinite(x) for x in log["losses"])
    assert [e["step"] for e in log["evals"]] == [0, 3, 6]
    for entry in log["evals"]:
        for metric in finetune.METRICS[task]:
            assert 0.0 <= entry[metric] <= (100.0 if metric == "bleu" else 1.0)
    assert json.loads((tmp_path / "log.json").read_text())["evals"] == log["evals"]
    saved = "classifier.safetensors" if task == "sentiment" else "model.safetensors"
    assert (tmp_path / saved).stat().st_size > 100_000


def test_scratch_starts_from_other_weights(reference_code):
    pretrained, _ = finetune.load_checkpoint()
    scratch, _ = finetune.load_checkpoint(scratch=True)
    assert not torch.equal(pretrained.transformer.wte.weight, scratch.transformer.wte.weight)


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit):
        finetune.main(["--task", "poetry", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="must be >= 1"):
        finetune.main(["--task", "qa", "--steps", "0", "--out", str(tmp_path)])


def test_the_shipped_runs_are_complete_and_say_how_they_were_made():
    readme = (SHIPPED / "README.md").read_text()
    for task in TASKS:
        for name in (task, f"{task}-scratch"):
            log = json.loads((SHIPPED / name / "log.json").read_text())
            assert log["settings"]["task"] == task and log["settings"]["scratch"] == name.endswith("scratch")
            assert len(log["losses"]) == log["settings"]["steps"]
            assert log["evals"][-1]["step"] == log["settings"]["steps"]
        assert task in readme.split("for task in ")[1].split(";")[0], f"the README's commands leave out {task}"
        weights = "classifier.safetensors" if task == "sentiment" else "model.safetensors"
        assert (SHIPPED / task / weights).is_file()
