"""Chapter 8a's scaling sweep: GPTs of several sizes, and one GPT on several amounts of data, on the course corpus.

    python -m llmcourse.scaling                  # the whole sweep (resumes: finished runs are skipped)
    python -m llmcourse.scaling --runs           # list the runs and which are done
    python -m llmcourse.scaling --only d-1/4     # re-run one run and print it (the file is updated)
    python -m llmcourse.scaling --help

Two sweeps share one setting (the shipped course-tiny tokenizer, 64-token windows, batches of 32 windows, AdamW
with a warm-up and a cosine decay, seed 0):

* ``model``: five widths and depths from about 1e4 to 1e6 non-embedding parameters, each trained on the same
  token budget (``--budget``, 2**20 tokens by default);
* ``data``: the ``course-tiny`` shape (2 layers, width 64) trained on 1/16, 1/8, 1/4, 3/8, 1/2, 3/4 and all of
  the budget (the last is the model sweep's run of that shape, which the data sweep shares).

Every run is trained with the course's own pieces, as ``llmcourse.train`` does: ``GPT`` and ``preset`` from
chapter 5a, ``configure_optimizer``, ``lr_at``, ``get_batch``, ``train_step`` and ``estimate_loss`` from
chapter 5b, the tokenizer of chapter 3. The results go to one JSON file (``--out``), written again (atomically)
after each run, so an interrupted sweep goes on where it stopped. A file made with other settings is refused.
Chapter 8a's notebook loads the shipped file and re-runs its smallest runs through :func:`train_run`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).parent / "checkpoints" / "scaling" / "results.json"
TOKENIZER_DIR = Path(__file__).parent / "checkpoints" / "course-tiny"
FORMAT = "llmcourse-scaling-1"

SETTINGS: dict = {
    "block_size": 64, "batch_size": 32, "lr": 3e-3, "min_lr_ratio": 0.1, "warmup_fraction": 0.1,
    "weight_decay": 0.1, "betas": [0.9, 0.95], "grad_clip": 1.0, "seed": 0, "data_seed": 0,
    "data_chars": 4_000_000, "val_chars": 100_000, "budget": 2**20, "tokenizer": "course-tiny",
}

# name: (sweeps it belongs to, n_layer, n_head, n_embd, share of the budget)
RUNS: dict[str, tuple[tuple[str, ...], int, int, int, float]] = {
    "n-1": (("model",), 1, 4, 32, 1.0),
    "n-2": (("model",), 2, 4, 40, 1.0),
    "n-3": (("model", "data"), 2, 4, 64, 1.0),
    "n-4": (("model",), 3, 4, 96, 1.0),
    "n-5": (("model",), 4, 4, 128, 1.0),
    "d-1/16": (("data",), 2, 4, 64, 1 / 16),
    "d-1/8": (("data",), 2, 4, 64, 1 / 8),
    "d-1/4": (("data",), 2, 4, 64, 1 / 4),
    "d-3/8": (("data",), 2, 4, 64, 3 / 8),
    "d-1/2": (("data",), 2, 4, 64, 1 / 2),
    "d-3/4": (("data",), 2, 4, 64, 3 / 4),
}


def run_names() -> list[str]:
    return list(RUNS)


def run_spec(name: str, settings: dict | None = None) -> dict:
    """The configuration of run ``name``: its model shape, steps, tokens, learning-rate schedule."""
    if not isinstance(name, str) or name not in RUNS:
        raise ValueError(f"no run called {name!r}; the runs are {', '.join(RUNS)}")
    s = SETTINGS | (settings or {})
    sweeps, n_layer, n_head, n_embd, share = RUNS[name]
    tokens_per_step = s["batch_size"] * s["block_size"]
    steps = max(1, round(s["budget"] * share / tokens_per_step))
    return {"name": name, "sweeps": list(sweeps), "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
            "block_size": s["block_size"], "batch_size": s["batch_size"], "steps": steps,
            "tokens": steps * tokens_per_step, "warmup": max(1, round(steps * s["warmup_fraction"])),
            "lr": s["lr"], "min_lr": s["lr"] * s["min_lr_ratio"], "seed": s["seed"]}


@functools.lru_cache(maxsize=4)
def _data(data_chars: int, val_chars: int, data_seed: int):
    from llmcourse.chapters.tokens_and_positions import BPETokenizer
    from llmcourse.data import train_val_text

    train_text, val_text = train_val_text(data_chars, val_chars, seed=data_seed)
    tokenizer = BPETokenizer.load(TOKENIZER_DIR)
    train = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    return train, val, len(val_text) / len(val), tokenizer.vocab_size


def load_data(settings: dict | None = None) -> dict:
    """The sweep's tokens: ``train`` and ``val`` (1-D long tensors), ``val_chars_per_token``, ``vocab_size``."""
    s = SETTINGS | (settings or {})
    train, val, chars_per_token, vocab = _data(int(s["data_chars"]), int(s["val_chars"]), int(s["data_seed"]))
    return {"train": train, "val": val, "val_chars_per_token": chars_per_token, "vocab_size": vocab}


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s batch (``llmcourse.train``'s, shard 0)."""
    from llmcourse.train import batch_generator as trainer_generator

    return trainer_generator(seed, step, 0)


def train_run(name: str, settings: dict | None = None, device: str | torch.device | None = None,
              progress: bool = False) -> dict:
    """Train run ``name`` from scratch and return its result (what the JSON file holds for it)."""
    from tqdm import tqdm

    from llmcourse.chapters.gpt import GPT, preset
    from llmcourse.chapters.training import configure_optimizer, estimate_loss, get_batch, lr_at, train_step
    from llmcourse.data import entropy_floor
    from llmcourse.device import get_device

    spec = run_spec(name, settings)
    s = SETTINGS | (settings or {})
    device = get_device(device)
    data = load_data(s)
    torch.manual_seed(spec["seed"])
    model = GPT(preset("course-tiny", n_layer=spec["n_layer"], n_head=spec["n_head"], n_embd=spec["n_embd"],
                       block_size=spec["block_size"], vocab_size=data["vocab_size"], dropout=0.0))
    model.use_torch_sdpa()
    model.to(device)
    optimizer = configure_optimizer(model, s["weight_decay"], spec["lr"], betas=tuple(s["betas"]))
    block, steps = spec["block_size"], spec["steps"]
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=name, disable=not progress, file=sys.stdout, mininterval=2, leave=False,
               dynamic_ncols=True)
    loss = float("nan")
    for step in bar:
        x, y = get_batch(data["train"], block, spec["batch_size"], generator=batch_generator(spec["seed"], step),
                         device=device)
        lr = lr_at(step, spec["lr"], spec["warmup"], steps, spec["min_lr"])
        loss, _ = train_step(model, optimizer, x, y, lr, s["grad_clip"])
        if progress:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.close()
    val = estimate_loss(model, data["val"], block, batch_size=64)
    seconds = time.perf_counter() - start
    n = model.num_params(non_embedding=True)
    c, L, T, D = spec["n_embd"], spec["n_layer"], block, spec["tokens"]
    return {
        "name": name, "sweeps": spec["sweeps"],
        "config": {k: spec[k] for k in ("n_layer", "n_head", "n_embd", "block_size")} | {
            "vocab_size": data["vocab_size"]},
        "steps": steps, "batch_size": spec["batch_size"], "lr": spec["lr"], "min_lr": spec["min_lr"],
        "warmup": spec["warmup"], "seed": spec["seed"],
        "non_embedding_params": n, "params": model.num_params(), "tokens": D,
        "flops_6nd": 6 * n * D, "flops_with_attention": (6 * n + 12 * L * T * c) * D,
        "final_train_loss": loss, "val_loss": val, "val_nats_per_char": val / data["val_chars_per_token"],
        "val_chars_per_token": data["val_chars_per_token"], "entropy_floor": entropy_floor(),
        "seconds": round(seconds, 2), "device": str(device), "threads": torch.get_num_threads(),
    }


