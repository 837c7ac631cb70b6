"""Outside checks of chapter 5b (training): batches, the optimizer's groups, the schedule, one step, a checkpoint,
and the built-ins rewritten by hand (the cross-entropy, the gradient clipping, AdamW, two
backward passes).

The model is chapter 5a's GPT, which is its public fallback on both sides (the grader resolves earlier chapters to
their fallbacks), built under fixed seeds, so both sides start from the same weights. Where a test draws its
batches with the student's ``get_batch`` only for convenience (``train_step``, the checkpoint), the probe draws
them itself, so a mistake in ``get_batch`` costs ``get_batch``'s cells only, as it does in the notebook. Where a
test checks a property of a run (the loss falls, a resumed run equals the uninterrupted one, the norm exceeds the
threshold) the probe returns the numbers and the comparator applies the test's threshold. Every probe records the
warnings the student's code prints: in the notebook they land on the cell's stderr, which fails it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from autograder.probes import Probe, close, equal, same_losses
from autograder.probes.gpt import Rules, below, near, watched


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gpt(**overrides):
    from llmcourse.chapters.gpt import GPT, preset

    return GPT(preset("course-tiny", **overrides))


def _batch(data: torch.Tensor, T: int, B: int, gen: torch.Generator):
    """The grader's own batches: B random windows of T tokens and their next tokens."""
    starts = torch.randint(len(data) - T, (B,), generator=gen)
    positions = starts[:, None] + torch.arange(T)
    return data[positions], data[positions + 1]


def _lr(step: int, max_lr: float, warmup: int, total: int, min_lr: float) -> float:
    """The course's schedule, so that a run of the grader's does not depend on the student's lr_at."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup))) * (max_lr - min_lr)


def _without_key_bias(name: str, p: torch.Tensor) -> torch.Tensor:
    """The parameter, but of attention's bias only the query and value thirds. The key bias adds the same number to
    every score of a row, which the softmax ignores: its gradient is 0 up to rounding, and Adam turns that rounding
    into steps of size lr, so its values depend on the order of the floating-point sums (the thread count), not on
    the code under test. (The notebook's test compares two runs in one process, where the rounding is the same.)"""
    if not name.endswith("attn.c_attn.bias"):
        return p
    C = p.shape[0] // 3
    return torch.cat([p[:C], p[2 * C:]])


def _cleared(model: nn.Module) -> bool:
    return all(p.grad is None or not p.grad.any() for p in model.parameters())


def falls_by(amount: float, last: int = 1):
    """[loss, loss, ...] of a run: the mean of the last ``last`` losses is below the first minus ``amount`` (the
    test's threshold; the reference's run is not used, a correct run of other seeds falls as far)."""

    def compare(got, expected):
        try:
            losses = [float(v) for v in got]
        except (TypeError, ValueError):
            return f"got {got!r:.60}, expected a list of losses"
        if len(losses) < last + 1 or not sum(losses[-last:]) / last < losses[0] - amount:
            return f"the loss should fall by more than {amount:g}: {losses[0]:.4f} -> {losses[-1]:.4f}"
        return None

    return compare


def above(limit: float):
    def compare(got, expected):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not got > limit:
            return f"{got!r:.60}, expected more than {limit:g}"
        return None

    return compare


# ---------------------------------------------------------------------------------------------------------------
# 5b.1 get_batch


def batch_visible(m):
    data = torch.arange(100, 200)
    x, y = m.get_batch(data, block_size=8, batch_size=4, generator=_gen(0))
    out = {"shapes": [list(x.shape), list(y.shape)], "dtype": str(x.dtype),
           "consecutive": bool(torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 7, dtype=torch.long))),
           "shifted": bool(torch.equal(y, x + 1))}
    x2, y2 = m.get_batch(data, block_size=8, batch_size=4, generator=_gen(0))
    out["reproducible"] = bool(torch.equal(x, x2) and torch.equal(y, y2))
    x, y = m.get_batch(data[:9], block_size=8, batch_size=2)
    out["only_window"] = bool(torch.equal(x[0], data[:8]) and torch.equal(y[0], data[1:9]))
    return out


