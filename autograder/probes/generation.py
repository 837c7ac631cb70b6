"""Outside checks of chapter 5c (generation): top-p, the repetition penalty, n-gram blocking, cached attention and
the whole ``generate`` loop.

The models are small GPTs (chapter 5a's class, its fallback during grading) with weights set by parameter name
from a seeded generator, so both sides hold the same model. Greedy tokens and tokens sampled after
``torch.manual_seed`` are compared exactly with the reference (Hugging Face's ``generate`` on the same weights);
sampling with a ``generator`` draws a stream of its own in each implementation, so there the checks are the
notebook's: the same seed gives the same tokens, and the frequencies of 20,000 draws match the processed
distribution within a Hoeffding bound. Hugging Face's defaults are checked as the notebook checks them: sampling
keeps the 50 most likely tokens unless ``top_k`` is 0 or None, and the model's end-of-text token (its last id) ends
a row, unless ``eos_token_id`` is None.

Cached attention runs on chapter 4a's math (:func:`_textbook_sdpa`, whose row with no key is ``nan``), as in the
instructor's notebook: ``F.scaled_dot_product_attention`` returns 0 for such a row and would hide a padding
position that reads nothing.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import torch

from autograder.probes import Probe, close, equal, replaced, tokens

# ---------------------------------------------------------------------------------------------------------------
# helpers (run in the probe process, on both sides)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_gpt(seed: int, vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=64, std=0.3):
    """The notebook's ``random_gpt``: weight matrices and embeddings ~ N(0, std^2), drawn by parameter name."""
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd)).eval()
    g = _gen(seed)
    params = dict(model.named_parameters())  # the tied lm_head.weight appears once, as transformer.wte.weight
    for name in sorted(params):
        if params[name].dim() > 1:
            params[name].copy_(torch.randn(params[name].shape, generator=g) * std)
    return _chapter4a_attention(model)


def _chapter4a_attention(model):
    for block in model.transformer.h:
        block.attn.use_torch_sdpa = False  # as the instructor's chapter 4b: chapter 4a's attention
    return model


def _checkpoint_gpt():
    """The chapter's checkpoint (course-tiny, trained in chapter 5b), read without transformers."""
    from safetensors.torch import load_file

    import llmcourse
    from llmcourse.chapters.gpt import GPT, from_gpt2_state_dict
    from llmcourse.chapters.multi_head_attention import GPTConfig

    folder = Path(llmcourse.__file__).parent / "checkpoints" / "course-tiny"
    c = json.loads((folder / "config.json").read_text())
    model = GPT(GPTConfig(block_size=c["n_positions"], vocab_size=c["vocab_size"], n_layer=c["n_layer"],
                          n_head=c["n_head"], n_embd=c["n_embd"]))
    missing, unexpected = model.load_state_dict(from_gpt2_state_dict(load_file(folder / "model.safetensors")),
                                                strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise RuntimeError(f"the checkpoint does not fit the GPT: missing {missing}, unexpected {unexpected}")
    return _chapter4a_attention(model.eval())


def _textbook_sdpa(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k) + mask) v, as chapter 4a writes it: a query with no allowed key gets nan."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(dim=-1) @ v


def _textbook_attention(m):
    """The chapter module's ``scaled_dot_product_attention`` (chapter 4a's, imported by the notebook) is
    :func:`_textbook_sdpa` inside the block. (The fallback's own cached attention does not use it.)"""
    return replaced(m, "scaled_dot_product_attention", _textbook_sdpa)


def _ids() -> object:
    """Token ids of the same shape, equal token for token."""
    same_tokens = tokens()

    def compare(got, expected):
        if isinstance(got, np.ndarray) and isinstance(expected, np.ndarray) and got.shape != expected.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        return same_tokens(got, expected)

    return compare


def _self_consistent(atol: float, rtol: float = 1e-5):
    """``got`` stacks two tensors of the student's that must agree (the cache built step by step and in one go);
    the reference only gives the shape."""

    def compare(got, expected):
        if not isinstance(got, np.ndarray) or got.shape != expected.shape:
            return f"shape {getattr(got, 'shape', type(got).__name__)}, expected {tuple(expected.shape)}"
        return close(atol, rtol)(got[0], got[1])

    return compare


# ---------------------------------------------------------------------------------------------------------------
# 5c.1 top_p_filter


