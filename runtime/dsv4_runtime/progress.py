"""Progress watchdog: an engine that answers `/health` but whose requests make no progress.

A collective that never completes (one node's NCCL stuck, a GPU Xid, a partition between nodes)
can leave vLLM's API process answering `/health` with 200 while no request advances. vLLM 0.33.0
bounds one such case itself: its multiprocessing (and Ray) executor gives every
`execute_model` / `sample_tokens` / `execute_dummy_batch` RPC `VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS`
(default 300, `vllm/envs.py`; `vllm/v1/executor/multiproc_executor.py` `execute_model`,
`collective_rpc`), after which the engine core dies (`EngineCore encountered a fatal error`,
`ENGINE_CORE_DEAD`, `vllm/v1/engine/core.py` `run_engine_core`) and `vllm serve` exits
(`vllm/entrypoints/launchers/launcher.py` `watchdog_loop`, every 5 s; headless workers when a
local engine core exits, `vllm/entrypoints/cli/serve.py` `run_headless`). It does not bound a
stall outside those RPCs: the engine cores' data-parallel state all-reduce (gloo,
`cpu_distributed_timeout_seconds` unset = no timeout, `vllm/distributed/utils.py`
`cpu_all_reduce_`), the front-end's ZMQ link to a remote engine core, or a single-GPU engine
(`UniProcExecutor`, no timeout). This watchdog is the runtime's bound for all of them.

What advances, in vLLM 0.33.0, while a request runs (read once per engine step, so a stalled
step freezes all of them; every per-engine series carries the `engine` and `model_name`
labels, `vllm/v1/metrics/loggers.py`):

- `vllm:generation_tokens_total`: every step that yields tokens (decode, and a prompt's last
  chunk).
- `vllm:prompt_tokens_total`: only when a prompt's prefill is complete: the engine core emits
  no output for a partial prefill chunk (`vllm/v1/core/sched/scheduler.py`, "EngineCore returns
  no partial prefill outputs"), and the counter grows by the whole prompt on the request's first
  output (`vllm/v1/metrics/stats.py` `IterationStats.update_from_output`, `is_prefilling`). A
  1M-token prefill alone moves neither counter for minutes.
- `vllm:kv_cache_usage_perc`: set from each step's `SchedulerStats` (sent every step, also
  without request outputs, `Scheduler.update_from_output`); each prefill chunk allocates the KV
  blocks of its tokens (block pool `get_usage`), so the gauge moves with every chunk of a long
  prefill.

An engine is stalled when its `vllm:num_requests_running` is above 0 and none of the three
changed between successful readings for `limit` seconds. Idle engines (0 running) never are.
A failed reading of `/metrics` proves nothing either way: it neither resets nor extends the
stall, which is measured between successful readings only (a progressing engine changes a
counter or the gauge between them, whatever happened in between).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DEFAULT_EXECUTE_MODEL_TIMEOUT_SECONDS",
    "EXECUTE_MODEL_TIMEOUT_ENV",
    "PROGRESS_SAMPLES",
    "RUNNING_SAMPLE",
    "EngineReading",
    "ProgressWatchdog",
    "Stall",
    "default_stall_seconds",
    "engine_readings",
]

RUNNING_SAMPLE = "vllm:num_requests_running"
"""vLLM's gauge of requests in the engine's running batch (per engine)."""
PROGRESS_SAMPLES: tuple[str, ...] = (
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:kv_cache_usage_perc",
)
"""Sample names whose change shows that an engine completed a step (see the module docstring);
names from `fixtures/vllm/vllm-0.33.0-metric-names.txt` (counters with `_total`)."""
EXECUTE_MODEL_TIMEOUT_ENV = "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"
"""vLLM's per-step RPC timeout variable, s (`vllm/envs.py`); the engine inherits the pod's."""
DEFAULT_EXECUTE_MODEL_TIMEOUT_SECONDS = 300
"""vLLM 0.33.0's default for `VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS` (`vllm/envs.py`)."""