def batch_hidden(m):
    gen = _gen(51)
    data = torch.randint(0, 50, (300,), generator=gen)
    x, y = m.get_batch(data, 16, 32, generator=gen)
    out = {"shapes": [list(x.shape), list(y.shape)]}
    windows_x, windows_y = data.unfold(0, 16, 1)[:-1], data[1:].unfold(0, 16, 1)
    out["rows_are_windows"] = all(bool(((windows_x == x[b]).all(dim=1) & (windows_y == y[b]).all(dim=1)).any())
                                  for b in range(32))
    # the starts cover 0 .. N-T-1, uniformly, and never run past the end
    data = torch.arange(1000, 1011)
    x, y = m.get_batch(data, 8, 600, generator=_gen(3))
    counts = torch.bincount(x[:, 0] - 1000, minlength=3)
    out["start_values"] = len(counts)
    out["fewest_starts"] = int(counts.min())
    out["shifted"] = bool(torch.equal(y, x + 1))
    # randomness from the generator only
    state = torch.get_rng_state()
    a, _ = m.get_batch(torch.arange(500), 4, 8, generator=_gen(7))
    out["global_rng_untouched"] = bool(torch.equal(state, torch.get_rng_state()))
    b, _ = m.get_batch(torch.arange(500), 4, 8, generator=_gen(8))
    out["seeds_differ"] = not torch.equal(a, b)
    x, y = m.get_batch(torch.arange(50), 4, 2, generator=gen, device="meta")
    out["device"] = [x.device.type, y.device.type]
    try:
        m.get_batch(torch.arange(8), 8, 2, generator=gen)
        out["too_short_raises"] = False
    except Exception:  # noqa: BLE001 - any error is what the test asks for
        out["too_short_raises"] = True
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5b.2 configure_optimizer


def optimizer_visible(m):
    torch.manual_seed(0)
    tiny = _gpt(vocab_size=64)
    opt = m.configure_optimizer(tiny, weight_decay=0.1, lr=1e-3)
    out = {"is_AdamW": isinstance(opt, torch.optim.AdamW), "groups": len(opt.param_groups)}
    decay, no_decay = opt.param_groups
    out["weight_decay"] = [decay["weight_decay"], no_decay["weight_decay"]]
    out["decayed_are_matrices"] = all(p.dim() >= 2 for p in decay["params"])
    out["others_are_vectors"] = all(p.dim() < 2 for p in no_decay["params"])
    out["numbers"] = [sum(p.numel() for g in opt.param_groups for p in g["params"]), tiny.num_params()]
    out["lr_betas"] = [opt.param_groups[0]["lr"], list(opt.param_groups[0]["betas"])]
    return out


def optimizer_hidden(m):
    torch.manual_seed(0)
    tiny = _gpt(vocab_size=64)
    opt = m.configure_optimizer(tiny, weight_decay=0.05, lr=3e-4, betas=(0.8, 0.99))
    names = {id(p): n for n, p in tiny.named_parameters()}
    decay_ids = [id(p) for p in opt.param_groups[0]["params"]]
    other_ids = [id(p) for p in opt.param_groups[1]["params"]]
    out = {"no_duplicates": len(decay_ids) == len(set(decay_ids)) and len(other_ids) == len(set(other_ids)),
           "each_once": set(decay_ids) | set(other_ids) == set(names) and not set(decay_ids) & set(other_ids),
           "decayed": sorted(names.get(i, "?") for i in decay_ids),
           "not_decayed": sorted(names.get(i, "?") for i in other_ids),
           "settings": [[g["weight_decay"], g["lr"], list(g["betas"])] for g in opt.param_groups]}
    # any module: frozen parameters are left out, a 4-D convolution weight is decayed
    torch.manual_seed(1)
    net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv2d(1, 2, 3), nn.Linear(4, 2))
    net[4].weight.requires_grad_(False)
    net[4].bias.requires_grad_(False)
    opt = m.configure_optimizer(net, 0.1, 1e-3)
    names = {id(p): n for n, p in net.named_parameters()}
    out["module/groups"] = [sorted(names[id(p)] for p in g["params"]) for g in opt.param_groups]
    # the step itself: with zero gradients, AdamW shrinks decayed weights by lr * wd and leaves the rest alone
    for p in net.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    out["module/decayed_after_step"] = net[1].weight.detach().clone()
    out["module/gain_after_step"] = net[2].weight.detach().clone()
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5b.3 lr_at

