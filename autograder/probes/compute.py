"""Outside checks of chapter 8b (compute, memory, int8 quantization), one or more per graded cell.

Each probe mirrors its test cell: the counts and byte sizes are compared exactly with the fallback's, which reads
them off a model built on the ``meta`` device and off the cache chapter 5c's ``forward_with_cache`` fills; the int8
codes exactly with ``torch.quantize_per_channel``'s. Where a visible test checks a property (an error bound, which
layers were replaced), the probe returns whether it holds, computed the same way, and the fallback's answer is the
expected one. The notebook's hidden tests run the quantizer with PyTorch's quantization functions unavailable; here
the same guarded run is reported as ``own_work`` ("ok" or the error), judged without the reference (the fallback
*is* PyTorch's quantization, so its own guarded run fails by design).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import nn

from autograder.probes import Probe, close, equal
from autograder.probes import raised as _raises

# ---------------------------------------------------------------------------------------------------------------
# helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _config(m, **overrides):
    """The notebook's small_config: block 32, vocabulary 61, 2 layers, 2 heads, width 16."""
    return m.GPTConfig(**(dict(block_size=32, vocab_size=61, n_layer=2, n_head=2, n_embd=16) | overrides))


def _gpt2(m, n_layer=12, n_head=12, n_embd=768):
    return m.GPTConfig(block_size=1024, vocab_size=50257, n_layer=n_layer, n_head=n_head, n_embd=n_embd)



def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@contextlib.contextmanager
def _quantization_unavailable():
    """PyTorch's quantization functions raise inside the block (as in the notebook's hidden tests)."""
    names = [(torch, n) for n in dir(torch) if n.startswith(("quantize_per", "fake_quantize", "_make_per_",
                                                              "dequantize"))]
    names += [(torch.ao.quantization, n) for n in ("quantize_dynamic", "quantize")]
    old = [(owner, n, getattr(owner, n)) for owner, n in names]

    def unavailable(*args, **kwargs):
        raise RuntimeError("PyTorch's quantization is unavailable here: write the arithmetic yourself")

    for owner, n in names:
        setattr(owner, n, unavailable)
    try:
        yield
    finally:
        for owner, n, f in old:
            setattr(owner, n, f)


