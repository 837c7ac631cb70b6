"""Chapter 4a: every graded test rejects plausible wrong answers; the public fallback agrees with the solution.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)"""

from __future__ import annotations

import torch
from conftest import ROOT
from notebook_harness import wrong_answer_tests

CHAPTER = "04a_attention"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

SOFTMAX_TESTS = {"test_softmax", "test_softmax_hidden"}
SDPA_TESTS = {"test_sdpa", "test_sdpa_hidden"}
MASK_TESTS = {"test_causal_mask", "test_causal_mask_hidden"}

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "softmax without subtracting the maximum": ("softmax", '''
#| export
def softmax(x, dim=-1):
    return x.exp() / x.exp().sum(dim=dim, keepdim=True)
''', SOFTMAX_TESTS),
    "softmax with one maximum for the whole tensor": ("softmax", '''
#| export
def softmax(x, dim=-1):
    e = (x - x.max()).exp()
    return e / e.sum(dim=dim, keepdim=True)
''', {"test_softmax_hidden"}),
    "softmax that ignores dim": ("softmax", '''
#| export
def softmax(x, dim=-1):
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)
''', SOFTMAX_TESTS),
    "softmax that calls torch.softmax (the exercise is to write it)": ("softmax", '''
#| export
def softmax(x, dim=-1):
    return torch.softmax(x, dim=dim)
''', SOFTMAX_TESTS),
    "softmax that calls torch.softmax, imported before the check under another name": ("softmax", '''
#| export
from torch import softmax as torch_softmax


def softmax(x, dim=-1):
    return torch_softmax(x, dim=dim)
''', SOFTMAX_TESTS),
    "attention that calls F.scaled_dot_product_attention (the exercise is to write it)": (
        "scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
''', SDPA_TESTS),
    "attention without the sqrt(d_k) scaling": ("scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return softmax(scores, dim=-1) @ v
''', SDPA_TESTS),
    "attention scaled by d_k instead of sqrt(d_k)": ("scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / q.size(-1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return softmax(scores, dim=-1) @ v
''', SDPA_TESTS),
    "attention with the mask applied after the softmax": ("scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    weights = softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0) if mask.dtype == torch.bool else weights * mask.exp()
    return weights @ v
''', SDPA_TESTS),
    "attention with the softmax over the queries": ("scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return softmax(scores, dim=-2) @ v
''', SDPA_TESTS),
    "attention with k.T, which reverses every axis": ("scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.T / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return softmax(scores, dim=-1) @ v
''', SDPA_TESTS),
    "attention that ignores float masks": ("scaled_dot_product_attention", '''
#| export
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1) @ v
''', {"test_sdpa_hidden"}),
    "causal mask without the diagonal": ("causal_mask", '''
#| export
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(-1)
''', MASK_TESTS),
    "causal mask that looks ahead (upper triangle)": ("causal_mask", '''
#| export
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).triu()
''', MASK_TESTS),
    "causal mask of floats": ("causal_mask", '''
#| export
def causal_mask(T, device=None):
    return torch.ones(T, T, device=device).tril()
''', MASK_TESTS),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import attention as ours
    from llmcourse.fallbacks import attention as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"softmax", "scaled_dot_product_attention", "causal_mask"}
    assert public <= set(vars(fallback))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, generator=gen)
    torch.testing.assert_close(ours.softmax(x, dim=1), fallback.softmax(x, dim=1))
    for T in (1, 4, 9):
        assert torch.equal(ours.causal_mask(T), fallback.causal_mask(T))
    q, k, v = (torch.randn(2, 2, 6, 8, generator=gen) for _ in range(3))
    for mask in (None, ours.causal_mask(6), torch.randn(6, 6, generator=gen)):
        torch.testing.assert_close(ours.scaled_dot_product_attention(q, k, v, mask),
                                   fallback.scaled_dot_product_attention(q, k, v, mask))
