"""Chapter 4e: every graded test rejects plausible wrong answers; the public fallback agrees with the solution and
with Hugging Face's Llama; the sweep CLI (``python -m llmcourse.modern``) checks its arguments and resumes."""

from __future__ import annotations

import json
import tempfile

import nbformat
import pytest
import torch
from conftest import ROOT
from notebook_harness import wrong_answer_tests

CHAPTER = "04e_modern_block"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

RMS = {"test_rmsnorm", "test_rmsnorm_hidden"}
ROPE = {"test_rope", "test_rope_hidden"}
SWIGLU = {"test_swiglu", "test_swiglu_hidden"}
GQA = {"test_gqa", "test_gqa_hidden"}
MODEL = {"test_modern_gpt", "test_modern_gpt_hidden"}


def _cell(grade_id: str) -> str:
    for cell in nbformat.read(SOLUTION, as_version=4).cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell.source
    raise KeyError(grade_id)


def edit(grade_id: str, *replacements: tuple[str, str]) -> tuple[str, str]:
    """The solution cell ``grade_id`` with each ``old`` replaced by ``new`` (each must occur)."""
    source = _cell(grade_id)
    for old, new in replacements:
        assert old in source, f"{grade_id}: {old!r} not in the solution"
        source = source.replace(old, new)
    return grade_id, source


