"""Chapter 5c's exports, from PyTorch and transformers built-ins (``LLMCOURSE_FALLBACK=generation``).

The logits processors are Hugging Face's own (``transformers.generation.logits_process``); the cached attention runs
on ``F.scaled_dot_product_attention``; ``generate`` copies the GPT's weights into a ``transformers``
``GPT2LMHeadModel`` (layout converted by :mod:`llmcourse.hf`) and calls its ``generate`` with every argument given
explicitly, Hugging Face's defaults included (top_k=50 when sampling; the model's end-of-text token, the last id of its
vocabulary, ends a row). Nothing is downloaded.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

# the chapter imports these from chapters 4a and 4b, so its module re-exports them; here they are their fallbacks
from llmcourse.fallbacks.attention import scaled_dot_product_attention  # noqa: F401
from llmcourse.fallbacks.multi_head_attention import merge_heads, split_heads  # noqa: F401
from llmcourse.hf import gpt2_config, our_state_dict_to_hf

__all__ = ["top_k_filter", "top_p_filter", "apply_repetition_penalty", "block_repeated_ngrams", "KVCache",
           "attend_with_cache", "forward_with_cache", "MODEL_EOS", "model_eos_token_id", "generate"]


def _processors():
    from transformers.generation import logits_process

    return logits_process


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """``TopKLogitsWarper``: logits below the top_k-th largest of their row become -inf."""
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1])
    return _processors().TopKLogitsWarper(top_k)(None, flat.clone()).reshape(shape)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``TopPLogitsWarper``: tokens outside the smallest set holding probability top_p become -inf."""
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1])
    return _processors().TopPLogitsWarper(float(top_p))(None, flat.clone()).reshape(shape)


def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``RepetitionPenaltyLogitsProcessor``; positions where ``attention_mask`` is 0 are sent to a spare column."""
    V = logits.size(-1)
    if attention_mask is not None:
        input_ids = input_ids.masked_fill(attention_mask == 0, V)  # the processor drops ids >= V
    return _processors().RepetitionPenaltyLogitsProcessor(float(penalty))(input_ids, logits.clone())


def block_repeated_ngrams(logits: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """``NoRepeatNGramLogitsProcessor``: -inf for the tokens that would repeat an n-gram of the row."""
    return _processors().NoRepeatNGramLogitsProcessor(n)(input_ids, logits.clone())


class KVCache:
    """Keys and values per layer: layers[l] = (k, v), each (B, nh, T_past, hs), or None; len() = T_past."""

    def __init__(self, n_layer: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    def __len__(self) -> int:
        return 0 if self.layers[0] is None else self.layers[0][0].size(2)


def attend_with_cache(attn: nn.Module, x: torch.Tensor, past=None, key_mask: torch.Tensor | None = None):
    """The attention module's layers, with ``F.scaled_dot_product_attention`` over the cached and new keys."""
    B, T, C = x.shape
    q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2)
               for t in attn.c_attn(x).split(attn.n_embd, dim=2))
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    S = k.size(2)
    q_pos, k_pos = torch.arange(S - T, S, device=x.device), torch.arange(S, device=x.device)
    allowed = k_pos[None, :] <= q_pos[:, None]
    if key_mask is not None:
        allowed = (allowed & key_mask.bool()[:, None, None, :]) | (k_pos[None, :] == q_pos[:, None])
    elif T == 1:
        allowed = None  # one new query without padding reads every key
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return attn.resid_dropout(attn.c_proj(y.transpose(1, 2).reshape(B, T, C))), (k, v)


def forward_with_cache(model: nn.Module, idx: torch.Tensor, cache: KVCache | None = None,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V) of the new tokens, extending ``cache``; positions count the real tokens of each row."""
    if hasattr(model, "forward_with_cache"):  # a model that brings its own, such as chapter 4e's ModernGPT
        return model.forward_with_cache(idx, cache, attention_mask)
    t = model.transformer
    cache = KVCache(len(t.h)) if cache is None else cache
    past, T = len(cache), idx.size(1)
    if attention_mask is None:
        pos = torch.arange(past, past + T, device=idx.device)
    else:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
    x = t.drop(t.wte(idx) + t.wpe(pos))
    for layer, block in enumerate(t.h):
        a, cache.layers[layer] = attend_with_cache(block.attn, block.ln_1(x), cache.layers[layer], attention_mask)
        x = x + a
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(t.ln_f(x))


class _ModelEos:
    """The type of MODEL_EOS, which prints as its name."""

    def __repr__(self) -> str:
        return "MODEL_EOS"


MODEL_EOS = _ModelEos()  # generate's default eos_token_id: the model's own end-of-text token (None means none)


def model_eos_token_id(model: nn.Module) -> int | None:
    """The model's ``eos_token_id`` attribute if it has one, else the last id of its vocabulary (GPT-2's and the
    course tokenizer's ``<|endoftext|>``, and the ``eos_token_id`` that ``save_pretrained`` writes)."""
    if hasattr(model, "eos_token_id"):
        return model.eos_token_id
    return model.config.vocab_size - 1


