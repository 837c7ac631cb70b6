"""The fast path (``llmcourse/fast.py``, ``GPT.use_fused_kernels()``): the same model and the same generated tokens
as the plain path, on the instructor's GPT and on the public fallback's, within float32 rounding."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
from conftest import without_key_bias
from torch import nn

from llmcourse.fast import FusedLayerNorm, FusedMLP, forward_with_static_cache, fused_optimizer

SOURCES = ["solutions", "fallback"]


@pytest.fixture(params=SOURCES)
def chapters(request, monkeypatch):
    """(gpt module, generation module) from the instructor's notebooks or the public fallbacks."""
    from llmcourse.chapters import reload_all

    if request.param == "solutions":
        monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    else:
        monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    reload_all()
    return importlib.import_module("llmcourse.chapters.gpt"), importlib.import_module("llmcourse.chapters.generation")


def _pair(gpt, **overrides):
    config = gpt.preset("course-tiny", vocab_size=97, **overrides)
    torch.manual_seed(0)
    plain = gpt.GPT(config)
    fast = copy.deepcopy(plain).use_fused_kernels()
    return plain, fast


def test_same_logits_loss_and_gradients(chapters):
    gpt, _ = chapters
    plain, fast = _pair(gpt)
    x = torch.randint(97, (3, 40), generator=torch.Generator().manual_seed(1))
    y = torch.randint(97, (3, 40), generator=torch.Generator().manual_seed(2))
    logits_p, loss_p = plain(x, y)
    logits_f, loss_f = fast(x, y)
    torch.testing.assert_close(logits_f, logits_p, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(loss_f, loss_p, atol=1e-6, rtol=1e-6)
    loss_p.backward()
    loss_f.backward()
    grads_p = {n: p.grad for n, p in plain.named_parameters()}
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads_p[name], atol=2e-6, rtol=1e-4, msg=name)


def test_same_parameters_names_and_switch_back(chapters):
    gpt, _ = chapters
    plain, fast = _pair(gpt)
    params_before = dict(fast.named_parameters())
    keys_before = list(plain.state_dict())
    assert fast.fused_kernels is True
    assert list(fast.state_dict()) == keys_before  # the same names: save_pretrained and checkpoints unchanged
    assert isinstance(fast.transformer.ln_f, FusedLayerNorm)
    assert all(isinstance(b.mlp, FusedMLP) and b.attn.use_torch_sdpa for b in fast.transformer.h)
    assert fast.transformer.h[0].ln_1.weight is params_before["transformer.h.0.ln_1.weight"]  # shared, not copied
    back = fast.use_fused_kernels(False)
    assert back is fast and fast.fused_kernels is False
    assert type(fast.transformer.ln_f) is type(plain.transformer.ln_f)
    assert all(type(b.mlp) is type(p.mlp) and not b.attn.use_torch_sdpa
               for b, p in zip(fast.transformer.h, plain.transformer.h))
    assert dict(fast.named_parameters()) == params_before
    x = torch.randint(97, (2, 20))
    torch.testing.assert_close(fast(x)[0], plain(x)[0])


