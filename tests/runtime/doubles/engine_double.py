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
        self.tokens.labels(name, "0")
        self.prompt_tokens.labels(name, "0")
        self.running.labels(name, "0")

    def loaded(self) -> bool:
        return time.monotonic() - self.started >= self.startup_s

    async def health(self, _: web.Request) -> web.Response:
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
        self.in_flight += 1
        self.idle.clear()
        self.running.labels(self.name, "0").set(self.in_flight)
        try:
            await asyncio.sleep(max_tokens * self.token_s)
            self.tokens.labels(self.name, "0").inc(max_tokens)
            self.prompt_tokens.labels(self.name, "0").inc(1)
        finally:
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
    exit_after = os.environ.get("DSV4_DOUBLE_EXIT_AFTER_SECONDS")
    if exit_after is not None:
        await asyncio.sleep(float(exit_after))
        await runner.cleanup()
        status = int(os.environ.get("DSV4_DOUBLE_EXIT_STATUS", "1"))
        if status < 0:
            os.kill(os.getpid(), -status)
        return status
    await stop.wait()
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
