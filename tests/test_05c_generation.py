"""Chapter 5c: every graded test rejects plausible wrong answers; the public fallback agrees with the solution.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)
The wrong answers are edits of the solution's own cells, so each differs from a right answer in one mistake.
"""

from __future__ import annotations

import tempfile
import warnings

import pytest
import torch
from conftest import ROOT, import_from_solutions
from notebook_harness import solution_editor, wrong_answer_tests

CHAPTER = "05c_generation"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"

TOP_P = {"test_top_p", "test_top_p_hidden"}
PENALTY = {"test_repetition_penalty", "test_repetition_penalty_hidden"}
NGRAMS = {"test_ngrams", "test_ngrams_hidden"}
CACHE = {"test_attend_with_cache", "test_attend_with_cache_hidden"}
GENERATE = {"test_generate", "test_generate_hidden"}


edit = solution_editor(SOLUTION)


# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    # 5c.1 top_p_filter
    "top-p without the token that crosses p": ("top_p_filter", edit(
        "top_p_filter", ("remove_sorted = mass_before >= top_p", "remove_sorted = mass_before + probs > top_p")),
        TOP_P),
    "top-p that never puts the tokens back in their order": ("top_p_filter", edit(
        "top_p_filter", ("remove = remove_sorted.scatter(-1, order, remove_sorted)", "remove = remove_sorted")), TOP_P),
    "top-p on an ascending sort (keeps the least likely tokens)": ("top_p_filter", edit(
        "top_p_filter", ("descending=True", "descending=False")), TOP_P),
    "top-p that compares logits, not probabilities": ("top_p_filter", edit(
        "top_p_filter", ("probs = sorted_logits.softmax(dim=-1)", "probs = sorted_logits")), TOP_P),
    # 5c.2 apply_repetition_penalty
    "repetition penalty that divides every logit (raising negative ones)": ("repetition_penalty", edit(
        "repetition_penalty", ("torch.where(logits > 0, logits / penalty, logits * penalty)", "logits / penalty")),
        PENALTY),
    "repetition penalty that multiplies positive logits and divides negative ones": ("repetition_penalty", edit(
        "repetition_penalty", ("torch.where(logits > 0, logits / penalty, logits * penalty)",
                               "torch.where(logits > 0, logits * penalty, logits / penalty)")), PENALTY),
    "repetition penalty applied once per occurrence": ("repetition_penalty", '''
#| export
def apply_repetition_penalty(logits, input_ids, penalty, attention_mask=None):
    logits = logits.clone()
    for b in range(logits.size(0)):
        ids = input_ids[b] if attention_mask is None else input_ids[b][attention_mask[b].bool()]
        for i in ids.tolist():
            z = logits[b, i]
            logits[b, i] = z / penalty if z > 0 else z * penalty
    return logits
''', PENALTY),
    "repetition penalty that counts the left padding": ("repetition_penalty", edit(
        "repetition_penalty", ("input_ids[b] if attention_mask is None else input_ids[b][attention_mask[b].bool()]",
                               "input_ids[b]")), PENALTY),
    # 5c.3 block_repeated_ngrams
    "n-gram blocking off by one: matches the last n tokens": ("ngrams", edit(
        "ngrams", ("prefix = seq[T - n + 1:]", "prefix = seq[T - n:]"),
        ("if seq[start:start + n - 1] == prefix:\n                logits[b, seq[start + n - 1]]",
         "if start + n < T and seq[start:start + n] == prefix:\n                logits[b, seq[start + n]]")), NGRAMS),
    "n-gram blocking off by one: blocks (n-1)-grams": ("ngrams", edit(
        "ngrams", ("    logits = logits.clone()\n", "    logits = logits.clone()\n    n = n - 1\n"),
        ("if T < n:", "if n < 1 or T < n:")), NGRAMS),
    "n-gram blocking that skips the last n-gram": ("ngrams", edit(
        "ngrams", ("for start in range(T - n + 1):", "for start in range(T - n):")), {"test_ngrams_hidden"}),
    "n-gram blocking with row 0's bans for every row": ("ngrams", edit(
        "ngrams", ("seq = input_ids[b].tolist()", "seq = input_ids[0].tolist()")), {"test_ngrams_hidden"}),
    # 5c.4 attend_with_cache
    "cached attention with the causal mask not shifted by the cache": ("attend_with_cache", edit(
        "attend_with_cache", ("q_pos = torch.arange(S - T, S, device=x.device)",
                              "q_pos = torch.arange(T, device=x.device)")), CACHE),
    "cached attention that forgets the cached keys and values": ("attend_with_cache", edit(
        "attend_with_cache", ("    if past is not None:\n", "    if False:\n")), CACHE),
    "cached attention that reads padding": ("attend_with_cache", edit(
        "attend_with_cache", ("    if key_mask is not None:\n        real", "    if False:\n        real")),
        {"test_attend_with_cache_hidden", "test_generate_hidden"}),
    "cached attention where padding reads nothing (nan)": ("attend_with_cache", edit(
        "attend_with_cache", ("(allowed & real) | (k_pos[None, :] == q_pos[:, None])", "allowed & real")),
        {"test_attend_with_cache_hidden", "test_generate_hidden"}),
    # 5c.5 generate
    "generate with the temperature applied after the softmax": ("generate", edit(
        "generate", ("                scores = scores / temperature  # before the softmax\n", ""),
        ("probs = scores.softmax(dim=-1)", "probs = scores.softmax(dim=-1) / temperature")), {"test_generate_hidden"}),
    "generate with the sampling filters before the repetition penalty": ("generate", edit(
        "generate", ("            if repetition_penalty != 1.0:\n"
                     "                scores = apply_repetition_penalty(scores, ids, repetition_penalty, mask)\n", ""),
        ("probs = scores.softmax(dim=-1)",
         "if repetition_penalty != 1.0:\n"
         "                    scores = apply_repetition_penalty(scores, ids, repetition_penalty, mask)\n"
         "                probs = scores.softmax(dim=-1)"),
        ("                next_ids = scores.argmax(dim=-1)  # (B',)",
         "                if repetition_penalty != 1.0:\n"
         "                    scores = apply_repetition_penalty(scores, ids, repetition_penalty, mask)\n"
         "                next_ids = scores.argmax(dim=-1)")), {"test_generate_hidden"}),
    "generate that does not pad finished sequences": ("generate", edit(
        "generate", ("next_ids = torch.where(unfinished, next_ids, pad_token_id)  # finished rows get padding",
                     "pass")), GENERATE),
    "generate that stops as soon as one row has ended": ("generate", edit(
        "generate", ("if not unfinished.any():", "if not unfinished.all():")), GENERATE),
    "generate that samples from the whole vocabulary by default": ("generate", edit(
        "generate", ("top_k: int | None = 50,", "top_k: int | None = None,")), GENERATE),
    "generate that ignores the model's end-of-text token by default": ("generate", edit(
        "generate", ("eos_token_id: int | None = MODEL_EOS,", "eos_token_id: int | None = None,")), GENERATE),
    "generate that filters with top_k=0 (0 means no top-k)": ("generate", edit(
        "generate", ("if top_k:", "if top_k is not None:")), GENERATE),
    "generate with repeat instead of repeat_interleave": ("generate", edit(
        "generate", ("ids = input_ids.repeat_interleave(num_return_sequences, dim=0)",
                     "ids = input_ids.repeat(num_return_sequences, 1)"),
        ("attention_mask.long().repeat_interleave(num_return_sequences, 0)",
         "attention_mask.long().repeat(num_return_sequences, 1)")), GENERATE),
    "generate without a cache that reads only the newest token": ("generate", edit(
        "generate", ("logits = forward_with_cache(model, ids, None, mask)",
                     "logits = forward_with_cache(model, new, None, mask)")), GENERATE),
    "generate that ignores the attention mask": ("generate", edit(
        "generate", ("mask = None if attention_mask is None else", "mask = None if True else")),
        {"test_generate_hidden"}),
}