def test_training_fast_matches_plain(chapters):
    """Ten steps of chapter 5b's AdamW, plain, against the fast path with the fused AdamW: the same weights."""
    gpt, _ = chapters
    from llmcourse.chapters.training import configure_optimizer

    plain, fast = _pair(gpt)
    opt_p = configure_optimizer(plain, 0.1, 3e-3)
    opt_f = fused_optimizer(configure_optimizer(fast, 0.1, 3e-3))
    assert opt_f.param_groups[0]["fused"] and opt_f.param_groups[1]["weight_decay"] == 0.0
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        x, y = torch.randint(97, (4, 32), generator=gen), torch.randint(97, (4, 32), generator=gen)
        for model, opt in ((plain, opt_p), (fast, opt_f)):
            model(x, y)[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    fast_params = dict(fast.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(without_key_bias(name, fast_params[name]), without_key_bias(name, p), atol=1e-5,
                                   rtol=1e-4, msg=name)
    x = torch.randint(97, (2, 32), generator=gen)
    torch.testing.assert_close(fast(x)[0], plain(x)[0], atol=1e-4, rtol=1e-4)


def test_fused_optimizer_leaves_other_optimizers_alone():
    layer = nn.Linear(3, 3)
    sgd = torch.optim.SGD(layer.parameters(), lr=0.1)
    assert fused_optimizer(sgd) is sgd


def test_generate_same_tokens(chapters):
    """Greedy, sampled (same generator), left-padded batches, and without the cache: the same tokens."""
    gpt, generation = chapters
    plain, fast = _pair(gpt)
    prompt = torch.randint(97, (3, 7), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(prompt)
    mask[0, :3] = 0
    mask[2, :1] = 0
    cases = [dict(max_new_tokens=30, eos_token_id=None),
             dict(max_new_tokens=30, do_sample=True, top_k=20, top_p=0.9, eos_token_id=None),
             dict(max_new_tokens=20, attention_mask=mask, eos_token_id=None),
             dict(max_new_tokens=20, use_cache=False, eos_token_id=None),
             dict(max_new_tokens=12, do_sample=True, num_return_sequences=2, no_repeat_ngram_size=2,
                  repetition_penalty=1.3, eos_token_id=None)]
    for kwargs in cases:
        sampled = kwargs.get("do_sample", False)
        out_p = generation.generate(plain, prompt, generator=torch.Generator().manual_seed(5) if sampled else None,
                                    **kwargs)
        out_f = generation.generate(fast, prompt, generator=torch.Generator().manual_seed(5) if sampled else None,
                                    **kwargs)
        assert torch.equal(out_f, out_p), kwargs


def test_static_cache_is_written_in_place(chapters):
    gpt, generation = chapters
    _, fast = _pair(gpt)
    cache = generation.KVCache(fast.config.n_layer)
    prompt = torch.randint(97, (2, 5))
    forward_with_static_cache(fast.eval(), prompt, cache)
    buffer = cache.static.k
    assert buffer.shape == (fast.config.n_layer, 2, fast.config.n_head, fast.config.block_size,
                            fast.config.n_embd // fast.config.n_head)
    assert len(cache) == 5
    logits = forward_with_static_cache(fast, prompt[:, -1:], cache)
    assert cache.static.k is buffer and len(cache) == 6  # no new allocation, one more position
    assert cache.layers[0][0].data_ptr() == buffer[0].data_ptr()
    with torch.no_grad():
        full = fast(torch.cat([prompt, prompt[:, -1:]], dim=1))[0][:, -1:]
    torch.testing.assert_close(logits, full, atol=2e-5, rtol=1e-5)


def test_unknown_mlp_is_refused_clearly(chapters):
    gpt, _ = chapters
    model = gpt.GPT(gpt.preset("course-tiny", vocab_size=50))
    model.transformer.h[0].mlp = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(TypeError, match="c_fc"):
        model.use_fused_kernels()


class _Wrapped(nn.Module):
    """A layer around c_attn, as chapter 6c's LoRA puts one: the fast path must call it, not read its weight."""

    def __init__(self, inner: nn.Linear):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 1.5


def test_generation_goes_through_the_static_cache_and_calls_wrapped_layers(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    import llmcourse.fast as fast_module
    from llmcourse.chapters import reload_all

    reload_all()
    gpt, generation = (importlib.import_module(f"llmcourse.chapters.{m}") for m in ("gpt", "generation"))
    calls = []
    real = fast_module.forward_with_static_cache
    monkeypatch.setattr(fast_module, "forward_with_static_cache", lambda *a, **k: calls.append(1) or real(*a, **k))
    plain, fast = _pair(gpt)
    for model in (plain, fast):
        model.transformer.h[1].attn.c_attn = _Wrapped(model.transformer.h[1].attn.c_attn)
    prompt = torch.randint(97, (2, 6), generator=torch.Generator().manual_seed(6))
    out_p = generation.generate(plain, prompt, max_new_tokens=25, eos_token_id=None)
    out_f = generation.generate(fast, prompt, max_new_tokens=25, eos_token_id=None)
    assert len(calls) == 25  # the prompt, then one call per new token but the last
    assert torch.equal(out_f, out_p)
    cache = generation.KVCache(fast.config.n_layer)
    real(fast.eval(), prompt, cache)
    assert cache.static.weights is None  # a wrapped layer: the modules are called
    fast.transformer.h[1].attn.c_attn = fast.transformer.h[1].attn.c_attn.inner
    cache = generation.KVCache(fast.config.n_layer)
    real(fast, prompt, cache)
    assert cache.static.weights is not None  # every layer the fast path's: the weights are read directly


def test_a_copy_of_a_fast_model_switches_back(chapters):
    """deepcopy (as the benchmarks and chapter 6's fine-tuning do) keeps both paths working on the copy's weights."""
    gpt, _ = chapters
    plain, fast = _pair(gpt)
    twin = copy.deepcopy(fast).use_fused_kernels(False)
    assert all(type(b.mlp) is type(p.mlp) for b, p in zip(twin.transformer.h, plain.transformer.h))
    assert twin.transformer.h[0].ln_1.weight is dict(twin.named_parameters())["transformer.h.0.ln_1.weight"]
    assert twin.transformer.h[0].ln_1.weight is not fast.transformer.h[0].ln_1.weight
    x = torch.randint(97, (2, 20))
    torch.testing.assert_close(twin(x)[0], plain(x)[0])
