"""Outside checks of chapter 6b (applications): SFT batches, the SFT loss, the fine-tuning loop, the classifier.

Every probe mirrors one graded cell of the notebook, on the same inputs. The models are chapter 5a's GPT (its public
fallback on both sides when grading) with weights drawn from seeded generators in parameter order, as the
notebook's ``random_gpt`` draws them, so both sides hold the same model. The reference side is the public fallback,
which equals Hugging Face's ``GPT2LMHeadModel(..., labels=...).loss`` and ``GPT2ForSequenceClassification``
(``tests/test_06b_applications.py`` checks that on random cases).

Where a test checks a property of the student's own run (the loss falls, two runs with one seed agree, the
optimizer steps with clipped gradients, the head starts at GPT-2's scale), the probe returns the numbers and the
comparator applies the test's threshold. The fine-tuning loop is checked with a correct loss put in place of the
student's ``sft_loss`` (on both sides), as the notebook's hidden test does, so that a mistake in ``sft_loss`` costs
exercise 6b.2 only. Every probe records the warnings the student's code prints: in the notebook they land on the
cell's stderr, which fails it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from autograder.probes import Probe, close, equal, replaced, same_losses
from autograder.probes.gpt import Rules, watched

# ---------------------------------------------------------------------------------------------------------------
# helpers (run in the probe process, on both sides)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_gpt(seed, vocab_size=50, n_layer=2, n_head=2, n_embd=16, block_size=32, dropout=0.0, std=0.3):
    """The notebook's ``random_gpt``: weight matrices and embeddings ~ N(0, std^2), in parameter order."""
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd, dropout=dropout)).eval()
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _reference_loss(logits, labels):
    """The notebook's ``reference_loss`` (what sft_loss should be), put in place of the module's own."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1))


def _raises(error, call) -> str:
    try:
        call()
    except error as err:
        return f"{error.__name__}: {err}"[:200]
    return "no error"


def _refused(error):
    """The student's call raised ``error`` (the message is the student's own, so only the kind is compared)."""

    def compare(got, expected):
        if not isinstance(got, str) or not got.startswith(error.__name__ + ":"):
            return f"should raise {error.__name__}, got {got!r:.100}"
        return None

    return compare


def _row_error(got, expected):
    """A ValueError for the row that is too long, naming it (row 1) and its length (5), as the notebook checks."""
    if not isinstance(got, str) or not got.startswith("ValueError:") or "row 1" not in got or "5" not in got:
        return f"should be a ValueError naming row 1 and its 5 tokens, got {got!r:.120}"
    return None


def _is_true(got, expected):
    return None if got is True else f"got {got!r:.60}, expected True"


def _falls_by(amount: float, last: int = 5):
    """The student's losses: the mean of the last ``last`` is below the first minus ``amount`` (the test's rule; the
    reference's run is not used)."""

    def compare(got, expected):
        try:
            losses = [float(v) for v in got]
        except (TypeError, ValueError):
            return f"got {got!r:.60}, expected a list of losses"
        if len(losses) <= last or not sum(losses[-last:]) / last < losses[0] - amount:
            return f"the loss should fall by more than {amount:g}: {losses[:1]} ... {losses[-last:]}"
        return None

    return compare




#: [a run, the same run again] of the student's finetune: one seed, one result.
SAME_SEED = same_losses(1e-6, "a run", "the same seed again")


def _clipped(got, expected):
    """[number of optimizer steps, largest gradient norm an optimizer step saw, grad_clip]: one step per step, each
    with a norm at most grad_clip (1e-4 relative slack, as the notebook)."""
    try:
        count, largest, clip = (float(v) for v in got)
        want = float(expected[0])
    except (TypeError, ValueError, IndexError):
        return f"got {got!r:.60}"
    if count != want:
        return f"the optimizer stepped {count:g} times in {want:g} steps"
    if not largest <= clip * (1 + 1e-4):
        return f"the optimizer stepped with a gradient norm of {largest:.4g}: it should be clipped to {clip:g}"
    return None


def _near(target: float, atol: float):
    def compare(got, expected):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not abs(got - target) <= atol:
            return f"got {got!r:.60}, expected {target:g} within {atol:g}"
        return None

    return compare


# ---------------------------------------------------------------------------------------------------------------
# 6b.1 sft_batch


def sft_batch_visible(m):
    ids, labels, mask = m.sft_batch([[4, 4], [], [7]], [[3], [5, 6], []], eos_token_id=1, pad_token_id=1)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask,
            "dtypes": [str(t.dtype) for t in (ids, labels, mask)]}


