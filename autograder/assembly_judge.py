"""The grader's own measurement of an assembled model (a trusted process: ``python -m autograder.assembly_judge
OUT``).

The assembly child (:mod:`autograder.assembly_child`) runs the student's code, so what it reports could be made
up. It also writes *data*: the trained weights (``model.safetensors``) and the tokenizer (``vocab.json``,
``merges.txt``). This process, started by the grader with every chapter on its public fallback and nothing of the
student's code, loads that data into the course's reference GPT (course-tiny, GPT-2's parameter names) and
tokenizer, and measures the validation loss itself, on validation text it makes itself. It prints one JSON
object: ``val_loss``, ``vocab_size``, ``sample`` (the student's generated ids decoded by the reference
tokenizer) or ``error``; and, when the child fine-tuned the course-tiny checkpoint (chapter 6b), ``application``:
the fine-tuned weights loaded into the reference GPT, their loss on the answers of held-out examples of the task
(and the checkpoint's loss before fine-tuning, for comparison), and greedy answers made by the reference
``generate``, scored by the reference metrics (token F1 and exact match, SQuAD's rules); and, when the child
trained chapter 4e's ``ModernGPT``, ``modern``: its weights, as the student's ``save_pretrained`` wrote them in
Hugging Face's Llama format, loaded strictly into a ``LlamaForCausalLM`` the grader configures itself (the shape it
asked for, never the student's config.json), and its validation loss measured with the shipped tokenizer.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

MAX_WEIGHTS = 64 * 1024**2
MAX_TOKENIZER = 8 * 1024**2


def written_here(path: Path, out: Path) -> bool:
    """``path`` is a plain file the child wrote inside ``out``: no link on the way (a folder linked elsewhere could
    hand the grader someone else's weights)."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        return path.resolve(strict=True).is_relative_to(out.resolve(strict=True))
    except OSError:
        return False


def file_problem(path: Path, out: Path, limit: int, what: str) -> dict | None:
    """{"error"} when ``path`` is not a plain file written inside ``out`` (:func:`written_here`) of at most ``limit``
    bytes; ``what`` names it in the message."""
    if not written_here(path, out):
        return {"error": f"the assembly wrote no {what}"}
    if path.stat().st_size > limit:
        return {"error": f"{what} is larger than a course-tiny model's ({path.stat().st_size} bytes)"}
    return None


def measure(out: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from autograder.assembly_child import TRAIN_CHARS, VAL_CHARS
    from llmcourse.chapters.gpt import GPT, preset
    from llmcourse.chapters.tokens_and_positions import BPETokenizer
    from llmcourse.chapters.training import estimate_loss
    from llmcourse.data import train_val_text

    weights, tokenizer_dir = out / "model.safetensors", out / "tokenizer"
    files = [weights, tokenizer_dir / "vocab.json", tokenizer_dir / "merges.txt"]
    for path, limit in zip(files, (MAX_WEIGHTS, MAX_TOKENIZER, MAX_TOKENIZER)):
        if problem := file_problem(path, out, limit, path.name):
            return problem
    try:
        tokenizer = BPETokenizer.load(tokenizer_dir)
    except Exception as err:  # noqa: BLE001 - the files are the student's
        return {"error": f"the trained tokenizer's files cannot be read: {type(err).__name__}: {err}"[:500]}
    vocab = int(tokenizer.vocab_size)
    model = GPT(preset("course-tiny", vocab_size=vocab))
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except Exception as err:  # noqa: BLE001
        return {"error": f"the trained weights do not fit the course's GPT (course-tiny, vocab {vocab}): "
                         f"{type(err).__name__}: {str(err)[:300]}"}
    _, val_text = train_val_text(TRAIN_CHARS, VAL_CHARS, seed=0)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    with torch.no_grad():
        val_loss = float(estimate_loss(model.eval(), val_ids, model.config.block_size))
    report = {"val_loss": val_loss if math.isfinite(val_loss) else None, "vocab_size": vocab}
    return {**report, **sample(out, tokenizer, vocab)}


def sample(out: Path, tokenizer, vocab: int, stage: str | None = None) -> dict:
    """{"sample": the generated ids of the child's report (of ``stage``'s part) decoded by ``tokenizer``}, or {}
    when they are not valid ids."""
    try:
        report = json.loads((out / "assembly.json").read_text(encoding="utf-8")[:1_000_000])
        ids = (report.get(stage) if stage else report).get("generated_ids")
        if isinstance(ids, list) and ids and all(isinstance(i, int) and 0 <= i < vocab for i in ids[:1000]):
            return {"sample": tokenizer.decode(ids[:1000])[:500]}
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    return {}


#: Held-out examples the fine-tuned model answers, and the longest answer it may write.
APP_EVAL, APP_MAX_NEW = 200, 16


def answer_loss(model, tokenizer, examples) -> float:
    """The mean loss per answer token (the completion and its end-of-text) of held-out examples, in nats."""
    import torch

    from llmcourse.chapters.applications import sft_batch, sft_loss

    eot = tokenizer.eot_id
    ids, labels, _ = sft_batch([tokenizer.encode(e.prompt) for e in examples],
                               [tokenizer.encode(e.completion) for e in examples], eot, eot, model.config.block_size)
    with torch.no_grad():
        return float(sft_loss(model.eval()(ids)[0], labels))


def measure_application(out: Path) -> dict:
    """{"loss", "loss_before", "f1", "exact_match", "examples"} of the fine-tuned checkpoint in
    ``out/application``, or {"error"}."""
    import torch
    from safetensors.torch import load_file

    import llmcourse
    from autograder.assembly_child import APP_TASK
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.metrics import exact_match, token_f1
    from llmcourse.chapters.tokens_and_positions import BPETokenizer
    from llmcourse.data import task_examples
    from llmcourse.finetune import greedy_answers  # prompts of one length per batch: no answer cut short

    weights = out / "application" / "model.safetensors"
    if problem := file_problem(weights, out, MAX_WEIGHTS, "fine-tuned model (application/model.safetensors)"):
        return problem
    torch.set_num_threads(1)
    checkpoint = Path(llmcourse.__file__).parent / "checkpoints" / "course-tiny"
    model, tokenizer = GPT.from_pretrained(checkpoint).eval(), BPETokenizer.load(checkpoint)
    examples = task_examples(APP_TASK, APP_EVAL, seed=0, split="test")
    loss_before = answer_loss(model, tokenizer, examples)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as err:  # noqa: BLE001 - the file is the student's
        return {"error": f"the fine-tuned weights do not fit course-tiny: {type(err).__name__}: {str(err)[:300]}"}
    loss = answer_loss(model, tokenizer, examples)
    answers = greedy_answers(model.eval(), tokenizer, [e.prompt for e in examples], max_new_tokens=APP_MAX_NEW)
    f1 = sum(token_f1(a, e.target) for a, e in zip(answers, examples)) / len(examples)
    em = sum(exact_match(a, e.target) for a, e in zip(answers, examples)) / len(examples)
    shown = [{"prompt": e.prompt, "answer": a, "target": e.target} for a, e in list(zip(answers, examples))[:3]]
    return {"loss": loss, "loss_before": loss_before, "f1": f1, "exact_match": em, "examples": shown}


def measure_modern(out: Path) -> dict:
    """{"val_loss", "vocab_size", "sample"} of the ModernGPT in ``out/modern`` measured as Hugging Face's Llama,
    or {"error"}."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    import llmcourse
    from autograder.assembly_child import MODERN_SHAPE, TRAIN_CHARS, VAL_CHARS
    from llmcourse.chapters.modern_block import ModernConfig, llama_config_dict
    from llmcourse.chapters.tokens_and_positions import BPETokenizer
    from llmcourse.chapters.training import estimate_loss
    from llmcourse.data import train_val_text

    weights = out / "modern" / "model.safetensors"
    if problem := file_problem(weights, out, MAX_WEIGHTS, "model.safetensors in modern/ (save_pretrained's)"):
        return problem
    torch.set_num_threads(1)
    tokenizer = BPETokenizer.load(Path(llmcourse.__file__).parent / "checkpoints" / "course-tiny")
    vocab = int(tokenizer.vocab_size)
    config = ModernConfig(vocab_size=vocab, **MODERN_SHAPE)
    llama = LlamaForCausalLM(LlamaConfig(**llama_config_dict(config))).eval()
    try:
        llama.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as err:  # noqa: BLE001 - the file is the student's
        return {"error": f"the saved weights are not a Hugging Face Llama of the shape asked for ({MODERN_SHAPE}, "
                         f"vocab {vocab}): {type(err).__name__}: {str(err)[:300]}"}

    class CausalLM(torch.nn.Module):  # what estimate_loss calls: model(x, y) -> (logits, loss)
        def __init__(self):
            super().__init__()
            self.llama = llama

        def forward(self, idx, targets):
            logits = self.llama(idx).logits
            return logits, F.cross_entropy(logits.transpose(1, 2), targets)

    _, val_text = train_val_text(TRAIN_CHARS, VAL_CHARS, seed=0)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    with torch.no_grad():
        val_loss = float(estimate_loss(CausalLM().eval(), val_ids, config.block_size))
    report = {"val_loss": val_loss if math.isfinite(val_loss) else None, "vocab_size": vocab}
    return {**report, **sample(out, tokenizer, vocab, "modern")}


def main(argv: list[str]) -> int:
    try:
        report = measure(Path(argv[0]))
    except Exception as err:  # noqa: BLE001 - reported, so the grader can say what failed
        report = {"error": f"the grader could not measure the model: {type(err).__name__}: {err}"[:500],
                  "grader_failed": True}
    for stage, measure_stage in (("application", measure_application), ("modern", measure_modern)):
        if (Path(argv[0]) / stage).is_dir():  # the child ran that stage
            try:
                report[stage] = measure_stage(Path(argv[0]))
            except Exception as err:  # noqa: BLE001
                report[stage] = {"error": f"the grader could not measure the {stage} stage's model: "
                                          f"{type(err).__name__}: {err}"[:500], "grader_failed": True}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