_VISIBLE_STEPS = (0, 4, 9, 10, 55, 100, 150)
_SCHEDULES = [(6e-4, 20, 200, 6e-5), (1e-3, 1, 50, 0.0), (3e-3, 0, 40, 1e-4), (1.0, 7, 31, 0.25)]


def lr_visible(m):
    return {"rates": [float(m.lr_at(s, 1.0, 10, 100, 0.1)) for s in _VISIBLE_STEPS]}


def lr_hidden(m):
    out = {}
    for i, (max_lr, warmup, total, min_lr) in enumerate(_SCHEDULES):
        rates = [float(m.lr_at(s, max_lr, warmup, total, min_lr)) for s in range(total + 1)]
        out[f"s{i}/rates"] = torch.tensor(rates, dtype=torch.float64)
        out[f"s{i}/shape"] = [all(a <= b + 1e-15 for a, b in zip(rates[:warmup], rates[1:warmup + 1])),
                              all(a >= b - 1e-15 for a, b in zip(rates[warmup:], rates[warmup + 1:]))]
        out[f"s{i}/after_total"] = [float(m.lr_at(s, max_lr, warmup, total, min_lr))
                                    for s in (total, total + 1, total + 17, 10 * total)]
    out["floats"] = [isinstance(m.lr_at(s, 1.0, 10, 100, 0.1), float) for s in (3, 30)]
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5b.4 train_step


def step_visible(m):
    torch.manual_seed(0)
    tiny = _gpt(vocab_size=64)
    opt = m.configure_optimizer(tiny, weight_decay=0.1, lr=1.0)
    counting = torch.arange(2000) % 64  # each token is the last one + 1
    gen = _gen(0)
    losses = []
    with torch.enable_grad():
        for _ in range(15):
            loss, norm = m.train_step(tiny, opt, *_batch(counting, 16, 8, gen), lr=3e-3, grad_clip=1.0)
            losses.append(loss)
    return {"floats": isinstance(loss, float) and isinstance(norm, float), "losses": [float(v) for v in losses],
            "lr_set": all(g["lr"] == 3e-3 for g in opt.param_groups), "cleared": _cleared(tiny)}


_STEPS = [(1e-3, 0.5), (2e-3, 0.05), (5e-4, float("inf")), (1e-3, 0.3)]


def step_hidden(m):
    out = {}
    torch.manual_seed(5)
    model = _gpt(vocab_size=64, n_layer=1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.1)
    gen = _gen(6)
    with torch.enable_grad():
        for step, (lr, clip) in enumerate(_STEPS):
            x, y = _batch(torch.randint(0, 64, (500,), generator=gen), 16, 4, gen)
            out[f"step{step}/loss_norm"] = [float(v) for v in m.train_step(model, opt, x, y, lr=lr, grad_clip=clip)]
            for name, p in model.named_parameters():
                out[f"step{step}/{name}"] = _without_key_bias(name, p.detach().clone())
        # clipping bounds the update: with plain SGD at lr 1 the step is minus the clipped gradient
        sgd = torch.optim.SGD(model.parameters(), lr=1.0)
        before = [p.detach().clone() for p in model.parameters()]
        _, norm = m.train_step(model, sgd, x, y, lr=1.0, grad_clip=0.01)
        out["sgd/norm_before_clipping"] = float(norm)
        out["sgd/step_length"] = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum()
                                                      for p, b in zip(model.parameters(), before))))
        out["sgd/cleared"] = _cleared(model)
        # a real run learns, and nothing trains on the validation data
        torch.manual_seed(7)
        net = _gpt(vocab_size=64)
        seen = []
        hook = net.register_forward_pre_hook(lambda mod, args: seen.append((torch.is_grad_enabled(),
                                                                           int(args[0].max()))))
        train_part, val_part = torch.arange(3000) % 32, 32 + torch.arange(600) % 32
        opt = m.configure_optimizer(net, 0.1, 1e-3)
        gen = _gen(8)
        losses = []
        for step in range(25):
            x, y = _batch(train_part, 16, 8, gen)
            losses.append(float(m.train_step(net, opt, x, y, lr=_lr(step, 3e-3, 5, 25, 3e-4), grad_clip=1.0)[0]))
            if step % 10 == 0:
                m.estimate_loss(net, val_part, 16, batch_size=8)
        hook.remove()
    out["run/losses"] = losses
    out["run/no_validation_in_training"] = all(top < 32 for grad, top in seen if grad)
    out["run/estimate_loss_without_gradients"] = any(not grad for grad, _ in seen) and net.training
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5b.5 save_checkpoint, load_checkpoint