def _draw(g, n_max):
    return torch.randint(0, 9, (int(torch.randint(0, n_max + 1, (1,), generator=g)),), generator=g).tolist()


def sft_batch_hidden(m):
    g = _gen(61)
    out, unchanged = {}, True
    for case in range(40):
        B = int(torch.randint(1, 6, (1,), generator=g))
        prompts, completions = [_draw(g, 6) for _ in range(B)], [_draw(g, 5) for _ in range(B)]
        eos, pad = (8, 8) if case % 2 else (8, 0)
        before = copy.deepcopy((prompts, completions))
        ids, labels, mask = m.sft_batch(prompts, completions, eos_token_id=eos, pad_token_id=pad)
        out[f"case{case}/input_ids"], out[f"case{case}/labels"], out[f"case{case}/attention_mask"] = ids, labels, mask
        out[f"case{case}/dtypes"] = [str(t.dtype) for t in (ids, labels, mask)]
        unchanged &= (prompts, completions) == before
    out["inputs_unchanged"] = unchanged
    ids, labels, mask = m.sft_batch([[3, 4, 5]], [[6, 7]], eos_token_id=2, pad_token_id=2)
    out["one_row/labels"], out["one_row/all_real"] = labels, bool(mask.all())
    out["block_size_fits"] = list(m.sft_batch([[1, 2]], [[3]], 0, 0, block_size=4)[0].shape)
    out["block_size_refused"] = _raises(ValueError, lambda: m.sft_batch([[1], [1, 2, 3]], [[4], [5]], 0, 0,
                                                                         block_size=4))
    out["mismatched_refused"] = _raises(ValueError, lambda: m.sft_batch([[1]], [[2], [3]], 0, 0))
    out["empty_refused"] = _raises(ValueError, lambda: m.sft_batch([], [], 0, 0))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 6b.2 sft_loss


def sft_loss_visible(m):
    net = _random_gpt(0)
    input_ids = torch.tensor([[3, 8, 9, 4, 5, 1], [7, 6, 2, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, -100, 4, 5, 1], [-100, -100, 2, 1, -100, -100]])
    loss = m.sft_loss(net(input_ids)[0], labels)
    return {"shape": list(loss.shape), "loss": loss}


