"""The course's trainer: chapter 5b's training loop on the course corpus, on any device, on one or many processes.

    python -m llmcourse.train --preset course-small --steps 3000 --out runs/small
    python -m llmcourse.train --preset course-small --device cuda --dtype bf16 --compile --out runs/small
    python -m llmcourse.train --preset course-small --fast --compile --out runs/small      # the fast path
    torchrun --nproc_per_node 4 -m llmcourse.train --preset course-small --out runs/ddp
    python -m llmcourse.train --resume runs/small --steps 6000 --out runs/small
    python -m llmcourse.train --help

The pieces are the chapters' own, through the course's import mechanism: ``get_batch``, ``configure_optimizer``,
``lr_at``, ``train_step``, ``estimate_loss``, ``save_checkpoint`` and ``load_checkpoint`` from
``llmcourse.chapters.training`` (chapter 5b), ``GPT`` and ``preset`` from ``llmcourse.chapters.gpt`` (5a), and
``BPETokenizer`` from ``llmcourse.chapters.tokens_and_positions`` (3). Which notebooks they come from follows the
usual settings: ``LLMCOURSE_SOURCE=solutions`` for the reference code, ``LLMCOURSE_SOURCE=chapters`` (the default
inside the course folder) for a student's own, ``LLMCOURSE_FALLBACK=...`` for the public fallbacks.

Batches. The global batch of ``--batch-size`` windows is made of ``--batch-shards`` shards (by default one per
process). Shard ``k`` of step ``s`` is drawn by ``get_batch`` from its own generator, seeded from
(``--seed``, s, k), and process ``r`` of ``W`` draws the shards r, r + W, ... So the batches do not depend on how
many processes share them, and a resumed run draws the batches the uninterrupted run would have drawn. Under
``torchrun`` the model is wrapped in ``DistributedDataParallel`` (gloo on CPUs, NCCL on GPUs), which averages the
gradients of the processes in ``backward()``: every process takes the step one process would take on the whole
batch. Only process 0 evaluates, logs and writes.

``--out DIR`` writes a GPT-2 checkpoint (``config.json``, ``model.safetensors``, which ``GPT.from_pretrained`` and
``transformers.GPT2LMHeadModel.from_pretrained`` load), the tokenizer's ``vocab.json`` and ``merges.txt``,
``training_state.pt`` (optimizer, step, random states; left out with ``--no-training-state``) and
``train_log.json`` (the settings and the loss curve). ``--resume DIR`` goes on from such a folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.distributed
from torch import nn

TOKENS_FILE_NAMES = ("vocab.json", "merges.txt")
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llmcourse.train",
        description="Train a GPT (chapter 5a) on the course corpus with chapter 5b's training pieces.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="course-tiny", help="a preset of llmcourse.chapters.gpt (course-tiny, "
                   "course-small, gpt2, ...)")
    m.add_argument("--n-layer", type=int, help="override the preset's number of blocks")
    m.add_argument("--n-head", type=int, help="override the preset's attention heads")
    m.add_argument("--n-embd", type=int, help="override the preset's width")
    m.add_argument("--block-size", type=int, help="override the preset's context length (tokens)")
    m.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size (the special token included)")
    m.add_argument("--dropout", type=float, default=0.0)
    d = p.add_argument_group("data")
    d.add_argument("--data-chars", type=int, default=2_000_000, help="characters of training text")
    d.add_argument("--val-chars", type=int, default=100_000, help="characters of validation text")
    d.add_argument("--tokenizer-chars", type=int, default=100_000,
                   help="characters of the training text the tokenizer is trained on")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the course corpus sample")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, default=32, help="windows per step, all processes together")
    o.add_argument("--batch-shards", type=int, help="shards of the batch, each from its own generator "
                   "(default: the number of processes; a multiple of it)")
    o.add_argument("--steps", type=int, default=1000, help="total optimiser steps (the schedule ends here)")
    o.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    o.add_argument("--min-lr", type=float, help="final learning rate (default: lr / 10)")
    o.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    o.add_argument("--weight-decay", type=float, default=0.1)
    o.add_argument("--beta2", type=float, default=0.95)
    o.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (inf: off)")
    o.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of the batches")
    o.add_argument("--stop-at", type=int, help="stop at this step, before --steps (the schedule still ends at "
                   "--steps): write the checkpoint and go on later with --resume")
    r = p.add_argument_group("running")
    r.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: llmcourse.device.get_device())")
    r.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the forward pass under torch.autocast in bfloat16, on a CUDA GPU that supports it or "
                   "on a CPU (the same loss; faster on a CPU only for wide models on bfloat16 matrix units)")
    r.add_argument("--fast", action="store_true", help="the fast path: model.use_fused_kernels() (PyTorch's fused "
                   "LayerNorm, GELU and attention on the same weights) and AdamW's fused kernel")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (with --fast: the fast path)")
    r.add_argument("--eval-interval", type=int, default=200, help="steps between validation losses (0: at the "
                   "end only)")
    r.add_argument("--eval-batches", type=int, help="at most this many validation batches per evaluation")
    r.add_argument("--out", type=Path, help="folder to write the checkpoint, tokenizer and log to")
    r.add_argument("--resume", type=Path, help="a folder written by --out to go on from")
    r.add_argument("--no-training-state", action="store_true",
                   help="with --out, write the model and tokenizer only (no optimizer state: cannot be resumed)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def batch_generator(seed: int, step: int, shard: int) -> torch.Generator:
    """The generator of shard ``shard`` of step ``step``: the same in every process and after resuming."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + shard)


