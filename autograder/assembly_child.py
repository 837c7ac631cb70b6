"""Inside the sandbox: assemble one student's own pieces into a GPT, train it briefly and let it write.

    python -m autograder.assembly_child OUT_DIR [--with-generation] [--with-application] [--with-modern]

``LLMCOURSE_SOURCE`` points at the student's submitted chapters and no chapter is sent to a fallback, so every
piece is the student's: the tokenizer (chapter 3), the model with its attention, MLP and blocks (4a-5a), the
training step (5b) and ``generate`` (5c). The result is plain JSON in ``OUT_DIR/assembly.json``, with the
trained weights (``model.safetensors``) and tokenizer (``tokenizer/``) beside it: the grader measures the model
itself from those (:mod:`autograder.assembly_judge`), since this process runs the student's code. This file imports
torch and the course library only.

With ``--with-application`` a second, independent stage follows (chapter 6b): the shipped ``course-tiny``
checkpoint, loaded by the student's ``GPT.from_pretrained`` (5a) and ``BPETokenizer.load`` (3), is fine-tuned on
:data:`APP_TASK` with the student's ``sft_batch`` and ``finetune`` (6b, on the student's ``configure_optimizer``
of 5b); its weights are written to ``OUT_DIR/application/model.safetensors`` and the grader scores them itself.

With ``--with-modern`` a third, independent stage follows (chapter 4e): the student's ``ModernGPT`` (RMSNorm, RoPE,
SwiGLU, grouped-query attention), in :data:`MODERN_SHAPE`, is trained by the same 5b pieces on the same text,
tokenized by the shipped ``course-tiny`` tokenizer as loaded by the student's ``BPETokenizer.load``, and writes with
their ``generate`` (5c). It is saved by the student's ``save_pretrained`` in Hugging Face's Llama format
(``OUT_DIR/modern/``); the grader loads those weights into a ``LlamaForCausalLM`` of its own and measures it.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path

#: The run, small enough for a couple of CPU minutes, long enough that a working model learns clearly.
VOCAB_SIZE = 320
TRAIN_CHARS, VAL_CHARS = 60_000, 8_000
STEPS, BATCH, LR, WARMUP = 150, 16, 3e-3, 10
PROMPT = "the cat "
#: The application stage: a task of llmcourse.data, how many training examples, steps, batch and learning rate.
APP_TASK, APP_EXAMPLES, APP_STEPS, APP_BATCH, APP_LR = "qa", 1000, 150, 16, 1e-3
#: The modern stage's ModernGPT: course-tiny's shape, with two key/value heads for four query heads (its vocabulary
#: is the course-tiny tokenizer's). The grader builds its Llama from the same numbers, never from the student's files.
MODERN_SHAPE = dict(block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, tie_word_embeddings=False)


class Stage(Exception):
    def __init__(self, stage: str, err: BaseException):
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        super().__init__(f"{stage}: {detail}"[:800])
        self.stage = stage


def stage(name: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the student's code may raise anything
        raise Stage(name, err) from err


def assemble(report: dict, generation_chapter: bool):
    import torch

    from llmcourse.data import train_val_text

    torch.manual_seed(0)
    train_text, val_text = train_val_text(TRAIN_CHARS, VAL_CHARS, seed=0)

    tokens = stage("import chapter 3 (tokens_and_positions)", __import__,
                   "llmcourse.chapters.tokens_and_positions", fromlist=["BPETokenizer"])
    tokenizer = stage("chapter 3: BPETokenizer.train", tokens.BPETokenizer.train, train_text[:30_000], VOCAB_SIZE)
    sample = val_text[:1000]
    decoded = stage("chapter 3: encode/decode", lambda: tokenizer.decode(tokenizer.encode(sample)))
    if decoded != sample:
        raise Stage("chapter 3: encode/decode", ValueError("decode(encode(text)) is not the text"))
    train_ids = torch.tensor(stage("chapter 3: encode", tokenizer.encode, train_text), dtype=torch.long)
    val_ids = torch.tensor(stage("chapter 3: encode", tokenizer.encode, val_text), dtype=torch.long)
    report["chars_per_token"] = len(train_text) / len(train_ids)

    gpt = stage("import chapter 5a (gpt)", __import__, "llmcourse.chapters.gpt", fromlist=["GPT"])
    config = stage("chapter 5a: preset", gpt.preset, "course-tiny", vocab_size=tokenizer.vocab_size)
    model = stage("chapter 5a: GPT(config)", gpt.GPT, config)

    train_and_write(report, model, tokenizer, train_ids, val_ids, config.block_size, generation_chapter)
    report["vocab_size"] = int(tokenizer.vocab_size)
    return model, tokenizer


def train_and_write(report: dict, model, tokenizer, train_ids, val_ids, block: int, generation_chapter: bool,
                    forward: str = "chapter 5a: forward") -> None:
    """Train ``model`` with the student's chapter-5b pieces (STEPS steps), estimate its validation loss, and let it
    write 40 tokens after PROMPT with their ``generate`` (5c); into ``report``: losses, val_loss, generated_ids,
    sample."""
    import torch

    training = stage("import chapter 5b (training)", __import__, "llmcourse.chapters.training",
                     fromlist=["train_step"])
    optimizer = stage("chapter 5b: configure_optimizer", training.configure_optimizer, model, 0.1, LR)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(STEPS):
        x, y = stage("chapter 5b: get_batch", training.get_batch, train_ids, block, BATCH, generator)
        lr = stage("chapter 5b: lr_at", training.lr_at, step, LR, WARMUP, STEPS, LR / 10)
        loss, _ = stage("chapter 5b: train_step", training.train_step, model, optimizer, x, y, lr)
        report["losses"].append(float(loss))
    model.eval()
    report["val_loss"] = float(stage("chapter 5b: estimate_loss", training.estimate_loss, model, val_ids, block))

    prompt = torch.tensor([stage("chapter 3: encode", tokenizer.encode, PROMPT)], dtype=torch.long)
    if generation_chapter:
        generation = stage("import chapter 5c (generation)", __import__, "llmcourse.chapters.generation",
                           fromlist=["generate"])
        with torch.no_grad():
            out = stage("chapter 5c: generate", generation.generate, model, prompt, max_new_tokens=40,
                        no_repeat_ngram_size=2)
    else:  # the course has no generation chapter yet: the plainest greedy loop, on the student's model
        with torch.no_grad():
            out = prompt
            for _ in range(40):
                logits = stage(forward, model, out[:, -block:])[0]
                out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    ids = [int(t) for t in out[0].tolist()]
    report["generated_ids"] = ids
    report["sample"] = stage("chapter 3: decode", tokenizer.decode, ids)


def modern(report: dict, out: Path, generation_chapter: bool) -> None:
    """Chapter 4e's ModernGPT, trained and run by the student's pieces, saved by its ``save_pretrained`` in
    Hugging Face's Llama format (``out/modern``)."""
    import torch

    import llmcourse
    from llmcourse.data import train_val_text

    checkpoint = Path(llmcourse.__file__).parent / "checkpoints" / "course-tiny"
    torch.manual_seed(0)
    train_text, val_text = train_val_text(TRAIN_CHARS, VAL_CHARS, seed=0)
    tokens = stage("import chapter 3 (tokens_and_positions)", __import__,
                   "llmcourse.chapters.tokens_and_positions", fromlist=["BPETokenizer"])
    tokenizer = stage("chapter 3: BPETokenizer.load", tokens.BPETokenizer.load, checkpoint)
    train_ids = torch.tensor(stage("chapter 3: encode", tokenizer.encode, train_text), dtype=torch.long)
    val_ids = torch.tensor(stage("chapter 3: encode", tokenizer.encode, val_text), dtype=torch.long)
    blocks = stage("import chapter 4e (modern_block)", __import__, "llmcourse.chapters.modern_block",
                   fromlist=["ModernGPT"])
    config = stage("chapter 4e: ModernConfig", blocks.ModernConfig, vocab_size=int(tokenizer.vocab_size),
                   **MODERN_SHAPE)
    model = stage("chapter 4e: ModernGPT(config)", blocks.ModernGPT, config)
    train_and_write(report, model, tokenizer, train_ids, val_ids, MODERN_SHAPE["block_size"], generation_chapter,
                    forward="chapter 4e: ModernGPT.forward")
    stage("chapter 4e: ModernGPT.save_pretrained", model.save_pretrained, out / "modern")


