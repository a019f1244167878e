"""Shared fixtures of the reference-engine tests: one tiny model per session, one CPU thread."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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


def wait_healthy(
    url: str, procs: list[subprocess.Popen[bytes]], log: Path | None = None, timeout: float = 90.0
) -> None:
    """Poll `url`/health until 200; fail at once if one of `procs` exits (showing `log`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), (
            log.read_text() if log is not None else "a rank exited early"
        )
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become healthy")
