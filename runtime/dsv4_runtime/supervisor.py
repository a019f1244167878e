"""Run the engine, watch it become ready, and drain it on SIGTERM.

Timeline of one pod:

1. The admin server starts (so `/health` answers while the model loads).
2. Every command is checked to exist (127/126 at once, not after a wait). Prelaunch commands run
   (Ray head on a PP leader; on workers, the wait for the leader), then the engine starts in its
   own session (process group) with the runtime's environment less `DSV4_RUNTIME_ADMIN_TOKEN`;
   its output goes to the container log.
3. Readiness: an engine with an API is ready when its `/health` answers 200 and its
   `/v1/models` 200, or 401 when vLLM's `--api-key` guards it (vLLM starts its API server only
   after every DP rank, local and remote, has loaded); an engine without one (headless worker)
   is ready while its process runs. A ready engine is checked every 5 s; three failed checks in
   a row (10 s timeout each) make it not ready again, and `HUNG_ENGINE_SECONDS` of failed
   checks make the runtime kill it and exit 1, so the group is recreated instead of holding
   its GPUs unready. An engine that answers its checks while its running requests make no
   progress (a stuck collective) is killed the same way after `stall_seconds`
   (`DSV4_ENGINE_STALL_SECONDS`; `dsv4_runtime.progress`), judged on its `/metrics`, read every
   `METRICS_POLL_SECONDS`. The reason goes to the log and the termination log.
4. SIGTERM (or SIGINT): `/ready` turns 503 at once; SIGTERM goes to the engine's main process
   only (vLLM's parent coordinates its children, RFC vllm #24885); the engine rejects new
   requests and lets in-flight ones finish for `--drain-timeout-seconds` (vLLM
   `--shutdown-timeout`, PR #36666). On vLLM workers SIGTERM is held back for the route settle
   time (`DSV4_ROUTE_SETTLE_SECONDS`, workers of multi-node groups; cut short once the leader
   drains too) plus the drain timeout (or until
   the engine stops on its own): their DP ranks or pipeline stages still carry the leader's
   in-flight requests while the whole group drains. The runtime waits
   `settle + drain + --engine-stop-grace-seconds` after SIGTERM arrives before it kills the
   engine's process group, so no running request is cut inside the grace period. The pod's
   `terminationGracePeriodSeconds` must cover preStop + settle + drain + grace.
5. The runtime exits 0 after a clean drain, with the engine's status when the engine stops by
   itself (1 if that status was 0: an engine must not stop on its own; 128 + N when signal N
   killed it), and 1 after a kill.
6. A worker of a multi-node group watches its leader's runtime (`/health`, every 5 s; its
   `instance` id) and exits 1 when the leader restarted or has not answered for
   `LEADER_LOST_SECONDS` (`EXIT_LEADER_LOST`); on SIGTERM it first asks the leader to take no
   new requests while it drains (`POST /worker-stopping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from dsv4_runtime.launch import Launch
from dsv4_runtime.progress import ProgressWatchdog
from dsv4_runtime.server import (
    ADMIN_TOKEN_ENV,
    ENGINE_POLL_TIMEOUT_SECONDS,
    WORKER_STOPPING_MAX_SECONDS,
    RuntimeState,
    build_app,
    fetch_engine_metrics,
)

__all__ = [
    "EXIT_ENGINE_KILLED",
    "EXIT_LEADER_LOST",
    "HEALTH_FAILURES",
    "HEALTH_POLL_SECONDS",
    "HEALTH_TIMEOUT_SECONDS",
    "HUNG_ENGINE_SECONDS",
    "LEADER_LOST_SECONDS",
    "LEADER_POLL_SECONDS",
    "METRICS_POLL_SECONDS",
    "READY_POLL_SECONDS",
    "STALL_ENV",
    "STALL_MAX_SECONDS",
    "STALL_MIN_SECONDS",
    "Supervisor",
]

log = logging.getLogger("dsv4_runtime")

READY_POLL_SECONDS = 0.5
"""How often the engine's /health and /v1/models are polled until ready."""
HEALTH_POLL_SECONDS = 5.0
"""After ready: how often the engine's /health and /v1/models are checked."""
HEALTH_TIMEOUT_SECONDS = 10.0
"""Time allowed for one health check of a ready engine (a busy engine answers slowly)."""
HEALTH_FAILURES = 3
"""Consecutive failed checks before a ready engine is reported not ready (no flapping)."""
METRICS_POLL_SECONDS = 5.0
"""How often the engine's /metrics is read to keep the tokens/s gauge current between scrapes."""
EXIT_ENGINE_KILLED = 1
"""Runtime exit status when the engine had to be killed after the grace period, or hung."""
LEADER_POLL_SECONDS = 5.0
"""How often a worker of a multi-node group asks its leader's runtime `/health`."""
LEADER_LOST_SECONDS = 120.0
"""How long a worker waits for a leader runtime that answered once and then stopped answering
before it exits (`EXIT_LEADER_LOST`)."""
EXIT_LEADER_LOST = 1
"""Worker exit status when its leader's runtime restarted or went away: vLLM's headless ranks
cannot rejoin a new leader engine (vLLM issue #32136), and LeaderWorkerSet's
`RecreateGroupAfterStart` skips the group's recreation while any of its pods is `Pending`
(kubernetes-sigs/lws, site/content/en/docs/concepts/failure-handling: "recreated if and only if
there are no pods currently pending"; a pod is Pending until its image is pulled and its
containers started, not until it is Ready), so a leader that restarts while another pod of the
group still pulls its image would otherwise wait for these ranks for good. The container
restarts and its ranks join the new leader."""
LEADER_NOTICE_TIMEOUT_SECONDS = 2.0
"""Time a worker gives the leader to take its stop notice (the drain goes on regardless)."""
ROUTE_SETTLE_ENV = "DSV4_ROUTE_SETTLE_SECONDS"
"""Route settle time of a worker of a multi-node group, s (`Supervisor` `route_settle_seconds`;
the operator sets it on multi-node pods, `render.runtime_args.ROUTE_SETTLE_SECONDS`). A variable,
not a flag: a runtime image that predates it ignores it instead of refusing an unknown flag."""
ROUTE_SETTLE_MAX_SECONDS = 3600
"""Largest accepted route settle time, s."""
SETTLE_POLL_SECONDS = 1.0
"""How often a worker in its route settle time asks whether its leader drains too, s."""
LEADER_NOTICE_MARGIN_SECONDS = 30
"""How much longer than the worker's own stop (drain + grace) the leader stays out of service:
the group's pods are recreated by then (LeaderWorkerSet `RecreateGroupAfterStart`). The notice
is capped at the leader's `WORKER_STOPPING_MAX_SECONDS`, which it refuses to exceed."""
STALL_ENV = "DSV4_ENGINE_STALL_SECONDS"
"""How long (whole s) an engine may have running requests and make no progress before the
runtime kills it and exits 1 (`Supervisor` `stall_seconds`; `dsv4_runtime.progress`). Unset:
`progress.default_stall_seconds` (twice vLLM's step timeout, 600 s); 0: never. A variable, not
a flag, as `ROUTE_SETTLE_ENV`: an operator that predates it sets nothing, and a runtime image
that predates it ignores it; `spec.engine.env` sets it."""
STALL_MIN_SECONDS = 30
"""Smallest accepted stall limit other than 0, s: six `METRICS_POLL_SECONDS` readings, so a
stall is judged on several of them."""
STALL_MAX_SECONDS = 86400
"""Largest accepted stall limit, s (a day)."""
HUNG_ENGINE_SECONDS = 300.0
"""How long a once-ready engine may fail its health checks before the runtime kills it and exits
1. vLLM answers `/health` and `/v1/models` from its API process, apart from the engine core's
steps, so a long prefill does not hold them up; five minutes without an answer is a hang."""


