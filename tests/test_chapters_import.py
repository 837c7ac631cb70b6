"""The import mechanism: ``llmcourse.chapters.<name>`` from a notebook's ``#| export`` cells."""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llmcourse import registry
from llmcourse.chapters import ChapterNotFound, reload_all


def write_chapter(tree: Path, chapter: str, *sources: str) -> Path:
    """A chapter notebook in ``tree`` with one code cell per source (and a markdown cell first)."""
    path = tree / chapter / f"{chapter}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=[new_markdown_cell("# a chapter"), *(new_code_cell(s) for s in sources)])
    nbformat.write(nb, path)
    return path


@pytest.fixture
def tree(tmp_path):
    """A folder of two chapter notebooks; 04b imports 04a."""
    tree = tmp_path / "tree"
    write_chapter(
        tree, "04a_attention",
        "#| export\ndef double(x):\n    return 2 * x\n",
        "print('this cell is not exported')\nNOT_EXPORTED = 1\n",
        "#| export\ndef boom():\n    value = 41\n    raise ValueError(f'bad value {value}')\n",
        "#| export\ndef todo():\n    raise NotImplementedError('Exercise 4a.9: write todo here')\n",
    )
    write_chapter(
        tree, "04b_multi_head_attention",
        "#| export\nfrom llmcourse.chapters.attention import double\n\ndef quad(x):\n    return double(double(x))\n",
    )
    return tree


def test_module_name_and_ids():
    assert registry.module_name("04a_attention") == "attention"
    assert registry.chapter_number("04a_attention") == "4a"
    assert registry.chapter_id("attention") == "04a_attention"
    assert registry.chapter_id("04a_attention") == "04a_attention"
    with pytest.raises(ValueError, match="not a chapter id"):
        registry.module_name("attention")


def test_imports_from_the_tree_of_the_current_chapter_folder(tree, monkeypatch):
    monkeypatch.chdir(tree / "04b_multi_head_attention")
    from llmcourse.chapters.multi_head_attention import quad

    assert quad(3) == 12
    import llmcourse.chapters.attention as attention

    assert Path(attention.__file__) == tree / "04a_attention" / "04a_attention.ipynb"
    assert not hasattr(attention, "NOT_EXPORTED"), "only #| export cells belong to the module"


def test_a_chapter_module_imports_from_its_own_tree(tree, monkeypatch):
    monkeypatch.chdir(ROOT)  # the cwd alone would say chapters/
    importer = tree / "04b_multi_head_attention" / "04b_multi_head_attention.ipynb"
    assert registry.source_tree(str(importer)) == tree
    assert registry.source_tree() == ROOT / "chapters"


def test_source_setting_chooses_the_tree(tree, monkeypatch):
    monkeypatch.chdir(tree / "04a_attention")
    for setting, expected in [("solutions", ROOT / "solutions"), ("chapters", ROOT / "chapters"),
                              (str(tree), tree)]:
        monkeypatch.setenv("LLMCOURSE_SOURCE", setting)
        reload_all()
        import llmcourse.chapters.attention as attention

        assert Path(attention.__file__) == expected / "04a_attention" / "04a_attention.ipynb"


