"""`dsv4-runtime`: the worker pod's entry point.

`dsv4-runtime <RuntimeConfig.to_args()>` parses the operator's arguments, reads the LWS role,
runs the preflight checks, resolves the leader's IP, builds the engine's command lines and
supervises the engine until it drains. Exit statuses: 0 after a clean drain (or a SIGTERM
before the engine started); 2 for bad arguments,
LWS environment or extra engine arguments; 3 for a failed preflight check; 127 when the engine
or a prelaunch command is not found, 126 when it is not executable; 1 when the runtime cannot
serve (e.g. its port is taken) or when a worker's leader name does not resolve in time (the
leader pod is still Pending); otherwise the engine's own status (see `supervisor`).
Failures before launch are also written to the Kubernetes termination log, so `kubectl describe
pod` and the operator see the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dsv4_runtime.config import ConfigError, RuntimeConfig
from dsv4_runtime.distributed import (
    LeaderUnresolvedError,
    Resolver,
    RoleError,
    bind_host,
    resolve_leader_ip,
    role_from_env,
    system_resolver,
)
from dsv4_runtime.engine import build_launch, engine_base_url, http_url
from dsv4_runtime.metrics import RuntimeMetrics
from dsv4_runtime.preflight import PreflightError, Probes, run_preflight
from dsv4_runtime.progress import default_stall_seconds
from dsv4_runtime.server import ADMIN_TOKEN_ENV, RuntimeState
from dsv4_runtime.supervisor import (
    ROUTE_SETTLE_ENV,
    ROUTE_SETTLE_MAX_SECONDS,
    STALL_ENV,
    STALL_MAX_SECONDS,
    STALL_MIN_SECONDS,
    Supervisor,
)
from dsv4_runtime.vllm_args import ExtraArgsError

__all__ = [
    "EXIT_LAUNCH",
    "EXIT_LEADER_UNRESOLVED",
    "EXIT_NOT_EXECUTABLE",
    "EXIT_PREFLIGHT",
    "EXIT_USAGE",
    "main",
    "route_settle_seconds",
    "run",
    "stall_seconds",
]

EXIT_USAGE = 2
"""Bad arguments, LWS environment or extra engine arguments."""
EXIT_PREFLIGHT = 3
"""A preflight check failed (shm, GPUs, versions)."""
EXIT_LEADER_UNRESOLVED = 1
"""A worker's leader name did not resolve within `RESOLVE_TIMEOUT_SECONDS` (the leader pod is
still Pending, e.g. on a GPU node being provisioned): a wait that ran out, like the leader
runtime's wait (`vllm_args.LEADER_WAIT_TIMEOUT_SECONDS`, also 1), not bad arguments (2)."""
EXIT_LAUNCH = 127
"""The engine or a prelaunch command could not be started (a shell's "command not found")."""
EXIT_NOT_EXECUTABLE = 126
"""The engine or a prelaunch command exists but may not be executed (a shell's 126)."""

log = logging.getLogger("dsv4_runtime")


def _fail(message: str, status: int, termination_log: Path | None) -> int:
    print(f"dsv4-runtime: error: {message}", file=sys.stderr, flush=True)
    if termination_log is not None and termination_log.parent.is_dir():
        with contextlib.suppress(OSError):
            termination_log.write_text(message + "\n", encoding="utf-8")
    return status


