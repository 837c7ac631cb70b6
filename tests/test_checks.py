"""llmcourse.checks: silent on success, a message that locates the problem on failure."""

from __future__ import annotations

import importlib

import pytest
import torch

from llmcourse.checks import check, check_close, check_dtype, check_shape, check_tokens


def test_passing_checks_print_nothing(capsys):
    x = torch.randn(3, 4)
    check_close(x, x.clone())
    check_close(x, x + 1e-7)
    check_shape(x, (3, 4))
    check_dtype(x, torch.float32)
    check_tokens([1, 2, 3], torch.tensor([1, 2, 3]))
    check(True, "never shown")
    check_close(torch.tensor([float("-inf"), 1.0]), torch.tensor([float("-inf"), 1.0]))
    assert capsys.readouterr() == ("", "")


def test_shape_mismatch():
    with pytest.raises(AssertionError, match=r"out: wrong shape: got \(3, 4\), expected \(4, 3\)"):
        check_close(torch.zeros(3, 4), torch.zeros(4, 3), name="out")


def test_dtype_mismatch():
    with pytest.raises(AssertionError, match="wrong dtype: got torch.float64, expected torch.float32"):
        check_close(torch.zeros(2, dtype=torch.float64), torch.zeros(2))


def test_value_mismatch_reports_max_error_and_where():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    actual[0, 0] = 0.1
    with pytest.raises(AssertionError) as info:
        check_close(actual, expected, atol=1e-3, name="weights")
    msg = str(info.value)
    assert "max abs error 0.5 at index (1, 2)" in msg
    assert "got 0.5, expected 0" in msg
    assert "2 of 6 elements" in msg


def test_nan_is_reported_with_a_hint():
    with pytest.raises(AssertionError, match=r"nan where a finite value is expected; the first at index \(1,\)"):
        check_close(torch.tensor([0.5, float("nan")]), torch.tensor([0.5, 0.5]))


def test_not_a_tensor():
    with pytest.raises(AssertionError, match="expected a tensor, got NoneType"):
        check_close(None, torch.zeros(2))
    check_close([1.0, 2.0], torch.tensor([1.0, 2.0]), check_dtype=False)


def test_tokens_first_mismatch():
    with pytest.raises(AssertionError, match="first mismatch at position 2: got 9, expected 3"):
        check_tokens([1, 2, 9, 4], [1, 2, 3, 4])
    with pytest.raises(AssertionError, match="the first 2 tokens agree, but got 2 tokens, expected 3"):
        check_tokens([1, 2], [1, 2, 3])


def test_check_works_without_assert_statements():
    with pytest.raises(AssertionError, match="explained"):
        check(False, "explained")


# ---------------------------------------------------------------------------------------------------------------
# builtins_unavailable: the built-ins an exercise asks students to write themselves, unavailable for a block


