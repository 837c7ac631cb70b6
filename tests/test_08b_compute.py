"""Chapter 8b: every graded test rejects plausible wrong answers; the public fallback agrees with the solution, with
Hugging Face's GPT-2 (parameter counts), with the real tensors of a training step and of a KV cache, and with the
arithmetic of per-row absmax int8.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests
from torch import nn

CHAPTER = "08b_compute"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

COUNT = {"test_count_params", "test_count_params_hidden"}
MEMORY = {"test_training_memory", "test_training_memory_hidden"}
KV = {"test_kv_cache_bytes", "test_kv_cache_bytes_hidden"}
QUANTIZE = {"test_quantize_int8", "test_quantize_int8_hidden"}
INT8 = {"test_int8_linear", "test_int8_linear_hidden"}


edit = solution_editor(SOLUTION)


# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it). A wrong count
# also shows in 8b.2, which builds on count_params; a wrong quantizer in 8b.5, which builds on quantize_int8.
WRONG_ANSWERS = {
    # 8b.1 count_params
    "the tied output weight counted twice": ("count_params", edit(
        "count_params", ("embeddings = V * C + T * C", "embeddings = 2 * V * C + T * C")), COUNT | MEMORY),
    "no position embedding": ("count_params", edit(
        "count_params", ("embeddings = V * C + T * C", "embeddings = V * C")), COUNT | MEMORY),
    "biases counted when config.bias is False": ("count_params", edit(
        "count_params", ("b = 1 if config.bias else 0", "b = 1")), COUNT | {"test_training_memory_hidden"}),
    "an MLP of width C instead of 4C": ("count_params", edit(
        "count_params", ("weights = 3 * C * C + C * C + 4 * C * C + 4 * C * C",
                         "weights = 3 * C * C + C * C + C * C + C * C")), COUNT | MEMORY),
    "the final LayerNorm forgotten": ("count_params", edit(
        "count_params", ("final = C + b * C", "final = 0")), COUNT | MEMORY),
    "a LayerNorm without its bias (gain only)": ("count_params", edit(
        "count_params", ("norms = 2 * (C + b * C)", "norms = 2 * C")), COUNT | MEMORY),
    # 8b.2 training_memory
    "AdamW with one moment": ("training_memory", edit(
        "training_memory", ('"optimizer": 2 * weights, "total": 4 * weights',
                            '"optimizer": weights, "total": 3 * weights')), MEMORY),
    "gradients left out of the total": ("training_memory", edit(
        "training_memory", ('"total": 4 * weights', '"total": 3 * weights')), MEMORY),
    "4 bytes per number whatever the dtype": ("training_memory", edit(
        "training_memory", ("count_params(config) * _bytes_per_element(dtype)", "count_params(config) * 4")),
        {"test_training_memory_hidden"}),
    # 8b.3 kv_cache_bytes
    "keys only, no values": ("kv_cache_bytes", edit(
        "kv_cache_bytes", ("return 2 * config.n_layer *", "return config.n_layer *")), KV),
    "one layer's cache only": ("kv_cache_bytes", edit(
        "kv_cache_bytes", ("return 2 * config.n_layer * batch_size", "return 2 * batch_size")), KV),
    "the head size instead of the width": ("kv_cache_bytes", edit(
        "kv_cache_bytes", ("context * config.n_embd * e", "context * (config.n_embd // config.n_head) * e")), KV),
    "4 bytes per number in the cache whatever the dtype": ("kv_cache_bytes", edit(
        "kv_cache_bytes", ("context * config.n_embd * e", "context * config.n_embd * 4")),
        {"test_kv_cache_bytes_hidden"}),
    # 8b.4 quantize_int8, dequantize_int8
    "scale max / 128 (the largest weight clamped)": ("quantize_int8", edit(
        "quantize_int8", ("scale = w.abs().amax(dim=1) / 127", "scale = w.abs().amax(dim=1) / 128")),
        QUANTIZE | {"test_int8_linear_hidden"}),
    "one scale for the whole matrix": ("quantize_int8", edit(
        "quantize_int8", ("scale = w.abs().amax(dim=1) / 127", "scale = w.abs().amax().expand(w.size(0)) / 127")),
        QUANTIZE | {"test_int8_linear_hidden"}),
    "truncation instead of rounding": ("quantize_int8", edit(
        "quantize_int8", ("torch.round(w / scale[:, None])", "(w / scale[:, None]).trunc()")),
        QUANTIZE | {"test_int8_linear_hidden"}),
    "a row of zeros left with scale 0 (0 / 0)": ("quantize_int8", edit(
        "quantize_int8", ("    scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # a row of zeros: any "
                          "positive scale\n", "")), QUANTIZE),
    "computing in the weight's own dtype": ("quantize_int8", edit(
        "quantize_int8", ("w = w.detach().float()", "w = w.detach()")), {"test_quantize_int8_hidden"}),
    "dequantize scales columns, not rows": ("quantize_int8", edit(
        "quantize_int8", ("return q.float() * scale.float()[:, None]", "return q.float() * scale.float()[None, :]")),
        QUANTIZE | INT8),
    "quantizer through torch.quantize_per_channel": ("quantize_int8", edit(
        "quantize_int8", ("q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)",
                          "q = torch.quantize_per_channel(w, scale.double(), torch.zeros(w.size(0), dtype=torch.long), "
                          "0, torch.qint8).int_repr()")),
        {"test_quantize_int8_hidden", "test_int8_linear_hidden"}),
    # 8b.5 Int8Linear, quantize_model
    "forward without the bias": ("int8_linear", edit(
        "int8_linear", ("return F.linear(x, w, bias)", "return F.linear(x, w)")), INT8),
    "the float weight kept as a parameter too": ("int8_linear", edit(
        "int8_linear", ('        self.register_buffer("weight_int8", q)',
                        '        self.weight = nn.Parameter(linear.weight.detach().clone())\n'
                        '        self.register_buffer("weight_int8", q)')), {"test_int8_linear"}),
    "the bias shared with the float layer, not copied": ("int8_linear", edit(
        "int8_linear", ("linear.bias.detach().clone()", "linear.bias.detach()")), {"test_int8_linear_hidden"}),
    "forward in float32 whatever the input's dtype": ("int8_linear", edit(
        "int8_linear", ("w = dequantize_int8(self.weight_int8, self.scale).to(x.dtype)",
                        "w = dequantize_int8(self.weight_int8, self.scale)"),
        ("bias = None if self.bias is None else self.bias.to(x.dtype)", "bias = self.bias"),
        ("return F.linear(x, w, bias)", "return F.linear(x.float(), w, bias)")), {"test_int8_linear_hidden"}),
    "quantize_model that looks at the model's direct children only": ("int8_linear", edit(
        "int8_linear", ("for parent in list(model.modules()):", "for parent in [model]:")), INT8),
    "quantize_model that ignores skip": ("int8_linear", edit(
        "int8_linear", ("if isinstance(child, nn.Linear) and name not in skip:", "if isinstance(child, nn.Linear):")),
        INT8),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the fallback against the solution, Hugging Face's GPT-2, real tensors and the int8 arithmetic


CONFIGS = [dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16),
           dict(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=4, bias=False),
           dict(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=64),
           dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
           dict(block_size=2048, vocab_size=50257, n_layer=96, n_head=96, n_embd=12288)]


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "metrics,applications,lora")
    from llmcourse.chapters import compute as ours
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import compute as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"count_params", "training_memory", "kv_cache_bytes", "quantize_int8", "dequantize_int8",
                      "Int8Linear", "quantize_model"}
    assert public <= set(vars(fallback))
    for fields in CONFIGS:
        config = GPTConfig(**fields)
        assert ours.count_params(config) == fallback.count_params(config)
        if config.n_layer >= 12:
            continue  # GPT-2 and GPT-3's shapes: the fallback's meta-device model and cache take seconds
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            assert ours.training_memory(config, dtype) == fallback.training_memory(config, dtype)
        for B, T in [(1, 1), (3, min(7, config.block_size))]:
            assert ours.kv_cache_bytes(config, B, T, torch.float16) == fallback.kv_cache_bytes(config, B, T,
                                                                                                 torch.float16)
    gen = torch.Generator().manual_seed(0)
    for shape, dtype in [((40, 30), torch.float32), ((7, 300), torch.bfloat16), ((3, 3), torch.float64)]:
        for _ in range(20):
            w = (torch.randn(shape, generator=gen) * torch.rand(shape[0], 1, generator=gen)).to(dtype)
            w[0] = 0.0
            (q1, s1), (q2, s2) = ours.quantize_int8(w), fallback.quantize_int8(w)
            assert torch.equal(s1, s2)
            off = (q1.int() - q2.int()).abs()  # torch.quantize_per_channel rounds a near-half the other way at times
            assert off.max() <= 1 and off.gt(0).float().mean() <= 1e-2, off.nonzero()
            assert torch.equal(ours.dequantize_int8(q1, s1), fallback.dequantize_int8(q1, s1))
    for bias in (True, False):
        linear = nn.Linear(24, 16, bias=bias)
        a, b = ours.Int8Linear(linear), fallback.Int8Linear(linear)
        assert dict(a.state_dict()).keys() == dict(b.state_dict()).keys()
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
        x = torch.randn(2, 5, 24, generator=gen)
        torch.testing.assert_close(a(x), b(x), rtol=1e-6, atol=1e-6)
    for skip in [("lm_head",), (), ("c_fc",)]:
        models = [nn.Sequential(nn.Linear(4, 4), nn.ModuleDict({"c_fc": nn.Linear(4, 4), "lm_head": nn.Linear(4, 2)}))
                  for _ in range(2)]
        models[1].load_state_dict(models[0].state_dict())
        ours.quantize_model(models[0], skip)
        fallback.quantize_model(models[1], skip)
        assert [type(m).__name__ for m in models[0].modules()] == [type(m).__name__ for m in models[1].modules()]


@pytest.mark.parametrize("fields", CONFIGS[:3] + [dict(block_size=16, vocab_size=100, n_layer=3, n_head=3, n_embd=24)])
def test_fallback_count_equals_hugging_face(fallback_gpt, fields):
    from transformers import GPT2LMHeadModel

    from llmcourse.fallbacks.compute import count_params
    from llmcourse.hf import gpt2_config

    GPT, GPTConfig = fallback_gpt
    config = GPTConfig(**fields)
    assert count_params(config) == GPT(config).num_params()
    if config.bias:  # GPT-2 always has biases
        assert count_params(config) == GPT2LMHeadModel(gpt2_config(config)).num_parameters()


def test_fallback_counts_the_published_checkpoints(fallback_gpt):
    """The exact sizes of Hugging Face's four GPT-2 checkpoints (wte and lm_head tied, counted once)."""
    from llmcourse.chapters.gpt import preset
    from llmcourse.fallbacks.compute import count_params

    for name, n in [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
                    ("gpt2-xl", 1_557_611_200)]:
        assert count_params(preset(name)) == n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_fallback_memory_equals_one_adamw_step(fallback_gpt, dtype):
    from llmcourse.fallbacks.compute import training_memory

    GPT, GPTConfig = fallback_gpt
    config = GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=2, n_embd=8)
    model = GPT(config).to(dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 37, (2, 16))
    model(idx, idx)[1].backward()
    optimizer.step()
    nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    params = list(model.parameters())
    expected = {"weights": sum(map(nbytes, params)), "gradients": sum(nbytes(p.grad) for p in params),
                "optimizer": sum(nbytes(optimizer.state[p][k]) for p in params for k in ("exp_avg", "exp_avg_sq"))}
    expected["total"] = sum(expected.values())
    assert training_memory(config, dtype) == expected


