"""Chapter 5b: every graded test rejects plausible wrong answers; the public fallback agrees with the solution.

(What every chapter must satisfy, solution passing and stubs failing included, is in test_notebooks.py.)

The wrong answers run against a quick copy of the solution notebook: the same cells, with the training run at the
end shortened from 800 steps to 40 and the corpus sample made smaller (the graded cells do not use either).
"""

from __future__ import annotations

import copy

import nbformat
import pytest
import torch
from conftest import ROOT
from notebook_harness import rejected_by, run_notebook, solution_cells, solution_editor
from probe_harness import outside_verdicts

CHAPTER = "05b_training"
SOLUTION = ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"
QUICK = {"steps=800,": "steps=40,",
         "n_train_chars=2_000_000, n_val_chars=100_000": "n_train_chars=300_000, n_val_chars=20_000"}

BATCH_TESTS = {"test_get_batch", "test_get_batch_hidden"}
OPTIMIZER_TESTS = {"test_configure_optimizer", "test_configure_optimizer_hidden"}
LR_TESTS = {"test_lr_at", "test_lr_at_hidden"}
STEP_TESTS = {"test_train_step", "test_train_step_hidden"}
CHECKPOINT_TESTS = {"test_checkpoint", "test_checkpoint_hidden"}
CE_TESTS = {"test_cross_entropy", "test_cross_entropy_hidden"}
CLIP_TESTS = {"test_clip_grad_norm", "test_clip_grad_norm_hidden"}
ADAMW_TESTS = {"test_adamw", "test_adamw_hidden"}
SOFTMAX_BW_TESTS = {"test_softmax_backward", "test_softmax_backward_hidden"}
LN_BW_TESTS = {"test_layer_norm_backward", "test_layer_norm_backward_hidden"}
edit = solution_editor(SOLUTION)
SOFTMAX_BW_LINE = "return y * (grad_y - (grad_y * y).sum(dim=-1, keepdim=True))"
LN_VAR = "torch.sqrt(((x - mu) ** 2).mean(dim=-1, keepdim=True) + eps)"
LN_GRAD_X = "grad_x = r * (g - g.mean(dim=-1, keepdim=True) - x_hat * (g * x_hat).mean(dim=-1, keepdim=True))"


def softmax_bw(new, must_fail=SOFTMAX_BW_TESTS):
    return "softmax_backward", edit("softmax_backward", (SOFTMAX_BW_LINE, new)), must_fail


def ln_bw(*replacements, must_fail=LN_BW_TESTS):
    return "layer_norm_backward", edit("layer_norm_backward", *replacements), must_fail

GET_BATCH = '''
#| export
def get_batch(data, block_size, batch_size, generator=None, device="cpu"):
    starts = {starts}
    positions = starts[:, None] + torch.arange(block_size)
    return data[positions].to(device), data[{target}].to(device)
'''
OPTIMIZER = '''
#| export
def configure_optimizer(model, weight_decay, lr, betas=(0.9, 0.95)):
    named = {named}
    decay = [p for n, p in named if {rule}]
    no_decay = [p for n, p in named if not ({rule})]
    groups = [{{"params": decay, "weight_decay": weight_decay}}, {{"params": no_decay, "weight_decay": 0.0}}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)
'''
LR_AT = '''
#| export
def lr_at(step, max_lr, warmup, total, min_lr):
    if step < warmup:
        return {warm}
    {clamp}
    progress = (step - warmup) / (total - warmup)
    return {decay}
'''
LR_OK = dict(warm="max_lr * (step + 1) / warmup", clamp="if step >= total:\n        return min_lr",
             decay="min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)")