def checkpoint_visible(m):
    folder = Path(tempfile.mkdtemp(prefix="probe-training-"))
    try:
        torch.manual_seed(0)
        tiny = _gpt(vocab_size=64)
        opt = m.configure_optimizer(tiny, 0.1, 1e-3)
        gen = _gen(0)
        counting = torch.arange(2000) % 64
        with torch.enable_grad():
            for _ in range(3):
                m.train_step(tiny, opt, *_batch(counting, 16, 4, gen), lr=1e-3)
        m.save_checkpoint(folder, tiny, opt, 3, gen)
        out = {"files": [(folder / n).is_file() for n in ("config.json", "model.safetensors", "training_state.pt")]}
        other = _gpt(vocab_size=64)
        other_opt = m.configure_optimizer(other, 0.1, 1e-3)
        other_gen = _gen(123)
        out["step"] = m.load_checkpoint(folder, other, other_opt, other_gen)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out["weights"] = all(bool(torch.equal(p, q)) for p, q in zip(tiny.parameters(), other.parameters()))
    out["generator"] = bool(torch.equal(gen.get_state(), other_gen.get_state()))
    out["optimizer_steps"] = float(other_opt.state_dict()["state"][0]["step"])
    return out


def checkpoint_hidden(m):
    data = torch.randint(0, 64, (2000,), generator=_gen(9)) // 2 * 2  # some structure

    def run(model, opt, gen, first, last):
        return [float(m.train_step(model, opt, *_batch(data, 16, 4, gen), lr=_lr(step, 2e-3, 2, last, 1e-4),
                                   grad_clip=1.0)[0]) for step in range(first, last)]

    folder = Path(tempfile.mkdtemp(prefix="probe-training-"))
    try:
        with torch.enable_grad():
            torch.manual_seed(10)
            straight = _gpt(vocab_size=64, dropout=0.1)  # dropout: the global RNG matters too
            opt = m.configure_optimizer(straight, 0.1, 2e-3)
            gen = _gen(11)
            run(straight, opt, gen, 0, 4)
            m.save_checkpoint(folder, straight, opt, 4, gen)
            expected = run(straight, opt, gen, 4, 8)
            torch.manual_seed(99)  # whatever happened in between must not matter
            resumed = _gpt(vocab_size=64, dropout=0.1)
            opt2 = m.configure_optimizer(resumed, 0.1, 2e-3)
            gen2 = _gen(12345)
            step = m.load_checkpoint(folder, resumed, opt2, gen2)
            got = run(resumed, opt2, gen2, step, 8) if step == 4 else []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"step": step, "losses_resumed_vs_straight": [got, expected],
            "weights_error": max(float((p - q).abs().max()) for p, q in zip(resumed.parameters(),
                                                                            straight.parameters()))}


def same_run(atol: float):
    """[losses after resuming, losses without stopping], from the student's own code: equal within ``atol``."""
    return same_losses(atol, "losses after resuming", "without stopping")


# ---------------------------------------------------------------------------------------------------------------
# 5b.6 cross_entropy (PyTorch's unavailable on the student's side: forbid)


def ce_visible(m):
    gen = _gen(0)
    logits = torch.randn(6, 5, generator=gen)
    targets = torch.tensor([0, 4, 2, -100, 1, -100])
    big = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4 - 2.0]])
    return {"uniform": m.cross_entropy(torch.zeros(3, 8), torch.tensor([0, 5, 7])),
            "ignored": m.cross_entropy(logits, targets), "large": m.cross_entropy(big, torch.tensor([0, 2]))}


