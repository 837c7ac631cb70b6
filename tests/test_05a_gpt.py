"""Chapter 5a: every graded test rejects plausible wrong answers; the public fallback agrees with the solution and
reads and writes the same files.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from conftest import ROOT
from notebook_harness import rejected_by, solution_cells, wrong_answer_tests

CHAPTER = "05a_gpt"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

INIT_TESTS = {"test_init", "test_init_hidden"}
GPT_TESTS = {"test_gpt", "test_gpt_hidden"}
FROM_TESTS = {"test_from_gpt2", "test_from_gpt2_hidden"}
TO_TESTS = {"test_to_gpt2", "test_to_gpt2_hidden"}

INIT = '''
#| export
def init_gpt2_weights(model, n_layer, generator=None):
{body}
    return model
'''

# The solution's GPT cell with the body of __init__ or forward replaced: the given methods stay as they are.
_GPT_CELL = solution_cells(SOLUTION)["GPT"]
_INIT_BODY = _GPT_CELL.split("        ### BEGIN SOLUTION\n")[1].split("        ### END SOLUTION\n")[0]
_FORWARD_BODY = _GPT_CELL.split("        ### BEGIN SOLUTION\n")[2].split("        ### END SOLUTION\n")[0]


def gpt_init(body: str) -> tuple[str, str]:
    return "GPT", _GPT_CELL.replace(_INIT_BODY, body.strip("\n") + "\n", 1)


def gpt_forward(body: str) -> tuple[str, str]:
    return "GPT", _GPT_CELL.replace(_FORWARD_BODY, body.strip("\n") + "\n", 1)


FORWARD = '''
        B, T = idx.shape
        pos = {pos}
        x = {embed}
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head({final})
        loss = None
        if targets is not None:
            {loss}
        return logits, loss
'''
CORRECT = dict(pos="torch.arange(T, device=idx.device)", embed="self.transformer.wte(idx) + self.transformer.wpe(pos)",
               final="self.transformer.ln_f(x)",
               loss="loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)")


def forward(**changes) -> tuple[str, str]:
    return gpt_forward(FORWARD.format(**(CORRECT | changes)))


INIT_BODY = '''
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
'''

FROM = '''
#| export
def from_gpt2_state_dict(state):
    ours = {{}}
    for name, tensor in state.items():
{body}
    return ours
'''

TO = '''
#| export
def to_gpt2_state_dict(model):
    state = {{}}
    for name, param in {source}:
{body}
    return state
'''

# Plausible wrong answers: label -> (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "residual projections not scaled down": ("init_gpt2_weights", INIT.format(body='''
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02, generator=generator)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)'''), INIT_TESTS),
    "residual projections scaled by 1/sqrt(n_layer), not 1/sqrt(2 n_layer)": ("init_gpt2_weights", INIT.format(body='''
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02, generator=generator)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(n_layer), generator=generator)'''), INIT_TESTS),
    "biases left at PyTorch's default": ("init_gpt2_weights", INIT.format(body='''
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02, generator=generator)
    for name, param in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer), generator=generator)'''), INIT_TESTS),
    "embeddings left at N(0, 1)": ("init_gpt2_weights", INIT.format(body='''
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer), generator=generator)'''), INIT_TESTS),
    "init that ignores the generator": ("init_gpt2_weights", INIT.format(body='''
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (LayerNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))'''), {"test_init_hidden"}),
    "positions not added": (*forward(embed="self.transformer.wte(idx)"), GPT_TESTS),
    "positions counted from 1": (*forward(pos="torch.arange(1, T + 1, device=idx.device)"), {"test_gpt_hidden"}),
    "no final LayerNorm": (*forward(final="x"), GPT_TESTS),
    "loss on targets shifted once more": (*forward(
        loss="loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten())"), GPT_TESTS),
    "loss that counts the -100 targets": (*forward(
        loss="loss = -logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).mean()"), GPT_TESTS),
    "lm_head untied (a copy of wte)": (*gpt_init(INIT_BODY + '''
        self.lm_head.weight = nn.Parameter(self.transformer.wte.weight.detach().clone())
'''), GPT_TESTS),
    "lm_head not tied at all": (*gpt_init(INIT_BODY), GPT_TESTS),
    "Conv1D weights not transposed": ("from_gpt2_state_dict", FROM.format(body='''
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        ours["transformer." + name] = tensor'''), FROM_TESTS),
    "only c_attn transposed": ("from_gpt2_state_dict", FROM.format(body='''
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        ours["transformer." + name] = tensor.t() if name.endswith("c_attn.weight") else tensor'''), FROM_TESTS),
    "every 2-D tensor transposed": ("from_gpt2_state_dict", FROM.format(body='''
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        ours["transformer." + name] = tensor.t() if tensor.dim() == 2 else tensor'''), FROM_TESTS),
    "prefix added twice": ("from_gpt2_state_dict", FROM.format(body='''
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        ours["transformer." + name] = tensor.t() if is_conv1d_weight(name) else tensor'''), FROM_TESTS),
    "mask buffers kept": ("from_gpt2_state_dict", FROM.format(body='''
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight":
            continue
        ours["transformer." + name] = tensor.t() if is_conv1d_weight(name) else tensor'''), FROM_TESTS),
    "saved in nn.Linear's layout": ("to_gpt2_state_dict", TO.format(source="model.named_parameters()", body='''
        state[name] = param.detach().cpu().contiguous()'''), TO_TESTS),
    "saved with only c_attn transposed": ("to_gpt2_state_dict", TO.format(source="model.named_parameters()", body='''
        t = param.detach().cpu()
        state[name] = (t.t() if name.endswith("c_attn.weight") else t).contiguous()'''), TO_TESTS),
    "saved with lm_head.weight too": ("to_gpt2_state_dict", TO.format(source="model.state_dict().items()", body='''
        t = param.detach().cpu()
        state[name] = (t.t() if is_conv1d_weight(name) else t).clone().contiguous()'''), TO_TESTS),
    "saved as transposed views (not contiguous)": ("to_gpt2_state_dict", TO.format(
        source="model.named_parameters()", body='''
        t = param.detach().cpu()
        state[name] = t.t() if is_conv1d_weight(name) else t'''), TO_TESTS),
    "saved without the transformer. prefix": ("to_gpt2_state_dict", TO.format(
        source="model.named_parameters()", body='''
        t = param.detach().cpu()
        state[name.removeprefix("transformer.")] = (t.t() if is_conv1d_weight(name) else t).contiguous()'''),
        TO_TESTS),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing here may download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_wrong_answer_template_is_the_solution():
    """The forward template with nothing changed passes every test: each wrong answer differs by one thing."""
    assert "self.lm_head.weight = self.transformer.wte.weight" in _INIT_BODY
    assert not rejected_by(SOLUTION, *forward())


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


def _chapter_and_fallback(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import gpt as ours
    from llmcourse.fallbacks import gpt as fallback

    return ours, importlib.reload(fallback)  # so that it imports this test's chapter modules, as ours does


def _randomize(model, gen, scale=0.1):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()


def test_fallback_agrees_with_solution(monkeypatch):
    ours, fallback = _chapter_and_fallback(monkeypatch)
    public = {n for n, v in vars(ours).items() if not n.startswith("_") and callable(v)
              and getattr(v, "__module__", None) == ours.__name__}
    assert public == {"preset", "init_gpt2_weights", "GPT", "is_conv1d_weight", "from_gpt2_state_dict",
                      "to_gpt2_state_dict", "autocast", "flops_per_token", "estimate_mfu"}
    assert public | {"GPTConfig", "Block", "LayerNorm", "PRESETS", "CONV1D_LAYERS"} <= set(vars(fallback))
    assert ours.GPTConfig is fallback.GPTConfig

    # presets, and their errors
    assert ours.PRESETS == fallback.PRESETS
    for name in ours.PRESETS:
        assert ours.preset(name, vocab_size=100, dropout=0.1) == fallback.preset(name, vocab_size=100, dropout=0.1)
    for module in (ours, fallback):
        with pytest.raises(ValueError, match="course-tiny"):
            module.preset("course-tiny")
        with pytest.raises(ValueError, match="presets"):
            module.preset("gpt5")

    # the same weights give the same logits, loss and gradients
    gen = torch.Generator().manual_seed(0)
    config = ours.GPTConfig(block_size=16, vocab_size=40, n_layer=2, n_head=4, n_embd=32)
    a = _randomize(ours.GPT(config), gen)
    b = fallback.GPT(config).eval()
    b.load_state_dict(a.state_dict())
    assert b.lm_head.weight is b.transformer.wte.weight
    idx = torch.randint(0, 40, (3, 16), generator=gen)
    targets = torch.randint(0, 40, (3, 16), generator=gen)
    targets[1, :5] = -100
    (la, lossa), (lb, lossb) = a(idx, targets), b(idx, targets)
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(lossa, lossb)
    lossa.backward()
    lossb.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    assert a(idx)[1] is None and b(idx)[1] is None
    for non_embedding in (False, True):
        assert a.num_params(non_embedding) == b.num_params(non_embedding)
    for model in (a, b):
        for bad in (torch.zeros(1, 17, dtype=torch.long), torch.tensor([[0, 40]]), torch.tensor([[-1]])):
            with pytest.raises(ValueError):
                model(bad)
        model.use_torch_sdpa(False)
        assert not any(block.attn.use_torch_sdpa for block in model.transformer.h)

    # GPT-2's initialisation, statistically (the two draw their numbers in different orders)
    big = ours.GPTConfig(block_size=64, vocab_size=1000, n_layer=6, n_head=4, n_embd=96)
    for module in (ours, fallback):
        model = module.GPT(big)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                assert torch.all(p == 0), name
            elif ".ln_" in name:
                assert torch.all(p == 1), name
            else:
                expected = 0.02 / math.sqrt(12) if name.endswith("c_proj.weight") else 0.02
                assert abs(p.std().item() - expected) < 0.06 * expected, (module.__name__, name)

    # the checkpoint conversions
    sa, sb = ours.to_gpt2_state_dict(a), fallback.to_gpt2_state_dict(a)
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) and sb[k].is_contiguous() for k in sa)
    back_a, back_b = ours.from_gpt2_state_dict(sa), fallback.from_gpt2_state_dict(sa)
    assert back_a.keys() == back_b.keys() == dict(a.named_parameters()).keys()
    assert all(torch.equal(back_a[k], back_b[k]) for k in back_a)
    old = {k.removeprefix("transformer."): v for k, v in sa.items()} | {
        "h.0.attn.bias": torch.ones(1, 1, 16, 16), "h.0.attn.masked_bias": torch.tensor(-1e4),
        "lm_head.weight": sa["transformer.wte.weight"]}
    assert ours.from_gpt2_state_dict(old).keys() == fallback.from_gpt2_state_dict(old).keys() == back_a.keys()
    for name in ("h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "wte.weight", "h.3.attn.c_proj.weight"):
        assert ours.is_conv1d_weight(name) == fallback.is_conv1d_weight(name)

    # FLOPs, MFU, autocast
    for name in ("course-tiny", "gpt2", "gpt2-xl"):
        cfg = ours.preset(name, vocab_size=ours.PRESETS[name].get("vocab_size", 512))
        for T in (None, 1, 100):
            assert ours.flops_per_token(cfg, T) == fallback.flops_per_token(cfg, T)
        assert ours.estimate_mfu(cfg, 64, 1e5, 1e14) == pytest.approx(fallback.estimate_mfu(cfg, 64, 1e5, 1e14))
    assert ours.flops_per_token(ours.preset("gpt2")) == 854_438_400
    for module in (ours, fallback):
        with module.autocast("cpu"):  # bfloat16 autocast is for CUDA only; elsewhere float32 as it was
            assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")


def test_checkpoints_are_interchangeable(monkeypatch, tmp_path):
    """What one writes, the other reads, and transformers reads both."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    ours, fallback = _chapter_and_fallback(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    config = ours.GPTConfig(block_size=12, vocab_size=30, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
    idx = torch.randint(0, 30, (2, 12), generator=gen)
    for writer, reader in ((ours, fallback), (fallback, ours)):
        model = _randomize(writer.GPT(config), gen)
        folder = tmp_path / writer.__name__
        model.save_pretrained(folder)
        loaded = reader.GPT.from_pretrained(folder).eval()
        hf = GPT2LMHeadModel.from_pretrained(folder).eval()
        assert loaded.config == config
        with torch.no_grad():
            expected = model(idx)[0]
            torch.testing.assert_close(loaded(idx)[0], expected, rtol=0, atol=0)
            torch.testing.assert_close(hf(idx).logits, expected, rtol=0, atol=1e-5)
    for module in (ours, fallback):
        with pytest.raises(FileNotFoundError, match="cache"):
            module.GPT.from_pretrained("llmcourse-test/no-such-model", cache_dir=tmp_path / "empty")
        with pytest.raises(FileNotFoundError):
            module.GPT.from_pretrained(tmp_path / "no" / "such" / "folder")


def test_logits_equal_hf_for_gpt2_small_shapes(monkeypatch):
    """GPT-2 small's exact shapes (random weights, a short sequence): the logits equal HF's to float32 rounding."""
    from transformers import GPT2LMHeadModel

    from llmcourse.hf import copy_from_hf, gpt2_config

    ours, _ = _chapter_and_fallback(monkeypatch)
    config = ours.preset("gpt2")
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(gpt2_config(config)).eval()
    model = copy_from_hf(ours.GPT(config), hf).eval()
    assert model.num_params() == hf.num_parameters() == 124_439_808
    idx = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, rtol=0, atol=1e-4)