class Supervisor:
    """Owns the engine process and the admin server for one runtime lifetime.

    Args:
        launch: the engine's command lines.
        state: shared state read by the HTTP handlers.
        engine_url: base URL of the engine's API (probed when `launch.serves_api`).
        host: admin server bind address.
        admin_port: admin server port.
        drain_timeout_seconds: in-flight time after SIGTERM.
        stop_grace_seconds: extra time for the engine to exit before SIGKILL.
        engine_term_delay_seconds: how long to wait for the engine to stop on its own before
            passing SIGTERM on (0 on the leader; route settle + drain timeout on vLLM workers,
            whose DP ranks or pipeline stages still serve the leader's in-flight requests).
        leader_admin_url: on a worker of a multi-node group, the leader runtime's admin server:
            on SIGTERM the worker tells it (`POST /worker-stopping`, with the admin token) to
            take no new requests while this worker's ranks finish theirs, since an evicted
            worker (a node drain) stops the group's in-flight requests when its ranks exit.
        stall_seconds: on an engine with an API, s: kill the engine (exit 1) once one of its
            engines has had running requests and no progress for this long (`ProgressWatchdog`,
            read from its `/metrics`); 0 never. `/metrics` readings that fail neither reset nor
            extend a stall: the watchdog decides on successful readings only.
        route_settle_seconds: with `leader_admin_url`, s: the leader is not terminating, so
            the Service keeps routing new requests to it until its readinessProbe fails
            (failureThreshold x period after the notice, plus the endpoint update); the worker
            holds its ranks that long before its drain timeout starts, so requests admitted
            meanwhile still get the whole drain. The stop then takes up to settle + drain +
            grace (the pod's terminationGracePeriodSeconds must cover it).
    """

    def __init__(
        self,
        launch: Launch,
        state: RuntimeState,
        *,
        engine_url: str,
        host: str,
        admin_port: int,
        drain_timeout_seconds: int,
        stop_grace_seconds: int,
        engine_term_delay_seconds: int = 0,
        leader_admin_url: str | None = None,
        route_settle_seconds: int = 0,
        stall_seconds: float = 0,
    ) -> None:
        self._launch = launch
        self._state = state
        self._engine_url = engine_url
        self._host = host
        self._admin_port = admin_port
        self._drain_s = drain_timeout_seconds
        self._grace_s = stop_grace_seconds
        # A worker's leader keeps getting requests until the Service drops it (its readiness
        # probe must fail first): the worker's ranks serve that long, then the drain starts.
        self._settle_s = route_settle_seconds if leader_admin_url is not None else 0
        self._term_delay_s = min(engine_term_delay_seconds, self._settle_s + drain_timeout_seconds)
        self._stop = asyncio.Event()
        self._hung = asyncio.Event()
        self._watchdog = ProgressWatchdog(stall_seconds)
        self._stall_warned = False
        state.metrics.engine_stall_limit_seconds.set(stall_seconds)
        self._process: asyncio.subprocess.Process | None = None
        self._leader_admin_url = leader_admin_url
        self._notice: asyncio.Task[None] | None = None
        self._leader_lost = asyncio.Event()
        self.failure: str | None = None
        """Why the runtime stops before the engine started (a prelaunch step failed), for the
        termination log; None otherwise."""

    def request_drain(self) -> None:
        """Start the drain (signal handler): `/ready` fails from this call on."""
        if not self._state.draining:
            log.info(
                "SIGTERM: readiness off, draining for up to %d s", self._settle_s + self._drain_s
            )
            self._state.start_draining()
            if self._leader_admin_url is not None:
                self._notice = asyncio.get_running_loop().create_task(self._tell_leader())
        self._stop.set()

    async def _watch_leader(self) -> None:
        """On a worker: set `_leader_lost` when the leader's runtime restarts or goes away.

        The leader's `/health` carries its runtime's instance id; a new id is a restarted
        leader, and no answer for `LEADER_LOST_SECONDS` after a first one is a lost leader.
        Before the first answer the worker waits (the leader may start later).
        """
        session = self._state.session
        if session is None or self._leader_admin_url is None:
            return
        seen: str | None = None
        answered = time.monotonic()
        while not self._state.draining:
            health = await self._leader_health(session, self._leader_admin_url)
            instance = (
                None if health is None or "instance" not in health else str(health["instance"])
            )
            now = time.monotonic()
            if instance is not None:
                if seen is not None and instance != seen:
                    log.error(
                        "the leader's runtime restarted (instance %s -> %s): this worker's "
                        "ranks cannot rejoin its new engine; exiting to restart",
                        seen,
                        instance,
                    )
                    self._leader_lost.set()
                    return
                if seen is None:
                    log.info("leader runtime instance %s answers", instance)
                seen, answered = instance, now
            elif seen is not None and now - answered >= LEADER_LOST_SECONDS:
                log.error(
                    "the leader's runtime at %s has not answered for %d s: exiting to restart",
                    self._leader_admin_url,
                    LEADER_LOST_SECONDS,
                )
                self._leader_lost.set()
                return
            # Often until the first answer: ranks join the first leader engine within seconds.
            await asyncio.sleep(LEADER_POLL_SECONDS if seen else READY_POLL_SECONDS)

    @staticmethod
    async def _leader_health(
        session: aiohttp.ClientSession, leader_admin_url: str
    ) -> dict[str, Any] | None:
        """The leader runtime's `/health` answer (`instance`, `draining`), or None.

        None when it does not answer within `LEADER_NOTICE_TIMEOUT_SECONDS`, answers another
        status than 200, or not with a JSON object.
        """
        timeout = aiohttp.ClientTimeout(total=LEADER_NOTICE_TIMEOUT_SECONDS)
        try:
            async with session.get(leader_admin_url + "/health", timeout=timeout) as r:
                body = await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def _tell_leader(self) -> None:
        """Ask the leader to take no new requests while this worker stops (best effort)."""
        session, token = self._state.session, self._state.admin_token
        if session is None or self._leader_admin_url is None:
            return
        if token is None:
            log.warning(
                "%s is not set: the leader cannot be told that this worker stops, and keeps "
                "taking requests that end when these ranks exit",
                ADMIN_TOKEN_ENV,
            )
            return
        # The leader refuses (400) a notice above its cap, and would then keep taking requests.
        seconds = min(
            self._settle_s + self._drain_s + self._grace_s + LEADER_NOTICE_MARGIN_SECONDS,
            int(WORKER_STOPPING_MAX_SECONDS),
        )
        try:
            async with session.post(
                self._leader_admin_url + "/worker-stopping",
                json={"seconds": seconds},
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=LEADER_NOTICE_TIMEOUT_SECONDS),
            ) as response:
                if response.status != 200:
                    log.warning("the leader refused the stop notice: HTTP %d", response.status)
                    return
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not tell the leader that this worker stops: %r", error)
            return
        log.info("told the leader to take no new requests for %d s", seconds)

    async def run(self) -> int:
        """Serve, launch, supervise and drain; returns the runtime's exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_drain)
        runner = web.AppRunner(build_app(self._state), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._admin_port)
        await site.start()
        self._state.session = aiohttp.ClientSession()
        try:
            return await self._supervise()
        finally:
            if self._notice is not None:
                await asyncio.gather(self._notice, return_exceptions=True)
            await self._kill_group()
            await self._state.session.close()
            await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _supervise(self) -> int:
        # Before any prelaunch step (a worker waits for its leader, up to minutes): an image
        # without the engine fails now, with 127/126, not after the wait.
        for command in (*self._launch.prelaunch, self._launch.argv):
            _require_executable(command[0])
        for index, command in enumerate(self._launch.prelaunch):
            purpose = self._launch.prelaunch_purpose(index)
            log.info("prelaunch: %s", purpose)
            status = await self._run_to_end(command)
            if self._stop.is_set():
                return 0
            if status != 0:
                status = status if status > 0 else 128 - status  # killed by signal N: 128 + N
                self.failure = f"prelaunch step failed with status {status}: {purpose}"
                log.error("%s; exiting so that the container restarts", self.failure)
                return status
        started = time.monotonic()
        self._process = await asyncio.create_subprocess_exec(
            *self._launch.argv, start_new_session=True, env=_engine_env()
        )
        log.info("engine started (pid %d): %s", self._process.pid, " ".join(self._launch.argv))
        background = [
            asyncio.create_task(self._watch_ready(started)),
            asyncio.create_task(self._poll_metrics()),
        ]
        if self._leader_admin_url is not None:
            background.append(asyncio.create_task(self._watch_leader()))
        exited = asyncio.create_task(self._process.wait())
        stopping = asyncio.create_task(self._stop.wait())
        hung = asyncio.create_task(self._hung.wait())
        lost = asyncio.create_task(self._leader_lost.wait())
        try:
            await asyncio.wait({exited, stopping, hung, lost}, return_when=asyncio.FIRST_COMPLETED)
            if (hung.done() or lost.done()) and not exited.done() and not stopping.done():
                if hung.done():
                    log.error("%s: killing it", self.failure)
                await self._kill_group()
                self._state.set_engine_ready(False)
                return EXIT_ENGINE_KILLED if hung.done() else EXIT_LEADER_LOST
            if not exited.done():
                return await self._drain(exited)
            status = exited.result()
            self._state.set_engine_ready(False)
            if self._state.draining:
                return 0
            log.error("engine exited on its own with status %d", status)
            # killed by signal N (the OOM killer: 9): 128 + N, as a shell reports it
            return status if status > 0 else 128 - status if status < 0 else 1
        finally:
            for task in (*background, stopping, exited, hung, lost):
                task.cancel()
            await asyncio.gather(*background, stopping, exited, hung, lost, return_exceptions=True)

    async def _settle(self, exited: asyncio.Task[int]) -> bool:
        """Hold the ranks for the route settle time; whether the engine exited meanwhile.

        Ends early, skipping the rest of the settle time, once the leader's runtime reports
        that it drains too (`/health` `draining`) or does not answer `SETTLE_POLL_SECONDS`
        apart twice in a row: the whole group is stopping (a rolling update, a scale-down),
        so no request reaches the leader any more.
        """
        stopping: asyncio.Future[None] = asyncio.ensure_future(self._leader_stops())
        engine: asyncio.Future[int] = asyncio.shield(exited)
        waited: set[asyncio.Future[Any]] = {engine, stopping}
        try:
            done, _ = await asyncio.wait(
                waited, timeout=self._settle_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        if stopping in done:
            log.info("the leader's runtime drains or is gone: skipping the route settle time")
        return exited.done()

    async def _leader_stops(self) -> None:
        """Return once the leader's runtime drains or misses two polls in a row."""
        session = self._state.session
        if session is None or self._leader_admin_url is None:
            await asyncio.Event().wait()  # nothing to ask: the settle time runs out
            return
        missed = 0
        while missed < 2:
            body = await self._leader_health(session, self._leader_admin_url)
            if body is not None and body.get("draining") is True:
                return
            missed = missed + 1 if body is None else 0
            await asyncio.sleep(SETTLE_POLL_SECONDS)

    async def _drain(self, exited: asyncio.Task[int]) -> int:
        assert self._process is not None
        whole = self._settle_s + self._drain_s + self._grace_s
        deadline = time.monotonic() + whole
        try:
            hold = float(self._term_delay_s)
            if hold > 0 and self._settle_s > 0:
                # The route settle time matters only while the leader still serves (this worker
                # evicted alone): when the whole group stops, the leader drains too.
                if await self._settle(exited):
                    log.info("engine exited before it needed SIGTERM")
                    return 0
                hold = max(0.0, hold - self._settle_s)  # the drain part, whether skipped or not
            if hold > 0:
                with contextlib.suppress(TimeoutError):
                    status = await asyncio.wait_for(asyncio.shield(exited), timeout=hold)
                    log.info("engine exited with status %d before it needed SIGTERM", status)
                    return 0
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
            try:
                status = await asyncio.wait_for(
                    asyncio.shield(exited), timeout=max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                log.error(
                    "engine still running %d s after SIGTERM: killing its process group",
                    whole,
                )
                await self._kill_group()
                return EXIT_ENGINE_KILLED
        finally:
            self._state.set_engine_ready(False)
        log.info("engine drained and exited with status %d", status)
        return 0

    async def _kill_group(self) -> None:
        """SIGKILL whatever is left of the engine's process group (children of vLLM too)."""
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()

    async def _run_to_end(self, command: Sequence[str]) -> int:
        process = await asyncio.create_subprocess_exec(
            *command, start_new_session=True, env=_engine_env()
        )
        waiting = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return await waiting

    async def _watch_ready(self, started: float) -> None:
        if not self._launch.serves_api:
            self._state.set_engine_ready(True)
            return
        while not self._state.draining:
            if await self._engine_answers(READY_POLL_SECONDS * 4):
                self._state.set_engine_ready(True)
                self._state.metrics.startup_seconds.set(time.monotonic() - started)
                log.info("engine ready after %.1f s", time.monotonic() - started)
                break
            await asyncio.sleep(READY_POLL_SECONDS)
        failures = 0
        failing_since: float | None = None
        while not self._state.draining:
            await asyncio.sleep(HEALTH_POLL_SECONDS)
            healthy = await self._engine_answers(HEALTH_TIMEOUT_SECONDS)
            failures = 0 if healthy else failures + 1
            now = time.monotonic()
            if healthy:
                failing_since = None
            elif failing_since is None:
                failing_since = now
            if healthy != self._state.engine_ready and (healthy or failures >= HEALTH_FAILURES):
                log.warning("engine %s", "healthy again" if healthy else "unhealthy: not ready")
                self._state.set_engine_ready(healthy)
            if failing_since is not None and now - failing_since >= HUNG_ENGINE_SECONDS:
                self._mark_hung(
                    f"engine has not answered its health checks for {HUNG_ENGINE_SECONDS:g} s"
                )
                return

    def _mark_hung(self, reason: str) -> None:
        """Have `_supervise` kill the engine and exit 1, with `reason` in the termination log."""
        if not self._hung.is_set():
            self.failure = reason
            self._hung.set()

    async def _engine_answers(self, timeout_seconds: float) -> bool:
        session = self._state.session
        if session is None:
            return False
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        try:
            for path, answers in (("/health", {200}), ("/v1/models", {200, 401})):
                # 401: vLLM's --api-key (or VLLM_API_KEY) guards every /v1 path; the API serves.
                async with session.get(self._engine_url + path, timeout=timeout) as response:
                    if response.status not in answers:
                        return False
        except (aiohttp.ClientError, TimeoutError):
            return False
        return True

    async def _poll_metrics(self) -> None:
        if not self._launch.serves_api:
            return
        while True:
            await asyncio.sleep(METRICS_POLL_SECONDS)
            if self._state.engine_ready:
                text = await fetch_engine_metrics(self._state, ENGINE_POLL_TIMEOUT_SECONDS)
                if text is not None:  # a failed reading proves neither progress nor a stall
                    self._check_progress(text)

    def _check_progress(self, exposition: str) -> None:
        """Feed one engine reading to the watchdog; mark the engine hung past the limit."""
        try:
            stall = self._watchdog.observe(time.monotonic(), exposition)
        except ValueError:
            return  # fetch_engine_metrics already counted an unparsable exposition
        self._state.metrics.engine_stalled_seconds.set(0 if stall is None else stall.seconds)
        limit = self._watchdog.limit_seconds
        halfway = limit > 0 and stall is not None and stall.seconds >= limit / 2
        if halfway and not self._stall_warned:
            assert stall is not None
            log.warning(
                "engine {%s} has had %g running request(s) and no progress for %.0f s; it is "
                "killed at %g s (%s)",
                stall.engine,
                stall.running,
                stall.seconds,
                limit,
                STALL_ENV,
            )
        self._stall_warned = halfway
        if self._watchdog.hung(stall):
            assert stall is not None
            self._mark_hung(
                f"engine {{{stall.engine}}} has had {stall.running:g} running request(s) and no "
                f"progress (vllm:prompt_tokens, vllm:generation_tokens, vllm:kv_cache_usage_perc "
                f"unchanged) for {stall.seconds:.0f} s ({STALL_ENV} "
                f"{self._watchdog.limit_seconds:g}): a stuck step or collective"
            )


def _require_executable(program: str) -> None:
    """Raise the OSError `exec` would raise for `program` if it is not found or not executable.

    Raises:
        FileNotFoundError: not on PATH (or no such file): the CLI exits 127.
        PermissionError: found but not executable: the CLI exits 126.
    """
    if shutil.which(program) is not None:
        return
    if os.sep in program:
        candidates = [program]
    else:
        candidates = [
            os.path.join(d, program) for d in os.environ.get("PATH", "").split(os.pathsep)
        ]
    if any(os.path.isfile(candidate) for candidate in candidates):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _engine_env() -> dict[str, str]:
    """The runtime's environment without the drain token: the engine has no use for it."""
    return {key: value for key, value in os.environ.items() if key != ADMIN_TOKEN_ENV}