def top_p_visible(m):
    logits = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    two = torch.stack([logits[0], logits[0].flip(0)])
    return {"p0.6": m.top_p_filter(logits, 0.6),
            "p0.9": m.top_p_filter(logits, 0.9).isfinite(),
            "p0.01": m.top_p_filter(logits, 0.01).isfinite(),
            "p1.0": m.top_p_filter(logits, 1.0),
            "two_rows": m.top_p_filter(two, 0.6).isfinite()}


def top_p_hidden(m):
    g = _gen(510)
    out = {}
    for top_p in (0.05, 0.3, 0.5, 0.8, 0.95, 0.999, 1.0):
        out[f"random_p{top_p}"] = m.top_p_filter(torch.randn(6, 40, generator=g) * 2, top_p)
    x = torch.tensor([[0.125, 0.5, 0.25, 0.125]], dtype=torch.float64).log()  # exact in binary: see _EXACT
    out["crosses_0.625"] = m.top_p_filter(x, 0.625).isfinite()
    out["reaches_0.75"] = m.top_p_filter(x, 0.75).isfinite()
    x = torch.randn(2, 3, 20, generator=g)
    x[..., :5] = float("-inf")
    x0 = x.clone()
    out["filtered_3d"] = m.top_p_filter(x, 0.9)
    out["input_unchanged"] = bool(torch.equal(x, x0))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5c.2 apply_repetition_penalty


def penalty_visible(m):
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = {"penalty2": m.apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)}
    out["input_after"] = logits
    out["penalty0.5"] = m.apply_repetition_penalty(logits, torch.tensor([[3]]), 0.5)
    two = torch.tensor([[2.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]])
    ids, mask = torch.tensor([[2, 2, 3], [0, 0, 3]]), torch.tensor([[1, 1, 1], [0, 0, 1]])
    out["left_padded"] = m.apply_repetition_penalty(two, ids, 2.0, mask)
    return out


