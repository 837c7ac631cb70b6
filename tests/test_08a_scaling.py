"""Chapter 8a: every graded test rejects plausible wrong answers; the public fallback agrees with the solution, with
the model's own parameter count and with a careful reference fit; the sweep command ``python -m llmcourse.scaling``
(bad arguments, resuming, the JSON it writes, determinism) and the results the course ships.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests

CHAPTER = "08a_scaling"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
SHIPPED = ROOT / "llmcourse" / "checkpoints" / "scaling" / "results.json"

PARAMS = {"test_non_embedding_params", "test_non_embedding_params_hidden"}
PARAMS_HIDDEN = {"test_non_embedding_params_hidden"}
LAW = {"test_power_law", "test_power_law_hidden"}
FIT = {"test_fit_power_law", "test_fit_power_law_hidden"}
FIT_HIDDEN = {"test_fit_power_law_hidden"}

edit = solution_editor(SOLUTION)

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    # 8a.1 non_embedding_params
    "only the 12 L C^2 weights (no biases, no LayerNorms)": ("non_embedding_params", edit(
        "non_embedding_params", ("return L * per_block + final", "return 12 * L * C * C")), PARAMS),
    "forgets the final LayerNorm ln_f": ("non_embedding_params", edit(
        "non_embedding_params", ("return L * per_block + final", "return L * per_block")), PARAMS),
    "c_fc's bias counted as C, not 4C (12 C^2 + 10 C per block)": ("non_embedding_params", edit(
        "non_embedding_params", ("per_block = 12 * C * C + 13 * C", "per_block = 12 * C * C + 10 * C")), PARAMS),
    "counts the position embedding too": ("non_embedding_params", edit(
        "non_embedding_params", ("return L * per_block + final",
                                 "return L * per_block + final + config.block_size * C")), PARAMS),
    "returns a float": ("non_embedding_params", edit(
        "non_embedding_params", ("return L * per_block + final", "return float(L * per_block + final)")), PARAMS),
    "ignores bias=False (always the count with biases)": ("non_embedding_params", edit(
        "non_embedding_params", ("if config.bias:", "if True:")), PARAMS_HIDDEN),
    "bias=False, but the LayerNorms keep their bias": ("non_embedding_params", edit(
        "non_embedding_params", ("per_block = 12 * C * C + 2 * C", "per_block = 12 * C * C + 4 * C"),
        ("        final = C\n", "        final = 2 * C\n")), PARAMS_HIDDEN),
    # 8a.2 power_law
    "exponent with the wrong sign: E + A n^alpha": ("power_law", edit(
        "power_law", ("n.pow(-float(alpha))", "n.pow(float(alpha))")), LAW),
    "E inside the product: (E + A) n^-alpha": ("power_law", edit(
        "power_law", ("return E + A * n.pow(-float(alpha))", "return (E + A) * n.pow(-float(alpha))")), LAW),
    "the power of A n: E + (A n)^-alpha": ("power_law", edit(
        "power_law", ("return E + A * n.pow(-float(alpha))", "return E + (A * n).pow(-float(alpha))")), LAW),
    "a float32 result": ("power_law", edit(
        "power_law", ("return E + A * n.pow(-float(alpha))", "return (E + A * n.pow(-float(alpha))).float()")),
        LAW),
    # 8a.3 fit_power_law
    "E fixed at 0: a pure power law, a straight line on log-log axes": ("fit_power_law", edit(
        "fit_power_law", ("predicted = lowest * torch.sigmoid(e) + a.exp() * x.pow(-b.exp())",
                          "predicted = 0 * e + a.exp() * x.pow(-b.exp())"),
        ("return float(lowest * torch.sigmoid(e)), ", "return 0.0, ")), FIT),
    "stops after 3 iterations, far from converged": ("fit_power_law", edit(
        "fit_power_law", ("max_iter=steps", "max_iter=3")), FIT),
    "least squares on L, not on log L": ("fit_power_law", edit(
        "fit_power_law", ("error = (predicted.log() - target).pow(2).sum()",
                          "error = (predicted - loss).pow(2).sum()")), FIT_HIDDEN),
    "returns (A, E, alpha)": ("fit_power_law", edit(
        "fit_power_law", ("return float(lowest * torch.sigmoid(e)), float(a.exp() * n0.pow(alpha)), alpha",
                          "return float(a.exp() * n0.pow(alpha)), float(lowest * torch.sigmoid(e)), alpha")), FIT),
    "A at the scaled sizes n / n0, not converted back": ("fit_power_law", edit(
        "fit_power_law", ("float(a.exp() * n0.pow(alpha))", "float(a.exp())")), FIT),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the fallback against the solution, the model and a reference fit


def _reference_fit(n, loss, start):
    """L-BFGS on (E, log A, alpha) started at the law that made the data: the minimum near it."""
    n, loss = torch.tensor(n, dtype=torch.float64), torch.tensor(loss, dtype=torch.float64)
    p = torch.tensor([start[0], math.log(start[1]), start[2]], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([p], lr=1, max_iter=2000, tolerance_grad=1e-14, tolerance_change=1e-16,
                                  history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        error = ((p[0] + p[1].exp() * n ** -p[2]).log() - loss.log()).pow(2).sum()
        error.backward()
        return error

    with torch.enable_grad():
        optimizer.step(closure)
    return float(p[0].detach()), float(p[1].detach().exp()), float(p[2].detach())


def _log_sse(params, n, loss):
    E, A, alpha = params
    return float(np.sum((np.log(E + A * np.asarray(n) ** -alpha) - np.log(loss)) ** 2))


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import scaling as ours
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import scaling as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"non_embedding_params", "power_law", "fit_power_law"}
    assert public <= set(vars(fallback))
    for L, H, C, bias in [(1, 1, 4, True), (2, 4, 64, False), (96, 96, 12288, True), (7, 3, 33 * 3, False)]:
        config = GPTConfig(n_layer=L, n_head=H, n_embd=C, bias=bias)
        assert ours.non_embedding_params(config) == fallback.non_embedding_params(config)
    n = torch.tensor([12768, 100096, 793344])
    torch.testing.assert_close(ours.power_law(n, 0.69, 40.0, 0.4), fallback.power_law(n, 0.69, 40.0, 0.4),
                               rtol=1e-14, atol=1e-14)
    rng = np.random.default_rng(5)
    for true in [(0.7, 20.0, 0.35), (0.69, 60.0, 0.5), (1.1, 3.0, 0.2)]:
        sizes = np.logspace(4, 6, 6)
        loss = (true[0] + true[1] * sizes ** -true[2]) * np.exp(rng.normal(0, 0.01, 6))
        a, b = ours.fit_power_law(sizes, loss), fallback.fit_power_law(sizes, loss)
        assert _log_sse(a, sizes, loss) == pytest.approx(_log_sse(b, sizes, loss), rel=1e-4, abs=1e-12)
        for impl in (ours, fallback):
            for args, error in [((sizes[:2], loss[:2]), ValueError), ((sizes, loss[:5]), ValueError),
                                ((sizes, -loss), ValueError), ((sizes, loss, 0), ValueError),
                                ((sizes, loss, 2.5), TypeError), (("abc", loss), TypeError)]:
                with pytest.raises(error):
                    impl.fit_power_law(*args)


def test_fallback_counts_what_the_model_holds(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks.scaling import non_embedding_params

    for L, H, C, bias in [(1, 1, 4, True), (1, 2, 8, False), (2, 4, 64, True), (3, 4, 96, False), (4, 4, 128, True)]:
        config = GPTConfig(block_size=32, vocab_size=101, n_layer=L, n_head=H, n_embd=C, bias=bias)
        assert non_embedding_params(config) == GPT(config).num_params(non_embedding=True), (L, C, bias)
        if bias:
            assert non_embedding_params(config) == 12 * L * C * C + 13 * L * C + 2 * C
    assert non_embedding_params(GPTConfig(n_layer=12, n_head=12, n_embd=768)) == 85_056_000  # GPT-2 small
    for bad, error in [("gpt2", TypeError), (None, TypeError)]:
        with pytest.raises(error):
            non_embedding_params(bad)
    with pytest.raises(ValueError, match="n_layer"):
        non_embedding_params(type("Config", (), {"n_layer": 0, "n_embd": 8, "bias": True})())


def test_fallback_power_law_is_exact():
    from llmcourse.fallbacks.scaling import power_law

    sizes = [12768, 39520, 100096, 335712, 793344, 85056000]
    got = power_law(torch.tensor(sizes), 1.69, 406.4, 0.34)
    assert got.dtype == torch.float64 and got.shape == (6,)
    for value, size in zip(got.tolist(), sizes):
        assert value == pytest.approx(1.69 + 406.4 * size ** -0.34, rel=1e-14)
    assert power_law(100, 1.0, 10.0, 1.0).shape == ()
    for bad, error in [([1.0, 0.0], ValueError), ([float("inf")], ValueError), ("12", TypeError)]:
        with pytest.raises(error):
            power_law(bad, 0.5, 1.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        power_law([1.0], 0.5, 1.0, float("nan"))


@pytest.mark.parametrize("true, sizes, noise", [
    ((0.69, 40.0, 0.4), np.logspace(4, 6, 5), 0.0), ((0.3, 5.0, 0.2), np.logspace(3, 7, 6), 0.0),
    ((0.7, 20.0, 0.35), np.logspace(4, 6, 6), 0.01), ((1.2, 8.0, 0.3), np.logspace(3, 8, 10), 0.02)])
def test_fallback_fit_reaches_the_reference_minimum(true, sizes, noise):
    import builtins

    from llmcourse.fallbacks.scaling import fit_power_law

    rng = np.random.default_rng(11)
    loss = (true[0] + true[1] * sizes ** -true[2]) * np.exp(rng.normal(0.0, noise, len(sizes)))
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.split(".")[0] == "scipy":
            raise ImportError("no SciPy in this test")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_scipy
    try:
        fitted = fit_power_law(sizes.tolist(), loss.tolist())
    finally:
        builtins.__import__ = real_import
    reference = _reference_fit(sizes, loss, true)
    assert _log_sse(fitted, sizes, loss) <= _log_sse(reference, sizes, loss) * (1 + 1e-4) + 1e-12
    if noise == 0:
        assert fitted == pytest.approx(true, rel=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# the sweep command


TINY = ["--budget", "4096", "--data-chars", "30000", "--val-chars", "2000", "--quiet"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
    env.update(LLMCOURSE_FALLBACK="all", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def sweep(*args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "llmcourse.scaling", *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling") / "results.json"
    return out, sweep(*TINY, "--out", out)


RUN_FIELDS = {"name", "sweeps", "config", "steps", "batch_size", "lr", "min_lr", "warmup", "seed",
              "non_embedding_params", "params", "tokens", "flops_6nd", "flops_with_attention", "final_train_loss",
              "val_loss", "val_nats_per_char", "val_chars_per_token", "entropy_floor", "seconds", "device", "threads"}


def _check_schema(results: dict, budget: int, full: bool = False) -> None:
    from llmcourse.scaling import RUNS

    assert results["format"] == "llmcourse-scaling-1"
    assert results["entropy_floor"] == pytest.approx(0.6901, abs=1e-4)
    assert list(results["runs"]) == list(RUNS)
    sizes = []
    for name, run in results["runs"].items():
        assert set(run) == RUN_FIELDS, name
        assert run["name"] == name and run["tokens"] == run["steps"] * 32 * 64
        c = run["config"]
        L, C = c["n_layer"], c["n_embd"]
        assert run["non_embedding_params"] == 12 * L * C * C + 13 * L * C + 2 * C
        assert run["params"] == run["non_embedding_params"] + (c["vocab_size"] + c["block_size"]) * C
        assert run["flops_6nd"] == 6 * run["non_embedding_params"] * run["tokens"]
        assert run["flops_with_attention"] == run["flops_6nd"] + 12 * L * c["block_size"] * C * run["tokens"]
        assert run["val_nats_per_char"] == pytest.approx(run["val_loss"] / run["val_chars_per_token"])
        assert run["val_nats_per_char"] > results["entropy_floor"]
        if "model" in run["sweeps"]:
            assert run["tokens"] == budget
            sizes.append(run["non_embedding_params"])
    assert len(sizes) >= 5 and min(sizes) < 2e4 and max(sizes) > 5e5
    data = sorted(r["tokens"] for r in results["runs"].values() if "data" in r["sweeps"])
    assert len({json.dumps(r["config"]) for r in results["runs"].values() if "data" in r["sweeps"]}) == 1
    if full:  # (a tiny budget rounds the smallest data runs to the same single step)
        assert len(set(data)) >= 4


def test_tiny_sweep_writes_every_run(tiny_sweep):
    out, done = tiny_sweep
    results = json.loads(out.read_text())
    _check_schema(results, budget=4096)
    assert results["settings"]["budget"] == 4096 and results["settings"]["data_chars"] == 30000
    assert done.stdout.count("nats/char") == len(results["runs"])
    assert "11 run(s) in" in done.stdout and not list(out.parent.glob("*.tmp"))


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``python -m llmcourse.scaling ARGS`` in this process (every chapter on its fallback): (exit code, stdout,
    stderr)."""
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    threads = torch.get_num_threads()

    def run(*args):
        from llmcourse.scaling import main

        capsys.readouterr()
        code = 0
        try:
            main([*map(str, args)])
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
            if not isinstance(err.code, int) and err.code is not None:
                print(err.code, file=sys.stderr)
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_resume_skips_finished_runs_and_redoes_a_missing_one(tiny_sweep, tmp_path, in_process):
    out, _ = tiny_sweep
    first = json.loads(out.read_text())
    copy = tmp_path / "results.json"
    partial = dict(first, runs={k: v for k, v in first["runs"].items() if k != "d-1/8"})  # as if interrupted
    copy.write_text(json.dumps(partial))
    code, stdout, _ = in_process(*TINY, "--out", copy)
    assert code == 0 and "10 run(s) already done" in stdout and "\n1 run(s) in" in stdout
    again = json.loads(copy.read_text())
    assert list(again["runs"]) == list(first["runs"])
    for name, run in first["runs"].items():
        if name != "d-1/8":
            assert again["runs"][name] == run, name  # skipped: untouched
    # the re-trained run is the same run: same seed, same batches, same loss
    assert again["runs"]["d-1/8"]["val_loss"] == pytest.approx(first["runs"]["d-1/8"]["val_loss"], abs=1e-6)
    code, stdout, _ = in_process(*TINY, "--out", copy)
    assert code == 0 and "11 run(s) already done" in stdout and "\n0 run(s) in" in stdout


