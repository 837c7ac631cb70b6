"""Generation throughput: chapter 5c's generate (with and without its KV cache) against Hugging Face's generate.

    python benchmarks/generate_throughput.py [--new-tokens 200] [--repeats 3] [--threads 1] [--checkpoint DIR]

New tokens per second, greedy, 200 new tokens from a 16-token prompt, at batch 1 and batch 8, for
1. ours with the cache (``generate(model, ..., use_cache=True)``),
2. ours without it (every step rereads the whole sequence),
3. ``transformers.GPT2LMHeadModel.generate`` on the same weights (saved with ``save_pretrained`` and loaded by HF).
The runs alternate, best of ``--repeats``, in one process; the script checks that the three return the same tokens
and prints the ratios, which do not depend on how fast the machine is. Target: ours with the cache >= 2x HF at
batch 1 on a CPU. The model is the course-small shape (the shipped checkpoint's) with a context of 256 positions,
so that 16 + 200 tokens fit, and random weights; ``--checkpoint DIR`` uses a checkpoint's weights instead (its
block_size must hold prompt + new tokens).

The GPT is the course's own (chapters 4b-5a, from ``solutions/``). Its LayerNorm and GELU are written out op by op,
as the chapters teach them; ``LLMCOURSE_FALLBACK=multi_head_attention,feed_forward,residual_and_layernorm`` runs
the same ``generate`` on a GPT made of PyTorch's fused layers (``F.layer_norm``, ``F.gelu``), which isolates the
cost of generation itself from the cost of the model's layers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LLMCOURSE_SOURCE", "solutions")


def build(checkpoint: str | None, block_size: int):
    from llmcourse.chapters.gpt import GPT, preset

    if checkpoint:
        return GPT.from_pretrained(checkpoint).eval()
    torch.manual_seed(0)
    return GPT(preset("course-small", vocab_size=512, block_size=block_size)).eval()


def hf_twin(model):
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    hf.generation_config.eos_token_id = None
    return hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 0 keeps torch's default. One thread is fastest for one token at a "
                        "time, and stays fast on a busy machine (the grader also runs with one)")
    parser.add_argument("--checkpoint", default=None, help="a GPT-2 checkpoint folder (default: random weights)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from llmcourse.chapters.generation import generate

    model = build(args.checkpoint, args.prompt_tokens + args.new_tokens).use_torch_sdpa(True)
    hf = hf_twin(model)
    print(f"model: {model.num_params():,} parameters, {model.config}; torch threads: {torch.get_num_threads()}")

    def ours_cache(ids):
        return generate(model, ids, max_new_tokens=args.new_tokens)

    def ours_no_cache(ids):
        return generate(model, ids, max_new_tokens=args.new_tokens, use_cache=False)

    def hf_generate(ids):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return hf.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0,
                               attention_mask=torch.ones_like(ids))

    runs = {"ours, KV cache": ours_cache, "ours, no cache": ours_no_cache, "HF generate": hf_generate}
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 8):
        ids = torch.randint(0, model.config.vocab_size, (batch, args.prompt_tokens), generator=gen)
        outputs = {name: fn(ids) for name, fn in runs.items()}  # warm-up, and the tokens to compare
        same = all(torch.equal(out, outputs["HF generate"]) for out in outputs.values())
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():  # interleaved, so a slow moment of the machine hits all three
                start = time.perf_counter()
                fn(ids)
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"\nbatch {batch}: {args.new_tokens} new tokens from {args.prompt_tokens}, greedy "
              f"(same tokens in all three: {same}); best of {args.repeats}")
        for name, seconds in best.items():
            print(f"  {name:16s} {batch * args.new_tokens / seconds:9.0f} new tokens/s  ({seconds:.3f} s)")
        hf_s = best["HF generate"]
        print(f"  ours with cache / HF generate:     {hf_s / best['ours, KV cache']:.2f}x")
        print(f"  ours with cache / ours without:    {best['ours, no cache'] / best['ours, KV cache']:.2f}x")
        print(f"  ours without cache / HF generate:  {hf_s / best['ours, no cache']:.2f}x")


if __name__ == "__main__":
    main()