def _guarded(call) -> str:
    """"ok" when ``call()`` runs with PyTorch's quantization unavailable, else the error."""
    try:
        with _quantization_unavailable(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {err}"[:200]
    return "ok"


def _codes(got, expected):
    """int8 codes: the reference's shape and dtype, every code within 1 of the reference's and at most 1% off.
    (``torch.quantize_per_channel`` multiplies by 1 / scale where round(w / scale) divides: a value within float
    rounding of a half can round the other way: about one code in 400,000 of a float32 weight, more of a
    bfloat16 one; the notebook allows the same.)"""
    if not isinstance(got, np.ndarray) or got.shape != expected.shape:
        return f"got {getattr(got, 'shape', type(got).__name__)}, expected codes of shape {expected.shape}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    off = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    if off.size and (off.max() > 1 or (off > 0).mean() > 1e-2):
        at = tuple(int(i) for i in np.argwhere(off > 0)[0])
        return f"{int((off > 0).sum())} of {off.size} codes differ, the first at {at}: got {got[at]}, " \
               f"expected {expected[at]}"
    return None


def _own_work(got, expected):
    """The student's guarded run must succeed; the reference (PyTorch's quantization itself) is not used."""
    return None if got == "ok" else f"with PyTorch's quantization unavailable, the code fails: {got}"


def _random_gpt(m, config, seed=0, std=0.3):
    from llmcourse.chapters.gpt import GPT

    torch.manual_seed(seed)
    model = GPT(config).eval()
    gen = _gen(seed)
    for p in model.parameters():
        if p.dim() > 1:
            p.normal_(0.0, std, generator=gen)
    return model


# ---------------------------------------------------------------------------------------------------------------
# 8b.1 count_params


def count_visible(m):
    configs = [m.GPTConfig(block_size=64, vocab_size=512, n_layer=2, n_head=4, n_embd=64), _config(m),
               _config(m, bias=False, n_layer=3)]
    counts = [m.count_params(c) for c in configs]
    return {"counts": counts, "are_ints": [_is_int(n) for n in counts]}


def count_hidden(m):
    configs = [dict(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=4, bias=False),
               dict(block_size=16, vocab_size=100, n_layer=3, n_head=3, n_embd=24),
               dict(block_size=128, vocab_size=1000, n_layer=4, n_head=4, n_embd=32, bias=False),
               dict(block_size=40, vocab_size=7, n_layer=5, n_head=2, n_embd=10)]
    gpt2 = [_gpt2(m), _gpt2(m, 24, 16, 1024), _gpt2(m, 36, 20, 1280), _gpt2(m, 48, 25, 1600)]
    return {"counts": [m.count_params(m.GPTConfig(**c)) for c in configs],
            "gpt2": [m.count_params(c) for c in gpt2],
            "refused": [_raises(lambda bad=bad: m.count_params(bad)) for bad in ("gpt2", {"n_layer": 2}, None)]}


# ---------------------------------------------------------------------------------------------------------------
# 8b.2 training_memory

MEMORY_CASES = [(dict(), torch.bfloat16), (dict(bias=False), torch.float64),
                (dict(n_layer=1, n_embd=8, vocab_size=11), torch.float32),
                (dict(bias=False, n_layer=3, block_size=8), torch.bfloat16)]


def memory_visible(m):
    return {"memory": m.training_memory(_config(m))}


def memory_hidden(m):
    return {"cases": [m.training_memory(_config(m, **fields), dtype) for fields, dtype in MEMORY_CASES],
            "gpt2_float16_total": m.training_memory(_gpt2(m), torch.float16)["total"],
            "default_is_float32": m.training_memory(_gpt2(m)) == m.training_memory(_gpt2(m), torch.float32),
            "refused": [_raises(lambda: m.training_memory(_gpt2(m), torch.int64)),
                        _raises(lambda: m.training_memory(_gpt2(m), "float32")),
                        _raises(lambda: m.training_memory("gpt2", torch.float32))]}


# ---------------------------------------------------------------------------------------------------------------
# 8b.3 kv_cache_bytes

KV_CASES = [(dict(n_layer=3, n_head=4), 1, 32, torch.float32), (dict(n_layer=1, n_embd=8), 5, 7, torch.float64),
            (dict(block_size=12, n_head=1, n_embd=12), 3, 12, torch.bfloat16),
            (dict(n_layer=4, bias=False), 2, 1, torch.float32)]


def kv_visible(m):
    got = m.kv_cache_bytes(_config(m), 2, 10)
    return {"bytes": got, "is_int": _is_int(got)}


def kv_hidden(m):
    return {"cases": [m.kv_cache_bytes(_config(m, **fields), B, T, dtype) for fields, B, T, dtype in KV_CASES],
            "gpt2_float16": m.kv_cache_bytes(_gpt2(m), 1, 1024, torch.float16),
            "refused": [_raises(lambda: m.kv_cache_bytes(_config(m), 0, 4)),
                        _raises(lambda: m.kv_cache_bytes(_config(m), 1, 33)),
                        _raises(lambda: m.kv_cache_bytes(_config(m), 1, 4.0)),
                        _raises(lambda: m.kv_cache_bytes(_config(m), 1, 4, torch.int8)),
                        _raises(lambda: m.kv_cache_bytes("gpt2", 1, 4))]}


# ---------------------------------------------------------------------------------------------------------------
# 8b.4 quantize_int8, dequantize_int8


def quantize_visible(m):
    w = torch.tensor([[1.27, -0.5, 0.1], [0.0, 0.0, 0.0], [-2.54, 1.0, 0.3]])
    q, scale = m.quantize_int8(w)
    out = {"hand_q_dtype": str(q.dtype), "hand_q": q, "hand_scale": scale,
           "hand_back": m.dequantize_int8(q, scale)}
    w = torch.randn(64, 48, generator=_gen(0)) * torch.logspace(-3, 1, 64)[:, None]
    q, scale = m.quantize_int8(w)
    back = m.dequantize_int8(q, scale)
    error = (back - w).abs() / scale[:, None]
    out.update(shape=list(q.shape), scale_shape=list(scale.shape), scale_dtype=str(scale.dtype),
               back_dtype=str(back.dtype), within_half_a_step=bool(error.max() <= 0.5 + 1e-4),
               rows_reach_127=bool((q.abs().amax(dim=1) == 127).all()))
    return out


_QUANTIZE_VISIBLE = {"hand_q_dtype": equal(), "hand_q": equal(), "hand_scale": close(1e-5, 1e-5),
                     "hand_back": close(1e-6, 0.0), "shape": equal(), "scale_shape": equal(), "scale_dtype": equal(),
                     "back_dtype": equal(), "within_half_a_step": equal(), "rows_reach_127": equal()}


def _quantize_cases():
    gen = _gen(84)
    cases = [torch.randn(32, 16, generator=gen), torch.randn(5, 300, generator=gen) * 1e-3,
             torch.randn(7, 9, generator=gen).to(torch.bfloat16),
             torch.randn(6, 6, generator=gen, dtype=torch.float64), torch.randn(1, 1, generator=gen),
             -torch.rand(4, 3, generator=gen)]
    outliers = torch.randn(8, 40, generator=gen)
    outliers[2, 5], outliers[6] = 80.0, 0.0
    return [*cases, outliers]


def quantize_hidden(m):
    out = {}
    cases = _quantize_cases()
    for i, w in enumerate(cases):
        q, scale = m.quantize_int8(w)
        back = m.dequantize_int8(q, scale)
        out |= {f"q/{i}": q, f"scale/{i}": scale, f"dtypes/{i}": [str(q.dtype), str(scale.dtype)],
                f"back_is_q_times_scale/{i}": bool(torch.equal(back, q.float() * scale[:, None]))}
    out["own_work"] = _guarded(lambda: [m.dequantize_int8(*m.quantize_int8(w)) for w in cases])
    w = torch.randn(3, 4, generator=_gen(3))
    before = w.clone()
    m.quantize_int8(w)
    out["input_unchanged"] = bool(torch.equal(w, before))
    q = torch.randint(-127, 128, (5, 6), generator=_gen(4), dtype=torch.int8)
    scale = torch.rand(5, generator=_gen(5))
    out["dequantized"] = m.dequantize_int8(q, scale)
    out["refused"] = [_raises(lambda: m.quantize_int8(torch.randn(4))),
                      _raises(lambda: m.quantize_int8(torch.ones(2, 2, dtype=torch.long))),
                      _raises(lambda: m.quantize_int8(torch.tensor([[1.0, float("nan")]]))),
                      _raises(lambda: m.quantize_int8([[1.0]])),
                      _raises(lambda: m.dequantize_int8(q.float(), scale)),
                      _raises(lambda: m.dequantize_int8(q, scale[:4]))]
    return out


def _quantize_hidden_compare():
    compare = {"own_work": _own_work, "input_unchanged": equal(), "dequantized": close(0.0, 0.0),
               "refused": equal()}
    for i in range(len(_quantize_cases())):
        compare |= {f"q/{i}": _codes, f"scale/{i}": close(0.0, 1e-6), f"back_is_q_times_scale/{i}": equal(),
                    f"dtypes/{i}": equal()}
    return compare


# ---------------------------------------------------------------------------------------------------------------
# 8b.5 Int8Linear, quantize_model


def int8_linear_visible(m):
    torch.manual_seed(0)
    linear = nn.Linear(8, 6)
    layer = m.Int8Linear(linear)
    out = {"q_dtype": str(layer.weight_int8.dtype), "q_shape": list(layer.weight_int8.shape),
           "scale_shape": list(layer.scale.shape),
           "has_buffers": {"weight_int8", "scale", "bias"} <= set(dict(layer.named_buffers())),
           "no_parameters": not list(layer.parameters())}
    gen = _gen(0)
    x = torch.randn(5, 8, generator=gen)
    y, y_float = layer(x), linear(x)
    bound = x.abs().sum(-1, keepdim=True) * layer.scale / 2 + 1e-6
    out["y_shape"] = list(y.shape)
    out["within_bound"] = bool(((y - y_float).abs() <= bound).all())
    config = _config(m)
    model = _random_gpt(m, config)
    idx = torch.randint(0, config.vocab_size, (2, 12), generator=gen)
    before = model(idx)[0]
    returned = m.quantize_model(model)
    after = model(idx)[0]
    out["returns_the_model"] = returned is model
    out["int8_layers"] = sorted(name for name, mod in model.named_modules() if isinstance(mod, m.Int8Linear))
    out["lm_head_tied"] = isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.transformer.wte.weight
    out["logits_close"] = bool((after - before).abs().max() < 0.1 * before.abs().max())
    return out


INT8_CASES = [(16, 24, True, torch.float32), (7, 3, False, torch.float32), (12, 5, True, torch.float64),
              (9, 9, True, torch.bfloat16)]
SKIPS = [(), ("c_fc", "lm_head")]


class _Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4))])


