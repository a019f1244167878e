"""Engine double: a small OpenAI-style HTTP server that holds requests open (test-only).

It takes the reference engine's command line (`--host --port --config --served-model-name
--max-num-seqs --max-model-len --seed`) so the runtime launches it as `--engine reference` with
`--reference-module engine_double`, and behaves like vLLM with `--shutdown-timeout`: on SIGTERM
it refuses new requests with 503, lets in-flight ones finish, then exits 0.

Knobs (environment):
- DSV4_DOUBLE_TOKEN_SECONDS: seconds per generated token (a request holds max_tokens × this).
- DSV4_DOUBLE_STARTUP_SECONDS: /health answers 503 for this long (model loading).
- DSV4_DOUBLE_IGNORE_SIGTERM=1: ignore SIGTERM (an engine that never drains).
- DSV4_DOUBLE_EXIT_AFTER_SECONDS / DSV4_DOUBLE_EXIT_STATUS: exit on its own (a crash); a
  negative status -N kills the double with signal N instead (the OOM killer's SIGKILL: -9).
- DSV4_DOUBLE_CHUNK_TOKENS / DSV4_DOUBLE_CHUNK_SECONDS: chunked prefill: a prompt (one token per
  whitespace-separated word) is prefilled in chunks of this many tokens, each taking this long.
- DSV4_DOUBLE_STALL_AFTER_TOKENS: once the double has generated this many tokens in all, no step
  completes any more (a stuck collective): requests hang, the metrics freeze, /health stays 200.
- DSV4_DOUBLE_METRICS_STATUS: /metrics answers this HTTP status (a failing metrics endpoint).
- VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS: as vLLM 0.33.0's multiprocessing executor, a stalled step
  kills the engine core after this long: /health answers 503, then the API server exits 0 (vLLM's
  `watchdog_loop`, every 5 s; here 0.5 s). Unset: a stall that vLLM does not bound.

Metrics follow vLLM 0.33.0's semantics (see `dsv4_runtime.progress`): `vllm:generation_tokens`
grows per generated token, `vllm:prompt_tokens` by the whole prompt only once its prefill is
complete, and `vllm:kv_cache_usage_perc` with the KV blocks (of `BLOCK_TOKENS`) of every chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

BLOCK_TOKENS = 4
"""Tokens per KV block of the double."""
KV_BLOCKS = 100_000
"""KV blocks of the double: usage = blocks held / this."""
API_EXIT_SECONDS = 0.5
"""Time from a dead engine core to the API server's exit (vLLM: its 5 s `watchdog_loop`)."""