class _Autocast(nn.Module):
    """The model, its forward pass under ``context()`` (autocast); backward and the optimizer stay outside."""

    def __init__(self, model: nn.Module, context):
        super().__init__()
        self.model = model
        self.context = context

    def forward(self, *args, **kwargs):
        with self.context():
            return self.model(*args, **kwargs)


def _distributed() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from llmcourse.chapters.gpt import GPT, autocast, preset
    from llmcourse.chapters.tokens_and_positions import BPETokenizer
    from llmcourse.chapters.training import (
        configure_optimizer,
        estimate_loss,
        get_batch,
        load_checkpoint,
        lr_at,
        save_checkpoint,
        train_step,
    )
    from llmcourse.data import entropy_floor, train_val_text
    from llmcourse.device import get_device
    from llmcourse.fast import fused_optimizer, use_fused_kernels

    rank, world, local_rank = _distributed()
    device = get_device(args.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main_process = rank == 0
    shards = args.batch_shards or world
    if shards % world or args.batch_size % shards:
        raise SystemExit(f"--batch-shards={shards} must be a multiple of the {world} processes and divide "
                         f"--batch-size={args.batch_size}")
    shard_size = args.batch_size // shards
    min_lr = args.lr / 10 if args.min_lr is None else args.min_lr

    def log(*parts):
        if main_process:
            print(*parts, flush=True)

    # data and tokenizer: the validation text takes no part in anything learned
    train_text, val_text = train_val_text(args.data_chars, args.val_chars, seed=args.data_seed)
    if args.resume:
        tokenizer = BPETokenizer.load(args.resume)
    else:
        tokenizer = BPETokenizer.train(train_text[: args.tokenizer_chars], vocab_size=args.vocab_size)
    train_data = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_data = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    val_chars_per_token = len(val_text) / max(len(val_data), 1)

    # model and optimizer
    torch.manual_seed(args.seed)
    if args.resume:
        model = GPT.from_pretrained(args.resume, dropout=args.dropout)
    else:
        overrides = {k: getattr(args, k) for k in MODEL_FIELDS if getattr(args, k) is not None}
        overrides["vocab_size"] = tokenizer.vocab_size
        model = GPT(preset(args.preset, **overrides))
    config = model.config
    model.use_torch_sdpa()
    if args.fast:
        use_fused_kernels(model)  # also a method of chapter 5a's GPT; this works for any GPT-2-named model
    model.to(device)
    optimizer = configure_optimizer(model, args.weight_decay, args.lr, betas=(0.9, args.beta2))
    if args.fast:
        optimizer = fused_optimizer(optimizer)
    state_generator = torch.Generator().manual_seed(args.seed)  # saved with the checkpoint
    start_step = 0
    if args.resume:
        start_step = load_checkpoint(args.resume, model, optimizer, state_generator)
        log(f"resumed from {args.resume} at step {start_step}")
    raw_model = model
    if args.compile:
        model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    if args.dtype == "bf16":
        if device.type == "cpu":
            model = _Autocast(model, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        else:
            if device.type != "cuda" or not torch.cuda.is_bf16_supported():
                log(f"--dtype bf16: this {device} has no bfloat16 autocast; running in float32")
            model = _Autocast(model, lambda: autocast(device))

    block = config.block_size
    log(f"{raw_model.num_params():,} parameters ({config.n_layer} layers, {config.n_head} heads, width "
        f"{config.n_embd}, context {block}, vocabulary {config.vocab_size}); {len(train_data):,} training and "
        f"{len(val_data):,} validation tokens ({len(train_text) / len(train_data):.3f} characters per token); "
        f"{world} process(es), batch {args.batch_size} = {shards} shard(s) of {shard_size}; device {device}")

    history = {"step": [], "train_loss": [], "grad_norm": [], "lr": [], "val_step": [], "val_loss": [],
               "val_nats_per_char": []}

    def evaluate(step):
        if not main_process:
            return
        val = estimate_loss(raw_model, val_data, block, batch_size=max(shard_size, 8), max_batches=args.eval_batches)
        history["val_step"].append(step)
        history["val_loss"].append(val)
        history["val_nats_per_char"].append(val / val_chars_per_token)
        bar.write(f"step {step:6d}  train {history['train_loss'][-1] if history['train_loss'] else float('nan'):.4f}"
                  f"  val {val:.4f} nats/token = {val / val_chars_per_token:.4f} nats/char (floor "
                  f"{entropy_floor():.4f})", file=sys.stdout)

    from tqdm import tqdm

    end_step = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    bar = tqdm(range(start_step, end_step), initial=start_step, total=args.steps, desc="training",
               disable=args.quiet or not main_process, file=sys.stdout, mininterval=2, dynamic_ncols=True)
    start = time.perf_counter()
    tokens = 0
    for step in bar:
        if args.eval_interval and step % args.eval_interval == 0 and step > start_step:
            evaluate(step)
        parts = [get_batch(train_data, block, shard_size, generator=batch_generator(args.seed, step, k),
                           device=device) for k in range(rank, shards, world)]
        x = torch.cat([xb for xb, _ in parts])
        y = torch.cat([yb for _, yb in parts])
        lr = lr_at(step, args.lr, args.warmup, args.steps, min_lr)
        loss, norm = train_step(model, optimizer, x, y, lr, args.grad_clip)
        if world > 1:  # the loss of the whole batch: the mean of the processes' (equal-sized) parts
            mean = torch.tensor([loss], device=device)
            torch.distributed.all_reduce(mean)
            loss = mean.item() / world
        tokens += args.batch_size * block
        history["step"].append(step)
        history["train_loss"].append(loss)
        history["grad_norm"].append(norm)
        history["lr"].append(lr)
        if main_process and not args.quiet:
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
    elapsed = time.perf_counter() - start
    bar.close()
    evaluate(end_step)
    summary = {
        "steps": end_step, "seconds": round(elapsed, 2), "tokens_per_second": tokens / elapsed if elapsed else None,
        "parameters": raw_model.num_params(), "config": {k: getattr(config, k) for k in MODEL_FIELDS},
        "chars_per_token": len(train_text) / len(train_data), "val_chars_per_token": val_chars_per_token,
        "val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "val_nats_per_char": history["val_nats_per_char"][-1] if history["val_nats_per_char"] else None,
        "entropy_floor": entropy_floor(), "world_size": world, "fast": args.fast, "compile": args.compile,
        "dtype": args.dtype,
    }
    if main_process:
        log(f"{end_step - start_step} steps in {elapsed:.1f} s, {summary['tokens_per_second'] or 0:,.0f} tokens/s")
        if args.out:
            out = Path(args.out)
            if args.no_training_state:
                raw_model.save_pretrained(out)
                stale = out / "training_state.pt"
                if stale.exists():
                    stale.unlink()
            else:
                save_checkpoint(out, raw_model, optimizer, end_step, state_generator)
            tokenizer.save(out)
            command = "python -m llmcourse.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
            (out / "train_log.json").write_text(json.dumps(
                {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                 "summary": summary, "history": history}, indent=1, default=str) + "\n")
            log(f"wrote {out}")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
