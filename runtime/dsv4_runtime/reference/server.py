"""OpenAI-compatible HTTP server of the reference engine (aiohttp).

Routes: `POST /v1/completions`, `POST /v1/chat/completions` (both with `stream` as server-sent
events, one chunk per generated token, `data: [DONE]` last, usage with
`stream_options.include_usage`), `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus).
Errors use OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

The engine steps in one worker thread; requests and aborts reach it through the event loop, which
moves them into the engine between steps. On SIGTERM (`drain()`), new requests get 503 while
running and queued ones finish; then the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .engine import Engine, Request, SamplingParams, TokenEvent
from .metrics import EngineMetrics
from .tokenizer import ByteTokenizer, IncrementalDecoder

#: OpenAI's default `max_tokens` for completions.
DEFAULT_MAX_TOKENS = 16
#: Token id of the event that ends every open request when the engine loop fails.
ERROR_TOKEN = -1
log = logging.getLogger(__name__)


class BadRequestError(Exception):
    """A request the API rejects with 400 (message names the field)."""


class EngineServer:
    """Bridges aiohttp handlers and the engine.

    Args:
        engine: the engine (its `metrics` must be `metrics`).
        metrics: the metrics exposed on /metrics.
        served_model_name: the model id clients must use (`--served-model-name`).
        tokenizer: text ↔ token ids.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: EngineMetrics,
        served_model_name: str,
        tokenizer: ByteTokenizer | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.model_name = served_model_name
        self.tokenizer = tokenizer or ByteTokenizer()
        self.draining = False
        self.created = int(time.time())
        self._pending: list[Request] = []
        self._aborts: list[str] = []
        self._streams: dict[str, asyncio.Queue[TokenEvent]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def app(self) -> web.Application:
        """The aiohttp application with all routes; the engine loop runs while it runs."""
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_handler)
        app.cleanup_ctx.append(self._engine_loop_ctx)
        return app

    async def _engine_loop_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._run())
        yield
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # a failure is logged in _run
            await self._task
        self._executor.shutdown(wait=True)

    def drain(self) -> None:
        """Stop admitting requests (503); running and queued ones go on."""
        self.draining = True

    async def wait_idle(self) -> None:
        """Return once no request is pending, queued, running or being streamed."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._busy():
                self._idle.clear()
                continue
            return

    def _busy(self) -> bool:
        if self._task is not None and self._task.done():  # a failed engine has nothing to finish
            return bool(self._streams)
        return bool(self._pending or self._streams or self.engine.has_work)

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception:
            # the engine is broken: end every open request with an error; /health turns 503
            log.exception("engine step failed; the engine loop stops")
            for rid, queue in self._streams.items():
                queue.put_nowait(TokenEvent(rid, ERROR_TOKEN, "error", 0, 0))
            raise

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._pending or self._aborts or self.engine.has_work):
                if not self._streams:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            for rid in self._aborts:
                self.engine.abort(rid)
            self._aborts.clear()
            for req in self._pending:
                self.engine.add_request(req)
            self._pending.clear()
            events = await loop.run_in_executor(self._executor, self.engine.step)
            for ev in events:
                queue = self._streams.get(ev.request_id)
                if queue is not None:
                    queue.put_nowait(ev)

    def _submit(self, req: Request) -> asyncio.Queue[TokenEvent]:
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._streams[req.request_id] = queue
        self._pending.append(req)
        self._idle.clear()
        self._wake.set()
        return queue

    def _close(self, request_id: str, finished: bool) -> None:
        self._streams.pop(request_id, None)
        if not finished:
            self._aborts.append(request_id)
            self._wake.set()
        if not self._busy():
            self._idle.set()

    # ------------------------------------------------------------------ parsing
    def _sampling(self, body: dict[str, Any], prompt_len: int) -> SamplingParams:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = (
                DEFAULT_MAX_TOKENS
                if "messages" not in body
                else self.engine.max_model_len - prompt_len
            )
        temperature = body.get("temperature", 1.0)
        top_p = body.get("top_p", 1.0)
        seed = body.get("seed")
        n = body.get("n", 1)
        checks = [
            (isinstance(max_tokens, int) and max_tokens >= 1, "max_tokens", "an integer ≥ 1"),
            (
                isinstance(temperature, int | float) and 0 <= temperature <= 2,
                "temperature",
                "a number in [0, 2]",
            ),
            (isinstance(top_p, int | float) and 0 < top_p <= 1, "top_p", "a number in (0, 1]"),
            (seed is None or isinstance(seed, int), "seed", "an integer"),
            (n == 1, "n", "1 (the reference engine returns one choice)"),
        ]
        for ok, field, limit in checks:
            if not ok:
                msg = f"'{field}' must be {limit}"
                raise BadRequestError(msg)
        return SamplingParams(
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            top_p=float(top_p),
            seed=seed,
            ignore_eos=bool(body.get("ignore_eos", False)),
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequestError("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequestError("request body must be a JSON object")
        model = body.get("model", self.model_name)
        if model != self.model_name:
            raise LookupError(model)
        return body

    def _prompt_ids(self, prompt: object) -> list[int]:
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return [int(t) for t in prompt]
        raise BadRequestError(
            "'prompt' must be a string, a list of one string or a list of token ids"
        )

    # ------------------------------------------------------------------ handlers
    async def completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/completions`."""
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`."""
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await self._body(request)
            if chat:
                messages = body.get("messages")
                if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                    raise BadRequestError("'messages' must be a list of {role, content} objects")
                text = self.tokenizer.apply_chat_template(
                    [
                        {"role": str(m.get("role")), "content": str(m.get("content", ""))}
                        for m in messages
                    ]
                )
                prompt_ids = self.tokenizer.encode(text)
            else:
                prompt_ids = self._prompt_ids(body.get("prompt"))
            params = self._sampling(body, len(prompt_ids))
            prefix = "chatcmpl" if chat else "cmpl"
            req = Request(f"{prefix}-{uuid.uuid4().hex}", prompt_ids, params)
            self.engine.validate(req)
        except LookupError as err:
            return _error(404, f"The model `{err.args[0]}` does not exist.", "NotFoundError")
        except (BadRequestError, ValueError) as err:
            return _error(400, str(err), "BadRequestError")
        if self.draining:
            return _error(503, "the server is shutting down", "ServiceUnavailableError")
        if self._task is None or self._task.done():
            return _error(503, "the engine is not running", "ServiceUnavailableError")
        queue = self._submit(req)
        stream = bool(body.get("stream", False))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
        finished = False
        try:
            if stream:
                response = await self._stream(request, req, queue, chat, include_usage)
            else:
                response = await self._collect(req, queue, chat)
            finished = True
            return response
        finally:
            self._close(req.request_id, finished)

    def _chunk(
        self, req: Request, chat: bool, text: str | None, reason: str | None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": reason}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        return {
            "id": req.request_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.created,
            "model": self.model_name,
            "choices": [choice],
        }

    async def _stream(
        self,
        request: web.Request,
        req: Request,
        queue: asyncio.Queue[TokenEvent],
        chat: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(data: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(data)}\n\n".encode())

        if chat:
            first = self._chunk(req, chat, "", None)
            first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            await send(first)
        decoder = IncrementalDecoder()
        ev: TokenEvent | None = None
        while ev is None or ev.finish_reason is None:
            ev = await queue.get()
            if ev.token_id == ERROR_TOKEN:
                await send({"error": {"message": "engine failure", "type": "InternalServerError"}})
                break
            text = decoder.feed(ev.token_id)
            if ev.finish_reason is not None:
                text += decoder.flush()
            await send(self._chunk(req, chat, text, ev.finish_reason))
        if include_usage and ev.token_id != ERROR_TOKEN:
            usage = self._chunk(req, chat, None, None)
            usage["choices"] = []
            usage["usage"] = _usage(ev)
            await send(usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _collect(
        self, req: Request, queue: asyncio.Queue[TokenEvent], chat: bool
    ) -> web.Response:
        ids: list[int] = []
        ev: TokenEvent | None = None
        while ev is None or ev.finish_reason is None:
            ev = await queue.get()
            if ev.token_id == ERROR_TOKEN:
                return _error(500, "engine failure", "InternalServerError")
            ids.append(ev.token_id)
        text = self.tokenizer.decode(ids)
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": ev.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return web.json_response(
            {
                "id": req.request_id,
                "object": "chat.completion" if chat else "text_completion",
                "created": self.created,
                "model": self.model_name,
                "choices": [choice],
                "usage": _usage(ev),
            }
        )

    async def models(self, _request: web.Request) -> web.Response:
        """`GET /v1/models`: the one served model."""
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_name,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "dsv4-reference",
                        "root": self.model_name,
                        "max_model_len": self.engine.max_model_len,
                    }
                ],
            }
        )

    async def health(self, _request: web.Request) -> web.Response:
        """`GET /health`: 200 while the engine loop runs, 503 once it has stopped."""
        if self._task is None or self._task.done():
            return web.Response(status=503, text="engine loop not running")
        return web.Response(status=200)

    async def metrics_handler(self, _request: web.Request) -> web.Response:
        """`GET /metrics` in the Prometheus text format."""
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


def _usage(ev: TokenEvent) -> dict[str, int]:
    return {
        "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens,
        "total_tokens": ev.prompt_tokens + ev.completion_tokens,
    }


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}, status=status
    )
