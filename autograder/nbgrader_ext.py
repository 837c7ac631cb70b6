"""nbgrader's execution step, with an output cap in bytes and a kernel connection that reaches into a sandbox.

- A cell that prints gigabytes would otherwise fill the grader's memory and the autograded notebook. Past
  ``max_output_bytes`` per cell, further output is dropped and one line says so; the cell still runs to its end
  (or its time limit) and is graded as usual (nbgrader itself only caps lines).
- A sandboxed kernel has its own network namespace, which TCP cannot cross: when ``AUTOGRADER_KERNEL_IPC`` names
  a socket path prefix, the kernel is reached over unix sockets there (a folder bound into the sandbox).
"""

from __future__ import annotations

import json
import os
import uuid

from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute
from traitlets import Integer


class CappedExecute(Execute):
    max_output_bytes = Integer(
        1_000_000, help="Largest output, in bytes, that one cell may produce; the rest is dropped."
    ).tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._bytes_by_cell: dict[int, int] = {}
        return super().preprocess(nb, resources, km)

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        ipc = os.environ.get("AUTOGRADER_KERNEL_IPC")
        if ipc:  # sockets and the connection file in the folder that is bound into the sandbox
            km.transport, km.ip = "ipc", ipc
            km.connection_file = os.path.join(os.path.dirname(ipc), f"kernel-{uuid.uuid4().hex}.json")
        return km

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), ensure_ascii=False).encode("utf-8"))
        used = self._bytes_by_cell.get(cell_index, 0)
        self._bytes_by_cell[cell_index] = used + size
        if used + size <= self.max_output_bytes:
            return super().output(outs, msg, display_id, cell_index)
        if used <= self.max_output_bytes:  # the first output over the cap: say so once
            outs.append(new_output("stream", name="stdout",
                                   text=f"\n[output truncated: more than {self.max_output_bytes} bytes]\n"))
        return None