def _own_work_calls():
    """(exercise, label, call) for the ways a student might reach each built-in, references taken early included."""
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.functional import gelu as gelu_taken_early
    from torch.nn.functional import layer_norm as layer_norm_taken_early

    softmax_taken_early = torch.softmax
    clip_taken_early = nn.utils.clip_grad_norm_
    x = torch.randn(2, 3, 4, requires_grad=True)
    logits, targets = torch.randn(3, 5), torch.tensor([0, 4, 2])
    w, m = torch.randn(4), torch.zeros(4)
    with_grad = nn.Parameter(torch.randn(4))
    with_grad.grad = torch.randn(4)
    adamw_made_early = torch.optim.AdamW([nn.Parameter(torch.randn(4))])
    adamw_made_early.param_groups[0]["params"][0].grad = torch.randn(4)
    probs = torch.softmax(torch.randn(2, 4), dim=-1)
    _, mean, rstd = torch.ops.aten.native_layer_norm(probs, [4], None, None, 1e-5)
    return [
        ("softmax", "torch.softmax", lambda: torch.softmax(x, dim=-1)),
        ("softmax", "Tensor.softmax", lambda: x.softmax(-1)),
        ("softmax", "F.log_softmax", lambda: F.log_softmax(x, dim=-1)),
        ("softmax", "nn.Softmax", lambda: nn.Softmax(dim=-1)(x)),
        ("softmax", "taken early", lambda: softmax_taken_early(x, -1)),
        ("softmax", "torch.ops.aten._softmax", lambda: torch.ops.aten._softmax(x, -1, False)),
        ("softmax", "_VariableFunctions", lambda: torch._C._VariableFunctions.softmax(x, -1)),
        ("scaled_dot_product_attention", "F.sdpa", lambda: F.scaled_dot_product_attention(x, x, x)),
        ("scaled_dot_product_attention", "nn.MultiheadAttention", lambda: nn.MultiheadAttention(4, 2)(x, x, x)),
        ("scaled_dot_product_attention", "torch.ops.aten",
         lambda: torch.ops.aten.scaled_dot_product_attention(x, x, x)),
        ("gelu", "F.gelu", lambda: F.gelu(x)),
        ("gelu", "F.gelu tanh", lambda: F.gelu(x, approximate="tanh")),
        ("gelu", "nn.GELU", lambda: nn.GELU(approximate="tanh")(x)),
        ("gelu", "taken early", lambda: gelu_taken_early(x)),
        ("gelu", "torch.ops.aten.gelu", lambda: torch.ops.aten.gelu(x)),
        ("layer_norm", "F.layer_norm", lambda: F.layer_norm(x, (4,))),
        ("layer_norm", "nn.LayerNorm", lambda: nn.LayerNorm(4)(x)),
        ("layer_norm", "taken early", lambda: layer_norm_taken_early(x, (4,))),
        ("layer_norm", "group_norm", lambda: F.group_norm(x.reshape(6, 1, 4), 1)),
        ("layer_norm", "_VariableFunctions", lambda: torch._C._VariableFunctions.layer_norm(x, (4,))),
        ("rms_norm", "F.rms_norm", lambda: F.rms_norm(x, (4,))),
        ("rms_norm", "nn.RMSNorm", lambda: nn.RMSNorm(4)(x)),
        ("rms_norm", "torch.ops.aten.rms_norm", lambda: torch.ops.aten.rms_norm(x, [4])),
        # chapter 5b: the training math by hand
        ("cross_entropy", "F.cross_entropy", lambda: F.cross_entropy(logits, targets)),
        ("cross_entropy", "F.nll_loss", lambda: F.nll_loss(logits, targets)),
        ("cross_entropy", "torch.logsumexp", lambda: torch.logsumexp(logits, -1)),
        ("cross_entropy", "Tensor.logsumexp", lambda: logits.logsumexp(-1)),
        ("cross_entropy", "torch.ops.aten.nll_loss", lambda: torch.ops.aten.nll_loss(logits, targets)),
        ("clip_grad_norm", "clip_grad_norm_", lambda: nn.utils.clip_grad_norm_([with_grad], 1.0)),
        ("clip_grad_norm", "get_total_norm", lambda: nn.utils.get_total_norm([with_grad.grad])),
        ("clip_grad_norm", "taken early", lambda: clip_taken_early([with_grad], 1.0)),
        ("clip_grad_norm", "torch._foreach_norm", lambda: torch._foreach_norm([with_grad.grad])),
        ("adamw", "AdamW.step", lambda: torch.optim.AdamW([with_grad]).step()),
        ("adamw", "made early", lambda: adamw_made_early.step()),
        ("adamw", "Adam.step", lambda: torch.optim.Adam([with_grad]).step()),
        ("adamw", "functional adam", lambda: importlib.import_module("torch.optim.adam").adam(
            [w], [with_grad.grad], [m], [m.clone()], [], [torch.tensor(1.0)], foreach=False, amsgrad=False, beta1=0.9,
            beta2=0.999, lr=1e-3, weight_decay=0.01, eps=1e-8, maximize=False, decoupled_weight_decay=True)),
        ("softmax_backward", "torch._softmax_backward_data",
         lambda: torch._softmax_backward_data(probs, probs, -1, probs.dtype)),
        ("softmax_backward", "torch.autograd.grad", lambda: torch.autograd.grad((x * x).sum(), x)),
        ("softmax_backward", "torch.func.vjp", lambda: torch.func.vjp(torch.exp, x.detach())),
        ("layer_norm_backward", "torch.ops.aten.native_layer_norm_backward",
         lambda: torch.ops.aten.native_layer_norm_backward(probs, probs, [4], mean, rstd, None, None,
                                                            [True, False, False])),
        ("layer_norm_backward", "torch.autograd.functional.jacobian",
         lambda: torch.autograd.functional.jacobian(torch.exp, x.detach())),
    ]