def sft_loss_hidden(m):
    g = _gen(62)
    out = {}
    net = _random_gpt(5, vocab_size=40)
    with torch.enable_grad():
        for case in range(6):
            B, T = 2 + case % 3, 8 + case
            input_ids = torch.randint(0, 40, (B, T), generator=g)
            starts = torch.randint(0, T - 1, (B,), generator=g)
            ends = torch.minimum(starts + 1 + torch.randint(0, T, (B,), generator=g), torch.tensor(T))
            positions = torch.arange(T)[None, :]
            keep = (positions >= starts[:, None]) & (positions < ends[:, None])
            keep[0, 1] = True
            labels = input_ids.masked_fill(~keep, -100)
            net.zero_grad()
            loss = m.sft_loss(net(input_ids)[0], labels)
            loss.backward()
            out[f"model{case}/loss"] = loss.detach()
            out[f"model{case}/wte_grad"] = net.transformer.wte.weight.grad.clone()
        logits = torch.randn(3, 7, 11, generator=g, requires_grad=True)
        labels = torch.randint(0, 11, (3, 7), generator=g)
        labels[0, :5] = -100
        labels[1, 2:] = -100
        loss = m.sft_loss(logits, labels)
        (grad,) = torch.autograd.grad(loss, logits)
    out["logits/loss"], out["logits/grad"] = loss.detach(), grad
    out["logits/dtype_and_shape"] = [str(loss.dtype), list(loss.shape)]
    labels2 = labels.clone()
    labels2[:, 0] = 3
    out["label_at_0_unused"] = m.sft_loss(logits.detach(), labels2)
    logits2 = logits.detach().clone()
    logits2[:, -1] = 100.0
    out["last_logits_unused"] = m.sft_loss(logits2, labels)
    out["bfloat16_gives"] = str(m.sft_loss(logits.detach().to(torch.bfloat16), labels).dtype)
    out["no_label_refused"] = _raises(ValueError, lambda: m.sft_loss(logits.detach(), torch.full((3, 7), -100)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 6b.3 finetune


def _toy_task():
    g = _gen(0)
    prompt = torch.randint(1, 10, (64, 3), generator=g)
    input_ids = torch.cat([prompt, torch.full((64, 1), 10), prompt, torch.full((64, 1), 11)], dim=1)
    labels = input_ids.clone()
    labels[:, :4] = -100
    return input_ids, labels


def finetune_visible(m):
    input_ids, labels = _toy_task()
    net = _random_gpt(1, vocab_size=12, block_size=16, std=0.02)
    calls = []
    with torch.enable_grad():
        losses = m.finetune(net, input_ids, labels, steps=40, batch_size=16, lr=1e-2, generator=_gen(1),
                            callback=lambda step, model: calls.append([step, model is net]))
        again = m.finetune(_random_gpt(1, vocab_size=12, block_size=16, std=0.02), input_ids, labels, steps=5,
                           batch_size=16, lr=1e-2, generator=_gen(1))
    floats = isinstance(losses, list) and len(losses) == 40 and all(type(v) is float for v in losses)
    return {"forty_floats": floats, "losses": [float(v) for v in losses] if floats else [],
            "calls": calls, "cleared": all(p.grad is None or not p.grad.any() for p in net.parameters()),
            "same_seed": [[float(v) for v in again], [float(v) for v in losses[:5]]] if floats else []}


def _finetune_data():
    g = _gen(63)
    prompt = torch.randint(1, 20, (80, 4), generator=g)
    answer = (prompt.flip(1) + 1) % 20
    ids = torch.cat([prompt, torch.full((80, 1), 20), answer, torch.full((80, 1), 21), torch.full((80, 2), 21)], 1)
    labels = ids.clone()
    labels[:, :5] = -100
    labels[:, -2:] = -100
    labels[::3, -3] = -100
    return ids, labels


_CASES = [dict(steps=8, batch_size=12, lr=3e-3), dict(steps=8, batch_size=5, lr=1e-2, weight_decay=0.1),
          dict(steps=8, batch_size=12, lr=3e-3, grad_clip=0.05)]


def finetune_hidden(m):
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    ids, labels = _finetune_data()
    norms = []

    def record_norm(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads]))))

    out = {}
    handle = register_optimizer_step_pre_hook(record_norm)
    try:
        with torch.enable_grad(), replaced(m, "sft_loss", _reference_loss):
            for i, kwargs in enumerate(_CASES):
                net = _random_gpt(10 + i, vocab_size=22, dropout=0.1)  # in eval mode
                norms.clear()
                torch.manual_seed(i)
                losses = m.finetune(net, ids, labels, generator=_gen(i), **kwargs)
                out[f"case{i}/losses"] = torch.tensor([float(v) for v in losses])
                out[f"case{i}/clipped"] = [len(norms), max(norms, default=0.0), kwargs.get("grad_clip", 1.0)]
                out[f"case{i}/cleared"] = all(p.grad is None or not p.grad.any() for p in net.parameters())
            net = _random_gpt(20, vocab_size=22)
            for p in (net.transformer.wte.weight, net.transformer.wpe.weight):
                p.requires_grad_(False)
            before = {name: p.detach().clone() for name, p in net.named_parameters()}
            m.finetune(net, ids, labels, steps=3, batch_size=8, lr=1e-2, weight_decay=0.1, generator=_gen(0))
            out["frozen/changed_iff_trainable"] = {name: (not torch.equal(p, before[name])) == p.requires_grad
                                                   for name, p in net.named_parameters()}
            out["steps0"] = m.finetune(net, ids, labels, steps=0, batch_size=8, lr=1e-2)
            seen = []
            start = net.transformer.h[0].mlp.c_fc.weight.detach().clone()
            m.finetune(net, ids, labels, steps=2, batch_size=8, lr=1e-2,
                       callback=lambda step, model: seen.append(
                           not torch.equal(model.transformer.h[0].mlp.c_fc.weight, start)))
            out["callback_after_step"] = seen
    finally:
        handle.remove()
    return out


# ---------------------------------------------------------------------------------------------------------------
# 6b.4 SequenceClassifier


def classifier_visible(m):
    net = _random_gpt(2)
    clf = m.SequenceClassifier(net, num_labels=3, pad_token_id=1)
    out = {"shares_transformer": clf.transformer is net.transformer,
           "state_dict": sorted(f"{name} {list(t.shape)}" for name, t in clf.state_dict().items())}
    clf.score.weight.copy_(torch.randn(3, 16, generator=_gen(640)) * 0.3)  # the same head on both sides
    out["logits"] = clf(torch.tensor([[5, 9, 4, 1, 1], [7, 3, 6, 2, 8], [4, 1, 1, 1, 1]]))
    return out


