"""Chapter 4b: every graded test rejects plausible wrong answers; GPTConfig and the public fallback agree with the
solution.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch
from conftest import ROOT
from notebook_harness import rejected_by, wrong_answer_tests

CHAPTER = "04b_multi_head_attention"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

SPLIT_TESTS = {"test_split_heads", "test_split_heads_hidden"}
MERGE_TESTS = {"test_merge_heads", "test_merge_heads_hidden"}
ATTN_TESTS = {"test_causal_self_attention", "test_causal_self_attention_hidden"}
ATTN_HIDDEN = {"test_causal_self_attention_hidden"}

# The module as the notebook gives it (__init__ is not an exercise), with a forward that is correct until a wrong
# answer below replaces one of its lines.
CORRECT_FORWARD = """
T = x.size(1)
q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))
if self.use_torch_sdpa:
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
else:
    y = scaled_dot_product_attention(q, k, v, causal_mask(T, device=x.device))
return self.resid_dropout(self.c_proj(merge_heads(y)))
"""


def attention_with_forward(old: str = "", new: str = "") -> str:
    """The CausalSelfAttention cell with ``old`` replaced by ``new`` in the correct forward."""
    assert old in CORRECT_FORWARD, old
    forward = CORRECT_FORWARD.replace(old, new, 1)
    return """
#| export
class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.use_torch_sdpa = False

    def forward(self, x):
""" + textwrap.indent(forward.strip("\n"), " " * 8) + "\n"


# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "split_heads without the transpose: view(B, nh, T, hs)": ("split_heads", '''
#| export
def split_heads(x, n_head):
    B, T, C = x.shape
    return x.view(B, n_head, T, C // n_head)
''', SPLIT_TESTS),
    "split_heads with the heads interleaved: view(B, T, hs, nh)": ("split_heads", '''
#| export
def split_heads(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, C // n_head, n_head).permute(0, 3, 1, 2)
''', SPLIT_TESTS),
    "split_heads that forgets the transpose: (B, T, nh, hs)": ("split_heads", '''
#| export
def split_heads(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head)
''', SPLIT_TESTS),
    "merge_heads without transposing back": ("merge_heads", '''
#| export
def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.reshape(B, T, nh * hs)
''', MERGE_TESTS),
    "merge_heads with view on the transposed (not contiguous) tensor": ("merge_heads", '''
#| export
def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).view(B, T, nh * hs)
''', MERGE_TESTS),
    "merge_heads with the heads interleaved": ("merge_heads", '''
#| export
def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.permute(0, 2, 3, 1).reshape(B, T, nh * hs)
''', MERGE_TESTS),
    "attention with q and k swapped in the split": ("causal_self_attention", attention_with_forward(
        "q, k, v = self.c_attn", "k, q, v = self.c_attn"), ATTN_HIDDEN),
    "attention with k and v swapped in the split": ("causal_self_attention", attention_with_forward(
        "q, k, v = self.c_attn", "q, v, k = self.c_attn"), ATTN_TESTS),
    "attention without the causal mask": ("causal_self_attention", attention_with_forward(
        "causal_mask(T, device=x.device)", "None").replace(", is_causal=True", ""), ATTN_TESTS),
    "attention whose torch path forgets is_causal": ("causal_self_attention", attention_with_forward(
        ", is_causal=True", ""), ATTN_TESTS),
    "attention without c_proj": ("causal_self_attention", attention_with_forward(
        "self.c_proj(merge_heads(y))", "merge_heads(y)"), ATTN_TESTS),
    "attention without resid_dropout": ("causal_self_attention", attention_with_forward(
        "self.resid_dropout(self.c_proj(merge_heads(y)))", "self.c_proj(merge_heads(y))"), ATTN_HIDDEN),
    "attention with heads split and merged without transposes": ("causal_self_attention", attention_with_forward(
        "q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))",
        "q, k, v = (t.reshape(x.size(0), self.n_head, T, -1) for t in (q, k, v))").replace(
        "merge_heads(y)", "y.reshape(x.shape)"), ATTN_TESTS),
    "attention with q, k, v interleaved per head: view(B, T, nh, 3, hs)": ("causal_self_attention",
        attention_with_forward("q, k, v = self.c_attn(x).split(self.n_embd, dim=2)\n"
                               "q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))",
                               "qkv = self.c_attn(x).view(x.size(0), T, self.n_head, 3, -1)\n"
                               "q, k, v = (qkv[..., i, :].transpose(1, 2) for i in range(3))"), ATTN_TESTS),
}


def test_correct_forward_template_passes():
    """The template the wrong answers are made from is right, so each of them fails for its own mistake."""
    assert rejected_by(SOLUTION, "causal_self_attention", attention_with_forward()) == set()


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


@pytest.fixture(autouse=True)
def _chapter_4a_on_its_fallback(request, monkeypatch):
    """The wrong answers' notebook runs as the grader runs it: chapter 4a on its public fallback. (On the
    solution's 4a instead, attention returns its output laid out differently, and a merge_heads that calls view()
    on a non-contiguous tensor would also break CausalSelfAttention's tests, which the grader's run and the outside
    checks find passing: that mistake costs merge_heads' points only.)"""
    if request.node.originalname == "test_wrong_answer_is_rejected":
        monkeypatch.setenv("LLMCOURSE_FALLBACK", "attention")


