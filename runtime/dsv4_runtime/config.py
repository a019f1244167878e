"""The runtime's arguments: what the operator renders into the worker pod, parsed back here.

`RuntimeConfig` is the whole contract between the operator's renderer
(`dsv4_operator.render.runtime_args`) and the runtime: `to_args()` gives the exact argument list
(`dsv4-runtime <args>`), `from_args()` parses it back, and `from_args(c.to_args()) == c` for every
valid `c`. The runtime never re-plans: every size below comes from the operator's plan; the
runtime only checks that the numbers agree with each other and with the machine (`preflight`).

Argument list, in the order `to_args()` emits it (every field, always, so a pod spec shows the
whole launch; `--weights` only when set; extra engine arguments after a lone `--`)::

    --engine {vllm,reference}          --model REPO_ID          --served-model-name NAME
    [--weights DIR]                    --nodes N                --tensor-parallel-size N
    --pipeline-parallel-size N         --data-parallel-size N   --data-parallel-size-local N
    --expert-parallel | --no-expert-parallel                    --kv-cache-dtype DTYPE
    --block-size TOKENS                --max-model-len TOKENS   --max-num-seqs N
    --max-num-batched-tokens TOKENS    --gpu-memory-utilization FRACTION
    --num-speculative-tokens N         --drain-timeout-seconds S
    --engine-stop-grace-seconds S      --expected-shm-bytes BYTES
    --expected-gpus N                  --expected-gpu-memory-bytes BYTES
    --host ADDR   --api-port PORT   --admin-port PORT   --data-parallel-rpc-port PORT
    --ray-port PORT   --seed N   --reference-config NAME   --reference-module MODULE
    --reference-device {cpu,cuda}   --shm-path DIR   --termination-log FILE
    [-- EXTRA ENGINE ARGS...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, get_args

from typing_extensions import override

__all__ = [
    "DEEPSEEK_V4_BLOCK_SIZE",
    "ConfigError",
    "EngineName",
    "ReferenceDevice",
    "RuntimeConfig",
    "parser_help",
]

ReferenceDevice = Literal["cpu", "cuda"]
"""Where the reference engine's ranks run: CPU (gloo) or one GPU each (NCCL)."""

EngineName = Literal["vllm", "reference"]
"""Engines behind the runtime: `vllm` (production) and `reference` (ours, CPU, for CI/demos)."""

DEEPSEEK_V4_BLOCK_SIZE = 256
"""KV-cache block size vLLM requires for DeepSeek-V4 (`--block-size 256`; deepseek-v4-facts §5.1,
vLLM `v1/attention/backends/mla/sparse_swa.py`, recipes [R1][R2])."""

_MAX_PORT = 65535


class ConfigError(ValueError):
    """A runtime argument is missing, malformed or inconsistent with another one.

    The message names the argument (as written on the command line) and the limit it broke.
    """


