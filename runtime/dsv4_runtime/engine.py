"""Engines behind one interface: a `Launch` (command lines) plus where to probe them.

- `vllm` (production): `vllm serve` as leader or headless worker, or Ray for PP
  (`dsv4_runtime.vllm_args`).
- `reference`: our reference engine, which serves `/health`, `/v1/models`, `/v1/completions`,
  `/v1/chat/completions` and `/metrics` (vLLM metric names) and drains on SIGTERM.
  With TP × DP = 1 it is one process on the leader, `python -m dsv4_runtime.reference --host H
  --port P --config C --served-model-name NAME --max-num-seqs N --max-model-len N --seed S
  --device D`; a worker pod of a multi-node group then idles so the group shape stays the same as
  production. With TP × DP > 1 every pod starts its ranks the way vLLM's are laid out (TP × DP_local
  per pod, one per GPU with `--reference-device cuda`) through `python -m
  dsv4_runtime.reference.ranks --nnodes NODES --node-rank WORKER_INDEX --nproc-per-node
  TP×DP_local --master-addr LEADER_IP --master-port DP_RPC_PORT -- -m
  dsv4_runtime.reference.parallel_serve ... --tensor-parallel-size TP --data-parallel-size DP
  [--enable-expert-parallel] --backend nccl|gloo` (torchrun's rank variables; see `ranks` for why
  not torchrun itself). Global rank 0 (the leader pod's first rank) serves the API; the other
  ranks follow its steps (`reference.parallel_follow`). The ranks meet
  at the leader's `--data-parallel-rpc-port`, the port vLLM's DP ranks coordinate on.

Both engines serve the same endpoints on `api_port`, so the runtime's health, readiness, metrics
and drain code is the same for both. The runtime never imports vLLM: versions are read from
package metadata (`preflight`).
"""

from __future__ import annotations

import sys

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role, host_port
from dsv4_runtime.launch import Launch
from dsv4_runtime.vllm_args import ExtraArgsError, vllm_launch

__all__ = [
    "IDLE_WORKER_ARGV",
    "PARALLEL_REFERENCE_MODULE",
    "build_launch",
    "engine_base_url",
    "http_url",
    "reference_launch",
]

IDLE_WORKER_ARGV: tuple[str, ...] = (
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()",
)
"""What a non-leader pod of a reference-engine group runs: waits for SIGTERM, then exits 0."""


PARALLEL_REFERENCE_MODULE = "dsv4_runtime.reference.parallel_serve"
"""Module every rank of a multi-rank reference group runs."""
RANKS_MODULE = "dsv4_runtime.reference.ranks"
"""Starts one pod's ranks with torchrun's variables and keeps rank 0's drain (see its docstring)."""


def _reference_flags(config: RuntimeConfig) -> tuple[str, ...]:
    return (
        "--host", config.host,
        "--port", str(config.api_port),
        "--config", config.reference_config,
        "--served-model-name", config.served_model_name,
        "--max-num-seqs", str(config.max_num_seqs),
        "--max-model-len", str(config.max_model_len),
        "--seed", str(config.seed),
        "--device", config.reference_device,
    )  # fmt: skip


def reference_launch(config: RuntimeConfig, role: Role, leader_ip: str = "127.0.0.1") -> Launch:
    """The reference engine's launch for this pod (see the module docstring).

    Args:
        config: the runtime configuration (layout, ports, reference model).
        role: this pod's LWS role.
        leader_ip: the leader pod's IP, where rank 0 hosts the rendezvous store.

    Returns:
        One process on the leader (TP × DP = 1; an idle placeholder on other pods), or
        `reference.ranks` with this pod's `procs_per_pod` ranks.

    Raises:
        ConfigError: the layout has PP, or EP with both TP and DP > 1.
    """
    config.check_reference_layout()
    if config.reference_world_size == 1:
        if not role.is_leader:
            return Launch(prelaunch=(), argv=IDLE_WORKER_ARGV, serves_api=False)
        checkpoint = ("--checkpoint", config.weights) if config.weights is not None else ()
        argv = (
            sys.executable,
            "-m",
            config.reference_module,
            *_reference_flags(config),
            *checkpoint,
        )
        return Launch(prelaunch=(), argv=argv, serves_api=True)
    argv = (
        sys.executable, "-m", RANKS_MODULE,
        "--nnodes", str(config.nodes),
        "--node-rank", str(role.worker_index),
        "--nproc-per-node", str(config.procs_per_pod),
        "--master-addr", leader_ip,
        "--master-port", str(config.data_parallel_rpc_port),
        "--kill-grace-s", str(config.engine_stop_grace_seconds),
        "--", "-m", PARALLEL_REFERENCE_MODULE,
        *_reference_flags(config),
        "--tensor-parallel-size", str(config.tensor_parallel_size),
        "--data-parallel-size", str(config.data_parallel_size),
        *(("--enable-expert-parallel",) if config.expert_parallel else ()),
        "--backend", "nccl" if config.reference_device == "cuda" else "gloo",
    )  # fmt: skip
    return Launch(prelaunch=(), argv=argv, serves_api=role.is_leader)


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
    return reference_launch(config, role, leader_ip)


def http_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 address in brackets."""
    return f"http://{host_port(host, port)}"


def engine_base_url(config: RuntimeConfig) -> str:
    """The URL the runtime probes the engine at (loopback; the engine binds `config.host`).

    The IPv4 wildcard is probed on 127.0.0.1, the IPv6 one (`distributed.bind_host`) on ::1,
    which a server bound to `::` answers whether or not it also takes IPv4.
    """
    host = config.host
    if host in {"0.0.0.0", ""}:  # noqa: S104  (a wildcard bind is probed on loopback)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return http_url(host, config.api_port)