def _ce_cases():
    gen = _gen(56)
    return {
        "f32": (torch.randn(8, 11, generator=gen) * 3, torch.randint(0, 11, (8,), generator=gen), {}),
        "3d_ignored": (torch.randn(2, 5, 7, generator=gen),
                       torch.randint(0, 7, (2, 5), generator=gen).index_fill(1, torch.tensor([0, 3]), -100), {}),
        "f64": (torch.randn(6, 9, generator=gen, dtype=torch.float64) * 4, torch.randint(0, 9, (6,), generator=gen),
                {}),
        "one_left": (torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.tensor([-100, -100, 2, -100, -100]),
                     {}),
        "ignore3": (torch.randn(7, 6, generator=gen, dtype=torch.float64), torch.tensor([3, 1, 3, 0, 5, 3, 2]),
                    {"ignore_index": 3}),
        "large": (torch.tensor([[1e4, 0.0, -1e4, 3.0], [-1e4, -1e4 + 1, -1e4 + 5, -1e4], [5e3, 1e4, 1e4, 0.0]]),
                  torch.tensor([0, 1, 2]), {}),
        "large64": (torch.tensor([[1e4, 1e4 - 1, 0.0], [-1e4, 0.0, 2.0]], dtype=torch.float64), torch.tensor([1, 0]),
                    {}),
    }


def ce_hidden(m):
    out = {}
    with torch.enable_grad():
        for label, (logits, targets, kwargs) in _ce_cases().items():
            logits = logits.detach().clone().requires_grad_()
            loss = m.cross_entropy(logits, targets, **kwargs)
            loss.backward()
            out[f"{label}/loss"] = loss.detach()
            out[f"{label}/grad"] = logits.grad
        z = torch.randn(4, 5, generator=_gen(57), dtype=torch.float64)
        x0 = z.clone()
        leaf = z.clone().requires_grad_()
        m.cross_entropy(leaf, torch.tensor([1, -100, 4, 0])).backward()
        out["onehot/grad"] = leaf.grad
        m.cross_entropy(z, torch.tensor([1, -100, 4, 0]))
    out["input_unchanged"] = bool(torch.equal(z, x0))
    try:
        m.cross_entropy(torch.randn(4, 5), torch.tensor([1, 2, 3]))
        out["mismatch_raises"] = False
    except (ValueError, TypeError):
        out["mismatch_raises"] = True
    return out


def _ce_rules():
    tight, loose = close(1e-12, 1e-12), close(1e-5, 1e-5)
    rules = {f"{label}/{what}": tight if "64" in label or label in ("one_left", "ignore3") else loose
             for label in _ce_cases() for what in ("loss", "grad")}
    rules["large/loss"] = rules["large/grad"] = close(1e-4, 1e-4)  # float32 holds numbers near 1e4 to about 1e-3
    return rules | {"onehot/grad": tight, "input_unchanged": equal(), "mismatch_raises": equal()}


# ---------------------------------------------------------------------------------------------------------------
# 5b.7 clip_grad_norm_ (PyTorch's unavailable on the student's side: forbid)


def clip_visible(m):
    out = {}
    for max_norm in (1.0, 10.0):
        a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, 2, requires_grad=True)
        a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([[0.0, 4.0]])
        out[f"{max_norm}/norm"] = m.clip_grad_norm_([a, b], max_norm)
        out[f"{max_norm}/a"], out[f"{max_norm}/b"] = a.grad, b.grad
    return out


