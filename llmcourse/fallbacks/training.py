"""Chapter 5b's exports, from PyTorch built-ins (``LLMCOURSE_FALLBACK=training``).

Batches are slices of the data, stacked; the optimizer is ``torch.optim.AdamW`` with two
parameter groups, the learning-rate schedule is PyTorch's own ``LinearLR`` warm-up followed by ``CosineAnnealingLR``
(run once per schedule and remembered), clipping is ``torch.nn.utils.clip_grad_norm_``, and a checkpoint is the
model's GPT-2 files (its ``save_pretrained``) plus one ``torch.save`` file with the optimizer, the step and the
random states. What the notebook's section "What loss.backward() and optimizer.step() compute" writes by hand is
here PyTorch's own: ``F.cross_entropy``, ``torch.nn.utils.clip_grad_norm_``, ``torch.optim.AdamW``, and the backward
kernels ``torch._softmax_backward_data`` and ``aten::native_layer_norm_backward``.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["get_batch", "configure_optimizer", "lr_at", "train_step", "estimate_loss", "save_checkpoint",
           "load_checkpoint", "cross_entropy", "clip_grad_norm_", "AdamW",
           "softmax_backward", "SoftmaxFunction", "layer_norm_backward", "LayerNormFunction"]

_STATE_FILE = "training_state.pt"


def get_batch(data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), both (B, T): random windows data[i:i+T] and data[i+1:i+T+1], i uniform in 0 .. len(data) - T - 1."""
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens: a window of block_size={block_size} needs {block_size + 1}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = torch.stack([data[i: i + block_size + 1] for i in starts.tolist()]) if batch_size else \
        data.new_empty((0, block_size + 1))
    return windows[:, :-1].to(device), windows[:, 1:].to(device)


def configure_optimizer(model: nn.Module, weight_decay: float, lr: float,
                        betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW; group 0: trainable parameters with dim >= 2, decayed; group 1: the others, not decayed."""
    groups: dict[bool, list[nn.Parameter]] = {True: [], False: []}
    for p in model.parameters():
        if p.requires_grad:
            groups[p.ndim >= 2].append(p)
    return torch.optim.AdamW([{"params": groups[True], "weight_decay": weight_decay},
                              {"params": groups[False], "weight_decay": 0.0}], lr=lr, betas=betas)


@functools.lru_cache(maxsize=32)
def _schedule(max_lr: float, warmup: int, total: int, min_lr: float) -> tuple[float, ...]:
    """The rate at steps 0 .. total from torch.optim.lr_scheduler (LinearLR, then CosineAnnealingLR)."""
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total - warmup, 1), eta_min=min_lr)
    if warmup > 0:
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0,
                                                   total_iters=max(warmup - 1, 1))
        scheduler = torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warmup])
    else:
        scheduler = cosine
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schedulers warn about details that do not matter for reading off rates
        for _ in range(total + 1):
            rates.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            scheduler.step()
    return tuple(rates)


def lr_at(step: int, max_lr: float, warmup: int, total: int, min_lr: float) -> float:
    """Linear warm-up (max_lr (step + 1) / warmup), then a cosine from max_lr to min_lr at ``total``."""
    if step >= total:
        return float(min_lr)
    if step < warmup:
        return max_lr * (step + 1) / warmup
    return _schedule(float(max_lr), int(warmup), int(total), float(min_lr))[step]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float,
               grad_clip: float = 1.0) -> tuple[float, float]:
    """Set lr, forward, backward, clip (norm before clipping returned), step, clear the gradients."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = model(x, y)[1]
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), float(norm)