def int8_linear_hidden(m):
    out = {}
    gen = _gen(85)
    layers = []
    for i, (in_f, out_f, bias, dtype) in enumerate(INT8_CASES):
        torch.manual_seed(i)
        linear = nn.Linear(in_f, out_f, bias=bias)
        linear.weight.normal_(0, 0.5, generator=gen)
        before = linear.weight.detach().clone()
        layer = m.Int8Linear(linear)
        x = torch.randn(2, 3, in_f, generator=gen).to(dtype)
        y = layer(x)
        # as the notebook: the output against x W^T + b with the layer's own codes and scales, in float64
        expected = x.double() @ (layer.weight_int8.double() * layer.scale.double()[:, None]).T
        if bias:
            expected = expected + linear.bias.double()
        tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
        out |= {f"weight_int8/{i}": layer.weight_int8, f"scale/{i}": layer.scale,
                f"bias_is_none/{i}": layer.bias is None, f"y_dtype/{i}": str(y.dtype),
                f"y_is_x_w_plus_b/{i}": y.shape == expected.shape
                and bool(torch.allclose(y.double(), expected, rtol=tolerance, atol=tolerance)),
                f"linear_unchanged/{i}": bool(torch.equal(linear.weight, before))}
        if bias:
            linear.bias.add_(1.0)
            out[f"bias_copied/{i}"] = not torch.equal(layer.bias, linear.bias)
        layers.append((linear, x))
    config = _config(m, n_layer=3)
    idx = torch.randint(0, config.vocab_size, (2, 10), generator=_gen(86))
    for skip in SKIPS:
        key = "+".join(skip) or "none"
        model = m.quantize_model(_random_gpt(m, config, seed=1), skip)
        out[f"int8_kinds/{key}"] = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                                           if isinstance(mod, m.Int8Linear)})
        out[f"left/{key}"] = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                                     if type(mod) is nn.Linear})
        out[f"logits/{key}"] = model(idx)[0]
    nested = m.quantize_model(_Nested(), skip=())
    out["nested"] = [sum(isinstance(mod, m.Int8Linear) for mod in nested.modules()),
                     sum(type(mod) is nn.Linear for mod in nested.modules())]
    out["own_work"] = _guarded(lambda: [m.Int8Linear(linear)(x) for linear, x in layers]
                               + [m.quantize_model(_random_gpt(m, config, seed=1), skip)(idx) for skip in SKIPS])
    out["refused"] = [_raises(lambda: m.quantize_model("model")),
                      _raises(lambda: m.quantize_model(_Nested(), skip="lm_head")),
                      _raises(lambda: m.Int8Linear(nn.Conv1d(4, 4, 1)))]
    return out