def clip_hidden(m):
    import copy

    out = {}
    gen = _gen(57)
    with torch.enable_grad():
        for dtype in (torch.float32, torch.float64):
            torch.manual_seed(57)
            net = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3)).to(dtype)
            net[1].weight.requires_grad_(False)
            net(torch.randn(4, 6, generator=gen, dtype=dtype) * 3).pow(2).sum().backward()
            for max_norm in (0.01, 1.0, 1e6, float("inf"), 0.0):
                twin = copy.deepcopy(net)  # deepcopy copies the weights, not their .grad
                for p, q in zip(twin.parameters(), net.parameters()):
                    p.grad = None if q.grad is None else q.grad.clone()
                label = f"{str(dtype)[6:]}/{max_norm}"
                out[f"{label}/norm"] = m.clip_grad_norm_((p for p in twin.parameters()), max_norm)
                out[f"{label}/has_grad"] = [p.grad is not None for p in twin.parameters()]
                for i, p in enumerate(twin.parameters()):
                    if p.grad is not None:
                        out[f"{label}/grad{i}"] = p.grad
        net = nn.Linear(4, 4)
        net(torch.randn(3, 4, generator=gen)).sum().mul(100).backward()
    before = torch.cat([p.grad.flatten() for p in net.parameters()])
    m.clip_grad_norm_(net.parameters(), 0.5)
    after = torch.cat([p.grad.flatten() for p in net.parameters()])
    out["after/norm"] = after.norm()
    out["after/direction_error"] = float((after / after.norm() - before / before.norm()).abs().max())
    w = torch.ones(3, requires_grad=True)
    w.grad = torch.tensor([0.0, 3.0, 4.0])
    out["one/norm"] = m.clip_grad_norm_(w, 1.0)
    out["one/grad"] = w.grad
    out["none/norm"] = m.clip_grad_norm_([torch.zeros(2, requires_grad=True)], 1.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5b.8 AdamW (PyTorch's Adam/AdamW steps unavailable on the student's side: forbid)


def adamw_visible(m):
    gen = _gen(0)
    start = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    gradients = [torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(5)]
    w = nn.Parameter(start.clone())
    opt = m.AdamW([w], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    for g in gradients:
        w.grad = g.clone()
        opt.step()
        opt.zero_grad()
    first = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    first.grad = torch.tensor([1e-3, -2.0, 50.0], dtype=torch.float64)
    m.AdamW([first], lr=0.1, weight_decay=0.0).step()
    return {"five_steps": w.detach(), "first_step": first.detach()}


def adamw_hidden(m):
    out = {}
    for dtype, steps in ((torch.float64, 50), (torch.float32, 20)):
        g = _gen(58)
        params = [nn.Parameter(torch.randn(*shape, generator=g, dtype=dtype))
                  for shape in ((5, 4), (4,), (3, 2, 2), (6,))]
        opt = m.AdamW([{"params": params[:2], "weight_decay": 0.1},
                       {"params": [params[2]], "weight_decay": 0.0, "lr": 3e-2, "betas": (0.8, 0.99)},
                       {"params": [params[3]], "eps": 1e-3, "weight_decay": 0.5}], lr=1e-2, betas=(0.9, 0.95))
        g = _gen(59)
        for step in range(steps):
            for i, p in enumerate(params):
                skipped = i == 3 and step % 3 == 1  # no gradient: the parameter is skipped, its count stays
                p.grad = None if skipped else torch.randn(p.shape, generator=g, dtype=dtype) * 10 ** i
            opt.step()
            opt.zero_grad()
        for i, p in enumerate(params):
            out[f"{str(dtype)[6:]}/param{i}"] = p.detach()
    # the grader's own groups of the notebook's kind (matrices decayed), so configure_optimizer is not tested here
    torch.manual_seed(60)
    net = nn.Sequential(nn.Embedding(12, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 12)).double()
    params = list(net.parameters())
    opt = m.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95))
    x = torch.randint(0, 12, (16,), generator=_gen(61))
    with torch.enable_grad():
        for _ in range(10):
            nn.functional.cross_entropy(net(x), (x + 1) % 12).backward()
            opt.step()
            opt.zero_grad()
    for name, p in net.named_parameters():
        out[f"net/{name}"] = p.detach()
    out["step_count"] = float(opt.state[net[1].weight]["step"])
    raised = []
    for bad in ({"lr": -1.0}, {"betas": (0.9, 1.0)}, {"eps": -1e-8}, {"weight_decay": -0.1}):
        try:
            m.AdamW([nn.Parameter(torch.zeros(1))], **bad)
            raised.append(False)
        except ValueError:
            raised.append(True)
    out["bad_settings_raise"] = raised
    return out


# ---------------------------------------------------------------------------------------------------------------
# 5b.9 softmax_backward, 5b.10 layer_norm_backward: the functions themselves with PyTorch's backward kernels and
# autograd unavailable (forbid), and, in a probe of their own, gradcheck of the notebook's autograd.Function, which
# needs autograd (so nothing is forbidden there; the Function's backward is the student's function).


def _gradcheck(function, *inputs) -> bool:
    with torch.enable_grad():
        return bool(torch.autograd.gradcheck(function, inputs, raise_exception=False))


