"""Outside checks of chapter 4e (the modern block): RMSNorm, RoPE, SwiGLU, grouped-query attention, ModernGPT.

Each probe mirrors its test cell. Where the notebook compares with Hugging Face's Llama modules, the probe returns
the student's outputs on deterministic weights and inputs, and the reference side (the chapter's fallback, built on
those same Hugging Face modules) computes them too. Checkpoints are written by hand (config.json as
``LlamaConfig`` writes it, model.safetensors with Llama's names), so the student's side reads exactly the files the
grader chose.
"""

from __future__ import annotations

import json
import math
import tempfile
import zlib
from pathlib import Path

import torch

from autograder.probes import Comparator, Probe, close, equal, raised
from autograder.probes.multi_head_attention import by_name, gen, holds, pair, with_weights


def _cfg(m, **fields):
    return m.ModernConfig(**fields)


def _fill(module, seed: int, scale: float = 1.0):
    """Deterministic weights by name (see ``with_weights``): matrices N(0, scale^2 / fan_in), gains 1 + N(0, 0.3^2)."""
    with_weights(module, seed)
    if scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                if p.dim() >= 2:
                    p.mul_(scale)
    return module


def below(limit_name: str, check) -> Comparator:
    """A property of the student's own numbers (the notebook checks a threshold, not the reference's value)."""

    def compare(got, expected):
        try:
            return None if check(got) else f"{limit_name}: got {got!r:.80}"
        except (TypeError, ValueError, IndexError):
            return f"{limit_name}: got {got!r:.80}"

    return compare


# --- 4e.1 RMSNorm -------------------------------------------------------------------------------------------

def rmsnorm_visible(m):
    x = torch.randn(2, 5, 8, generator=gen(21)) * 7 + 3
    y = m.RMSNorm(8)(x)
    return {"RMSNorm(4)([1, 2, 3, 4])": m.RMSNorm(4)(torch.tensor([1.0, 2.0, 3.0, 4.0])), "RMSNorm(8)(x)": y,
            "mean square of each output token": y.pow(2).mean(dim=-1)}