def _modules(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import multi_head_attention as ours
    from llmcourse.fallbacks import multi_head_attention as fallback

    return ours, fallback


def test_gpt_config_matches_fallback(monkeypatch):
    """Chapter 4b's GPTConfig and the fallback's have the same fields, defaults and validation."""
    ours, fallback = _modules(monkeypatch)
    mine, theirs = ours.GPTConfig, fallback.GPTConfig

    def described(cls):
        return [(f.name, f.type if isinstance(f.type, str) else f.type.__name__, f.default)
                for f in dataclasses.fields(cls)]

    assert described(mine) == described(theirs)
    assert mine.__dataclass_params__.frozen and theirs.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine().n_head = 4
    good = [{}, {"n_head": 1, "n_embd": 1}, {"block_size": 8, "vocab_size": 3, "n_layer": 1, "n_head": 2,
                                             "n_embd": 6, "dropout": 0.5, "bias": False}]
    for kwargs in good:
        assert dataclasses.asdict(mine(**kwargs)) == dataclasses.asdict(theirs(**kwargs))
    bad = [{"n_embd": 100}, {"n_head": 5, "n_embd": 12}, {"n_head": 0}, {"block_size": -1}, {"vocab_size": 1.5},
           {"n_layer": True}, {"n_head": "12"}, {"n_embd": 0}, {"dropout": 1.0}, {"dropout": -0.1}]
    for kwargs in bad:
        with pytest.raises(ValueError) as mine_error:
            mine(**kwargs)
        with pytest.raises(ValueError) as their_error:
            theirs(**kwargs)
        assert str(mine_error.value) == str(their_error.value), kwargs


def test_fallback_agrees_with_solution(monkeypatch):
    ours, fallback = _modules(monkeypatch)
    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"GPTConfig", "split_heads", "merge_heads", "CausalSelfAttention"}
    assert public <= set(vars(fallback))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 12, generator=gen)
    assert torch.equal(ours.split_heads(x, 4), fallback.split_heads(x, 4))
    y = torch.randn(2, 4, 5, 3, generator=gen)
    assert torch.equal(ours.merge_heads(y), fallback.merge_heads(y))
    for kwargs in ({"n_head": 1, "n_embd": 8}, {"n_head": 4, "n_embd": 32}, {"n_head": 3, "n_embd": 24, "bias": False}):
        mine = ours.CausalSelfAttention(ours.GPTConfig(block_size=16, **kwargs))
        theirs = fallback.CausalSelfAttention(fallback.GPTConfig(block_size=16, **kwargs))
        # the same default: code that reads the flag (5c's cached attention) takes chapter 4a's attention
        assert mine.use_torch_sdpa is False and theirs.use_torch_sdpa is False
        theirs.load_state_dict(mine.state_dict())  # strict: the same names and shapes
        x = torch.randn(3, 16, kwargs["n_embd"], generator=gen)
        with torch.no_grad():
            expected = theirs(x)
            for use_torch_sdpa in (False, True):
                mine.use_torch_sdpa = use_torch_sdpa
                torch.testing.assert_close(mine(x), expected, atol=1e-6, rtol=1e-5)