test_wrong_answer_is_rejected, test_every_graded_test_rejects_some_wrong_answer = wrong_answer_tests(
    SOLUTION, WRONG_ANSWERS)


def _random_gpt(GPT, GPTConfig, seed=0, vocab_size=61):
    model = GPT(GPTConfig(block_size=48, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=gen)
    return model


def test_fallback_agrees_with_solution(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import generation as ours
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks import generation as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"top_k_filter", "top_p_filter", "apply_repetition_penalty", "block_repeated_ngrams", "KVCache",
                      "attend_with_cache", "forward_with_cache", "model_eos_token_id", "generate"}
    assert public <= set(vars(fallback))
    assert repr(ours.MODEL_EOS) == repr(fallback.MODEL_EOS) == "MODEL_EOS"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, generator=gen) * 2
    ids = torch.randint(0, 5, (4, 12), generator=gen)
    mask = (torch.arange(12)[None, :] >= torch.tensor([0, 2, 5, 0])[:, None]).long()
    for k in (1, 3, 30):
        torch.testing.assert_close(ours.top_k_filter(x, k), fallback.top_k_filter(x, k))
    for p in (0.1, 0.6, 0.95, 1.0):
        torch.testing.assert_close(ours.top_p_filter(x, p), fallback.top_p_filter(x, p))
    for penalty, m in [(1.5, None), (0.8, None), (1.3, mask)]:
        torch.testing.assert_close(ours.apply_repetition_penalty(x, ids, penalty, m),
                                   fallback.apply_repetition_penalty(x, ids, penalty, m))
    for n in (1, 2, 3):
        torch.testing.assert_close(ours.block_repeated_ngrams(x, ids, n), fallback.block_repeated_ngrams(x, ids, n))

    model = _random_gpt(GPT, GPTConfig)
    idx = torch.randint(0, 61, (3, 7), generator=gen)
    amask = torch.ones(3, 7, dtype=torch.long)
    amask[0, :2] = 0
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_with_cache(model, idx), model(idx)[0])
        torch.testing.assert_close(fallback.forward_with_cache(model, idx), model(idx)[0], atol=1e-5, rtol=1e-5)
        for impl in (ours, fallback):
            cache = impl.KVCache(2)
            a = impl.forward_with_cache(model, idx[:, :5], cache, amask[:, :5])
            b = impl.forward_with_cache(model, idx[:, 5:], cache, amask)
            assert len(cache) == 7
            torch.testing.assert_close(torch.cat([a, b], 1)[1:], model(idx)[0][1:], atol=1e-5, rtol=1e-5)
        attn = model.transformer.h[0].attn
        h = torch.randn(3, 7, 16, generator=gen)
        y1, kv1 = ours.attend_with_cache(attn, h, None, amask)
        y2, kv2 = fallback.attend_with_cache(attn, h, None, amask)
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(kv1[0], kv2[0])

    cases = [dict(max_new_tokens=10), dict(max_length=15, no_repeat_ngram_size=2, repetition_penalty=1.3),
             dict(max_new_tokens=10, eos_token_id=int(ours.generate(model, idx, max_new_tokens=4)[0, -1])),
             dict(max_new_tokens=10, attention_mask=amask), dict(max_new_tokens=8, attention_mask=amask,
                                                                 do_sample=True, num_return_sequences=2, top_k=10,
                                                                 top_p=0.9, temperature=0.8),
             dict(max_new_tokens=8, do_sample=True, num_return_sequences=2), dict(max_new_tokens=8, eos_token_id=None),
             dict(max_new_tokens=8, do_sample=True, top_k=None, eos_token_id=None, pad_token_id=3)]
    for kwargs in cases:
        torch.manual_seed(5)
        a = ours.generate(model, idx, **kwargs)
        torch.manual_seed(5)
        b = fallback.generate(model, idx, **kwargs)
        assert torch.equal(a, b), kwargs
    seeded = [impl.generate(model, idx, max_new_tokens=6, do_sample=True, generator=torch.Generator().manual_seed(1))
              for impl in (fallback, fallback)]
    assert torch.equal(*seeded)
    for impl in (ours, fallback):
        with pytest.raises(ValueError, match="max_length"):
            impl.generate(model, idx, max_length=7)
        with pytest.raises(ValueError, match="num_return_sequences"):
            impl.generate(model, idx, max_new_tokens=2, num_return_sequences=2)
        with pytest.raises(ValueError, match="eos_token_id"):
            impl.generate(model, idx, max_new_tokens=2, eos_token_id=[1, 2])
        assert impl.model_eos_token_id(model) == 60  # the last id of the vocabulary of 61
        model.eos_token_id = 7  # a model that says which token ends its text
        assert impl.model_eos_token_id(model) == 7
        model.eos_token_id = None  # ... or that it has none
        assert impl.model_eos_token_id(model) is None
        del model.eos_token_id


