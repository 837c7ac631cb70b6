"""Chapter 4e's sweep: GPT-2's block, each of today's four changes alone, and all of them together.

    python -m llmcourse.modern                  # the whole sweep (resumes: finished runs are skipped)
    python -m llmcourse.modern --runs           # list the runs and which are done
    python -m llmcourse.modern --only rope      # re-run one run and print it (the file is updated)
    python -m llmcourse.modern --help

Chapters 5a and 5b come after this one, so their code is the course's own (their fallbacks:
``llmcourse.fallbacks.gpt``, ``llmcourse.fallbacks.training``); the new pieces are chapter 4e's exports
(``llmcourse.chapters.modern_block``). Every run has one training budget and chapter 8a's setting
(``llmcourse.scaling``): the shipped course-tiny tokenizer, 64-token windows, batches of 32, AdamW with a warm-up
and a cosine decay, the same batches (seed 0), the course-tiny shape (2 layers, 4 heads, width 64, tied input and
output matrices). The runs:

* ``gpt2``: chapter 5a's ``GPT``, unchanged (chapter 8a's ``n-3``, with the fallbacks' code);
* ``rmsnorm``: its three LayerNorms replaced by chapter 4e's ``RMSNorm``;
* ``rope``: no learned position table; attention is chapter 4e's ``GQAttention`` with ``n_kv_head = n_head``
  (multi-head attention with RoPE; its projections have no biases);
* ``swiglu``: its MLPs replaced by ``SwiGLU`` with 170 hidden units (3 * 64 * 170 = 32,640 weights, against the
  MLP's 33,088 with biases: matched within 2%);
* ``gqa``: attention with 2 key/value heads for 4 query heads, learned positions kept (no RoPE);
* ``modern``: chapter 4e's ``ModernGPT`` (all four changes, ``n_kv_head = 2``);
* ``gpt2-seed1``, ``gpt2-seed2``: ``gpt2`` with other seeds (weights and batch order): the seed-to-seed spread;
* ``modern-check``: ``modern`` for 24 steps on the first 300,000 characters of the training text only, which the
  notebook re-runs live.

After training, ``gpt2``, ``rope`` and ``modern`` are also evaluated on 256-token windows of the validation text
(4x the trained context): the loss at each position, with the whole window as context where the model can take it
(RoPE has no table to run out of) and with a sliding 64-token window (the learned table has 64 rows). The results
go to one JSON file (``--out``), written again (atomically) after each run, so an interrupted sweep goes on where
it stopped; a file made with other settings is refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse import scaling

DEFAULT_OUT = Path(__file__).parent / "checkpoints" / "modern" / "results.json"
FORMAT = "llmcourse-modern-1"

SETTINGS: dict = {
    "block_size": 64, "batch_size": 32, "lr": 3e-3, "min_lr_ratio": 0.1, "warmup_fraction": 0.1,
    "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0, "data_seed": 0, "data_chars": 4_000_000,
    "val_chars": 100_000, "steps": 512, "n_layer": 2, "n_head": 4, "n_embd": 64, "tokenizer": "course-tiny",
    "long_context": 256, "long_windows": 24,
}

# name: (what, seed, steps as a share of SETTINGS["steps"] (None: a fixed number), evaluated on long windows)
RUNS: dict[str, tuple[str, int, float | int, bool]] = {
    "gpt2": ("gpt2", 0, 1.0, True),
    "rmsnorm": ("rmsnorm", 0, 1.0, False),
    "rope": ("rope", 0, 1.0, True),
    "swiglu": ("swiglu", 0, 1.0, False),
    "gqa": ("gqa", 0, 1.0, False),
    "modern": ("modern", 0, 1.0, True),
    "gpt2-seed1": ("gpt2", 1, 1.0, False),
    "gpt2-seed2": ("gpt2", 2, 1.0, False),
    "modern-check": ("modern", 0, 24, False),
}
CHECK_DATA_CHARS = 300_000  # modern-check trains on a shorter text, so the notebook's live re-run starts in seconds
SWIGLU_HIDDEN = 170  # int(2 * 4 * 64 / 3): Meta's rule without rounding, about the MLP's parameter count
N_KV_HEAD = 2


def run_names() -> list[str]:
    return list(RUNS)


def run_spec(name: str, settings: dict | None = None) -> dict:
    """The configuration of run ``name``: its kind, seed, steps, tokens and learning-rate schedule."""
    if not isinstance(name, str) or name not in RUNS:
        raise ValueError(f"no run called {name!r}; the runs are {', '.join(RUNS)}")
    s = SETTINGS | (settings or {})
    kind, seed, share, long = RUNS[name]
    steps = share if isinstance(share, int) else max(1, round(s["steps"] * share))
    return {"name": name, "kind": kind, "seed": seed, "steps": steps, "block_size": s["block_size"],
            "batch_size": s["batch_size"], "tokens": steps * s["batch_size"] * s["block_size"],
            "warmup": max(1, round(steps * s["warmup_fraction"])), "lr": s["lr"], "min_lr": s["lr"] * s["min_lr_ratio"],
            "long_context": long}


class _GQANoRope(nn.Module):
    """Grouped-query attention without RoPE (for the ``gqa`` run, which keeps GPT-2's learned positions)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.inner = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from llmcourse.chapters.modern_block import repeat_kv

        a = self.inner
        B, T, C = x.shape
        q = a.q_proj(x).view(B, T, a.n_head, a.head_dim).transpose(1, 2)
        k = a.k_proj(x).view(B, T, a.n_kv_head, a.head_dim).transpose(1, 2)
        v = a.v_proj(x).view(B, T, a.n_kv_head, a.head_dim).transpose(1, 2)
        k, v = repeat_kv(k, a.n_head // a.n_kv_head), repeat_kv(v, a.n_head // a.n_kv_head)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return a.o_proj(y.transpose(1, 2).reshape(B, T, C))


def build_model(kind: str, vocab_size: int, settings: dict | None = None) -> nn.Module:
    """The model of a run kind, freshly initialised from the global RNG (seed it first)."""
    from llmcourse.chapters.modern_block import GQAttention, ModernConfig, ModernGPT, RMSNorm, SwiGLU
    from llmcourse.fallbacks.gpt import GPT, init_gpt2_weights, preset

    s = SETTINGS | (settings or {})
    L, H, C = s["n_layer"], s["n_head"], s["n_embd"]
    long = s["long_context"]
    if kind == "modern":
        return ModernGPT(ModernConfig(vocab_size=vocab_size, block_size=long, n_layer=L, n_head=H,
                                      n_kv_head=N_KV_HEAD, n_embd=C, intermediate_size=SWIGLU_HIDDEN, eps=1e-5,
                                      tie_word_embeddings=True))
    if kind not in ("gpt2", "rmsnorm", "rope", "swiglu", "gqa"):
        raise ValueError(f"unknown run kind {kind!r}")
    block = long if kind == "rope" else s["block_size"]
    model = GPT(preset("course-tiny", n_layer=L, n_head=H, n_embd=C, block_size=block, vocab_size=vocab_size,
                       dropout=0.0))
    model.use_torch_sdpa()
    if kind == "gpt2":
        return model
    t = model.transformer
    modern = ModernConfig(vocab_size=vocab_size, block_size=block, n_layer=L, n_head=H,
                          n_kv_head=N_KV_HEAD if kind == "gqa" else H, n_embd=C, intermediate_size=SWIGLU_HIDDEN)
    for b in t["h"]:
        if kind == "rmsnorm":
            b.ln_1, b.ln_2 = RMSNorm(C, eps=1e-5), RMSNorm(C, eps=1e-5)
        elif kind == "swiglu":
            b.mlp = SwiGLU(modern)
        elif kind == "gqa":
            b.attn = _GQANoRope(GQAttention(modern))
        else:  # rope
            b.attn = GQAttention(modern)
    if kind == "rmsnorm":
        t["ln_f"] = RMSNorm(C, eps=1e-5)
    if kind == "rope":  # no learned positions: the table stays zero and is not trained
        t["wpe"].weight.requires_grad_(False)
        t["wpe"].weight.zero_()
    init_gpt2_weights(model, L)  # the replaced pieces get GPT-2's initialisation too, scaled where they write
    with torch.no_grad():         # into the residual stream (GPT-2 scales c_proj; here also o_proj, down_proj)
        for pname, p in model.named_parameters():
            if pname.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, 0.02 / (2 * L) ** 0.5)
    if kind == "rope":
        with torch.no_grad():
            t["wpe"].weight.zero_()
    return model


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, those outside the token embedding), a tied matrix counted once."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    wte = model.transformer["wte"].weight
    return sum(p.numel() for p in trainable), sum(p.numel() for p in trainable if p is not wte and (
        "wpe" not in model.transformer or p is not model.transformer["wpe"].weight))