def rmsnorm_hidden(m):
    g = gen(41)
    out = {}
    for shape in [(6,), (3, 16), (2, 7, 32), (2, 3, 4, 24)]:
        C = shape[-1]
        norm = m.RMSNorm(C)
        norm.weight.copy_(torch.randn(C, generator=g))
        out[f"RMSNorm({C}) on {list(shape)}"] = norm(torch.randn(shape, generator=g) * 5 + 2)
    out["RMSNorm with eps=0.5"] = m.RMSNorm(10, eps=0.5)(torch.randn(4, 10, generator=g) * 0.5)
    out["parameters"] = [n for n, _ in m.RMSNorm(10).named_parameters()]
    x = torch.randn(3, 5, 16, generator=g)
    x2 = x.clone()
    x2[1, 2] = x2[1, 2] * 100 + 7
    out["tokens whose output changes when token (1, 2) changes"] = (
        m.RMSNorm(16)(x) - m.RMSNorm(16)(x2)).abs().amax(dim=-1) > 1e-6
    out["RMSNorm of zeros"] = m.RMSNorm(8)(torch.zeros(2, 8))
    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        norm = m.RMSNorm(24).to(dtype)
        norm.weight.copy_(torch.rand(24, generator=g) + 0.5)
        x = (torch.randn(3, 24, generator=g) * 30).to(dtype)
        y = norm(x)
        out[f"{name} module: output dtype"] = str(y.dtype)
        out[f"{name} module: output"] = y.float()
        y = m.RMSNorm(24)(x)
        out[f"float32 module on a {name} input: output dtype"] = str(y.dtype)
        out[f"float32 module on a {name} input: output"] = y.float()
    norm = m.RMSNorm(6).double()
    norm.weight.copy_(torch.rand(6, generator=g, dtype=torch.float64) + 0.5)
    with torch.enable_grad():
        x = torch.randn(2, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
        w = torch.randn(2, 3, 6, dtype=torch.float64, generator=g)
        (norm(x) * w).sum().backward()
    out["gradient of the input"] = x.grad if x.grad is not None else "no gradient reaches the input"
    out["gradient of the gain"] = norm.weight.grad if norm.weight.grad is not None else "no gradient for the gain"
    return out


# --- 4e.2 RoPE ----------------------------------------------------------------------------------------------

def rope_visible(m):
    cos, sin = m.rope_frequencies(8, 5)
    g = gen(22)
    q, k = torch.randn(1, 1, 5, 8, generator=g), torch.randn(1, 1, 5, 8, generator=g)
    q_rot, _ = m.apply_rope(q, k, cos, sin)
    x = torch.randn(8, generator=g)
    same = torch.stack([x] * 5)[None, None].contiguous()
    qs, ks = m.apply_rope(same, same, cos, sin)
    scores = qs[0, 0] @ ks[0, 0].T
    return {"cos": cos, "sin": sin, "shape of apply_rope's q": list(q_rot.shape),
            "lengths of the rotated queries": pair(q_rot.norm(dim=-1), q.norm(dim=-1)),
            "score at (3, 1) vs at (4, 2)": pair(scores[3, 1], scores[4, 2])}


def rope_hidden(m):
    g = gen(42)
    out = {}
    for head_dim, T, base in [(2, 3, 10000.0), (16, 40, 10000.0), (64, 17, 500000.0), (6, 9, 100.0)]:
        cos, sin = m.rope_frequencies(head_dim, T, base)
        out[f"cos ({head_dim}, {T}, {base:g})"] = cos
        out[f"sin ({head_dim}, {T}, {base:g})"] = sin
    out["shape of rope_frequencies(8, 0)"] = list(m.rope_frequencies(8, 0)[0].shape)
    for B, nh, nkv, T, hs in [(1, 1, 1, 1, 2), (2, 4, 2, 7, 16), (3, 8, 1, 12, 32)]:
        q = torch.randn(B, nh, T, hs, generator=g)
        k = torch.randn(B, nkv, T, hs, generator=g)
        cos, sin = m.rope_frequencies(hs, T)
        got_q, got_k = m.apply_rope(q, k, cos, sin)
        out[f"apply_rope q ({B}, {nh}, {T}, {hs})"] = got_q
        out[f"apply_rope k ({B}, {nkv}, {T}, {hs})"] = got_k
    q = torch.randn(1, 2, 4, 8, generator=g).bfloat16()
    k = torch.randn(1, 2, 4, 8, generator=g).bfloat16()
    cos, sin = m.rope_frequencies(8, 4)
    got_q, _ = m.apply_rope(q, k, cos, sin)
    out["bfloat16: dtype"] = str(got_q.dtype)
    out["bfloat16: q"] = got_q.float()
    hs, T = 16, 24
    q1, k1 = torch.randn(hs, generator=g), torch.randn(hs, generator=g)
    cos, sin = m.rope_frequencies(hs, T)
    Qr, Kr = m.apply_rope(q1.expand(1, 1, T, hs).contiguous(), k1.expand(1, 1, T, hs).contiguous(), cos, sin)
    S = Qr[0, 0] @ Kr[0, 0].T
    for shift in (1, 5, 11):
        out[f"scores shifted by {shift}"] = pair(S[shift:, shift:], S[:T - shift, :T - shift])
    return out


# --- 4e.3 SwiGLU --------------------------------------------------------------------------------------------

SIZES = [((4096,), 11008), ((5120,), 13824), ((6656,), 17920), ((8192,), 22016), ((8192, 4096, 1.3), 28672),
         ((4096, 1024, 1.3), 14336), ((64, 16), 176), ((3, 1), 8), ((96, 32), 256)]


def swiglu_visible(m):
    mlp = _fill(m.SwiGLU(_cfg(m, n_embd=32, n_head=4, intermediate_size=48)), 23)
    return {"llama_hidden_size(4096)": m.llama_hidden_size(4096),
            "parameters": [[n, list(p.shape)] for n, p in mlp.named_parameters()],
            "SwiGLU(x)": mlp(torch.randn(2, 5, 32, generator=gen(23)))}


def swiglu_hidden(m):
    g = gen(43)
    out = {f"llama_hidden_size{args}": m.llama_hidden_size(*args) for args, _ in SIZES}
    for i, (n_embd, hidden, shape) in enumerate([(8, 8, (1, 1)), (32, 96, (3, 7)), (64, 176, (2, 5))]):
        mlp = _fill(m.SwiGLU(_cfg(m, n_embd=n_embd, n_head=2, intermediate_size=hidden)), 430 + i)
        with torch.enable_grad():
            x = torch.randn(*shape, n_embd, generator=g, requires_grad=True)
            y = mlp(x)
            y.pow(2).sum().backward()
        out[f"SwiGLU({n_embd}, {hidden})"] = y.detach()
        for n, p in mlp.named_parameters():
            out[f"SwiGLU({n_embd}, {hidden}): gradient of {n}"] = p.grad if p.grad is not None else "no gradient"
    mlp = m.SwiGLU(_cfg(m, intermediate_size=8))
    out["biases"] = [m_.bias is None for m_ in mlp.modules() if isinstance(m_, torch.nn.Linear)]
    return out


# --- 4e.4 grouped-query attention ---------------------------------------------------------------------------

ATTENTION_CASES = [(4, 4, 32, 5, 10000.0), (4, 2, 32, 9, 10000.0), (8, 1, 64, 12, 500000.0), (6, 3, 48, 1, 10000.0),
                   (2, 1, 16, 16, 100.0)]


def gqa_visible(m):
    x = torch.arange(6).float().view(1, 2, 3, 1)
    attn = _fill(m.GQAttention(_cfg(m, vocab_size=10, n_embd=32, n_head=4, n_kv_head=2, intermediate_size=32)), 24)
    return {"repeat_kv(x, 2)": m.repeat_kv(x, 2),
            "parameters": [[n, list(p.shape)] for n, p in attn.named_parameters()],
            "GQAttention(x)": attn(torch.randn(2, 6, 32, generator=gen(24)))}


def gqa_hidden(m):
    g = gen(44)
    out = {}
    for shape, n_rep in [((2, 3, 4, 5), 1), ((1, 2, 3, 4), 3), ((2, 1, 5, 2), 4)]:
        out[f"repeat_kv {list(shape)} by {n_rep}"] = m.repeat_kv(torch.randn(shape, generator=g), n_rep)
    for i, (n_head, n_kv, n_embd, T, base) in enumerate(ATTENTION_CASES):
        cfg = _cfg(m, n_embd=n_embd, n_head=n_head, n_kv_head=n_kv, intermediate_size=8, rope_base=base)
        attn = _fill(m.GQAttention(cfg), 440 + i, scale=2.0)
        what = f"(n_head={n_head}, n_kv_head={n_kv}, T={T})"
        x = torch.randn(2, T, n_embd, generator=g)
        w = torch.randn(2, T, n_embd, generator=g)
        with torch.enable_grad():
            y = attn(x)
            (y * w).sum().backward()
        out[f"GQAttention {what}"] = y.detach()
        for n, p in attn.named_parameters():
            out[f"gradient of {n} {what}"] = p.grad if p.grad is not None else "no gradient"
    attn = _fill(m.GQAttention(_cfg(m, n_embd=16, n_head=4, n_kv_head=2, intermediate_size=8)), 446)
    x = torch.randn(2, 8, 16, generator=g)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 3, 16, generator=g)
    out["outputs 0..4 after changing tokens 5..7"] = pair(attn(x2)[:, :5], attn(x)[:, :5])
    import types

    for label, bad in [("n_head % n_kv_head != 0", dict(n_embd=32, n_head=4, n_kv_head=3, rope_base=1e4)),
                       ("n_embd % n_head != 0", dict(n_embd=30, n_head=4, n_kv_head=2, rope_base=1e4))]:
        out[f"error when {label}"] = raised(lambda bad=bad: m.GQAttention(types.SimpleNamespace(**bad)))
    return out


