"""Write the ``#| export`` cells of chapter notebooks out as plain Python.

    python -m llmcourse.tangle solutions -o build/gpt_pkg          # a package: one module per chapter
    python -m llmcourse.tangle solutions -o build --single gpt.py  # one readable file, chapters in order

SOURCE is ``chapters``, ``solutions``, a folder of chapter folders, or one chapter notebook. In a package,
``from llmcourse.chapters.attention import f`` becomes ``from .attention import f``; in a single file the
cross-chapter imports disappear, since every chapter's names already live in the one module.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from llmcourse import registry
from llmcourse.notebook import NotebookError, export_body, export_cells

CHAPTER_PKG = "llmcourse.chapters"
SOLUTION_MARKERS = {"### BEGIN SOLUTION", "### END SOLUTION"}


def _rewrite_imports(source: str, single: bool) -> str:
    """Rewrite imports of chapter modules for a package (relative) or a single file (dropped)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []  # (first line, last line, replacement), 1-based inclusive
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            edits.append((node.lineno, node.end_lineno, ""))  # the header has it: it must come first
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
            node.module == CHAPTER_PKG or node.module.startswith(CHAPTER_PKG + ".")
        ):
            sub = node.module[len(CHAPTER_PKG):].lstrip(".")
            if single:
                aliases = [f"{a.asname} = {a.name}\n" for a in node.names if a.asname and a.asname != a.name]
                new = "".join(aliases)
            else:
                names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
                new = f"from .{sub} import {names}\n" if sub else f"from . import {names}\n"
            edits.append((node.lineno, node.end_lineno, new))
        elif isinstance(node, ast.Import) and any(a.name.startswith(CHAPTER_PKG + ".") for a in node.names):
            raise ValueError(
                f"line {node.lineno}: write 'from {CHAPTER_PKG}.<name> import ...' rather than "
                f"'import {CHAPTER_PKG}.<name>', so the exported code can be tangled"
            )
    for first, last, new in reversed(edits):
        lines[first - 1:last] = [new] if new else []
    return "".join(lines)


def tangle_notebook(notebook: Path, single: bool = False) -> str:
    """The exported cells of one notebook as the text of a module."""
    parts = []
    for cell in export_cells(notebook):
        body = export_body(cell.source)
        body = "".join(line for line in body.splitlines(keepends=True) if line.strip() not in SOLUTION_MARKERS)
        try:
            body = _rewrite_imports(body, single)
        except (SyntaxError, ValueError) as err:
            raise ValueError(f"{cell.filename}: {err}") from None
        label = f" ({cell.grade_id})" if cell.grade_id else ""
        parts.append(f"# {notebook.name}, cell {cell.index}{label}\n{body.strip()}\n")
    return "\n\n".join(parts)


def _header(notebooks: list[Path]) -> str:
    names = ", ".join(nb.name for nb in notebooks)
    return (f'"""Exported from {names} by python -m llmcourse.tangle: edit the notebook, not this file."""\n\n'
            "# ruff: noqa\nfrom __future__ import annotations\n\n")


def _notebooks(source: str) -> list[Path]:
    path = registry.COURSE_ROOT / source if source in registry.TREES else Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{source}: no such notebook or folder of chapter folders")
    found = [registry.notebook_path(path, cid) for cid in registry.chapters_in(path)]
    if not found:
        raise FileNotFoundError(f"{path} holds no chapter notebooks (expected <id>/<id>.ipynb folders)")
    return found


def tangle(source: str, out: Path, single: str | None = None) -> list[Path]:
    """Tangle SOURCE into the folder ``out``; returns the files written."""
    notebooks = _notebooks(source)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if single:
        bodies = [f"# {'=' * 20} {nb.stem} {'=' * 20}\n\n{tangle_notebook(nb, single=True)}" for nb in notebooks]
        target = out / single
        target.write_text(_header(notebooks) + "\n\n".join(bodies), encoding="utf-8")
        return [target]
    for nb in notebooks:
        target = out / f"{registry.module_name(nb.stem)}.py"
        target.write_text(_header([nb]) + tangle_notebook(nb), encoding="utf-8")
        written.append(target)
    init = out / "__init__.py"
    init.write_text(f'"""Chapter modules tangled from {source}."""\n', encoding="utf-8")
    return [init, *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse.tangle",
        description="Write the '#| export' cells of chapter notebooks out as plain Python modules.",
    )
    parser.add_argument("source", help="'chapters', 'solutions', a folder of chapter folders, or one notebook")
    parser.add_argument("-o", "--out", required=True, type=Path, help="folder to write the .py files into")
    parser.add_argument("--single", metavar="NAME.py", help="write one file with every chapter, in order")
    args = parser.parse_args(argv)
    try:
        written = tangle(args.source, args.out, args.single)
    except (FileNotFoundError, ValueError, NotebookError) as err:
        print(f"tangle: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
