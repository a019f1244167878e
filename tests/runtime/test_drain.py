"""The runtime as a process around an engine double: readiness, metrics, SIGTERM drain, kills.

The double (`doubles/engine_double.py`) is launched by the runtime as its reference engine; it
holds each completion for max_tokens × DSV4_DOUBLE_TOKEN_SECONDS and, like vLLM with
`--shutdown-timeout`, refuses new requests after SIGTERM while in-flight ones finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsv4_runtime.config import RuntimeConfig


@dataclass
class Runtime:
    process: subprocess.Popen[bytes]
    admin: str
    api: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _wait(condition: Callable[[], bool], timeout: float, what: str, runtime: Runtime) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{runtime.output()}")


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=1.0).status_code
    except httpx.TransportError:
        return None


@pytest.fixture
def start_runtime(
    tmp_path: Path, ports: list[int], double_env: dict[str, str]
) -> Iterator[Callable[..., Runtime]]:
    started: list[Runtime] = []

    def start(env: dict[str, str] | None = None, **changes: object) -> Runtime:
        config = RuntimeConfig(
            engine="reference",
            model="double",
            served_model_name="double",
            host="127.0.0.1",
            api_port=ports[0],
            admin_port=ports[1],
            drain_timeout_seconds=5,
            engine_stop_grace_seconds=5,
            reference_module="engine_double",
            shm_path=tmp_path / "shm",
            termination_log=tmp_path / "termination-log",
        ).replace(**changes)
        log = tmp_path / "runtime.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "dsv4_runtime", *config.to_args()],
                env={**double_env, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        runtime = Runtime(
            process, f"http://127.0.0.1:{ports[1]}", f"http://127.0.0.1:{ports[0]}", log
        )
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime.process.poll() is None:
            os.killpg(runtime.process.pid, signal.SIGKILL)
            runtime.process.wait()


def _complete(api: str, max_tokens: int) -> httpx.Response:
    return httpx.post(
        f"{api}/v1/completions",
        json={"model": "double", "prompt": "hi", "max_tokens": max_tokens},
        timeout=30.0,
    )


def _running(api: str) -> float:
    text = httpx.get(f"{api}/metrics", timeout=1.0).text
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:num_requests_running":
            return sum(s.value for s in family.samples)
    return 0.0


def test_sigterm_drains_held_requests_and_refuses_new_ones(
    start_runtime: Callable[..., Runtime],
) -> None:
    runtime = start_runtime(env={"DSV4_DOUBLE_TOKEN_SECONDS": "0.1"})
    _wait(lambda: _status(f"{runtime.admin}/ready") == 200, 8, "/ready 200", runtime)
    with ThreadPoolExecutor(max_workers=3) as pool:
        held: list[Future[httpx.Response]] = [
            pool.submit(_complete, runtime.api, 20) for _ in range(3)
        ]  # each held 2 s
        _wait(lambda: _running(runtime.api) == 3, 3, "3 requests in flight", runtime)
        runtime.process.send_signal(signal.SIGTERM)
        not_ready_after = _wait(
            lambda: _status(f"{runtime.admin}/ready") == 503, 1.0, "/ready 503", runtime
        )
        assert not_ready_after < 1.0
        print(f"/ready answered 503 {not_ready_after * 1000:.0f} ms after SIGTERM")
        assert httpx.get(f"{runtime.admin}/health", timeout=1.0).status_code == 200
        refused = _complete(runtime.api, 1)
        assert refused.status_code == 503
        assert refused.json()["error"]["message"] == "server is shutting down"
        assert all(not future.done() for future in held), "held requests were cut short"
        responses = [future.result(timeout=10) for future in held]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.json()["usage"]["completion_tokens"] for r in responses] == [20, 20, 20]
    assert runtime.process.wait(timeout=8) == 0, runtime.output()
    assert "engine drained and exited with status 0" in runtime.output()


def test_engine_ignoring_sigterm_is_killed_after_drain_and_grace(
    start_runtime: Callable[..., Runtime],
) -> None:
    runtime = start_runtime(
        env={"DSV4_DOUBLE_IGNORE_SIGTERM": "1"},
        drain_timeout_seconds=1,
        engine_stop_grace_seconds=1,
    )
    _wait(lambda: _status(f"{runtime.admin}/ready") == 200, 8, "/ready 200", runtime)
    engine_pid = httpx.get(f"{runtime.api}/health", timeout=1.0).json()["pid"]
    sent = time.monotonic()
    runtime.process.send_signal(signal.SIGTERM)
    assert runtime.process.wait(timeout=8) == 1, runtime.output()
    waited = time.monotonic() - sent
    assert 2.0 <= waited < 5.0, f"killed after {waited:.2f} s, drain + grace is 2 s"
    with pytest.raises(ProcessLookupError):
        os.kill(engine_pid, 0)
    assert "engine still running 2 s after SIGTERM: killing its process group" in (runtime.output())


@pytest.mark.parametrize(("status", "expected"), [("7", 7), ("-9", 137)])
def test_engine_crash_is_the_runtime_exit_status(
    start_runtime: Callable[..., Runtime], status: str, expected: int
) -> None:
    """An engine killed by signal N (the OOM killer: 9) exits 128 + N, as a shell reports it
    (runtime review: it exited 1, like a hung engine the runtime had to kill)."""
    runtime = start_runtime(
        env={"DSV4_DOUBLE_EXIT_AFTER_SECONDS": "0.5", "DSV4_DOUBLE_EXIT_STATUS": status}
    )
    assert runtime.process.wait(timeout=8) == expected, runtime.output()
    assert f"engine exited on its own with status {status}" in runtime.output()


def test_readiness_waits_for_the_model_and_metrics_carry_tokens_per_second(
    start_runtime: Callable[..., Runtime], vllm_metric_names: frozenset[str]
) -> None:
    runtime = start_runtime(
        env={"DSV4_DOUBLE_STARTUP_SECONDS": "1.0", "DSV4_DOUBLE_TOKEN_SECONDS": "0.001"}
    )
    _wait(lambda: _status(f"{runtime.admin}/health") == 200, 8, "/health 200", runtime)
    loading = httpx.get(f"{runtime.admin}/ready", timeout=1.0)
    assert (loading.status_code, loading.json()) == (
        503,
        {"ready": False, "reason": "engine not ready", "held": False},
    )
    _wait(lambda: _status(f"{runtime.admin}/ready") == 200, 8, "/ready 200", runtime)
    httpx.get(f"{runtime.admin}/metrics", timeout=5.0)  # first sample: 0 tokens
    time.sleep(0.2)
    assert all(_complete(runtime.api, 50).status_code == 200 for _ in range(4))
    response = httpx.get(f"{runtime.admin}/metrics", timeout=5.0)
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["vllm:generation_tokens"].samples[0].value == 200.0
    tokens_per_second = families["dsv4_runtime_generation_tokens_per_second"].samples[0].value
    assert tokens_per_second > 0.0
    assert families["dsv4_runtime_engine_ready"].samples[0].value == 1.0
    startup = families["dsv4_runtime_engine_startup_seconds"].samples[0].value
    assert startup >= 1.0
    engine_names = {name for name in families if name.startswith("vllm:")}
    assert engine_names <= vllm_metric_names, "the double must use vLLM 0.33.0's metric names"
    print(f"tokens/s gauge {tokens_per_second:.1f}, startup {startup:.2f} s")
    runtime.process.send_signal(signal.SIGTERM)
    assert runtime.process.wait(timeout=8) == 0, runtime.output()
