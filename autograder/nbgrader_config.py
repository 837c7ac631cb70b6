"""nbgrader's settings for this course (read when nbgrader runs in this folder, as ``python -m autograder``
does). The course folders have their own names: instructor notebooks in ``solutions/``, student notebooks in
``chapters/``, grading work folders and the gradebook here, under ``autograder/``."""

from pathlib import Path

c = get_config()  # noqa: F821 (nbgrader provides get_config)

ROOT = Path(__file__).resolve().parent.parent

c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "chapters"
c.CourseDirectory.submitted_directory = "autograder/submitted"
c.CourseDirectory.autograded_directory = "autograder/autograded"
c.CourseDirectory.feedback_directory = "autograder/feedback"
c.CourseDirectory.db_url = f"sqlite:///{ROOT / 'autograder' / 'gradebook.db'}"

# The stub nbgrader leaves in place of a solution; `python -m autograder release` then names the exercise
# in it: raise NotImplementedError("Exercise 4a.1: write softmax ...").
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Deleted test cells come back when grading, so deleting a failing test does not remove its points.
c.OverwriteCells.add_missing_cells = True

# Per-cell time limit when grading (nbgrader has no whole-notebook limit).
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

# Execution with an output cap in bytes; the rest of nbgrader's autograde pipeline as it is.
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from autograder.nbgrader_ext import CappedExecute  # noqa: E402

c.Autograde.autograde_preprocessors = [
    CappedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades, AssignLatePenalties,
    CheckCellMetadata,
]
