"""Public fallbacks: every exported piece of every chapter, built only from torch / transformers built-ins.

``LLMCOURSE_FALLBACK=attention`` makes ``llmcourse.chapters.attention`` load ``llmcourse/fallbacks/attention.py``
instead of the notebook, so a student who is stuck on chapter 4a can go on with chapter 4b, and grading can test
one chapter while every earlier piece is known to be right. No solution code is here: each function calls the
library function the chapter teaches you to write.
"""