def application(report: dict, out: Path) -> None:
    """Fine-tune the course-tiny checkpoint on APP_TASK with the student's pieces; save the weights as data."""
    import torch

    import llmcourse
    from llmcourse.data import task_examples

    checkpoint = Path(llmcourse.__file__).parent / "checkpoints" / "course-tiny"
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a small model: one thread is as fast, and never fights other jobs for the cores
    gpt = stage("import chapter 5a (gpt)", __import__, "llmcourse.chapters.gpt", fromlist=["GPT"])
    tokens = stage("import chapter 3 (tokens_and_positions)", __import__,
                   "llmcourse.chapters.tokens_and_positions", fromlist=["BPETokenizer"])
    model = stage("chapter 5a: GPT.from_pretrained", gpt.GPT.from_pretrained, checkpoint)
    tokenizer = stage("chapter 3: BPETokenizer.load", tokens.BPETokenizer.load, checkpoint)
    applications = stage("import chapter 6b (applications)", __import__, "llmcourse.chapters.applications",
                         fromlist=["finetune"])
    examples = task_examples(APP_TASK, APP_EXAMPLES, seed=0, split="train")
    prompts = [stage("chapter 3: encode", tokenizer.encode, e.prompt) for e in examples]
    completions = [stage("chapter 3: encode", tokenizer.encode, e.completion) for e in examples]
    eot = stage("chapter 3: eot_id", lambda: tokenizer.eot_id)
    input_ids, labels, _ = stage("chapter 6b: sft_batch", applications.sft_batch, prompts, completions, eot, eot,
                                 model.config.block_size)
    losses = stage("chapter 6b: finetune", applications.finetune, model, input_ids, labels, steps=APP_STEPS,
                   batch_size=APP_BATCH, lr=APP_LR, generator=torch.Generator().manual_seed(0))
    report["application"]["losses"] = [float(x) for x in list(losses)[:APP_STEPS]]
    (out / "application").mkdir(exist_ok=True)
    stage("saving the fine-tuned model", save_data, out / "application", model, None)