def penalty_hidden(m):
    g = _gen(520)
    out, unchanged = {}, True
    for penalty in (1.3, 2.0, 0.7):
        x = torch.randn(5, 30, generator=g) * 3
        ids = torch.randint(0, 30, (5, 12), generator=g)
        x0 = x.clone()
        out[f"penalty{penalty}"] = m.apply_repetition_penalty(x, ids, penalty)
        unchanged &= bool(torch.equal(x, x0))
    out["input_unchanged"] = unchanged
    x = torch.randn(4, 30, generator=g) * 3
    ids = torch.randint(0, 30, (4, 10), generator=g)
    mask = (torch.arange(10)[None, :] >= torch.tensor([0, 3, 6, 9])[:, None]).long()
    out["left_padding"] = m.apply_repetition_penalty(x, ids, 1.5, mask)
    out["mask_of_ones"] = m.apply_repetition_penalty(x, ids, 1.5, torch.ones_like(ids))
    out["zeros64"] = m.apply_repetition_penalty(torch.zeros(1, 5, dtype=torch.float64), torch.tensor([[1, 2]]), 3.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5c.3 block_repeated_ngrams


def ngrams_visible(m):
    ids, zeros = torch.tensor([[1, 2, 3, 1]]), torch.zeros(1, 5)
    return {"n2": m.block_repeated_ngrams(zeros, ids, 2),
            "n1": m.block_repeated_ngrams(zeros, ids, 1),
            "n3_repeat": m.block_repeated_ngrams(zeros, torch.tensor([[1, 2, 3, 1, 2]]), 3),
            "n3_new": m.block_repeated_ngrams(zeros, ids, 3),
            "n5_short": m.block_repeated_ngrams(zeros, ids, 5),
            "input_after": zeros}


def ngrams_hidden(m):
    g = _gen(530)
    out, unchanged = {}, True
    for n in (1, 2, 3, 4):
        for T in sorted({1, n - 1, n, n + 1, 9, 25} - {0}):
            ids = torch.randint(0, 4, (5, T), generator=g)  # a vocabulary of 4: many repeats
            x = torch.randn(5, 6, generator=g)
            x0 = x.clone()
            out[f"n{n}_T{T}"] = m.block_repeated_ngrams(x, ids, n)
            unchanged &= bool(torch.equal(x, x0))
    out["input_unchanged"] = unchanged
    out["two_rows"] = m.block_repeated_ngrams(torch.zeros(2, 4), torch.tensor([[1, 2, 1], [3, 3, 3]]), 2)
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5c.4 attend_with_cache


def cache_visible(m):
    attn = _random_gpt(0).transformer.h[0].attn  # C = 32, 4 heads
    x = torch.randn(2, 6, 32, generator=_gen(540))
    with _textbook_attention(m):
        y, (k, v) = m.attend_with_cache(attn, x)
        y3, past = m.attend_with_cache(attn, x[:, :3])
        y5, past = m.attend_with_cache(attn, x[:, 3:5], past)
        y6, past = m.attend_with_cache(attn, x[:, 5:6], past)
    return {"no_cache": y, "keys_shape": list(k.shape), "chunks_3_2_1": torch.cat([y3, y5, y6], dim=1),
            "values_shape": list(past[1].shape)}


def cache_hidden(m):
    g = _gen(541)
    out = {}
    for sdpa in (False, True):
        attn = _random_gpt(3, n_embd=48, n_head=6).transformer.h[1].attn
        attn.use_torch_sdpa = sdpa
        x = torch.randn(3, 9, 48, generator=g)
        with _textbook_attention(m):
            full, (k_all, v_all) = m.attend_with_cache(attn, x)
            outs, past = [], None
            for a, b in [(0, 4), (4, 7), (7, 8), (8, 9)]:
                y, past = m.attend_with_cache(attn, x[:, a:b], past)
                outs.append(y)
            tag = f"sdpa{sdpa}"
            out[f"{tag}_no_cache"] = full
            out[f"{tag}_chunks"] = torch.cat(outs, 1)
            out[f"{tag}_keys"] = torch.stack([past[0], k_all])
            out[f"{tag}_values"] = torch.stack([past[1], v_all])
            # left padding: row 0 is 3 padding positions, then the first 6 positions of x[0]
            pad = torch.randn(1, 3, 48, generator=g)
            padded = torch.cat([torch.cat([pad, x[:1, :6]], 1), x[1:2]], 0)
            key_mask = torch.tensor([[0, 0, 0] + [1] * 6, [1] * 9])
            y, past = m.attend_with_cache(attn, padded, None, key_mask)
            out[f"{tag}_padded_finite"] = bool(y.isfinite().all())
            out[f"{tag}_padded_real"] = y[0, 3:]
            out[f"{tag}_padding_reads_itself"] = y[0, :3]
            out[f"{tag}_unpadded_row"] = y[1]
            new = torch.randn(2, 1, 48, generator=g)
            y_new, _ = m.attend_with_cache(attn, new, past, torch.cat([key_mask, torch.ones(2, 1).long()], 1))
            out[f"{tag}_new_finite"] = bool(y_new.isfinite().all())
            out[f"{tag}_new_after_padding"] = y_new[0]
    return out


def _cache_hidden_compare():
    compare = {}
    for tag in ("sdpaFalse", "sdpaTrue"):
        compare |= {f"{tag}_keys": _self_consistent(1e-6), f"{tag}_values": _self_consistent(1e-6),
                    f"{tag}_padded_finite": equal(), f"{tag}_new_finite": equal()}
    return compare


# ---------------------------------------------------------------------------------------------------------------
# 5c.5 generate


def generate_visible(m):
    net = _random_gpt(1)
    prompt = torch.tensor([[5, 17, 3], [40, 2, 2]])
    ends = torch.tensor([[85, 33, 76]])  # net's greedy text after it reaches 96, the last id, at the 4th new token
    top50 = net(prompt[:1])[0][0, -1].topk(50).indices

    def next_tokens(**kwargs):  # 2,000 draws of the token after prompt 0
        return m.generate(net, prompt[:1], max_new_tokens=1, do_sample=True, num_return_sequences=2000,
                          generator=_gen(1), **kwargs)[:, -1]

    with _textbook_attention(m):
        out = {"greedy": m.generate(net, prompt, max_new_tokens=10),
               "max_length": m.generate(net, prompt, max_length=13),
               "no_cache": m.generate(net, prompt, max_new_tokens=10, use_cache=False)}
        a, b = (m.generate(net, prompt, max_new_tokens=8, do_sample=True, num_return_sequences=3,
                           generator=_gen(0)) for _ in range(2))
        out.update(sample_shape=list(a.shape), same_seed_same_tokens=bool(torch.equal(a, b)),
                   sample_prompts=a[:3, :3])
        out["default_draws_in_top50"] = bool(torch.isin(next_tokens(), top50).all())
        out["top_k0_draws_beyond_top50"] = not bool(torch.isin(next_tokens(top_k=0), top50).all())
        out["eos_none"] = m.generate(net, ends, max_new_tokens=10, eos_token_id=None)
        out["eos_one_row"] = m.generate(net, ends, max_new_tokens=10)
        out["eos_batch"] = m.generate(net, torch.cat([ends, prompt[:1]]), max_new_tokens=10)
    return out


_VISIBLE_COMPARE = {"greedy": _ids(), "max_length": _ids(), "no_cache": _ids(), "sample_shape": equal(),
                    "same_seed_same_tokens": equal(), "sample_prompts": _ids(), "default_draws_in_top50": equal(),
                    "top_k0_draws_beyond_top50": equal(), "eos_none": _ids(), "eos_one_row": _ids(),
                    "eos_batch": _ids()}


def _hidden_setup():
    net = _random_gpt(7)
    prompt = torch.randint(0, 96, (3, 6), generator=_gen(550))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, :1] = 0
    # pad with the token that row 0's real prompt makes most likely next: padding that counts as text (in the
    # repetition penalty) then changes what is generated
    pad = int(net(prompt[:1, 3:])[0][0, -1].argmax())
    return net, prompt, mask, prompt.masked_fill(mask == 0, pad)


