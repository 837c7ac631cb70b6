"""Chapter 6b's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=applications``).

Supervised fine-tuning batches are lists concatenated and padded; the loss is ``F.cross_entropy`` with
``ignore_index=-100`` on the shifted logits (Hugging Face's causal-LM loss); the loop is ``torch.optim.AdamW`` from
chapter 5b's ``configure_optimizer`` with ``torch.nn.utils.clip_grad_norm_``; the classifier runs the GPT's own
modules and scores the last non-padding position, as ``transformers.GPT2ForSequenceClassification`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# the chapter imports it from chapter 5b, so its module re-exports it; here it is chapter 5b's (fallback or not)
from llmcourse.chapters.training import configure_optimizer

__all__ = ["IGNORE_INDEX", "sft_batch", "sft_loss", "finetune", "SequenceClassifier", "configure_optimizer"]

#: The label that ``F.cross_entropy`` (and Hugging Face) skip: positions that are not learned.
IGNORE_INDEX = -100


def _token_list(value, what: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype.is_floating_point:
            raise TypeError(f"{what} should be a list of token ids (ints), got a {value.dtype} tensor of shape "
                            f"{tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{what} should be a list of token ids (ints), got {type(value).__name__}")
    for token in value:
        if isinstance(token, bool) or not isinstance(token, int):
            raise TypeError(f"{what} should hold ints (token ids), found {type(token).__name__} {token!r:.30}")
        if token < 0:
            raise ValueError(f"{what} holds the negative token id {token}; token ids are >= 0")
    return list(value)


def _token_id(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} should be an int token id, got {type(value).__name__} {value!r:.30}")
    if value < 0:
        raise ValueError(f"{what} should be a token id >= 0, got {value}")
    return value


def sft_batch(prompts: list[list[int]], completions: list[list[int]], eos_token_id: int, pad_token_id: int,
              block_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, labels, attention_mask), each (B, T) long: rows prompt + completion + [eos], right-padded;
    labels = the tokens (unshifted) with -100 on the prompt and the padding; the mask 1 on real tokens."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) \
            or isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise TypeError("prompts and completions should be lists of token-id lists, got "
                        f"{type(prompts).__name__} and {type(completions).__name__}")
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions: give one completion per prompt")
    if len(prompts) == 0:
        raise ValueError("no examples: give at least one prompt and its completion")
    eos, pad = _token_id(eos_token_id, "eos_token_id"), _token_id(pad_token_id, "pad_token_id")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 1):
        raise ValueError(f"block_size should be a positive int or None, got {block_size!r}")
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        prompt = _token_list(prompt, f"prompts[{i}]")
        completion = _token_list(completion, f"completions[{i}]")
        row = prompt + completion + [eos]
        if block_size is not None and len(row) > block_size:
            raise ValueError(f"row {i} has {len(row)} tokens (prompt {len(prompt)} + completion {len(completion)} "
                             f"+ eos), more than block_size={block_size}: shorten it or leave it out")
        rows.append((row, len(prompt)))
    T = max(len(row) for row, _ in rows)
    input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (row, n_prompt) in enumerate(rows):
        tokens = torch.tensor(row, dtype=torch.long)
        input_ids[i, : len(row)] = tokens
        labels[i, n_prompt: len(row)] = tokens[n_prompt:]
        attention_mask[i, : len(row)] = 1
    return input_ids, labels, attention_mask


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of labels[:, 1:] given logits[:, :-1] over the labelled positions (label != -100)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.dtype.is_floating_point:
        raise ValueError("logits should be a (B, T, V) float tensor, got "
                         + (f"{logits.dtype} of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                            else type(logits).__name__))
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.shape != logits.shape[:2]:
        raise ValueError(f"labels should be a (B, T) = {tuple(logits.shape[:2])} tensor of token ids, got "
                         + (f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                            else type(labels).__name__))
    targets = labels[:, 1:].long()
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError("no position has a label (every labels[:, 1:] is -100): nothing to learn from")
    V = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def _check_finetune_arguments(model, input_ids, labels, steps, batch_size, lr, weight_decay, grad_clip) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be an nn.Module (a GPT), got {type(model).__name__}")
    for name, t in (("input_ids", input_ids), ("labels", labels)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.dtype.is_floating_point:
            raise ValueError(f"{name} should be a (N, T) tensor of token ids (sft_batch's), got "
                             + (f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor)
                                else type(t).__name__))
    if input_ids.shape != labels.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and labels {tuple(labels.shape)} should have one shape")
    if len(input_ids) == 0:
        raise ValueError("no examples to fine-tune on: input_ids has 0 rows")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} should be an int, got {type(value).__name__}")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps should be >= 0 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    if not lr > 0 or not weight_decay >= 0 or not grad_clip > 0:
        raise ValueError(f"lr and grad_clip should be > 0 and weight_decay >= 0, got lr={lr}, "
                         f"weight_decay={weight_decay}, grad_clip={grad_clip}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameter (every requires_grad is False)")


def finetune(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, *, steps: int, batch_size: int,
             lr: float, weight_decay: float = 0.0, grad_clip: float = 1.0, generator: torch.Generator | None = None,
             callback: Callable[[int, nn.Module], None] | None = None) -> list[float]:
    """AdamW (chapter 5b's configure_optimizer) on sft_loss over random rows; the step losses."""
    _check_finetune_arguments(model, input_ids, labels, steps, batch_size, lr, weight_decay, grad_clip)
    device = next(model.parameters()).device
    model.train()
    optimizer = configure_optimizer(model, weight_decay, lr)
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses = []
    for step in range(steps):
        rows = torch.randint(len(input_ids), (batch_size,), generator=generator)
        x, y = input_ids[rows].to(device), labels[rows].to(device)
        loss = sft_loss(model(x)[0], y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, model)
    return losses


class SequenceClassifier(nn.Module):
    """A GPT's transformer with a linear head (no bias) on the last non-padding token: GPT2ForSequenceClassification."""

    def __init__(self, gpt: nn.Module, num_labels: int, pad_token_id: int):
        super().__init__()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels should be a positive int, got {num_labels!r}")
        self.pad_token_id = _token_id(pad_token_id, "pad_token_id")
        self.config = gpt.config
        self.transformer = gpt.transformer
        self.score = nn.Linear(gpt.config.n_embd, num_labels, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=0.02)  # GPT-2's initialisation (as HF's head)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point \
                or input_ids.size(1) == 0:
            raise ValueError("input_ids should be a non-empty (B, T) tensor of token ids, got "
                             + (f"{input_ids.dtype} of shape {tuple(input_ids.shape)}"
                                if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__))
        B, T = input_ids.shape
        if T > self.config.block_size:
            raise ValueError(f"{T} tokens exceed block_size={self.config.block_size}")
        t = self.transformer
        x = t["drop"](t["wte"](input_ids) + t["wpe"](torch.arange(T, device=input_ids.device)))  # (B, T, C)
        for block in t["h"]:
            x = block(x)
        hidden = t["ln_f"](x)  # (B, T, C)
        real = (input_ids != self.pad_token_id).long()  # (B, T)
        last = (torch.arange(T, device=input_ids.device) * real).argmax(-1)  # (B,): 0 for an all-padding row
        return self.score(hidden[torch.arange(B, device=input_ids.device), last])  # (B, num_labels)
