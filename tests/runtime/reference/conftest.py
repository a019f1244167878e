"""Shared fixtures of the reference-engine tests: one tiny model per session, one CPU thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.model import Transformer


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny ops gain nothing from threads and contend on the 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model() -> Transformer:
    """The `tiny` config with seed-0 random weights (float32, CPU)."""
    return Transformer(TINY).init_random(0).eval()


def random_ids(n: int, seed: int = 1) -> list[int]:
    """n byte-range token ids from a fixed generator."""
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
