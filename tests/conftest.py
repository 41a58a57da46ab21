"""Shared fixtures: one small generated dataset per test session, a tiny depth teacher, offline hub, one thread."""

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from tests.helpers.data import make_dataset
from tests.helpers.teacher import save_tiny_teacher


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """Folder holding the SMALL sample dataset's two batch zips (read-only for tests)."""
    out = tmp_path_factory.mktemp("small")
    make_dataset(out, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("tiny_teacher"))


@pytest.fixture
def one_torch_thread():
    """The tiny model runs about as fast as the decode threads beside it; on shared cores, OpenMP threads
    spinning while those run make each forward wait (the tests take 5x longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """No network wait: huggingface_hub reads HF_HUB_OFFLINE once, at import, so set both."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
