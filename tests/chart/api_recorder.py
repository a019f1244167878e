"""TEST-ONLY: a recording reverse proxy in front of the test kube-apiserver.

The operator under test is given a kubeconfig whose server is this proxy (plain HTTP on
127.0.0.1) and whose token is the chart ServiceAccount's; every request is forwarded unchanged
(TLS to the real API server, with the same bearer token, so RBAC applies) and streamed back
(watches included). Each request is recorded with the RBAC verb and resource the API server
authorizes it as (the rules of Kubernetes' `RequestInfoFactory`), and the response status.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)


@dataclass(frozen=True)
class Recorded:
    """One request: method, path, query string, RBAC view, and the response status.

    Attributes:
        group: API group ("" for core), or None for a non-resource URL (discovery, /version).
        resource: `plural` or `plural/subresource`.
        verb: get, list, watch, create, update, patch, delete, deletecollection.
        namespace: the request's namespace ("" when cluster-scoped).
    """

    method: str
    path: str
    query: str
    status: int
    group: str | None
    resource: str
    verb: str
    namespace: str


def request_info(method: str, path: str, query: str) -> tuple[str | None, str, str, str]:
    """(group, resource, verb, namespace) of a request as RBAC sees it; group None: non-resource.

    /api/v1/... is the core group; /apis/GROUP/VERSION/... a named group. After the version:
    `namespaces/NS/` (when more follows), then `plural[/name[/subresource]]`. GET on a
    collection is `list`, or `watch` with `watch=true|1`.
    """
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None, "", method.lower(), ""
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else "", "/".join(rest[2:3])
    resource = f"{plural}/{sub}" if sub else plural
    watch = parse_qs(query).get("watch", [""])[0] in {"true", "1"}
    verb = {
        "GET": "get" if name else ("watch" if watch else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method.upper(), method.lower())
    return group, resource, verb, namespace


class ApiRecorder:
    """Run the proxy in a thread: `start()` returns its URL, `stop()` ends it.

    Args:
        upstream: the API server's URL (https://127.0.0.1:PORT).
        ca_file: the API server's CA certificate.
    """

    def __init__(self, upstream: str, ca_file: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = ca_file
        self.records: list[Recorded] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._error: BaseException | None = None
        self.url = ""

    def snapshot(self) -> list[Recorded]:
        """The requests recorded so far."""
        with self._lock:
            return list(self.records)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        session = self._session
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        url = f"{self.upstream}{request.path_qs}"
        async with session.request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            group, resource, verb, namespace = request_info(
                request.method, request.path, request.query_string
            )
            record = Recorded(
                request.method,
                request.path,
                request.query_string,
                upstream.status,
                group,
                resource,
                verb,
                namespace,
            )
            with self._lock:
                self.records.append(record)
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_HEADERS:
                    response.headers[key] = value
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError, asyncio.CancelledError):
                return response
            await response.write_eof()
            return response

    async def _serve(self, started: threading.Event) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        app = web.Application()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server: Any = site._server
            port = server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
            self._stopped = asyncio.Event()
            started.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()
            await self._session.close()

    def start(self) -> str:
        """Start serving; returns the proxy's URL."""
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            try:
                self._loop.run_until_complete(self._serve(started))
            except BaseException as error:  # reported by start()
                self._error = error
                started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="api-recorder", daemon=True)
        self._thread.start()
        if not started.wait(10) or self._error is not None:
            raise RuntimeError(f"the recording proxy did not start: {self._error!r}")
        return self.url

    def stop(self) -> None:
        """Stop serving (open watches are cut) and wait for the thread."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)
