"""The grader's own measurement of an assembled model (a trusted process: ``python -m autograder.assembly_judge
OUT``).

The assembly child (:mod:`autograder.assembly_child`) runs the student's code, so what it reports could be made
up. It also writes *data*: the trained weights (``model.safetensors``) and the tokenizer (``vocab.json``,
``merges.txt``). This process, started by the grader with every chapter on its public fallback and nothing of the
student's code, loads that data into the course's reference GPT (course-tiny, GPT-2's parameter names) and
tokenizer, and measures the validation loss itself, on validation text it makes itself. It prints one JSON
object: ``val_loss``, ``vocab_size``, ``sample`` (the student's generated ids decoded by the reference
tokenizer) or ``error``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

MAX_WEIGHTS = 64 * 1024**2
MAX_TOKENIZER = 8 * 1024**2


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
        if not path.is_file() or path.is_symlink():
            return {"error": f"the assembly wrote no {path.name}"}
        if path.stat().st_size > limit:
            return {"error": f"{path.name} is larger than a course-tiny model's ({path.stat().st_size} bytes)"}
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
    try:
        ids = json.loads((out / "assembly.json").read_text(encoding="utf-8")[:1_000_000]).get("generated_ids")
        if isinstance(ids, list) and ids and all(isinstance(i, int) and 0 <= i < vocab for i in ids[:1000]):
            report["sample"] = tokenizer.decode(ids[:1000])[:500]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    return report


def main(argv: list[str]) -> int:
    try:
        report = measure(Path(argv[0]))
    except Exception as err:  # noqa: BLE001 - reported, so the grader can say what failed
        report = {"error": f"the grader could not measure the model: {type(err).__name__}: {err}"[:500],
                  "grader_failed": True}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
