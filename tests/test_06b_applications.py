"""Chapter 6b: every graded test rejects plausible wrong answers; the public fallback agrees with the solution and
with Hugging Face (GPT2LMHeadModel's loss, GPT2ForSequenceClassification) on random cases.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests

CHAPTER = "06b_applications"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

BATCH = {"test_sft_batch", "test_sft_batch_hidden"}
LOSS = {"test_sft_loss", "test_sft_loss_hidden"}
LOOP = {"test_finetune", "test_finetune_hidden"}
HEAD = {"test_classifier", "test_classifier_hidden"}


edit = solution_editor(SOLUTION)


_LABELS = "labels[i, len(prompt):n] = input_ids[i, len(prompt):n]  # the completion and the eos, chosen by position"

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    # 6b.1 sft_batch
    "sft_batch with the loss on the prompt tokens too": ("sft_batch", edit(
        "sft_batch", (_LABELS, "labels[i, :n] = input_ids[i, :n]")), BATCH),
    "sft_batch with labels shifted (each position labelled with the next token)": ("sft_batch", edit(
        "sft_batch", (_LABELS, "labels[i, max(len(prompt) - 1, 0):n - 1] = input_ids[i, max(len(prompt), 1):n]")),
        BATCH),
    "sft_batch that learns the padding": ("sft_batch", edit(
        "sft_batch", (_LABELS, "labels[i, len(prompt):] = input_ids[i, len(prompt):]")), BATCH),
    "sft_batch that masks by value (the eos is lost when pad == eos)": ("sft_batch", edit(
        "sft_batch", (_LABELS, "labels[i, len(prompt):n] = input_ids[i, len(prompt):n]\n"
                               "        labels[i][labels[i] == pad_token_id] = IGNORE_INDEX")), BATCH),
    "sft_batch that pads on the left": ("sft_batch", edit(
        "sft_batch", ("input_ids[i, :n] = torch.tensor(row)", "input_ids[i, T - n:] = torch.tensor(row)"),
        (_LABELS, "labels[i, T - n + len(prompt):] = input_ids[i, T - n + len(prompt):]"),
        ("attention_mask[i, :n] = 1", "attention_mask[i, T - n:] = 1")), BATCH),
    "sft_batch that extends the caller's prompt lists": ("sft_batch", edit(
        "sft_batch", ("rows = [prompt + completion + [eos_token_id] for prompt, completion in pairs]",
                      "rows = []\n"
                      "    for original, (prompt, completion) in zip(prompts, pairs):\n"
                      "        original += completion + [eos_token_id]  # the caller's list, extended\n"
                      "        rows.append(original)")), {"test_sft_batch_hidden"}),
    # 6b.2 sft_loss
    "sft_loss without the shift": ("sft_loss", edit(
        "sft_loss", ("predictions = logits[:, :-1].reshape(-1, V).float()",
                     "predictions = logits.reshape(-1, V).float()"),
        ("targets = labels[:, 1:].reshape(-1)", "targets = labels.reshape(-1)")), LOSS),
    "sft_loss averaged per row instead of per token": ("sft_loss", edit(
        "sft_loss", ("return F.cross_entropy(predictions, targets, ignore_index=IGNORE_INDEX)",
                     "per_token = F.cross_entropy(predictions, targets, ignore_index=IGNORE_INDEX, reduction='none')\n"
                     "    per_token = per_token.view(labels.size(0), -1)\n"
                     "    learned = (labels[:, 1:] != IGNORE_INDEX).float()\n"
                     "    per_row = (per_token * learned).sum(1) / learned.sum(1).clamp(min=1)\n"
                     "    return per_row[learned.sum(1) > 0].mean()")), LOSS),
    "sft_loss summed instead of averaged": ("sft_loss", edit(
        "sft_loss", ("return F.cross_entropy(predictions, targets, ignore_index=IGNORE_INDEX)",
                     "return F.cross_entropy(predictions, targets, ignore_index=IGNORE_INDEX, reduction='sum')")),
        LOSS),
    "sft_loss that shifts the wrong way": ("sft_loss", edit(
        "sft_loss", ("predictions = logits[:, :-1].reshape(-1, V).float()",
                     "predictions = logits[:, 1:].reshape(-1, V).float()"),
        ("targets = labels[:, 1:].reshape(-1)", "targets = labels[:, :-1].reshape(-1)")), LOSS),
    # 6b.3 finetune
    "finetune without zero_grad": ("finetune", edit(
        "finetune", ("        optimizer.zero_grad(set_to_none=True)\n", "")), LOOP),
    "finetune without clipping": ("finetune", edit(
        "finetune", ("        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)\n", "")), {"test_finetune_hidden"}),
    "finetune that clears the gradients before the step": ("finetune", edit(
        "finetune", ("        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)\n",
                     "        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)\n"
                     "        optimizer.zero_grad(set_to_none=True)\n")), LOOP),
    "finetune that leaves the model in eval mode": ("finetune", edit(
        "finetune", ("    model.train()\n", "")), {"test_finetune_hidden"}),
    "finetune that draws rows without the generator": ("finetune", edit(
        "finetune", ("torch.randint(len(input_ids), (batch_size,), generator=generator)",
                     "torch.randint(len(input_ids), (batch_size,))")), LOOP),
    "finetune with the weight decay ignored": ("finetune", edit(
        "finetune", ("configure_optimizer(model, weight_decay, lr)", "configure_optimizer(model, 0.0, lr)")),
        {"test_finetune_hidden"}),
    "finetune that calls the callback before the step": ("finetune", edit(
        "finetune", ("        loss = sft_loss(model(x)[0], y)\n",
                     "        if callback is not None:\n            callback(step, model)\n"
                     "        loss = sft_loss(model(x)[0], y)\n"),
        ("        if callback is not None:\n            callback(step, model)\n    return losses",
         "    return losses")), {"test_finetune_hidden"}),
    "finetune that returns tensors": ("finetune", edit(
        "finetune", ("losses.append(float(loss.detach()))", "losses.append(loss.detach())")), {"test_finetune"}),
    # 6b.4 SequenceClassifier
    "classifier pooling the last position instead of the last real token": ("SequenceClassifier", edit(
        "SequenceClassifier", ("last = (positions * real).argmax(dim=-1)",
                               "last = torch.full((B,), T - 1, device=input_ids.device)")), HEAD),
    "classifier pooling the first padding token": ("SequenceClassifier", edit(
        "SequenceClassifier", ("last = (positions * real).argmax(dim=-1)", "last = (1 - real).argmax(dim=-1)")),
        HEAD),
    "classifier pooling at the number of real tokens - 1 (wrong for left padding)": ("SequenceClassifier", edit(
        "SequenceClassifier", ("last = (positions * real).argmax(dim=-1)",
                               "last = (real.sum(dim=-1) - 1).clamp(min=0)")), {"test_classifier_hidden"}),
    "classifier with a bias in the head": ("SequenceClassifier", edit(
        "SequenceClassifier", ("nn.Linear(gpt.config.n_embd, num_labels, bias=False)",
                               "nn.Linear(gpt.config.n_embd, num_labels)")), HEAD),
    "classifier that copies the transformer": ("SequenceClassifier", edit(
        "SequenceClassifier", ("self.transformer = gpt.transformer",
                               "import copy\n        self.transformer = copy.deepcopy(gpt.transformer)")), HEAD),
    "classifier without the final LayerNorm": ("SequenceClassifier", edit(
        "SequenceClassifier", ("hidden = t.ln_f(x)", "hidden = x")), HEAD),
    "classifier with the default nn.Linear initialisation": ("SequenceClassifier", edit(
        "SequenceClassifier", ("nn.init.normal_(self.score.weight, mean=0.0, std=0.02)", "pass")),
        {"test_classifier_hidden"}),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the fallback: equal to the solution, and to Hugging Face on random cases


def _random_gpt(GPT, GPTConfig, seed=0, vocab_size=40, n_embd=16, std=0.3, dropout=0.0):
    model = GPT(GPTConfig(block_size=32, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=n_embd,
                          dropout=dropout)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _random_rows(gen, n, max_len, vocab):
    return [torch.randint(0, vocab, (int(torch.randint(0, max_len + 1, (1,), generator=gen)),), generator=gen).tolist()
            for _ in range(n)]


@pytest.fixture
def chapter(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "metrics")  # the demos' metrics are not needed here
    from llmcourse.chapters import reload_all

    reload_all()
    from llmcourse.chapters import applications as ours
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import applications as fallback

    yield ours, fallback, GPT, GPTConfig
    reload_all()


def test_fallback_agrees_with_solution(chapter):
    ours, fallback, GPT, GPTConfig = chapter
    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"sft_batch", "sft_loss", "finetune", "SequenceClassifier"}
    assert public <= set(vars(fallback))
    assert ours.IGNORE_INDEX == fallback.IGNORE_INDEX == -100

    gen = torch.Generator().manual_seed(0)
    for case in range(30):
        B = int(torch.randint(1, 6, (1,), generator=gen))
        prompts, completions = _random_rows(gen, B, 7, 12), _random_rows(gen, B, 5, 12)
        eos, pad = (11, 11) if case % 2 else (11, 0)
        for a, b in zip(ours.sft_batch(prompts, completions, eos, pad),
                        fallback.sft_batch(prompts, completions, eos, pad)):
            assert torch.equal(a, b) and a.dtype == b.dtype == torch.long
        logits = torch.randn(B, 9, 13, generator=gen)
        labels = torch.randint(0, 13, (B, 9), generator=gen).masked_fill(torch.rand(B, 9, generator=gen) < 0.5, -100)
        labels[0, 1] = 3
        torch.testing.assert_close(ours.sft_loss(logits, labels), fallback.sft_loss(logits, labels))

    # the loop: the same losses and the same weights from the same seed
    ids = torch.randint(0, 40, (50, 10), generator=gen)
    labels = ids.clone()
    labels[:, :4] = -100
    runs = []
    for impl in (ours, fallback):
        model = _random_gpt(GPT, GPTConfig, seed=1, dropout=0.1)
        torch.manual_seed(3)
        losses = impl.finetune(model, ids, labels, steps=6, batch_size=7, lr=3e-3, weight_decay=0.1, grad_clip=0.5,
                               generator=torch.Generator().manual_seed(2))
        runs.append((losses, model))
    assert runs[0][0] == pytest.approx(runs[1][0], abs=1e-6)
    for (name, p), q in zip(runs[0][1].named_parameters(), runs[1][1].parameters()):
        if not name.endswith("attn.c_attn.bias"):  # the key bias' gradient is rounding noise: Adam amplifies it
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)

    # the classifier: the same logits with the same weights, right- and left-padded rows, an all-padding row
    model = _random_gpt(GPT, GPTConfig, seed=2)
    a, b = ours.SequenceClassifier(model, 3, pad_token_id=0), fallback.SequenceClassifier(model, 3, pad_token_id=0)
    assert sorted(a.state_dict()) == sorted(b.state_dict())
    b.load_state_dict(a.state_dict())
    x = torch.randint(1, 40, (5, 8), generator=gen)
    x[0, 5:] = 0
    x[1, :3] = 0
    x[2] = 0
    x[3, 2] = 0
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))

    # the same refusals
    for impl in (ours, fallback):
        with pytest.raises(ValueError, match="row 1"):
            impl.sft_batch([[1], [1, 2, 3]], [[4], [5]], 0, 0, block_size=4)
        with pytest.raises(ValueError):
            impl.sft_batch([[1]], [[2], [3]], 0, 0)
        with pytest.raises(TypeError):
            impl.sft_batch([[1.5]], [[2]], 0, 0)
        with pytest.raises(ValueError):
            impl.sft_loss(torch.randn(2, 3, 5), torch.full((2, 3), -100))
        with pytest.raises(ValueError):
            impl.sft_loss(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
        with pytest.raises(ValueError):
            impl.finetune(model, ids, labels[:, :5], steps=1, batch_size=2, lr=1e-3)
        with pytest.raises(ValueError):
            impl.SequenceClassifier(model, 0, 0)
        with pytest.raises(ValueError):
            impl.SequenceClassifier(model, 2, 0)(torch.zeros(1, 3))


def test_fallback_equals_hugging_face(monkeypatch):
    """sft_loss == GPT2LMHeadModel(input_ids, labels=...).loss (value and gradient) and SequenceClassifier ==
    GPT2ForSequenceClassification, both ways, on random models and batches (everything on the fallbacks)."""
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from llmcourse.chapters import reload_all
    from llmcourse.hf import gpt2_config, hf_state_dict_to_ours, our_state_dict_to_hf

    reload_all()
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import applications as fallback

    hf_logging.set_verbosity_error()
    gen = torch.Generator().manual_seed(7)
    for seed in range(4):
        model = _random_gpt(GPT, GPTConfig, seed=seed, vocab_size=30 + seed)
        V = model.config.vocab_size
        hf = GPT2LMHeadModel(gpt2_config(model.config)).eval()
        missing, _ = hf.load_state_dict(our_state_dict_to_hf(dict(model.named_parameters())), strict=False)
        assert missing == ["lm_head.weight"]
        B = 2 + seed
        prompts, completions = _random_rows(gen, B, 8, V - 1), _random_rows(gen, B, 6, V - 1)
        eos = V - 1  # pad = eos, as in GPT-2
        ids, labels, _ = fallback.sft_batch(prompts, completions, eos, eos)
        if not (labels[:, 1:] != -100).any():
            continue
        ours = fallback.sft_loss(model(ids)[0], labels)
        theirs = hf(ids, labels=labels).loss
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        ours.backward()
        theirs.backward()
        torch.testing.assert_close(model.transformer.wte.weight.grad, hf.transformer.wte.weight.grad,
                                   atol=1e-6, rtol=1e-5)

        # the classifier, ours -> HF and HF -> ours, right- and left-padded rows
        pad = int(torch.randint(0, V, (1,), generator=gen))
        clf = fallback.SequenceClassifier(model, 2 + seed, pad).eval()
        hf_clf = GPT2ForSequenceClassification(gpt2_config(model.config, num_labels=2 + seed, pad_token_id=pad))
        hf_clf.load_state_dict(our_state_dict_to_hf(clf.state_dict()))
        hf_clf.eval()
        x = torch.randint(0, V, (6, 12), generator=gen)
        lengths = torch.randint(0, 13, (6,), generator=gen)
        right = x.masked_fill(torch.arange(12)[None, :] >= lengths[:, None], pad)
        left = x.masked_fill(torch.arange(12)[None, :] < 12 - lengths[:, None], pad)
        with torch.no_grad():
            for batch in (right, left, x):
                torch.testing.assert_close(clf(batch), hf_clf(batch).logits, atol=1e-5, rtol=1e-5)
            other = GPT2ForSequenceClassification(gpt2_config(model.config, num_labels=3, pad_token_id=pad)).eval()
            for p in other.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            back = fallback.SequenceClassifier(_random_gpt(GPT, GPTConfig, seed=9, vocab_size=V), 3, pad).eval()
            back.load_state_dict(hf_state_dict_to_ours(other.state_dict()))
            for batch in (right, left):
                torch.testing.assert_close(back(batch), other(batch).logits, atol=1e-5, rtol=1e-5)
    reload_all()


def test_fallback_finetune_learns_and_respects_frozen_parameters(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from llmcourse.chapters import reload_all

    reload_all()
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import applications as fallback

    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, 10, (64, 3), generator=gen)
    ids = torch.cat([prompt, torch.full((64, 1), 10), prompt, torch.full((64, 1), 11)], dim=1)
    labels = ids.clone()
    labels[:, :4] = -100
    model = _random_gpt(GPT, GPTConfig, seed=0, vocab_size=12, std=0.02)
    model.transformer.wpe.weight.requires_grad_(False)
    wpe = model.transformer.wpe.weight.detach().clone()
    calls = []
    losses = fallback.finetune(model, ids, labels, steps=40, batch_size=16, lr=1e-2,
                               generator=torch.Generator().manual_seed(1), callback=lambda s, m: calls.append(s))
    assert calls == list(range(40)) and all(type(v) is float for v in losses)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5
    assert torch.equal(model.transformer.wpe.weight, wpe)
    assert all(p.grad is None for p in model.parameters())
    # the classifier trains through the shared transformer
    clf = fallback.SequenceClassifier(model, 2, pad_token_id=11)
    loss = F.cross_entropy(clf(ids[:4, :4]), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert model.transformer.wte.weight.grad is not None
    reload_all()