class Double:
    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.startup_s = float(os.environ.get("DSV4_DOUBLE_STARTUP_SECONDS", "0"))
        self.token_s = float(os.environ.get("DSV4_DOUBLE_TOKEN_SECONDS", "0.05"))
        self.draining = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.tokens = Counter(
            "vllm:generation_tokens", "Generated tokens", labels, registry=self.registry
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens", labels, registry=self.registry
        )
        self.running = Gauge(
            "vllm:num_requests_running", "Running requests", labels, registry=self.registry
        )
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage", labels, registry=self.registry
        )
        self.tokens.labels(name, "0")
        self.prompt_tokens.labels(name, "0")
        self.running.labels(name, "0")
        self.kv_usage.labels(name, "0")
        self.chunk_tokens = int(os.environ.get("DSV4_DOUBLE_CHUNK_TOKENS", "0"))
        self.chunk_s = float(os.environ.get("DSV4_DOUBLE_CHUNK_SECONDS", "0"))
        stall_after = os.environ.get("DSV4_DOUBLE_STALL_AFTER_TOKENS")
        self.stall_after = None if stall_after is None else int(stall_after)
        timeout = os.environ.get("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS")
        self.execute_timeout_s = None if timeout is None else float(timeout)
        self.metrics_status = int(os.environ.get("DSV4_DOUBLE_METRICS_STATUS", "200"))
        self.generated = 0
        self.blocks = 0
        self.stalled = False
        self.dead = False
        self.exit_status: asyncio.Future[int] | None = None
        self.timeout_task: asyncio.Task[None] | None = None

    async def _step(self, seconds: float) -> None:
        """One engine step of `seconds`; never returns once the engine has stalled."""
        await asyncio.sleep(seconds)
        if self.stalled:
            await asyncio.Event().wait()

    def _stall_if_due(self) -> None:
        if self.stall_after is None or self.stalled or self.generated < self.stall_after:
            return
        self.stalled = True
        if self.execute_timeout_s is not None:
            self.timeout_task = asyncio.ensure_future(self._engine_core_times_out())

    async def _engine_core_times_out(self) -> None:
        assert self.execute_timeout_s is not None
        await asyncio.sleep(self.execute_timeout_s)
        self.dead = True  # ENGINE_CORE_DEAD: /health 503
        await asyncio.sleep(API_EXIT_SECONDS)
        if self.exit_status is not None and not self.exit_status.done():
            self.exit_status.set_result(0)

    def _hold(self, blocks: int) -> None:
        self.blocks += blocks
        self.kv_usage.labels(self.name, "0").set(self.blocks / KV_BLOCKS)

    def loaded(self) -> bool:
        return time.monotonic() - self.started >= self.startup_s

    async def health(self, _: web.Request) -> web.Response:
        if self.dead:
            return web.Response(status=503)
        if not self.loaded():
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def completions(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response(
                {"error": {"message": "server is shutting down", "code": 503}}, status=503
            )
        body = await request.json()
        max_tokens = int(body.get("max_tokens", 16))
        prompt_tokens = max(1, len(str(body.get("prompt", "")).split()))
        self.in_flight += 1
        self.idle.clear()
        self.running.labels(self.name, "0").set(self.in_flight)
        held = 0
        try:
            done = 0
            while self.chunk_tokens > 0 and prompt_tokens - done > self.chunk_tokens:
                await self._step(self.chunk_s)  # a partial prefill chunk: no output, no count
                done += self.chunk_tokens
                blocks = -(-done // BLOCK_TOKENS) - held
                self._hold(blocks)
                held += blocks
            for generated in range(1, max_tokens + 1):
                # the first token completes the prefill (its last chunk), as in vLLM
                last_chunk = generated == 1 and self.chunk_tokens > 0
                await self._step(self.chunk_s if last_chunk else self.token_s)
                if generated == 1:
                    self.prompt_tokens.labels(self.name, "0").inc(prompt_tokens)
                blocks = -(-(prompt_tokens + generated) // BLOCK_TOKENS) - held
                self._hold(blocks)
                held += blocks
                self.tokens.labels(self.name, "0").inc()
                self.generated += 1
                self._stall_if_due()
        finally:
            self._hold(-held)
            self.in_flight -= 1
            self.running.labels(self.name, "0").set(self.in_flight)
            if self.in_flight == 0:
                self.idle.set()
        return web.json_response(
            {
                "object": "text_completion",
                "model": self.name,
                "choices": [{"index": 0, "text": "x" * max_tokens, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": max_tokens},
            }
        )

    async def metrics(self, _: web.Request) -> web.Response:
        if self.metrics_status != 200:
            return web.Response(status=self.metrics_status, text="metrics are failing")
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )


async def serve(args: argparse.Namespace) -> int:
    double = Double(args.served_model_name)
    app = web.Application()
    app.router.add_get("/health", double.health)
    app.router.add_get("/v1/models", double.models)
    app.router.add_post("/v1/completions", double.completions)
    app.router.add_get("/metrics", double.metrics)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if os.environ.get("DSV4_DOUBLE_IGNORE_SIGTERM") == "1":
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
    else:

        def on_term() -> None:
            double.draining = True
            stop.set()

        loop.add_signal_handler(signal.SIGTERM, on_term)
    double.exit_status = loop.create_future()
    exit_after = os.environ.get("DSV4_DOUBLE_EXIT_AFTER_SECONDS")
    if exit_after is not None:
        await asyncio.sleep(float(exit_after))
        await runner.cleanup()
        status = int(os.environ.get("DSV4_DOUBLE_EXIT_STATUS", "1"))
        if status < 0:
            os.kill(os.getpid(), -status)
        return status
    stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
    exiting: asyncio.Future[object] = asyncio.shield(double.exit_status)
    await asyncio.wait([stopping, exiting], return_when=asyncio.FIRST_COMPLETED)
    if double.exit_status.done():  # the engine core died: the API server exits, its
        stopping.cancel()  # requests cut (asyncio.run cancels their handlers)
        return double.exit_status.result()
    exiting.cancel()
    await double.idle.wait()
    await runner.cleanup()
    return 0


def main() -> None:
    disable_created_metrics()  # type: ignore[no-untyped-call]  # only vLLM names exposed
    parser = argparse.ArgumentParser(prog="engine_double")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    sys.exit(asyncio.run(serve(parser.parse_args())))


if __name__ == "__main__":
    main()