class _RaisingParser(argparse.ArgumentParser):
    """An `ArgumentParser` that raises `ConfigError` instead of printing usage and exiting."""

    @override
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Everything one worker pod's runtime needs, as rendered by the operator from its plan.

    Sizes are per LWS group (one model replica spread over `nodes` pods). Bytes are ints, times
    are whole seconds, token counts are tokens.

    Raises:
        ConfigError: from `__post_init__` when a value is out of range or the layout numbers do
            not agree (e.g. `data_parallel_size != nodes × data_parallel_size_local`).
    """

    engine: EngineName
    """Engine to launch: `vllm` (`vllm serve`) or `reference` (our CPU engine)."""
    model: str
    """Model id, e.g. `deepseek-ai/DeepSeek-V4-Flash` (what vLLM serves when `weights` is unset)."""
    served_model_name: str
    """Name clients use in the OpenAI API (`model` field); vLLM `--served-model-name`."""
    weights: str | None = None
    """Local checkpoint directory (PVC or node cache), an absolute path; when set,
    `vllm serve <weights>`."""
    nodes: int = 1
    """Pods in the LWS group (must equal `LWS_GROUP_SIZE` when that is set)."""
    tensor_parallel_size: int = 1
    """TP degree (vLLM `--tensor-parallel-size`)."""
    pipeline_parallel_size: int = 1
    """PP degree; > 1 runs vLLM on Ray across the group (vLLM `--pipeline-parallel-size`)."""
    data_parallel_size: int = 1
    """DP degree over the whole group (vLLM `--data-parallel-size`)."""
    data_parallel_size_local: int = 1
    """DP ranks on each node (vLLM `--data-parallel-size-local`)."""
    expert_parallel: bool = True
    """Expert parallelism for the MoE layers (vLLM `--enable-expert-parallel`)."""
    kv_cache_dtype: str = "fp8"
    """KV-cache dtype (vLLM `--kv-cache-dtype`; V4's FlashMLA path takes `fp8`, facts §5.1)."""
    block_size: int = DEEPSEEK_V4_BLOCK_SIZE
    """KV-cache block size in tokens; 256 for DeepSeek-V4 with vLLM."""
    max_model_len: int = 8192
    """Longest request in tokens, prompt plus output (vLLM `--max-model-len`)."""
    max_num_seqs: int = 64
    """Sequences per engine step per DP rank (vLLM `--max-num-seqs`)."""
    max_num_batched_tokens: int = 8192
    """Tokens per engine step per DP rank (vLLM `--max-num-batched-tokens`)."""
    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU's total memory vLLM may use, in (0, 1]; rendered with `repr`."""
    num_speculative_tokens: int = 0
    """MTP draft tokens per step; 0 disables speculative decoding."""
    drain_timeout_seconds: int = 30
    """How long in-flight requests may run after SIGTERM (vLLM `--shutdown-timeout`)."""
    engine_stop_grace_seconds: int = 15
    """Extra time after the drain for the engine to exit before the runtime kills it."""
    expected_shm_bytes: int = 0
    """Minimum size of `shm_path` the plan sized (0: not checked)."""
    expected_gpus: int = 0
    """GPUs this pod must see (0: not checked, e.g. the CPU reference engine)."""
    expected_gpu_memory_bytes: int = 0
    """Minimum total memory of each GPU, as nvidia-smi reports it (0: not checked)."""
    host: str = "0.0.0.0"  # noqa: S104  (pods listen on all interfaces; the Service selects them)
    """Address the engine API and the runtime's admin server bind to."""
    api_port: int = 8000
    """Engine's OpenAI API port (vLLM `--port`); the Service sends traffic here."""
    admin_port: int = 8081
    """Runtime's own port: `/health`, `/ready`, `/metrics`."""
    data_parallel_rpc_port: int = 13345
    """Leader's DP coordination port (vLLM `--data-parallel-rpc-port`)."""
    ray_port: int = 6379
    """Ray head port on the leader (only used when `pipeline_parallel_size > 1`)."""
    seed: int = 0
    """Random seed for the reference engine."""
    reference_config: str = "tiny"
    """Reference engine model size (`python -m dsv4_runtime.reference --config`)."""
    reference_module: str = "dsv4_runtime.reference"
    """Python module run as the reference engine (tests point it at an engine double)."""
    reference_device: ReferenceDevice = "cpu"
    """Reference engine ranks on CPU (gloo) or one GPU each (NCCL); see `reference_world_size`."""
    shm_path: Path = Path("/dev/shm")  # noqa: S108  (the pod's shared-memory mount, not a temp file)
    """Shared-memory mount cleaned and measured before start."""
    termination_log: Path = Path("/dev/termination-log")
    """File a preflight failure is written to (Kubernetes `terminationMessagePath`), if writable."""
    extra_engine_args: tuple[str, ...] = field(default=())
    """User's extra engine arguments, passed after ours; contradictions are rejected at launch."""

    def __post_init__(self) -> None:
        """Check ranges and the layout identities (see the class docstring)."""
        if self.engine not in get_args(EngineName):
            _fail(
                "--engine", f"must be one of {', '.join(get_args(EngineName))}, got {self.engine!r}"
            )
        for name, value in (
            ("--model", self.model),
            ("--served-model-name", self.served_model_name),
        ):
            if not value or value != value.strip():
                _fail(name, f"must be a non-empty name without surrounding spaces, got {value!r}")
        if self.weights is not None and (
            not posixpath.isabs(self.weights) or self.weights != self.weights.strip()
        ):
            # vLLM takes a path that is not a directory for a Hugging Face repository id: a
            # relative one would be downloaded from the Hub under the served name.
            _fail(
                "--weights",
                "must be an absolute directory path without surrounding spaces (the mounted "
                f"checkpoint, e.g. /models/...), got {self.weights!r}",
            )
        for flag, number, low in self._int_fields():
            if number < low:
                _fail(flag, f"must be >= {low}, got {number}")
        self._check_ports()
        if not (
            math.isfinite(self.gpu_memory_utilization) and 0 < self.gpu_memory_utilization <= 1
        ):
            _fail(
                "--gpu-memory-utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.engine == "vllm" and self.block_size != DEEPSEEK_V4_BLOCK_SIZE:
            _fail(
                "--block-size",
                f"must be {DEEPSEEK_V4_BLOCK_SIZE} for DeepSeek-V4 on vLLM, got {self.block_size}",
            )
        if self.max_num_batched_tokens < self.max_num_seqs:
            _fail(
                "--max-num-batched-tokens",
                f"must be >= --max-num-seqs ({self.max_num_seqs}), "
                f"got {self.max_num_batched_tokens}",
            )
        self._check_layout()
        if self.reference_device not in get_args(ReferenceDevice):
            _fail(
                "--reference-device",
                f"must be one of {', '.join(get_args(ReferenceDevice))}, "
                f"got {self.reference_device!r}",
            )

    def _int_fields(self) -> list[tuple[str, int, int]]:
        """(flag, value, lowest allowed) for every integer field."""
        return [
            ("--nodes", self.nodes, 1),
            ("--tensor-parallel-size", self.tensor_parallel_size, 1),
            ("--pipeline-parallel-size", self.pipeline_parallel_size, 1),
            ("--data-parallel-size", self.data_parallel_size, 1),
            ("--data-parallel-size-local", self.data_parallel_size_local, 1),
            ("--block-size", self.block_size, 1),
            ("--max-model-len", self.max_model_len, 1),
            ("--max-num-seqs", self.max_num_seqs, 1),
            ("--max-num-batched-tokens", self.max_num_batched_tokens, 1),
            ("--num-speculative-tokens", self.num_speculative_tokens, 0),
            ("--drain-timeout-seconds", self.drain_timeout_seconds, 0),
            ("--engine-stop-grace-seconds", self.engine_stop_grace_seconds, 0),
            ("--expected-shm-bytes", self.expected_shm_bytes, 0),
            ("--expected-gpus", self.expected_gpus, 0),
            ("--expected-gpu-memory-bytes", self.expected_gpu_memory_bytes, 0),
            ("--api-port", self.api_port, 1),
            ("--admin-port", self.admin_port, 1),
            ("--data-parallel-rpc-port", self.data_parallel_rpc_port, 1),
            ("--ray-port", self.ray_port, 1),
        ]

    def _check_ports(self) -> None:
        """Every port in range, and no two the same."""
        ports = (
            ("--api-port", self.api_port),
            ("--admin-port", self.admin_port),
            ("--data-parallel-rpc-port", self.data_parallel_rpc_port),
            ("--ray-port", self.ray_port),
        )
        for flag, port in ports:
            if port > _MAX_PORT:
                _fail(flag, f"must be <= {_MAX_PORT}, got {port}")
        # One pod binds them all (the leader): a clash fails late, as an unrelated bind error.
        for i, (flag, port) in enumerate(ports):
            for other, taken in ports[:i]:
                if port == taken:
                    _fail(flag, f"must differ from {other} ({taken})")

    def _check_layout(self) -> None:
        """Check the parallel sizes against each other and the per-pod GPU count.

        Without PP (vLLM's multi-node DP+EP): every node runs `data_parallel_size_local` DP ranks
        of `tensor_parallel_size` GPUs, so `DP = nodes × DP_local` and `GPUs/pod = TP × DP_local`.
        With PP (Ray): one replica of `TP × PP` GPUs spans the group, so `DP = 1` and
        `TP × PP = nodes × GPUs/pod`.
        """
        if self.pipeline_parallel_size == 1:
            if self.data_parallel_size != self.nodes * self.data_parallel_size_local:
                _fail(
                    "--data-parallel-size",
                    "must equal --nodes × --data-parallel-size-local = "
                    f"{self.nodes} × {self.data_parallel_size_local} = "
                    f"{self.nodes * self.data_parallel_size_local}, got {self.data_parallel_size}",
                )
            gpus = self.procs_per_pod
            if self.expected_gpus and gpus != self.expected_gpus:
                _fail(
                    "--expected-gpus",
                    f"must equal --tensor-parallel-size × --data-parallel-size-local = "
                    f"{self.tensor_parallel_size} × {self.data_parallel_size_local} = {gpus}, "
                    f"got {self.expected_gpus}",
                )
            return
        if self.data_parallel_size != 1 or self.data_parallel_size_local != 1:
            _fail(
                "--data-parallel-size",
                "must be 1 (and --data-parallel-size-local 1) when --pipeline-parallel-size > 1: "
                f"a PP layout is one replica per LWS group, got {self.data_parallel_size} "
                f"(local {self.data_parallel_size_local})",
            )
        if self.engine == "vllm" and self.expected_gpus:
            gpus = self.tensor_parallel_size * self.pipeline_parallel_size
            if gpus != self.nodes * self.expected_gpus:
                _fail(
                    "--pipeline-parallel-size",
                    f"--tensor-parallel-size × --pipeline-parallel-size = "
                    f"{self.tensor_parallel_size} × {self.pipeline_parallel_size} = {gpus} must "
                    f"equal --nodes × --expected-gpus = {self.nodes} × {self.expected_gpus} = "
                    f"{self.nodes * self.expected_gpus}",
                )

    def check_reference_layout(self) -> None:
        """Check that the reference engine can run this layout (called at its launch).

        Its ranks are TP × DP (no PP); expert parallelism pairs with TP or with DP, not both.

        Raises:
            ConfigError: naming the flag and the limit.
        """
        if self.pipeline_parallel_size > 1:
            _fail(
                "--pipeline-parallel-size",
                f"must be 1 for the reference engine (no pipeline parallelism), "
                f"got {self.pipeline_parallel_size}",
            )
        if self.weights is not None and self.reference_world_size > 1:
            _fail(
                "--weights",
                "the multi-rank reference engine does not load checkpoints (it would serve "
                "random weights under the served name): run it with TP x DP = 1 or without "
                "--weights",
            )
        if self.expert_parallel and self.tensor_parallel_size > 1 and self.data_parallel_size > 1:
            _fail(
                "--expert-parallel",
                "needs --tensor-parallel-size 1 (DP attention + EP) or --data-parallel-size 1 "
                f"(TP + EP) for the reference engine, got TP {self.tensor_parallel_size} and DP "
                f"{self.data_parallel_size} (use --no-expert-parallel)",
            )

    @property
    def reference_world_size(self) -> int:
        """Ranks of a reference-engine group: TP × DP (1 runs the single-process engine)."""
        return self.tensor_parallel_size * self.data_parallel_size

    @property
    def procs_per_pod(self) -> int:
        """Engine ranks (GPUs) one pod runs without PP: TP × DP_local."""
        return self.tensor_parallel_size * self.data_parallel_size_local

    def to_args(self) -> list[str]:
        """Render the `dsv4-runtime` argument list (the operator renders the identical list).

        Returns:
            Arguments in the module docstring's order; floats with `repr` (shortest round trip).
        """
        args = ["--engine", self.engine, "--model", self.model]
        args += ["--served-model-name", self.served_model_name]
        if self.weights is not None:
            args += ["--weights", self.weights]
        args += [
            "--nodes", str(self.nodes),
            "--tensor-parallel-size", str(self.tensor_parallel_size),
            "--pipeline-parallel-size", str(self.pipeline_parallel_size),
            "--data-parallel-size", str(self.data_parallel_size),
            "--data-parallel-size-local", str(self.data_parallel_size_local),
            "--expert-parallel" if self.expert_parallel else "--no-expert-parallel",
            "--kv-cache-dtype", self.kv_cache_dtype,
            "--block-size", str(self.block_size),
            "--max-model-len", str(self.max_model_len),
            "--max-num-seqs", str(self.max_num_seqs),
            "--max-num-batched-tokens", str(self.max_num_batched_tokens),
            "--gpu-memory-utilization", repr(self.gpu_memory_utilization),
            "--num-speculative-tokens", str(self.num_speculative_tokens),
            "--drain-timeout-seconds", str(self.drain_timeout_seconds),
            "--engine-stop-grace-seconds", str(self.engine_stop_grace_seconds),
            "--expected-shm-bytes", str(self.expected_shm_bytes),
            "--expected-gpus", str(self.expected_gpus),
            "--expected-gpu-memory-bytes", str(self.expected_gpu_memory_bytes),
            "--host", self.host,
            "--api-port", str(self.api_port),
            "--admin-port", str(self.admin_port),
            "--data-parallel-rpc-port", str(self.data_parallel_rpc_port),
            "--ray-port", str(self.ray_port),
            "--seed", str(self.seed),
            "--reference-config", self.reference_config,
            "--reference-module", self.reference_module,
            "--reference-device", self.reference_device,
            "--shm-path", str(self.shm_path),
            "--termination-log", str(self.termination_log),
        ]  # fmt: skip
        if self.extra_engine_args:
            args += ["--", *self.extra_engine_args]
        return args

    @classmethod
    def from_args(cls, argv: list[str]) -> RuntimeConfig:
        """Parse an argument list made by `to_args()` (or typed by hand).

        Args:
            argv: arguments without the program name; everything after the first lone `--` is
                taken verbatim as extra engine arguments.

        Returns:
            The validated config.

        Raises:
            ConfigError: an argument is unknown, missing, malformed or inconsistent.
        """
        if "--" in argv:
            cut = argv.index("--")
            own, extra = argv[:cut], tuple(argv[cut + 1 :])
        else:
            own, extra = argv, ()
        namespace = _parser().parse_args(own)
        values = vars(namespace)
        values["shm_path"] = Path(values["shm_path"])
        values["termination_log"] = Path(values["termination_log"])
        return cls(**values, extra_engine_args=extra)

    def replace(self, **changes: object) -> RuntimeConfig:
        """Return a copy with `changes` applied and validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _fail(flag: str, message: str) -> NoReturn:
    raise ConfigError(f"{flag} {message}")


def _parser() -> _RaisingParser:
    """The `dsv4-runtime` argument parser (help texts are the field docstrings, shortened)."""
    defaults = RuntimeConfig(engine="reference", model="m", served_model_name="m")
    p = _RaisingParser(
        prog="dsv4-runtime",
        description="Launch and supervise a DeepSeek-V4 engine (vLLM or the reference engine) "
        "as an LWS leader or worker, from the operator's plan. Extra engine arguments go after "
        "a lone '--'.",
        allow_abbrev=False,
    )
    p.add_argument("--engine", required=True, choices=get_args(EngineName))
    p.add_argument("--model", required=True, help="model id, e.g. deepseek-ai/DeepSeek-V4-Flash")
    p.add_argument("--served-model-name", required=True, help="name in the OpenAI API")
    p.add_argument("--weights", default=None, help="local checkpoint directory")
    ints: list[tuple[str, str]] = [
        ("--nodes", "pods in the LWS group"),
        ("--tensor-parallel-size", "TP degree"),
        ("--pipeline-parallel-size", "PP degree (>1: Ray)"),
        ("--data-parallel-size", "DP degree over the group"),
        ("--data-parallel-size-local", "DP ranks per node"),
    ]
    for flag, text in ints:
        p.add_argument(flag, type=int, default=getattr(defaults, _dest(flag)), help=text)
    p.add_argument(
        "--expert-parallel",
        action=argparse.BooleanOptionalAction,
        default=defaults.expert_parallel,
        help="expert parallelism for MoE layers",
    )
    p.add_argument("--kv-cache-dtype", default=defaults.kv_cache_dtype)
    for flag, text in [
        ("--block-size", "KV block size, tokens"),
        ("--max-model-len", "tokens"),
        ("--max-num-seqs", "per DP rank"),
        ("--max-num-batched-tokens", "tokens per step per DP rank"),
    ]:
        p.add_argument(flag, type=int, default=getattr(defaults, _dest(flag)), help=text)
    p.add_argument("--gpu-memory-utilization", type=float, default=defaults.gpu_memory_utilization)
    for flag, text in [
        ("--num-speculative-tokens", "MTP draft tokens (0: off)"),
        ("--drain-timeout-seconds", "in-flight time after SIGTERM"),
        ("--engine-stop-grace-seconds", "engine exit time after the drain"),
        ("--expected-shm-bytes", "minimum /dev/shm size"),
        ("--expected-gpus", "GPUs this pod must see"),
        ("--expected-gpu-memory-bytes", "minimum total memory per GPU"),
    ]:
        p.add_argument(flag, type=int, default=getattr(defaults, _dest(flag)), help=text)
    p.add_argument("--host", default=defaults.host)
    for flag, text in [
        ("--api-port", "engine OpenAI API port"),
        ("--admin-port", "runtime /health /ready /metrics port"),
        ("--data-parallel-rpc-port", "leader DP RPC port"),
        ("--ray-port", "Ray head port (PP > 1)"),
        ("--seed", "reference engine seed"),
    ]:
        p.add_argument(flag, type=int, default=getattr(defaults, _dest(flag)), help=text)
    p.add_argument("--reference-config", default=defaults.reference_config)
    p.add_argument("--reference-module", default=defaults.reference_module)
    p.add_argument(
        "--reference-device",
        default=defaults.reference_device,
        choices=get_args(ReferenceDevice),
        help="reference ranks on cpu (gloo) or one GPU each (nccl)",
    )
    p.add_argument("--shm-path", default=str(defaults.shm_path))
    p.add_argument("--termination-log", default=str(defaults.termination_log))
    return p


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def parser_help() -> str:
    """The `--help` text of `dsv4-runtime`."""
    return _parser().format_help()
