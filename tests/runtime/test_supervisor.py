"""Supervisor in-process: workers hold SIGTERM back, prelaunch failures stop, health re-checks."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from dsv4_runtime import supervisor as supervisor_module
from dsv4_runtime.launch import Launch
from dsv4_runtime.metrics import RuntimeMetrics
from dsv4_runtime.server import RuntimeState
from dsv4_runtime.supervisor import Supervisor


def _engine(marker: Path, exit_after: float | None = None) -> tuple[str, ...]:
    """A process that records when SIGTERM reaches it (monotonic clock) and then exits 0."""
    code = (
        "import pathlib, signal, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "def term(*_):\n"
        "    marker.write_text(repr(time.monotonic()))\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        f"exit_after = {exit_after!r}\n"
        "if exit_after is None:\n"
        "    signal.pause()\n"
        "time.sleep(exit_after)\n"
    )
    return (sys.executable, "-c", code)


def _supervisor(
    launch: Launch, admin_port: int, leader: str | None = None, **timing: int
) -> tuple[Supervisor, RuntimeState]:
    """A worker's supervisor (`leader`: its leader runtime's admin URL) and its state."""
    state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None)
    supervisor = Supervisor(
        launch,
        state,
        engine_url="http://127.0.0.1:9",
        host="127.0.0.1",
        admin_port=admin_port,
        drain_timeout_seconds=timing.get("drain", 1),
        stop_grace_seconds=timing.get("grace", 2),
        engine_term_delay_seconds=timing.get("delay", 0),
        leader_admin_url=leader,
        route_settle_seconds=timing.get("settle", 0),
    )
    return supervisor, state


async def _until(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  (polls state the supervisor sets)
            await asyncio.sleep(0.02)


async def test_worker_passes_sigterm_on_only_after_the_drain_timeout(
    tmp_path: Path, ports: list[int]
) -> None:
    marker = tmp_path / "term"
    launch = Launch(prelaunch=(), argv=_engine(marker), serves_api=False)
    supervisor, state = _supervisor(launch, ports[1], drain=1, grace=2, delay=1)
    running = asyncio.create_task(supervisor.run())
    await _until(lambda: state.engine_ready, 5)
    await asyncio.sleep(0.3)  # let the engine install its SIGTERM handler
    asked = time.monotonic()
    supervisor.request_drain()
    assert not state.ready
    assert await running == 0
    held_back = float(marker.read_text()) - asked
    assert 1.0 <= held_back < 3.0, f"SIGTERM reached the worker engine after {held_back:.2f} s"


@pytest.mark.parametrize("leader", [True, False])
async def test_a_worker_of_a_group_holds_its_ranks_for_the_route_settle_time_too(
    tmp_path: Path, ports: list[int], leader: bool
) -> None:
    """h39 A: a worker evicted alone told its leader to take no new requests, but the Service
    routed to the leader until its readiness probe failed (up to 30-40 s), and the worker's
    ranks exited after the drain (30 s): requests admitted meanwhile were cut. A worker with a
    leader now holds them for the route settle time first; without one, settle is ignored."""
    marker = tmp_path / "term"
    launch = Launch(prelaunch=(), argv=_engine(marker), serves_api=False)
    # delay: drain + settle, as cli passes it to workers
    supervisor, state = _supervisor(
        launch, ports[1], "http://127.0.0.1:9" if leader else None, delay=2, settle=1
    )
    running = asyncio.create_task(supervisor.run())
    await _until(lambda: state.engine_ready, 5)
    await asyncio.sleep(0.3)  # let the engine install its SIGTERM handler
    asked = time.monotonic()
    supervisor.request_drain()
    assert await running == 0
    held_back = float(marker.read_text()) - asked
    low, high = (2.0, 3.5) if leader else (1.0, 2.0)
    assert low <= held_back < high, f"SIGTERM reached the engine after {held_back:.2f} s"


@pytest.mark.parametrize("leader", ["draining", "gone"])
async def test_a_worker_skips_the_settle_time_when_its_whole_group_stops(
    tmp_path: Path, ports: list[int], monkeypatch: pytest.MonkeyPatch, leader: str
) -> None:
    """h40: the route settle time helps only a worker evicted alone; when the whole group
    stops (a rolling update, a scale-down) the leader drains too, and holding the ranks
    another 40 s only kept the pod and its GPUs. The worker now asks the leader's runtime
    and skips the rest of the settle time once it drains or stops answering."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from dsv4_runtime.server import build_app

    monkeypatch.setattr(supervisor_module, "SETTLE_POLL_SECONDS", 0.1)
    leader_state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None)
    leader_state.draining = leader == "draining"
    server = TestServer(build_app(leader_state), port=ports[2])
    if leader == "draining":
        await server.start_server()
    marker = tmp_path / "term"
    launch = Launch(prelaunch=(), argv=_engine(marker), serves_api=False)
    supervisor, state = _supervisor(
        launch, ports[1], f"http://127.0.0.1:{ports[2]}", delay=31, settle=30
    )
    try:
        async with aiohttp.ClientSession() as session:
            state.session = session
            running = asyncio.create_task(supervisor.run())
            await _until(lambda: state.engine_ready, 5)
            await asyncio.sleep(0.3)  # let the engine install its SIGTERM handler
            asked = time.monotonic()
            supervisor.request_drain()
            assert await asyncio.wait_for(running, 10) == 0
    finally:
        await server.close()
    held_back = float(marker.read_text()) - asked
    # The drain (1 s) after at most a few polls, not the 30 s settle time first.
    assert 1.0 <= held_back < 4.0, f"SIGTERM reached the engine after {held_back:.2f} s"