TRAIN_STEP = '''
#| export
def train_step(model, optimizer, x, y, lr, grad_clip=1.0):
{body}
'''
CHECKPOINT = '''
#| export
def save_checkpoint(directory, model, optimizer, step, generator):
    directory = Path(directory)
    model.save_pretrained(directory)
    state = {{"optimizer": optimizer.state_dict(), "step": {step}, "generator": generator.get_state(),
             "torch_rng": torch.get_rng_state()}}
    torch.save(state, directory / "training_state.pt")
    return directory


def load_checkpoint(directory, model, optimizer, generator):
    directory = Path(directory)
    model.load_state_dict(type(model).from_pretrained(directory).state_dict())
    state = torch.load(directory / "training_state.pt", weights_only=True)
    {restore_optimizer}
    {restore_generator}
    {restore_rng}
    return state["step"]
'''
CK_OK = dict(step="step", restore_optimizer='optimizer.load_state_dict(state["optimizer"])',
             restore_generator='generator.set_state(state["generator"])',
             restore_rng='torch.set_rng_state(state["torch_rng"])')
CROSS_ENTROPY = '''
#| export
def _check_cross_entropy_arguments(logits, targets):
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError("targets must have the shape of logits without its last dimension")


def cross_entropy(logits, targets, ignore_index=-100):
    _check_cross_entropy_arguments(logits, targets)
    m = {m}
    log_probs = logits - m - (logits - m).exp().sum(dim={dim}, keepdim=True).log()
    keep = targets != ignore_index
    picked = log_probs.gather(-1, {index}[..., None])[..., 0]
    return {reduce}
'''
CE_OK = dict(m="logits.amax(dim=-1, keepdim=True).detach()", dim=-1, index="targets.masked_fill(~keep, 0)",
             reduce="-(picked * keep).sum() / keep.sum()")


def ce(must_fail=CE_TESTS, **changes):
    return "cross_entropy", CROSS_ENTROPY.format(**(CE_OK | changes)), must_fail
CLIP = '''
#| export
def _with_gradients(parameters):
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    return [p for p in parameters if {keep}]


def clip_grad_norm_(parameters, max_norm):
    params = _with_gradients(parameters)
    if not params:
        return torch.tensor(0.0)
    total = {total}
    coef = {coef}
    for p in params:
        p.grad.detach().mul_({factor})
    return {ret}
'''
CLIP_OK = dict(keep="p.grad is not None", total="torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params))",
               coef="torch.clamp(max_norm / (total + 1e-6), max=1.0)", factor="coef", ret="total")


def clip(must_fail=CLIP_TESTS, **changes):
    return "clip_grad_norm", CLIP.format(**(CLIP_OK | changes)), must_fail
ADAMW = '''
#| export
class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError("bad AdamW settings")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        {pre}
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = {t}
                m, v, g = state["exp_avg"], state["exp_avg_sq"], {grad}
                {decay_before}
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = {m_hat}
                v_hat = {v_hat}
                p.addcdiv_(m_hat, {denom}, value=-lr)
                {decay_after}
'''
ADAMW_OK = dict(pre="pass", t='state["step"]', grad="p.grad", decay_before="p.mul_(1 - lr * wd)",
                m_hat="m / (1 - beta1 ** t)", v_hat="v / (1 - beta2 ** t)", denom="v_hat.sqrt() + eps",
                decay_after="pass")


def adamw(must_fail=ADAMW_TESTS, **changes):
    return "adamw", ADAMW.format(**(ADAMW_OK | changes)), must_fail


def lr_at(must_fail=LR_TESTS, **changes):
    return "lr_at", LR_AT.format(**(LR_OK | changes)), must_fail


def checkpoint(must_fail=CHECKPOINT_TESTS, **changes):
    return "checkpoint", CHECKPOINT.format(**(CK_OK | changes)), must_fail


def step(*lines, must_fail=STEP_TESTS):
    return "train_step", TRAIN_STEP.format(body="\n".join("    " + line for line in lines)), must_fail


SET_LR = "for group in optimizer.param_groups:\n        group['lr'] = lr"

