"""``python -m autograder.nbgrader_main ARGS``: nbgrader's own command line, started 2.5 s sooner.

Importing nbgrader imports nbformat, whose validator imports jsonschema; when the package ``rfc3987_syntax`` is
installed (jupyter-events asks for it), jsonschema builds that package's Earley grammar for the ``iri`` format at
import time: 2.5 of the 4.3 s that ``python -m nbgrader`` takes to start on a 2-core machine. No notebook schema
uses an ``iri`` format, so marking the package as absent changes no validation. The grader starts nbgrader once per
graded notebook and once per chapter of a batch, so a class of 30 students x 17 chapters saves 21 minutes of CPU.
"""

from __future__ import annotations

import sys

# `import rfc3987_syntax` now raises ImportError, which jsonschema handles by leaving the format out
sys.modules.setdefault("rfc3987_syntax", None)

from nbgrader.apps.nbgraderapp import main  # noqa: E402

if __name__ == "__main__":
    main()