# Plausible wrong answers: label -> (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "RMSNorm with eps outside the square root": (*edit("RMSNorm", (
        "torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)",
        "1 / (x32.pow(2).mean(dim=-1, keepdim=True).sqrt() + self.eps)")), {"test_rmsnorm_hidden"}),
    "RMSNorm over the wrong dimension": (*edit("RMSNorm", ("mean(dim=-1", "mean(dim=0")), RMS | MODEL),
    "RMSNorm that subtracts the mean (LayerNorm without a bias)": (*edit("RMSNorm", (
        "x32 = x.float() ", "x32 = x.float() - x.float().mean(dim=-1, keepdim=True) ")), RMS | MODEL),
    "RMSNorm computed in the input's dtype (no float32 inside)": (*edit("RMSNorm", (
        "x32 = x.float() ", "x32 = x ")), {"test_rmsnorm_hidden"}),
    "RMSNorm that does not cast back to the input's dtype": (*edit("RMSNorm", (
        "(x32 * inv_rms).to(x.dtype)", "(x32 * inv_rms)")), {"test_rmsnorm_hidden"}),
    "RMSNorm that calls PyTorch's F.rms_norm": (*edit("RMSNorm", (
        "x32 = x.float() ", "return self.weight * F.rms_norm(x.float(), (x.size(-1),), eps=self.eps).to(x.dtype)\n"
        "        x32 = x.float() ")), RMS),
    "RMSNorm that calls Hugging Face's LlamaRMSNorm": (*edit("RMSNorm", (
        "x32 = x.float() ", "from transformers.models.llama.modeling_llama import LlamaRMSNorm\n"
        "        norm = LlamaRMSNorm(x.size(-1), eps=self.eps)\n"
        "        norm.weight = self.weight\n"
        "        return norm(x)\n"
        "        x32 = x.float() ")), RMS),
    "RoPE with interleaved pairs (GPT-J) instead of Llama's halves": (*edit(
        "rope",
        ("angles = torch.cat([angles, angles], dim=-1)", "angles = angles.repeat_interleave(2, dim=-1)"),
        ("x1, x2 = x.chunk(2, dim=-1)          # (..., hs/2) each\n        return torch.cat([-x2, x1], dim=-1)",
         "x1, x2 = x[..., 0::2], x[..., 1::2]\n        return torch.stack([-x2, x1], dim=-1).flatten(-2)")),
        ROPE | GQA | MODEL),
    "RoPE frequencies base^(-i/d) instead of base^(-2i/d)": (*edit("rope", (
        "torch.arange(0, head_dim, 2).float() / head_dim", "torch.arange(0, head_dim // 2).float() / head_dim")),
        ROPE | GQA | MODEL),
    "RoPE rotating the wrong way (the sign of sin)": (*edit("rope", (
        "return torch.cat([-x2, x1], dim=-1)", "return torch.cat([x2, -x1], dim=-1)")),
        {"test_rope_hidden"} | GQA | MODEL),
    # attention itself does not notice: every position moves by one and scores depend only on differences
    "RoPE positions counted from 1": (*edit("rope", ("torch.arange(T).float()", "torch.arange(1, T + 1).float()")),
                                      ROPE),
    "SwiGLU with GELU instead of SiLU": (*edit("SwiGLU", (
        "gate * torch.sigmoid(gate)", "F.gelu(gate)")), SWIGLU | MODEL),
    "SwiGLU with the activation on the up projection": (*edit("SwiGLU", (
        "return self.down_proj(gate * torch.sigmoid(gate) * self.up_proj(x))",
        "up = self.up_proj(x)\n        return self.down_proj(gate * up * torch.sigmoid(up))")), SWIGLU | MODEL),
    "hidden size rounded down instead of up": (*edit("SwiGLU", (
        "multiple_of * -(-hidden // multiple_of)", "multiple_of * (hidden // multiple_of)")), SWIGLU),
    "hidden size that ignores ffn_dim_multiplier": (*edit("SwiGLU", (
        "hidden = int(ffn_dim_multiplier * hidden)", "pass")), {"test_swiglu_hidden"}),
    "SwiGLU with biases": (*edit("SwiGLU", *[(f"{a}, bias=False)", f"{a})") for a in (
        "nn.Linear(config.n_embd, config.intermediate_size", "nn.Linear(config.intermediate_size, config.n_embd")]),
        SWIGLU | MODEL),
    "repeat_kv tiling the heads (repeat) instead of repeating each in a row": (*edit("GQAttention", (
        "return x[:, :, None].expand(B, n_kv, n_rep, T, hs).reshape(B, n_kv * n_rep, T, hs)",
        "return x.repeat(1, n_rep, 1, 1)")), GQA | MODEL),
    "attention without the 1/sqrt(head_dim) scale": (*edit("GQAttention", (
        "att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)", "att = q @ k.transpose(-2, -1)")), GQA | MODEL),
    "attention without the causal mask": (*edit("GQAttention", (
        'att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)', "att = att.softmax(dim=-1)")),
        GQA | MODEL),
    "RoPE applied to the values too": (*edit("GQAttention", (
        "q, k = apply_rope(q, k, cos.to(x.device), sin.to(x.device))",
        "q, k = apply_rope(q, k, cos.to(x.device), sin.to(x.device))\n"
        "        v, _ = apply_rope(v, v, cos.to(x.device), sin.to(x.device))")), GQA | MODEL),
    "attention projections with biases": (*edit("GQAttention", *[(f"{a}, bias=False)", f"{a})") for a in (
        "self.n_head * self.head_dim", "self.n_kv_head * self.head_dim", "config.n_embd")]), GQA | MODEL),
    "post-norm block (normalizes after the residual addition)": (*edit("ModernGPT", (
        "x = x + self.attn(self.ln_1(x))    # (B, T, C)\n        return x + self.mlp(self.ln_2(x))  # (B, T, C)",
        "x = self.ln_1(x + self.attn(x))\n        return self.ln_2(x + self.mlp(x))")), MODEL),
    "model without the final RMSNorm": (*edit("ModernGPT", (
        'logits = self.lm_head(self.transformer["ln_f"](x))', "logits = self.lm_head(x)")), MODEL),
    "model that always ties the output matrix to the embedding": (*edit("ModernGPT", (
        "if config.tie_word_embeddings:\n", "if True:\n")),
        MODEL),
    "loss that does not ignore the -100 targets": (*edit("ModernGPT", (
        "F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100)",
        "F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0))")), {"test_modern_gpt_hidden"}),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import modern_block as ours
    from llmcourse.fallbacks import modern_block as fallback

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 32, generator=gen)
    for dtype in (torch.float32, torch.bfloat16):
        a, b = ours.RMSNorm(32).to(dtype), fallback.RMSNorm(32).to(dtype)
        with torch.no_grad():
            a.weight.copy_(torch.rand(32, generator=gen) + 0.5)
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(x.to(dtype)), b(x.to(dtype)), atol=0, rtol=0)
    for args in [(8, 5), (16, 33, 500000.0)]:
        for u, v in zip(ours.rope_frequencies(*args), fallback.rope_frequencies(*args)):
            torch.testing.assert_close(u, v)
    q, k = torch.randn(2, 4, 5, 8, generator=gen), torch.randn(2, 2, 5, 8, generator=gen)
    cos, sin = fallback.rope_frequencies(8, 5)
    for u, v in zip(ours.apply_rope(q, k, cos, sin), fallback.apply_rope(q, k, cos, sin)):
        torch.testing.assert_close(u, v)
    assert ours.llama_hidden_size(4096) == fallback.llama_hidden_size(4096) == 11008
    for tie in (False, True):
        config = fallback.ModernConfig(vocab_size=30, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                                       intermediate_size=48, tie_word_embeddings=tie)
        a = ours.ModernGPT(ours.ModernConfig(**vars(config))).eval()
        b = fallback.ModernGPT(config).eval()
        b.load_state_dict(a.state_dict())
        idx = torch.randint(0, 30, (2, 11), generator=gen)
        torch.testing.assert_close(a(idx, idx)[0], b(idx, idx)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a(idx, idx)[1], b(idx, idx)[1], atol=1e-5, rtol=1e-5)