# Plausible wrong answers: (solution cell replaced, its source, graded cells that must reject it).
WRONG_ANSWERS = {
    "targets not shifted (y = x)": ("get_batch", GET_BATCH.format(
        starts="torch.randint(len(data) - block_size, (batch_size,), generator=generator)", target="positions"),
        BATCH_TESTS),
    "windows that can run past the end of the data": ("get_batch", GET_BATCH.format(
        starts="torch.randint(len(data) - block_size + 1, (batch_size,), generator=generator)",
        target="positions + 1"), BATCH_TESTS),
    "starts that never reach the last window": ("get_batch", GET_BATCH.format(
        starts="torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)",
        target="positions + 1"), BATCH_TESTS),
    "batches from torch's global generator": ("get_batch", GET_BATCH.format(
        starts="torch.randint(len(data) - block_size, (batch_size,))", target="positions + 1"), BATCH_TESTS),
    "weight decay on every parameter (one group)": ("configure_optimizer", '''
#| export
def configure_optimizer(model, weight_decay, lr, betas=(0.9, 0.95)):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
''', OPTIMIZER_TESTS),
    "decay chosen by name: LayerNorm gains decayed": ("configure_optimizer", OPTIMIZER.format(
        named="list(model.named_parameters())", rule='n.endswith("weight")'), OPTIMIZER_TESTS),
    "embeddings not decayed": ("configure_optimizer", OPTIMIZER.format(
        named="list(model.named_parameters())", rule='p.dim() >= 2 and "wte" not in n and "wpe" not in n'),
        OPTIMIZER_TESTS),
    "the tied weight listed twice": ("configure_optimizer", OPTIMIZER.format(
        named="list(model.named_parameters(remove_duplicate=False))", rule="p.dim() >= 2"), OPTIMIZER_TESTS),
    "frozen parameters included": ("configure_optimizer", OPTIMIZER.format(
        named="[(n, p) for n, p in model.named_parameters()]", rule="p.dim() >= 2"),
        {"test_configure_optimizer_hidden"}),
    "cosine without warm-up": ("lr_at", '''
#| export
def lr_at(step, max_lr, warmup, total, min_lr):
    if step >= total:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * step / total)) * (max_lr - min_lr)
''', LR_TESTS),
    "warm-up from 0 (a wasted first step)": lr_at(warm="max_lr * step / warmup"),
    "cosine down to 0, ignoring min_lr": lr_at(decay="0.5 * (1.0 + math.cos(math.pi * progress)) * max_lr"),
    "linear decay instead of a cosine": lr_at({"test_lr_at_hidden"}, decay="max_lr - progress * (max_lr - min_lr)"),
    "a cosine that rises again after total": lr_at(clamp="pass"),
    "clipping after the optimizer step": step(SET_LR, "_, loss = model(x, y)", "loss.backward()",
                                              "optimizer.step()",
                                              "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)",
                                              "optimizer.zero_grad(set_to_none=True)",
                                              "return loss.item(), norm.item()", must_fail={"test_train_step_hidden"}),
    "gradients never cleared": step(SET_LR, "_, loss = model(x, y)", "loss.backward()",
                                    "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)",
                                    "optimizer.step()", "return loss.item(), norm.item()"),
    "learning rate not set": step("_, loss = model(x, y)", "loss.backward()",
                                  "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)",
                                  "optimizer.step()", "optimizer.zero_grad(set_to_none=True)",
                                  "return loss.item(), norm.item()"),
    "the norm after clipping returned": step(SET_LR, "_, loss = model(x, y)", "loss.backward()",
                                             "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)",
                                             "norm = torch.nn.utils.get_total_norm([p.grad for p in "
                                             "model.parameters() if p.grad is not None])",
                                             "optimizer.step()", "optimizer.zero_grad(set_to_none=True)",
                                             "return loss.item(), norm.item()", must_fail={"test_train_step_hidden"}),
    "no clipping": step(SET_LR, "_, loss = model(x, y)", "loss.backward()",
                        "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float('inf'))",
                        "optimizer.step()", "optimizer.zero_grad(set_to_none=True)", "return loss.item(), norm.item()",
                        must_fail={"test_train_step_hidden"}),
    "gradients cleared before the step (no update)": step(SET_LR, "_, loss = model(x, y)", "loss.backward()",
                                                          "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), "
                                                          "grad_clip)", "optimizer.zero_grad(set_to_none=True)",
                                                          "optimizer.step()", "return loss.item(), norm.item()"),
    "resume without the optimizer state": checkpoint(restore_optimizer="pass"),
    "resume without the batch generator's state": checkpoint(restore_generator="pass"),
    "the step not saved (resume at 0)": checkpoint(step="0"),
    "resume without torch's RNG state (dropout)": checkpoint({"test_checkpoint_hidden"}, restore_rng="pass"),
    "cross-entropy without subtracting the maximum (overflow at 1e4)": ce(m="0.0"),
    "cross-entropy averaged over every position, ignored ones too": ce(reduce="-(picked * keep).mean()"),
    "cross-entropy summed, not averaged": ce(reduce="-(picked * keep).sum()"),
    "log-softmax over the wrong dimension": ce(m="logits.amax(dim=0, keepdim=True)", dim=0),
    "ignored targets used as indices": ce(index="targets"),
    "each gradient clipped on its own": clip(factor="torch.clamp(max_norm / (p.grad.norm() + 1e-6), max=1.0)"),
    "the norm after clipping returned (by hand)": clip(ret="torch.sqrt(sum((p.grad ** 2).sum() for p in params))"),
    "always scaled to max_norm, small gradients scaled up": clip(coef="max_norm / (total + 1e-6)"),
    "the total norm as the sum of the tensors' norms": clip(total="sum(p.grad.detach().norm() for p in params)"),
    "parameters without a gradient not skipped": clip({"test_clip_grad_norm_hidden"}, keep="True"),
    "AdamW without bias correction": adamw(m_hat="m", v_hat="v"),
    "Adam with L2 (decay added to the gradient), not AdamW": adamw(grad="p.grad + wd * p", decay_before="pass"),
    "eps inside the square root": adamw(denom="(v_hat + eps).sqrt()"),
    "one step counter for all parameters": adamw({"test_adamw_hidden"}, pre='self.t = getattr(self, "t", 0) + 1',
                                                 t="self.t"),
    "bias correction with the count starting at 0": adamw(t='state["step"] - 1'),
    "weight decay applied after the Adam update": adamw(decay_before="pass", decay_after="p.mul_(1 - lr * wd)"),
    "softmax backward: the diagonal of the Jacobian only": softmax_bw("return grad_y * y * (1 - y)"),
    "softmax backward: y times grad_y, the sum term missing": softmax_bw("return y * grad_y"),
    "softmax backward: the sum over the wrong dimension": softmax_bw(
        "return y * (grad_y - (grad_y * y).sum(dim=0, keepdim=True))"),
    "softmax backward: not multiplied by y": softmax_bw("return grad_y - (grad_y * y).sum(dim=-1, keepdim=True)"),
    "LayerNorm backward without the mean terms": ln_bw((LN_GRAD_X, "grad_x = r * g")),
    "LayerNorm backward without the variance's term": ln_bw((LN_GRAD_X,
                                                             "grad_x = r * (g - g.mean(dim=-1, keepdim=True))")),
    "LayerNorm backward with the unbiased variance": ln_bw((LN_VAR, "torch.sqrt(x.var(dim=-1, keepdim=True) + eps)")),
    "LayerNorm backward: grad_weight not summed over the batch": ln_bw(
        ("grad_weight = (grad_out * x_hat).reshape(-1, C).sum(dim=0)", "grad_weight = (grad_out * x_hat)")),
    "LayerNorm backward: the weight left out of grad_x": ln_bw(("g = grad_out * weight", "g = grad_out")),
}