def read_results(path: str | Path, settings: dict | None = None, *, fmt: str = FORMAT,
                 defaults: dict | None = None) -> dict:
    """The results file at ``path`` (an empty one if there is none); refuses a file made with other settings.
    ``fmt`` and ``defaults`` (the sweep's format name and default settings) let another sweep (chapter 4e's
    :mod:`llmcourse.modern`) keep its results the same way."""
    from llmcourse.data import entropy_floor

    s = (SETTINGS if defaults is None else defaults) | (settings or {})
    path = Path(path)
    fresh = {"format": fmt, "settings": s, "entropy_floor": entropy_floor(), "runs": {}}
    if not path.exists():
        return fresh
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a results file of this sweep ({err}); pass another --out") from None
    if not isinstance(results, dict) or results.get("format") != fmt or not isinstance(results.get("runs"), dict):
        raise ValueError(f"{path} is not a results file of this sweep (format {fmt!r}); pass another --out")
    if results.get("settings") != json.loads(json.dumps(s)):
        raise ValueError(f"{path} was made with other settings ({results.get('settings')}), not {s}: "
                         f"pass another --out, or the same settings")
    return results


def write_results(path: str | Path, results: dict, *, order: list[str] | None = None) -> None:
    """Write ``results`` to ``path`` atomically (a temporary file in the same folder, then a rename), its runs in
    the sweep's order (``order``, default this sweep's ``RUNS``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = RUNS if order is None else order
    ordered = dict(results) | {"runs": {k: results["runs"][k] for k in order if k in results["runs"]}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(ordered, indent=1) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a results file is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def sweep_parser(prog: str, description: str, out: Path, defaults: dict, amount: tuple[str, str]) -> \
        argparse.ArgumentParser:
    """The command line of a sweep (this one and chapter 4e's): the results file, one run or the list, the amount
    of training per run (``amount``: the option's name in ``defaults`` and its help), the text, the device."""
    name, help_text = amount
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=out, help="the results file (JSON)")
    p.add_argument("--only", metavar="NAME", help="(re-)run this one run, print it and update the file")
    p.add_argument("--runs", action="store_true", help="list the runs and whether the file has them; train nothing")
    p.add_argument(f"--{name.replace('_', '-')}", type=_positive_int, default=defaults[name], help=help_text)
    p.add_argument("--data-chars", type=_positive_int, default=defaults["data_chars"],
                   help="characters of training text")
    p.add_argument("--val-chars", type=_positive_int, default=defaults["val_chars"],
                   help="characters of validation text")
    p.add_argument("--device", help="cpu, cuda, mps (default: llmcourse.device.get_device())")
    p.add_argument("--threads", type=_positive_int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_parser() -> argparse.ArgumentParser:
    return sweep_parser(
        "python -m llmcourse.scaling",
        "Chapter 8a's scaling sweep: train GPTs of several sizes (and one size on several amounts of data) on the "
        "course corpus and write their losses to a JSON file. Finished runs are skipped, so an interrupted sweep "
        "resumes.", DEFAULT_OUT, SETTINGS,
        ("budget", "tokens each model-sweep run sees (the data sweep sees shares of it)"))


def run_sweep(args, settings: dict, runs, read, write, train, describe, listing, shown=lambda result: result) -> dict:
    """A sweep's command (this one and chapter 4e's), after its own checks of ``args``: list the runs
    (``listing(name, spec_done)``), or train those the results file lacks (or ``--only`` one) with ``train(name,
    settings, device=..., progress=...)``, writing the file after each and printing ``describe(result)``; the
    results. ``read(path, settings)`` and ``write(path, results)`` are the sweep's results file."""
    try:
        from llmcourse.device import get_device

        device = get_device(args.device)
        results = read(args.out, settings)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if args.runs:
        for name in runs:
            print(listing(name, results["runs"].get(name)))
        return results
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    todo = [args.only] if args.only else [n for n in runs if n not in results["runs"]]
    skipped = [n for n in runs if n not in todo]
    if skipped and not args.only:
        print(f"{args.out}: {len(skipped)} run(s) already done, skipped: {', '.join(skipped)}", flush=True)
    start = time.perf_counter()
    for name in todo:
        result = train(name, settings, device=device, progress=not args.quiet)
        results["runs"][name] = result
        write(args.out, results)
        print(describe(result), flush=True)
    print(f"{len(todo)} run(s) in {time.perf_counter() - start:.1f} s; results in {args.out}", flush=True)
    if args.only:
        print(json.dumps(shown(results["runs"][args.only]), indent=1))
    return results


def _describe(result: dict) -> str:
    c = result["config"]
    return (f"{result['name']:6s} L={c['n_layer']} C={c['n_embd']:3d} N={result['non_embedding_params']:>9,} "
            f"D={result['tokens']:>9,}  val {result['val_loss']:.4f} nats/token = "
            f"{result['val_nats_per_char']:.4f} nats/char  ({result['seconds']:.1f} s)")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.only is not None and args.only not in RUNS:
        raise SystemExit(f"--only: no run called {args.only!r}; the runs are {', '.join(RUNS)}")
    if args.val_chars < 2000:
        raise SystemExit(f"--val-chars={args.val_chars}: the validation text needs at least 2000 characters")
    settings = {"budget": args.budget, "data_chars": args.data_chars, "val_chars": args.val_chars}

    def listing(name: str, done: dict | None) -> str:
        spec = run_spec(name, settings)
        return (f"{name:6s} sweeps={'+'.join(spec['sweeps']):10s} L={spec['n_layer']} H={spec['n_head']} "
                f"C={spec['n_embd']:3d} steps={spec['steps']:5d} tokens={spec['tokens']:>9,}  "
                + (f"done: {done['val_nats_per_char']:.4f} nats/char" if done else "to do"))

    return run_sweep(args, settings, RUNS, read_results, write_results, train_run, _describe, listing)


if __name__ == "__main__":
    main()