def softmax_bw_visible(m):
    gen = _gen(0)
    x = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    grad_y = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    return {"grad_x": m.softmax_backward(torch.softmax(x, dim=-1), grad_y)}


def softmax_bw_hidden(m):
    gen = _gen(59)
    out = {}
    for shape in ((7,), (2, 3, 6), (4, 1), (2, 2, 2, 9)):
        for dtype in (torch.float64, torch.float32):
            x = torch.randn(shape, generator=gen, dtype=dtype) * 4
            grad_y = torch.randn(shape, generator=gen, dtype=dtype)
            out[f"{str(dtype)[6:]}/{list(shape)}"] = m.softmax_backward(torch.softmax(x, dim=-1), grad_y)
    y = torch.softmax(torch.randn(3, 4, generator=gen, dtype=torch.float64), dim=-1)
    out["float64/constant"] = m.softmax_backward(y, torch.full((3, 4), 2.5, dtype=torch.float64))
    try:
        m.softmax_backward(torch.rand(3, 4), torch.rand(3, 5))
        out["mismatch_raises"] = False
    except ValueError:
        out["mismatch_raises"] = True
    return out


def softmax_bw_gradcheck_visible(m):
    x = torch.randn(3, 5, generator=_gen(0), dtype=torch.float64, requires_grad=True)
    return {"gradcheck": _gradcheck(m.SoftmaxFunction.apply, x)}


def softmax_bw_gradcheck_hidden(m):
    gen = _gen(590)
    return {f"gradcheck{list(shape)}": _gradcheck(m.SoftmaxFunction.apply,
                                                  torch.randn(shape, generator=gen, dtype=torch.float64,
                                                              requires_grad=True))
            for shape in ((4, 6), (2, 3, 5))}


def _ln_inputs(shape, dtype, gen):
    C = shape[-1]
    return (torch.randn(shape, generator=gen, dtype=dtype) * 3 + 1, torch.randn(C, generator=gen, dtype=dtype),
            torch.randn(C, generator=gen, dtype=dtype), torch.randn(shape, generator=gen, dtype=dtype))


def ln_bw_visible(m):
    x, weight, _, grad_out = _ln_inputs((2, 3, 6), torch.float64, _gen(0))
    return dict(zip(("grad_x", "grad_weight", "grad_bias"), m.layer_norm_backward(x, weight, grad_out, 1e-5)))


def ln_bw_hidden(m):
    gen = _gen(510)
    out = {}
    for shape, eps in (((5, 8), 1e-5), ((2, 4, 16), 1e-5), ((3, 2, 2, 5), 0.1), ((1, 3), 1e-5), ((64,), 1e-5)):
        for dtype in (torch.float64, torch.float32):
            x, weight, _, grad_out = _ln_inputs(shape, dtype, gen)
            got = m.layer_norm_backward(x, weight, grad_out, eps)
            for name, value in zip(("grad_x", "grad_weight", "grad_bias"), got):
                out[f"{str(dtype)[6:]}/{list(shape)}/{name}"] = value
    try:
        m.layer_norm_backward(torch.rand(3, 4), torch.rand(5), torch.rand(3, 4))
        out["mismatch_raises"] = False
    except ValueError:
        out["mismatch_raises"] = True
    return out


def ln_bw_gradcheck_visible(m):
    x, weight, bias, _ = _ln_inputs((2, 3, 6), torch.float64, _gen(0))
    return {"gradcheck": _gradcheck(m.LayerNormFunction.apply, x.requires_grad_(), weight.requires_grad_(),
                                    bias.requires_grad_(), 1e-5)}


def ln_bw_gradcheck_hidden(m):
    gen = _gen(5100)
    out = {}
    for shape in ((3, 5), (2, 2, 4)):
        x, weight, bias, _ = _ln_inputs(shape, torch.float64, gen)
        out[f"gradcheck{list(shape)}"] = _gradcheck(m.LayerNormFunction.apply, x.requires_grad_(),
                                                    weight.requires_grad_(), bias.requires_grad_(), 1e-3)
    return out


