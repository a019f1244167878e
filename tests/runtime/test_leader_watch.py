"""A worker's watch of its leader's runtime (`Supervisor._watch_leader`), in process."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from dsv4_runtime import supervisor as supervisor_module
from dsv4_runtime.launch import Launch
from dsv4_runtime.metrics import RuntimeMetrics
from dsv4_runtime.server import WORKER_STOPPING_MAX_SECONDS, RuntimeState, build_app
from dsv4_runtime.supervisor import Supervisor


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "LEADER_POLL_SECONDS", 0.05)
    monkeypatch.setattr(supervisor_module, "READY_POLL_SECONDS", 0.05)
    monkeypatch.setattr(supervisor_module, "LEADER_LOST_SECONDS", 0.3)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(port: int, session: aiohttp.ClientSession) -> Supervisor:
    state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None)
    state.session = session
    return Supervisor(
        Launch(prelaunch=(), argv=("true",), serves_api=False),
        state,
        engine_url="http://127.0.0.1:1",
        host="127.0.0.1",
        admin_port=0,
        drain_timeout_seconds=1,
        stop_grace_seconds=1,
        leader_admin_url=f"http://127.0.0.1:{port}",
    )


async def test_a_leader_that_answered_and_went_away_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _free_port()
    leader = TestServer(build_app(RuntimeState(RuntimeMetrics(), None)), port=port)
    async with aiohttp.ClientSession() as session:
        worker = _worker(port, session)
        watch = asyncio.ensure_future(worker._watch_leader())
        await asyncio.sleep(0.5)  # no leader yet, for longer than LEADER_LOST_SECONDS
        assert not worker._leader_lost.is_set()  # it may start later: the worker waits
        await leader.start_server()
        await asyncio.sleep(0.3)
        assert not worker._leader_lost.is_set()  # answering
        await leader.close()  # the leader is gone
        with caplog.at_level("ERROR", logger="dsv4_runtime"):
            await asyncio.wait_for(watch, timeout=3)
    assert worker._leader_lost.is_set()
    # h39 E: the line names the leader's address.
    assert f"the leader's runtime at http://127.0.0.1:{port} has not answered" in caplog.text


async def test_a_restarted_leader_is_a_new_instance() -> None:
    port = _free_port()
    first = TestServer(build_app(RuntimeState(RuntimeMetrics(), None)), port=port)
    await first.start_server()
    async with aiohttp.ClientSession() as session:
        worker = _worker(port, session)
        watch = asyncio.ensure_future(worker._watch_leader())
        await asyncio.sleep(0.2)
        await first.close()
        second = TestServer(build_app(RuntimeState(RuntimeMetrics(), None)), port=port)
        await second.start_server()
        try:
            await asyncio.wait_for(watch, timeout=3)
        finally:
            await second.close()
    assert worker._leader_lost.is_set()


async def _notice(drain: int, settle: int = 0) -> RuntimeState:
    """A leader runtime's state after a worker (grace 15 s) sent it its stop notice."""
    port = _free_port()
    leader_state = RuntimeState(RuntimeMetrics(), None, admin_token="t0k")
    leader_state.engine_ready = True
    leader = TestServer(build_app(leader_state), port=port)
    await leader.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            worker_state = RuntimeState(RuntimeMetrics(), None, admin_token="t0k")
            worker_state.session = session
            worker = Supervisor(
                Launch(prelaunch=(), argv=("true",), serves_api=False),
                worker_state,
                engine_url="http://127.0.0.1:1",
                host="127.0.0.1",
                admin_port=0,
                drain_timeout_seconds=drain,
                stop_grace_seconds=15,
                leader_admin_url=f"http://127.0.0.1:{port}",
                route_settle_seconds=settle,
            )
            await worker._tell_leader()
    finally:
        await leader.close()
    return leader_state


async def test_a_long_drain_stop_notice_is_still_taken_by_the_leader() -> None:
    """drain + grace + margin above the leader's cap was refused (HTTP 400): the leader kept
    taking requests while the worker's ranks were leaving. The notice is capped instead."""
    leader_state = await _notice(int(WORKER_STOPPING_MAX_SECONDS))
    assert leader_state.worker_stopping
    assert not leader_state.ready


async def test_the_stop_notice_covers_the_route_settle_time() -> None:
    """h39 A: the leader is not terminating, so the Service routes to it until its readiness
    probe fails; the worker's ranks serve that long (route settle) before the drain, and the
    leader must refuse new requests for all of it: settle + drain + grace + margin."""
    import time

    leader_state = await _notice(30, settle=40)
    left = leader_state.worker_stopping_until - time.monotonic()
    margin = supervisor_module.LEADER_NOTICE_MARGIN_SECONDS
    assert 40 + 30 + 15 + margin - 2 < left <= 40 + 30 + 15 + margin


async def test_a_worker_without_the_admin_token_says_it_cannot_tell_its_leader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """h39 E: without the token the stop notice was skipped without a word, so nothing in
    the worker's log said why its leader kept taking requests while the ranks left."""
    async with aiohttp.ClientSession() as session:
        worker = _worker(_free_port(), session)
        with caplog.at_level("WARNING", logger="dsv4_runtime"):
            await worker._tell_leader()
    assert "DSV4_RUNTIME_ADMIN_TOKEN is not set" in caplog.text
