"""The progress watchdog: an engine that answers /health while its requests make no progress.

Unit tests of `dsv4_runtime.progress` on expositions, then the supervisor around the engine
double (`doubles/engine_double.py`), which follows vLLM 0.33.0's metric semantics: the prompt
counter moves only once a prefill is complete, the KV usage gauge with every prefill chunk.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from dsv4_runtime import supervisor as supervisor_module
from dsv4_runtime.launch import Launch
from dsv4_runtime.metrics import RuntimeMetrics
from dsv4_runtime.progress import (
    PROGRESS_SAMPLES,
    RUNNING_SAMPLE,
    ProgressWatchdog,
    default_stall_seconds,
)
from dsv4_runtime.server import RuntimeState
from dsv4_runtime.supervisor import Supervisor


def _exposition(*engines: tuple[str, float, float, float, float]) -> str:
    """vLLM-style text: (engine, running, prompt total, generation total, KV usage) each."""
    lines = []
    for engine, running, prompt, generated, usage in engines:
        labels = f'{{engine="{engine}",model_name="m"}}'
        lines += [
            f"vllm:num_requests_running{labels} {running}",
            f"vllm:prompt_tokens_total{labels} {prompt}",
            f"vllm:generation_tokens_total{labels} {generated}",
            f"vllm:kv_cache_usage_perc{labels} {usage}",
        ]
    return "\n".join(lines) + "\n"


def test_the_watched_samples_are_vllms(vllm_metric_names: frozenset[str]) -> None:
    for sample in (RUNNING_SAMPLE, *PROGRESS_SAMPLES):
        assert sample.removesuffix("_total") in vllm_metric_names


def test_running_requests_without_progress_stall_until_the_limit() -> None:
    watchdog = ProgressWatchdog(10)
    stuck = _exposition(("0", 2, 100, 50, 0.25))
    first = watchdog.observe(0.0, stuck)
    assert first is not None
    assert first.seconds == 0
    assert not watchdog.hung(watchdog.observe(9.9, stuck))
    stall = watchdog.observe(10.0, stuck)
    assert stall is not None
    assert (stall.engine, stall.running, stall.seconds) == ('engine="0",model_name="m"', 2, 10)
    assert watchdog.hung(stall)


@pytest.mark.parametrize(
    "moved",
    [
        ("0", 2, 100, 51, 0.25),  # a decode step
        ("0", 2, 100, 50, 0.26),  # a prefill chunk: only its KV blocks show it
        ("0", 2, 900, 51, 0.25),  # a prefill completes
    ],
)
def test_any_watched_value_that_moves_is_progress(
    moved: tuple[str, float, float, float, float],
) -> None:
    watchdog = ProgressWatchdog(10)
    watchdog.observe(0.0, _exposition(("0", 2, 100, 50, 0.25)))
    stall = watchdog.observe(9.0, _exposition(moved))
    assert stall is not None
    assert stall.seconds == 0
    assert not watchdog.hung(watchdog.observe(18.0, _exposition(moved)))


def test_an_idle_engine_never_stalls_and_a_limit_of_0_never_kills() -> None:
    watchdog = ProgressWatchdog(10)
    idle = _exposition(("0", 0, 100, 50, 0.0))
    assert watchdog.observe(0.0, idle) is None
    assert watchdog.observe(100.0, idle) is None
    # requests arrive: the stall counts from the reading that first shows them running
    busy = _exposition(("0", 1, 100, 50, 0.0))
    watchdog.observe(200.0, busy)
    stall = watchdog.observe(205.0, busy)
    assert stall is not None
    assert stall.seconds == 5
    off = ProgressWatchdog(0)
    off.observe(0.0, busy)
    assert not off.hung(off.observe(1e6, busy))


def test_each_engine_is_judged_alone() -> None:
    """With DP, a remote engine core whose outputs no longer reach the front-end freezes its
    own series while the other engines go on: the sums would hide it."""
    watchdog = ProgressWatchdog(10)
    watchdog.observe(0.0, _exposition(("0", 1, 10, 5, 0.1), ("1", 3, 10, 5, 0.1)))
    stall = watchdog.observe(12.0, _exposition(("0", 1, 10, 99, 0.1), ("1", 3, 10, 5, 0.1)))
    assert stall is not None
    assert watchdog.hung(stall)
    assert (stall.engine, stall.running) == ('engine="1",model_name="m"', 3)


def test_the_stall_is_measured_between_successful_readings() -> None:
    """Readings that failed are not fed: the next successful one decides, on its own values."""
    watchdog = ProgressWatchdog(10)
    watchdog.observe(0.0, _exposition(("0", 1, 10, 5, 0.1)))
    # ... /metrics failed from 1 s to 29 s; the engine progressed meanwhile:
    assert not watchdog.hung(watchdog.observe(30.0, _exposition(("0", 1, 10, 9, 0.1))))
    # ... or it did not:
    assert watchdog.hung(watchdog.observe(60.0, _exposition(("0", 1, 10, 9, 0.1))))


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 600), ("", 600), ("1800", 3600), ("0", 600), ("x", 600)]
)
def test_the_default_limit_is_twice_vllms_step_timeout(value: str | None, seconds: int) -> None:
    env = {} if value is None else {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": value}
    assert default_stall_seconds(env) == seconds


# --- the supervisor around the engine double ------------------------------------------------

LIMIT_S = 1.5
"""Stall limit of the supervisor tests, s."""


async def _until(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  (polls state the supervisor sets)
            await asyncio.sleep(0.02)


@pytest.fixture
def engine(
    monkeypatch: pytest.MonkeyPatch, ports: list[int], double_env: dict[str, str]
) -> Callable[..., tuple[Supervisor, RuntimeState]]:
    """A supervisor (stall limit `LIMIT_S`, metrics read every 0.1 s) over the engine double,
    configured by the knobs given (environment variables)."""
    monkeypatch.setattr(supervisor_module, "METRICS_POLL_SECONDS", 0.1)
    monkeypatch.setattr(supervisor_module, "READY_POLL_SECONDS", 0.05)
    monkeypatch.setenv("PYTHONPATH", double_env["PYTHONPATH"])

    def make(**knobs: str) -> tuple[Supervisor, RuntimeState]:
        for name, value in knobs.items():
            monkeypatch.setenv(name, value)
        api = f"http://127.0.0.1:{ports[0]}"
        argv = (sys.executable, "-m", "engine_double", "--host", "127.0.0.1",
                "--port", str(ports[0]), "--served-model-name", "double")  # fmt: skip
        state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=api + "/metrics")
        supervisor = Supervisor(
            Launch(prelaunch=(), argv=argv, serves_api=True),
            state,
            engine_url=api,
            host="127.0.0.1",
            admin_port=ports[1],
            drain_timeout_seconds=1,
            stop_grace_seconds=1,
            stall_seconds=LIMIT_S,
        )
        return supervisor, state

    return make


async def _complete(session: aiohttp.ClientSession, port: int, words: int, tokens: int) -> int:
    body = {"model": "double", "prompt": " ".join(["w"] * words), "max_tokens": tokens}
    async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
        return response.status


def _value(metric: Gauge | Counter) -> float:
    """The value of one of the runtime's unlabelled metrics."""
    return next(iter(metric.collect())).samples[0].value


