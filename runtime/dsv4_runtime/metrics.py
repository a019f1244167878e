"""The runtime's `dsv4_runtime_*` metrics and the merge with the engine's own exposition.

`/metrics` on the admin port = our registry (a private `CollectorRegistry`, so no `process_*` or
`python_*` families that would collide with the engine's) followed by the engine's `/metrics`
text unchanged, in Prometheus text format 0.0.4 (vLLM's own format; its names contain colons).

Generation throughput: vLLM 0.33.0 counts generated tokens in the counter `vllm:generation_tokens`
(exposed as `vllm:generation_tokens_total`, one series per DP engine and model;
`fixtures/vllm/vllm-0.33.0-metric-names.txt`). `TokenRateMeter` turns successive totals (summed
over series) into tokens per second over a sliding window; that is
`dsv4_runtime_generation_tokens_per_second`, the figure the autoscaler can read without a
PromQL `rate()` (design-lessons lesson 4).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "CONTENT_TYPE",
    "GENERATION_TOKENS_SAMPLE",
    "RATE_WINDOW_SECONDS",
    "RuntimeMetrics",
    "TokenRateMeter",
    "generation_tokens_total",
    "merge_exposition",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""`text/plain; version=0.0.4; charset=utf-8`: what vLLM serves and Prometheus scrapes."""
GENERATION_TOKENS_SAMPLE = "vllm:generation_tokens_total"
"""Sample name of vLLM's generated-token counter (counter `vllm:generation_tokens`)."""
RATE_WINDOW_SECONDS = 60.0
"""Window of the tokens/s gauge: long enough to smooth decode bursts, short enough to scale on."""


@dataclass(frozen=True)
class _Sample:
    at_seconds: float
    total_tokens: float


class TokenRateMeter:
    """Tokens per second from successive readings of a monotonically increasing counter.

    `rate()` = (newest total − oldest total) / (newest time − oldest time) over the samples of the
    last `window_seconds` (the oldest kept sample may be just outside it, so two samples a whole
    window apart still give a rate). A total lower than the previous one is a counter reset (the
    engine restarted): the history is dropped and counting starts again from that sample.
    """

    def __init__(self, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        self._window = window_seconds
        self._samples: deque[_Sample] = deque()

    def add(self, at_seconds: float, total_tokens: float) -> None:
        """Record the counter's value `total_tokens` read at monotonic time `at_seconds`."""
        if self._samples and at_seconds <= self._samples[-1].at_seconds:
            return
        if self._samples and total_tokens < self._samples[-1].total_tokens:
            self._samples.clear()
        self._samples.append(_Sample(at_seconds, total_tokens))
        while len(self._samples) > 2 and self._samples[1].at_seconds <= at_seconds - self._window:
            self._samples.popleft()

    def rate(self) -> float:
        """Tokens per second over the window; 0.0 with fewer than two samples."""
        if len(self._samples) < 2:
            return 0.0
        first, last = self._samples[0], self._samples[-1]
        return (last.total_tokens - first.total_tokens) / (last.at_seconds - first.at_seconds)


def generation_tokens_total(exposition: str) -> float | None:
    """Sum of `vllm:generation_tokens_total` over all series in an engine exposition.

    Returns:
        The total, or None when the engine does not expose the counter (yet).

    Raises:
        ValueError: the text is not valid Prometheus exposition.
    """
    total: float | None = None
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == GENERATION_TOKENS_SAMPLE:
                total = (total or 0.0) + sample.value
    return total


def merge_exposition(ours: bytes, engine: str | None) -> bytes:
    """Our exposition followed by the engine's (an OpenMetrics `# EOF` line is dropped)."""
    if not engine:
        return ours
    lines = [line for line in engine.splitlines() if line.strip() != "# EOF"]
    return ours + ("\n".join(lines) + "\n").encode()


class RuntimeMetrics:
    """The `dsv4_runtime_*` metrics of one runtime process (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.info = Info(
            "dsv4_runtime",
            "Engine, role and layout of this runtime (labels)",
            registry=self.registry,
        )
        self.engine_ready = Gauge(
            "dsv4_runtime_engine_ready",
            "1 when the engine has loaded and answers /health and /v1/models, else 0",
            registry=self.registry,
        )
        self.draining = Gauge(
            "dsv4_runtime_draining",
            "1 after SIGTERM while in-flight requests finish, else 0",
            registry=self.registry,
        )
        self.generation_tokens_per_second = Gauge(
            "dsv4_runtime_generation_tokens_per_second",
            "Generated tokens per second over the last 60 s, from vllm:generation_tokens_total",
            registry=self.registry,
        )
        self.engine_scrape_errors = Counter(
            "dsv4_runtime_engine_scrape_errors",
            "Failed reads of the engine's /metrics",
            registry=self.registry,
        )
        self.startup_seconds = Gauge(
            "dsv4_runtime_engine_startup_seconds",
            "Seconds from engine launch to ready (0 until ready)",
            registry=self.registry,
        )
        self.engine_stalled_seconds = Gauge(
            "dsv4_runtime_engine_stalled_seconds",
            "Seconds the most stalled engine has had running requests and no progress "
            "(vllm:prompt_tokens, vllm:generation_tokens, vllm:kv_cache_usage_perc unchanged)",
            registry=self.registry,
        )
        self.engine_stall_limit_seconds = Gauge(
            "dsv4_runtime_engine_stall_limit_seconds",
            "Stall after which the runtime kills the engine and exits 1 "
            "(DSV4_ENGINE_STALL_SECONDS; 0: never)",
            registry=self.registry,
        )
        self.shm_stale_entries_removed = Gauge(
            "dsv4_runtime_shm_stale_entries_removed",
            "Entries deleted from the shm mount before start",
            registry=self.registry,
        )
        self.shm_stale_bytes_removed = Gauge(
            "dsv4_runtime_shm_stale_bytes_removed",
            "Bytes deleted from the shm mount before start",
            registry=self.registry,
        )
        self.meter = TokenRateMeter()

    def observe_engine(self, at_seconds: float, exposition: str) -> None:
        """Feed one engine exposition read at monotonic `at_seconds` into the tokens/s gauge.

        Raises:
            ValueError: the exposition does not parse.
        """
        total = generation_tokens_total(exposition)
        if total is not None:
            self.meter.add(at_seconds, total)
            self.generation_tokens_per_second.set(self.meter.rate())

    def engine_stopped(self) -> None:
        """Record that the engine left ready: its tokens/s is unknown.

        The gauge reads 0 (not its last value), and the rate starts again from the next reading.
        """
        self.meter = TokenRateMeter()
        self.generation_tokens_per_second.set(0)

    def render(self) -> bytes:
        """Our metrics in text format 0.0.4."""
        return generate_latest(self.registry)
