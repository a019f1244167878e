"""The OpenAI-compatible server on the tiny engine (CPU), through plain HTTP (httpx)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.metrics import EngineMetrics
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.server import EngineServer

MODEL = "tiny-ref"
REPO = Path(__file__).resolve().parents[3]
REQUIRED = [
    "vllm:generation_tokens",
    "vllm:prompt_tokens",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
]


@pytest.fixture
def server(tiny_model: Transformer) -> EngineServer:
    metrics = EngineMetrics(MODEL)
    engine = Engine(
        tiny_model, KVBlockPool(TINY, 8), max_num_seqs=4, max_model_len=512, metrics=metrics
    )
    return EngineServer(engine, metrics, MODEL)


@pytest.fixture
async def base_url(server: EngineServer) -> AsyncIterator[str]:
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


async def _metrics(client: httpx.AsyncClient) -> dict[str, float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return _samples(r.text)


async def _stream(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> list[dict]:  # type: ignore[type-arg]
    chunks = []
    async with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        done = False
        async for line in r.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            chunks.append(json.loads(data))
        assert done
    return chunks


async def test_models_and_health(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        assert (await client.get("/health")).status_code == 200
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        assert models["data"][0]["max_model_len"] == 512


async def test_streamed_completions_and_metrics_move_by_the_tokens_served(base_url: str) -> None:
    prompts = ["Hello, DeepSeek-V4!", "x" * 150, "The compressed cache " * 12]
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        before = await _metrics(client)
        results = await asyncio.gather(
            *(
                _stream(
                    client,
                    "/v1/completions",
                    {
                        "model": MODEL,
                        "prompt": p,
                        "max_tokens": 10 + i,
                        "temperature": 0,
                        "ignore_eos": True,
                        "stream_options": {"include_usage": True},
                    },
                )
                for i, p in enumerate(prompts)
            )
        )
        after = await _metrics(client)
    served_prompt = served_gen = 0
    for i, (prompt, chunks) in enumerate(zip(prompts, results, strict=True)):
        token_chunks = [c for c in chunks if c["choices"]]
        assert len(token_chunks) == 10 + i  # one chunk per generated token
        assert token_chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert all(c["object"] == "text_completion" and c["model"] == MODEL for c in chunks)
        usage = chunks[-1]["usage"]
        assert usage["completion_tokens"] == 10 + i
        assert usage["prompt_tokens"] == len(prompt.encode()) + 1  # bytes + BOS
        served_prompt += usage["prompt_tokens"]
        served_gen += usage["completion_tokens"]
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    assert delta["vllm:generation_tokens_total"] == served_gen
    assert delta["vllm:prompt_tokens_total"] == served_prompt
    assert delta["vllm:time_to_first_token_seconds_count"] == 3
    assert delta["vllm:inter_token_latency_seconds_count"] == served_gen - 3
    assert delta["vllm:request_success_total"] == 3
    assert after["vllm:num_requests_running"] == 0
    assert after["vllm:num_requests_waiting"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0


async def test_stream_and_plain_completion_agree(base_url: str) -> None:
    body = {"model": MODEL, "prompt": "abc", "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        plain = (await client.post("/v1/completions", json=body)).json()
        chunks = await _stream(client, "/v1/completions", body)
    assert plain["usage"]["completion_tokens"] == 8
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]


async def test_chat_completions_stream(base_url: str) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0,
        "ignore_eos": True,
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        chunks = await _stream(client, "/v1/chat/completions", body)
        plain = (await client.post("/v1/chat/completions", json=body)).json()
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) == 1 + 5
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert plain["object"] == "chat.completion"


async def test_client_disconnect_aborts_the_request(base_url: str) -> None:
    body = {"model": MODEL, "prompt": "bye", "max_tokens": 200, "ignore_eos": True, "stream": True}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break  # one token, then hang up
        for _ in range(200):
            m = await _metrics(client)
            if m.get("vllm:num_requests_running") == 0 and m.get("vllm:kv_cache_usage_perc") == 0:
                break
            await asyncio.sleep(0.05)
        text = (await client.get("/metrics")).text
    assert m["vllm:num_requests_running"] == 0
    assert m["vllm:kv_cache_usage_perc"] == 0
    assert 'finished_reason="abort"' in text
    assert m["vllm:generation_tokens_total"] < 200


async def test_bad_requests_get_openai_errors(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        r = await client.post("/v1/completions", json={"model": "other", "prompt": "a"})
        assert r.status_code == 404
        assert "other" in r.json()["error"]["message"]
        r = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 0}
        )
        assert r.status_code == 400
        assert "max_tokens" in r.json()["error"]["message"]
        r = await client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "a" * 600, "max_tokens": 4}
        )
        assert r.status_code == 400
        assert "maximum context length is 512" in r.json()["error"]["message"]
        r = await client.post("/v1/completions", content=b"{not json")
        assert r.status_code == 400


def _fixture_names() -> set[str]:
    root = Path(os.environ.get("DSV4_FIXTURES", REPO / ".." / "shared" / "fixtures"))
    path = root / "vllm" / "vllm-0.33.0-metric-names.txt"
    if not path.exists():
        pytest.skip(f"vLLM metric-name fixture missing: {path} (set DSV4_FIXTURES)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


async def test_metric_names_are_vllms(base_url: str) -> None:
    names = _fixture_names()
    async with httpx.AsyncClient(base_url=base_url) as client:
        text = (await client.get("/metrics")).text
    families = {f.name for f in text_string_to_metric_families(text) if f.name.startswith("vllm:")}
    assert set(REQUIRED) <= families
    assert families <= names, sorted(families - names)
    assert "vllm:generation_tokens_total{" in text
    assert "vllm:prompt_tokens_total{" in text
    assert f'model_name="{MODEL}"' in text


async def test_engine_failure_ends_requests_and_health(
    base_url: str, server: EngineServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[object]:
        raise RuntimeError("simulated device failure")

    server.engine.step = broken  # type: ignore[method-assign,assignment]
    body = {"model": MODEL, "prompt": "x", "max_tokens": 4}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        r = await client.post("/v1/completions", json=body)
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "InternalServerError"
        assert (await client.get("/health")).status_code == 503
        r = await client.post("/v1/completions", json=body)  # nothing hangs afterwards either
        assert r.status_code == 503
    assert "simulated device failure" in caplog.text
