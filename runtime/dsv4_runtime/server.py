"""The runtime's admin HTTP server: `/health`, `/ready`, `/metrics` (aiohttp).

- `/health` (liveness): 200 while the runtime process runs, also while the model loads and while
  draining, so a liveness probe never kills a loading or draining engine (lesson 6).
- `/ready` (readiness): 200 only when the engine is ready and no SIGTERM has arrived; 503 with a
  JSON reason otherwise. It turns 503 the moment SIGTERM is handled, so the pod leaves the
  Service's endpoints while in-flight requests finish.
- `/metrics`: `dsv4_runtime_*` followed by the engine's own `/metrics` (read on each scrape, on
  the leader; workers without an API serve only ours).
- `POST /drain`, `POST /undrain`: the autoscaler takes a group out of (and back into) service
  before a scale-down: `/ready` answers 503 while drained, so the Service stops sending new
  requests, and the running ones finish; the engine keeps running. Both need
  `Authorization: Bearer <token>` with the token in `DSV4_RUNTIME_ADMIN_TOKEN` (the operator
  keeps one per DeepSeekV4Deployment in a Secret that the pod template reads): 401 with a wrong
  or no token, 403 when the pod has none. Without it, any client that reaches a pod IP could
  take every group out of service.

Inference traffic does not pass through here: the Service targets the engine's API port
directly, so the runtime adds no hop and no per-token work to the serving path.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from dsv4_runtime.metrics import CONTENT_TYPE, RuntimeMetrics, merge_exposition

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ENGINE_METRICS_MAX_AGE_SECONDS",
    "ENGINE_POLL_TIMEOUT_SECONDS",
    "ENGINE_SCRAPE_TIMEOUT_SECONDS",
    "WORKER_STOPPING_MAX_SECONDS",
    "RuntimeState",
    "build_app",
    "fetch_engine_metrics",
]

ADMIN_TOKEN_ENV = "DSV4_RUNTIME_ADMIN_TOKEN"  # noqa: S105  (a variable name)
"""Environment variable holding the bearer token `/drain` and `/undrain` require (the operator's
`render.admin.ADMIN_TOKEN_ENV`; tests/runtime/test_operator_contract.py keeps them equal)."""

ENGINE_SCRAPE_TIMEOUT_SECONDS = 1.5
"""Time allowed for the engine's /metrics; a slower engine is reported as a scrape error.
Below the operator's 2 s per request (`handlers.autoscaler`), so a slow engine still gets
its scrape answered from the last exposition read (`ENGINE_METRICS_MAX_AGE_SECONDS`)."""
ENGINE_POLL_TIMEOUT_SECONDS = 5.0
"""Time the background poll (every 5 s) gives the engine's /metrics: longer than a scrape's, so
an engine that is always a little slow still refreshes the exposition scrapes fall back on."""
ENGINE_METRICS_MAX_AGE_SECONDS = 15.0
"""How old the last engine exposition (read every 5 s in the background) may be to stand in
for one that did not arrive in time; older, the scrape carries the runtime's metrics only."""


@dataclass
class RuntimeState:
    """Mutable state shared by the supervisor and the HTTP handlers (one event loop).

    Attributes:
        metrics: the runtime's metrics.
        engine_metrics_url: the engine's `/metrics` URL, or None when the engine has no API.
        engine_ready: the engine has loaded (leader: `/health` and `/v1/models` answer 200).
        draining: SIGTERM has arrived.
        held: the autoscaler drained this group (`POST /drain`) ahead of a scale-down.
        worker_stopping_until: on a leader, until when (monotonic s) a worker of the group said
            it is stopping (`POST /worker-stopping`): its ranks leave when its drain ends, so
            the group takes no new requests meanwhile. It expires, so a worker container that
            restarts in place does not keep the group out of service.
        admin_token: the bearer token `/drain` and `/undrain` require; None refuses them (403).
        session: HTTP client for engine scrapes (set while the server runs).
        engine_text: the last engine exposition read, and `engine_text_at` when (monotonic s).
        instance: random id of this runtime process, in `/health`: a worker notices that its
            leader's runtime restarted when the id changes.
    """

    metrics: RuntimeMetrics
    engine_metrics_url: str | None
    engine_ready: bool = False
    draining: bool = False
    held: bool = False
    worker_stopping_until: float = 0.0
    admin_token: str | None = None
    session: aiohttp.ClientSession | None = None
    engine_text: str | None = None
    engine_text_at: float = 0.0
    instance: str = field(default_factory=lambda: secrets.token_hex(8))

    def set_engine_ready(self, ready: bool) -> None:
        """Record engine readiness (and its gauge)."""
        self.engine_ready = ready
        self.metrics.engine_ready.set(1 if ready else 0)
        if not ready:  # the tokens/s of an engine that does not answer is unknown, not frozen
            self.metrics.engine_stopped()

    def start_draining(self) -> None:
        """Mark the drain: `/ready` answers 503 from now on."""
        self.draining = True
        self.metrics.draining.set(1)

    @property
    def worker_stopping(self) -> bool:
        """A worker of this group said it is stopping, less than its stop time ago."""
        return time.monotonic() < self.worker_stopping_until

    @property
    def ready(self) -> bool:
        """Ready for traffic: engine ready, no drain started, not held out, no worker stopping."""
        return (
            self.engine_ready and not self.draining and not self.held and not self.worker_stopping
        )


