"""Outside checks of chapter 5a (gpt): GPT-2's initialisation, the model, and GPT-2's checkpoint format both ways.

Weights are set by parameter name (each tensor drawn from a generator seeded by its name), so the student's model
and the reference get the same numbers whatever order they create their parameters in. Checkpoints are written
by hand (``config.json`` and ``model.safetensors`` as ``transformers`` writes them, or an old-style
``pytorch_model.bin``) into a fresh temporary folder, so the student's side needs neither ``transformers`` nor a
network. Where a test checks a statistic (the spread of freshly drawn weights) or a property (an error message, a
tensor's layout), the probe returns the number or the fact and the comparator judges it against the test's
threshold, not against the reference (whose random draws differ, or whose error messages are transformers').
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from autograder.probes import Probe, close, equal

# ---------------------------------------------------------------------------------------------------------------
# comparators that judge the student's value by the test's threshold (the reference's value is not used)


def near(target: float, atol: float):
    """A statistic within ``atol`` of ``target`` (the reference's own draw is as noisy as the student's)."""

    def compare(got, expected):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            return f"got {got!r:.60}, expected a number"
        if abs(got - target) > atol:
            return f"{got:.6g}, expected {target:.6g} within {atol:.2g}"
        return None

    return compare


def below(limit: float):
    """A non-negative error at most ``limit``."""

    def compare(got, expected):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not got <= limit:
            return f"{got!r:.60}, expected at most {limit:g}"
        return None

    return compare


def true():
    """A property that holds (the reference's may not: its error messages are transformers')."""

    def compare(got, expected):
        return None if got is True else f"got {got!r:.60}, expected True"

    return compare


def agree(atol: float, rtol: float):
    """A pair [value, what it should be] computed on the student's side, equal within tolerance."""

    def compare(got, expected):
        try:
            a, b = (float(v) for v in got)
        except (TypeError, ValueError):
            return f"got {got!r:.60}, expected two numbers"
        if not abs(a - b) <= atol + rtol * abs(b):
            return f"{a:.6g}, expected {b:.6g} (atol={atol:g}, rtol={rtol:g})"
        return None

    return compare


def no_new_warnings():
    """The warnings the student's side printed are among the reference's: in the notebook a warning lands on the
    cell's stderr and fails it (a warning of the course's own code would show on both sides)."""

    def compare(got, expected):
        if not isinstance(got, list):
            return f"got {got!r:.60}, expected a list of warnings"
        new = [w for w in got if w not in (expected or [])]
        return f"warned: {new[0]!r:.200}" if new else None

    return compare


def watched(run):
    """``run`` with the warnings a notebook kernel would print recorded as output ``"warnings"`` (Python's default
    filters, as in a kernel: each warning once per place, deprecations left out)."""

    def probe(m):
        with warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            out = run(m)
        if isinstance(out, dict):
            out["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        return out

    probe.__name__ = run.__name__
    return probe


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw(name: str, shape, salt: int) -> torch.Tensor:
    """Weights ~ N(0, 0.1^2), LayerNorm gains ~ N(1, 0.1^2), seeded by the name: logits of a few units."""
    g = _gen(zlib.crc32(name.encode()) * 1000 + salt)
    offset = 1.0 if "ln_" in name and name.endswith("weight") else 0.0
    return torch.randn(tuple(shape), generator=g) * 0.1 + offset


def _with_weights(model: nn.Module, salt: int) -> nn.Module:
    """Every parameter of ``model`` drawn by its name (a tied weight once, under its first name)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(_draw(name, p.shape, salt))
    return model


def _config(m, L, nh, C, V, bs, **kw):
    return m.GPTConfig(block_size=bs, vocab_size=V, n_layer=L, n_head=nh, n_embd=C, **kw)


def _hf_state(config, salt: int, prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    """The tensors of a GPT2LMHeadModel of ``config`` (without lm_head.weight), in GPT-2's Conv1D layout."""
    C, L = config.n_embd, config.n_layer
    shapes = {"wte.weight": (config.vocab_size, C), "wpe.weight": (config.block_size, C)}
    for i in range(L):
        shapes.update({f"h.{i}.{k}": s for k, s in [
            ("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
            ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
            ("ln_2.weight", (C,)), ("ln_2.bias", (C,)), ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))]})
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return {prefix + k: _draw("transformer." + k, s, salt) for k, s in shapes.items()}


