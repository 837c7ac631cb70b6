"""Chapter 4d: every graded test rejects plausible wrong answers; the public fallback agrees with the solution."""

from __future__ import annotations

import torch
from conftest import ROOT
from notebook_harness import wrong_answer_tests

CHAPTER = "04d_residual_and_layernorm"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

LN_TESTS = {"test_layernorm", "test_layernorm_hidden"}
BLOCK_TESTS = {"test_block", "test_block_hidden"}

LAYERNORM = '''
#| export
class LayerNorm(nn.Module):
    def __init__(self, ndim, bias=True, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
{body}
'''

BLOCK = '''
#| export
class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
{body}
'''


def layernorm(body: str) -> tuple[str, str]:
    return "LayerNorm", LAYERNORM.format(body=body)


def block(body: str) -> tuple[str, str]:
    return "Block", BLOCK.format(body=body)


# Plausible wrong answers: label -> (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "LayerNorm with the unbiased variance (divides by C - 1)": (*layernorm('''
        mu = x.mean(dim=-1, keepdim=True)
        y = (x - mu) / torch.sqrt(x.var(dim=-1, keepdim=True) + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y'''), LN_TESTS),
    "LayerNorm with eps outside the square root": (*layernorm('''
        mu = x.mean(dim=-1, keepdim=True)
        y = (x - mu) / (x.std(dim=-1, unbiased=False, keepdim=True) + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y'''), {"test_layernorm_hidden"}),
    "LayerNorm over the batch axis": (*layernorm('''
        mu = x.mean(dim=0, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=0, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y'''), LN_TESTS),
    "LayerNorm over the whole sequence (T and C)": (*layernorm('''
        dims = tuple(range(max(x.dim() - 2, 0), x.dim()))
        mu = x.mean(dim=dims, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)
        y = (x - mu) / torch.sqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y'''), LN_TESTS),
    "LayerNorm without the gain and bias": (*layernorm('''
        mu = x.mean(dim=-1, keepdim=True)
        return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(dim=-1, keepdim=True) + self.eps)'''),
        {"test_layernorm_hidden"}),
    "LayerNorm that calls F.layer_norm (the exercise is to write it)": (*layernorm('''
        return torch.nn.functional.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)'''),
        LN_TESTS),
    "post-LN block (normalizes after the residual addition)": (*block('''
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))'''), BLOCK_TESTS),
    "block without residual connections": (*block('''
        x = self.attn(self.ln_1(x))
        return self.mlp(self.ln_2(x))'''), BLOCK_TESTS),
    "block whose residual carries the normalized stream": (*block('''
        h = self.ln_1(x)
        x = h + self.attn(h)
        h = self.ln_2(x)
        return h + self.mlp(h)'''), BLOCK_TESTS),
    "block that uses ln_1 for both sublayers": (*block('''
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_1(x))'''), {"test_block_hidden"}),
    "block with the MLP before attention": (*block('''
        x = x + self.mlp(self.ln_2(x))
        return x + self.attn(self.ln_1(x))'''), {"test_block_hidden"}),
    "block with its own parameter names": ("Block", '''
#| export
class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attention = CausalSelfAttention(config)
        self.norm2 = LayerNorm(config.n_embd, bias=config.bias)
        self.ffn = MLP(config)

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))
''', BLOCK_TESTS),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import residual_and_layernorm as ours
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import residual_and_layernorm as fallback

    gen = torch.Generator().manual_seed(0)
    for bias in (True, False):
        a, b = ours.LayerNorm(12, bias=bias, eps=1e-3), fallback.LayerNorm(12, bias=bias, eps=1e-3)
        with torch.no_grad():
            for p in a.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        b.load_state_dict(a.state_dict())
        x = torch.randn(3, 4, 12, generator=gen)
        torch.testing.assert_close(a(x), b(x))
    config = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=16)
    a, b = ours.Block(config).eval(), fallback.Block(config).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 16, generator=gen)
    torch.testing.assert_close(a(x), b(x))
