"""The trainer ``python -m llmcourse.train``: its help, a tiny run whose checkpoint both our GPT and Hugging Face's
GPT2LMHeadModel load, an exact resume, 2-process DDP (gloo, CPU) against one process on the same batches, and the
checkpoint the course ships."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, without_key_bias
from safetensors.torch import load_file

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--vocab-size", "300",
        "--data-chars", "40000", "--val-chars", "4000", "--tokenizer-chars", "20000", "--batch-size", "8",
        "--steps", "4", "--warmup", "1", "--lr", "3e-3", "--eval-interval", "2", "--quiet"]
SHIPPED = ROOT / "llmcourse" / "checkpoints" / "course-tiny"
SHIPPED_VAL_BOUND = 0.72  # nats per character; the entropy floor is 0.690, the checkpoint's README says 0.699


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
    env.update(LLMCOURSE_SOURCE="solutions", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def train(*args, torchrun: int = 0, timeout: int = 180) -> subprocess.CompletedProcess:
    if torchrun:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun),
                    "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "llmcourse.train"]
    else:
        launcher = [sys.executable, "-m", "llmcourse.train"]
    done = subprocess.run([*launcher, *map(str, args)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def weights(folder):
    return load_file(folder / "model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_help():
    done = train("--help")
    for flag in ("--preset", "--n-layer", "--batch-size", "--steps", "--lr", "--warmup", "--weight-decay",
                 "--grad-clip", "--eval-interval", "--seed", "--device", "--compile", "--fast", "--dtype", "--out",
                 "--resume", "--data-chars", "--dropout", "--vocab-size"):
        assert flag in done.stdout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "tiny"
    done = train(*TINY, "--out", out)
    return out, done


def test_tiny_run_writes_a_checkpoint_both_models_load(tiny_run, monkeypatch):
    out, done = tiny_run
    assert "val" in done.stdout and "wrote" in done.stdout
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "training_state.pt",
                 "train_log.json"):
        assert (out / name).is_file(), name
    log = json.loads((out / "train_log.json").read_text())
    assert log["summary"]["steps"] == 4 and log["history"]["val_step"] == [2, 4]
    assert log["summary"]["val_nats_per_char"] > 0.69

    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from transformers import GPT2LMHeadModel

    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.tokens_and_positions import BPETokenizer

    ours = GPT.from_pretrained(out).eval()
    hf = GPT2LMHeadModel.from_pretrained(out, local_files_only=True).eval()
    tokenizer = BPETokenizer.load(out)
    assert tokenizer.vocab_size == ours.config.vocab_size == 300
    idx = torch.tensor([tokenizer.encode("the small cat sees a red ball . tom runs")[:16]])
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)


def test_resume_is_exact(tiny_run, tmp_path):
    out, _ = tiny_run
    train(*TINY, "--stop-at", "2", "--out", tmp_path / "half")
    done = train(*TINY, "--resume", tmp_path / "half", "--out", tmp_path / "resumed")
    assert "resumed" in done.stdout
    assert max_diff(weights(out), weights(tmp_path / "resumed")) == 0.0
    straight = json.loads((out / "train_log.json").read_text())["history"]["train_loss"]
    resumed = json.loads((tmp_path / "resumed" / "train_log.json").read_text())["history"]["train_loss"]
    assert resumed == straight[2:]


def test_ddp_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    """Two gloo processes each draw one shard of every batch; one process draws both shards. DDP averages the
    two processes' gradients, so both runs take the same steps (up to float rounding in the averaging)."""
    args = [*TINY, "--batch-shards", "2", "--no-training-state"]
    train(*args, "--out", tmp_path / "ddp", torchrun=2)
    train(*args, "--out", tmp_path / "one")
    diff = max_diff(weights(tmp_path / "ddp"), weights(tmp_path / "one"))
    assert diff < 2e-5, diff
    ddp = json.loads((tmp_path / "ddp" / "train_log.json").read_text())
    one = json.loads((tmp_path / "one" / "train_log.json").read_text())
    assert ddp["summary"]["world_size"] == 2 and one["summary"]["world_size"] == 1
    assert ddp["history"]["train_loss"] == pytest.approx(one["history"]["train_loss"], abs=1e-5)


def test_the_shipped_checkpoint_loads_and_is_good(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.tokens_and_positions import BPETokenizer
    from llmcourse.chapters.training import estimate_loss
    from llmcourse.data import entropy_floor, train_val_text

    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 5 * 2**20, f"{size} bytes"
    model = GPT.from_pretrained(SHIPPED).use_torch_sdpa()
    tokenizer = BPETokenizer.load(SHIPPED)
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(SHIPPED, local_files_only=True)
    assert hf.num_parameters() == model.num_params()
    assert model.config.vocab_size == tokenizer.vocab_size
    _, val_text = train_val_text(0, 30_000, seed=0)  # the trainer's validation text (--data-seed 0)
    val = torch.tensor(tokenizer.encode(val_text))
    nats_per_char = estimate_loss(model, val, model.config.block_size) * len(val) / len(val_text)
    assert entropy_floor() < nats_per_char < SHIPPED_VAL_BOUND


def test_fast_path_trains_as_the_plain_path(tiny_run, tmp_path):
    """--fast (fused kernels, fused AdamW) takes the plain run's steps, to float rounding."""
    out, _ = tiny_run
    train(*TINY, "--fast", "--out", tmp_path / "fast")
    plain, fast = weights(out), weights(tmp_path / "fast")
    plain, fast = ({k: without_key_bias(k, v) for k, v in run.items()} for run in (plain, fast))
    assert max_diff(plain, fast) < 1e-4
    log = json.loads((tmp_path / "fast" / "train_log.json").read_text())
    assert log["summary"]["fast"] is True


def test_compiled_bf16_fast_path_runs_on_a_cpu(tmp_path):
    """--fast --compile --dtype bf16: torch.compile and bfloat16 autocast work on a CPU; the loss falls, and the
    checkpoint (float32 weights) loads in Hugging Face's GPT-2."""
    train(*TINY, "--fast", "--compile", "--dtype", "bf16", "--out", tmp_path / "compiled", timeout=300)
    log = json.loads((tmp_path / "compiled" / "train_log.json").read_text())
    assert log["summary"]["compile"] is True and log["summary"]["dtype"] == "bf16"
    losses = log["history"]["train_loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "compiled", local_files_only=True)
    assert next(hf.parameters()).dtype == torch.float32
