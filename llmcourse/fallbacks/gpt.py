"""Chapter 5a's exports, from PyTorch and transformers built-ins (``LLMCOURSE_FALLBACK=gpt``).

The model is wired from chapters 4b-4d through the import mechanism, so it uses the student's blocks unless those
chapters are sent to their fallbacks too. Checkpoints are read and written by Hugging Face's own
``GPT2LMHeadModel`` (local files and the local cache only, nothing is downloaded), with the weight layout converted
by :mod:`llmcourse.hf`.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.chapters.multi_head_attention import GPTConfig
from llmcourse.chapters.residual_and_layernorm import Block, LayerNorm
from llmcourse.hf import (  # noqa: F401 - CONV1D_LAYERS and is_conv1d_weight are exports of the chapter
    CONV1D_LAYERS,
    copy_from_hf,
    gpt2_config,
    hf_state_dict_to_ours,
    is_conv1d_weight,
    our_state_dict_to_hf,
)

__all__ = ["GPTConfig", "Block", "LayerNorm", "PRESETS", "preset", "init_gpt2_weights", "GPT", "CONV1D_LAYERS",
           "is_conv1d_weight", "from_gpt2_state_dict", "to_gpt2_state_dict", "autocast", "flops_per_token",
           "estimate_mfu"]

_GPT2_SHAPE = dict(block_size=1024, vocab_size=50257)
PRESETS: dict[str, dict] = {
    "gpt2": dict(_GPT2_SHAPE, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(_GPT2_SHAPE, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(_GPT2_SHAPE, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(_GPT2_SHAPE, n_layer=48, n_head=25, n_embd=1600),
    "course-tiny": dict(block_size=64, n_layer=2, n_head=4, n_embd=64),  # vocab_size: the tokenizer's
    "course-small": dict(block_size=128, n_layer=4, n_head=4, n_embd=128),
}


def preset(name: str, **overrides) -> GPTConfig:
    """``GPTConfig`` of a named preset (``PRESETS``), fields overridden by keyword."""
    try:
        settings = PRESETS[name] | overrides
    except KeyError:
        raise ValueError(f"no preset called {name!r}; the presets are {', '.join(PRESETS)}") from None
    if "vocab_size" not in settings:
        raise ValueError(f"preset {name!r} needs vocab_size: the number of tokens of your tokenizer")
    return GPTConfig(**settings)


def init_gpt2_weights(model: nn.Module, n_layer: int, generator: torch.Generator | None = None) -> nn.Module:
    """GPT-2's initialisation in place: N(0, 0.02^2) weights, N(0, (0.02/sqrt(2 n_layer))^2) for ``c_proj.weight``,
    zero biases, LayerNorms at gain 1 and bias 0."""
    for prefix, module in model.named_modules():
        norm = isinstance(module, (LayerNorm, nn.LayerNorm))
        for kind, p in module.named_parameters(recurse=False):
            if norm:
                nn.init.constant_(p, 1.0 if kind == "weight" else 0.0)
            elif kind == "bias":
                nn.init.zeros_(p)
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                residual = f"{prefix}.{kind}".endswith("c_proj.weight")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer) if residual else 0.02, generator=generator)
    return model


class GPT(nn.Module):
    """GPT-2 with its parameter names; the output layer shares the token embedding's weight."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        width = config.n_embd
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, width),
            "wpe": nn.Embedding(config.block_size, width),
            "drop": nn.Dropout(config.dropout),
            "h": nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            "ln_f": LayerNorm(width, bias=config.bias),
        })
        self.lm_head = nn.Linear(width, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer["wte"].weight
        init_gpt2_weights(self, config.n_layer)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        self._validate(idx, targets)
        stream = self.transformer["wte"](idx) + self.transformer["wpe"].weight[: idx.shape[1]]
        stream = self.transformer["drop"](stream)
        for block in self.transformer["h"]:
            stream = block(stream)
        logits = self.lm_head(self.transformer["ln_f"](stream))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100)

    def _validate(self, idx, targets) -> None:
        if idx.ndim != 2 or torch.is_floating_point(idx):
            raise ValueError(f"idx should be (B, T) token ids, got {idx.dtype} of shape {tuple(idx.shape)}")
        if idx.shape[1] > self.config.block_size:
            raise ValueError(f"{idx.shape[1]} tokens exceed block_size={self.config.block_size}")
        if idx.numel() and not torch.compiler.is_compiling():
            bad = idx[(idx < 0) | (idx >= self.config.vocab_size)]
            if bad.numel():
                raise ValueError(f"token id {int(bad[0])} is out of range for vocab_size={self.config.vocab_size}")
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(f"targets should have shape {tuple(idx.shape)}, got {tuple(targets.shape)}")

    def num_params(self, non_embedding: bool = False) -> int:
        skip = {id(self.transformer["wte"].weight), id(self.transformer["wpe"].weight)} if non_embedding else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def use_torch_sdpa(self, enabled: bool = True) -> GPT:
        for block in self.transformer["h"]:
            block.attn.use_torch_sdpa = enabled
        return self

    def use_fused_kernels(self, enabled: bool = True) -> GPT:
        """PyTorch's fused LayerNorm, GELU and attention on this model's parameters, and a preallocated KV cache
        in generate() (llmcourse/fast.py); enabled=False goes back to the plain path. Returns the model."""
        from llmcourse.fast import use_fused_kernels

        return use_fused_kernels(self, enabled)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, dropout: float | None = None,
                        cache_dir: str | Path | None = None) -> GPT:
        """Load a GPT-2 checkpoint folder (or a model in the local Hugging Face cache) with transformers."""
        from transformers import GPT2LMHeadModel

        try:
            with _quiet_transformers():
                hf = GPT2LMHeadModel.from_pretrained(str(name_or_path), local_files_only=True, cache_dir=cache_dir)
        except OSError as err:
            raise FileNotFoundError(
                f"cannot load {str(name_or_path)!r}: it is neither a GPT-2 checkpoint folder nor a model in the "
                "local Hugging Face cache, and nothing is downloaded here. Download it once with transformers "
                "(GPT2LMHeadModel.from_pretrained) on a machine with a network, or pass a folder with config.json "
                f"and model.safetensors. ({err})"
            ) from None
        c = hf.config
        if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh") or c.n_inner not in (None, 4 * c.n_embd) \
                or not math.isclose(c.layer_norm_epsilon, 1e-5) or c.scale_attn_by_inverse_layer_idx:
            raise ValueError(f"{name_or_path}: unsupported GPT-2 settings (activation_function="
                             f"{c.activation_function!r}, n_inner={c.n_inner}, layer_norm_epsilon="
                             f"{c.layer_norm_epsilon}, scale_attn_by_inverse_layer_idx="
                             f"{c.scale_attn_by_inverse_layer_idx})")
        config = GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                           n_embd=c.n_embd, dropout=c.resid_pdrop if dropout is None else dropout)
        return copy_from_hf(cls(config), hf)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model as transformers' GPT2LMHeadModel writes it (config.json, model.safetensors)."""
        from transformers import GPT2LMHeadModel

        hf = GPT2LMHeadModel(gpt2_config(self.config))
        mine = our_state_dict_to_hf(self.state_dict())
        hf.load_state_dict({key: mine[key] for key in hf.state_dict()})
        with _quiet_transformers():
            hf.save_pretrained(path)
        return Path(path)

    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Chapter 5c's ``generate(self, input_ids, **kwargs)``, with Hugging Face's generate() arguments."""
        from llmcourse.chapters.generation import generate  # chapter 5c; imported here, so 5a works without it

        return generate(self, input_ids, **kwargs)


def from_gpt2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A GPT-2 checkpoint's tensors under the GPT's names and in nn.Linear's layout (buffers, lm_head dropped)."""
    buffers = (["attn", "bias"], ["attn", "masked_bias"])
    kept = {"transformer." + key.removeprefix("transformer."): value for key, value in state.items()
            if key != "lm_head.weight" and key.split(".")[-2:] not in buffers}
    return hf_state_dict_to_ours(kept)


def to_gpt2_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The GPT's parameters under GPT2LMHeadModel's names and layout: contiguous, detached CPU tensors."""
    params = {name: p.detach().cpu() for name, p in model.named_parameters()}
    return {name: t.contiguous() for name, t in our_state_dict_to_hf(params).items()}


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 on a CUDA GPU that supports it; a no-op elsewhere."""
    device = torch.device(device)
    use = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16) if use else contextlib.nullcontext()


def flops_per_token(config: GPTConfig, T: int | None = None) -> int:
    """Training FLOPs per token, 6N + 12 L T C, N = 12 L C^2 + V C (the weights that multiply)."""
    seq = config.block_size if T is None else T
    weights = config.n_layer * 12 * config.n_embd**2 + config.vocab_size * config.n_embd
    return 6 * weights + 12 * config.n_layer * seq * config.n_embd


def estimate_mfu(config: GPTConfig, T: int, tokens_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilization: achieved training FLOP/s over the hardware's peak."""
    return tokens_per_second * flops_per_token(config, T) / peak_flops


@contextlib.contextmanager
def _quiet_transformers():
    """Without transformers' progress bars and warnings, which write to stderr (and fail a graded cell)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