@pytest.fixture(scope="module")
def quick_notebook(tmp_path_factory):
    """The solution notebook with a short training run, in a chapter folder of its own."""
    nb = nbformat.read(SOLUTION, as_version=4)
    for cell in nb.cells:
        for old, new in QUICK.items():
            cell.source = cell.source.replace(old, new)
    folder = tmp_path_factory.mktemp("quick") / CHAPTER
    folder.mkdir()
    path = folder / f"{CHAPTER}.ipynb"
    nbformat.write(nb, path)
    return path


def test_quick_notebook_shortens_the_run():
    sources = [cell.source for cell in nbformat.read(SOLUTION, as_version=4).cells]
    for old in QUICK:
        assert sum(old in source for source in sources) == 1, old


def test_wrong_answer_templates_are_the_solution(quick_notebook, monkeypatch):
    """The templates filled in correctly pass every graded test (so a rejection is the wrong answer's doing)."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    correct = {"lr_at": lr_at()[1], "checkpoint": checkpoint()[1],
               "train_step": step(SET_LR, "_, loss = model(x, y)", "loss.backward()",
                                  "norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)",
                                  "optimizer.step()", "optimizer.zero_grad(set_to_none=True)",
                                  "return loss.item(), norm.item()")[1],
               "cross_entropy": ce()[1], "clip_grad_norm": clip()[1], "adamw": adamw()[1],
               "softmax_backward": edit("softmax_backward"), "layer_norm_backward": edit("layer_norm_backward"),
               "get_batch": GET_BATCH.format(starts="torch.randint(len(data) - block_size, (batch_size,), "
                                                    "generator=generator)", target="positions + 1"),
               "configure_optimizer": OPTIMIZER.format(
                   named="[(n, p) for n, p in model.named_parameters() if p.requires_grad]", rule="p.dim() >= 2")}
    assert set(correct) == set(solution_cells(SOLUTION))
    results = run_notebook(quick_notebook, replace=correct)
    failing = [r.grade_id for r in results if r.graded and not r.passed]
    assert not failing


@pytest.mark.parametrize("label", list(WRONG_ANSWERS))
def test_wrong_answer_is_rejected(label, quick_notebook, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    cell, source, must_fail = WRONG_ANSWERS[label]
    rejected = rejected_by(quick_notebook, cell, source)
    assert must_fail <= rejected, f"{label}: not rejected by {sorted(must_fail - rejected)}"
    # the points come from the outside checks: they must reject it in the same cells as the notebook's own tests
    outside = outside_verdicts(quick_notebook, {cell: source})
    failed_outside = {c for c, (verdict, _) in outside.items() if verdict != "pass"}
    assert failed_outside == rejected, (
        f"{label}: the notebook's tests reject {sorted(rejected)}, the outside checks {sorted(failed_outside)}: "
        f"{({c: outside[c][1] for c in failed_outside ^ rejected if c in outside})}")


def test_every_graded_test_rejects_some_wrong_answer(quick_notebook, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    rejecting = set().union(*(must for _, _, must in WRONG_ANSWERS.values()))
    graded = {r.grade_id for r in run_notebook(quick_notebook) if r.graded}
    assert graded == rejecting


def test_fallback_agrees_with_solution(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import gpt
    from llmcourse.chapters import training as ours
    from llmcourse.fallbacks import training as fallback

    public = {n for n in vars(ours) if not n.startswith("_") and callable(getattr(ours, n))
              and getattr(getattr(ours, n), "__module__", None) == ours.__name__}
    assert public == {"get_batch", "configure_optimizer", "lr_at", "train_step", "estimate_loss", "save_checkpoint",
                      "load_checkpoint", "cross_entropy", "clip_grad_norm_", "AdamW", "softmax_backward",
                      "SoftmaxFunction", "layer_norm_backward", "LayerNormFunction"}
    assert public <= set(vars(fallback))

    data = torch.randint(0, 40, (300,), generator=torch.Generator().manual_seed(0))
    for T, B in ((8, 5), (16, 1), (299, 3)):
        a = ours.get_batch(data, T, B, generator=torch.Generator().manual_seed(T))
        b = fallback.get_batch(data, T, B, generator=torch.Generator().manual_seed(T))
        assert all(torch.equal(u, v) for u, v in zip(a, b))

    for args in ((6e-4, 20, 200, 6e-5), (1e-3, 1, 50, 0.0), (3e-3, 0, 40, 1e-4), (1.0, 7, 31, 0.25)):
        for s in range(args[2] + 5):
            assert ours.lr_at(s, *args) == pytest.approx(fallback.lr_at(s, *args), rel=1e-9, abs=1e-15)

    torch.manual_seed(0)
    model = gpt.GPT(gpt.preset("course-tiny", vocab_size=40, n_layer=1, dropout=0.1))
    twin = copy.deepcopy(model)
    opt_a, opt_b = ours.configure_optimizer(model, 0.1, 1e-3), fallback.configure_optimizer(twin, 0.1, 1e-3)
    for ga, gb in zip(opt_a.param_groups, opt_b.param_groups):
        assert [p.shape for p in ga["params"]] == [p.shape for p in gb["params"]]
        assert {k: v for k, v in ga.items() if k != "params"} == {k: v for k, v in gb.items() if k != "params"}
    gen = torch.Generator().manual_seed(1)
    for s in range(3):
        x, y = ours.get_batch(data, 16, 4, generator=gen)
        torch.manual_seed(s)  # the same dropout masks
        a = ours.train_step(model, opt_a, x, y, lr=ours.lr_at(s, 1e-3, 2, 3, 1e-4), grad_clip=0.5)
        torch.manual_seed(s)
        b = fallback.train_step(twin, opt_b, x, y, lr=fallback.lr_at(s, 1e-3, 2, 3, 1e-4), grad_clip=0.5)
        assert a == pytest.approx(b, rel=1e-5)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert ours.estimate_loss(model, data, 16, 4) == pytest.approx(fallback.estimate_loss(twin, data, 16, 4), rel=1e-6)
    assert ours.estimate_loss(model, data, 16, 4, max_batches=2) == pytest.approx(
        fallback.estimate_loss(twin, data, 16, 4, max_batches=2), rel=1e-6)

    # each resumes exactly from its own checkpoint; both write a GPT-2 checkpoint the other's model loads
    for module in (ours, fallback):
        torch.manual_seed(2)
        net = gpt.GPT(gpt.preset("course-tiny", vocab_size=40, n_layer=1, dropout=0.1))
        opt = module.configure_optimizer(net, 0.1, 1e-3)
        gen = torch.Generator().manual_seed(3)
        module.train_step(net, opt, *module.get_batch(data, 16, 4, generator=gen), lr=1e-3)
        folder = tmp_path / module.__name__
        module.save_checkpoint(folder, net, opt, 1, gen)
        saved = {name: p.detach().clone() for name, p in net.named_parameters()}
        expected = [module.train_step(net, opt, *module.get_batch(data, 16, 4, generator=gen), lr=1e-3)
                    for _ in range(2)]
        torch.manual_seed(9)
        other = gpt.GPT(net.config)
        other_opt = module.configure_optimizer(other, 0.1, 1e-3)
        other_gen = torch.Generator().manual_seed(4)
        assert module.load_checkpoint(folder, other, other_opt, other_gen) == 1
        got = [module.train_step(other, other_opt, *module.get_batch(data, 16, 4, generator=other_gen), lr=1e-3)
               for _ in range(2)]
        assert got == expected
        loaded = gpt.GPT.from_pretrained(folder)
        assert all(torch.equal(p, saved[name]) for name, p in loaded.named_parameters())


def test_cross_entropy_agrees_with_torch(monkeypatch):
    """The solution's and the fallback's cross-entropy against F.cross_entropy: value and gradient, float64."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import training as ours
    from llmcourse.fallbacks import training as fallback

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 10, generator=gen, dtype=torch.float64) * 5
    targets = torch.randint(0, 10, (3, 4), generator=gen)
    targets[0, :3] = -100
    leaf = logits.clone().requires_grad_()
    want = torch.nn.functional.cross_entropy(leaf.view(-1, 10), targets.view(-1))
    want_grad, = torch.autograd.grad(want, leaf)
    for module in (ours, fallback):
        leaf = logits.clone().requires_grad_()
        got = module.cross_entropy(leaf, targets)
        got_grad, = torch.autograd.grad(got, leaf)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(got_grad, want_grad, atol=1e-12, rtol=1e-12)
        with pytest.raises(ValueError, match="shape"):
            module.cross_entropy(logits, targets[:, :3])
        with pytest.raises(TypeError, match="long"):
            module.cross_entropy(logits, targets.float())


