"""llmcourse.device: cuda, then mps, then cpu, unless the user chooses."""

from __future__ import annotations

import pytest
import torch

from llmcourse import device as dev


def test_default_is_the_best_available(monkeypatch):
    monkeypatch.setattr(dev, "available_devices", lambda: ["cuda", "cpu"])
    assert dev.get_device().type == "cuda"
    monkeypatch.setattr(dev, "available_devices", lambda: ["mps", "cpu"])
    assert dev.get_device().type == "mps"
    monkeypatch.setattr(dev, "available_devices", lambda: ["cpu"])
    assert dev.get_device() == torch.device("cpu")


def test_cpu_is_always_available():
    assert dev.available_devices()[-1] == "cpu"
    assert dev.get_device("cpu") == torch.device("cpu")


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setattr(dev, "available_devices", lambda: ["cuda", "cpu"])
    monkeypatch.setenv("LLMCOURSE_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")
    assert dev.get_device("cuda").type == "cuda", "an explicit argument wins over the environment"


def test_unavailable_device_is_an_error_not_a_silent_cpu(monkeypatch):
    monkeypatch.setattr(dev, "available_devices", lambda: ["cpu"])
    with pytest.raises(ValueError, match="asked for 'cuda', but this machine has only cpu"):
        dev.get_device("cuda")
    monkeypatch.setenv("LLMCOURSE_DEVICE", "mps")
    with pytest.raises(ValueError, match="LLMCOURSE_DEVICE: asked for 'mps'"):
        dev.get_device()


def test_nonsense_device_is_a_clear_error():
    with pytest.raises(ValueError, match="'gpu0' is not a device; expected 'cpu', 'cuda'"):
        dev.get_device("gpu0")