@pytest.mark.parametrize("B, T, dtype", [(1, 1, torch.float32), (3, 16, torch.float32), (2, 5, torch.float64)])
def test_fallback_kv_cache_equals_a_real_cache(fallback_gpt, B, T, dtype):
    from llmcourse.chapters.generation import KVCache, forward_with_cache
    from llmcourse.fallbacks.compute import kv_cache_bytes

    GPT, GPTConfig = fallback_gpt
    config = GPTConfig(block_size=16, vocab_size=37, n_layer=3, n_head=2, n_embd=8)
    model = GPT(config).to(dtype).eval()
    cache = KVCache(3)
    with torch.no_grad():
        forward_with_cache(model, torch.randint(0, 37, (B, T)), cache)
    assert kv_cache_bytes(config, B, T, dtype) == sum(t.numel() * t.element_size() for kv in cache.layers for t in kv)
    assert kv_cache_bytes(config, B, T, dtype) == 2 * 3 * B * T * 8 * dtype.itemsize


def test_fallback_quantizes_as_the_formula_says(fallback_gpt):
    """Codes round(w / s) clamped to [-127, 127] with s = max |row| / 127 (1 for a zero row), in float32 (PyTorch
    multiplies by 1 / s, so a value within float rounding of a half may round the other way)."""
    from llmcourse.fallbacks.compute import dequantize_int8, quantize_int8

    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        w = torch.randn(17, 33, generator=gen) * torch.logspace(-4, 2, 17)[:, None]
        w[3] = 0.0
        q, scale = quantize_int8(w)
        expected_scale = torch.where(w.abs().amax(1) == 0, torch.tensor(1.0), w.abs().amax(1) / 127)
        assert torch.equal(scale, expected_scale)
        off = (q.int() - torch.round(w / expected_scale[:, None]).clamp(-127, 127).int()).abs()
        assert off.max() <= 1 and off.gt(0).float().mean() <= 1e-2  # near-halves may round the other way
        back = dequantize_int8(q, scale)
        assert torch.equal(back, q.float() * scale[:, None])
        assert ((back - w).abs() <= scale[:, None] / 2 * (1 + 1e-6)).all()
    q, scale = quantize_int8(torch.tensor([[1.27, -0.5, 0.1], [0.0, 0.0, 0.0]], dtype=torch.bfloat16))
    assert scale.dtype == torch.float32 and q[1].eq(0).all()


