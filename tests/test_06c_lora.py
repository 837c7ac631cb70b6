"""Chapter 6c: every graded test rejects plausible wrong answers; the public fallback agrees with the solution and
with ``peft`` (Hugging Face's LoRA) on GPT-2 and on a plain linear layer.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests
from torch import nn

CHAPTER = "06c_lora"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

LINEAR = {"test_lora_linear", "test_lora_linear_hidden"}
ADD = {"test_add_lora", "test_add_lora_hidden"}
ADD_HIDDEN = {"test_add_lora_hidden"}


edit = solution_editor(SOLUTION)


# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it). A mistake in
# LoRALinear also shows in 6c.2's hidden test, which compares whole models with peft and merges them.
WRONG_ANSWERS = {
    # 6c.1 LoRALinear
    "B random at the start (the model no longer starts at the pretrained one)": ("lora_linear", edit(
        "lora_linear", ("nn.Parameter(torch.zeros(base.out_features", "nn.Parameter(torch.randn(base.out_features")),
        LINEAR | ADD),
    "no alpha / r scale in forward": ("lora_linear", edit(
        "lora_linear", ("return self.base(x) + update * self.scaling", "return self.base(x) + update")),
        LINEAR | ADD_HIDDEN),
    "scale alpha instead of alpha / r": ("lora_linear", edit(
        "lora_linear", ("self.scaling = self.alpha / self.r", "self.scaling = self.alpha")), LINEAR | ADD_HIDDEN),
    "scale r / alpha instead of alpha / r": ("lora_linear", edit(
        "lora_linear", ("self.scaling = self.alpha / self.r", "self.scaling = self.r / self.alpha")),
        LINEAR | ADD_HIDDEN),
    "A and B swapped: A (in, r), B (r, out)": ("lora_linear", edit(
        "lora_linear", ("torch.empty(self.r, base.in_features, **like)",
                        "torch.empty(base.in_features, self.r, **like)"),
        ("torch.zeros(base.out_features, self.r, **like)", "torch.zeros(self.r, base.out_features, **like)"),
        ("update = x @ self.lora_A.T @ self.lora_B.T", "update = x @ self.lora_A @ self.lora_B"),
        ("self.base.weight += (self.lora_B @ self.lora_A) * self.scaling",
         "self.base.weight += (self.lora_A @ self.lora_B).T * self.scaling"),
        ("self.base.weight -= (self.lora_B @ self.lora_A) * self.scaling",
         "self.base.weight -= (self.lora_A @ self.lora_B).T * self.scaling")), LINEAR | ADD_HIDDEN),
    "A at zero and B random (the update starts at zero, but A never learns a direction from B)": ("lora_linear", edit(
        "lora_linear", ("nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
                        "nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))"),
        ("self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.r, **like))",
         "self.lora_B = nn.Parameter(torch.empty(base.out_features, self.r, **like))"),
        ("self.lora_A = nn.Parameter(torch.empty(self.r, base.in_features, **like))",
         "self.lora_A = nn.Parameter(torch.zeros(self.r, base.in_features, **like))")), LINEAR),
    "A from a standard normal, not peft's Kaiming-uniform": ("lora_linear", edit(
        "lora_linear", ("nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))", "nn.init.normal_(self.lora_A)")),
        {"test_lora_linear_hidden"}),
    "A and B in float32 whatever the base's dtype": ("lora_linear", edit(
        "lora_linear", ("like = dict(device=base.weight.device, dtype=base.weight.dtype)", "like = dict()")),
        {"test_lora_linear_hidden"}),
    "base not frozen": ("lora_linear", edit(
        "lora_linear", ("        base.requires_grad_(False)  # W0 and b stay as pretrained\n", "")), LINEAR),
    "forward that adds the update to a merged layer too": ("lora_linear", edit(
        "lora_linear", ("        if self.merged:\n            return self.base(x)  # (..., d): the update is in "
                        "base.weight\n", "")), LINEAR | ADD_HIDDEN),
    "merge without the scale": ("lora_linear", edit(
        "lora_linear", ("self.base.weight += (self.lora_B @ self.lora_A) * self.scaling",
                        "self.base.weight += self.lora_B @ self.lora_A"),
        ("self.base.weight -= (self.lora_B @ self.lora_A) * self.scaling",
         "self.base.weight -= self.lora_B @ self.lora_A")), LINEAR | ADD_HIDDEN),
    "merge with the update transposed (A^T B^T)": ("lora_linear", edit(
        "lora_linear", ("self.base.weight += (self.lora_B @ self.lora_A) * self.scaling",
                        "self.base.weight += (self.lora_A.T @ self.lora_B.T) * self.scaling"),
        ("self.base.weight -= (self.lora_B @ self.lora_A) * self.scaling",
         "self.base.weight -= (self.lora_A.T @ self.lora_B.T) * self.scaling")), LINEAR | ADD_HIDDEN),
    "merge without torch.no_grad (the weight becomes a result of autograd)": ("lora_linear", edit(
        "lora_linear", ("        with torch.no_grad():\n            self.base.weight += (self.lora_B @ self.lora_A) "
                        "* self.scaling  # (d, k)\n", "        self.base.weight += (self.lora_B @ self.lora_A) * "
                        "self.scaling\n")), LINEAR),
    "unmerge that does not restore the weight": ("lora_linear", edit(
        "lora_linear", ("        with torch.no_grad():\n            self.base.weight -= (self.lora_B @ self.lora_A) "
                        "* self.scaling  # (d, k)\n", "")), LINEAR | ADD_HIDDEN),
    "merge that forgets to set merged": ("lora_linear", edit(
        "lora_linear", ("        self.merged = True\n", "")), LINEAR | ADD_HIDDEN),
    # 6c.2 add_lora, trainable_parameters
    "add_lora that leaves the other parameters trainable": ("add_lora", edit(
        "add_lora", ("    model.requires_grad_(False)  # first: the new A and B must stay trainable\n", "")), ADD),
    "add_lora that freezes after wrapping (A and B frozen too)": ("add_lora", edit(
        "add_lora", ("    model.requires_grad_(False)  # first: the new A and B must stay trainable\n", ""),
        ("    return model\n", "    model.requires_grad_(False)\n    return model\n")), ADD),
    "add_lora that looks at the model's direct children only": ("add_lora", edit(
        "add_lora", ("for parent in list(model.modules()):", "for parent in [model]:")), ADD),
    "add_lora that wraps the first matching layer only": ("add_lora", edit(
        "add_lora", ("                setattr(parent, name, LoRALinear(child, r, alpha))\n",
                     "                setattr(parent, name, LoRALinear(child, r, alpha))\n"
                     "                return model\n")), ADD),
    "trainable_parameters counting the frozen parameters too": ("add_lora", edit(
        "add_lora", ("return sum(p.numel() for p in model.parameters() if p.requires_grad)",
                     "return sum(p.numel() for p in model.parameters())")), ADD),
    "trainable_parameters counting tensors, not their elements": ("add_lora", edit(
        "add_lora", ("return sum(p.numel() for p in model.parameters() if p.requires_grad)",
                     "return sum(1 for p in model.parameters() if p.requires_grad)")), ADD),
    "trainable_parameters counting a shared weight twice": ("add_lora", edit(
        "add_lora", ("return sum(p.numel() for p in model.parameters() if p.requires_grad)",
                     "return sum(p.numel() for p in model.parameters(remove_duplicate=False) if p.requires_grad)")),
        ADD),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the fallback against the solution and against peft


def _random_gpt(GPT, GPTConfig, seed=0, vocab_size=61, n_layer=2, n_head=2, n_embd=16):
    model = GPT(GPTConfig(block_size=32, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=gen)
    return model


def _set_lora(model, lora_cls, seed):
    """Random A and B (std 0.3) in every LoRALinear of model; their names, in order."""
    gen = torch.Generator().manual_seed(seed)
    names = sorted(n for n, m in model.named_modules() if isinstance(m, lora_cls))
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) * 0.3)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.3)
    return names


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "metrics,applications")
    from llmcourse.chapters import lora as ours
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import lora as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"LoRALinear", "add_lora", "trainable_parameters"}
    assert public <= set(vars(fallback))

    # one layer: the same initialisation from the same seed, the same output, gradients and merged weight
    for r, alpha, dtype in [(1, 1.0, torch.float32), (4, 8.0, torch.float32), (3, 5.0, torch.float64),
                            (40, 16.0, torch.float32)]:
        layers = []
        for impl in (ours, fallback):
            torch.manual_seed(r)
            base = nn.Linear(24, 32).to(dtype)
            layers.append(impl.LoRALinear(base, r, alpha))
        a, b = layers
        torch.testing.assert_close(a.lora_A, b.lora_A, rtol=0, atol=0)
        torch.testing.assert_close(a.lora_B, b.lora_B, rtol=0, atol=0)
        assert a.scaling == b.scaling == alpha / r
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            B = torch.randn(32, r, generator=gen, dtype=dtype)
            a.lora_B.copy_(B)
            b.lora_B.copy_(B)
        x = torch.randn(2, 7, 24, generator=gen, dtype=dtype)
        ya, yb = a(x), b(x)
        torch.testing.assert_close(ya, yb)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(a.lora_A.grad, b.lora_A.grad)
        torch.testing.assert_close(a.lora_B.grad, b.lora_B.grad)
        a.merge()
        b.merge()
        torch.testing.assert_close(a.base.weight, b.base.weight)
        for layer in (a, b):
            with pytest.raises(RuntimeError):
                layer.merge()
            layer.unmerge()
            with pytest.raises(RuntimeError):
                layer.unmerge()

    # a GPT: the same layers adapted, the same counts and logits
    idx = torch.randint(0, 61, (3, 9), generator=torch.Generator().manual_seed(2))
    for targets in [("c_attn",), ("c_attn", "c_proj"), ("c_fc", "lm_head")]:
        models = [impl.add_lora(_random_gpt(GPT, GPTConfig, 1), 4, 8, targets) for impl in (ours, fallback)]
        names = [_set_lora(model, impl.LoRALinear, 3) for model, impl in zip(models, (ours, fallback))]
        assert names[0] == names[1] and names[0]
        assert ours.trainable_parameters(models[0]) == fallback.trainable_parameters(models[1])
        torch.testing.assert_close(models[0](idx)[0], models[1](idx)[0])
    plain = _random_gpt(GPT, GPTConfig, 2)
    assert ours.trainable_parameters(plain) == fallback.trainable_parameters(plain) == plain.num_params()
    for impl in (ours, fallback):
        with pytest.raises(ValueError, match="c_attn"):
            impl.add_lora(_random_gpt(GPT, GPTConfig), 4, 8, ("q_proj",))
        with pytest.raises(ValueError):
            impl.LoRALinear(nn.Linear(3, 3), 0, 1.0)
        with pytest.raises(ValueError):
            impl.add_lora(_random_gpt(GPT, GPTConfig), 4, -1.0)
        with pytest.raises(TypeError):
            impl.LoRALinear(nn.Conv1d(3, 3, 1), 2, 1.0)


def _peft():
    import peft

    return peft


def _hf_copy(model):
    from transformers import GPT2LMHeadModel

    from llmcourse.hf import gpt2_config, our_state_dict_to_hf

    hf = GPT2LMHeadModel(gpt2_config(model.config)).eval()
    state = our_state_dict_to_hf(model.state_dict())
    hf.load_state_dict({key: state[key] for key in hf.state_dict()})
    return hf


def _peft_model(model, r, alpha, targets, **kwargs):
    peft = _peft()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                          lora_dropout=0.0, **kwargs))


@pytest.mark.parametrize("r, alpha, targets", [(1, 1.0, ("c_attn",)), (4, 8.0, ("c_attn",)),
                                               (2, 3.0, ("c_attn", "c_proj")), (8, 4.0, ("c_fc",)),
                                               (16, 32.0, ("c_attn", "c_proj", "c_fc"))])
def test_fallback_equals_peft_on_gpt2(fallback_gpt, r, alpha, targets):
    """The fallback's add_lora on our GPT == peft's LoRA on HF GPT-2 (Conv1D, fan_in_fan_out=True), same A and B:
    logits, gradients of A and B, trainable counts, the merged model."""
    from llmcourse.fallbacks.lora import LoRALinear, add_lora, trainable_parameters

    GPT, GPTConfig = fallback_gpt
    model = _random_gpt(GPT, GPTConfig, 4, n_layer=3, n_embd=24, n_head=3)
    ref = _peft_model(_hf_copy(model), r, alpha, targets, fan_in_fan_out=True)
    idx = torch.randint(0, 61, (4, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(idx)[0]
        torch.testing.assert_close(ref(input_ids=idx).logits, before, atol=1e-5, rtol=1e-5)
    add_lora(model, r, alpha, targets)
    assert trainable_parameters(model) == ref.get_nb_trainable_parameters()[0]
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], before, atol=1e-5, rtol=1e-5)  # B = 0: unchanged
    names = _set_lora(model, LoRALinear, 7)
    assert len(names) == sum(isinstance(m, _peft().tuners.lora.LoraLayer) for m in ref.modules())
    with torch.no_grad():
        for name in names:
            ours, theirs = model.get_submodule(name), ref.base_model.model.get_submodule(name)
            assert theirs.scaling["default"] == ours.scaling
            theirs.lora_A["default"].weight.copy_(ours.lora_A)
            theirs.lora_B["default"].weight.copy_(ours.lora_B)
    ours_logits, theirs_logits = model(idx)[0], ref(input_ids=idx).logits
    torch.testing.assert_close(ours_logits, theirs_logits, atol=1e-5, rtol=1e-5)
    ours_logits.logsumexp(-1).mean().backward()
    theirs_logits.logsumexp(-1).mean().backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == \
        {f"{n}.lora_{m}" for n in names for m in "AB"}
    for name in names:
        ours, theirs = model.get_submodule(name), ref.base_model.model.get_submodule(name)
        torch.testing.assert_close(ours.lora_A.grad, theirs.lora_A["default"].weight.grad, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(ours.lora_B.grad, theirs.lora_B["default"].weight.grad, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        for name in names:
            model.get_submodule(name).merge()
        ref.merge_adapter()
        for name in names:  # peft merges the transposed update into GPT-2's (in, out) Conv1D weight
            torch.testing.assert_close(model.get_submodule(name).base.weight,
                                       ref.base_model.model.get_submodule(name).base_layer.weight.T)
        # merging rounds W0 + (alpha / r) B A to float32: a large update (r = 16) moves logits by ~2e-5
        torch.testing.assert_close(model(idx)[0], ours_logits.detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("r, alpha", [(1, 1.0), (2, 16.0), (8, 8.0), (32, 4.0)])
def test_fallback_equals_peft_on_a_linear_layer(r, alpha):
    from llmcourse.fallbacks.lora import LoRALinear

    class OneLayer(nn.Module):
        def __init__(self, proj):
            super().__init__()
            self.proj = proj

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(r)
    base = nn.Linear(20, 12)
    twin = copy.deepcopy(base)
    layer = LoRALinear(base, r, alpha)
    ref = _peft_model(OneLayer(twin), r, alpha, ["proj"])
    theirs = ref.base_model.model.proj
    # the same initialisation: kaiming_uniform_(a=sqrt(5)) for A, U(-1/sqrt(k), 1/sqrt(k)), and zeros for B (peft
    # draws from the generator in another order, so the values differ)
    for A in (layer.lora_A, theirs.lora_A["default"].weight):
        assert A.shape == (r, 20) and A.abs().max() <= 1 / math.sqrt(20) and A.abs().max() > 0.5 / math.sqrt(20)
    assert not layer.lora_B.any() and not theirs.lora_B["default"].weight.any()
    assert layer.scaling == theirs.scaling["default"] == alpha / r
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(12, r, generator=gen))
        theirs.lora_A["default"].weight.copy_(layer.lora_A)
        theirs.lora_B["default"].weight.copy_(layer.lora_B)
    x = torch.randn(3, 4, 20, generator=gen)
    torch.testing.assert_close(layer(x), ref(x))
    before = base.weight.detach().clone()
    with torch.no_grad():
        layer.merge()
        ref.merge_adapter()
        torch.testing.assert_close(base.weight, theirs.base_layer.weight)
        torch.testing.assert_close(layer(x), ref(x))
        layer.unmerge()
        ref.unmerge_adapter()
        torch.testing.assert_close(base.weight, theirs.base_layer.weight)
        torch.testing.assert_close(base.weight, before, atol=1e-5, rtol=0)


def test_fallback_validates_its_arguments(fallback_gpt):
    from llmcourse.fallbacks.lora import LoRALinear, add_lora

    GPT, GPTConfig = fallback_gpt
    for r, error in [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="rank"):
            LoRALinear(nn.Linear(4, 4), r, 1.0)
    for alpha, error in [(0, ValueError), (-1.0, ValueError), (math.inf, ValueError), ("8", TypeError)]:
        with pytest.raises(error, match="alpha"):
            LoRALinear(nn.Linear(4, 4), 2, alpha)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), 2, 1.0)
    with pytest.raises(TypeError, match="already"):
        LoRALinear(LoRALinear(nn.Linear(4, 4), 2, 1.0), 2, 1.0)
    model = _random_gpt(GPT, GPTConfig)
    with pytest.raises(ValueError, match=r"\['c_attn', 'c_fc', 'c_proj', 'lm_head'\]"):
        add_lora(model, 4, 8.0, ("q_proj", "v_proj"))
    assert all(p.requires_grad for p in model.parameters()), "a refused call changes nothing"
    add_lora(model, 4, 8.0, "c_attn")  # one name as a str
    with pytest.raises(ValueError, match="already"):
        add_lora(model, 4, 8.0)
    with pytest.raises(TypeError):
        add_lora(model, 4, 8.0, ())