def test_gpt_generate_method_delegates(monkeypatch):
    """Chapter 5a's GPT.generate is this chapter's generate (the seed's call), in the solutions and the fallback."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import generation
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig
    from llmcourse.fallbacks.gpt import GPT as FallbackGPT

    for cls in (GPT, FallbackGPT):
        model = _random_gpt(cls, GPTConfig, seed=3)
        inputs = torch.tensor([[1, 2, 3]])
        out = model.generate(inputs, max_length=20, num_return_sequences=1, no_repeat_ngram_size=2)
        assert torch.equal(out, generation.generate(model, inputs, max_length=20, no_repeat_ngram_size=2))


# ---------------------------------------------------------------------------------------------------------------
# Parity with Hugging Face's generate, defaults included (transformers' GPT2LMHeadModel on the same weights).
# HF samples from torch's global generator, so each pair of calls starts from the same torch.manual_seed.

PARITY_VOCAB = 120  # more than 50 tokens, so that the default top-k of 50 removes some
PARITY_NEW = 14


@pytest.fixture(scope="module")
def parity():
    """(our generate, a small random GPT that produces its end-of-text token, HF's twin of it, a (3, 5) prompt)."""
    from transformers import GPT2LMHeadModel

    generation, gpt, mha = import_from_solutions("generation", "gpt", "multi_head_attention")
    generate, GPT, GPTConfig = generation.generate, gpt.GPT, mha.GPTConfig
    model = _random_gpt(GPT, GPTConfig, seed=11, vocab_size=PARITY_VOCAB)
    eos = PARITY_VOCAB - 1
    prompt = torch.randint(0, eos, (3, 5), generator=torch.Generator().manual_seed(11))
    # rename the token that row 0 produces third (greedy) as the last id, the end-of-text token: the same model, with
    # two tokens swapped (the tied embedding is also the output layer), now ends row 0 early (by its 3rd new token)
    third = int(generate(model, prompt, max_new_tokens=3, eos_token_id=None)[0, -1])
    assert third not in prompt and eos not in prompt
    with torch.no_grad():
        emb = model.transformer.wte.weight
        emb[[third, eos]] = emb[[eos, third]]
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    return generate, model, hf, prompt


def _hf_generate(hf, ids, **kwargs):
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "Setting pad_token_id to eos_token_id", the missing attention mask
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hf.generate(ids, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def _both(parity, ids, seed=0, **kwargs):
    generate, model, hf, _ = parity
    torch.manual_seed(seed)
    ours = generate(model, ids, **kwargs)
    torch.manual_seed(seed)
    theirs = _hf_generate(hf, ids, **kwargs)
    return ours, theirs


PARITY_CASES = {
    "greedy": dict(),
    "sampling with the defaults only (top_k=50 implied)": dict(do_sample=True),
    "top_k alone": dict(do_sample=True, top_k=7),
    "top_p alone (with the default top_k)": dict(do_sample=True, top_p=0.8),
    "temperature alone": dict(do_sample=True, temperature=1.8),
    "repetition_penalty alone, sampled": dict(do_sample=True, repetition_penalty=1.6),
    "repetition_penalty alone, greedy": dict(repetition_penalty=1.6),
    "no_repeat_ngram_size alone, sampled": dict(do_sample=True, no_repeat_ngram_size=2),
    "no_repeat_ngram_size alone, greedy": dict(no_repeat_ngram_size=1),
    "combined": dict(do_sample=True, temperature=1.3, top_k=30, top_p=0.9, repetition_penalty=1.2,
                     no_repeat_ngram_size=2),
    "top_k=0": dict(do_sample=True, top_k=0),
    "top_k=None": dict(do_sample=True, top_k=None, temperature=1.5),
    "num_return_sequences=3": dict(do_sample=True, num_return_sequences=3),
    "eos_token_id=None, greedy": dict(eos_token_id=None),
    "eos_token_id=None, sampled": dict(do_sample=True, eos_token_id=None, top_k=0),
    "another eos_token_id and pad_token_id": dict(do_sample=True, eos_token_id=3, pad_token_id=0),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
@pytest.mark.parametrize("padded", [False, True], ids=["same length", "left-padded"])
def test_generate_equals_hf_generate(parity, case, padded):
    prompt = parity[3]
    kwargs = dict(max_new_tokens=PARITY_NEW) | PARITY_CASES[case]
    if padded:  # rows 1 and 2 left-padded by 2 and 4 positions (with token 0)
        mask = (torch.arange(5)[None, :] >= torch.tensor([0, 2, 4])[:, None]).long()
        prompt, kwargs = prompt.masked_fill(mask == 0, 0), kwargs | dict(attention_mask=mask)
    for seed in (0, 1):
        ours, theirs = _both(parity, prompt, seed=seed, **kwargs)
        assert ours.shape == theirs.shape and torch.equal(ours, theirs), f"{case}, seed {seed}:\n{ours}\n{theirs}"


def test_default_top_k_is_50_as_in_hf(parity):
    """Sampling with the defaults draws only from the 50 most likely tokens, in ours and in HF's; top_k=0 or None
    draws from all of them (so the default is not vacuous for this model)."""
    generate, model, hf, prompt = parity
    with torch.no_grad():
        top50 = model(prompt[:1])[0][0, -1].topk(50).indices
    one = prompt[:1].expand(2000, -1)
    for kwargs, inside in [(dict(), True), (dict(top_k=0), False), (dict(top_k=None), False)]:
        for draws in _both(parity, one, seed=3, max_new_tokens=1, do_sample=True, **kwargs):
            assert bool(torch.isin(draws[:, -1], top50).all()) == inside, kwargs


def test_model_eos_ends_rows_as_in_hf(parity):
    """By default the model's end-of-text token (its last id) ends a row: padded with it from then on, and the
    output is shorter than asked once every row has ended; eos_token_id=None generates every token."""
    generate, model, hf, prompt = parity
    eos, T = PARITY_VOCAB - 1, prompt.size(1)
    ours, theirs = _both(parity, prompt, max_new_tokens=PARITY_NEW)
    assert torch.equal(ours, theirs)
    end = int((ours[0] == eos).long().argmax())  # where row 0 produced the end-of-text token
    assert T <= end < T + 3 and bool((ours[0, end:] == eos).all()), f"row 0 should end early, padded: {ours[0]}"
    assert ours.shape == (3, T + PARITY_NEW) and not bool((ours[1:] == eos).any()), "the other rows go on"
    ours, theirs = _both(parity, prompt[:1], max_new_tokens=PARITY_NEW)
    assert torch.equal(ours, theirs) and ours.shape == (1, end + 1), "one row that ends: generation stops there"
    ours, theirs = _both(parity, prompt[:1], max_new_tokens=PARITY_NEW, eos_token_id=None)
    assert torch.equal(ours, theirs) and ours.shape == (1, T + PARITY_NEW), "eos_token_id=None: no early end"
    assert ours[0, end] == eos and bool((ours[0, end + 1:] != eos).any()), "it goes on after the end-of-text token"


@pytest.mark.parametrize("tree", ["solutions", "fallback"])
def test_generate_works_on_chapter_4e_modern_gpt_as_hf_llama(tree, monkeypatch):
    """Chapter 4e's ModernGPT brings its own forward_with_cache: 5c's generate (the solution's and the fallback's)
    runs on it and gives the tokens of Hugging Face's LlamaForCausalLM with the same weights, greedy and sampled,
    left padding included."""
    from transformers import LlamaForCausalLM

    from llmcourse.chapters import reload_all

    if tree == "fallback":
        monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    else:
        monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    reload_all()
    from llmcourse.chapters.generation import generate
    from llmcourse.chapters.modern_block import ModernConfig, ModernGPT

    torch.manual_seed(3)
    model = ModernGPT(ModernConfig(vocab_size=PARITY_VOCAB, block_size=32, n_layer=2, n_head=4, n_kv_head=2,
                                   n_embd=32, intermediate_size=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # far from uniform, so that the tokens differ from step to step
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        hf = LlamaForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    prompt = torch.randint(0, PARITY_VOCAB - 1, (3, 5), generator=torch.Generator().manual_seed(4))
    mask = (torch.arange(5)[None, :] >= torch.tensor([0, 2, 4])[:, None]).long()
    cases = [dict(), dict(do_sample=True, top_k=20, top_p=0.9, no_repeat_ngram_size=2),
             dict(attention_mask=mask, eos_token_id=None), dict(do_sample=True, attention_mask=mask)]
    for kwargs in cases:
        ids = prompt.masked_fill(mask == 0, 0) if "attention_mask" in kwargs else prompt
        eos = {} if "eos_token_id" in kwargs else dict(eos_token_id=PARITY_VOCAB - 1, pad_token_id=PARITY_VOCAB - 1)
        torch.manual_seed(0)
        ours = generate(model, ids, max_new_tokens=PARITY_NEW, **kwargs)
        torch.manual_seed(0)
        theirs = _hf_generate(hf, ids, max_new_tokens=PARITY_NEW, **kwargs, **eos)
        assert torch.equal(ours, theirs), f"{tree}, {kwargs}:\n{ours}\n{theirs}"