def _hf_config_dict(config) -> dict:
    """config.json as transformers.GPT2Config writes it (the keys that matter)."""
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
        "n_positions": config.block_size, "n_ctx": config.block_size, "n_embd": config.n_embd,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "scale_attn_weights": True, "tie_word_embeddings": True,
        "bos_token_id": config.vocab_size - 1, "eos_token_id": config.vocab_size - 1,
    }


def _write_hf_checkpoint(folder: Path, config, state: dict[str, torch.Tensor], old_style: bool = False) -> Path:
    """A checkpoint folder as transformers writes it (model.safetensors), or an old one (pytorch_model.bin)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_hf_config_dict(config)))
    if old_style:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    return folder


@contextmanager
def _folder():
    """A fresh temporary folder (the probe's only place to write), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="probe-gpt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _raises(kind, words, fn) -> bool:
    """Does ``fn()`` raise ``kind`` with every one of ``words`` in its message?"""
    try:
        fn()
    except kind as err:
        return all(word in str(err) for word in words)
    except Exception:  # noqa: BLE001 - another error is not the one asked for
        return False
    return False


def _logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


# ---------------------------------------------------------------------------------------------------------------
# 5a.1 init_gpt2_weights


def _std(t) -> float:
    return float(t.detach().double().std())


def _mean(t) -> float:
    return float(t.detach().double().mean())


def init_visible(m):
    config = _config(m, 8, 4, 64, 100, 16)
    block = m.Block(config)
    out = m.init_gpt2_weights(block, n_layer=8)
    emb = m.init_gpt2_weights(nn.Embedding(500, 64), n_layer=1)
    return {
        "returns_model": out is block,
        "c_attn_std": _std(block.attn.c_attn.weight), "c_attn_mean": _mean(block.attn.c_attn.weight),
        "c_fc_std": _std(block.mlp.c_fc.weight),
        "attn_c_proj_std": _std(block.attn.c_proj.weight), "mlp_c_proj_std": _std(block.mlp.c_proj.weight),
        "biases_zero": bool(torch.all(block.attn.c_attn.bias == 0) and torch.all(block.mlp.c_proj.bias == 0)),
        "layernorms": bool(torch.all(block.ln_1.weight == 1) and torch.all(block.ln_2.bias == 0)),
        "embedding_std": _std(emb.weight),
    }


INIT_VISIBLE = {"returns_model": equal(), "c_attn_std": near(0.02, 0.001), "c_attn_mean": near(0.0, 0.001),
                "c_fc_std": near(0.02, 0.001), "attn_c_proj_std": near(0.005, 0.0005),
                "mlp_c_proj_std": near(0.005, 0.0005), "biases_zero": equal(), "layernorms": equal(),
                "embedding_std": near(0.02, 0.001)}

_DEPTHS = (1, 3, 12, 48)


def init_hidden(m):
    out = {}
    for n_layer in _DEPTHS:
        config = _config(m, n_layer, 4, 96, 16, 8)
        block = m.init_gpt2_weights(m.Block(config), n_layer=n_layer, generator=_gen(n_layer))
        for name in ("attn.c_proj.weight", "mlp.c_proj.weight", "attn.c_attn.weight", "mlp.c_fc.weight"):
            out[f"L{n_layer}/{name}/std"] = _std(block.get_parameter(name))
        out[f"L{n_layer}/biases_zero"] = all(bool(torch.all(p == 0)) for name, p in block.named_parameters()
                                             if name.endswith("bias") and "ln_" not in name)
    # every kind of module, nested, starting far from the expected values
    gen = _gen(50)
    model = nn.ModuleDict(dict(emb=nn.Embedding(300, 48), lin=nn.Linear(48, 200), head=nn.Linear(48, 300, bias=False),
                               ln=m.LayerNorm(48), tln=nn.LayerNorm(48), deep=nn.Sequential(nn.Linear(48, 400))))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3 + 1)
    before = dict(model.named_parameters())
    returned = m.init_gpt2_weights(model, n_layer=6, generator=_gen(1))
    out["returns_model"] = returned is model
    out["in_place"] = all(p is before[n] for n, p in model.named_parameters())
    for name in ("emb.weight", "lin.weight", "head.weight", "deep.0.weight"):
        out[f"{name}/std"] = _std(model.get_parameter(name))
        out[f"{name}/mean"] = _mean(model.get_parameter(name))
    out["linear_biases_zero"] = bool(torch.all(model.lin.bias == 0) and torch.all(model["deep"][0].bias == 0))
    out["layernorms"] = all(bool(torch.all(model[n].weight == 1) and torch.all(model[n].bias == 0))
                            for n in ("ln", "tln"))
    ln = m.LayerNorm(8, bias=False)
    with torch.no_grad():
        ln.weight.fill_(3.0)
    out["layernorm_no_bias"] = bool(torch.all(m.init_gpt2_weights(ln, n_layer=1).weight == 1))
    # the generator makes it reproducible, and it is used
    config = _config(m, 2, 2, 32, 16, 8)
    a = m.init_gpt2_weights(m.Block(config), 2, generator=_gen(7))
    b = m.init_gpt2_weights(m.Block(config), 2, generator=_gen(7))
    c = m.init_gpt2_weights(m.Block(config), 2, generator=_gen(8))
    out["same_generator_same_weights"] = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    out["generator_used"] = not torch.equal(a.attn.c_attn.weight, c.attn.c_attn.weight)
    return out


