"""Shared fixtures of the reference-engine tests: one tiny model per session."""

from __future__ import annotations

import pytest
import torch

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.model import Transformer

torch.set_num_threads(1)  # tiny ops: threads only add contention on the 2-core CI machine


@pytest.fixture(scope="session")
def tiny_model() -> Transformer:
    """The `tiny` config with seed-0 random weights (float32, CPU)."""
    return Transformer(TINY).init_random(0).eval()


def random_ids(n: int, seed: int = 1) -> list[int]:
    """n byte-range token ids from a fixed generator."""
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