def test_clip_grad_norm_agrees_with_torch(monkeypatch):
    """The solution's and the fallback's clipping against torch.nn.utils.clip_grad_norm_, float64; bad input."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import training as ours
    from llmcourse.fallbacks import training as fallback

    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 2)).double()
    net[0].bias.requires_grad_(False)
    net(torch.randn(3, 5, dtype=torch.float64)).pow(2).sum().mul(10).backward()
    def twin_of(model):  # deepcopy copies the weights, not their .grad
        twin = copy.deepcopy(model)
        for p, q in zip(twin.parameters(), model.parameters()):
            p.grad = None if q.grad is None else q.grad.clone()
        return twin

    for max_norm in (0.1, 1e9):
        want_net = twin_of(net)
        want = torch.nn.utils.clip_grad_norm_(want_net.parameters(), max_norm)
        for module in (ours, fallback):
            twin = twin_of(net)
            got = module.clip_grad_norm_(twin.parameters(), max_norm)
            torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
            for p, q in zip(twin.parameters(), want_net.parameters()):
                assert (p.grad is None) == (q.grad is None)
                if p.grad is not None:
                    torch.testing.assert_close(p.grad, q.grad, atol=1e-12, rtol=1e-12)
    for module in (ours, fallback):
        with pytest.raises(TypeError, match="tensor"):
            module.clip_grad_norm_(3, 1.0)
        with pytest.raises(TypeError, match="tensor"):
            module.clip_grad_norm_([1.0, 2.0], 1.0)


def test_adamw_agrees_with_torch(monkeypatch):
    """The solution's and the fallback's AdamW take torch.optim.AdamW's steps (float64, two groups); bad settings."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import training as ours
    from llmcourse.fallbacks import training as fallback

    def run(make):
        gen = torch.Generator().manual_seed(5)
        params = [torch.nn.Parameter(torch.randn(3, 4, generator=gen, dtype=torch.float64)),
                  torch.nn.Parameter(torch.randn(4, generator=gen, dtype=torch.float64))]
        opt = make([{"params": params[:1], "weight_decay": 0.2}, {"params": params[1:], "weight_decay": 0.0}],
                   lr=0.02, betas=(0.85, 0.97), eps=1e-6)
        for _ in range(30):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step()
            opt.zero_grad()
        return params

    want = run(lambda *a, **k: torch.optim.AdamW(*a, foreach=False, **k))
    for module in (ours, fallback):
        for p, q in zip(run(module.AdamW), want):
            torch.testing.assert_close(p, q, atol=1e-12, rtol=1e-12)
        with pytest.raises(ValueError, match="betas"):
            module.AdamW([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 1.5))