def _init_hidden_compare():
    compare = {}
    for n_layer in _DEPTHS:
        expected = 0.02 / math.sqrt(2 * n_layer)
        for name in ("attn.c_proj.weight", "mlp.c_proj.weight"):
            compare[f"L{n_layer}/{name}/std"] = near(expected, 0.04 * expected)
        for name in ("attn.c_attn.weight", "mlp.c_fc.weight"):
            compare[f"L{n_layer}/{name}/std"] = near(0.02, 0.0006)
        compare[f"L{n_layer}/biases_zero"] = equal()
    for name in ("emb.weight", "lin.weight", "head.weight", "deep.0.weight"):
        compare[f"{name}/std"] = near(0.02, 0.0008)
        compare[f"{name}/mean"] = near(0.0, 0.0008)
    for name in ("returns_model", "in_place", "linear_biases_zero", "layernorms", "layernorm_no_bias",
                 "same_generator_same_weights", "generator_used"):
        compare[name] = equal()
    return compare


# ---------------------------------------------------------------------------------------------------------------
# 5a.2 GPT


def gpt_visible(m):
    config = _config(m, 2, 2, 32, 50, 16)
    model = m.GPT(config).eval()
    t = model.transformer
    out = {"structure": {
        "transformer_is_moduledict": isinstance(t, nn.ModuleDict), "blocks": len(t.h),
        "blocks_are_Block": all(isinstance(b, m.Block) for b in t.h),
        "wte": list(t.wte.weight.shape), "wpe": list(t.wpe.weight.shape),
        "lm_head_bias_is_None": model.lm_head.bias is None, "tied": model.lm_head.weight is t.wte.weight}}
    idx = torch.tensor([[1, 2, 3, 4, 5], [7, 7, 7, 7, 7]])
    logits, loss = model(idx)
    out["logits_shape"] = list(logits.shape)
    out["loss_is_None"] = loss is None
    out["positions_matter"] = not torch.allclose(logits[1, 0], logits[1, 3])
    idx2 = idx.clone()
    idx2[:, -1] = 0
    out["causal_error"] = float((model(idx2)[0][:, :-1] - logits[:, :-1]).abs().max())
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
    out["logits_with_ln_f_zero"] = float(model(idx)[0].abs().max())
    model = m.GPT(config).eval()
    targets = torch.tensor([[2, 3, 4, 5, 6], [1, 2, 3, 4, -100]])
    logits, loss = model(idx, targets)
    probs = logits.double().softmax(dim=-1)  # the definition: the mean of -log p(target) where there is one
    kept = [(b, t) for b in range(2) for t in range(5) if targets[b, t] != -100]
    definition = -sum(math.log(float(probs[b, t, targets[b, t]])) for b, t in kept) / len(kept)
    out["loss_and_definition"] = [float(loss), definition]
    gen = _gen(16)
    loss = model(torch.randint(0, 50, (8, 16), generator=gen), torch.randint(0, 50, (8, 16), generator=gen))[1]
    out["untrained_loss_minus_ln_V"] = abs(float(loss) - math.log(50))
    return out


