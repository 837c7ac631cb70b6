"""Hugging Face ``transformers`` GPT-2 as a reference: the same configuration, the same weights, run the same way.

Parity tests build an HF GPT-2 module, copy its weights into ours (or ours into it) and compare outputs:

>>> hf_attn = GPT2Attention(gpt2_config(cfg), layer_idx=0)
>>> ours = CausalSelfAttention(cfg)
>>> copy_from_hf(ours, hf_attn)
>>> torch.testing.assert_close(ours(x), run_hf_attention(hf_attn, x))

GPT-2's checkpoints store their linear layers as ``Conv1D``, whose weight is the transpose of an
``nn.Linear`` weight: ``(in, out)`` instead of ``(out, in)``. The course's modules use ``nn.Linear``, so weights
of the layers named in :data:`CONV1D_LAYERS` are transposed on the way in and out. Nothing here downloads.
"""

from __future__ import annotations

import torch
from torch import nn

#: Layers that GPT-2 checkpoints store transposed (``Conv1D``): attention's c_attn, c_proj and the MLP's c_fc, c_proj.
CONV1D_LAYERS = ("c_attn", "c_proj", "c_fc")


def is_conv1d_weight(key: str) -> bool:
    """``True`` for ``h.0.attn.c_attn.weight`` and the like: a weight GPT-2 stores as (in, out)."""
    parts = key.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in CONV1D_LAYERS


def gpt2_config(config, **overrides):
    """A ``transformers.GPT2Config`` equal to the course's ``GPTConfig`` (tanh GELU, eps 1e-5, no dropout
    unless ``config.dropout``), with eager attention unless ``attn_implementation`` is given."""
    from transformers import GPT2Config

    if not getattr(config, "bias", True):
        raise ValueError("GPT-2 always has biases: HF GPT2 cannot mirror a config with bias=False")
    settings = dict(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout, embd_pdrop=config.dropout,
        attn_pdrop=config.dropout, layer_norm_epsilon=1e-5, activation_function="gelu_new",
        # GPT-2's <|endoftext|> is the last token of its vocabulary
        bos_token_id=config.vocab_size - 1, eos_token_id=config.vocab_size - 1,
    )
    implementation = overrides.pop("attn_implementation", "eager")
    settings.update(overrides)
    hf_config = GPT2Config(**settings)
    hf_config._attn_implementation = implementation
    return hf_config


def hf_state_dict_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An HF GPT-2 state dict in the course's layout (Conv1D weights transposed)."""
    return {k: (v.t() if is_conv1d_weight(k) else v) for k, v in state.items()}


def our_state_dict_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The course's state dict in HF GPT-2's layout (the inverse of :func:`hf_state_dict_to_ours`)."""
    return {k: (v.t() if is_conv1d_weight(k) else v) for k, v in state.items()}


def _is_hf_buffer(key: str) -> bool:
    """Old GPT-2 checkpoints hold the causal mask as ``h.N.attn.bias`` / ``attn.masked_bias``: not weights."""
    return key.split(".")[-2:] in (["attn", "bias"], ["attn", "masked_bias"])


@torch.no_grad()
def copy_from_hf(ours: nn.Module, hf: nn.Module) -> nn.Module:
    """Copy every parameter of the HF module into the course module with the same structure; returns ``ours``.

    Names must match (GPT-2's names: ``c_attn``, ``c_proj``, ``ln_1``, ...); a missing or extra parameter, or a
    shape that does not fit, is an error that names it.
    """
    theirs = hf_state_dict_to_ours({k: v for k, v in hf.state_dict().items() if not _is_hf_buffer(k)})
    mine = ours.state_dict()
    missing, extra = sorted(set(theirs) - set(mine)), sorted(set(mine) - set(theirs))
    if missing or extra:
        raise KeyError(f"parameter names differ from HF GPT-2's: ours lacks {missing}, HF lacks {extra}")
    for key, value in theirs.items():
        if mine[key].shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(mine[key].shape)}, but HF GPT-2's is {tuple(value.shape)}")
        mine[key].copy_(value)
    return ours


def causal_attention_mask(T: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The (1, 1, T, T) additive mask HF attention expects: 0 where allowed, the dtype's minimum elsewhere."""
    allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(T, T, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def run_hf_attention(hf_attention: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Causal self-attention output of an HF ``GPT2Attention`` on ``x`` (B, T, C)."""
    mask = causal_attention_mask(x.size(1), x.dtype, x.device)
    return hf_attention(x, attention_mask=mask)[0]


def run_hf_block(hf_block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of an HF ``GPT2Block`` on ``x`` (B, T, C), with the causal mask."""
    out = hf_block(x, attention_mask=causal_attention_mask(x.size(1), x.dtype, x.device))
    return out[0] if isinstance(out, tuple) else out
