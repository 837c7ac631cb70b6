from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (notebook_harness)


@pytest.fixture(autouse=True)
def clean_llmcourse_env(monkeypatch):
    """Every test starts without LLMCOURSE_* settings and with no chapter module imported."""
    from llmcourse.chapters import reload_all

    for name in list(os.environ):
        if name.startswith("LLMCOURSE_"):
            monkeypatch.delenv(name)
    reload_all()
    yield
    reload_all()


def import_from_solutions(*names: str) -> list:
    """Chapter modules (``llmcourse.chapters.<name>``) imported from solutions/, for module-scoped fixtures: the
    environment is restored at once, and the modules keep working after the next test's ``reload_all``."""
    import importlib

    from llmcourse.chapters import reload_all

    old = os.environ.get("LLMCOURSE_SOURCE")
    os.environ["LLMCOURSE_SOURCE"] = "solutions"
    try:
        reload_all()
        return [importlib.import_module(f"llmcourse.chapters.{name}") for name in names]
    finally:
        if old is None:
            os.environ.pop("LLMCOURSE_SOURCE", None)
        else:
            os.environ["LLMCOURSE_SOURCE"] = old


def without_key_bias(name: str, tensor):
    """``tensor`` without the keys' third of an attention's ``c_attn.bias`` (other parameters unchanged), for
    comparing two training runs: that bias gets no gradient (it adds one constant to a row of scores, which softmax
    ignores), so AdamW turns its float rounding noise into full-size steps that differ from run to run."""
    if not name.endswith("c_attn.bias"):
        return tensor
    C = tensor.numel() // 3
    return tensor[torch.arange(3 * C) // C != 1]


@pytest.fixture
def fallback_gpt(monkeypatch):
    """Every chapter on its public fallback (``LLMCOURSE_FALLBACK=all``); chapter 5a's ``GPT`` and ``GPTConfig``."""
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "all")
    from llmcourse.chapters.gpt import GPT
    from llmcourse.chapters.multi_head_attention import GPTConfig

    return GPT, GPTConfig


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The book built once for the whole session, every edition, with ``python -m autograder book --edition all
    --jobs 2`` into a scratch folder: the reader edition executes each notebook (two at a time); the student and
    instructor editions reuse its cache. Returns the folder holding ``_build``."""
    import subprocess

    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run([sys.executable, "-m", "autograder", "book", "--edition", "all", "--jobs", "2",
                           "--path-output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    return out


@pytest.fixture(scope="session")
def editions(built_book) -> dict[str, Path]:
    """``{edition: its html folder}`` of the session's book build."""
    from autograder.book import html_dir
    from autograder.book_pages import EDITIONS

    return {edition: html_dir(built_book, edition) for edition in EDITIONS}