_STATE_KEY = web.AppKey("state", RuntimeState)


async def fetch_engine_metrics(
    state: RuntimeState, timeout_seconds: float | None = None
) -> str | None:
    """Read the engine's exposition and feed the tokens/s meter; None on any failure.

    Args:
        state: the shared state (engine URL, session; the result is kept as `engine_text`).
        timeout_seconds: time allowed, s; `ENGINE_SCRAPE_TIMEOUT_SECONDS` when None.
    """
    if state.engine_metrics_url is None or state.session is None:
        return None
    limit = ENGINE_SCRAPE_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds
    try:
        async with state.session.get(
            state.engine_metrics_url,
            headers={"Accept": "text/plain"},
            timeout=aiohttp.ClientTimeout(total=limit),
        ) as response:
            if response.status != 200:
                state.metrics.engine_scrape_errors.inc()
                return None
            text = await response.text()
        now = time.monotonic()
        state.metrics.observe_engine(now, text)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        state.metrics.engine_scrape_errors.inc()
        return None
    state.engine_text, state.engine_text_at = text, now
    return text


async def _health(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    body = {"status": "alive", "draining": state.draining, "instance": state.instance}
    return web.json_response(body)


async def _ready(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    if state.ready:
        return web.json_response({"ready": True, "held": False})
    reasons = []
    if state.draining:
        reasons.append("draining")
    elif not state.engine_ready:
        reasons.append("engine not ready")
    elif state.worker_stopping:
        reasons.append("a worker of this group is stopping")
    if state.held:
        # HELD_REASON in the operator's autoscaler, whatever else holds the group back: a
        # drained group with a sick engine is still one to undrain.
        reasons.append("drained by the autoscaler")
    body = {"ready": False, "reason": "; ".join(reasons), "held": state.held}
    return web.json_response(body, status=503)


def _refusal(request: web.Request, state: RuntimeState) -> web.Response | None:
    """401/403 unless the request carries the admin bearer token (compared in constant time)."""
    if not state.admin_token:
        reason = f"drain is disabled: this pod has no {ADMIN_TOKEN_ENV}"
        return web.json_response({"error": reason}, status=403)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    # aiohttp keeps undecodable header bytes as surrogates: encode them back, never raise.
    given = token.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, state.admin_token.encode()):
        return web.json_response(
            {"error": "a valid admin bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


async def _drain(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    if (refused := _refusal(request, state)) is not None:
        return refused
    state.held = True
    return web.json_response({"held": True})


WORKER_STOPPING_MAX_SECONDS = 7200.0
"""Longest stop a worker may announce (its drain, at most 3600 s, plus grace), s."""


async def _worker_stopping(request: web.Request) -> web.Response:
    """Record that a worker of this group is stopping.

    No new requests for `seconds` (JSON body), at most `WORKER_STOPPING_MAX_SECONDS`.
    """
    state = request.app[_STATE_KEY]
    if (refused := _refusal(request, state)) is not None:
        return refused
    try:
        seconds = float((await request.json())["seconds"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": 'a JSON body {"seconds": N} is required'}, status=400)
    if not 0 < seconds <= WORKER_STOPPING_MAX_SECONDS:
        reason = f"seconds must be in (0, {WORKER_STOPPING_MAX_SECONDS:g}], got {seconds}"
        return web.json_response({"error": reason}, status=400)
    state.worker_stopping_until = max(state.worker_stopping_until, time.monotonic() + seconds)
    return web.json_response({"worker_stopping": True})


async def _undrain(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    if (refused := _refusal(request, state)) is not None:
        return refused
    state.held = False
    return web.json_response({"held": False})


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[_STATE_KEY]
    engine_text = await fetch_engine_metrics(state) if state.engine_ready else None
    recent = time.monotonic() - state.engine_text_at <= ENGINE_METRICS_MAX_AGE_SECONDS
    if engine_text is None and state.engine_ready and recent:
        engine_text = state.engine_text  # the engine was slow: its last exposition stands in
    body = merge_exposition(state.metrics.render(), engine_text)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def build_app(state: RuntimeState) -> web.Application:
    """The aiohttp application serving `/health`, `/ready` and `/metrics` from `state`."""
    app = web.Application()
    app[_STATE_KEY] = state
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/drain", _drain)
    app.router.add_post("/undrain", _undrain)
    app.router.add_post("/worker-stopping", _worker_stopping)
    return app
