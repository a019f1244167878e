"""Engines behind one interface: a `Launch` (command lines) plus where to probe them.

- `vllm` (production): `vllm serve` as leader or headless worker, or Ray for PP
  (`dsv4_runtime.vllm_args`).
- `reference`: our CPU reference engine, `python -m dsv4_runtime.reference --host H --port P
  --config C --served-model-name NAME --max-num-seqs N --max-model-len N --seed S`, which serves
  `/health`, `/v1/models`, `/v1/completions`, `/v1/chat/completions` and `/metrics` (vLLM metric
  names) and drains on SIGTERM. It is single-process, so it runs on the leader only; a worker pod
  of a multi-node reference group idles (`sleep infinity`-like) so the group shape stays the same
  as production.

Both engines serve the same endpoints on `api_port`, so the runtime's health, readiness, metrics
and drain code is the same for both. The runtime never imports vLLM: versions are read from
package metadata (`preflight`).
"""

from __future__ import annotations

import sys

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role
from dsv4_runtime.launch import Launch
from dsv4_runtime.vllm_args import ExtraArgsError, vllm_launch

__all__ = ["IDLE_WORKER_ARGV", "build_launch", "engine_base_url", "reference_launch"]

IDLE_WORKER_ARGV: tuple[str, ...] = (
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()",
)
"""What a non-leader pod of a reference-engine group runs: waits for SIGTERM, then exits 0."""


def reference_launch(config: RuntimeConfig, role: Role) -> Launch:
    """The reference engine's launch (leader) or an idle placeholder (other pods)."""
    if not role.is_leader:
        return Launch(prelaunch=(), argv=IDLE_WORKER_ARGV, serves_api=False)
    argv = (
        sys.executable, "-m", config.reference_module,
        "--host", config.host,
        "--port", str(config.api_port),
        "--config", config.reference_config,
        "--served-model-name", config.served_model_name,
        "--max-num-seqs", str(config.max_num_seqs),
        "--max-model-len", str(config.max_model_len),
        "--seed", str(config.seed),
    )  # fmt: skip
    return Launch(prelaunch=(), argv=argv, serves_api=True)


def build_launch(config: RuntimeConfig, role: Role, leader_ip: str) -> Launch:
    """The processes this pod runs for `config.engine`.

    Raises:
        ExtraArgsError: the vLLM extra arguments contradict the plan, or extra arguments were
            given to the reference engine.
    """
    if config.engine == "vllm":
        return vllm_launch(config, role, leader_ip)
    if config.extra_engine_args:
        raise ExtraArgsError(
            "extra engine arguments are for --engine vllm; the reference engine takes none, got "
            + " ".join(config.extra_engine_args)
        )
    return reference_launch(config, role)


def engine_base_url(config: RuntimeConfig) -> str:
    """The URL the runtime probes the engine at (loopback; the engine binds `config.host`)."""
    host = config.host
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104  (a wildcard bind is probed on loopback)
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.api_port}"
