"""Training throughput of the course's GPT against Hugging Face's GPT2LMHeadModel, and its MFU.

    LLMCOURSE_SOURCE=solutions python benchmarks/train_throughput.py [--preset course-small] [--batch-size 16]
                                                                     [--steps 20] [--warmup 5] [--device cpu]

One training step is forward + cross-entropy + backward + AdamW step + zero_grad (chapter 5b's ``train_step``
without clipping, written out so both models run the same code). The course GPT (``llmcourse.chapters.gpt``,
with PyTorch's fused attention, ``use_torch_sdpa()``) and ``GPT2LMHeadModel`` (``attn_implementation="sdpa"``) get
the same config, the same weights, the same batch and optimizers built by chapter 5b's ``configure_optimizer``;
their steps alternate in one process, and each one's time is the median of ``--steps`` steps after ``--warmup``.
Target: >= 1.1x Hugging Face's tokens/s on the course config on a CPU.

MFU: the achieved training FLOP/s (``flops_per_token``: 6 N + 12 L T C per token) over the machine's measured
matrix-multiply peak (the median of float32 ``torch.mm`` on square matrices, best size of a few).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F


def peak_matmul_flops(device: torch.device, sizes=(512, 1024, 2048), repeats: int = 10) -> float:
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
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
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)

    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from llmcourse.chapters.gpt import GPT, estimate_mfu, flops_per_token, preset, to_gpt2_state_dict
    from llmcourse.chapters.training import configure_optimizer
    from llmcourse.device import get_device
    from llmcourse.hf import gpt2_config

    hf_logging.set_verbosity_error()
    device = get_device(args.device)
    config = preset(args.preset, vocab_size=args.vocab_size)
    torch.manual_seed(0)
    ours = GPT(config).use_torch_sdpa().to(device)
    hf = GPT2LMHeadModel(gpt2_config(config, attn_implementation="sdpa"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missing, unexpected = hf.load_state_dict(to_gpt2_state_dict(ours), strict=False)
    allowed = ("attn.bias", "attn.masked_bias", "lm_head.weight")  # buffers; the output layer is tied to wte
    assert not unexpected and all(k.endswith(allowed) for k in missing), (missing, unexpected)
    hf.tie_weights()
    hf.to(device).train()
    B, T = args.batch_size, config.block_size
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(config.vocab_size, (B, T), generator=gen).to(device)
    y = torch.randint(config.vocab_size, (B, T), generator=gen).to(device)
    with torch.no_grad():
        diff = (ours(x)[0] - hf(x).logits).abs().max().item()
    runs = {
        "course GPT": (ours, configure_optimizer(ours, 0.1, 1e-4), lambda: ours(x, y)[1]),
        "HF GPT2LMHeadModel (sdpa)": (hf, configure_optimizer(hf, 0.1, 1e-4),
                                      lambda: F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten())),
    }
    times = {name: [] for name in runs}
    for i in range(args.warmup + args.steps):
        for name, (_model, opt, loss_fn) in (runs.items() if i % 2 == 0 else reversed(runs.items())):
            _sync(device)
            t = time.perf_counter()
            loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    tokens_per_s = {name: B * T / statistics.median(ts) for name, ts in times.items()}
    peak = peak_matmul_flops(device)
    ours_tps, hf_tps = tokens_per_s["course GPT"], tokens_per_s["HF GPT2LMHeadModel (sdpa)"]
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "preset": args.preset, "batch": [B, T],
        "parameters": ours.num_params(), "max_logit_diff": diff, "tokens_per_s": tokens_per_s,
        "ratio": ours_tps / hf_tps, "flops_per_token": flops_per_token(config, T), "peak_flops": peak,
        "achieved_flops": ours_tps * flops_per_token(config, T), "mfu": estimate_mfu(config, T, ours_tps, peak),
        "mfu_hf": estimate_mfu(config, T, hf_tps, peak),
    }
    print(f"{args.preset}: {ours.num_params():,} parameters, batch {B} x {T} tokens, {device}, "
          f"{torch.get_num_threads()} threads; logits agree to {diff:.1e}")
    for name, tps in tokens_per_s.items():
        print(f"  {name:28s} {tps:12,.0f} tokens/s  (median of {args.steps} steps)")
    print(f"ratio (course / HF): {result['ratio']:.2f}x   (target >= 1.1x)")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; course GPT achieves {result['achieved_flops'] / 1e9:.1f} GFLOP/s: "
          f"MFU {100 * result['mfu']:.1f}% (HF {100 * result['mfu_hf']:.1f}%)")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
