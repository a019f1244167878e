"""Every runtime module declares its public names: all exist, and none public is left out."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "cli",
    "config",
    "distributed",
    "engine",
    "launch",
    "metrics",
    "preflight",
    "progress",
    "server",
    "supervisor",
    "vllm_args",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_complete_and_resolvable(name: str) -> None:
    module = importlib.import_module(f"dsv4_runtime.{name}")
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    for symbol in exported:
        assert hasattr(module, symbol), f"dsv4_runtime.{name}.{symbol}"
    defined_here = {
        symbol
        for symbol, value in vars(module).items()
        if not symbol.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    }
    assert defined_here <= exported, f"public but not in __all__: {defined_here - exported}"


def test_cli_exports() -> None:
    from dsv4_runtime import cli

    assert cli.__all__ == [
        "EXIT_LAUNCH",
        "EXIT_LEADER_UNRESOLVED",
        "EXIT_NOT_EXECUTABLE",
        "EXIT_PREFLIGHT",
        "EXIT_USAGE",
        "main",
        "route_settle_seconds",
        "run",
        "stall_seconds",
    ]
