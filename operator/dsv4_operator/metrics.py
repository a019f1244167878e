"""The operator's Prometheus metrics (prometheus-client), on a registry of their own.

- `dsv4_operator_reconciles_total{result}`: reconciles by result (`applied`, `unchanged`,
  `invalid_spec`, `plan_failed`, `paused`, `transient_error`, `error`, `internal_error`);
- `dsv4_operator_reconcile_duration_seconds`: reconcile latency histogram;
- `dsv4_operator_managed_deployments`: DeepSeekV4Deployments this operator has seen and not seen
  deleted;
- `dsv4_operator_planned_gpus{gpu_type}`: GPUs of the current plans (GPUs per replica x
  replicas), summed by GPU type;
- `dsv4_operator_api_writes_total{verb,kind}`: write requests the operator's client sent (kopf's
  own annotation and Event writes are not included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["RESULTS", "OperatorMetrics", "Result"]

Result = Literal[
    "applied",
    "unchanged",
    "invalid_spec",
    "plan_failed",
    "paused",
    "transient_error",
    "error",
    "internal_error",
]
"""Outcome of one reconcile: the `result` label's value."""
RESULTS: Final = get_args(Result)
"""Values of the `result` label."""

_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: a reconcile is a few API round trips plus the planner (~10-100 ms)."""


@dataclass
class OperatorMetrics:
    """The metric objects and the per-deployment state behind the gauges.

    Attributes:
        registry: the registry they live on (serve it with `serve`).
    """

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    _planned: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "dsv4_operator_reconciles",
            "Reconciles of DeepSeekV4Deployments by result.",
            ["result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dsv4_operator_reconcile_duration_seconds",
            "Time of one reconcile, seconds.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.managed = Gauge(
            "dsv4_operator_managed_deployments",
            "DeepSeekV4Deployments managed by this operator.",
            registry=self.registry,
        )
        self.planned_gpus = Gauge(
            "dsv4_operator_planned_gpus",
            "GPUs of the plans the LeaderWorkerSets were last rolled out with (per replica x "
            "replicas), by GPU type; kept while a later spec cannot be planned (the groups keep "
            "running).",
            ["gpu_type"],
            registry=self.registry,
        )
        self.api_writes = Counter(
            "dsv4_operator_api_writes",
            "Write requests sent by the operator's API client, by verb and kind.",
            ["verb", "kind"],
            registry=self.registry,
        )
        self._managed: set[str] = set()

    def observe(self, key: str, result: str, seconds: float) -> None:
        """Record one reconcile of deployment `key` (`namespace/name`)."""
        self.reconciles.labels(result=result).inc()
        self.latency.observe(seconds)
        self._managed.add(key)
        self.managed.set(len(self._managed))

    def set_plan(self, key: str, gpu_type: str | None, gpus: int) -> None:
        """Record the GPUs deployment `key` plans (None: no plan) and refresh the by-type gauge."""
        if gpu_type is None:
            self._planned.pop(key, None)
        else:
            self._planned[key] = (gpu_type, gpus)
        totals: dict[str, int] = {}
        for kind, count in self._planned.values():
            totals[kind] = totals.get(kind, 0) + count
        for kind in {*totals, *(labels[0] for labels in self._known_types())}:
            self.planned_gpus.labels(gpu_type=kind).set(totals.get(kind, 0))

    def _known_types(self) -> list[tuple[str, ...]]:
        return [tuple(s.labels.values()) for m in self.planned_gpus.collect() for s in m.samples]

    def forget(self, key: str) -> None:
        """Deployment `key` was deleted."""
        self._managed.discard(key)
        self.managed.set(len(self._managed))
        self.set_plan(key, None, 0)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
        """Serve `/metrics` on `host`:`port` (all IPv4 interfaces by default) in a daemon thread.

        Raises:
            OSError: the port cannot be bound (in use, or `host` is not an address here).
        """
        start_http_server(port, addr=host, registry=self.registry)
