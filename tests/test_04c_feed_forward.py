"""Chapter 4c: every graded test rejects plausible wrong answers; the public fallback agrees with the solution.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)"""

from __future__ import annotations

import torch
from conftest import ROOT
from notebook_harness import rejected_by, wrong_answer_tests

CHAPTER = "04c_feed_forward"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

EXACT_TESTS = {"test_gelu_exact", "test_gelu_exact_hidden"}
GELU_TESTS = {"test_gelu", "test_gelu_hidden"}
MLP_TESTS = {"test_mlp", "test_mlp_hidden"}
MLP_HIDDEN = {"test_mlp_hidden"}

CORRECT_MLP = '''
#| export
class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(gelu(self.c_fc(x))))
'''


def mlp_with(old: str = "", new: str = "") -> str:
    """The MLP cell, correct until ``old`` is replaced by ``new``."""
    assert old in CORRECT_MLP, old
    return CORRECT_MLP.replace(old, new)


# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "exact GELU with erf(x) instead of erf(x / sqrt(2))": ("gelu_exact", '''
#| export
def gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x))
''', EXACT_TESTS),
    "exact GELU without the factor 1/2": ("gelu_exact", '''
#| export
def gelu_exact(x):
    return x * (1 + torch.erf(x / math.sqrt(2)))
''', EXACT_TESTS),
    "exact GELU that is the tanh approximation": ("gelu_exact", '''
#| export
def gelu_exact(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
''', EXACT_TESTS),
    "exact GELU as x * sigmoid(1.702 x)": ("gelu_exact", '''
#| export
def gelu_exact(x):
    return x * torch.sigmoid(1.702 * x)
''', EXACT_TESTS),
    "exact GELU that calls F.gelu (the exercise is to write it)": ("gelu_exact", '''
#| export
def gelu_exact(x):
    return torch.nn.functional.gelu(x)
''', EXACT_TESTS),
    "tanh GELU with nn.GELU(approximate='tanh') (the exercise is to write it)": ("gelu", '''
#| export
def gelu(x):
    return nn.GELU(approximate="tanh")(x)
''', GELU_TESTS),
    "tanh GELU that calls transformers' gelu_new (the exercise is to write it)": ("gelu", '''
#| export
from transformers.activations import NewGELUActivation


def gelu(x):
    return NewGELUActivation()(x)
''', GELU_TESTS),
    "tanh GELU with 0.044715 x^2 instead of x^3": ("gelu", '''
#| export
def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**2)))
''', GELU_TESTS),
    "tanh GELU without sqrt(2/pi)": ("gelu", '''
#| export
def gelu(x):
    return 0.5 * x * (1 + torch.tanh(x + 0.044715 * x**3))
''', GELU_TESTS),
    "tanh GELU with sqrt(pi/2) instead of sqrt(2/pi)": ("gelu", '''
#| export
def gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(math.pi / 2) * (x + 0.044715 * x**3)))
''', GELU_TESTS),
    "tanh GELU that is the exact GELU": ("gelu", '''
#| export
def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
''', GELU_TESTS),
    "MLP with a residual + x inside": ("mlp", mlp_with(
        "return self.dropout(self.c_proj(gelu(self.c_fc(x))))",
        "return x + self.dropout(self.c_proj(gelu(self.c_fc(x))))"), MLP_TESTS),
    "MLP with ReLU": ("mlp", mlp_with("gelu(self.c_fc(x))", "relu(self.c_fc(x))"), MLP_TESTS),
    "MLP with the exact GELU": ("mlp", mlp_with("gelu(self.c_fc(x))", "gelu_exact(self.c_fc(x))"), MLP_TESTS),
    "MLP with hidden width C instead of 4C": ("mlp", mlp_with(
        "4 * config.n_embd", "config.n_embd").replace("4 * config.n_embd", "config.n_embd"), MLP_TESTS),
    "MLP with c_proj before the activation": ("mlp", mlp_with(
        "self.c_proj(gelu(self.c_fc(x)))", "gelu(self.c_proj(self.c_fc(x)))"), MLP_TESTS),
    "MLP with dropout on the hidden layer instead of the output": ("mlp", mlp_with(
        "self.dropout(self.c_proj(gelu(self.c_fc(x))))", "self.c_proj(self.dropout(gelu(self.c_fc(x))))"),
        MLP_HIDDEN),
    "MLP without bias=config.bias": ("mlp", mlp_with(", bias=config.bias", "").replace(", bias=config.bias", ""),
                                     MLP_HIDDEN),
}


def test_correct_mlp_template_passes():
    """The template the MLP's wrong answers are made from is right, so each fails for its own mistake."""
    assert rejected_by(SOLUTION, "mlp", mlp_with()) == set()


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import feed_forward as ours
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import feed_forward as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"relu", "gelu_exact", "gelu", "MLP"}
    assert public <= set(vars(fallback))
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(3, 7, generator=gen, dtype=dtype) * 4
        for name in ("relu", "gelu_exact", "gelu"):
            torch.testing.assert_close(getattr(ours, name)(x), getattr(fallback, name)(x), atol=2e-6, rtol=1e-6)
    for kwargs in ({"n_embd": 8, "n_head": 1}, {"n_embd": 32, "n_head": 4}, {"n_embd": 24, "n_head": 3, "bias": False}):
        config = GPTConfig(block_size=16, **kwargs)
        mine, theirs = ours.MLP(config), fallback.MLP(config)
        theirs.load_state_dict(mine.state_dict())  # strict: the same names and shapes
        x = torch.randn(2, 16, config.n_embd, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(mine(x), theirs(x))
