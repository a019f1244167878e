"""Load signals from a replica leader's Prometheus `/metrics`: token rates, KV usage, queue.

The engine exposes vLLM's names (vLLM 0.33.0, `shared/fixtures/vllm/vllm-0.33.0-metric-names.txt`):
counters `vllm:generation_tokens_total` and `vllm:prompt_tokens_total`, gauges
`vllm:num_requests_running`, `vllm:num_requests_waiting` and `vllm:kv_cache_usage_perc` (a fraction
0..1 despite its name). A DP leader exposes one series per engine (label `engine`); the replica's
value is the sum (counters, request gauges) or the maximum (KV usage: the fullest DP rank saturates
first).

Counter rates come from deltas between two scrapes; a value lower than the previous one is a counter
reset (a restarted engine) and counts from zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["CounterSample", "EngineSnapshot", "counter_rate", "parse_snapshot"]

GENERATION_TOKENS = "vllm:generation_tokens"
PROMPT_TOKENS = "vllm:prompt_tokens"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True, slots=True)
class CounterSample:
    """A counter value at a time.

    Attributes:
        time: seconds (monotonic clock of the scraper).
        value: counter value (tokens).
    """

    time: float
    value: float


def counter_rate(previous: CounterSample | None, current: CounterSample) -> float:
    """Per-second rate between two samples of a counter, handling resets.

    Returns:
        Tokens per second; 0.0 without a previous sample or when no time has passed.
    """
    if previous is None or current.time <= previous.time:
        return 0.0
    delta = current.value - previous.value
    if delta < 0:  # the engine restarted: the counter began again at zero
        delta = current.value
    return delta / (current.time - previous.time)


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """One scrape of a replica leader's metrics.

    Attributes:
        generation_tokens: `vllm:generation_tokens_total`, summed over engines, tokens.
        prompt_tokens: `vllm:prompt_tokens_total`, summed, tokens.
        running: requests running, summed.
        waiting: requests waiting, summed.
        kv_usage: KV-cache usage fraction of the fullest engine, 0..1.
        has_engine: the exposition carried vLLM's generation counter at all (the runtime leaves
            the engine's series out when it could not read them); without it the zeros above
            are unknown.
    """

    generation_tokens: float
    prompt_tokens: float
    running: int
    waiting: int
    kv_usage: float
    has_engine: bool = True


def parse_snapshot(text: str) -> EngineSnapshot:
    """Parse Prometheus text exposition into a snapshot (missing series count as 0).

    Raises:
        ValueError: when the text is not valid exposition format, or one of the series read
            here has a NaN or infinite value (the exposition format allows them; read as
            numbers they compared false with every threshold: a NaN tokens/s looked idle).
    """
    sums: dict[str, float] = {}
    kv = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            wanted = name in {KV_USAGE, GENERATION_TOKENS, PROMPT_TOKENS, RUNNING, WAITING}
            if wanted and not math.isfinite(sample.value):
                msg = f"{sample.name}{sample.labels} is {sample.value}, not a finite number"
                raise ValueError(msg)
            if name == KV_USAGE:
                kv = max(kv, sample.value)
            elif name in {GENERATION_TOKENS, PROMPT_TOKENS, RUNNING, WAITING}:
                if sample.name.endswith(("_created", "_bucket", "_count", "_sum")):
                    continue
                sums[name] = sums.get(name, 0.0) + sample.value
    return EngineSnapshot(
        generation_tokens=sums.get(GENERATION_TOKENS, 0.0),
        prompt_tokens=sums.get(PROMPT_TOKENS, 0.0),
        running=int(sums.get(RUNNING, 0.0)),
        waiting=int(sums.get(WAITING, 0.0)),
        kv_usage=kv,
        has_engine=GENERATION_TOKENS in sums,
    )