def test_fallback_equals_hugging_face_llama():
    from transformers import LlamaForCausalLM

    from llmcourse.fallbacks import modern_block as m

    torch.manual_seed(0)
    for tie, n_kv in [(False, 2), (True, 1)]:
        model = m.ModernGPT(m.ModernConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=n_kv,
                                           n_embd=32, intermediate_size=48, tie_word_embeddings=tie)).eval()
        idx = torch.randint(0, 50, (2, 12))
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            hf = LlamaForCausalLM.from_pretrained(folder).eval()
            with torch.no_grad():
                torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=1e-5)
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            back = m.ModernGPT.from_pretrained(folder).eval()
        assert back.config == model.config
        with torch.no_grad():
            torch.testing.assert_close(back(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_fallback_checks_its_arguments(tmp_path):
    from llmcourse.fallbacks import modern_block as m

    for bad in [dict(n_head=4, n_kv_head=3), dict(n_embd=30, n_head=4), dict(n_embd=12, n_head=4, n_kv_head=1),
                dict(n_layer=0)]:
        with pytest.raises(ValueError):
            m.ModernConfig(**bad)
    for args in [(7, 4), (0, 4), (8, -1), (8, 4, 1.0)]:
        with pytest.raises(ValueError):
            m.rope_frequencies(*args)
    with pytest.raises(ValueError, match="cos and sin"):
        m.apply_rope(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(5, 4), torch.zeros(5, 4))
    with pytest.raises(ValueError):
        m.llama_hidden_size(64, multiple_of=0)
    model = m.ModernGPT(m.ModernConfig(vocab_size=10, block_size=8, n_embd=16, n_head=2, n_kv_head=1))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        model(torch.full((1, 3), 10))
    with pytest.raises(FileNotFoundError):
        m.ModernGPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="gpt2"):
        m.ModernGPT.from_pretrained(tmp_path)


SMALL = ["--data-chars", "200000", "--val-chars", "40000", "--steps", "2", "--quiet"]


def test_sweep_cli_checks_its_arguments(tmp_path, capsys):
    from llmcourse import modern

    out = str(tmp_path / "results.json")
    with pytest.raises(SystemExit, match="no run called"):
        modern.main(["--only", "nope", "--out", out, *SMALL])
    with pytest.raises(SystemExit, match="val-chars"):
        modern.main(["--out", out, "--data-chars", "200000", "--val-chars", "3000"])
    with pytest.raises(SystemExit):
        modern.main(["--steps", "0", "--out", out])
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else", "runs": {}}))
    with pytest.raises(SystemExit, match="not a results file"):
        modern.main(["--out", str(tmp_path / "other.json"), *SMALL])
    with pytest.raises(ValueError, match="no run called"):
        modern.run_spec("gpt3")
    assert modern.run_spec("modern-check")["steps"] == 24  # a fixed length, whatever --steps says


def test_sweep_cli_runs_resumes_and_refuses_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from llmcourse import modern

    out = tmp_path / "results.json"
    results = modern.main(["--only", "gpt2", "--out", str(out), *SMALL])
    run = results["runs"]["gpt2"]
    for key in ("params", "non_embedding_params", "val_loss", "val_nats_per_char", "entropy_floor", "seconds",
                "tokens_per_second", "steps", "tokens", "seed", "kind"):
        assert key in run, key
    assert run["steps"] == 2 and run["tokens"] == 2 * 32 * 64
    assert len(run["position_loss"]["sliding"]) == modern.SETTINGS["long_context"]
    assert "full" not in run["position_loss"]  # a learned table has no rows past its block size
    saved = json.loads(out.read_text())
    assert saved["format"] == modern.FORMAT and set(saved["runs"]) == {"gpt2"}
    # resume: every run but one already in the file, so only that one is trained
    for name in modern.RUNS:
        if name not in ("gpt2", "rmsnorm"):
            saved["runs"][name] = dict(run, name=name)
    out.write_text(json.dumps(saved))
    capsys.readouterr()
    results = modern.main(["--out", str(out), *SMALL])
    printed = capsys.readouterr().out
    assert "already done, skipped" in printed and "1 run(s)" in printed
    assert list(json.loads(out.read_text())["runs"]) == list(modern.RUNS)  # in the sweep's order
    # deterministic: the same run again gives the same loss
    again = modern.train_run("rmsnorm", {"steps": 2, "data_chars": 200000, "val_chars": 40000})
    assert again["val_loss"] == pytest.approx(results["runs"]["rmsnorm"]["val_loss"], abs=1e-6)
    with pytest.raises(SystemExit, match="other settings"):
        modern.main(["--out", str(out), "--data-chars", "200000", "--val-chars", "40000", "--steps", "3"])


@pytest.mark.parametrize("kind", ["gpt2", "rmsnorm", "rope", "swiglu", "gqa", "modern"])
def test_sweep_models_have_the_pieces_they_claim(kind, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from llmcourse import modern
    from llmcourse.fallbacks.modern_block import GQAttention, RMSNorm, SwiGLU

    torch.manual_seed(0)
    model = modern.build_model(kind, 100)
    kinds = {type(m).__name__ for m in model.modules()}
    assert (RMSNorm.__name__ in kinds) == (kind in ("rmsnorm", "modern"))
    assert (SwiGLU.__name__ in kinds) == (kind in ("swiglu", "modern"))
    assert (GQAttention.__name__ in kinds) == (kind in ("rope", "gqa", "modern"))
    params, _ = modern.count_params(model)
    gpt2, _ = modern.count_params(modern.build_model("gpt2", 100))
    # within 15% of GPT-2's parameter count (modern: 13% fewer, from fewer key/value heads and no position table)
    assert abs(params - gpt2) / gpt2 < 0.15
    logits, loss = model(torch.randint(0, 100, (2, 16)), torch.randint(0, 100, (2, 16)))
    assert logits.shape == (2, 16, 100) and torch.isfinite(loss)


def test_forward_with_cache_matches_the_full_pass_and_hugging_face_generate():
    from transformers import LlamaForCausalLM

    from llmcourse.fallbacks.generation import KVCache
    from llmcourse.fallbacks.modern_block import ModernConfig, ModernGPT

    torch.manual_seed(0)
    model = ModernGPT(ModernConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                                   intermediate_size=48)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
        idx = torch.randint(0, 40, (2, 10))
        full = model(idx)[0]
        torch.testing.assert_close(model.forward_with_cache(idx), full, atol=1e-5, rtol=1e-5)
        cache = KVCache(2)
        parts = [model.forward_with_cache(idx[:, :6], cache)] + [
            model.forward_with_cache(idx[:, t: t + 1], cache) for t in range(6, 10)]
        torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
        assert cache.layers[0][0].shape == (2, 2, 10, 8)  # n_kv_head heads are cached, not n_head
        # left padding: the padded row gives its real tokens the logits of the unpadded row
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), idx[:1, :7]], dim=1)
        mask = torch.tensor([[0, 0, 0] + [1] * 7])
        torch.testing.assert_close(model.forward_with_cache(padded, None, mask)[:, 3:], model(idx[:1, :7])[0],
                                   atol=1e-5, rtol=1e-5)
        # greedy decoding with the cache equals Hugging Face's generate on the same weights
        ids, cache = idx, KVCache(2)
        logits = model.forward_with_cache(ids, cache)
        for _ in range(8):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            logits = model.forward_with_cache(nxt, cache)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            hf = LlamaForCausalLM.from_pretrained(folder).eval()
        want = hf.generate(idx, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0,
                           attention_mask=torch.ones_like(idx))
        assert torch.equal(ids, want)
