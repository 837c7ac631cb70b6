"""Chapter 4e's exports, from PyTorch and transformers built-ins (``LLMCOURSE_FALLBACK=modern_block``).

RMSNorm as Hugging Face's ``LlamaRMSNorm`` (float32 inside, cast back), RoPE with Hugging Face's ``rotate_half`` /
``apply_rotary_pos_emb``, SwiGLU as Hugging Face's ``LlamaMLP``, grouped-query attention on
``F.scaled_dot_product_attention(enable_gqa=True)``; checkpoints in Hugging Face's Llama format (config.json
written by ``LlamaConfig``, weights as safetensors). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RMSNorm", "rope_frequencies", "apply_rope", "llama_hidden_size", "SwiGLU", "repeat_kv", "ModernConfig",
           "GQAttention", "kv_cache_bytes", "ModernBlock", "ModernGPT", "LLAMA_NAMES", "to_llama_state_dict",
           "from_llama_state_dict", "llama_config_dict", "config_from_llama"]


# --- validation shared by the exports (the chapter's notebook has the same helpers) ----------------------------

def _check_rope_arguments(head_dim, T, base) -> None:
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim should be a positive even integer (RoPE rotates pairs), got {head_dim!r}")
    if not isinstance(T, int) or isinstance(T, bool) or T < 0:
        raise ValueError(f"T should be a whole number of positions >= 0, got {T!r}")
    if not isinstance(base, (int, float)) or isinstance(base, bool) or not base > 1:
        raise ValueError(f"base should be a number > 1, got {base!r}")


def _check_apply_rope_arguments(q, k, cos, sin) -> None:
    for name, t in (("q", q), ("k", k), ("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} should be a tensor, got {type(t).__name__}")
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k should be (B, n_head, T, head_dim), got {tuple(q.shape)} and {tuple(k.shape)}")
    if cos.shape != sin.shape or cos.dim() != 2 or cos.shape != (q.shape[2], q.shape[3]) \
            or k.shape[2:] != q.shape[2:]:
        raise ValueError(f"cos and sin should be (T, head_dim) = {(q.shape[2], q.shape[3])} for q of shape "
                         f"{tuple(q.shape)} and k of shape {tuple(k.shape)}; got {tuple(cos.shape)} and "
                         f"{tuple(sin.shape)}")


def _check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} should be a positive integer, got {value!r}")


# --- 4e.1 RMSNorm -------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """RMSNorm over the last dimension, computed in float32 and cast back: Hugging Face's LlamaRMSNorm forward."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        _check_positive_int("dim", dim)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    @property
    def variance_epsilon(self) -> float:  # the name LlamaRMSNorm.forward reads
        return self.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        return LlamaRMSNorm.forward(self, x)


# --- 4e.2 RoPE ----------------------------------------------------------------------------------------------

def rope_frequencies(head_dim: int, T: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (T, head_dim) float32, as Hugging Face's LlamaRotaryEmbedding builds them."""
    _check_rope_arguments(head_dim, T, base)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Hugging Face's ``apply_rotary_pos_emb`` (half-split pairs); q, k (B, nh, T, hs), cos, sin (T, hs)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    _check_apply_rope_arguments(q, k, cos, sin)
    return apply_rotary_pos_emb(q, k, cos[None].to(q.dtype), sin[None].to(q.dtype), unsqueeze_dim=1)


# --- 4e.3 SwiGLU --------------------------------------------------------------------------------------------

def llama_hidden_size(n_embd: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Meta's Llama rule: int(2 * 4 * n_embd / 3), times ffn_dim_multiplier, rounded up to a multiple_of."""
    _check_positive_int("n_embd", n_embd)
    _check_positive_int("multiple_of", multiple_of)
    hidden = int(2 * (4 * n_embd) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclasses.dataclass(frozen=True)
class ModernConfig:
    """A Llama-style model's shape. ``intermediate_size=None``: ``llama_hidden_size(n_embd, multiple_of=16)``."""

    vocab_size: int = 512
    block_size: int = 64          # the context the model is used with (RoPE itself has no table to run out of)
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int = 2            # 1: multi-query attention; n_head: multi-head attention
    n_embd: int = 64
    intermediate_size: int | None = None
    rope_base: float = 10000.0    # Llama 1 and 2; Llama 3 uses 500000
    eps: float = 1e-6             # RMSNorm's epsilon (Llama 1: 1e-6, Llama 2: 1e-5)
    tie_word_embeddings: bool = False  # Llama: separate input and output matrices; small models often tie them

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd"):
            _check_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}: each group of "
                             "query heads shares one key/value head")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"head_dim = n_embd / n_head = {self.n_embd // self.n_head} should be even for RoPE")
        if self.intermediate_size is None:
            object.__setattr__(self, "intermediate_size", llama_hidden_size(self.n_embd, multiple_of=16))
        _check_positive_int("intermediate_size", self.intermediate_size)


