"""Assertions for visible tests that say what is wrong, not only that something is.

Each check returns None and prints nothing when it passes (nbgrader counts any output on stderr in a test cell
as a failure), and raises ``AssertionError`` with a message that names the value, what was expected and where
the first difference is when it fails:

>>> check_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), name="softmax(x)")
AssertionError: softmax(x): values differ: max abs error 0.5 at index (1,): got 2.0, expected 2.5 ...
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence

import torch

__all__ = ["check_shape", "check_dtype", "check_close", "check_tokens", "check", "builtins_unavailable",
           "BuiltinUnavailable", "OWN_WORK", "OWN_WORK_OPS"]


def check(condition: bool, message: str) -> None:
    """``assert condition, message``, which also works when Python runs with assertions off."""
    if not condition:
        raise AssertionError(message)


def _as_tensor(value, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if value is None or isinstance(value, (str, bytes, dict)):
        raise AssertionError(f"{name}: expected a tensor, got {type(value).__name__} {value!r:.80}")
    try:
        return torch.as_tensor(value, dtype=None if like is None else like.dtype)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{name}: expected a tensor, got {type(value).__name__}") from None


def check_shape(actual, expected: Sequence[int], name: str = "result") -> None:
    """The tensor ``actual`` has shape ``expected``."""
    actual = _as_tensor(actual, name)
    expected = tuple(expected)
    if tuple(actual.shape) != expected:
        raise AssertionError(f"{name}: wrong shape: got {tuple(actual.shape)}, expected {expected}")


def check_dtype(actual, expected: torch.dtype, name: str = "result") -> None:
    actual = _as_tensor(actual, name)
    if actual.dtype != expected:
        raise AssertionError(f"{name}: wrong dtype: got {actual.dtype}, expected {expected}")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def check_close(actual, expected, *, atol: float = 1e-5, rtol: float = 1e-5, name: str = "result",
                check_dtype: bool = True) -> None:
    """``actual`` equals ``expected`` within ``|a - e| <= atol + rtol * |e|``, element by element.

    Checks, in this order, so the first message is the most useful one: it is a tensor, the shape, the dtype
    (when ``expected`` is a tensor and ``check_dtype``), NaN/inf where the expected value is finite, and the
    values, reporting the largest error, where it is and how many elements are off.
    """
    expected_t = _as_tensor(expected, f"{name} (expected value)")
    actual_t = _as_tensor(actual, name, like=expected_t if not isinstance(expected, torch.Tensor) else None)
    check_shape(actual_t, expected_t.shape, name)
    if check_dtype and isinstance(expected, torch.Tensor) and actual_t.dtype != expected_t.dtype:
        raise AssertionError(f"{name}: wrong dtype: got {actual_t.dtype}, expected {expected_t.dtype}")
    a = actual_t.detach().to("cpu", torch.float64)
    e = expected_t.detach().to("cpu", torch.float64)
    bad_nan = (~torch.isfinite(a)) & torch.isfinite(e)
    if bad_nan.any():
        where = tuple(int(i) for i in bad_nan.nonzero()[0])
        raise AssertionError(
            f"{name}: {int(bad_nan.sum())} element(s) are {_fmt(a[where].item())} where a finite value is "
            f"expected; the first at index {where} (expected {_fmt(e[where].item())}). "
            "Overflow in exp()? Subtract the maximum before exponentiating."
        )
    both_inf = (a == e) & ~torch.isfinite(e)  # the same infinity on both sides counts as equal
    err = torch.where(both_inf, torch.zeros_like(a), (a - e).abs())
    err = torch.nan_to_num(err, nan=float("inf"))
    off = err > atol + rtol * e.abs().nan_to_num(0.0)
    if off.any():
        flat = int(torch.argmax(err).item()) if err.numel() else 0
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape)) if err.dim() else ()
        raise AssertionError(
            f"{name}: values differ: max abs error {_fmt(err.max().item())} at index {where}: "
            f"got {_fmt(a[where].item())}, expected {_fmt(e[where].item())} "
            f"({int(off.sum())} of {off.numel()} elements outside atol={atol:g}, rtol={rtol:g})"
        )


def check_tokens(actual, expected, name: str = "tokens") -> None:
    """Two token sequences are equal; a failure names the first position where they differ."""
    def as_list(x, what):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().reshape(-1).tolist()
        try:
            return [int(t) for t in x]
        except (TypeError, ValueError):
            raise AssertionError(f"{name}: {what} is not a sequence of token ids: {x!r:.80}") from None

    a, e = as_list(actual, "the result"), as_list(expected, "the expected value")
    for i, (x, y) in enumerate(zip(a, e)):
        if x != y:
            raise AssertionError(
                f"{name}: first mismatch at position {i}: got {x}, expected {y} "
                f"(context: got {a[max(0, i - 3): i + 4]}, expected {e[max(0, i - 3): i + 4]})"
            )
    if len(a) != len(e):
        raise AssertionError(
            f"{name}: the first {min(len(a), len(e))} tokens agree, but got {len(a)} tokens, expected {len(e)}"
        )


#: Where writing an operation that PyTorch already has *is* the exercise, the graded checks run the student's
#: function with these built-ins unavailable (an exercise name -> the dotted names of the built-ins that would
#: do the whole job in one call). ``module:attr.path`` names something outside torch (transformers' GELU
#: classes): it is made unavailable only when that module is already imported (importing transformers to find
#: out costs seconds). The modules ``nn.Softmax``, ``nn.GELU``, ``nn.LayerNorm`` and ``nn.MultiheadAttention``
#: call the functional names below, so they are unavailable too.
OWN_WORK: dict[str, tuple[str, ...]] = {
    "softmax": ("torch.softmax", "torch.Tensor.softmax", "torch.nn.functional.softmax", "torch.special.softmax",
                "torch.log_softmax", "torch.Tensor.log_softmax", "torch.nn.functional.log_softmax",
                "torch.special.log_softmax", "torch._softmax", "torch._log_softmax", "torch._safe_softmax",
                "torch._masked_softmax", "torch.nn.functional.softmin", "torch.nn.functional.gumbel_softmax"),
    "scaled_dot_product_attention": ("torch.nn.functional.scaled_dot_product_attention",
                                     "torch._C._nn.scaled_dot_product_attention",
                                     "torch.nn.functional.multi_head_attention_forward",
                                     "torch._native_multi_head_attention",
                                     "torch._scaled_dot_product_attention_math"),
    "gelu": ("torch.nn.functional.gelu", "torch._C._nn.gelu",
             *(f"transformers.activations:{name}.forward" for name in (
                 "GELUActivation", "GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "FastGELUActivation",
                 "AccurateGELUActivation", "ClippedGELUActivation"))),
    "layer_norm": ("torch.nn.functional.layer_norm", "torch.layer_norm", "torch.native_layer_norm",
                   # one call that normalizes each row as well: group_norm with one group, instance_norm and
                   # batch_norm on the transposed input
                   "torch.nn.functional.group_norm", "torch.group_norm", "torch.native_group_norm",
                   "torch.nn.functional.instance_norm", "torch.instance_norm",
                   "torch.nn.functional.batch_norm", "torch.batch_norm", "torch.native_batch_norm"),
    # chapter 4e: RMSNorm (PyTorch's and Hugging Face's Llama's would do it in one call)
    "rms_norm": ("torch.nn.functional.rms_norm", "torch.rms_norm", "torch._fused_rms_norm",
                 "transformers.models.llama.modeling_llama:LlamaRMSNorm.forward"),
    # chapter 5b: the loss, the gradient clipping, the optimizer and two backward passes, by hand
    "cross_entropy": ("torch.nn.functional.cross_entropy", "torch._C._nn.cross_entropy_loss",
                      "torch.nn.functional.nll_loss", "torch._C._nn.nll_loss", "torch._C._nn.nll_loss_nd",
                      "torch.logsumexp", "torch.Tensor.logsumexp", "torch.special.logsumexp"),
    "clip_grad_norm": ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm",
                       "torch.nn.utils.clip_grad.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_norm",
                       "torch.nn.utils.clip_grads_with_norm_", "torch.nn.utils.clip_grad._clip_grads_with_norm_",
                       "torch.nn.utils.get_total_norm", "torch.nn.utils.clip_grad._get_total_norm"),
    "adamw": ("torch.optim.AdamW.step", "torch.optim.Adam.step", "torch.optim.adamw.AdamW.step",
              "torch.optim.adam.Adam.step", "torch.optim.adam.adam", "torch.optim.adamw.adamw",
              "torch.optim._functional.adam", "torch.optim._functional.adamw", "torch.optim.adam._single_tensor_adam",
              "torch.optim.adam._multi_tensor_adam", "torch.optim.adam._fused_adam", "torch._fused_adam_",
              "torch._fused_adamw_"),
    # a backward pass by hand: PyTorch's own, and the autograd functions that would compute it from the forward
    # (not Tensor.backward: code inside the block may still need gradients of its own)
    "softmax_backward": ("torch._softmax_backward_data", "torch.autograd.grad",
                         "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian",
                         "torch.func.vjp", "torch.func.grad", "torch.func.grad_and_value", "torch.func.jacrev",
                         "torch.func.jacfwd", "torch.func.jvp"),
    "layer_norm_backward": ("torch.autograd.grad", "torch.autograd.functional.vjp",
                            "torch.autograd.functional.jacobian", "torch.func.vjp", "torch.func.grad",
                            "torch.func.grad_and_value", "torch.func.jacrev", "torch.func.jacfwd", "torch.func.jvp"),
}

#: The same built-ins where every way of calling them meets: PyTorch's operators (``aten::<name>``), replaced in
#: the dispatcher for the duration of the block. This also catches what renaming cannot reach: a reference taken
#: before the block (``from torch.nn.functional import gelu as g``, a default argument), ``torch.ops.aten.gelu``,
#: and any other path into the operator. (Basic operations such as exp, sum, amax, mean, erf, tanh are not in it.)
OWN_WORK_OPS: dict[str, tuple[str, ...]] = {
    "softmax": ("_softmax", "_log_softmax", "_safe_softmax", "_masked_softmax"),
    "scaled_dot_product_attention": ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                                     "_scaled_dot_product_flash_attention_for_cpu",
                                     "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                                     "_scaled_dot_product_cudnn_attention", "_native_multi_head_attention"),
    "gelu": ("gelu",),
    "layer_norm": ("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "batch_norm",
                   "native_batch_norm", "_native_batch_norm_legit", "_batch_norm_with_update"),
    "rms_norm": ("rms_norm", "_fused_rms_norm"),
    "cross_entropy": ("cross_entropy_loss", "nll_loss", "nll_loss_nd", "nll_loss_forward", "nll_loss2d",
                      "nll_loss2d_forward", "logsumexp"),
    "clip_grad_norm": ("_foreach_norm.Scalar",),  # the norms of many tensors in one call (get_total_norm's)
    "adamw": ("_fused_adam_", "_fused_adamw_"),
    "softmax_backward": ("_softmax_backward_data",),
    "layer_norm_backward": ("native_layer_norm_backward",),
}

#: The dispatch keys an operator's own kernels sit under (a backend's, or the device-independent ones).
_DISPATCH_KEYS = ("CPU", "CUDA", "MPS", "XPU", "CompositeImplicitAutograd", "CompositeExplicitAutograd")


class BuiltinUnavailable(AssertionError):
    """The student's function called a built-in that the exercise asks them to write themselves."""