# --- 4e.5 the model -----------------------------------------------------------------------------------------

def _llama_state(hf: dict, seed: int) -> dict:
    """Random Llama weights with Hugging Face's names for the config.json fields ``hf``."""
    C, H, L = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    hs = C // hf["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (hf["vocab_size"], C), "model.norm.weight": (C,)}
    for i in range(L):
        p = f"model.layers.{i}."
        kv = hf["num_key_value_heads"] * hs
        shapes |= {p + "input_layernorm.weight": (C,), p + "post_attention_layernorm.weight": (C,),
                   p + "self_attn.q_proj.weight": (C, C), p + "self_attn.k_proj.weight": (kv, C),
                   p + "self_attn.v_proj.weight": (kv, C),
                   p + "self_attn.o_proj.weight": (C, C), p + "mlp.gate_proj.weight": (H, C),
                   p + "mlp.up_proj.weight": (H, C), p + "mlp.down_proj.weight": (C, H)}
    if not hf["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (hf["vocab_size"], C)
    state = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen(seed * 1_000_003 + zlib.crc32(name.encode())))
        state[name] = noise * 0.3 / math.sqrt(shape[-1]) * 3 if len(shape) == 2 else 1 + 0.2 * noise
    return state


def _write_llama_checkpoint(folder: Path, hf: dict, state: dict) -> Path:
    """config.json (the keys ``LlamaConfig.save_pretrained`` writes that matter) and model.safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "attention_bias": False, "mlp_bias": False, "head_dim": hf["hidden_size"] // hf["num_attention_heads"],
              **{k: v for k, v in hf.items() if k != "rope_theta"},
              "rope_parameters": {"rope_theta": hf["rope_theta"], "rope_type": "default"}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def _saved(folder: Path) -> dict:
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "model_type")
    return {"config": {k: config.get(k) for k in keys}, "tensors": load_file(str(folder / "model.safetensors"))}


def modern_gpt_visible(m):
    cfg = _cfg(m, vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=48)
    idx = torch.randint(0, 50, (2, 12), generator=gen(25))
    torch.manual_seed(25)
    model = m.ModernGPT(cfg)
    logits, loss = model(idx)
    out = {"shape of the logits": list(logits.shape), "loss without targets": repr(loss)}
    out["loss at initialisation"] = float(model(idx, idx)[1])
    out["first parameter names"] = [n for n, _ in model.named_parameters()][:5]
    _fill(model, 25).eval()
    with tempfile.TemporaryDirectory() as tmp:
        saved = _saved(model.save_pretrained(Path(tmp) / "ckpt"))
    out["saved config.json"] = saved["config"]
    out["saved tensor names"] = sorted(saved["tensors"])
    out["saved embedding"] = saved["tensors"]["model.embed_tokens.weight"]
    out["logits"] = model(idx)[0]
    return out


HF_CASES = [(False, 2, 2), (True, 1, 3), (False, 4, 1)]


def modern_gpt_hidden(m):
    g = gen(45)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (tie, n_kv, n_layer) in enumerate(HF_CASES):
            hf = dict(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=n_layer,
                      num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=32, rms_norm_eps=1e-5,
                      rope_theta=1000.0, tie_word_embeddings=tie)
            state = _llama_state(hf, 450 + i)
            model = m.ModernGPT.from_pretrained(_write_llama_checkpoint(Path(tmp) / f"hf{i}", hf, state)).eval()
            idx = torch.randint(0, 61, (3, 20), generator=g)
            what = f"(tie={tie}, n_kv_head={n_kv}, n_layer={n_layer})"
            out[f"logits from a Llama checkpoint {what}"] = model(idx)[0]
            out[f"parameters {what}"] = model.num_params()
            again = _saved(model.save_pretrained(Path(tmp) / f"ours{i}"))["tensors"]
            out[f"round trip {what}"] = pair(torch.stack([(again[k] - v).abs().max() for k, v in state.items()]),
                                             torch.zeros(len(state)))
    cfg = dict(vocab_size=40, n_embd=16, n_head=2, n_kv_head=1, intermediate_size=24)
    model = m.ModernGPT(_cfg(m, **cfg, tie_word_embeddings=True))
    out["tied: lm_head is wte"] = model.lm_head.weight is model.transformer["wte"].weight
    untied = _fill(m.ModernGPT(_cfg(m, **cfg)), 457)
    out["untied: separate output matrix"] = untied.lm_head.weight is not untied.transformer["wte"].weight
    out["biases"] = [mod.bias is None for mod in untied.modules() if isinstance(mod, torch.nn.Linear)]
    idx = torch.randint(0, 40, (2, 10), generator=g)
    targets = torch.randint(0, 40, (2, 10), generator=g)
    targets[0, :3] = -100
    out["loss with ignored targets"] = untied(idx, targets)[1]
    idx2 = idx.clone()
    idx2[:, 6:] = (idx2[:, 6:] + 1) % 40
    out["logits 0..5 after changing tokens 6..9"] = pair(untied(idx2)[0][:, :6], untied(idx)[0][:, :6])
    model = _fill(m.ModernGPT(_cfg(m, vocab_size=40, n_embd=32, n_head=4, n_kv_head=2, intermediate_size=48)), 458)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    with torch.enable_grad():
        for _ in range(15):
            loss = model(idx, targets)[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    out["training losses"] = losses
    return out


PROBES = [
    Probe("test_rmsnorm", rmsnorm_visible, {"RMSNorm(4)([1, 2, 3, 4])": close(1e-6),
                                            "mean square of each output token": close(1e-4)}, forbid=("rms_norm",)),
    Probe("test_rmsnorm_hidden", rmsnorm_hidden, by_name(close(1e-5), **{
        "RMSNorm with eps=0.5": close(1e-6), "parameters": equal(),
        "tokens whose output changes when token (1, 2) changes": equal(), "RMSNorm of zeros": close(0, 0),
        **{f"{d} module: output dtype": equal() for d in ("bfloat16", "float16")},
        **{f"{d} module: output": close(0, 0) for d in ("bfloat16", "float16")},
        **{f"float32 module on a {d} input: output dtype": equal() for d in ("bfloat16", "float16")},
        **{f"float32 module on a {d} input: output": close(0, 0) for d in ("bfloat16", "float16")},
        "gradient of the input": close(1e-10), "gradient of the gain": close(1e-10)}), forbid=("rms_norm",)),
    Probe("test_rope", rope_visible, {"cos": close(1e-6), "sin": close(1e-6), "shape of apply_rope's q": equal(),
                                      "lengths of the rotated queries": holds(1e-5),
                                      "score at (3, 1) vs at (4, 2)": holds(1e-5)}),
    Probe("test_rope_hidden", rope_hidden, by_name(close(1e-5), **{
        "shape of rope_frequencies(8, 0)": equal(), "bfloat16: dtype": equal(), "bfloat16: q": close(1e-2),
        **{f"scores shifted by {s}": holds(1e-4) for s in (1, 5, 11)}})),
    Probe("test_swiglu", swiglu_visible, {"llama_hidden_size(4096)": equal(), "parameters": equal()}),
    Probe("test_swiglu_hidden", swiglu_hidden, by_name(close(1e-5), **{
        **{f"llama_hidden_size{args}": equal() for args, _ in SIZES}, "biases": equal(),
        **{f"SwiGLU({c}, {h}): gradient of {n}": close(1e-4) for c, h in [(8, 8), (32, 96), (64, 176)]
           for n in ("gate_proj.weight", "up_proj.weight", "down_proj.weight")}})),
    Probe("test_gqa", gqa_visible, {"repeat_kv(x, 2)": close(0, 0), "parameters": equal()}),
    Probe("test_gqa_hidden", gqa_hidden, by_name(close(1e-5), **{
        **{f"repeat_kv {list(s)} by {r}": close(0, 0) for s, r in [((2, 3, 4, 5), 1), ((1, 2, 3, 4), 3),
                                                                     ((2, 1, 5, 2), 4)]},
        **{f"gradient of {n}_proj.weight (n_head={h}, n_kv_head={kv}, T={T})": close(1e-4)
           for h, kv, _, T, _ in ATTENTION_CASES for n in "qkvo"},
        "outputs 0..4 after changing tokens 5..7": holds(1e-6),
        "error when n_head % n_kv_head != 0": equal(), "error when n_embd % n_head != 0": equal()})),
    Probe("test_modern_gpt", modern_gpt_visible, by_name(close(1e-4), **{
        "shape of the logits": equal(), "loss without targets": equal(),
        "loss at initialisation": below("the loss at initialisation should be within 0.3 of log(50) = 3.91",
                                        lambda v: abs(float(v) - math.log(50)) < 0.3),
        "first parameter names": equal(), "saved config.json": equal(), "saved tensor names": equal(),
        "saved embedding": close(0, 0)})),
    Probe("test_modern_gpt_hidden", modern_gpt_hidden, by_name(close(1e-4), **{
        **{f"parameters (tie={t}, n_kv_head={kv}, n_layer={n})": equal() for t, kv, n in HF_CASES},
        **{f"round trip (tie={t}, n_kv_head={kv}, n_layer={n})": holds(1e-5) for t, kv, n in HF_CASES},
        "tied: lm_head is wte": equal(), "untied: separate output matrix": equal(), "biases": equal(),
        "loss with ignored targets": close(1e-5),
        "logits 0..5 after changing tokens 6..9": holds(1e-5),
        "training losses": below("15 AdamW steps on one batch should lower the loss by more than 1",
                                   lambda v: float(v[-1]) < float(v[0]) - 1.0)})),
]