async def test_worker_engine_that_stops_with_the_group_gets_no_sigterm(
    tmp_path: Path, ports: list[int]
) -> None:
    marker = tmp_path / "term"
    launch = Launch(prelaunch=(), argv=_engine(marker, exit_after=1.0), serves_api=False)
    supervisor, state = _supervisor(launch, ports[1], drain=5, delay=5)
    running = asyncio.create_task(supervisor.run())
    await _until(lambda: state.engine_ready, 5)
    supervisor.request_drain()
    assert await asyncio.wait_for(running, 4) == 0
    assert not marker.exists()


async def test_failed_prelaunch_stops_the_launch(tmp_path: Path, ports: list[int]) -> None:
    marker = tmp_path / "term"
    launch = Launch(
        prelaunch=((sys.executable, "-c", "raise SystemExit(5)"),),
        argv=_engine(marker),
        serves_api=False,
    )
    supervisor, state = _supervisor(launch, ports[1])
    assert await asyncio.wait_for(supervisor.run(), 5) == 5
    assert not state.engine_ready


async def _serve(port: int, routes: dict[str, Callable[[], int]]) -> web.AppRunner:
    """A stand-in engine API answering each path with the status its callable returns."""
    app = web.Application()
    for path, status in routes.items():

        async def handler(_: web.Request, status: Callable[[], int] = status) -> web.Response:
            return web.Response(status=status())

        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _api_supervisor(tmp_path: Path, ports: list[int]) -> tuple[Supervisor, RuntimeState]:
    launch = Launch(prelaunch=(), argv=_engine(tmp_path / "term"), serves_api=True)
    state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None)
    supervisor = Supervisor(
        launch,
        state,
        engine_url=f"http://127.0.0.1:{ports[0]}",
        host="127.0.0.1",
        admin_port=ports[1],
        drain_timeout_seconds=1,
        stop_grace_seconds=1,
    )
    return supervisor, state


async def test_ready_engine_that_turns_unhealthy_is_not_ready(
    tmp_path: Path, ports: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "HEALTH_POLL_SECONDS", 0.05)
    monkeypatch.setattr(supervisor_module, "READY_POLL_SECONDS", 0.05)
    healthy = [True]
    status = lambda: 200 if healthy[0] else 500  # noqa: E731
    runner = await _serve(ports[0], {"/health": status, "/v1/models": status})
    try:
        supervisor, state = _api_supervisor(tmp_path, ports)
        running = asyncio.create_task(supervisor.run())
        await _until(lambda: state.engine_ready, 5)
        healthy[0] = False
        await asyncio.sleep(0.08)
        assert state.engine_ready, "one failed check must not flip readiness"
        await _until(lambda: not state.engine_ready, 2)
        healthy[0] = True
        await _until(lambda: state.engine_ready, 2)
        await asyncio.sleep(0.3)
        supervisor.request_drain()
        assert await asyncio.wait_for(running, 5) == 0
    finally:
        await runner.cleanup()


async def test_an_api_key_guarded_engine_is_ready(
    tmp_path: Path, ports: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM's --api-key guards every /v1 path with 401 and leaves /health public.
    monkeypatch.setattr(supervisor_module, "READY_POLL_SECONDS", 0.05)
    runner = await _serve(ports[0], {"/health": lambda: 200, "/v1/models": lambda: 401})
    try:
        supervisor, state = _api_supervisor(tmp_path, ports)
        running = asyncio.create_task(supervisor.run())
        await _until(lambda: state.engine_ready, 5)
        supervisor.request_drain()
        assert await asyncio.wait_for(running, 5) == 0
    finally:
        await runner.cleanup()


async def test_an_engine_that_stays_unhealthy_is_killed_and_the_runtime_exits_1(
    tmp_path: Path, ports: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "HEALTH_POLL_SECONDS", 0.05)
    monkeypatch.setattr(supervisor_module, "READY_POLL_SECONDS", 0.05)
    monkeypatch.setattr(supervisor_module, "HUNG_ENGINE_SECONDS", 0.5)
    healthy = [True]
    status = lambda: 200 if healthy[0] else 500  # noqa: E731
    runner = await _serve(ports[0], {"/health": status, "/v1/models": status})
    try:
        supervisor, state = _api_supervisor(tmp_path, ports)
        running = asyncio.create_task(supervisor.run())
        await _until(lambda: state.engine_ready, 5)
        healthy[0] = False
        started = time.monotonic()
        assert await asyncio.wait_for(running, 5) == supervisor_module.EXIT_ENGINE_KILLED
        assert 0.5 <= time.monotonic() - started < 3
        assert not state.engine_ready
        # the reason also goes to the termination log (cli writes `failure` there)
        assert supervisor.failure == "engine has not answered its health checks for 0.5 s"
        assert not (tmp_path / "term").exists()  # killed (SIGKILL), not drained
    finally:
        await runner.cleanup()


async def test_a_prelaunch_killed_by_a_signal_exits_128_plus_n(
    tmp_path: Path, ports: list[int]
) -> None:
    launch = Launch(
        prelaunch=((sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"),),
        argv=_engine(tmp_path / "term"),
        serves_api=False,
    )
    supervisor, _ = _supervisor(launch, ports[1])
    assert await asyncio.wait_for(supervisor.run(), 5) == 137
