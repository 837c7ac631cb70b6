"""Outside checks: every graded test cell of every chapter decided where the student's code cannot reach.

nbgrader decides whether a test cell passed by looking at the kernel's outputs, and code in the kernel can change
anything: the tests, the check helpers, IPython itself (one ``input_transformers_cleanup`` line turns every later
cell into ``pass``). So the points come from here instead. A :class:`Probe` is the grader's own test of one
graded cell: it calls the chapter's exported code on inputs the grader chose and returns only data. It runs twice:

- on the **student's module**, in a fresh sandboxed process (``python -m autograder.probes MODULE OUT``) that
  writes tensors as safetensors and everything else as JSON, never pickle;
- on the course's **public fallbacks**, every chapter forced to its fallback, in a trusted process of the grader.

The grader compares the two in its own process with the probe's comparators (:func:`judge`) and writes the
diagnosis itself (shape, largest error and where, first wrong token). The notebook's own test cells still run in
the kernel: they are what the student sees, and a consistency check.

A chapter's probes live in ``autograder/probes/<module>.py`` as ``PROBES``, one or more per graded cell; a cell
passes when all of its probes pass. This package runs inside the sandbox: it imports torch, numpy, safetensors
and the course library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: A comparator gets (the student's value, the reference value), both plain data (numpy arrays for tensors,
#: JSON values otherwise), and returns None when they agree, else what is wrong in one line.
Comparator = Callable[[Any, Any], "str | None"]

MAX_OUTPUT_BYTES = 64 * 1024**2  # of one probe's files: more is an error of the student's code
MAX_DETAIL = 300


@dataclasses.dataclass(frozen=True)
class Probe:
    """The grader's own check of the graded cell ``cell``.

    ``run(module)`` calls the chapter's exports and returns ``{name: value}`` with tensors, numbers, strings,
    lists and dicts of those. Each value is compared with the reference by ``compare`` (one comparator for all,
    or one per name; a name without one uses :func:`close`). ``forbid`` names exercises of
    :data:`llmcourse.checks.OWN_WORK` whose built-ins are unavailable while ``run`` executes (on the student's
    side only). ``name`` tells several probes of one cell apart.
    """

    cell: str
    run: Callable[[Any], dict[str, Any]]
    compare: Comparator | Mapping[str, Comparator] | None = None
    forbid: tuple[str, ...] = ()
    timeout: float = 60.0
    name: str = ""

    @property
    def key(self) -> str:
        return f"{self.cell}/{self.name}" if self.name else self.cell

    def comparator(self, output: str) -> Comparator:
        if callable(self.compare):
            return self.compare
        if isinstance(self.compare, Mapping) and output in self.compare:
            return self.compare[output]
        return close()


def chapter_probes(module: str) -> list[Probe]:
    """The probes of the chapter whose module is ``module`` (``attention``); [] when it has none."""
    try:
        found = importlib.import_module(f"autograder.probes.{module}")
    except ModuleNotFoundError as err:
        if err.name == f"autograder.probes.{module}":
            return []
        raise
    return list(found.PROBES)


# ---------------------------------------------------------------------------------------------------------------
# comparators: plain data in, a diagnosis out (run in the grader)


def _fmt(x) -> str:
    return f"{float(x):.6g}" if isinstance(x, (int, float, np.floating, np.integer)) else repr(x)[:60]


def _array(value, what: str) -> np.ndarray | str:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
        return f"{what} is {type(value).__name__} {value!r:.60}, expected numbers"
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return f"{what} is not an array of numbers"
    return array


@contextlib.contextmanager
def replaced(module, name: str, value):
    """``module.name`` is ``value`` inside the block, then what it was (or absent, if it was): how a probe makes the
    student's module use a known-good piece of its own chapter, so that one mistake costs one cell."""
    missing = object()
    old = vars(module).get(name, missing)
    setattr(module, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(module, name)
        else:
            setattr(module, name, old)


def at_most(limit: float) -> Comparator:
    """The largest magnitude in the student's result is at most ``limit`` (the reference is not used: the notebook
    checks a bound, like an error that must stay small)."""

    def compare(got, expected):
        try:
            value = float(np.max(np.abs(np.asarray(got, dtype=np.float64))))
        except (TypeError, ValueError):
            return f"not a number: {got!r:.60}"
        return None if value <= limit else f"{value:.4g}, more than the {limit:g} allowed"

    return compare


def raised(call) -> str:
    """The name of the exception ``call()`` raises (the student's code may raise anything), or "no error": what a
    probe returns for a bad input, to be compared with the reference's."""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - which error it was is the result
        return type(err).__name__
    return "no error"


def same_losses(atol: float, first: str, second: str) -> Comparator:
    """[losses, losses] of two runs of the student's own code that must agree (a resumed and an uninterrupted run,
    two runs with one seed): equal within ``atol`` step by step. The reference is not used."""

    def compare(got, expected):
        try:
            a, b = ([float(v) for v in run] for run in got)
        except (TypeError, ValueError):
            return f"got {got!r:.60}, expected two lists of losses"
        if len(a) != len(b) or any(not abs(u - v) <= atol for u, v in zip(a, b)):
            return f"{first} {[round(v, 6) for v in a][:8]}, {second} {[round(v, 6) for v in b][:8]}"
        return None

    return compare


def close(atol: float = 1e-5, rtol: float = 1e-5, dtype: bool = True) -> Comparator:
    """Equal shape, numeric, the reference's dtype (unless ``dtype=False``), and
    ``|got - expected| <= atol + rtol * |expected|`` element by element (the same infinity on both sides is
    equal; NaN never is)."""

    def compare(got, expected):
        e = _array(expected, "the reference")
        if isinstance(e, str):
            raise TypeError(e)
        g = _array(got, "the result")
        if isinstance(g, str):
            return g
        if g.shape != e.shape:
            return f"shape {tuple(g.shape)}, expected {tuple(e.shape)}"
        if g.dtype.kind not in "biuf":
            return f"dtype {g.dtype} is not numeric"
        if dtype and isinstance(expected, np.ndarray) and isinstance(got, np.ndarray) and g.dtype != e.dtype:
            return f"dtype {g.dtype}, expected {e.dtype}"
        if g.size == 0:
            return None
        g64, e64 = g.astype(np.float64), e.astype(np.float64)
        with np.errstate(invalid="ignore"):
            err = np.abs(g64 - e64)
        err = np.where((g64 == e64), 0.0, err)  # equal infinities
        err = np.where(np.isnan(err), np.inf, err)
        bound = atol + rtol * np.abs(np.nan_to_num(e64, posinf=0.0, neginf=0.0))
        off = err > bound
        if not off.any():
            return None
        where = np.unravel_index(int(np.argmax(np.where(off, err, -1.0))), err.shape)
        at = tuple(int(i) for i in where)
        return (f"max abs error {_fmt(err[where])} at index {at}: got {_fmt(g64[where])}, expected "
                f"{_fmt(e64[where])} ({int(off.sum())} of {off.size} elements off; atol={atol:g}, rtol={rtol:g})")

    return compare


def equal() -> Comparator:
    """Exactly equal: arrays of the same shape and values (integers and booleans compare as numbers), or JSON
    values equal as Python values; a sequence says where it first differs."""

    def compare(got, expected):
        if isinstance(expected, np.ndarray):
            g = _array(got, "the result")
            if isinstance(g, str):
                return g
            if g.shape != expected.shape:
                return f"shape {tuple(g.shape)}, expected {tuple(expected.shape)}"
            if g.dtype.kind not in "biuf":
                return f"dtype {g.dtype} is not numeric"
            if g.dtype.kind != expected.dtype.kind:
                return f"dtype {g.dtype}, expected {expected.dtype}"
            diff = g != expected
            if not diff.any():
                return None
            at = tuple(int(i) for i in np.argwhere(diff)[0])
            return f"differs at index {at}: got {_fmt(g[at])}, expected {_fmt(expected[at])}"
        if isinstance(expected, list) and isinstance(got, list):
            for i, (a, b) in enumerate(zip(got, expected)):
                if a != b:
                    return f"differs at position {i}: got {a!r:.60}, expected {b!r:.60}"
            if len(got) != len(expected):
                return f"the first {min(len(got), len(expected))} items agree, but got {len(got)}, expected " \
                       f"{len(expected)}"
            return None
        if got != expected or type(got) is not type(expected) and not (
                isinstance(got, (int, float)) and isinstance(expected, (int, float)) and not isinstance(got, bool)):
            return f"got {got!r:.80}, expected {expected!r:.80}"
        return None

    return compare


def tokens() -> Comparator:
    """Two sequences of token ids are equal; the diagnosis names the first wrong token."""

    def as_list(value):
        if isinstance(value, np.ndarray):
            return value.reshape(-1).tolist() if value.dtype.kind in "biu" else None
        if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            return value
        return None

    def compare(got, expected):
        e = as_list(expected)
        if e is None:
            raise TypeError("the reference is not a sequence of token ids")
        g = as_list(got)
        if g is None:
            return f"not a sequence of integer token ids: {type(got).__name__}"
        for i, (a, b) in enumerate(zip(g, e)):
            if a != b:
                return (f"first wrong token at position {i}: got {a}, expected {b} "
                        f"(got {g[max(0, i - 3): i + 4]}, expected {e[max(0, i - 3): i + 4]})")
        if len(g) != len(e):
            return f"the first {min(len(g), len(e))} tokens agree, but got {len(g)} tokens, expected {len(e)}"
        return None

    return compare


def judge(probe: Probe, theirs: dict | None, reference: dict) -> tuple[str, str]:
    """("pass" | "fail" | "error", diagnosis) of one probe from plain data: ``theirs`` and ``reference`` are
    ``{"values": {name: value}, "error": str | None}`` as :func:`load_output` reads them (None: no output)."""
    if reference.get("error"):
        raise RuntimeError(f"the reference of {probe.key} failed: {reference['error']}")
    if theirs is None:
        return "error", "no result"
    if theirs.get("error"):
        return "error", str(theirs["error"])[:MAX_DETAIL]
    values = theirs.get("values", {})
    for name, expected in reference["values"].items():
        if name not in values:
            return "fail", f"{name}: no result"
        try:
            problem = probe.comparator(name)(values[name], expected)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as err:
            problem = f"cannot be compared ({type(err).__name__}: {err})"
        if problem:
            return "fail", f"{name}: {problem}"[:MAX_DETAIL]
    return "pass", ""


# ---------------------------------------------------------------------------------------------------------------
# data out of a process: safetensors for tensors, JSON for the rest, never pickle


def _jsonable(value, path: str):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{path}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{path} is a {type(value).__name__}, which the check cannot read back")


def save_output(out: Path, key: str, values: dict | None, error: str | None, seconds: float) -> None:
    """Write one probe's result as ``<file>.safetensors`` (tensors) and ``<file>.json`` (the rest)."""
    import torch
    from safetensors.torch import save_file

    tensors, plain = {}, {}
    try:
        for name, value in (values or {}).items():
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu()
                if t.is_complex() or t.dtype in (torch.bfloat16,):
                    t = t.to(torch.float32) if not t.is_complex() else t
                tensors[name] = t.contiguous().clone()
            else:
                plain[name] = _jsonable(value, name)
    except (TypeError, ValueError) as err:
        tensors, plain, error = {}, {}, f"{type(err).__name__}: {err}"
    stem = out / file_stem(key)
    if tensors:
        save_file(tensors, str(stem) + ".safetensors")
    record = {"key": key, "values": plain, "tensors": sorted(tensors), "error": error, "seconds": round(seconds, 3)}
    (Path(str(stem) + ".json")).write_text(json.dumps(record, allow_nan=True))


def file_stem(key: str) -> str:
    return key.replace("/", "__")


def load_output(out: Path, key: str) -> dict | None:
    """One probe's result as plain data (tensors as numpy arrays), or None when it is missing or unreadable."""
    from safetensors.numpy import load_file

    stem = Path(out) / file_stem(key)
    meta = Path(str(stem) + ".json")
    try:
        if meta.stat().st_size > MAX_OUTPUT_BYTES:
            return {"values": {}, "error": "its output is larger than the grader reads"}
        record = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        values = record.get("values") if isinstance(record.get("values"), dict) else {}
        names = record.get("tensors") if isinstance(record.get("tensors"), list) else []
        if names:
            path = Path(str(stem) + ".safetensors")
            if path.stat().st_size > MAX_OUTPUT_BYTES:
                return {"values": {}, "error": "its output is larger than the grader reads"}
            arrays = load_file(str(path))
            values.update({n: arrays[n] for n in names if n in arrays})
        error = record.get("error")
        return {"values": values, "error": str(error)[:MAX_DETAIL] if error else None}
    except (OSError, ValueError, TypeError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# the probe process


class ProbeTimeout(BaseException):
    """A probe ran past its time limit (a BaseException, so ``except Exception`` in student code cannot eat it)."""


def _on_alarm(signum, frame):
    raise ProbeTimeout


def _describe(err: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    return text.splitlines()[-1][:MAX_DETAIL] if text else type(err).__name__


def _progress(out: Path, line: str) -> None:
    with open(out / "progress.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class _OwnWorkGuard:
    """``llmcourse.checks.builtins_unavailable`` and its tables as they were before any student code ran: put back
    before each probe, so an export cell that rebinds or empties them changes nothing. (A determined student can
    still reach a built-in by routes the tables do not list: ``book/instructor/guarantees.md`` says so.)"""

    def __init__(self):
        from llmcourse import checks

        self.checks = checks
        self.guard = checks.builtins_unavailable
        self.tables = {name: {k: tuple(v) for k, v in getattr(checks, name).items()}
                       for name in ("OWN_WORK", "OWN_WORK_OPS") if hasattr(checks, name)}

    def __call__(self, *exercises):
        for name, table in self.tables.items():
            current = getattr(self.checks, name)
            current.clear()
            current.update(table)
        return self.guard(*exercises)


_GUARD: _OwnWorkGuard | None = None


def run_probe(module, probe: Probe, reference: bool = False) -> tuple[dict | None, str | None]:
    """Run one probe on ``module``: (its values, None) or (None, what went wrong)."""
    import torch

    global _GUARD
    if _GUARD is None:
        _GUARD = _OwnWorkGuard()
    torch.manual_seed(0)
    forbid = () if reference else probe.forbid
    try:
        with torch.no_grad(), _GUARD(*forbid):
            values = probe.run(module)
        if not isinstance(values, dict):
            return None, f"the check returned {type(values).__name__}"
        return values, None
    except ProbeTimeout:
        raise
    except Exception as err:  # noqa: BLE001 - the student's code may raise anything
        return None, _describe(err)


def run_all(module_name: str, out: Path, skip: set[str] = frozenset(), reference: bool = False) -> None:
    """In the probe process: import the chapter module, run every probe not in ``skip``, write each result."""
    out.mkdir(parents=True, exist_ok=True)
    _progress(out, "start")
    probes = chapter_probes(module_name)
    import torch  # noqa: F401 - imported before the student's code, so its time is not charged to it

    global _GUARD
    _GUARD = _OwnWorkGuard()  # before the student's code runs

    signal.signal(signal.SIGALRM, _on_alarm)
    _progress(out, "import")
    signal.setitimer(signal.ITIMER_REAL, 120)
    try:
        module = importlib.import_module(f"llmcourse.chapters.{module_name}")
        error = None
    except ProbeTimeout:
        module, error = None, "importing the chapter's exported cells took longer than 120 s"
    except BaseException as err:  # noqa: BLE001 - SystemExit and the like from student code too
        module, error = None, f"importing the chapter's exported cells failed: {_describe(err)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    for probe in probes:
        if probe.key in skip:
            continue
        _progress(out, f"probe {probe.key}")
        started = time.monotonic()
        if module is None:
            values, problem = None, error
        else:
            signal.setitimer(signal.ITIMER_REAL, probe.timeout)
            try:
                values, problem = run_probe(module, probe, reference)
            except ProbeTimeout:
                values, problem = None, f"did not finish within {probe.timeout:g} s"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        save_output(out, probe.key, values, problem, time.monotonic() - started)
        _progress(out, f"done {probe.key}")
    _progress(out, "end")


def main(argv: list[str]) -> int:
    """``python -m autograder.probes MODULE OUT [--skip KEY,KEY] [--reference]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autograder.probes")
    parser.add_argument("module")
    parser.add_argument("out", type=Path)
    parser.add_argument("--skip", default="")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args(argv)
    run_all(args.module, args.out, {k for k in args.skip.split(",") if k}, args.reference)
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: student objects' __del__ cannot change anything after this


__all__ = ["Probe", "Comparator", "chapter_probes", "close", "equal", "tokens", "judge", "at_most", "raised",
           "save_output", "load_output", "run_all", "run_probe"]