def test_only_reruns_one_run_and_runs_lists_them(tiny_sweep, tmp_path, in_process):
    out, _ = tiny_sweep
    copy = tmp_path / "results.json"
    copy.write_text(out.read_text())
    code, stdout, _ = in_process(*TINY, "--out", copy, "--only", "d-1/16")
    printed = json.loads(stdout[stdout.index("{"):])
    assert code == 0 and printed["name"] == "d-1/16" and printed["steps"] == 1
    assert printed["val_loss"] == pytest.approx(json.loads(out.read_text())["runs"]["d-1/16"]["val_loss"], abs=1e-6)
    listing = in_process(*TINY, "--out", copy, "--runs")[1]
    assert listing.count("done:") == 11 and "n-5" in listing and "to do" not in listing
    listing = in_process(*TINY, "--out", tmp_path / "none.json", "--runs")[1]
    assert listing.count("to do") == 11 and not (tmp_path / "none.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--only", "n-9"], "no run called 'n-9'"),
    (["--budget", "0"], "expected a positive number"),
    (["--budget", "lots"], "expected a whole number"),
    (["--val-chars", "100"], "at least 2000 characters"),
    (["--device", "tpu"], "is not a device"),
])
def test_bad_arguments_give_clear_errors(args, message, tmp_path, in_process):
    code, stdout, stderr = in_process(*TINY, "--out", tmp_path / "r.json", *args)
    assert code != 0 and message in stderr + stdout, stderr[-2000:]
    assert not (tmp_path / "r.json").exists()