def _engine_values(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_stuck_engine_is_killed_after_the_limit_and_says_why(
    engine: Callable[..., tuple[Supervisor, RuntimeState]], ports: list[int]
) -> None:
    supervisor, state = engine(DSV4_DOUBLE_STALL_AFTER_TOKENS="3", DSV4_DOUBLE_TOKEN_SECONDS="0.02")
    running = asyncio.create_task(supervisor.run())
    async with aiohttp.ClientSession() as session:
        await _until(lambda: state.engine_ready, 10)
        request = asyncio.create_task(_complete(session, ports[0], 4, 100))
        async with session.get(f"http://127.0.0.1:{ports[0]}/health") as health:
            assert health.status == 200  # alive: the health checks see nothing wrong
        stuck = time.monotonic()
        assert await asyncio.wait_for(running, 10) == supervisor_module.EXIT_ENGINE_KILLED
        took = time.monotonic() - stuck
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
    assert LIMIT_S <= took < LIMIT_S + 2.5, f"killed {took:.2f} s after the stall began"
    assert supervisor.failure is not None
    assert 'engine {engine="0",model_name="double"} has had 1 running request(s)' in (
        supervisor.failure
    )
    assert "no progress" in supervisor.failure
    assert "DSV4_ENGINE_STALL_SECONDS" in supervisor.failure
    assert not state.engine_ready


async def test_a_long_prefill_whose_counters_do_not_move_is_not_killed(
    engine: Callable[..., tuple[Supervisor, RuntimeState]], ports: list[int]
) -> None:
    """25 chunks of 4 tokens, 0.12 s each: 3 s in which neither token counter moves (as in
    vLLM), twice the limit; only the KV usage of each chunk shows the progress."""
    supervisor, state = engine(
        DSV4_DOUBLE_CHUNK_TOKENS="4",
        DSV4_DOUBLE_CHUNK_SECONDS="0.12",
        DSV4_DOUBLE_TOKEN_SECONDS="0",
    )
    running = asyncio.create_task(supervisor.run())
    async with aiohttp.ClientSession() as session:
        await _until(lambda: state.engine_ready, 10)
        started = time.monotonic()
        request = asyncio.create_task(_complete(session, ports[0], 100, 2))
        frozen: list[tuple[float, float, float]] = []  # (time, prompt, generation) while running
        while not request.done():
            async with session.get(f"http://127.0.0.1:{ports[0]}/metrics") as response:
                values = _engine_values(await response.text())
            if values[RUNNING_SAMPLE] > 0:
                frozen.append(
                    (
                        time.monotonic(),
                        values["vllm:prompt_tokens_total"],
                        values["vllm:generation_tokens_total"],
                    )
                )
            await asyncio.sleep(0.1)
        assert await request == 200
        assert not running.done(), "a healthy long prefill was killed"
        # the counters alone would have looked stuck for longer than the limit
        still = [t for t, prompt, generated in frozen if (prompt, generated) == frozen[0][1:]]
        assert still[-1] - still[0] > LIMIT_S, frozen
        assert time.monotonic() - started > LIMIT_S
        stalled = _value(state.metrics.engine_stalled_seconds)
        assert stalled < LIMIT_S
    supervisor.request_drain()
    assert await asyncio.wait_for(running, 10) == 0


async def test_an_idle_engine_is_not_killed(
    engine: Callable[..., tuple[Supervisor, RuntimeState]],
) -> None:
    supervisor, state = engine()
    running = asyncio.create_task(supervisor.run())
    await _until(lambda: state.engine_ready, 10)
    await asyncio.sleep(3 * LIMIT_S)
    assert not running.done(), "an idle engine was killed"
    assert _value(state.metrics.engine_stall_limit_seconds) == LIMIT_S
    supervisor.request_drain()
    assert await asyncio.wait_for(running, 10) == 0


async def test_without_metrics_the_watchdog_decides_nothing(
    engine: Callable[..., tuple[Supervisor, RuntimeState]], ports: list[int]
) -> None:
    """A stuck engine whose /metrics fails is left to the health checks and to vLLM's own
    step timeout: a failed reading is no evidence of a stall (nor of progress)."""
    supervisor, state = engine(
        DSV4_DOUBLE_STALL_AFTER_TOKENS="3",
        DSV4_DOUBLE_TOKEN_SECONDS="0.02",
        DSV4_DOUBLE_METRICS_STATUS="500",
    )
    running = asyncio.create_task(supervisor.run())
    async with aiohttp.ClientSession() as session:
        await _until(lambda: state.engine_ready, 10)
        request = asyncio.create_task(_complete(session, ports[0], 4, 100))
        await asyncio.sleep(3 * LIMIT_S)
        assert not running.done(), "killed without a reading that showed a stall"
        errors = _value(state.metrics.engine_scrape_errors)
        assert errors >= 10
        assert supervisor.failure is None
        supervisor.request_drain()  # the stuck request never ends: killed after drain + grace
        assert await asyncio.wait_for(running, 10) == supervisor_module.EXIT_ENGINE_KILLED
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)


async def test_vllms_own_step_timeout_ends_the_runtime_first(
    engine: Callable[..., tuple[Supervisor, RuntimeState]], ports: list[int], tmp_path: Path
) -> None:
    """vLLM 0.33.0's executor fails a step after VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS: the engine
    core dies, /health turns 503 and `vllm serve` exits 0 (the double does the same). The
    runtime exits 1 on that, before its own limit (here 1.5 s; by default twice vLLM's)."""
    supervisor, state = engine(
        DSV4_DOUBLE_STALL_AFTER_TOKENS="3",
        DSV4_DOUBLE_TOKEN_SECONDS="0.02",
        VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS="0.5",
    )
    running = asyncio.create_task(supervisor.run())
    async with aiohttp.ClientSession() as session:
        await _until(lambda: state.engine_ready, 10)
        request = asyncio.create_task(_complete(session, ports[0], 4, 100))
        assert await asyncio.wait_for(running, 10) == 1
        await asyncio.gather(request, return_exceptions=True)
    assert supervisor.failure is None  # not the watchdog: the engine stopped on its own
    assert not state.engine_ready