def classifier_hidden(m):
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # as the notebook's setup: no notices about padding on stderr
    try:
        return _classifier_hidden(m)
    finally:
        hf_logging.set_verbosity(verbosity)


def _classifier_hidden(m):
    from transformers import GPT2ForSequenceClassification

    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.hf import gpt2_config, hf_state_dict_to_ours, our_state_dict_to_hf

    g = _gen(64)
    config = GPTConfig(block_size=24, vocab_size=30, n_layer=2, n_head=4, n_embd=32)
    out = {}
    for pad in (0, 29):
        with torch.random.fork_rng():
            theirs = GPT2ForSequenceClassification(gpt2_config(config, num_labels=4, pad_token_id=pad)).eval()
        for p in theirs.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        ours = m.SequenceClassifier(GPT(config), num_labels=4, pad_token_id=pad).eval()
        ours.load_state_dict(hf_state_dict_to_ours(theirs.state_dict()))
        lengths = [9, 4, 1, 7, 9, 0]
        ids = torch.randint(1, 29, (6, 9), generator=g)
        right, left = ids.clone(), ids.clone()
        for b, n in enumerate(lengths):
            right[b, n:] = pad
            left[b, :9 - n] = pad
        middle = right.clone()
        middle[0, 3] = pad
        for name, x in (("right", right), ("left", left), ("middle", middle)):
            out[f"pad{pad}/{name}"] = ours(x)
        with torch.random.fork_rng():
            back = GPT2ForSequenceClassification(gpt2_config(config, num_labels=4, pad_token_id=pad)).eval()
        back.load_state_dict(our_state_dict_to_hf(ours.state_dict()))
        out[f"pad{pad}/copied_back"] = back(left).logits
    net = _random_gpt(3, n_embd=64)
    clf = m.SequenceClassifier(net, num_labels=4, pad_token_id=0)
    out["head"] = sorted(name for name, _ in clf.named_parameters() if not name.startswith("transformer."))
    out["head_std"] = float(clf.score.weight.std())
    with torch.enable_grad():
        loss = F.cross_entropy(clf(torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])), torch.tensor([0, 3]))
        loss.backward()
    out["reaches_gpt"] = net.transformer.wte.weight.grad is not None and bool(net.transformer.wte.weight.grad.any())
    out["float_ids_refused"] = _raises(ValueError, lambda: clf(torch.zeros(2, 3)))
    return out


def _all_true(got, expected):
    if not isinstance(got, dict) or not got:
        return f"got {got!r:.60}"
    wrong = [name for name, ok in got.items() if ok is not True]
    return f"{wrong[0]} changed when frozen or stayed when trainable" if wrong else None


PROBES = [
    Probe("test_sft_batch", watched(sft_batch_visible), Rules(equal(), {})),
    Probe("test_sft_batch_hidden", watched(sft_batch_hidden),
          Rules(equal(), {"block_size_refused": _row_error, "mismatched_refused": _refused(ValueError),
                          "empty_refused": _refused(ValueError)})),
    Probe("test_sft_loss", watched(sft_loss_visible), Rules(close(1e-5, 1e-5), {"shape": equal()})),
    Probe("test_sft_loss_hidden", watched(sft_loss_hidden),
          Rules(close(1e-5, 1e-5), {"/wte_grad": close(1e-6, 1e-5), "logits/loss": close(1e-6, 1e-5),
                                    "logits/grad": close(1e-7, 1e-5), "logits/dtype_and_shape": equal(),
                                    "label_at_0_unused": close(1e-5, 1e-5), "bfloat16_gives": equal(),
                                    "no_label_refused": _refused(ValueError)})),
    Probe("test_finetune", watched(finetune_visible),
          Rules(equal(), {"losses": _falls_by(0.5), "same_seed": SAME_SEED, "cleared": _is_true,
                          "forty_floats": _is_true})),
    Probe("test_finetune_hidden", watched(finetune_hidden),
          Rules(equal(), {"/losses": close(1e-5, 1e-5), "/clipped": _clipped, "/cleared": _is_true,
                          "frozen/changed_iff_trainable": _all_true})),
    Probe("test_classifier", watched(classifier_visible),
          Rules(close(1e-5, 1e-5), {"shares_transformer": _is_true, "state_dict": equal()})),
    Probe("test_classifier_hidden", watched(classifier_hidden),
          Rules(close(1e-5, 1e-5), {"head": equal(), "head_std": _near(0.02, 0.005), "reaches_gpt": _is_true,
                                    "float_ids_refused": _refused(ValueError)})),
]

__all__ = ["PROBES"]

_ = np  # numpy arrays arrive in the comparators
