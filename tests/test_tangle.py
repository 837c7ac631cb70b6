"""python -m llmcourse.tangle: the exported cells as plain Python that imports and runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import torch
from conftest import ROOT


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_tangle_package(tmp_path):
    out = tmp_path / "gpt_pkg"
    proc = subprocess.run([sys.executable, "-m", "llmcourse.tangle", "solutions", "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = (out / "attention.py").read_text()
    assert "#| export" not in text and "04a_attention.ipynb, cell" in text
    assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text
    sys.path.insert(0, str(tmp_path))
    try:
        from gpt_pkg import attention
    finally:
        sys.path.remove(str(tmp_path))
    q = k = v = torch.randn(2, 5, 8)
    mask = attention.causal_mask(5)
    torch.testing.assert_close(attention.scaled_dot_product_attention(q, k, v, mask),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_tangle_single_file_rewrites_cross_chapter_imports(tmp_path):
    from llmcourse.tangle import _rewrite_imports

    src = ("from __future__ import annotations\n"
           "from llmcourse.chapters.attention import softmax as sm, causal_mask\nx = 1\n")
    assert _rewrite_imports(src, single=False) == "from .attention import softmax as sm, causal_mask\nx = 1\n"
    assert _rewrite_imports(src, single=True) == "sm = softmax\nx = 1\n"
    proc = subprocess.run([sys.executable, "-m", "llmcourse.tangle", "solutions", "-o", str(tmp_path),
                           "--single", "gpt.py"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    gpt = load(tmp_path / "gpt.py", "tangled_gpt")
    assert gpt.causal_mask(2).tolist() == [[True, False], [True, True]]


def test_tangle_bad_source_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmcourse.tangle", str(tmp_path / "none"), "-o", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "no such notebook or folder" in proc.stderr