def _both(m, net, idx, name, **kwargs):
    """{name/cache: tokens, name/no_cache: tokens}: each is compared with the reference."""
    return {f"{name}/cache": m.generate(net, idx, use_cache=True, **kwargs),
            f"{name}/no_cache": m.generate(net, idx, use_cache=False, **kwargs)}


def generate_hidden_greedy(m):
    net, prompt, _, _ = _hidden_setup()
    out = {}
    with _textbook_attention(m):
        for name, kwargs in [("new12", dict(max_new_tokens=12)), ("length15", dict(max_length=15)),
                             *((f"ngram{n}", dict(max_new_tokens=14, no_repeat_ngram_size=n)) for n in (1, 2, 3, 4)),
                             ("penalty1.4", dict(max_new_tokens=12, repetition_penalty=1.4))]:
            out |= _both(m, net, prompt, name, **kwargs)
    return out


def generate_hidden_eos(m):
    net, prompt, _, _ = _hidden_setup()
    idx = prompt
    for _ in range(3):  # the model's own greedy loop: tokens that row 0 produces (the notebook's greedy[0, 7:9])
        idx = torch.cat([idx, net(idx)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    eos = int(idx[0, 8])
    # the notebook's model that produces its end-of-text token: net with 96 (the last id) and the token row 0
    # produces second swapped (the prompt has neither)
    ending = copy.deepcopy(net)
    embedding = ending.transformer.wte.weight  # also the output layer's weight (tied)
    embedding[[int(idx[0, 7]), 96]] = embedding[[96, int(idx[0, 7])]]
    out = {}
    with _textbook_attention(m):
        out |= _both(m, net, prompt, "eos_pad0", max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
        out |= _both(m, net, prompt, "eos_pad_default", max_new_tokens=12, eos_token_id=eos)
        out |= _both(m, net, prompt[:1], "eos_one_row", max_new_tokens=12, eos_token_id=eos)
        out |= _both(m, ending, prompt, "model_eos", max_new_tokens=12)
        out |= _both(m, ending, prompt, "model_eos_pad0", max_new_tokens=12, pad_token_id=0)
        out |= _both(m, ending, prompt, "model_eos_none", max_new_tokens=12, eos_token_id=None)
        out |= _both(m, ending, prompt, "model_eos_ngram2", max_new_tokens=12, no_repeat_ngram_size=2)
        torch.manual_seed(11)  # HF samples from torch's global generator
        out["model_eos_sampled"] = m.generate(ending, prompt, max_new_tokens=12, do_sample=True, num_return_sequences=2)
    return out


def generate_hidden_padded(m):
    net, prompt, mask, padded = _hidden_setup()
    out = {}
    with _textbook_attention(m):
        out |= _both(m, net, padded, "padded", attention_mask=mask, max_new_tokens=12)
        out |= _both(m, net, padded, "padded_penalty_ngram", attention_mask=mask, max_new_tokens=12,
                     repetition_penalty=1.3, no_repeat_ngram_size=2)
        out["alone"] = m.generate(net, prompt[:1, 3:], max_new_tokens=12)
    return out


def generate_hidden_sampling(m):
    net, _, mask, padded = _hidden_setup()
    out = {}
    with _textbook_attention(m):
        for name, kwargs in [("plain", dict()), ("temperature0.6", dict(temperature=0.6)), ("top_k8", dict(top_k=8)),
                             ("top_k0", dict(top_k=0)), ("top_kNone", dict(top_k=None)), ("top_p0.7", dict(top_p=0.7)),
                             ("all", dict(temperature=1.4, top_k=20, top_p=0.9, repetition_penalty=1.2,
                                          no_repeat_ngram_size=2))]:
            settings = dict(max_new_tokens=10, do_sample=True, num_return_sequences=3, attention_mask=mask) | kwargs
            for use_cache in (True, False):
                torch.manual_seed(2024)  # HF samples from torch's global generator
                out[f"{name}/{'cache' if use_cache else 'no_cache'}"] = m.generate(net, padded, use_cache=use_cache,
                                                                                   **settings)
    return out


def generate_hidden_checkpoint(m):
    model = _checkpoint_gpt()
    ids = torch.tensor([[116, 258, 306, 293]])  # "the cat sees" in the checkpoint's tokenizer
    with _textbook_attention(m):
        return {"plain": m.generate(model, ids, max_length=40),
                "ngram_penalty": m.generate(model, ids, max_length=40, no_repeat_ngram_size=2, repetition_penalty=1.2)}


def generate_hidden_seeded(m):
    net, prompt, _, _ = _hidden_setup()
    with _textbook_attention(m):
        runs = [m.generate(net, prompt, max_new_tokens=12, do_sample=True, generator=_gen(9)) for _ in range(2)]
        return {"top_k1": m.generate(net, prompt, max_new_tokens=12, do_sample=True, top_k=1),
                "temperature1e-4": m.generate(net, prompt, max_new_tokens=12, do_sample=True, temperature=1e-4),
                "generator_runs_agree": bool(torch.equal(runs[0], runs[1])),
                "generator_shape": list(runs[0].shape)}


FREQ_N, FREQ_SETTINGS, FREQ_DELTA = 20_000, dict(temperature=0.5, top_k=6, top_p=0.9), 1e-6


def generate_hidden_frequencies(m):
    """[frequencies of the next token in FREQ_N draws, the processed distribution computed here] as (2, V)."""
    net, prompt, _, _ = _hidden_setup()
    one = prompt[:1, -1:]  # one token (the notebook's prompt has 6): 20,000 rows of it cost 6x less to read
    with _textbook_attention(m):
        draws = m.generate(net, one, max_new_tokens=1, do_sample=True, num_return_sequences=FREQ_N, generator=_gen(3),
                           **FREQ_SETTINGS)[:, -1]
    z = net(one)[0][0, -1].double() / FREQ_SETTINGS["temperature"]
    z = z.masked_fill(z < z.topk(FREQ_SETTINGS["top_k"]).values[-1], float("-inf"))
    p = z.softmax(-1)
    sorted_p, order = p.sort(descending=True)
    keep = torch.zeros_like(p, dtype=torch.bool)
    keep[order] = (sorted_p.cumsum(-1) - sorted_p) < FREQ_SETTINGS["top_p"]
    expected = torch.where(keep, p, 0.0) / (p * keep).sum()
    freq = torch.bincount(draws, minlength=p.numel()).double() / FREQ_N
    return {"frequencies": torch.stack([freq, expected])}


def _frequencies_match(got, expected):
    """The draws (``got[0]``) against the processed distribution of the reference (``expected[1]``): no removed
    token drawn, every frequency within the notebook's Hoeffding bound (union over the vocabulary, delta = 1e-6).
    The reference's own draws (``expected[0]``) are not used."""
    if not isinstance(got, np.ndarray) or got.shape != expected.shape:
        return f"shape {getattr(got, 'shape', type(got).__name__)}, expected {tuple(expected.shape)}"
    freq, p = got[0], expected[1]
    V = p.size
    bound = math.sqrt(math.log(2 * V / FREQ_DELTA) / (2 * FREQ_N))
    removed = np.flatnonzero((p == 0) & (freq != 0))
    if removed.size:
        return f"sampling drew token {int(removed[0])}, which temperature, top-k and top-p remove"
    err = np.abs(freq - p)
    if not np.all(err <= bound):
        i = int(np.argmax(err))
        return f"token {i} drawn with frequency {freq[i]:.4f}, its processed probability is {p[i]:.4f} " \
               f"(bound {bound:.4f} for {FREQ_N} draws)"
    return None


def generate_hidden_arguments(m):
    net, prompt, _, _ = _hidden_setup()
    cases = [("max_length", dict(max_length=6)), ("max_length", dict(max_length=10, max_new_tokens=3)),
             ("max_new_tokens", dict()), ("top_p", dict(max_new_tokens=3, do_sample=True, top_p=0.0)),
             ("top_p", dict(max_new_tokens=3, do_sample=True, top_p=1.5)),
             ("temperature", dict(max_new_tokens=3, do_sample=True, temperature=0.0)),
             ("block_size", dict(input_ids=torch.zeros(1, 65, dtype=torch.long), max_new_tokens=1)),
             ("block_size", dict(max_new_tokens=60)),
             ("empty", dict(input_ids=torch.zeros(1, 0, dtype=torch.long), max_new_tokens=1)),
             ("num_return_sequences", dict(max_new_tokens=3, num_return_sequences=2))]
    refused = []
    for what, kwargs in cases:
        try:
            m.generate(net, kwargs.pop("input_ids", prompt), **kwargs)
        except ValueError as err:
            refused.append("ValueError" if what in str(err) else f"ValueError without {what!r}: {err}"[:120])
        else:
            refused.append(f"no ValueError ({what})")
    net.train()
    m.generate(net, prompt, max_new_tokens=2)
    return {"refused": refused, "training_mode_kept": net.training}


def _expect(value) -> object:
    """Equal to ``value``, whatever the reference says (for a case the notebook checks against a hand-computed
    answer that the reference does not give)."""
    same = equal()
    return lambda got, expected: same(got, np.asarray(value))


# Probabilities (0.125, 0.5, 0.25, 0.125) are exact in binary, so the kept mass reaches top_p exactly where the
# notebook says. Hugging Face's TopPLogitsWarper (the fallback) removes the tokens whose ascending cumulative mass
# is <= 1 - top_p; softmax(log p) is off by an ulp, so at top_p = 0.75 it keeps the second 0.125 as well.
_EXACT = {"crosses_0.625": _expect([[False, True, True, False]]), "reaches_0.75": _expect([[False, True, True, False]])}


PROBES = [
    Probe("test_top_p", top_p_visible),
    Probe("test_top_p_hidden", top_p_hidden, {"input_unchanged": equal()} | _EXACT),
    Probe("test_repetition_penalty", penalty_visible),
    Probe("test_repetition_penalty_hidden", penalty_hidden, {"input_unchanged": equal()}),
    Probe("test_ngrams", ngrams_visible),
    Probe("test_ngrams_hidden", ngrams_hidden, {"input_unchanged": equal()}),
    Probe("test_attend_with_cache", cache_visible, {"keys_shape": equal(), "values_shape": equal()}),
    Probe("test_attend_with_cache_hidden", cache_hidden, _cache_hidden_compare()),
    Probe("test_generate", generate_visible, _VISIBLE_COMPARE),
    Probe("test_generate_hidden", generate_hidden_greedy, _ids(), name="greedy"),
    Probe("test_generate_hidden", generate_hidden_eos, _ids(), name="eos"),
    Probe("test_generate_hidden", generate_hidden_padded, _ids(), name="left_padded"),
    Probe("test_generate_hidden", generate_hidden_sampling, _ids(), name="sampling"),
    Probe("test_generate_hidden", generate_hidden_checkpoint, _ids(), name="checkpoint"),
    Probe("test_generate_hidden", generate_hidden_seeded, {"top_k1": _ids(), "temperature1e-4": _ids(),
                                                           "generator_runs_agree": equal(),
                                                           "generator_shape": equal()}, name="seeded"),
    Probe("test_generate_hidden", generate_hidden_frequencies, _frequencies_match, name="frequencies"),
    Probe("test_generate_hidden", generate_hidden_arguments, equal(), name="arguments"),
]