GPT_VISIBLE = {"structure": equal(), "logits_shape": equal(), "loss_is_None": equal(), "positions_matter": equal(),
               "causal_error": below(2e-5), "logits_with_ln_f_zero": below(1e-5),
               "loss_and_definition": agree(1e-5, 1e-5), "untrained_loss_minus_ln_V": below(0.1)}

_PARITY = [(1, 1, 8, 11, 8, 8), (2, 2, 16, 50, 16, 9), (3, 4, 32, 97, 32, 32), (2, 6, 48, 300, 20, 13)]


def gpt_parity(m):
    """Logits, loss (with ignored targets) and gradients with the same weights, for several shapes."""
    gen = _gen(51)
    out = {}
    for i, (L, nh, C, V, bs, T) in enumerate(_PARITY):
        model = _with_weights(m.GPT(_config(m, L, nh, C, V, bs)), salt=51 + i).eval()
        idx = torch.randint(0, V, (3, T), generator=gen)
        out[f"c{i}/logits"] = _logits(model, idx)
        labels = idx.clone()
        labels[0, 1:4] = -100
        with torch.enable_grad():
            _, loss = model(idx[:, :-1], labels[:, 1:])
            loss.backward()
        out[f"c{i}/loss"] = loss.detach()
        for name, p in model.named_parameters():
            out[f"c{i}/grad/{name}"] = p.grad
        out[f"c{i}/num_params"] = [model.num_params(), model.num_params(non_embedding=True)]
    return out


def gpt_hidden(m):
    gen = _gen(52)
    out = {}
    # weight tying: one tensor, whose gradient is the sum of both uses
    model = m.GPT(_config(m, 1, 2, 16, 20, 8))
    out["tied_one_tensor"] = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    out["parameter_count"] = [len([n for n, _ in model.named_parameters()]), len(list(model.parameters()))]
    idx = torch.randint(0, 20, (2, 8), generator=gen)
    with torch.enable_grad():
        _, loss = model(idx, torch.randint(0, 20, (2, 8), generator=gen))
        loss.backward()
    out["tied_one_gradient"] = model.lm_head.weight.grad is model.transformer.wte.weight.grad
    with torch.no_grad():
        model.transformer.wte.weight[3] += 1.0
    out["tied_change"] = bool(torch.equal(model.lm_head.weight[3], model.transformer.wte.weight[3]))
    # the parameter count (the test counts GPT-2 small's on the meta device, whose first use imports torch._dynamo
    # for 15 s; the count of a smaller model of every kind of part checks the same formula)
    model = m.GPT(_config(m, 2, 4, 48, 501, 40))
    out["params"] = [model.num_params(), model.num_params(non_embedding=True)]
    # initialised with init_gpt2_weights
    config = _config(m, 6, 4, 64, 2000, 64)
    model = m.GPT(config)
    out["init/wte_std"] = _std(model.transformer.wte.weight)
    out["init/wpe_std"] = _std(model.transformer.wpe.weight)
    out["init/c_proj_std"] = _std(model.transformer.h[0].attn.c_proj.weight)
    # dropout on the embeddings, as configured
    model = m.GPT(replace(config, dropout=0.5))
    drop = model.transformer.drop
    out["dropout"] = [isinstance(drop, nn.Dropout), float(getattr(drop, "p", -1.0))]
    idx = torch.randint(0, 2000, (2, 16), generator=gen)
    model.train()
    out["train_passes_differ"] = not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    out["eval_passes_equal"] = bool(torch.equal(model(idx)[0], model(idx)[0]))
    # bias=False; T = block_size, T = 1, a batch of one
    model = _with_weights(m.GPT(_config(m, 2, 2, 16, 30, 8, bias=False)), salt=53).eval()
    out["no_bias/ln_f_bias_is_None"] = model.transformer.ln_f.bias is None
    for shape in [(2, 8), (3, 1), (1, 5)]:
        out[f"no_bias/logits{shape[0]}x{shape[1]}"] = _logits(model, torch.randint(0, 30, shape, generator=gen))
    # the SDPA switch reaches every attention layer, and both paths agree
    model = _with_weights(m.GPT(_config(m, 3, 2, 16, 30, 8)), salt=54).eval()
    idx = torch.randint(0, 30, (2, 8), generator=gen)
    fused = _logits(model.use_torch_sdpa(True), idx)
    out["sdpa_switch"] = all(b.attn.use_torch_sdpa is False for b in model.use_torch_sdpa(False).transformer.h)
    out["sdpa_error"] = float((_logits(model, idx) - fused).abs().max())
    # clear errors: too long, token ids out of range
    for label, bad, word in [("too_long", torch.zeros(1, 9, dtype=torch.long), "block_size"),
                             ("too_large", torch.tensor([[1, 30]]), "vocab"),
                             ("negative", torch.tensor([[-1, 2]]), "range")]:
        out[f"error/{label}"] = _raises(ValueError, [word], lambda bad=bad: model(bad))
    return out


