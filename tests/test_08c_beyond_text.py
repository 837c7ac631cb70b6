"""Chapter 8c: every graded test rejects plausible wrong answers; the public fallback agrees with the solution and
with exact values (likelihoods against the chain rule, sampling against the model's own distribution); the image
generator ``llmcourse.pixels`` is deterministic, exact and refuses bad input.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import ROOT
from notebook_harness import solution_editor, wrong_answer_tests

from llmcourse import pixels

CHAPTER = "08c_beyond_text"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

TOKENS = {"test_pixels_as_tokens", "test_pixels_as_tokens_hidden"}
TOKENS_HIDDEN = {"test_pixels_as_tokens_hidden"}
NLL = {"test_image_nll", "test_image_nll_hidden"}
NLL_HIDDEN = {"test_image_nll_hidden"}
COMPLETE = {"test_complete_images", "test_complete_images_hidden"}

edit = solution_editor(SOLUTION)

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    # 8c.1 image_to_tokens, tokens_to_image
    "truncating instead of rounding to the nearest level": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("torch.round(flat * (levels - 1)).long()", "(flat * (levels - 1)).long()")), TOKENS),
    "scaling by levels instead of levels - 1": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("torch.round(flat * (levels - 1))", "torch.round(flat * levels)")), TOKENS),
    "column by column instead of row by row": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("flat = images.reshape(*images.shape[:-2], -1)",
                             "flat = images.transpose(-2, -1).reshape(*images.shape[:-2], -1)")), TOKENS),
    "no start token": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("return torch.cat([start, ids], dim=-1)", "return ids")), TOKENS),
    "start token 0 (black) instead of levels": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("torch.full((*ids.shape[:-1], 1), levels,", "torch.full((*ids.shape[:-1], 1), 0,")),
        TOKENS),
    "the start token at the end": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("torch.cat([start, ids], dim=-1)", "torch.cat([ids, start], dim=-1)")), TOKENS),
    "float token ids": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("torch.round(flat * (levels - 1)).long()", "torch.round(flat * (levels - 1))")),
        TOKENS),
    "image_to_tokens for batches only (one image (H, W) comes out as H rows)": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("flat = images.reshape(*images.shape[:-2], -1)",
                             "flat = images.reshape(len(images), -1)")), TOKENS_HIDDEN),
    "tokens_to_image dividing by levels": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("tokens[..., 1:].float() / (levels - 1)", "tokens[..., 1:].float() / levels")),
        TOKENS),
    "tokens_to_image dropping the last token instead of the start token": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("pixels = tokens[..., 1:].float()", "pixels = tokens[..., :-1].float()")), TOKENS),
    "tokens_to_image for batches only": ("pixels_as_tokens", edit(
        "pixels_as_tokens", ("return pixels.reshape(*tokens.shape[:-1], side, side)",
                             "return pixels.reshape(len(tokens), side, side)")), TOKENS_HIDDEN),
    # 8c.2 image_nll
    "no shift: each position scored on its own input token": ("image_nll", edit(
        "image_nll", ("logp.gather(-1, tokens[:, 1:, None])", "logp.gather(-1, tokens[:, :-1, None])")), NLL),
    "mean over positions instead of the sum": ("image_nll", edit(
        "image_nll", ("return -picked.sum(dim=-1)", "return -picked.mean(dim=-1)")), NLL),
    "the log-likelihood (no minus sign)": ("image_nll", edit(
        "image_nll", ("return -picked.sum(dim=-1)", "return picked.sum(dim=-1)")), NLL),
    "logits instead of log-probabilities": ("image_nll", edit(
        "image_nll", ("logp = F.log_softmax(logits.float(), dim=-1)", "logp = logits.float()")), NLL),
    "log-softmax over the batch axis": ("image_nll", edit(
        "image_nll", ("F.log_softmax(logits.float(), dim=-1)", "F.log_softmax(logits.float(), dim=0)")), NLL),
    "the model run on all L tokens (too long for a whole image)": ("image_nll", edit(
        "image_nll", ("logits = model(tokens[:, :-1])[0]", "logits = model(tokens)[0][:, :-1]")), NLL_HIDDEN),
    # 8c.3 complete_images
    "the start token not excluded": ("complete_images", edit(
        "complete_images", ("            logits[:, start] = -math.inf  # pixels only\n", "")), COMPLETE),
    "pixel 0 excluded instead of the start token": ("complete_images", edit(
        "complete_images", ("logits[:, start] = -math.inf", "logits[:, 0] = -math.inf")), COMPLETE),
    "greedy ignored: always samples": ("complete_images", edit(
        "complete_images", ("            if greedy:\n", "            if False:\n")), COMPLETE),
    "always greedy": ("complete_images", edit(
        "complete_images", ("            if greedy:\n", "            if True:\n")), COMPLETE),
    "only the last token as context": ("complete_images", edit(
        "complete_images", ("logits = model(out)[0][:, -1, :]", "logits = model(out[:, -1:])[0][:, -1, :]")),
        COMPLETE),
    "returns only the new tokens": ("complete_images", edit(
        "complete_images", ("        return out\n", "        return out[:, prefix.shape[1]:]\n")), COMPLETE),
    "one token too many": ("complete_images", edit(
        "complete_images", ("while out.shape[1] < length:", "while out.shape[1] <= length:")), COMPLETE),
    "softmax over the batch axis": ("complete_images", edit(
        "complete_images", ("F.softmax(logits, dim=-1)", "F.softmax(logits, dim=0)")), COMPLETE),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


# ---------------------------------------------------------------------------------------------------------------
# the fallback against the solution and against exact values


def _random_gpt(seed, vocab_size=5, block_size=16, std=0.3):
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std, generator=gen)
    return model


def test_fallback_agrees_with_solution(monkeypatch):
    from autograder.grading import earlier_modules
    from llmcourse.chapters import reload_all

    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    monkeypatch.setenv("LLMCOURSE_FALLBACK", ",".join(earlier_modules(CHAPTER)))
    reload_all()
    try:
        from llmcourse.chapters import beyond_text as ours
        from llmcourse.fallbacks import beyond_text as fallback

        public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
                  and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
        assert public == {"image_to_tokens", "tokens_to_image", "image_nll", "complete_images"}
        assert public <= set(vars(fallback))
        gen = torch.Generator().manual_seed(0)
        for levels, shape in [(2, (3, 4, 4)), (4, (5, 8, 8)), (7, (2, 3, 5)), (4, (6, 6))]:
            images = torch.rand(shape, generator=gen)
            a, b = ours.image_to_tokens(images, levels), fallback.image_to_tokens(images, levels)
            assert a.dtype == b.dtype == torch.long and torch.equal(a, b)
            if shape[-1] == shape[-2]:
                torch.testing.assert_close(ours.tokens_to_image(a, levels), fallback.tokens_to_image(a, levels),
                                           rtol=0, atol=0)
        for seed, vocab_size, block_size, length in [(1, 5, 16, 17), (2, 3, 8, 4), (3, 9, 12, 13)]:
            model = _random_gpt(seed, vocab_size, block_size)
            tokens = torch.randint(0, vocab_size, (6, length), generator=gen)
            torch.testing.assert_close(ours.image_nll(model, tokens), fallback.image_nll(model, tokens),
                                       atol=1e-5, rtol=1e-5)
            prefix = torch.full((5, 1), vocab_size - 1)
            assert torch.equal(ours.complete_images(model, prefix, block_size + 1, greedy=True),
                               fallback.complete_images(model, prefix, block_size + 1, greedy=True))
            # the same procedure draws the same samples from the same generator
            assert torch.equal(
                ours.complete_images(model, prefix, block_size + 1, generator=torch.Generator().manual_seed(seed)),
                fallback.complete_images(model, prefix, block_size + 1,
                                         generator=torch.Generator().manual_seed(seed)))
    finally:
        reload_all()


def test_fallback_nll_is_the_chain_rule(fallback_gpt):
    """exp(-image_nll) is the product of the model's next-token probabilities, and sums to 1 over every
    continuation of a prefix."""
    from llmcourse.fallbacks.beyond_text import image_nll

    model = _random_gpt(4, vocab_size=4, block_size=8)
    continuations = torch.tensor([[3, *rest] for rest in itertools.product(range(4), repeat=3)])  # (64, 4)
    nll = image_nll(model, continuations).double()
    assert math.isclose(float(torch.exp(-nll).sum()), 1.0, abs_tol=1e-5)
    with torch.no_grad():
        for row, value in zip(continuations[::7], nll[::7]):
            logp = 0.0
            for t in range(1, 4):
                probs = torch.softmax(model(row[None, :t])[0][0, -1].double(), -1)
                logp += math.log(probs[row[t]])
            assert math.isclose(-logp, float(value), rel_tol=1e-5, abs_tol=1e-5)


def test_fallback_samples_follow_the_model(fallback_gpt):
    """Two sampled pixels, 20,000 times: their joint frequencies against the model's exact probabilities of the
    pair (the start token excluded at each step)."""
    from llmcourse.fallbacks.beyond_text import complete_images

    model = _random_gpt(6)
    n = 20000
    out = complete_images(model, torch.full((n, 1), 4), 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (n, 3) and bool((out[:, 1:] < 4).all())
    freq = torch.bincount(out[:, 1] * 4 + out[:, 2], minlength=16).double() / n
    exact = torch.zeros(16, dtype=torch.float64)
    with torch.no_grad():
        for a, b in itertools.product(range(4), repeat=2):
            logits = model(torch.tensor([[4, a]]))[0][0].double()
            logits[:, 4] = -math.inf
            probs = torch.softmax(logits, -1)
            exact[a * 4 + b] = probs[0, a] * probs[1, b]
    # a frequency's standard deviation is at most sqrt(0.25 / n) = 0.0035: 0.02 is more than 5 of them
    assert float((freq - exact).abs().max()) < 0.02


def test_fallback_validates_its_arguments(fallback_gpt):
    from llmcourse.fallbacks import beyond_text as fb

    model = _random_gpt(0)
    for call, error, match in [
        (lambda: fb.image_to_tokens(torch.zeros(2, 2), 1), ValueError, "levels"),
        (lambda: fb.image_to_tokens(torch.zeros(2, 2), 2.0), TypeError, "levels"),
        (lambda: fb.image_to_tokens(torch.zeros(2, 2, dtype=torch.uint8)), TypeError, "float"),
        (lambda: fb.image_to_tokens([[0.0]]), TypeError, "float tensor"),
        (lambda: fb.image_to_tokens(torch.zeros(2, 2, 2, 2)), ValueError, "shape"),
        (lambda: fb.image_to_tokens(torch.full((2, 2), float("nan"))), ValueError, r"\[0, 1\]"),
        (lambda: fb.image_to_tokens(torch.full((2, 2), -0.1)), ValueError, r"\[0, 1\]"),
        (lambda: fb.tokens_to_image(torch.tensor([4.0, 0.0])), TypeError, "integer"),
        (lambda: fb.tokens_to_image(torch.tensor([4, 0, 1])), ValueError, "square"),
        (lambda: fb.tokens_to_image(torch.tensor([0, 0, 1, 2, 3])), ValueError, "start token"),
        (lambda: fb.tokens_to_image(torch.tensor([4, 0, 1, 2, 4])), ValueError, "grey levels"),
        (lambda: fb.image_nll(model, torch.zeros(1, 18, dtype=torch.long)), ValueError, "block_size"),
        (lambda: fb.image_nll(model, torch.zeros(1, 1, dtype=torch.long)), ValueError, "L"),
        (lambda: fb.image_nll(model, torch.full((1, 3), 5)), ValueError, "vocabulary"),
        (lambda: fb.image_nll(torch.nn.Linear(2, 2), torch.zeros(1, 3, dtype=torch.long)), TypeError, "GPT"),
        (lambda: fb.complete_images(model, torch.full((1, 1), 4), 18), ValueError, "length"),
        (lambda: fb.complete_images(model, torch.full((1, 1), 4), 5.0), TypeError, "length"),
        (lambda: fb.complete_images(model, torch.full((1, 1), 4), 5, greedy=1), TypeError, "greedy"),
        (lambda: fb.complete_images(model, torch.full((1, 1), 4), 5, generator=3), TypeError, "generator"),
    ]:
        with pytest.raises(error, match=match):
            call()
    same = torch.full((2, 3), 4)
    assert torch.equal(fb.complete_images(model, same, 3), same)  # nothing to add


# ---------------------------------------------------------------------------------------------------------------
# the image generator


def test_generator_counts_and_exact_distribution():
    counts = {kind: len(pixels.shapes(kind)) for kind in pixels.KINDS}
    assert counts == {"hline": 24, "vline": 24, "rect": 28 * 28 * 3, "frame": 21 * 21 * 3, "diagonal": 11 * 2 * 3,
                      "cross": 6 * 6 * 3}
    images, probs = pixels.image_distribution()
    assert images.shape == (sum(counts.values()), 8, 8) and probs.dtype == torch.float64
    assert math.isclose(float(probs.sum()), 1.0, abs_tol=1e-12)
    assert len({image.numpy().tobytes() for image in images}) == len(images), "every image is listed once"
    levels = torch.round(images * 3)
    assert torch.equal(levels / 3, images), "grey values lie on the 4 levels"
    for image in levels:  # black, except one shape in one level
        assert len(set(image.unique().tolist()) - {0.0}) == 1
    # all images distinct: each of kind k has probability 1 / (6 n_k), and the entropy is exact
    expected = math.log(6) + sum(math.log(n) for n in counts.values()) / 6
    assert math.isclose(pixels.entropy(), expected, rel_tol=1e-12)
    marginals = pixels.pixel_marginals()
    assert marginals.shape == (64, 4) and torch.allclose(marginals.sum(1), torch.ones(64, dtype=torch.float64))
    assert pixels.entropy(size=5, levels=2) < pixels.entropy()  # other sizes and levels work


def test_generator_shapes_are_what_they_say():
    hline = torch.round(pixels.shapes("hline") * 3)
    assert all(int((img > 0).sum()) == 8 and int((img > 0).any(1).sum()) == 1 for img in hline)
    frame = pixels.shapes("frame") > 0
    assert all(not img[1:-1, 1:-1].all() for img in frame)
    diagonal = pixels.shapes("diagonal") > 0
    assert min(int(img.sum()) for img in diagonal) == 3 and max(int(img.sum()) for img in diagonal) == 8
    assert all(int(img.sum()) == 5 for img in pixels.shapes("cross") > 0)


def test_sample_images_is_deterministic_and_follows_the_distribution():
    a, b = pixels.sample_images(64, seed=3), pixels.sample_images(64, seed=3)
    assert a.shape == (64, 8, 8) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, pixels.sample_images(64, seed=4))
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(pixels.sample_images(64, generator=gen), a), "seed s == a generator seeded with s"
    assert pixels.sample_images(0, seed=0).shape == (0, 8, 8)
    images, probs = pixels.image_distribution()
    index = {image.numpy().tobytes(): i for i, image in enumerate(images)}
    n = 6000
    drawn = pixels.sample_images(n, seed=0)
    ids = torch.tensor([index[image.numpy().tobytes()] for image in drawn])  # KeyError: an impossible image
    kind_of = torch.repeat_interleave(torch.arange(6), torch.tensor([len(pixels.shapes(k)) for k in pixels.KINDS]))
    freq = torch.bincount(kind_of[ids], minlength=6).double() / n
    assert float((freq - 1 / 6).abs().max()) < 0.03  # std 0.0048: six of them
    empirical = torch.nn.functional.one_hot(torch.round(drawn.reshape(n, -1) * 3).long(), 4).double().mean(0)
    assert float((empirical - pixels.pixel_marginals()).abs().max()) < 0.03


@pytest.mark.parametrize("call, error", [
    (lambda: pixels.sample_images(-1, seed=0), ValueError),
    (lambda: pixels.sample_images(2.0, seed=0), ValueError),
    (lambda: pixels.sample_images(2), ValueError),
    (lambda: pixels.sample_images(2, seed=0, generator=torch.Generator()), ValueError),
    (lambda: pixels.sample_images(2, seed="0"), TypeError),
    (lambda: pixels.sample_images(2, generator=0), TypeError),
    (lambda: pixels.sample_images(2, seed=0, size=3), ValueError),
    (lambda: pixels.sample_images(2, seed=0, levels=1), ValueError),
    (lambda: pixels.sample_images(2, seed=0, levels=True), TypeError),
    (lambda: pixels.shapes("circle"), ValueError),
    (lambda: pixels.image_distribution(size=8.0), TypeError),
])
def test_generator_refuses_bad_input(call, error):
    with pytest.raises(error):
        call()
