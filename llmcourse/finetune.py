"""Fine-tune the course-tiny checkpoint on one of chapter 6's tasks, longer than a notebook can, and log the scores.

    LLMCOURSE_SOURCE=solutions python -m llmcourse.finetune --task qa --steps 3000 --out runs/qa
    LLMCOURSE_SOURCE=solutions python -m llmcourse.finetune --task qa --steps 3000 --scratch --out runs/qa-scratch

Chapter 6b fine-tunes for as many steps as its 90-second budget allows and shows where the curves start; this
command runs the same code (the chapter's ``sft_batch`` and ``finetune``, or its ``SequenceClassifier`` for
sentiment, the metrics of chapter 6a, ``generate`` of chapter 5c) for longer, and writes ``log.json`` (the
settings, every step's loss, and the held-out scores every ``--eval-every`` steps) and the fine-tuned model
(``model.safetensors`` + ``config.json``, GPT-2's format; for sentiment, the classifier's weights). Progress is
printed as it goes. The runs whose results ship with the course are in ``llmcourse/checkpoints/finetuned/``; its
README gives their commands. ``--scratch`` starts from random weights of the same shape instead of the checkpoint
(the comparison that shows what pretraining buys).

The evaluation helpers (:func:`greedy_answers`, :func:`task_scores`, :func:`classify`) are the ones the chapter
uses, so a score in the book and a score in a log are computed the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llmcourse.data import TASKS, task_examples

CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "course-tiny"
#: The scores of each task, in the order the chapter prints them (0..1, BLEU 0..100).
METRICS = {"translation": ("exact_match", "bleu"), "qa": ("exact_match", "f1"), "summarization": ("rouge_l",),
           "sentiment": ("accuracy",)}


def load_checkpoint(scratch: bool = False, seed: int = 0):
    """(model, tokenizer): course-tiny (chapter 5a's GPT, chapter 3's tokenizer), or random weights of its shape."""
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.tokens_and_positions import BPETokenizer

    model, tokenizer = GPT.from_pretrained(CHECKPOINT), BPETokenizer.load(CHECKPOINT)
    if scratch:
        torch.manual_seed(seed)
        model = GPT(model.config)
    return model, tokenizer


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
    """The model's greedy completion of each prompt, up to its end-of-text token (chapter 5c's ``generate``),
    without the leading space. Prompts of the same length in tokens form one batch, so no prompt is padded and
    each has all the room its length leaves in the context."""
    from llmcourse.chapters.generation import generate

    eot, block = tokenizer.eot_id, model.config.block_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = [tokenizer.encode(p) for p in prompts]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    answers = [""] * len(prompts)
    for length, rows in sorted(by_length.items()):
        ids = torch.tensor([encoded[i] for i in rows], device=device)
        out = generate(model, ids, max_new_tokens=max(1, min(max_new_tokens, block - length)), eos_token_id=eot,
                       pad_token_id=eot)
        for i, row in zip(rows, out[:, length:].tolist()):
            answers[i] = tokenizer.decode(row[:row.index(eot)] if eot in row else row).strip()
    model.train(was_training)
    return answers


def task_scores(task: str, answers: list[str], examples) -> dict[str, float]:
    """The task's scores (chapter 6a's metrics) of ``answers`` against the examples' targets."""
    from llmcourse.chapters.metrics import corpus_bleu, exact_match, rouge_l, token_f1

    targets = [e.target for e in examples]
    n = len(targets)
    scores = {}
    if task in ("translation", "qa"):
        scores["exact_match"] = sum(map(exact_match, answers, targets)) / n
    if task == "translation":
        scores["bleu"] = corpus_bleu(answers, targets)
    if task == "qa":
        scores["f1"] = sum(map(token_f1, answers, targets)) / n
    if task == "summarization":
        scores["rouge_l"] = sum(map(rouge_l, answers, targets)) / n
    if task == "sentiment":
        scores["accuracy"] = sum(a == t for a, t in zip(answers, targets)) / n
    return scores


