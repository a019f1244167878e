"""TEST-ONLY: an HTTP proxy in front of the real kube-apiserver that injects faults.

The operator under test talks plain HTTP to the proxy on 127.0.0.1; the proxy forwards every
request (watch streams included, chunk by chunk) to the apiserver over TLS with the admin token,
except requests matching a `Fault` rule, which get the rule's status (409, 429, 500...) or a delay
first. Every request and what happened to it is recorded in `log`, so tests assert that a fault
was injected and that the operator retried it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

_SESSION = web.AppKey("session", aiohttp.ClientSession)
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)


@dataclass
class Fault:
    """Answer the first `times` requests matching `method` and `path` (a regex) with `status`.

    With `status` 0 the request is forwarded after `delay` seconds instead of failing. With
    `agent` (a regex) only requests whose User-Agent matches it: e.g. `^(?!kopf/)` for the
    operator's own client, not kopf's requests (kopf sends `kopf/<version>`).
    """

    method: str
    path: str
    status: int
    times: int = 1
    delay: float = 0.0
    retry_after: int | None = None
    hits: int = 0
    agent: str | None = None

    def matches(self, method: str, path: str, agent: str = "") -> bool:
        return (
            self.hits < self.times
            and method == self.method
            and re.search(self.path, path) is not None
            and (self.agent is None or re.search(self.agent, agent) is not None)
        )


@dataclass
class Record:
    """One request through the proxy: method, path, the status returned, and the query string."""

    method: str
    path: str
    status: int
    injected: bool
    query: str = ""


@dataclass
class FaultingProxy:
    """The proxy; `start()` it, point a kubeconfig at `url`, `stop()` it."""

    upstream: str
    ca_file: str
    token: str
    faults: list[Fault] = field(default_factory=list)
    log: list[Record] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def records(self, method: str, path_regex: str) -> list[Record]:
        with self._lock:
            return [r for r in self.log if r.method == method and re.search(path_regex, r.path)]

    def _match(self, method: str, path: str, agent: str = "") -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, agent):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int, injected: bool, query: str = "") -> None:
        with self._lock:
            self.log.append(Record(method, path, status, injected, query))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._match(request.method, request.path, request.headers.get("User-Agent", ""))
        if fault is not None and fault.status:
            self._record(request.method, request.path, fault.status, True)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"injected by the test proxy: HTTP {fault.status}",
                "code": fault.status,
            }
            return web.json_response(body, status=fault.status, headers=headers)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
            if request.transport is None or request.transport.is_closing():
                # The client died while its request was held: it never reaches the server.
                self._record(request.method, request.path, 0, True)
                return web.Response(status=499)
        session: aiohttp.ClientSession = request.app[_SESSION]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Authorization"] = f"Bearer {self.token}"
        data = await request.read()
        async with session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=data or None,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            self._record(request.method, request.path, upstream.status, False, request.query_string)
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_HEADERS:
                    response.headers[key] = value
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                return response
            await response.write_eof()
            return response

    async def _start(self, ready: threading.Event) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        app = web.Application()
        app[_SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        ready.set()

    def start(self) -> FaultingProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def main() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start(ready))
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="faulting-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("faulting proxy did not start")
        return self

    async def _stop(self) -> None:
        if self._runner is not None:
            session: aiohttp.ClientSession = self._runner.app[_SESSION]
            await session.close()  # ends the forwarded watch streams first
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