@torch.no_grad()
def estimate_loss(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 32,
                  max_batches: int | None = None) -> float:
    """Mean loss per token over consecutive windows of ``data``, in eval mode and without gradients."""
    device = next(model.parameters()).device
    n = (len(data) - 1) // block_size
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    inputs = data[: n * block_size].view(n, block_size)
    targets = data[1: n * block_size + 1].view(n, block_size)
    mode = model.training
    model.eval()
    try:
        total = 0.0
        for xb, yb in zip(inputs.split(batch_size), targets.split(batch_size)):
            total += float(model(xb.to(device), yb.to(device))[1]) * xb.numel()
    finally:
        model.train(mode)
    return total / max(n * block_size, 1)


def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    generator: torch.Generator) -> Path:
    """``model.save_pretrained(directory)`` plus training_state.pt: optimizer, step, generator and torch RNGs."""
    directory = Path(directory)
    model.save_pretrained(directory)
    rng = {"batches": generator.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.random.get_rng_state_all()
    torch.save({"step": int(step), "optimizer": optimizer.state_dict(), "rng": rng}, directory / _STATE_FILE)
    return directory


def load_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> int:
    """Restore a :func:`save_checkpoint` folder into model, optimizer, generator and torch's RNG; the step."""
    directory = Path(directory)
    saved = type(model).from_pretrained(directory)
    model.load_state_dict(saved.state_dict())
    state = torch.load(directory / _STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"]["batches"])
    torch.random.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """``F.cross_entropy`` with the vocabulary last: logits (..., V), targets (...); the mean over kept targets."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise TypeError(f"logits must be a floating-point tensor (..., V), got {type(logits).__name__}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.long:
        raise TypeError(f"targets must be a tensor of token ids (torch.long), got {getattr(targets, 'dtype', targets)}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets must have the shape {tuple(logits.shape[:-1])} of logits {tuple(logits.shape)} "
                         f"without its last dimension, got {tuple(targets.shape)}")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)


def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``: scale every gradient by min(1, max_norm / (norm + 1e-6)); the norm."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    try:
        parameters = list(parameters)
    except TypeError:
        raise TypeError(f"parameters must be a tensor or an iterable of tensors, got {type(parameters).__name__}") \
            from None
    if not all(isinstance(p, torch.Tensor) for p in parameters):
        raise TypeError("parameters must be tensors")
    return torch.nn.utils.clip_grad_norm_(parameters, float(max_norm))


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (one tensor at a time), with the notebook's checks of its settings."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not (len(betas) == 2 and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=False)


def _same_shape(**tensors: torch.Tensor) -> None:
    if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise TypeError(f"expected tensors, got {({n: type(t).__name__ for n, t in tensors.items()})}")
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of one shape, got {shapes}")


def softmax_backward(y: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """PyTorch's softmax backward kernel: the gradient of x from y = softmax(x, -1) and grad_y."""
    _same_shape(y=y, grad_y=grad_y)
    return torch._softmax_backward_data(grad_y, y, -1, y.dtype)


class SoftmaxFunction(torch.autograd.Function):
    """softmax(x, dim=-1) whose backward is :func:`softmax_backward`."""

    @staticmethod
    def forward(ctx, x):
        y = torch.softmax(x, dim=-1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return softmax_backward(y, grad_y)


def layer_norm_backward(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor,
                        eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's LayerNorm backward kernel (``native_layer_norm_backward``): (grad_x, grad_weight, grad_bias)."""
    _same_shape(x=x, grad_out=grad_out)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != tuple(x.shape[-1:]):
        raise ValueError(f"weight must have shape {tuple(x.shape[-1:])}, got {tuple(getattr(weight, 'shape', ()))}")
    shape = list(x.shape[-1:])
    _, mean, rstd = torch.native_layer_norm(x, shape, weight, None, eps)
    grads = torch.ops.aten.native_layer_norm_backward(grad_out, x, shape, mean, rstd, weight, torch.zeros_like(weight),
                                                      [True, True, True])
    return tuple(grads)


class LayerNormFunction(torch.autograd.Function):
    """layer_norm over the last dimension whose backward is :func:`layer_norm_backward`."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        return (*layer_norm_backward(x, weight, grad_out, ctx.eps), None)