def _resolve(dotted: str):
    """(the object that holds the attribute, the attribute's name) for ``torch.nn.functional.gelu``, or for
    ``transformers.activations:NewGELUActivation.forward`` when that module is imported (else ImportError)."""
    if ":" in dotted:
        module_name, _, path = dotted.partition(":")
        if module_name not in sys.modules:
            raise ImportError(f"{module_name} is not imported")
        owner = sys.modules[module_name]
        *parents, attr = path.split(".")
        for part in parents:
            owner = getattr(owner, part)
        return owner, attr
    module_name, _, attr = dotted.rpartition(".")
    parts = module_name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            owner = getattr(owner, part)
        return owner, attr
    raise ImportError(dotted)


def _unavailable(name: str, exercise: str):
    def unavailable(*args, **kwargs):
        raise BuiltinUnavailable(
            f"{name} is not available here: this exercise is to write {exercise} yourself, from the formula "
            "(basic tensor operations such as exp, sum, max, mean, matmul are fine)")

    return unavailable


def _block_operators(exercise: str, library) -> None:
    """Register, in ``library`` (``torch.library.Library("aten", "IMPL")``), a kernel that raises for every
    operator of :data:`OWN_WORK_OPS` of ``exercise``, under each dispatch key where the operator has its own."""
    for op in OWN_WORK_OPS.get(exercise, ()):
        kernel = _unavailable(f"PyTorch's {op.lstrip('_')} (aten::{op}, under any name)", exercise)
        for key in _DISPATCH_KEYS:
            try:
                has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", key)
            except RuntimeError:  # no such operator in this version of PyTorch
                break
            if has_kernel:
                library.impl(op, kernel, key)


