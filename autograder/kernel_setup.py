"""Run first in every grading kernel (``--IPKernelApp.exec_lines``), inside the sandbox.

- Warnings go to stdout: nbgrader fails a test cell on any stderr output, and a correct answer must not lose the
  notebook's own verdict because PyTorch warned about something.
- Output is capped in bytes per cell *in the kernel*, before it is sent to nbgrader: past ``CAP`` bytes of
  stdout and stderr together, a cell's further output is dropped and one line says so. (The grader caps again on
  its side; this keeps a 200 MB print from ever leaving the kernel.)

A student's code can undo both; it then only changes what the notebook's own run shows, never the points, which
come from the outside checks.
"""

import os
import sys
import warnings

CAP = int(os.environ.get("AUTOGRADER_KERNEL_OUTPUT_CAP", "1000000"))


class _Capped:
    def __init__(self, stream, budget):
        self._stream = stream
        self._budget = budget

    def write(self, text):
        if not isinstance(text, str):
            return self._stream.write(text)
        size = len(text.encode("utf-8", "replace"))
        left = self._budget["left"]
        if size <= left:
            self._budget["left"] = left - size
            return self._stream.write(text)
        if left > 0:
            self._stream.write(text.encode("utf-8", "replace")[:left].decode("utf-8", "ignore"))
        self._budget["left"] = 0
        if not self._budget["said"]:
            self._budget["said"] = True
            self._stream.write(f"\n[output truncated in the kernel: more than {CAP} bytes in this cell]\n")
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _install():
    budget = {"left": CAP, "said": False}
    sys.stdout = _Capped(sys.stdout, budget)
    sys.stderr = _Capped(sys.stderr, budget)

    def reset(*_):
        budget["left"], budget["said"] = CAP, False

    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.events.register("pre_run_cell", reset)

    out = sys.stdout

    def showwarning(message, category, filename, lineno, file=None, line=None):
        out.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = showwarning


_install()
del _install