PROBES = [
    Probe("test_get_batch", watched(batch_visible), Rules(equal(), {})),
    Probe("test_get_batch_hidden", watched(batch_hidden), Rules(equal(), {"fewest_starts": above(140)})),
    Probe("test_configure_optimizer", watched(optimizer_visible), Rules(equal(), {})),
    Probe("test_configure_optimizer_hidden", watched(optimizer_hidden),
          Rules(equal(), {"decayed_after_step": close(1e-7, 0), "gain_after_step": close(0, 0)})),
    Probe("test_lr_at", watched(lr_visible), Rules(close(1e-5, 1e-5), {})),
    Probe("test_lr_at_hidden", watched(lr_hidden),
          Rules(equal(), {"/rates": close(1e-12, 1e-9), "/after_total": close(1e-15, 0)})),
    Probe("test_train_step", watched(step_visible), Rules(equal(), {"losses": falls_by(0.5)})),
    Probe("test_train_step_hidden", watched(step_hidden),
          Rules(close(1e-6, 1e-5), {"sgd/norm_before_clipping": above(0.01), "sgd/step_length": near(0.01, 1e-5),
                                    "sgd/cleared": equal(), "run/losses": falls_by(1.0, last=5),
                                    "run/no_validation_in_training": equal(),
                                    "run/estimate_loss_without_gradients": equal()})),
    Probe("test_checkpoint", watched(checkpoint_visible), Rules(equal(), {})),
    Probe("test_checkpoint_hidden", watched(checkpoint_hidden),
          Rules(equal(), {"losses_resumed_vs_straight": same_run(1e-6), "weights_error": below(1e-6)})),
    Probe("test_cross_entropy", watched(ce_visible),
          Rules(close(1e-6), {"large": close(1e-4)}), forbid=("softmax", "cross_entropy")),
    Probe("test_cross_entropy_hidden", watched(ce_hidden), Rules(close(1e-5, 1e-5), _ce_rules()),
          forbid=("softmax", "cross_entropy")),
    Probe("test_clip_grad_norm", watched(clip_visible), Rules(close(1e-5, 1e-5), {}), forbid=("clip_grad_norm",)),
    Probe("test_clip_grad_norm_hidden", watched(clip_hidden),
          Rules(close(1e-6, 1e-6), {"/has_grad": equal(), "float64/": close(1e-12, 1e-12), "after/norm": close(1e-5, 0),
                                    "after/direction_error": below(1e-6), "one/grad": close(1e-6, 0)}),
          forbid=("clip_grad_norm",)),
    Probe("test_adamw", watched(adamw_visible), Rules(close(1e-10, 1e-10), {"first_step": close(1e-5, 0)}),
          forbid=("adamw",)),
    Probe("test_adamw_hidden", watched(adamw_hidden),
          Rules(close(1e-10, 1e-10), {"float32/": close(1e-5, 1e-5), "step_count": equal(),
                                      "bad_settings_raise": equal()}), forbid=("adamw",)),
    Probe("test_softmax_backward", watched(softmax_bw_visible), Rules(close(1e-12), {}),
          forbid=("softmax_backward",)),
    Probe("test_softmax_backward", watched(softmax_bw_gradcheck_visible), Rules(equal(), {}), name="gradcheck"),
    Probe("test_softmax_backward_hidden", watched(softmax_bw_hidden),
          Rules(close(1e-12, 1e-12), {"float32/": close(1e-6, 1e-6), "mismatch_raises": equal()}),
          forbid=("softmax_backward",)),
    Probe("test_softmax_backward_hidden", watched(softmax_bw_gradcheck_hidden), Rules(equal(), {}),
          name="gradcheck"),
    Probe("test_layer_norm_backward", watched(ln_bw_visible), Rules(close(1e-10), {}),
          forbid=("layer_norm_backward",)),
    Probe("test_layer_norm_backward", watched(ln_bw_gradcheck_visible), Rules(equal(), {}), name="gradcheck"),
    Probe("test_layer_norm_backward_hidden", watched(ln_bw_hidden),
          Rules(close(1e-10, 1e-10), {"float32/": close(1e-4, 1e-4), "mismatch_raises": equal()}),
          forbid=("layer_norm_backward",)),
    Probe("test_layer_norm_backward_hidden", watched(ln_bw_gradcheck_hidden), Rules(equal(), {}),
          name="gradcheck"),
]
