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
from notebook_harness import rejected_by, run_notebook, solution_cells
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
                      "load_checkpoint"}
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
