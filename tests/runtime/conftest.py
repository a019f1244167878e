"""Shared fixtures for the runtime tests: vLLM fixture files, free loopback ports, the double."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOUBLES = Path(__file__).resolve().parent / "doubles"


def fixtures_dir() -> Path:
    """`DSV4_FIXTURES`, default `../shared/fixtures` relative to the repository root."""
    return Path(os.environ.get("DSV4_FIXTURES", REPO.parent / "shared" / "fixtures"))


def _fixture_file(relative: str) -> Path:
    path = fixtures_dir() / relative
    if not path.is_file():
        pytest.skip(f"fixture file missing: {path} (set DSV4_FIXTURES to the shared fixtures)")
    return path


@pytest.fixture(scope="session")
def vllm_flags() -> dict[str, dict[str, Any]]:
    """Every `vllm serve` option string of vLLM 0.33.0 → its parser entry."""
    data = json.loads(_fixture_file("vllm/vllm-0.33.0-serve-flags.json").read_text())
    assert data["vllm_version"] == "0.33.0"
    return {option: flag for flag in data["flags"] for option in flag["options"]}


@pytest.fixture(scope="session")
def vllm_metric_names() -> frozenset[str]:
    """Every metric name vLLM 0.33.0 defines (counters without their `_total` suffix)."""
    text = _fixture_file("vllm/vllm-0.33.0-metric-names.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def ports() -> list[int]:
    """Three distinct free loopback ports: [api_port, admin_port, second admin_port]."""
    return free_ports(3)


@pytest.fixture
def double_env() -> dict[str, str]:
    """Environment in which `python -m engine_double` finds the engine double."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(DOUBLES), *filter(None, [env.get("PYTHONPATH", "")])])
    for name in list(env):
        if name.startswith(("LWS_", "DSV4_DOUBLE_")):
            del env[name]
    return env