def test_backward_passes_agree_with_autograd(monkeypatch):
    """The solution's and the fallback's backward passes against autograd's gradients (float64), and gradcheck."""
    monkeypatch.setenv("LLMCOURSE_SOURCE", "solutions")
    from llmcourse.chapters import training as ours
    from llmcourse.fallbacks import training as fallback

    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 2, 7, generator=gen, dtype=torch.float64)
    y = torch.softmax(x, dim=-1)
    want_softmax = torch.autograd.grad(y, x, grad)[0]
    want_ln = torch.autograd.grad(torch.nn.functional.layer_norm(x, (7,), weight, bias, 1e-5), (x, weight, bias), grad)
    for module in (ours, fallback):
        torch.testing.assert_close(module.softmax_backward(y.detach(), grad), want_softmax, atol=1e-12, rtol=1e-12)
        for got, want in zip(module.layer_norm_backward(x.detach(), weight.detach(), grad, 1e-5), want_ln):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
        assert torch.autograd.gradcheck(module.SoftmaxFunction.apply, (x,))
        assert torch.autograd.gradcheck(module.LayerNormFunction.apply, (x, weight, bias, 1e-3))
        with pytest.raises(ValueError, match="shape"):
            module.softmax_backward(y, grad[:, :1])
        with pytest.raises(ValueError, match="weight"):
            module.layer_norm_backward(x, weight[:3], grad, 1e-5)
