"""llmcourse: the small library that comes with the course "Build a GPT, piece by piece".

- ``llmcourse.chapters.<name>``: the ``#| export`` cells of a chapter notebook, imported as a module
  (``from llmcourse.chapters.attention import scaled_dot_product_attention``).
- ``llmcourse.fallbacks.<name>``: the same functions built from torch / transformers built-ins, for a
  student who is stuck and for grading one chapter on its own.
- ``llmcourse.device``: picks the device (cuda, then mps, then cpu).
- ``llmcourse.checks``: assertions for visible tests that explain what is wrong.
- ``python -m llmcourse.tangle``: writes the exported cells of a tree of notebooks out as ``.py`` files.

Importing this package has no side effects; ``llmcourse.chapters`` installs its importer when imported.
"""

__version__ = "0.1.0"