def test_a_file_of_other_settings_or_no_results_is_refused(tiny_sweep, tmp_path, in_process):
    out, _ = tiny_sweep
    code, _, stderr = in_process("--budget", "8192", "--data-chars", "30000", "--val-chars", "2000", "--quiet",
                                 "--out", out, "--runs")
    assert code != 0 and "other settings" in stderr
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    code, _, stderr = in_process(*TINY, "--out", junk)
    assert code != 0 and "not a results file" in stderr


def test_run_spec_and_train_run_are_deterministic(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from llmcourse.scaling import run_spec, train_run

    spec = run_spec("d-1/16")
    assert spec["tokens"] == 2**20 // 16 and spec["steps"] == 32 and spec["warmup"] == 3
    with pytest.raises(ValueError, match="no run called"):
        run_spec("n-0")
    settings = {"budget": 4096, "data_chars": 30000, "val_chars": 2000}
    a, b = train_run("n-2", settings), train_run("n-2", settings)
    assert a["val_loss"] == b["val_loss"] and a["final_train_loss"] == b["final_train_loss"]


def test_shipped_results():
    """The sweep the notebook plots: its schema, and the shape the chapter's prose describes."""
    from llmcourse.scaling import SETTINGS

    results = json.loads(SHIPPED.read_text())
    assert results["settings"] == json.loads(json.dumps(SETTINGS))
    _check_schema(results, budget=SETTINGS["budget"], full=True)
    model = sorted((r for r in results["runs"].values() if "model" in r["sweeps"]),
                   key=lambda r: r["non_embedding_params"])
    data = sorted((r for r in results["runs"].values() if "data" in r["sweeps"]), key=lambda r: r["tokens"])
    for runs in (model, data):  # more parameters, or more data: a lower loss, still above the floor
        losses = [r["val_nats_per_char"] for r in runs]
        assert losses == sorted(losses, reverse=True) and min(losses) > results["entropy_floor"]