def save_data(out: Path, model, tokenizer) -> None:
    """The trained weights and the tokenizer, as data the grader measures on its own (safetensors, GPT-2's
    vocab.json and merges.txt)."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer")


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    report = {"losses": [], "val_loss": None, "sample": "", "generated_ids": [], "error": None, "stage": None}
    started = time.monotonic()
    try:
        model, tokenizer = assemble(report, generation_chapter="--with-generation" in argv)
        stage("saving the trained model and tokenizer", save_data, out, model, tokenizer)
    except Stage as err:
        report["error"], report["stage"] = str(err), err.stage
    except BaseException as err:  # noqa: BLE001
        report["error"] = f"{type(err).__name__}: {err}"[:800]
    if "--with-application" in argv:  # independent of the stage above: it starts from the shipped checkpoint
        report["application"] = {"losses": [], "error": None, "stage": None}
        try:
            application(report, out)
        except Stage as err:
            report["application"]["error"], report["application"]["stage"] = str(err), err.stage
        except BaseException as err:  # noqa: BLE001
            report["application"]["error"] = f"{type(err).__name__}: {err}"[:800]
        report["application"]["losses"] = [x if math.isfinite(x) else None for x in report["application"]["losses"]]
    if "--with-modern" in argv:  # independent too: the shipped tokenizer, a model of its own
        report["modern"] = {"losses": [], "val_loss": None, "generated_ids": [], "sample": "", "error": None,
                            "stage": None}
        try:
            modern(report["modern"], out, generation_chapter="--with-generation" in argv)
        except Stage as err:
            report["modern"]["error"], report["modern"]["stage"] = str(err), err.stage
        except BaseException as err:  # noqa: BLE001
            report["modern"]["error"] = f"{type(err).__name__}: {err}"[:800]
        report["modern"]["losses"] = [x if math.isfinite(x) else None for x in report["modern"]["losses"]]
    report["seconds"] = round(time.monotonic() - started, 1)
    report["losses"] = [x if math.isfinite(x) else None for x in report["losses"]]
    (out / "assembly.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
