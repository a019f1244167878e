"""Prometheus metrics under vLLM's names (checked against vLLM 0.33.0's list in the tests).

Counters are exposed with `_total` (`vllm:generation_tokens_total`, `vllm:prompt_tokens_total`,
...). Labels follow vLLM: `model_name` and `engine` ("0").
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class EngineMetrics:
    """The engine's metrics in their own registry (one per server, so tests can run several).

    Args:
        model_name: value of the `model_name` label (the served model name).
    """

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        values = {"model_name": model_name, "engine": "0"}
        reg = self.registry
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=reg
        ).labels(**values)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=reg
        ).labels(**values)
        self.num_preemptions = Counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", labels,
            registry=reg,
        ).labels(**values)  # fmt: skip
        self._success = Counter(
            "vllm:request_success", "Count of successfully processed requests.",
            [*labels, "finished_reason"], registry=reg,
        )  # fmt: skip
        self._values = values
        self.running = Gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", labels,
            registry=reg,
        ).labels(**values)  # fmt: skip
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels,
            registry=reg,
        ).labels(**values)  # fmt: skip
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels,
            registry=reg,
        ).labels(**values)  # fmt: skip
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            labels, buckets=_LATENCY_BUCKETS, registry=reg,
        ).labels(**values)  # fmt: skip
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            labels, buckets=_LATENCY_BUCKETS, registry=reg,
        ).labels(**values)  # fmt: skip
        self.queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels, buckets=_LATENCY_BUCKETS, registry=reg,
        ).labels(**values)  # fmt: skip
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", labels,
            buckets=_TOKEN_BUCKETS, registry=reg,
        ).labels(**values)  # fmt: skip
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", labels,
            buckets=_TOKEN_BUCKETS, registry=reg,
        ).labels(**values)  # fmt: skip

    def request_success(self, finished_reason: str) -> None:
        """Count one finished request ("stop", "length" or "abort")."""
        self._success.labels(**self._values, finished_reason=finished_reason).inc()

    def exposition(self) -> bytes:
        """The Prometheus text exposition, without `*_created` series.

        vLLM exposes none (it calls `prometheus_client.disable_created_metrics()`, a process-wide
        switch; here they are filtered per registry so other registries in the process keep
        theirs).
        """
        return generate_latest(_WithoutCreated(self.registry))

    def metric_names(self) -> set[str]:
        """Names of all families in the registry (without the `_total` suffix of counters)."""
        return {m.name for m in self.registry.collect()}


class _WithoutCreated:
    """A collector view of a registry that drops `*_created` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        """The registry's families, each without its `_created` samples."""
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