GPT_HIDDEN = {"tied_one_tensor": equal(), "parameter_count": equal(), "tied_one_gradient": equal(),
              "tied_change": equal(), "params": equal(), "init/wte_std": near(0.02, 0.001),
              "init/wpe_std": near(0.02, 0.002), "init/c_proj_std": near(0.02 / math.sqrt(12), 0.0004),
              "dropout": equal(), "train_passes_differ": equal(), "eval_passes_equal": equal(),
              "no_bias/ln_f_bias_is_None": equal(), "sdpa_switch": equal(), "sdpa_error": below(1e-5),
              "error/too_long": true(), "error/too_large": true(), "error/negative": true()}


# ---------------------------------------------------------------------------------------------------------------
# 5a.3 from_gpt2_state_dict


def from_visible(m):
    config = _config(m, 2, 2, 8, 50, 16)
    hf_state = _hf_state(config, salt=31)
    hf_state["lm_head.weight"] = hf_state["transformer.wte.weight"]  # what GPT2LMHeadModel.state_dict() holds
    ours = m.from_gpt2_state_dict(hf_state)
    out = {"names": sorted(ours)}
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_proj.weight", "transformer.wte.weight"):
        out[f"converted/{name}"] = ours[name]
    old = {"h.0.attn.bias": torch.ones(1, 1, 16, 16), "h.0.attn.masked_bias": torch.tensor(-1e4),
           "h.0.attn.c_attn.bias": torch.zeros(24), "wpe.weight": torch.zeros(16, 8)}
    out["old_style_names"] = sorted(m.from_gpt2_state_dict(old))
    with _folder() as folder:
        del hf_state["lm_head.weight"]  # transformers leaves the tied weight out of model.safetensors
        model = m.GPT.from_pretrained(_write_hf_checkpoint(folder / "ckpt", config, hf_state)).eval()
    out["logits"] = _logits(model, torch.randint(0, 50, (2, 16), generator=_gen(31)))
    return out


FROM_VISIBLE = {"names": equal(), "old_style_names": equal(), "logits": close(1e-5, 0)} | {
    f"converted/{n}": equal() for n in ("transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_proj.weight",
                                        "transformer.wte.weight")}

_SHAPES = [(1, 1, 8, 11, 8), (2, 4, 32, 97, 24), (3, 2, 24, 300, 16), (2, 6, 48, 64, 40)]


