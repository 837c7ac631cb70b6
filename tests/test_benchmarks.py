"""The benchmark scripts run (tiny settings, no timing asserted: speed targets are the scripts' own output) and
their checks bite: the generation benchmark refuses a run whose tokens differ from Hugging Face's."""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture
def reference_code(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_benchmark_reports_every_row(reference_code, capsys):
    import train_throughput

    result = train_throughput.main(["--preset", "course-tiny", "--batch-size", "2", "--steps", "2", "--warmup", "1",
                                    "--no-compile"])
    assert set(result["tokens_per_s"]) == {"ours, plain", "ours, fast", "HF, eager", "ours, fast, bf16 autocast"}
    assert result["max_logit_diff_hf"] < 1e-4 and result["max_logit_diff_fast"] < 1e-4
    assert result["ratio_to_hf_eager"]["HF, eager"] == 1.0
    assert all(0 < mfu < 1 for mfu in result["mfu"].values())
    losses = result["final_loss"]
    assert losses["ours, fast"] == pytest.approx(losses["ours, plain"], abs=1e-4)  # same steps, other kernels
    assert losses["HF, eager"] == pytest.approx(losses["ours, plain"], abs=1e-4)
    assert "ours, fast / HF, eager" in capsys.readouterr().out


def test_generate_benchmark_checks_the_tokens(reference_code, monkeypatch):
    import generate_throughput

    results = generate_throughput.main(["--new-tokens", "6", "--repeats", "1", "--batches", "2"])
    assert set(results) == {(2, "greedy"), (2, "sampled")}
    assert set(results[(2, "greedy")]) == {"ours, fast", "ours, plain", "ours, no cache", "HF generate"}

    from llmcourse.chapters import generation

    real = generation.generate

    def off_by_one(model, ids, **kwargs):  # a faster wrong answer must not count
        out = real(model, ids, **kwargs)
        if getattr(model, "fused_kernels", False):
            out[:, -1] = (out[:, -1] + 1) % model.config.vocab_size
        return out

    monkeypatch.setattr(generation, "generate", off_by_one)
    with pytest.raises(AssertionError, match="ours, fast gives other tokens"):
        generate_throughput.main(["--new-tokens", "4", "--repeats", "1", "--batches", "1"])


def test_book_build_reads_the_execution_cache_and_writes_the_table(tmp_path):
    import book_build

    db = tmp_path / "_build" / ".jupyter_cache" / "global.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.execute("create table nbcache (uri text, data text)")
        con.execute("insert into nbcache values (?, ?)", ("/x/solutions/05b_training/05b_training.ipynb",
                                                           json.dumps({"execution_seconds": 41.5})))
        con.execute("insert into nbcache values (?, ?)", ("/x/book/background.md",
                                                           json.dumps({"execution_seconds": 2.6})))
    times = book_build.notebook_times(tmp_path)
    assert times == {"05b_training": 41.5, "book/background.md": 2.6}
    text = book_build.table([{"busy": 0, "cold": 316.0, "warm": 5.0, "times": times},
                             {"busy": 1, "cold": 353.0, "warm": 5.2, "times": {**times, "05b_training": 39.3}}])
    assert "| `05b_training` | 41.5 | 39.3 |" in text
    assert "| **whole build, cold** (empty execution cache) | **316** | **353** |" in text
    assert "with 1 other CPU-bound process" in text
    text = book_build.table([{"busy": 0, "jobs": 1, "cold": 316.0, "warm": 5.0, "times": times},
                             {"busy": 0, "jobs": 2, "cold": 190.0, "warm": 5.0, "times": times}])
    assert "| page | executes in (s), " in text and "2 at a time (`--jobs 2`)" in text and "**190** |" in text