#: (block, exercise): that exercise's built-ins call the block's too (attention and cross-entropy use softmax; the
#: two backward exercises share torch.autograd.grad and friends), so they are unavailable there as well.
USES_ANOTHER = {("softmax", "scaled_dot_product_attention"), ("softmax", "cross_entropy"),
                ("softmax_backward", "layer_norm_backward"), ("layer_norm_backward", "softmax_backward")}


def _attributes():
    import torch.nn.functional as F

    return {"torch.softmax": torch.softmax, "F.softmax": F.softmax, "F.gelu": F.gelu, "F.layer_norm": F.layer_norm,
            "F.sdpa": F.scaled_dot_product_attention, "torch._C._nn.gelu": torch._C._nn.gelu,
            "Tensor.softmax": torch.Tensor.softmax}


def _all_available(calls):
    for _, _, call in calls:
        call()  # raises if still unavailable
    assert "softmax" not in vars(torch.Tensor) and "log_softmax" not in vars(torch.Tensor), \
        "torch.Tensor.softmax must be inherited again, not a copy of the original"


def test_builtins_unavailable_inside_and_restored_after(capsys):
    import warnings

    from llmcourse.checks import OWN_WORK, BuiltinUnavailable, builtins_unavailable

    calls = _own_work_calls()
    before = _attributes()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for exercise in OWN_WORK:
            with builtins_unavailable(exercise):
                for name, label, call in calls:
                    if name != exercise:
                        if (exercise, name) not in USES_ANOTHER:
                            call()  # another exercise's built-ins stay available
                        continue
                    with pytest.raises(BuiltinUnavailable, match=f"write {exercise} yourself"):
                        call()
                        pytest.fail(f"{label} is available inside builtins_unavailable({exercise!r})")
                # the basic operations the exercises are written with still work, gradients included
                e = (x - x.amax(dim=-1, keepdim=True)).exp()
                y = e / e.sum(dim=-1, keepdim=True) + 0.5 * x * (1 + torch.erf(x / 2**0.5))
                y = (y - y.mean(-1, keepdim=True)) / (y.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
                y.sum().backward()
            _all_available(calls)
    assert _attributes() == before
    assert not caught, [str(w.message) for w in caught]
    assert capsys.readouterr() == ("", "")


def test_builtins_unavailable_restores_when_the_block_raises_and_when_nested():
    from llmcourse.checks import BuiltinUnavailable, builtins_unavailable

    calls = _own_work_calls()
    before = _attributes()
    with pytest.raises(ZeroDivisionError):
        with builtins_unavailable("softmax", "gelu", "layer_norm", "scaled_dot_product_attention"):
            raise ZeroDivisionError
    _all_available(calls)
    assert _attributes() == before
    with builtins_unavailable("softmax"):
        with builtins_unavailable("softmax", "gelu"):
            with pytest.raises(BuiltinUnavailable):
                torch.nn.functional.gelu(torch.ones(2))
        torch.nn.functional.gelu(torch.ones(2))  # the inner block's built-ins are back ...
        with pytest.raises(BuiltinUnavailable):
            torch.ones(2).softmax(0)  # ... the outer block's are still unavailable
    _all_available(calls)
    assert _attributes() == before
    with pytest.raises(KeyError, match="no built-ins are listed"):
        with builtins_unavailable("sofmax"):
            pass


def test_every_own_work_exercise_blocks_its_operators_and_names_exist():
    from llmcourse.checks import OWN_WORK, OWN_WORK_OPS, _resolve

    assert set(OWN_WORK_OPS) == set(OWN_WORK)
    for names in OWN_WORK.values():
        for dotted in names:
            if ":" not in dotted:
                owner, attr = _resolve(dotted)
                assert hasattr(owner, attr), dotted  # a typo would silently leave a built-in available


def test_transformers_gelu_is_unavailable_once_imported():
    activations = pytest.importorskip("transformers.activations")
    from llmcourse.checks import BuiltinUnavailable, builtins_unavailable

    x = torch.randn(5)
    with builtins_unavailable("gelu"):
        for name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh", "gelu", "gelu_python"):
            with pytest.raises(BuiltinUnavailable):
                activations.ACT2FN[name](x)
    torch.testing.assert_close(activations.ACT2FN["gelu_new"](x), torch.nn.functional.gelu(x, approximate="tanh"))