def route_settle_seconds(env: Mapping[str, str]) -> int:
    """`DSV4_ROUTE_SETTLE_SECONDS` (`supervisor.ROUTE_SETTLE_ENV`): 0 when unset or empty.

    Raises:
        ConfigError: not a whole number from 0 to `ROUTE_SETTLE_MAX_SECONDS`, naming it.
    """
    raw = env.get(ROUTE_SETTLE_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= ROUTE_SETTLE_MAX_SECONDS:
        raise ConfigError(
            f"{ROUTE_SETTLE_ENV}={raw!r} must be a whole number of seconds from 0 to "
            f"{ROUTE_SETTLE_MAX_SECONDS}"
        )
    return value


def stall_seconds(env: Mapping[str, str]) -> int:
    """`DSV4_ENGINE_STALL_SECONDS` (`supervisor.STALL_ENV`), s; 0 turns the watchdog off.

    Unset or empty: `progress.default_stall_seconds(env)` (twice vLLM's
    `VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS`, 600 s by default).

    Raises:
        ConfigError: not 0 or a whole number from `STALL_MIN_SECONDS` to `STALL_MAX_SECONDS`,
            naming the variable.
    """
    raw = env.get(STALL_ENV, "").strip()
    if not raw:
        return default_stall_seconds(env)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value != 0 and not STALL_MIN_SECONDS <= value <= STALL_MAX_SECONDS:
        raise ConfigError(
            f"{STALL_ENV}={raw!r} must be 0 (no stall watchdog) or a whole number of seconds "
            f"from {STALL_MIN_SECONDS} to {STALL_MAX_SECONDS}"
        )
    return value


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    probes: Probes | None = None,
    resolver: Resolver = system_resolver,
) -> int:
    """Run the runtime to completion.

    Args:
        argv: arguments without the program name.
        env: environment (LWS variables; `DSV4_RUNTIME_ADMIN_TOKEN`, the drain token).
        probes: machine probes for preflight (tests replace them).
        resolver: DNS resolver for the leader address (tests replace it).

    Returns:
        The process exit status (see the module docstring).
    """
    try:
        config = RuntimeConfig.from_args(list(argv))
    except ConfigError as error:
        return _fail(str(error), EXIT_USAGE, None)
    config = dataclasses.replace(config, host=bind_host(config.host, env))
    try:
        role = role_from_env(env, config)
        settle = route_settle_seconds(env)
        stall = stall_seconds(env)
    except (RoleError, ConfigError) as error:
        return _fail(str(error), EXIT_USAGE, config.termination_log)
    try:
        report = run_preflight(config, probes)
    except PreflightError as error:
        return _fail(f"preflight {error.check}: {error}", EXIT_PREFLIGHT, config.termination_log)
    try:
        leader_ip = (
            resolve_leader_ip(role.leader_address, resolver) if config.nodes > 1 else "127.0.0.1"
        )
        launch = build_launch(config, role, leader_ip)
    except LeaderUnresolvedError as error:
        return _fail(str(error), EXIT_LEADER_UNRESOLVED, config.termination_log)
    except (RoleError, ExtraArgsError, ConfigError) as error:
        return _fail(str(error), EXIT_USAGE, config.termination_log)
    for warning in report.warnings:
        log.warning("%s", warning)
    metrics = RuntimeMetrics()
    metrics.info.info(
        {
            "engine": config.engine,
            "role": "leader" if role.is_leader else "worker",
            "worker_index": str(role.worker_index),
            "served_model_name": config.served_model_name,
            "tensor_parallel_size": str(config.tensor_parallel_size),
            "pipeline_parallel_size": str(config.pipeline_parallel_size),
            "data_parallel_size": str(config.data_parallel_size),
            "data_parallel_size_local": str(config.data_parallel_size_local),
        }
    )
    metrics.shm_stale_entries_removed.set(report.stale_entries_removed)
    metrics.shm_stale_bytes_removed.set(report.stale_bytes_removed)
    log.info(
        "role %s %d/%d, removed %d stale shm entries (%d bytes)",
        "leader" if role.is_leader else "worker",
        role.worker_index,
        role.group_size,
        report.stale_entries_removed,
        report.stale_bytes_removed,
    )
    base_url = engine_base_url(config)
    state = RuntimeState(
        metrics=metrics,
        engine_metrics_url=base_url + "/metrics" if launch.serves_api else None,
        admin_token=env.get(ADMIN_TOKEN_ENV) or None,
    )
    if state.admin_token is None:
        log.warning("%s is not set: POST /drain and /undrain are refused (403)", ADMIN_TOKEN_ENV)
    supervisor = Supervisor(
        launch,
        state,
        engine_url=base_url,
        host=config.host,
        admin_port=config.admin_port,
        drain_timeout_seconds=config.drain_timeout_seconds,
        stop_grace_seconds=config.engine_stop_grace_seconds,
        engine_term_delay_seconds=(
            config.drain_timeout_seconds + settle
            if not role.is_leader and (config.engine == "vllm" or config.reference_world_size > 1)
            else 0
        ),
        leader_admin_url=(
            http_url(leader_ip, config.admin_port)
            if not role.is_leader and config.nodes > 1
            else None
        ),
        route_settle_seconds=settle,
        stall_seconds=stall,
    )
    return _supervise(supervisor, config.termination_log)


def _supervise(supervisor: Supervisor, termination_log: Path) -> int:
    """`supervisor.run()`'s status; an OSError (exec or bind failure) becomes a one-line error.

    A prelaunch step that failed (`Supervisor.failure`) is written to the termination log.
    """
    try:
        status = asyncio.run(supervisor.run())
        if status != 0 and supervisor.failure is not None:
            return _fail(supervisor.failure, status, termination_log)
        return status
    except OSError as error:
        if error.filename is None:  # e.g. the admin port is taken
            return _fail(f"runtime: {error}", 1, termination_log)
        # exec failed: e.g. a custom image without vllm (or ray) on PATH; 126 when the file
        # exists but cannot be executed, as shells report it
        status = EXIT_NOT_EXECUTABLE if isinstance(error, PermissionError) else EXIT_LAUNCH
        return _fail(
            f"cannot start {error.filename}: {error.strerror or error}", status, termination_log
        )


class _TerminatedBeforeStart(SystemExit):
    """SIGTERM arrived before the supervisor took the signals over (preflight, the DNS wait).

    A `SystemExit`, so that asyncio passes it on even when it lands in a callback while the
    event loop starts (it swallows other exceptions there and would lose the SIGTERM).
    """


def _terminated_before_start(_signum: int, _frame: object) -> None:
    raise _TerminatedBeforeStart(0)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script `dsv4-runtime`: exits with `run`'s status.

    A SIGTERM before the supervisor installs its own handlers (during preflight or while the
    leader's name does not resolve yet, up to `RESOLVE_TIMEOUT_SECONDS`) ends the runtime with
    0 and a log line: nothing runs yet, so there is nothing to drain. The supervisor's handlers
    replace this one, and restore the default when it returns.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s dsv4-runtime %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGTERM, _terminated_before_start)
    try:
        status = run(sys.argv[1:] if argv is None else argv, os.environ)
    except _TerminatedBeforeStart:
        log.info("SIGTERM before the engine started: nothing to drain, exiting 0")
        status = 0
    sys.exit(status)