def from_hidden(m):
    gen = _gen(53)
    out = {}
    with _folder() as folder:
        # a checkpoint as transformers writes it -> GPT.from_pretrained: the same logits, for several shapes
        for i, (L, nh, C, V, bs) in enumerate(_SHAPES):
            config = _config(m, L, nh, C, V, bs)
            model = m.GPT.from_pretrained(_write_hf_checkpoint(folder / f"c{i}", config, _hf_state(config, 53 + i)))
            model.eval()
            out[f"c{i}/config"] = asdict(model.config)
            out[f"c{i}/logits"] = _logits(model, torch.randint(0, V, (2, bs), generator=gen))
            out[f"c{i}/tied"] = model.lm_head.weight is model.transformer.wte.weight
        # an old-style checkpoint: pytorch_model.bin, names without the prefix, mask buffers, lm_head stored too
        config = _config(m, 2, 2, 16, 40, 12)
        base = _hf_state(config, 60, prefix="")
        state = dict(base)
        for i in range(2):
            state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 12, 12).tril()
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        state["lm_head.weight"] = state["wte.weight"].clone()
        model = m.GPT.from_pretrained(_write_hf_checkpoint(folder / "old", config, state, old_style=True),
                                      dropout=0.0).eval()
        out["old/logits"] = _logits(model, torch.randint(0, 40, (3, 12), generator=gen))
        # the conversion itself, on names with and without the prefix
        converted = m.from_gpt2_state_dict(base)
        prefixed = m.from_gpt2_state_dict({"transformer." + k: v for k, v in base.items()})
        out["names"] = sorted(converted)
        out["names_from_prefixed"] = sorted(prefixed)
        for name, tensor in converted.items():
            out[f"converted/{name}"] = tensor
        # clear errors (the given code's, with the student's conversion)
        config = _config(m, 1, 2, 16, 20, 8)
        hf = _hf_state(config, 61)
        bad = folder / "bad"
        bad.mkdir()
        out["error/no_config"] = _raises(FileNotFoundError, ["config.json"], lambda: m.GPT.from_pretrained(bad))
        _write_hf_checkpoint(bad, config, hf)
        settings = json.loads((bad / "config.json").read_text())
        for label, change, kind, words in [
                ("shape", {"n_embd": 32}, ValueError, ["shape", "(20, 32)"]),
                ("activation", {"activation_function": "relu"}, ValueError, ["activation_function", "relu"]),
                ("missing", {"n_layer": 2}, ValueError, ["missing", "transformer.h.1."])]:
            (bad / "config.json").write_text(json.dumps({**settings, **change}))
            out[f"error/{label}"] = _raises(kind, words, lambda: m.GPT.from_pretrained(bad))
        (bad / "model.safetensors").unlink()
        out["error/no_weights"] = _raises(FileNotFoundError, ["model.safetensors"], lambda: m.GPT.from_pretrained(bad))
        # a name: only the local cache, never a download
        cache = folder / "cache"
        cache.mkdir()
        out["error/not_in_cache"] = _raises(FileNotFoundError, ["llmcourse-test/no-such-model", "cache"],
                                            lambda: m.GPT.from_pretrained("llmcourse-test/no-such-model",
                                                                          cache_dir=cache))
        snapshot = cache / "models--llmcourse-test--tiny" / "snapshots" / "0123abcd"
        _write_hf_checkpoint(snapshot, config, hf)
        (cache / "models--llmcourse-test--tiny" / "refs").mkdir()
        (cache / "models--llmcourse-test--tiny" / "refs" / "main").write_text("0123abcd")
        model = m.GPT.from_pretrained("llmcourse-test/tiny", cache_dir=cache).eval()
        out["cache/logits"] = _logits(model, torch.randint(0, 20, (1, 8), generator=gen))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5a.4 to_gpt2_state_dict


def _saved(folder: Path) -> dict:
    """What save_pretrained wrote: config.json's settings, model.safetensors' metadata and tensors."""
    from safetensors import safe_open

    settings = json.loads((folder / "config.json").read_text())
    out = {"config": {k: settings.get(k) for k in ("model_type", "architectures", "vocab_size", "n_positions",
                                                     "n_embd", "n_layer", "n_head")}}
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        out["metadata"] = f.metadata()
        for name in f.keys():  # noqa: SIM118 - safe_open has keys(), no iteration
            out[f"file/{name}"] = f.get_tensor(name)
    return out


def _plain(state) -> bool:
    return all(t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad for t in state.values())


def to_visible(m):
    config = _config(m, 2, 2, 8, 50, 16)
    model = _with_weights(m.GPT(config), salt=41).eval()
    with torch.enable_grad():  # as in the notebook: a forgotten detach() shows
        state = m.to_gpt2_state_dict(model)
    out = {"names": sorted(state), "c_attn_shape": list(state["transformer.h.0.attn.c_attn.weight"].shape),
           "c_fc_shape": list(state["transformer.h.0.mlp.c_fc.weight"].shape), "plain": _plain(state)}
    back = m.from_gpt2_state_dict(state)
    out["round_trip_exact"] = all(torch.equal(back[name], p.detach()) for name, p in model.named_parameters())
    with _folder() as folder:
        model.save_pretrained(folder / "ckpt")
        out.update(_saved(folder / "ckpt"))
    out["logits"] = _logits(model, torch.randint(0, 50, (2, 16), generator=_gen(41)))
    return out


