"""The autoscaler's drain: POST /drain takes a group out of service, /undrain brings it back.

Both need the admin bearer token (`DSV4_RUNTIME_ADMIN_TOKEN`, set by the operator).
"""

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dsv4_runtime.metrics import RuntimeMetrics
from dsv4_runtime.server import RuntimeState, build_app

TOKEN = "3f9c0c7e5b1d4a7f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _state(token: str | None = TOKEN) -> RuntimeState:
    state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None, admin_token=token)
    state.set_engine_ready(True)
    return state


async def test_drain_and_undrain_toggle_readiness_only() -> None:
    state = _state()
    async with TestClient(TestServer(build_app(state))) as client:
        assert (await client.get("/ready")).status == 200
        assert (await client.post("/drain", headers=AUTH)).status == 200
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["reason"] == "drained by the autoscaler"
        assert (await client.get("/health")).status == 200
        assert (await client.post("/undrain", headers=AUTH)).status == 200
        assert (await client.get("/ready")).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "basic", "longer", "empty"],
)
async def test_drain_without_the_token_is_refused_and_changes_nothing(
    headers: dict[str, str],
) -> None:
    state = _state()
    async with TestClient(TestServer(build_app(state))) as client:
        for path in ("/drain", "/undrain"):
            refused = await client.post(path, headers=headers)
            assert refused.status == 401
            assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert not state.held
        assert (await client.get("/ready")).status == 200
        state.held = True  # drained by the autoscaler: an undrain without the token keeps it so
        assert (await client.post("/undrain", headers=headers)).status == 401
        assert state.held


async def test_an_undecodable_header_is_a_401_not_a_server_error() -> None:
    # Raw bytes on the wire (clients would encode the header): aiohttp keeps them as surrogates.
    state = _state()
    async with TestServer(build_app(state)) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            b"POST /drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:60]
    assert not state.held


async def test_a_pod_without_a_token_refuses_drain() -> None:
    state = _state(token=None)
    async with TestClient(TestServer(build_app(state))) as client:
        refused = await client.post("/drain", headers={"Authorization": "Bearer "})
        assert refused.status == 403
        assert "DSV4_RUNTIME_ADMIN_TOKEN" in (await refused.json())["error"]
        assert not state.held


def test_tokens_per_second_reads_zero_once_the_engine_leaves_ready() -> None:
    """Runtime review: the gauge kept its last value while the engine answered 503, so the
    dashboard showed phantom throughput until the hang watchdog killed the engine."""
    state = _state()
    exposition = 'vllm:generation_tokens_total{engine="0"} %d\n'
    state.metrics.observe_engine(0.0, exposition % 0)
    state.metrics.observe_engine(10.0, exposition % 7000)
    assert state.metrics.generation_tokens_per_second._value.get() == 700
    state.set_engine_ready(False)
    assert state.metrics.generation_tokens_per_second._value.get() == 0
    state.set_engine_ready(True)  # the rate starts again: no jump from the old counter
    state.metrics.observe_engine(20.0, exposition % 9000)
    assert state.metrics.generation_tokens_per_second._value.get() == 0


async def test_sigterm_drain_wins_over_undrain() -> None:
    state = _state()
    state.start_draining()
    async with TestClient(TestServer(build_app(state))) as client:
        assert (await client.post("/undrain", headers=AUTH)).status == 200
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["reason"] == "draining"


async def test_a_held_group_whose_engine_is_not_ready_says_both() -> None:
    # The autoscaler counts a group whose /ready reason is "drained by the autoscaler" as ready
    # and held; a held group whose engine stopped answering must not look like that, but must
    # still say it is held (runtime review: the operator's undrain sweep missed it, so it stayed
    # out of the Service after its engine recovered).
    state = _state()
    state.held = True
    state.set_engine_ready(False)
    async with TestClient(TestServer(build_app(state))) as client:
        ready = await client.get("/ready")
        assert ready.status == 503
        assert await ready.json() == {
            "ready": False,
            "reason": "engine not ready; drained by the autoscaler",
            "held": True,
        }
        state.set_engine_ready(True)
        assert (await (await client.get("/ready")).json())["held"]


async def test_a_slow_engine_scrape_is_answered_from_the_last_exposition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from aiohttp import web

    from dsv4_runtime import server as server_module

    monkeypatch.setattr(server_module, "ENGINE_SCRAPE_TIMEOUT_SECONDS", 0.2)

    async def slow_metrics(_: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="vllm:generation_tokens_total 9\n")

    engine = web.Application()
    engine.router.add_get("/metrics", slow_metrics)
    async with TestServer(engine) as engine_server:
        state = _state()
        state.engine_metrics_url = str(engine_server.make_url("/metrics"))
        state.engine_text = "vllm:num_requests_running 30.0\n"
        state.engine_text_at = time.monotonic() - 5  # read by the background poll 5 s ago
        async with TestClient(TestServer(build_app(state))) as client:
            state.session = client.session
            started = time.monotonic()
            body = await (await client.get("/metrics")).text()
            assert time.monotonic() - started < 0.9  # did not wait for the slow engine
            assert "vllm:num_requests_running 30.0" in body
            assert "dsv4_runtime_engine_scrape_errors_total 1.0" in body
            state.engine_text_at = time.monotonic() - 60  # too old to stand in
            body = await (await client.get("/metrics")).text()
            assert "vllm:num_requests_running" not in body


async def test_a_worker_stop_notice_holds_the_group_back_until_it_expires() -> None:
    state = _state()
    async with TestClient(TestServer(build_app(state))) as client:
        for headers, body, status in (
            ({}, {"seconds": 1}, 401),
            (AUTH, {}, 400),
            (AUTH, {"seconds": 0}, 400),
            (AUTH, {"seconds": 7201}, 400),
        ):
            refused = await client.post("/worker-stopping", headers=headers, json=body)
            assert refused.status == status
        assert (await client.get("/ready")).status == 200
        assert (await client.post("/worker-stopping", headers=AUTH, json={"seconds": 0.3})).ok
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["reason"] == "a worker of this group is stopping"
        # It expires: a worker container restarted in place must not hold the group for good.
        await asyncio.sleep(0.4)
        assert (await client.get("/ready")).status == 200
