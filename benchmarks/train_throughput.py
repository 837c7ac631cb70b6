"""Training throughput of the course's GPT against Hugging Face's GPT2LMHeadModel, eager and compiled, and MFU.

    python benchmarks/train_throughput.py [--preset course-small] [--batch-size 16] [--steps 20] [--warmup 5]
                                          [--threads 1] [--device cpu] [--no-compile] [--no-bf16]

One training step is forward + cross-entropy + backward + AdamW step + zero_grad (chapter 5b's ``train_step``
without clipping, written out so every model runs the same code). Every row starts from the same weights and
trains on the same batches; the rows' steps alternate in one process (a slow moment of the machine hits them all)
and each row's time is the median of ``--steps`` steps after ``--warmup`` (compilation happens in the warm-up).

Rows:
- **ours, plain**: the chapters' GPT with PyTorch's fused attention (``use_torch_sdpa()``), chapter 5b's AdamW;
- **ours, fast**: ``model.use_fused_kernels()`` (fused LayerNorm, GELU and attention on the same weights) and
  AdamW's fused kernel (``llmcourse.fast.fused_optimizer``);
- **ours, fast + compiled**: the same under ``torch.compile``;
- **HF, eager** and **HF, compiled**: ``GPT2LMHeadModel`` (``attn_implementation="sdpa"``) with the fused AdamW that
  Hugging Face's Trainer uses by default (``adamw_torch_fused``), eager and under ``torch.compile``;
- **ours, fast, bf16 autocast**: the forward pass under ``torch.autocast(dtype=torch.bfloat16)`` (a CPU with
  bfloat16 matrix units, or a GPU), with the loss it reaches beside the float32 rows' (same batches, same steps).

Targets on a CPU (float32): ours fast >= 1.0x HF eager; ours fast + compiled >= 1.3x HF eager and >= 1.1x HF
compiled. MFU is the achieved training FLOP/s (``flops_per_token``: 6 N + 12 L T C per token) over the machine's
matrix-multiply peak measured in the same run (float32 ``torch.mm`` on square matrices, best of a few sizes; for the
bf16 row, the bfloat16 peak).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LLMCOURSE_SOURCE", "solutions")

TARGETS = {"ours, fast": ("HF, eager", 1.0), "ours, fast + compiled": ("HF, eager", 1.3)}
TARGET_COMPILED = ("ours, fast + compiled", "HF, compiled", 1.1)


def peak_matmul_flops(device: torch.device, dtype=torch.float32, sizes=(512, 1024, 2048), repeats: int = 10) -> float:
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            a @ b
            _sync(device)
            times.append(time.perf_counter() - t)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="course-small")
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled rows (compiling takes ~1 min)")
    p.add_argument("--no-bf16", action="store_true", help="leave out the bf16 autocast row")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from llmcourse.chapters.gpt import GPT, estimate_mfu, flops_per_token, preset, to_gpt2_state_dict
    from llmcourse.chapters.training import configure_optimizer
    from llmcourse.device import get_device
    from llmcourse.fast import fused_optimizer
    from llmcourse.hf import gpt2_config

    hf_logging.set_verbosity_error()
    device = get_device(args.device)
    config = preset(args.preset, vocab_size=args.vocab_size)
    torch.manual_seed(0)
    plain = GPT(config).use_torch_sdpa().to(device).train()
    weights = copy.deepcopy(plain.state_dict())

    def ours(fast: bool):
        model = GPT(config)
        model.load_state_dict(weights)
        model = (model.use_fused_kernels() if fast else model.use_torch_sdpa()).to(device).train()
        opt = configure_optimizer(model, 0.1, 1e-3)
        return model, fused_optimizer(opt) if fast else opt

    def hf():
        model = GPT2LMHeadModel(gpt2_config(config, attn_implementation="sdpa"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            missing, unexpected = model.load_state_dict(to_gpt2_state_dict(plain), strict=False)
        allowed = ("attn.bias", "attn.masked_bias", "lm_head.weight")  # buffers; the output layer is tied to wte
        assert not unexpected and all(k.endswith(allowed) for k in missing), (missing, unexpected)
        model.tie_weights()
        model.to(device).train()
        return model, fused_optimizer(configure_optimizer(model, 0.1, 1e-3))  # HF Trainer's adamw_torch_fused

    B, T = args.batch_size, config.block_size
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(config.vocab_size, (B, T), generator=gen).to(device),
                torch.randint(config.vocab_size, (B, T), generator=gen).to(device)) for _ in range(4)]
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16)

    def our_loss(model, autocast=None):
        def loss(x, y):
            if autocast is None:
                return model(x, y)[1]
            with autocast:
                return model(x, y)[1]
        return loss

    def hf_loss(model):
        return lambda x, y: F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())

    rows = {}
    model, opt = plain, configure_optimizer(plain, 0.1, 1e-3)
    rows["ours, plain"] = (opt, our_loss(model))
    model, opt = ours(fast=True)
    rows["ours, fast"] = (opt, our_loss(model))
    fast_model = model
    if not args.no_compile:
        model, opt = ours(fast=True)
        rows["ours, fast + compiled"] = (opt, our_loss(torch.compile(model)))
    model, opt = hf()
    rows["HF, eager"] = (opt, hf_loss(model))
    hf_model = model
    if not args.no_compile:
        model, opt = hf()
        rows["HF, compiled"] = (opt, hf_loss(torch.compile(model)))
    if not args.no_bf16:
        model, opt = ours(fast=True)
        rows["ours, fast, bf16 autocast"] = (opt, our_loss(model, bf16))

    x0 = batches[0][0]
    with torch.no_grad():
        diff = (plain(x0)[0] - hf_model(x0).logits).abs().max().item()
        diff_fast = (plain(x0)[0] - fast_model(x0)[0]).abs().max().item()

    times = {name: [] for name in rows}
    losses = {name: [] for name in rows}
    for i in range(args.warmup + args.steps):
        x, y = batches[i % len(batches)]
        order = list(rows.items()) if i % 2 == 0 else list(reversed(rows.items()))
        for name, (opt, loss_fn) in order:
            _sync(device)
            t = time.perf_counter()
            loss = loss_fn(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
            losses[name].append(loss.item())

    tokens_per_s = {name: B * T / statistics.median(ts) for name, ts in times.items()}
    peak = peak_matmul_flops(device)
    peak_bf16 = peak_matmul_flops(device, torch.bfloat16) if not args.no_bf16 else None
    fpt = flops_per_token(config, T)
    hf_eager = tokens_per_s["HF, eager"]
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "preset": args.preset, "batch": [B, T],
        "parameters": plain.num_params(), "max_logit_diff_hf": diff, "max_logit_diff_fast": diff_fast,
        "tokens_per_s": tokens_per_s, "ratio_to_hf_eager": {n: v / hf_eager for n, v in tokens_per_s.items()},
        "flops_per_token": fpt, "peak_flops": peak, "peak_flops_bf16": peak_bf16,
        "mfu": {n: estimate_mfu(config, T, v, peak_bf16 if "bf16" in n else peak) for n, v in tokens_per_s.items()},
        "final_loss": {n: v[-1] for n, v in losses.items()},
    }
    print(f"{args.preset}: {plain.num_params():,} parameters, batch {B} x {T} tokens, {device}, "
          f"{torch.get_num_threads()} thread(s); logits agree with HF to {diff:.1e}, fast with plain to "
          f"{diff_fast:.1e}")
    print(f"matmul peak measured now: {peak / 1e9:.1f} GFLOP/s float32"
          + (f", {peak_bf16 / 1e9:.1f} GFLOP/s bfloat16" if peak_bf16 else ""))
    header = f"loss after {args.warmup + args.steps} steps"
    print(f"{'':28s} {'tokens/s':>10s} {'vs HF eager':>12s} {'MFU':>7s} {header:>22s}")
    for name, tps in tokens_per_s.items():
        print(f"  {name:26s} {tps:10,.0f} {tps / hf_eager:11.2f}x {100 * result['mfu'][name]:6.1f}% "
              f"{result['final_loss'][name]:22.6f}")
    verdicts = []
    for name, (ref, target) in TARGETS.items():
        if name in tokens_per_s:
            ratio = tokens_per_s[name] / tokens_per_s[ref]
            verdicts.append((f"{name} / {ref}", ratio, target))
    name, ref, target = TARGET_COMPILED
    if name in tokens_per_s:
        verdicts.append((f"{name} / {ref}", tokens_per_s[name] / tokens_per_s[ref], target))
    print("targets:")
    for label, ratio, target in verdicts:
        print(f"  {label:45s} {ratio:5.2f}x  (target >= {target}x: {'met' if ratio >= target else 'NOT met'})")
    result["targets"] = {label: {"ratio": ratio, "target": target, "met": ratio >= target}
                         for label, ratio, target in verdicts}
    return result


if __name__ == "__main__":
    main()
