"""The autoscaler's drain: POST /drain takes a group out of service, /undrain brings it back."""

from aiohttp.test_utils import TestClient, TestServer

from dsv4_runtime.metrics import RuntimeMetrics
from dsv4_runtime.server import RuntimeState, build_app


async def test_drain_and_undrain_toggle_readiness_only() -> None:
    state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None)
    state.set_engine_ready(True)
    async with TestClient(TestServer(build_app(state))) as client:
        assert (await client.get("/ready")).status == 200
        assert (await client.post("/drain")).status == 200
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["reason"] == "drained by the autoscaler"
        assert (await client.get("/health")).status == 200
        assert (await client.post("/undrain")).status == 200
        assert (await client.get("/ready")).status == 200


async def test_sigterm_drain_wins_over_undrain() -> None:
    state = RuntimeState(metrics=RuntimeMetrics(), engine_metrics_url=None)
    state.set_engine_ready(True)
    state.start_draining()
    async with TestClient(TestServer(build_app(state))) as client:
        await client.post("/undrain")
        ready = await client.get("/ready")
        assert ready.status == 503
        assert (await ready.json())["reason"] == "draining"
