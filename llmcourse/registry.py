"""The course's chapters: their ids, module names and where their notebooks live.

A chapter id is the name of its folder and of its notebook (``04a_attention`` ->
``04a_attention/04a_attention.ipynb``); its module name is the id without the number (``attention``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Graded chapters, in course order (see ARCHITECTURE's chapter table).
CHAPTER_IDS: tuple[str, ...] = (
    "02_language_models",
    "03_tokens_and_positions",
    "04a_attention",
    "04b_multi_head_attention",
    "04c_feed_forward",
    "04d_residual_and_layernorm",
    "04e_modern_block",
    "05a_gpt",
    "05b_training",
    "05c_generation",
    "06a_metrics",
    "06b_applications",
    "06c_lora",
    "08a_scaling",
    "08b_compute",
    "08c_beyond_text",
    "08d_bias",
)

CHAPTER_ID_RE = re.compile(r"^(?P<number>\d{2}[a-z]?)_(?P<name>[a-z][a-z0-9_]*)$")

#: The trees a student or instructor works in, by the names ``LLMCOURSE_SOURCE`` accepts.
TREES = ("chapters", "solutions")

#: The repository root: the folder that holds this package (``pip install -e .`` keeps it there).
COURSE_ROOT = Path(__file__).resolve().parent.parent


def module_name(chapter_id: str) -> str:
    """``module_name("04a_attention") -> "attention"``."""
    match = CHAPTER_ID_RE.match(chapter_id)
    if not match:
        raise ValueError(
            f"{chapter_id!r} is not a chapter id: expected a number, an underscore and a name, "
            "like '04a_attention'"
        )
    return match["name"]


def chapter_number(chapter_id: str) -> str:
    """``chapter_number("04a_attention") -> "4a"``: how exercises are numbered (Exercise 4a.1)."""
    module_name(chapter_id)  # validates
    return CHAPTER_ID_RE.match(chapter_id)["number"].lstrip("0") or "0"


MODULES: dict[str, str] = {module_name(cid): cid for cid in CHAPTER_IDS}


def chapter_id(name: str, tree: Path | None = None) -> str:
    """The chapter id for a module name (``attention`` -> ``04a_attention``); chapter ids pass through.

    A chapter that is not in :data:`CHAPTER_IDS` is still found when ``tree`` holds its folder.
    """
    if name in MODULES:
        return MODULES[name]
    if name in CHAPTER_IDS:
        return name
    if tree is not None and tree.is_dir():
        for folder in sorted(tree.iterdir()):
            match = CHAPTER_ID_RE.match(folder.name)
            if match and name in (match["name"], folder.name) and (folder / f"{folder.name}.ipynb").is_file():
                return folder.name
    known = ", ".join(sorted(MODULES))
    raise KeyError(f"no chapter is called {name!r}; the course's chapter modules are: {known}")


def notebook_path(tree: Path, chapter: str) -> Path:
    """Where a chapter's notebook sits in a tree: ``tree/<id>/<id>.ipynb``."""
    return Path(tree) / chapter / f"{chapter}.ipynb"


def chapters_in(tree: Path) -> list[str]:
    """The chapter ids whose notebook is present in ``tree``, in course order."""
    tree = Path(tree)
    found = [
        d.name
        for d in tree.iterdir()
        if d.is_dir() and CHAPTER_ID_RE.match(d.name) and notebook_path(tree, d.name).is_file()
    ] if tree.is_dir() else []
    order = {cid: i for i, cid in enumerate(CHAPTER_IDS)}
    return sorted(found, key=lambda cid: (order.get(cid, len(order)), cid))


class SourceError(ImportError):
    """The chapter tree to import from cannot be found."""


def tree_of_notebook(path: Path) -> Path | None:
    """The tree a chapter notebook belongs to (``solutions/04a_attention/04a_attention.ipynb`` ->
    ``solutions``), or None when ``path`` is not laid out as a chapter notebook."""
    path = Path(path)
    if path.suffix == ".ipynb" and CHAPTER_ID_RE.match(path.parent.name) and path.stem == path.parent.name:
        return path.parent.parent
    return None


def infer_tree(start: Path) -> Path | None:
    """The chapter tree that the folder ``start`` lies in, or None.

    Inside a chapter folder (``<tree>/04a_attention/``, as when a notebook runs) the tree is that folder's
    parent; inside a course checkout anywhere else, it is the student tree ``chapters/``.
    """
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if CHAPTER_ID_RE.match(folder.name) and (folder / f"{folder.name}.ipynb").is_file():
            return folder.parent
        if (folder / "_toc.yml").is_file() and (folder / "llmcourse").is_dir() and (folder / "chapters").is_dir():
            return folder / "chapters"
    return None


def source_tree(importer_file: str | None = None) -> Path:
    """The folder of chapter folders that ``llmcourse.chapters`` imports from.

    1. ``LLMCOURSE_SOURCE``: ``chapters``, ``solutions``, or the path of a folder holding chapter folders;
    2. else the tree of the importing code: a chapter module imports from its own notebook's tree;
    3. else the tree the current folder lies in (a notebook runs in its chapter folder).
    """
    setting = os.environ.get("LLMCOURSE_SOURCE", "").strip()
    if setting:
        if setting in TREES:
            tree = COURSE_ROOT / setting
        else:
            tree = Path(setting).expanduser().resolve()
        if not tree.is_dir():
            raise SourceError(
                f"LLMCOURSE_SOURCE={setting!r}: {tree} is not a folder. Expected 'chapters', 'solutions', or "
                "the path of a folder that holds chapter folders (like 04a_attention/04a_attention.ipynb)."
            )
        return tree
    if importer_file:
        tree = tree_of_notebook(Path(importer_file))
        if tree is not None:
            return tree
    tree = infer_tree(Path.cwd())
    if tree is None:
        raise SourceError(
            f"cannot tell which chapter notebooks to import: the current folder {Path.cwd()} is not inside "
            "the course. Run from inside the course folder, or set LLMCOURSE_SOURCE to 'chapters', "
            "'solutions' or a folder of chapter folders."
        )
    return tree


def fallback_names() -> set[str]:
    """The module names that ``LLMCOURSE_FALLBACK`` sends to their public fallback."""
    setting = os.environ.get("LLMCOURSE_FALLBACK", "").strip()
    if not setting:
        return set()
    names = {part.strip() for part in setting.split(",") if part.strip()}
    if "all" in names:
        return set(MODULES)
    resolved = set()
    for name in names:
        try:
            resolved.add(module_name(chapter_id(name)))
        except (KeyError, ValueError) as err:
            raise ImportError(
                f"LLMCOURSE_FALLBACK={setting!r}: {err.args[0]}. Expected a comma-separated list of chapter "
                "modules (like 'attention,feed_forward') or 'all'."
            ) from None
    return resolved