def test_fallback_validates_its_arguments(fallback_gpt):
    from llmcourse.fallbacks import compute

    _, GPTConfig = fallback_gpt
    config = GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=4)
    for call, error, match in [
        (lambda: compute.count_params("gpt2"), TypeError, "GPTConfig"),
        (lambda: compute.training_memory(config, torch.int8), TypeError, "dtype"),
        (lambda: compute.kv_cache_bytes(config, 1, 9), ValueError, "block_size"),
        (lambda: compute.kv_cache_bytes(config, 0, 4), ValueError, "batch_size"),
        (lambda: compute.kv_cache_bytes(config, 1, 2.0), TypeError, "context"),
        (lambda: compute.quantize_int8(torch.ones(3)), ValueError, "2-D"),
        (lambda: compute.quantize_int8(torch.tensor([[float("inf")]])), ValueError, "NaN or infinite"),
        (lambda: compute.dequantize_int8(torch.zeros(2, 2, dtype=torch.int8), torch.ones(3)), ValueError, "scale"),
        (lambda: compute.Int8Linear(nn.Conv1d(2, 2, 1)), TypeError, "nn.Linear"),
        (lambda: compute.quantize_model(nn.Linear(2, 2), skip="lm_head"), TypeError, "skip"),
    ]:
        with pytest.raises(error, match=match):
            call()
