"""Which device to compute on: the user's choice, else CUDA, else Apple's MPS, else the CPU.

>>> from llmcourse.device import get_device
>>> device = get_device()            # cuda if there is a GPU, ..., else cpu
>>> device = get_device("cpu")       # or set LLMCOURSE_DEVICE=cpu for every notebook and script
"""

from __future__ import annotations

import os

import torch

ENV = "LLMCOURSE_DEVICE"


def available_devices() -> list[str]:
    """The device types this machine can use, best first (``["cuda", "cpu"]`` on a GPU machine)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def get_device(preferred: str | torch.device | None = None) -> torch.device:
    """The device to use: ``preferred``, else ``$LLMCOURSE_DEVICE``, else the best available.

    A preferred device this machine does not have is an error, not a silent fall back to the CPU.
    """
    choice = preferred if preferred is not None else os.environ.get(ENV, "").strip() or None
    if choice is None:
        return torch.device(available_devices()[0])
    source = "get_device()" if preferred is not None else f"{ENV}"
    try:
        device = torch.device(choice)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{source}: {choice!r} is not a device; expected 'cpu', 'cuda', 'cuda:1' or 'mps' ({err})"
        ) from None
    if device.type not in available_devices():
        raise ValueError(
            f"{source}: asked for {choice!r}, but this machine has only {', '.join(available_devices())}"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"{source}: asked for {choice!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device