def _int8_hidden_compare():
    compare = {"nested": equal(), "own_work": _own_work, "refused": equal()}
    for i in range(len(INT8_CASES)):
        compare |= {f"weight_int8/{i}": _codes, f"scale/{i}": close(0.0, 1e-6), f"bias_is_none/{i}": equal(),
                    f"y_is_x_w_plus_b/{i}": equal(), f"y_dtype/{i}": equal(),
                    f"linear_unchanged/{i}": equal(), f"bias_copied/{i}": equal()}
    for skip in SKIPS:
        key = "+".join(skip) or "none"
        compare |= {f"int8_kinds/{key}": equal(), f"left/{key}": equal(), f"logits/{key}": close(1e-4, 1e-4)}
    return compare


PROBES = [
    Probe("test_count_params", count_visible, equal()),
    Probe("test_count_params_hidden", count_hidden, equal()),
    Probe("test_training_memory", memory_visible, equal()),
    Probe("test_training_memory_hidden", memory_hidden, equal()),
    Probe("test_kv_cache_bytes", kv_visible, equal()),
    Probe("test_kv_cache_bytes_hidden", kv_hidden, equal()),
    Probe("test_quantize_int8", quantize_visible, _QUANTIZE_VISIBLE),
    Probe("test_quantize_int8_hidden", quantize_hidden, _quantize_hidden_compare()),
    Probe("test_int8_linear", int8_linear_visible, equal()),
    Probe("test_int8_linear_hidden", int8_linear_hidden, _int8_hidden_compare()),
]