def _hf_model(model: nn.Module):
    """Hugging Face's model with a copy of the weights: GPT2LMHeadModel for chapter 5a's GPT, LlamaForCausalLM for
    chapter 4e's ModernGPT (the model that brings its own ``forward_with_cache``)."""
    from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if hasattr(model, "forward_with_cache"):
        from llmcourse.fallbacks.modern_block import llama_config_dict, to_llama_state_dict

        with torch.random.fork_rng():
            hf = LlamaForCausalLM(LlamaConfig(**llama_config_dict(model.config)))
        state = to_llama_state_dict({k: v.detach() for k, v in model.state_dict().items()}, model.config.n_layer)
        hf.load_state_dict(state, strict=False)
        hf.generation_config.eos_token_id = hf.generation_config.bos_token_id = None
        return hf.to(next(model.parameters()).device).eval()
    with torch.random.fork_rng():  # building the model draws random weights: leave the caller's RNG alone
        hf = GPT2LMHeadModel(gpt2_config(model.config))  # ties lm_head.weight to transformer.wte.weight
    ours = our_state_dict_to_hf({name: p.detach() for name, p in model.named_parameters()})
    hf.load_state_dict({key: value for key, value in ours.items() if key in hf.state_dict()}, strict=False)
    hf.generation_config.eos_token_id = None  # generate passes the end-of-text id in use explicitly
    hf.generation_config.bos_token_id = None
    return hf.to(next(model.parameters()).device).eval()


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, *, max_length: int | None = None,
             max_new_tokens: int | None = None, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = 50, top_p: float | None = None, no_repeat_ngram_size: int = 0,
             repetition_penalty: float = 1.0, num_return_sequences: int = 1, eos_token_id: int | None = MODEL_EOS,
             pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``GPT2LMHeadModel.generate`` on a copy of the model's weights, with the chapter's argument checks and
    Hugging Face's defaults (``top_k=50``; ``eos_token_id``: the model's end-of-text token, None for none)."""
    from transformers.utils import logging as hf_logging

    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
        raise ValueError("input_ids should be a (B, T) tensor of token ids")
    B, T = input_ids.shape
    block_size = model.config.block_size
    if B == 0 or T == 0:
        raise ValueError(f"the prompt is empty (input_ids of shape {(B, T)}): give at least one token per row")
    if T > block_size:
        raise ValueError(f"the prompt has {T} tokens, more than the model's block_size={block_size}")
    if (max_length is None) == (max_new_tokens is None):
        raise ValueError("give exactly one of max_length (prompt included) and max_new_tokens; got "
                         f"max_length={max_length}, max_new_tokens={max_new_tokens}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens should be at least 1, got {max_new_tokens}")
    if max_length is not None and max_length <= T:
        raise ValueError(f"max_length={max_length} counts the prompt, which already has {T} tokens")
    total = T + max_new_tokens if max_new_tokens is not None else max_length
    if total > block_size:
        raise ValueError(f"generating up to {total} tokens needs positions beyond block_size={block_size}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature should be > 0 when sampling, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p should be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k should be >= 0, got {top_k}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty should be > 0, got {repetition_penalty}")
    if no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size should be >= 0, got {no_repeat_ngram_size}")
    if num_return_sequences < 1 or (num_return_sequences > 1 and not do_sample):
        raise ValueError(f"num_return_sequences={num_return_sequences}: needs to be >= 1, and > 1 needs do_sample")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask should have the shape of input_ids, {(B, T)}")
    if eos_token_id is MODEL_EOS:
        eos_token_id = model_eos_token_id(model)
    if eos_token_id is not None and not isinstance(eos_token_id, int):
        raise ValueError(f"eos_token_id should be one token id (an int), None or MODEL_EOS, got {eos_token_id!r}")

    hf = _hf_model(model)
    pad = eos_token_id if pad_token_id is None else pad_token_id
    settings = dict(max_length=total, do_sample=do_sample, num_return_sequences=num_return_sequences,
                    no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=float(repetition_penalty),
                    eos_token_id=eos_token_id, pad_token_id=0 if pad is None else pad, use_cache=use_cache,
                    attention_mask=torch.ones_like(input_ids) if attention_mask is None else attention_mask)
    if do_sample:
        settings.update(temperature=float(temperature), top_k=top_k or 0, top_p=1.0 if top_p is None else top_p)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(enabled=generator is not None):
            warnings.simplefilter("ignore")
            if generator is not None:  # HF samples from the global generator: seed it from ``generator``
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return hf.generate(input_ids, **settings)
    finally:
        hf_logging.set_verbosity(verbosity)
