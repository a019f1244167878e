"""Autoscaling on token throughput: signals, the native decision policy, and its simulator.

Pure: no Kubernetes client, no HTTP. The operator's timer handler scrapes the replica leaders,
turns the scrapes into an `Observation`, calls `decide`, and applies the `Decision`.
"""

from dsv4_operator.autoscaling.policy import (
    AutoscalerConfig,
    AutoscalerState,
    Cause,
    Decision,
    GroupSample,
    Observation,
    ceiling_words,
    decide,
    wanted_replicas,
)
from dsv4_operator.autoscaling.signals import (
    CounterSample,
    EngineSnapshot,
    counter_rate,
    parse_snapshot,
)
from dsv4_operator.autoscaling.simulation import SimStep, Simulation, run_simulation

__all__ = [
    "AutoscalerConfig",
    "AutoscalerState",
    "Cause",
    "CounterSample",
    "Decision",
    "EngineSnapshot",
    "GroupSample",
    "Observation",
    "SimStep",
    "Simulation",
    "ceiling_words",
    "counter_rate",
    "decide",
    "parse_snapshot",
    "run_simulation",
    "wanted_replicas",
]
