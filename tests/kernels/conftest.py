"""Kernel tests: Triton kernels run on CUDA when present, else in Triton's CPU interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at
collection, when CUDA is absent. Tests marked `gpu` (real V4 shapes) skip without CUDA;
on the H200 run `pytest -m gpu tests/kernels`.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def device() -> torch.device:
    """CUDA when present, else CPU (the Triton interpreter)."""
    return torch.device("cuda" if HAS_CUDA else "cpu")