def test_a_bad_source_setting_says_what_is_expected(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCOURSE_SOURCE", str(tmp_path / "nowhere"))
    with pytest.raises(ImportError, match="is not a folder. Expected 'chapters', 'solutions'"):
        import llmcourse.chapters.attention  # noqa: F401


def test_outside_the_course_says_how_to_choose(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImportError, match="set LLMCOURSE_SOURCE"):
        import llmcourse.chapters.attention  # noqa: F401


def test_fallback_replaces_the_notebook(tree, monkeypatch):
    monkeypatch.chdir(tree / "04a_attention")
    for setting in ("attention", "attention,feed_forward", "04a_attention", "all"):
        monkeypatch.setenv("LLMCOURSE_FALLBACK", setting)
        reload_all()
        import llmcourse.chapters.attention as attention

        assert Path(attention.__file__) == ROOT / "llmcourse" / "fallbacks" / "attention.py"
        assert not hasattr(attention, "double")


def test_fallback_is_built_from_library_code_only():
    """A fallback uses torch / transformers / tokenizers and the course library; it may build on EARLIER chapters
    through the import mechanism (which resolves them to the student's code or their fallbacks), never on its own
    chapter or a later one, and never on solutions/. (A method may delegate to a later chapter when called, as
    GPT.generate does to chapter 5c: an import inside a function body is not part of building the module.)"""
    import ast

    order = {registry.module_name(c): i for i, c in enumerate(registry.CHAPTER_IDS)}
    for path in (ROOT / "llmcourse" / "fallbacks").glob("*.py"):
        if path.stem == "__init__":
            continue
        source = path.read_text()
        assert "solutions" not in source, f"{path} mentions solutions/"
        for node in ast.parse(source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    if name.startswith("llmcourse.chapters"):
                        imported = name.split(".")[2] if name.count(".") >= 2 else ""
                        assert imported in order and order[imported] < order[path.stem], (
                            f"{path.name} imports {name}: only earlier chapters may be imported")


def test_unknown_fallback_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "atention")
    with pytest.raises(ImportError, match="no chapter is called 'atention'.*comma-separated list"):
        import llmcourse.chapters.attention  # noqa: F401


def test_missing_fallback_file_is_a_clear_error(monkeypatch):
    """A registered chapter whose fallback is not written yet (every real chapter has one: a planned one)."""
    monkeypatch.setattr(registry, "MODULES", {**registry.MODULES, "planned": "09_planned"})
    monkeypatch.setenv("LLMCOURSE_FALLBACK", "planned")
    assert not (ROOT / "llmcourse" / "fallbacks" / "planned.py").exists()
    with pytest.raises(ChapterNotFound, match="chapter 09_planned, but the course has none yet"):
        import llmcourse.chapters.planned  # noqa: F401


def test_missing_chapter_says_what_to_do(tmp_path, monkeypatch):
    tree = tmp_path / "only_4b"
    write_chapter(tree, "04b_multi_head_attention",
                  "#| export\nfrom llmcourse.chapters.attention import double\n")
    monkeypatch.chdir(tree / "04b_multi_head_attention")
    with pytest.raises(ChapterNotFound) as info:
        import llmcourse.chapters.multi_head_attention  # noqa: F401
    message = str(info.value)
    assert "chapter 04a_attention has no notebook" in message
    assert "LLMCOURSE_FALLBACK=attention" in message


def test_unknown_chapter_lists_the_chapters(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ChapterNotFound, match="no chapter is called 'atention'.*attention"):
        import llmcourse.chapters.atention  # noqa: F401


def test_a_stub_says_which_exercise_and_how_to_go_on(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SOURCE", "chapters")
    import torch

    from llmcourse.chapters.attention import scaled_dot_product_attention

    with pytest.raises(NotImplementedError) as info:
        scaled_dot_product_attention(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2))
    assert "Exercise 4a.2" in str(info.value)
    assert "LLMCOURSE_FALLBACK=attention" in str(info.value)


def test_tracebacks_point_at_the_notebook_cell(tree, monkeypatch):
    monkeypatch.chdir(tree / "04a_attention")
    from llmcourse.chapters.attention import boom

    with pytest.raises(ValueError) as info:
        boom()
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.filename.endswith("04a_attention.ipynb, cell 4")
    assert last.lineno == 4
    assert last.line == "raise ValueError(f'bad value {value}')"


def test_errors_while_importing_name_the_cell(tmp_path, monkeypatch):
    tree = tmp_path / "broken"
    write_chapter(tree, "04a_attention", "#| export\nx = 1\n", "#| export\nimport math\nmath.sqrt(-1)\n")
    monkeypatch.chdir(tree / "04a_attention")
    with pytest.raises(ValueError) as info:
        import llmcourse.chapters.attention  # noqa: F401
    assert any("04a_attention.ipynb, cell 3" in note for note in info.value.__notes__)


def test_a_syntax_error_names_the_cell(tmp_path, monkeypatch):
    tree = tmp_path / "broken"
    write_chapter(tree, "04a_attention", "#| export\ndef f(:\n    pass\n")
    monkeypatch.chdir(tree / "04a_attention")
    with pytest.raises(SyntaxError) as info:
        import llmcourse.chapters.attention  # noqa: F401
    assert info.value.filename.endswith("04a_attention.ipynb, cell 2")


def test_a_corrupt_notebook_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "tree" / "04a_attention" / "04a_attention.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text('{"cells": [', encoding="utf-8")
    monkeypatch.chdir(path.parent)
    with pytest.raises(ImportError, match="not valid notebook JSON"):
        import llmcourse.chapters.attention  # noqa: F401


def test_reload_all_reads_edited_notebooks(tree, monkeypatch):
    monkeypatch.chdir(tree / "04a_attention")
    from llmcourse.chapters.attention import double

    assert double(2) == 4
    write_chapter(tree, "04a_attention", "#| export\ndef double(x):\n    return x + x + 1\n")
    reload_all()
    from llmcourse.chapters.attention import double

    assert double(2) == 5


def test_source_setting_in_a_script():
    """The README's example: scripts get the reference implementation with LLMCOURSE_SOURCE=solutions."""
    code = ("import torch\nfrom llmcourse.chapters.attention import causal_mask\n"
            "print(causal_mask(3).int().tolist())")
    env = {"PATH": "/usr/bin:/bin", "LLMCOURSE_SOURCE": "solutions"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[1, 0, 0], [1, 1, 0], [1, 1, 1]]"


def test_blank_lines_above_the_export_marker_are_allowed(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    write_chapter(tree, "04a_attention", "\n\n#| export\ndef f():\n    return 1\n")
    monkeypatch.chdir(tree / "04a_attention")
    from llmcourse.chapters.attention import f

    assert f() == 1
