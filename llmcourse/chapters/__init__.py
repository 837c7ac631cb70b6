"""Chapter notebooks as modules: ``from llmcourse.chapters.attention import scaled_dot_product_attention``.

``llmcourse.chapters.<name>`` is made of the ``#| export`` cells of the notebook ``<id>/<id>.ipynb``
(``attention`` -> ``04a_attention``), found in

1. the tree named by ``LLMCOURSE_SOURCE`` (``chapters``, ``solutions``, or a folder of chapter folders), else
2. the tree of the code that imports it (a chapter module imports from its own notebook's tree), else
3. the tree the current folder lies in: a notebook in ``chapters/05a_gpt/`` imports from ``chapters/``.

``LLMCOURSE_FALLBACK=attention,feed_forward`` (or ``all``) gives those chapters' public fallbacks from
:mod:`llmcourse.fallbacks` instead, built only from torch / transformers built-ins.

Modules are cached in ``sys.modules`` like any import; :func:`reload_all` forgets them (after editing a
notebook, or after changing the settings above).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from llmcourse import registry
from llmcourse.notebook import export_cells, exec_cells

PREFIX = __name__ + "."
FALLBACKS = Path(__file__).resolve().parent.parent / "fallbacks"


class ChapterNotFound(ModuleNotFoundError):
    """The chapter's notebook is not in the tree being imported from."""


def _importer_file() -> str | None:
    """``__file__`` of the chapter module whose code is importing, if a chapter module is importing."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(PREFIX) and frame.f_globals.get("__file__", "").endswith(".ipynb"):
            return frame.f_globals["__file__"]
        frame = frame.f_back
    return None


class NotebookLoader(importlib.abc.Loader):
    def __init__(self, notebook: Path):
        self.notebook = notebook

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        exec_cells(module, export_cells(self.notebook))


class ChapterFinder(importlib.abc.MetaPathFinder):
    """Finds ``llmcourse.chapters.<name>`` in a chapter notebook or, when asked, in its fallback."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(PREFIX) or "." in fullname[len(PREFIX):]:
            return None
        name = fullname[len(PREFIX):]
        if name in registry.fallback_names():
            return _fallback_spec(fullname, name)
        tree = registry.source_tree(_importer_file())
        try:
            chapter = registry.chapter_id(name, tree)
        except KeyError as err:
            raise ChapterNotFound(f"{fullname}: {err.args[0]}", name=fullname) from None
        notebook = registry.notebook_path(tree, chapter)
        if not notebook.is_file():
            raise ChapterNotFound(
                f"{fullname}: chapter {chapter} has no notebook in {tree} (expected {notebook}). "
                f"Do chapter {chapter} first, or go on with the course's built-in version: "
                f"set LLMCOURSE_FALLBACK={name}.",
                name=fullname,
            )
        spec = importlib.machinery.ModuleSpec(fullname, NotebookLoader(notebook), origin=str(notebook))
        spec.has_location = True  # sets module.__file__ to the notebook
        return spec


def _fallback_spec(fullname: str, name: str):
    file = FALLBACKS / f"{name}.py"
    if not file.is_file():
        raise ChapterNotFound(
            f"{fullname}: LLMCOURSE_FALLBACK asks for the built-in version of chapter "
            f"{registry.chapter_id(name)}, but the course has none yet ({file} is missing).",
            name=fullname,
        )
    return importlib.util.spec_from_file_location(fullname, file)


def reload_all() -> None:
    """Forget every imported chapter module, so the next import reads the notebooks again. The fallback modules
    go too: they hold classes of the earlier chapters they build on."""
    for name in [n for n in sys.modules if n.startswith((PREFIX, "llmcourse.fallbacks."))]:
        del sys.modules[name]
        package, _, attr = name.rpartition(".")
        if package in sys.modules and hasattr(sys.modules[package], attr):
            delattr(sys.modules[package], attr)  # so that "from package import attr" imports it anew


def install() -> None:
    if not any(isinstance(finder, ChapterFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, ChapterFinder())


install()