def _llama_mlp():
    from transformers.models.llama.modeling_llama import LlamaMLP

    return LlamaMLP


class SwiGLU(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)), no biases: Hugging Face's LlamaMLP's forward."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _llama_mlp().forward(self, x)


# --- 4e.4 grouped-query attention ---------------------------------------------------------------------------

def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, T, hs) -> (B, n_kv * n_rep, T, hs), each key/value head repeated n_rep times in a row."""
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("x should be a (B, n_kv_head, T, head_dim) tensor")
    _check_positive_int("n_rep", n_rep)
    return hf_repeat_kv(x, n_rep)


def _check_attention_config(config) -> None:
    n_embd, n_head, n_kv = config.n_embd, config.n_head, config.n_kv_head
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
    if n_head % n_kv:
        raise ValueError(f"n_head={n_head} is not divisible by n_kv_head={n_kv}")


class GQAttention(nn.Module):
    """Causal grouped-query attention with RoPE on queries and keys (Llama's, without biases)."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        _check_attention_config(config)
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.rope_base = config.rope_base
        self.q_proj = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        cos, sin = rope_frequencies(self.head_dim, T, self.rope_base)
        q, k = apply_rope(q, k, cos.to(x.device), sin.to(x.device))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


def kv_cache_bytes(config: ModernConfig, T: int, batch_size: int = 1, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a KV cache: 2 (keys, values) * n_layer * batch * n_kv_head * head_dim * T * bytes per number."""
    _check_positive_int("batch_size", batch_size)
    if not isinstance(T, int) or isinstance(T, bool) or T < 0:
        raise ValueError(f"T should be a whole number >= 0, got {T!r}")
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.n_layer * batch_size * config.n_kv_head * (config.n_embd // config.n_head) * T * element


# --- 4e.5 the model -----------------------------------------------------------------------------------------

class ModernBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)), with RMSNorm, grouped-query attention and SwiGLU."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        self.ln_1 = RMSNorm(config.n_embd, eps=config.eps)
        self.attn = GQAttention(config)
        self.ln_2 = RMSNorm(config.n_embd, eps=config.eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


#: Our parameter names -> Hugging Face Llama's ({i}: the layer).
LLAMA_NAMES: dict[str, str] = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.h.{i}.ln_1.weight": "model.layers.{i}.input_layernorm.weight",
    "transformer.h.{i}.attn.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "transformer.h.{i}.attn.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "transformer.h.{i}.attn.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "transformer.h.{i}.attn.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "transformer.h.{i}.ln_2.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "transformer.h.{i}.mlp.gate_proj.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "transformer.h.{i}.mlp.up_proj.weight": "model.layers.{i}.mlp.up_proj.weight",
    "transformer.h.{i}.mlp.down_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
    "transformer.ln_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def _rename(state: dict, table: dict[str, str], n_layer: int) -> dict:
    names = {}
    for src, dst in table.items():
        for i in range(n_layer) if "{i}" in src else [None]:
            names[src.format(i=i)] = dst.format(i=i)
    unknown = sorted(set(state) - set(names))
    if unknown:
        raise ValueError(f"unexpected weights {unknown[:5]}: not part of a Llama model with {n_layer} layers")
    return {names[k]: v for k, v in state.items()}


def to_llama_state_dict(state: dict, n_layer: int) -> dict:
    """Our state dict with Hugging Face Llama's names (same tensors: both use nn.Linear's (out, in) layout)."""
    return _rename(state, LLAMA_NAMES, n_layer)


def from_llama_state_dict(state: dict, n_layer: int) -> dict:
    """Hugging Face Llama's state dict with our names (the rotary ``inv_freq`` buffers, if any, are dropped)."""
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    return _rename(state, {v: k for k, v in LLAMA_NAMES.items()}, n_layer)


def llama_config_dict(config: ModernConfig) -> dict:
    """The fields of Hugging Face's ``LlamaConfig`` for ``config``."""
    return dict(vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=config.intermediate_size,
                num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                num_key_value_heads=config.n_kv_head, max_position_embeddings=config.block_size,
                rms_norm_eps=config.eps, rope_theta=config.rope_base, hidden_act="silu", attention_bias=False,
                mlp_bias=False, tie_word_embeddings=config.tie_word_embeddings, head_dim=config.n_embd // config.n_head)


def config_from_llama(hf: dict) -> ModernConfig:
    """A ``ModernConfig`` from a Llama config.json's fields; refuses settings this model does not have."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"unsupported RoPE scaling {rope.get('rope_type')!r}: this model has plain RoPE only")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("unsupported Llama settings: this model has SiLU and no biases")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, n_embd // n_head):
        raise ValueError(f"head_dim={hf['head_dim']} differs from hidden_size / num_attention_heads")
    return ModernConfig(vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048),
                        n_layer=hf["num_hidden_layers"], n_head=n_head,
                        n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=n_embd,
                        intermediate_size=hf["intermediate_size"], rope_base=float(theta),
                        eps=hf.get("rms_norm_eps", 1e-6), tie_word_embeddings=hf.get("tie_word_embeddings", False))


def init_modern_weights(model: nn.Module, n_layer: int, generator: torch.Generator | None = None) -> nn.Module:
    """N(0, 0.02^2) matrices and embeddings (Llama's initializer_range), N(0, (0.02/sqrt(2 n_layer))^2) for the
    projections that write into the residual stream (o_proj, down_proj, as GPT-2), RMSNorm gains 1."""
    for name, p in model.named_parameters():
        if p.dim() == 1:
            nn.init.ones_(p)
        else:
            residual = name.endswith(("o_proj.weight", "down_proj.weight"))
            nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer) if residual else 0.02, generator=generator)
    return model


class ModernGPT(nn.Module):
    """A Llama-style GPT: token embedding, ModernBlocks, a final RMSNorm, an output matrix; no position table."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([ModernBlock(config) for _ in range(config.n_layer)]),
            "ln_f": RMSNorm(config.n_embd, eps=config.eps),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer["wte"].weight
        init_modern_weights(self, config.n_layer)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        _check_forward_arguments(self.config, idx, targets)
        x = self.transformer["wte"](idx)
        for block in self.transformer["h"]:
            x = block(x)
        logits = self.lm_head(self.transformer["ln_f"](x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100)

    def num_params(self, non_embedding: bool = False) -> int:
        return _num_params(self, non_embedding)

    def forward_with_cache(self, idx: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None):
        return _forward_with_cache(self, idx, cache, attention_mask)

    def save_pretrained(self, path: str | Path) -> Path:
        return _save_pretrained(self, path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ModernGPT:
        return _from_pretrained(cls, path)


def _check_forward_arguments(config, idx, targets) -> None:
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or torch.is_floating_point(idx):
        raise ValueError(f"idx should be (B, T) token ids, got {getattr(idx, 'dtype', type(idx).__name__)} of "
                         f"shape {tuple(getattr(idx, 'shape', ()))}")
    if idx.shape[1] > config.block_size:
        raise ValueError(f"{idx.shape[1]} tokens exceed block_size={config.block_size}")
    if idx.numel():
        bad = idx[(idx < 0) | (idx >= config.vocab_size)]
        if bad.numel():
            raise ValueError(f"token id {int(bad[0])} is out of range for vocab_size={config.vocab_size}")
    if targets is not None and (not isinstance(targets, torch.Tensor) or targets.shape != idx.shape):
        raise ValueError(f"targets should be a tensor of shape {tuple(idx.shape)}")


def _num_params(model: nn.Module, non_embedding: bool) -> int:
    """Parameters, a tied matrix counted once; non_embedding leaves out the token embedding (input side only)."""
    skip = {id(model.transformer["wte"].weight)} if non_embedding else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def _attend_with_cache(attn: nn.Module, x: torch.Tensor, past, pos: torch.Tensor, key_mask: torch.Tensor | None):
    """GQAttention on the new tokens x (B, T, C) at positions pos (B, T), over the cached and new keys and values;
    the cache keeps n_kv_head heads (not repeated: that is what grouped-query attention saves)."""
    B, T, C = x.shape
    hs = attn.head_dim
    q = attn.q_proj(x).view(B, T, attn.n_head, hs).transpose(1, 2)     # (B, nh, T, hs)
    k = attn.k_proj(x).view(B, T, attn.n_kv_head, hs).transpose(1, 2)  # (B, n_kv, T, hs)
    v = attn.v_proj(x).view(B, T, attn.n_kv_head, hs).transpose(1, 2)
    cos, sin = rope_frequencies(hs, int(pos.max()) + 1, attn.rope_base)
    cos, sin = cos.to(x.device)[pos], sin.to(x.device)[pos]            # (B, T, hs): each row its own positions
    rotated = [apply_rope(q[b: b + 1], k[b: b + 1], cos[b], sin[b]) for b in range(B)]
    q, k = torch.cat([r[0] for r in rotated]), torch.cat([r[1] for r in rotated])
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    S = k.size(2)
    q_at, k_at = torch.arange(S - T, S, device=x.device), torch.arange(S, device=x.device)
    allowed = k_at[None, :] <= q_at[:, None]                          # (T, S): causal over the whole sequence
    if key_mask is not None:                                           # padding is never read (but itself)
        allowed = (allowed & key_mask.bool()[:, None, None, :]) | (k_at[None, :] == q_at[:, None])
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=attn.n_head != attn.n_kv_head)
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


def _forward_with_cache(model: nn.Module, idx: torch.Tensor, cache=None, attention_mask: torch.Tensor | None = None):
    """Logits (B, T, V) of the new tokens idx, extending ``cache`` (chapter 5c's ``KVCache``: ``cache.layers[l]``
    is (k, v) or None) in place; None: no cache. ``attention_mask`` (B, T_past + T), 0 at (left) padding:
    positions count each row's real tokens, as chapter 5c's ``forward_with_cache`` does."""
    t = model.transformer
    layers = cache.layers if cache is not None else [None] * len(t["h"])
    past, T = (0 if layers[0] is None else layers[0][0].size(2)), idx.size(1)
    if attention_mask is None:
        pos = torch.arange(past, past + T, device=idx.device).expand(idx.size(0), T)
    else:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
    x = t["wte"](idx)
    for i, block in enumerate(t["h"]):
        a, layers[i] = _attend_with_cache(block.attn, block.ln_1(x), layers[i], pos, attention_mask)
        x = x + a
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(t["ln_f"](x))


def _save_pretrained(model: nn.Module, path: str | Path) -> Path:
    """config.json (Hugging Face's LlamaConfig) and model.safetensors with Llama's names in folder ``path``."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = model.config
    LlamaConfig(**llama_config_dict(config), architectures=["LlamaForCausalLM"]).save_pretrained(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")  # the same matrix as the embedding, as Hugging Face saves a tied model
    save_file(to_llama_state_dict(state, config.n_layer), str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _from_pretrained(cls, path: str | Path):
    """A model from a folder with config.json and model.safetensors in Hugging Face's Llama format."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} should be a folder with config.json and model.safetensors (a Llama "
                                "checkpoint saved by save_pretrained); nothing is downloaded here")
    hf = json.loads((path / "config.json").read_text())
    if hf.get("model_type", "llama") != "llama":
        raise ValueError(f"{path} holds a {hf.get('model_type')!r} model, not a Llama one")
    config = config_from_llama(hf)
    state = from_llama_state_dict(load_file(str(path / "model.safetensors")), config.n_layer)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model = cls(config)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model