def to_hidden(m):
    gen = _gen(54)
    out = {}
    with _folder() as folder:
        for i, (L, nh, C, V, bs) in enumerate(_SHAPES):
            model = _with_weights(m.GPT(_config(m, L, nh, C, V, bs)), salt=54 + i).eval()
            idx = torch.randint(0, V, (2, bs), generator=gen)
            model.save_pretrained(folder / f"c{i}" / "ckpt")
            out.update({f"c{i}/{k}": v for k, v in _saved(folder / f"c{i}" / "ckpt").items()})
            again = m.GPT.from_pretrained(folder / f"c{i}" / "ckpt").eval()
            out[f"c{i}/logits"] = _logits(model, idx)
            out[f"c{i}/reloaded_exact"] = bool(torch.equal(_logits(again, idx), out[f"c{i}/logits"]))
            out[f"c{i}/num_params"] = model.num_params()
            with torch.enable_grad():
                state = m.to_gpt2_state_dict(model)
            out.update({f"c{i}/state/{k}": v for k, v in state.items()})
        # from a model that has gradients
        model = _with_weights(m.GPT(_config(m, 2, 2, 16, 20, 8)), salt=59)
        with torch.enable_grad():
            _, loss = model(torch.randint(0, 20, (2, 8), generator=gen), torch.randint(0, 20, (2, 8), generator=gen))
            loss.backward()
            state = m.to_gpt2_state_dict(model)
        out["grad/plain"] = _plain(state)
        out["grad/no_lm_head"] = "lm_head.weight" not in state and len(state) == 4 + 2 * 12
        out["grad/names"] = sorted(state)
        out.update({f"grad/state/{k}": v for k, v in state.items()})
        # a bias-free model has no GPT-2 form
        model = m.GPT(_config(m, 1, 2, 16, 20, 8, bias=False))
        out["error/no_bias"] = _raises(ValueError, ["bias"], lambda: model.save_pretrained(folder / "no_bias"))
    return out


class Rules(dict):
    """A comparator per output name: the pattern that is the name, else the first that is its ending
    (``"/logits"``) or, ending in "/", its beginning (``"error/"``); else ``default``. ``"warnings"`` gets
    :func:`no_new_warnings`."""

    def __init__(self, default, patterns: dict):
        super().__init__({"warnings": no_new_warnings(), **patterns})
        self.default = default

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        for pattern, comparator in self.items():
            if name.endswith(pattern) or (pattern.endswith("/") and name.startswith(pattern)):
                return comparator
        return self.default


PROBES = [
    Probe("test_init", watched(init_visible), Rules(close(), INIT_VISIBLE)),
    Probe("test_init_hidden", watched(init_hidden), Rules(close(), _init_hidden_compare())),
    Probe("test_gpt", watched(gpt_visible), Rules(close(), GPT_VISIBLE)),
    Probe("test_gpt_hidden", watched(gpt_parity), Rules(close(1e-5, 1e-4), {"/logits": close(1e-5, 0),
                                                                            "/loss": close(1e-5, 1e-5),
                                                                            "/num_params": equal()}), name="parity"),
    Probe("test_gpt_hidden", watched(gpt_hidden), Rules(close(1e-5, 0), GPT_HIDDEN), name="properties"),
    Probe("test_from_gpt2", watched(from_visible), Rules(close(), FROM_VISIBLE)),
    Probe("test_from_gpt2_hidden", watched(from_hidden), Rules(equal(), {"/logits": close(1e-5, 0),
                                                                          "error/": true()})),
    Probe("test_to_gpt2", watched(to_visible), Rules(equal(), {"logits": close(1e-5, 0)})),
    Probe("test_to_gpt2_hidden", watched(to_hidden), Rules(equal(), {"/logits": close(1e-5, 0), "error/": true()})),
]
