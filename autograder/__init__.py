"""The course's instructor tooling: release student notebooks, grade submissions (``python -m autograder``)."""