def classification_tensors(tokenizer, examples) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (N, T) right-padded with the end-of-text id, labels (N,)) of sentiment examples."""
    eot = tokenizer.eot_id
    rows = [tokenizer.encode(e.source) for e in examples]
    width = max(map(len, rows))
    return torch.tensor([r + [eot] * (width - len(r)) for r in rows]), torch.tensor([e.label for e in examples])


@torch.no_grad()
def classify(classifier, input_ids: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """The predicted label of each row (argmax of the classifier's logits)."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    out = torch.cat([classifier(input_ids[i:i + batch_size].to(device)).argmax(-1).cpu()
                     for i in range(0, len(input_ids), batch_size)])
    classifier.train(was_training)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llmcourse.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--scratch", action="store_true", help="random weights of course-tiny's shape, not the checkpoint")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-examples", type=int, default=5000)
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a small model: 1 is as fast)")
    p.add_argument("--out", required=True, help="folder for log.json and the fine-tuned model")
    p.add_argument("--no-save", action="store_true", help="write the log only")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.eval_every < 1 or args.train_examples < 1 \
            or args.eval_examples < 1:
        raise SystemExit("--steps, --batch-size, --eval-every, --train-examples and --eval-examples must be >= 1")
    from llmcourse.chapters.applications import SequenceClassifier, finetune, sft_batch
    from llmcourse.chapters.training import configure_optimizer

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_checkpoint(args.scratch, args.seed)
    train = task_examples(args.task, args.train_examples, seed=args.seed, split="train")
    test = task_examples(args.task, args.eval_examples, seed=args.seed, split="test")
    log = {"settings": vars(args), "losses": [], "evals": []}
    started = time.monotonic()

    def record(step: int, scores: dict) -> None:
        log["evals"].append({"step": step, **{k: round(v, 5) for k, v in scores.items()}})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
        print(f"{args.task}{' (scratch)' if args.scratch else ''} step {step}/{args.steps} "
              f"({time.monotonic() - started:.0f} s): {shown}", flush=True)

    generator = torch.Generator().manual_seed(args.seed)
    if args.task == "sentiment":
        model = SequenceClassifier(model, 2, tokenizer.eot_id)
        x, y = classification_tensors(tokenizer, train)
        x_test, y_test = classification_tensors(tokenizer, test)
        optimizer = configure_optimizer(model, 0.0, args.lr)
        model.train()
        record(0, {"accuracy": float((classify(model, x_test) == y_test).float().mean())})
        for step in range(1, args.steps + 1):
            rows = torch.randint(len(x), (args.batch_size,), generator=generator)
            loss = F.cross_entropy(model(x[rows]), y[rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log["losses"].append(round(float(loss.detach()), 5))
            if step % args.eval_every == 0 or step == args.steps:
                record(step, {"accuracy": float((classify(model, x_test) == y_test).float().mean())})
    else:
        eot = tokenizer.eot_id
        ids, labels, _ = sft_batch([tokenizer.encode(e.prompt) for e in train],
                                   [tokenizer.encode(e.completion) for e in train], eot, eot,
                                   model.config.block_size)
        prompts = [e.prompt for e in test]
        record(0, task_scores(args.task, greedy_answers(model, tokenizer, prompts), test))

        def evaluate(step, model):
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                record(step + 1, task_scores(args.task, greedy_answers(model, tokenizer, prompts), test))

        log["losses"] = [round(float(v), 5) for v in finetune(
            model, ids, labels, steps=args.steps, batch_size=args.batch_size, lr=args.lr, generator=generator,
            callback=evaluate)]
    log["seconds"] = round(time.monotonic() - started, 1)
    (out / "log.json").write_text(json.dumps(log, indent=1) + "\n")
    if not args.no_save:
        if args.task == "sentiment":
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                     if k.startswith("score.") or k.startswith("transformer.")}
            save_file(state, str(out / "classifier.safetensors"))
        else:
            model.save_pretrained(out)
    return log


if __name__ == "__main__":
    main(sys.argv[1:])