def default_stall_seconds(env: Mapping[str, str]) -> int:
    """The stall limit when `DSV4_ENGINE_STALL_SECONDS` is unset: twice vLLM's step timeout, s.

    vLLM itself fails any executor step that takes longer than `VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS`
    (300 s unless the pod sets it), so no healthy step, prefill chunk or decode, lasts that
    long; twice it leaves vLLM's own path (with its stack dump) to fire first where it applies,
    and follows a user who raised vLLM's timeout for slow steps. A value vLLM could not use
    (not a whole number above 0) counts as vLLM's default.
    """
    raw = env.get(EXECUTE_MODEL_TIMEOUT_ENV, "").strip()
    try:
        seconds = int(raw)
    except ValueError:
        seconds = DEFAULT_EXECUTE_MODEL_TIMEOUT_SECONDS
    if seconds <= 0:
        seconds = DEFAULT_EXECUTE_MODEL_TIMEOUT_SECONDS
    return 2 * seconds


@dataclass(frozen=True)
class EngineReading:
    """One engine's values in one `/metrics` reading.

    Attributes:
        running: `vllm:num_requests_running` (requests).
        progress: the `PROGRESS_SAMPLES` values in that order (tokens, tokens, fraction), None
            where the engine does not expose one.
    """

    running: float
    progress: tuple[float | None, ...]


def engine_readings(exposition: str) -> dict[str, EngineReading]:
    """Each engine's reading, keyed by its labels (`engine="0",model_name="m"`).

    An engine is a series of `vllm:num_requests_running`; its progress values are the
    `PROGRESS_SAMPLES` series with the same labels.

    Raises:
        ValueError: the text is not valid Prometheus exposition.
    """
    running: dict[str, float] = {}
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == RUNNING_SAMPLE:
                running[_label_key(sample.labels)] = sample.value
            elif sample.name in PROGRESS_SAMPLES:
                values[(_label_key(sample.labels), sample.name)] = sample.value
    return {
        key: EngineReading(count, tuple(values.get((key, name)) for name in PROGRESS_SAMPLES))
        for key, count in running.items()
    }


def _label_key(labels: Mapping[str, str]) -> str:
    return ",".join(f'{name}="{labels[name]}"' for name in sorted(labels))


@dataclass(frozen=True)
class Stall:
    """The longest current stall.

    Attributes:
        engine: the stalled engine's labels.
        running: its running requests.
        seconds: time between the first and the latest successful reading that showed it
            running with the same progress values, s (at most the true stall).
    """

    engine: str
    running: float
    seconds: float


@dataclass
class _Since:
    progress: tuple[float | None, ...]
    at: float


class ProgressWatchdog:
    """Tracks, per engine, how long it has had running requests and no progress.

    Args:
        limit_seconds: a stall this long (s) is a hung engine (`hung`); 0 never is.

    Raises:
        ValueError: `limit_seconds` is negative or not finite.
    """

    def __init__(self, limit_seconds: float) -> None:
        if not math.isfinite(limit_seconds) or limit_seconds < 0:
            raise ValueError(f"limit_seconds must be finite and >= 0, got {limit_seconds}")
        self.limit_seconds = limit_seconds
        self._since: dict[str, _Since] = {}

    def observe(self, at_seconds: float, exposition: str) -> Stall | None:
        """Feed one successful reading taken at monotonic `at_seconds`; the longest stall.

        Returns:
            The engine with running requests whose progress values have not changed for the
            longest time (0 s when they changed in this reading), or None when no engine has
            running requests.

        Raises:
            ValueError: the text is not valid Prometheus exposition (nothing is recorded).
        """
        readings = engine_readings(exposition)
        longest: Stall | None = None
        for engine in list(self._since):
            if engine not in readings:
                del self._since[engine]
        for engine, reading in readings.items():
            if reading.running <= 0:
                self._since.pop(engine, None)  # idle: nothing to make progress on
                continue
            since = self._since.get(engine)
            if since is None or since.progress != reading.progress:
                since = self._since[engine] = _Since(reading.progress, at_seconds)
            stall = Stall(engine, reading.running, at_seconds - since.at)
            if longest is None or stall.seconds > longest.seconds:
                longest = stall
        return longest

    def hung(self, stall: Stall | None) -> bool:
        """Whether `stall` reaches the limit (never with limit 0)."""
        return self.limit_seconds > 0 and stall is not None and stall.seconds >= self.limit_seconds