@torch.no_grad()
def position_losses(model: nn.Module, val: torch.Tensor, T: int, windows: int, context: int | None) -> list[float]:
    """Mean loss (nats/token) at each position 0 .. T-1 of ``windows`` consecutive T-token windows of ``val``;
    ``context``: each prediction sees at most that many tokens (a sliding window), None: the whole window."""
    model.eval()
    device = next(model.parameters()).device
    x = val[: windows * T].view(windows, T).to(device)
    y = val[1: windows * T + 1].view(windows, T).to(device)
    if context is None or context >= T:
        logits = model(x)[0]
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0).tolist()
    logits = model(x[:, :context])[0]
    out = F.cross_entropy(logits.transpose(1, 2), y[:, :context], reduction="none").mean(0).tolist()
    for p in range(context, T):
        logits = model(x[:, p - context + 1: p + 1])[0][:, -1]
        out.append(float(F.cross_entropy(logits, y[:, p])))
    return out


def train_run(name: str, settings: dict | None = None, device: str | torch.device | None = None,
              progress: bool = False) -> dict:
    """Train run ``name`` from scratch and return its result (what the JSON file holds for it)."""
    from tqdm import tqdm

    from llmcourse.data import entropy_floor
    from llmcourse.device import get_device
    from llmcourse.fallbacks.training import configure_optimizer, estimate_loss, get_batch, lr_at, train_step

    spec = run_spec(name, settings)
    s = SETTINGS | (settings or {})
    device = get_device(device)
    data_chars = min(CHECK_DATA_CHARS, s["data_chars"]) if name == "modern-check" else s["data_chars"]
    data = scaling.load_data({"data_chars": data_chars, "val_chars": s["val_chars"], "data_seed": s["data_seed"]})
    torch.manual_seed(spec["seed"])
    model = build_model(spec["kind"], data["vocab_size"], s).to(device)
    optimizer = configure_optimizer(model, s["weight_decay"], spec["lr"], betas=tuple(s["betas"]))
    block, steps = spec["block_size"], spec["steps"]
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=name, disable=not progress, file=sys.stdout, mininterval=2, leave=False,
               dynamic_ncols=True)
    loss = float("nan")
    for step in bar:
        x, y = get_batch(data["train"], block, spec["batch_size"],
                         generator=scaling.batch_generator(spec["seed"], step), device=device)
        loss, _ = train_step(model, optimizer, x, y, lr_at(step, spec["lr"], spec["warmup"], steps, spec["min_lr"]),
                             s["grad_clip"])
    bar.close()
    train_seconds = time.perf_counter() - start
    val = estimate_loss(model, data["val"], block, batch_size=64)
    params, non_embedding = count_params(model)
    result = {
        "name": name, "kind": spec["kind"], "seed": spec["seed"], "steps": steps, "tokens": spec["tokens"],
        "train_chars": data_chars,
        "params": params, "non_embedding_params": non_embedding, "final_train_loss": loss, "val_loss": val,
        "val_nats_per_char": val / data["val_chars_per_token"], "val_chars_per_token": data["val_chars_per_token"],
        "entropy_floor": entropy_floor(), "seconds": round(train_seconds, 2),
        "tokens_per_second": round(spec["tokens"] / train_seconds, 1), "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if spec["long_context"]:
        T, n = s["long_context"], s["long_windows"]
        curves = {"sliding": position_losses(model, data["val"], T, n, block)}
        if spec["kind"] != "gpt2":  # the learned table has no rows past block_size
            curves["full"] = position_losses(model, data["val"], T, n, None)
        result["position_loss"] = {k: [round(v, 5) for v in c] for k, c in curves.items()}
    return result


def read_results(path: str | Path, settings: dict | None = None) -> dict:
    """The results file at ``path`` (an empty one if there is none); refuses a file made with other settings."""
    return scaling.read_results(path, settings, fmt=FORMAT, defaults=SETTINGS)


def write_results(path: str | Path, results: dict) -> None:
    """Write ``results`` to ``path`` atomically, its runs in the sweep's order (as chapter 8a's sweep does)."""
    scaling.write_results(path, results, order=RUNS)


def build_parser() -> argparse.ArgumentParser:
    return scaling.sweep_parser(
        "python -m llmcourse.modern",
        "Chapter 4e's sweep: GPT-2's block, each modern change alone (RMSNorm, RoPE, SwiGLU, GQA) and all "
        "together, trained with one budget on the course corpus; losses to a JSON file. Finished runs are skipped, "
        "so an interrupted sweep resumes.", DEFAULT_OUT, SETTINGS, ("steps", "training steps per run"))


def describe(result: dict) -> str:
    return (f"{result['name']:12s} params={result['params']:>7,} steps={result['steps']:4d}  val "
            f"{result['val_loss']:.4f} nats/token = {result['val_nats_per_char']:.4f} nats/char "
            f"(floor {result['entropy_floor']:.4f})  {result['tokens_per_second']:,.0f} tokens/s")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.only is not None and args.only not in RUNS:
        raise SystemExit(f"--only: no run called {args.only!r}; the runs are {', '.join(RUNS)}")
    settings = {"steps": args.steps, "data_chars": args.data_chars, "val_chars": args.val_chars}
    needed = (SETTINGS["long_context"] * SETTINGS["long_windows"] + 1) * 5  # characters, about 4 per token
    if args.val_chars < needed:
        raise SystemExit(f"--val-chars={args.val_chars}: the long-context evaluation needs at least {needed}")

    def listing(name: str, done: dict | None) -> str:
        spec = run_spec(name, settings)
        return (f"{name:12s} kind={spec['kind']:8s} seed={spec['seed']} steps={spec['steps']:4d}  "
                + (f"done: {done['val_nats_per_char']:.4f} nats/char" if done else "to do"))

    return scaling.run_sweep(args, settings, RUNS, read_results, write_results, train_run, describe, listing,
                             shown=lambda result: {k: v for k, v in result.items() if k != "position_loss"})


if __name__ == "__main__":
    main()