@contextlib.contextmanager
def builtins_unavailable(*exercises: str) -> Iterator[None]:
    """Inside the block, calling a built-in of :data:`OWN_WORK` (by any name: the operators of
    :data:`OWN_WORK_OPS` are replaced in PyTorch's dispatcher) for ``exercises`` raises :class:`BuiltinUnavailable`
    that says which exercise wants the student's own code. Everything comes back after the block, also when it
    raises.

    >>> with builtins_unavailable("softmax"):
    ...     p = softmax(x)          # passes only if softmax is written without torch.softmax & co.
    >>> check_close(p, torch.softmax(x, dim=-1))   # the built-in, outside the block, for the expected value
    """
    unknown = [e for e in exercises if e not in OWN_WORK]
    if unknown:
        raise KeyError(f"no built-ins are listed for {unknown}; known: {sorted(OWN_WORK)}")
    saved = []
    library = None
    try:
        for exercise in exercises:
            for dotted in OWN_WORK[exercise]:
                try:
                    owner, attr = _resolve(dotted)
                except (ImportError, AttributeError):
                    continue
                if not hasattr(owner, attr):
                    continue
                own = attr in vars(owner)  # a class may inherit it: then restoring means deleting ours
                saved.append((owner, attr, own, vars(owner)[attr] if own else None))
                setattr(owner, attr, _unavailable(dotted.replace(":", "."), exercise))
        if any(OWN_WORK_OPS.get(e) for e in exercises):
            with warnings.catch_warnings():  # "overriding a previously registered kernel": that is the point
                warnings.simplefilter("ignore")
                library = torch.library.Library("aten", "IMPL")
                for exercise in exercises:
                    _block_operators(exercise, library)
        yield
    finally:
        if library is not None:
            library._destroy()  # the operators' own kernels are back
        for owner, attr, own, original in reversed(saved):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
