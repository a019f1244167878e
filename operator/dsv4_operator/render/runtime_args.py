"""The operator side of the operator <-> runtime contract: `dsv4-runtime` arguments from a plan.

The worker image's entrypoint is `tini -- dsv4-runtime` (runtime/Dockerfile); the pod's `args`
are exactly the list `runtime_args` returns, in the order of `dsv4_runtime.config.RuntimeConfig.
to_args()`, every field explicit, so `kubectl get pod -o yaml` shows the whole launch and the
runtime never re-plans. A round-trip test parses this list with `RuntimeConfig.from_args` and
compares every value with the plan. The operator never imports `dsv4_runtime` (import-linter).

Ports, probe paths and drain timings below mirror `runtime/dsv4_runtime/config.py` and
`server.py`; the same test pins them to the runtime's values.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Final

from dsv4_operator.api.v1alpha1.engine import CUDAGRAPH_CAP_FLAG, CUDAGRAPH_LIST_FLAG
from dsv4_operator.api.v1alpha1.spec import RUNTIME_ADMIN_PORT, DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan, engine_args

__all__ = [
    "ADMIN_PORT",
    "API_PORT",
    "DRAIN_TIMEOUT_SECONDS",
    "ENGINE_STOP_GRACE_SECONDS",
    "HEALTH_PATH",
    "MODEL_MOUNT_PATH",
    "PRESTOP_SLEEP_SECONDS",
    "READY_FAILURE_THRESHOLD",
    "READY_PATH",
    "READY_PERIOD_SECONDS",
    "ROUTE_SETTLE_ENV",
    "ROUTE_SETTLE_SECONDS",
    "SHM_PATH",
    "TERMINATION_GRACE_MARGIN_SECONDS",
    "TERMINATION_GRACE_SECONDS",
    "TERMINATION_LOG",
    "RuntimeLaunch",
    "runtime_args",
    "runtime_launch",
    "served_model_name",
    "shm_size_bytes",
    "termination_grace",
]

API_PORT: Final = 8000
"""Engine's OpenAI API port (RuntimeConfig.api_port default; vLLM `--port`)."""
ADMIN_PORT: Final = RUNTIME_ADMIN_PORT
"""Runtime's `/health`, `/ready`, `/metrics` port (RuntimeConfig.admin_port default), 8081."""
HEALTH_PATH: Final = "/health"
"""Liveness: 200 while the runtime runs, also while loading and draining (runtime server.py)."""
READY_PATH: Final = "/ready"
"""Readiness: 200 once the engine serves and before SIGTERM, else 503 (runtime server.py)."""
DATA_PARALLEL_RPC_PORT: Final = 13345
"""Leader's DP coordination port (RuntimeConfig.data_parallel_rpc_port default)."""
RAY_PORT: Final = 6379
"""Ray head port, used only with PP > 1 (RuntimeConfig.ray_port default)."""
DRAIN_TIMEOUT_SECONDS: Final = 30
"""In-flight time after SIGTERM by default (`spec.rollout.drainSeconds`' default; the runtime's
`--drain-timeout-seconds` default, vLLM `--shutdown-timeout`)."""
ENGINE_STOP_GRACE_SECONDS: Final = 15
"""Time for the engine to exit after the drain before the runtime kills it (runtime default)."""
PRESTOP_SLEEP_SECONDS: Final = 5
"""preStop sleep before SIGTERM reaches the runtime, so endpoint removal reaches every router
first (KServe's drain pattern, design-lessons lesson 6)."""
READY_PERIOD_SECONDS: Final = 10
"""The engine container's readinessProbe (`/ready`) period, s (our choice)."""
READY_FAILURE_THRESHOLD: Final = 3
"""Failed `/ready` probes before the kubelet marks a pod unready and the Service stops routing to
it: a group the autoscaler drained keeps receiving requests for up to this times the period."""
ROUTE_SETTLE_SECONDS: Final = READY_PERIOD_SECONDS * (READY_FAILURE_THRESHOLD + 1)
"""Time from a leader's `/ready` turning 503 (it is not terminating) until the Service stops
routing to it: failureThreshold probes a period apart, plus one period for the endpoint update
(the native autoscaler's drain settle uses the same sum). A worker of a multi-node group that is
evicted alone (a node drain) tells its leader to take no new requests and holds its ranks this
long before its drain (`ROUTE_SETTLE_ENV`): requests admitted meanwhile would otherwise be cut
when its ranks exit after the drain."""
ROUTE_SETTLE_ENV: Final = "DSV4_ROUTE_SETTLE_SECONDS"
"""The runtime's route settle variable (`dsv4_runtime.supervisor.ROUTE_SETTLE_ENV`), set on
multi-node pods: a variable, not a flag, so a runtime image that predates it ignores it instead
of exiting 2 on an unknown flag."""
TERMINATION_GRACE_MARGIN_SECONDS: Final = 5
"""Margin of terminationGracePeriodSeconds over the runtime's whole stop (`termination_grace`)."""
TERMINATION_GRACE_SECONDS: Final = (
    PRESTOP_SLEEP_SECONDS
    + DRAIN_TIMEOUT_SECONDS
    + ENGINE_STOP_GRACE_SECONDS
    + TERMINATION_GRACE_MARGIN_SECONDS
)
"""terminationGracePeriodSeconds at the default drain (`termination_grace`)."""
SHM_PATH: Final = "/dev/shm"  # noqa: S108  (the pod's shared-memory mount, not a temp file)
"""Mount path of the memory-backed emptyDir the plan sizes."""
TERMINATION_LOG: Final = "/dev/termination-log"
"""Kubernetes' default terminationMessagePath: preflight failures land in `kubectl describe`."""
MODEL_MOUNT_PATH: Final = "/models"
"""Where a PVC or node-local checkpoint is mounted (read-only)."""
_REFERENCE_CONFIG: Final = "tiny"
_REFERENCE_MODULE: Final = "dsv4_runtime.reference"


def served_model_name(spec: DeepSeekV4DeploymentSpec) -> str:
    """Name clients put in the OpenAI `model` field: `deepseek-v4-flash` or `deepseek-v4-pro`."""
    return f"deepseek-v4-{spec.model}"


def shm_size_bytes(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> int:
    """Size of the shared-memory mount per worker pod in bytes: `spec.shmSize`, else the plan's.

    Either way it holds the engines' host KV cache (`ShmPlan.kv_offload_bytes`: vLLM's
    `OffloadingConnector` keeps it in /dev/shm and refuses to start without room for it), so
    `spec.shmSize` is what the pod needs besides it. The memory request grows with this size.
    """
    override = spec.shm_bytes
    return plan.shm.size_bytes if override is None else override + plan.shm.kv_offload_bytes


def _weights_path(spec: DeepSeekV4DeploymentSpec) -> str | None:
    source = spec.model_source
    if source is None or source.hugging_face is not None:
        return None
    if source.pvc is not None:
        return posixpath.normpath(MODEL_MOUNT_PATH + "/" + source.pvc.path)
    return MODEL_MOUNT_PATH


def _model_id(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> str:
    """The Hub repository vLLM downloads (for a volume source, the official repo's id).

    Without `spec.modelSource` that is the default repository of (model, weightsFormat)
    (`DEFAULT_HUGGING_FACE_REPOS`: FP8 and NVFP4 checkpoints are other repositories than the
    official one), never the official one for every format.
    """
    hub = spec.effective_model_source.hugging_face
    return hub.repo if hub is not None else plan.model.hf_repo


def _extra_args(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> tuple[str, ...]:
    """Engine arguments after the runtime's own: the user's, the Hub revision, the graph cap.

    The CUDA-graph cap is the one the plan counted (`Evaluation.max_cudagraph_capture_size`,
    vLLM's default for the planned sizes): pinned, an image with another vLLM default cannot
    change the graph memory under the plan. With speculation the whole default list is passed
    (`--cudagraph-capture-sizes`, `Evaluation.cudagraph_capture_sizes`): a bare cap would drop
    vLLM's uniform-decode sizes (vLLM issue #54933). Both are engine arguments, not runtime
    ones, so a runtime image that predates them still starts. A user's own
    `--max-cudagraph-capture-size` is already in `extraArgs`, and the plan counted it.
    """
    extra = tuple(spec.engine.extra_args)
    source = spec.model_source
    if source is not None and source.hugging_face is not None:
        revision = source.hugging_face.revision
        if revision != "main":
            extra += (f"--revision={revision}",)
    if spec.engine.max_cudagraph_capture_size is not None:  # the user's, already in extra
        return extra
    if sizes := plan.chosen.cudagraph_capture_sizes:
        return (*extra, CUDAGRAPH_LIST_FLAG, *(str(size) for size in sizes))
    return (*extra, f"{CUDAGRAPH_CAP_FLAG}={plan.chosen.max_cudagraph_capture_size}")


@dataclass(frozen=True)
class RuntimeLaunch:
    """The values rendered into `dsv4-runtime` arguments (one field per argument).

    Attributes mirror `dsv4_runtime.config.RuntimeConfig`; sizes in bytes, times in seconds.
    """

    model: str
    served_model_name: str
    weights: str | None
    nodes: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    data_parallel_size_local: int
    expert_parallel: bool
    kv_cache_dtype: str
    block_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    num_speculative_tokens: int
    expected_shm_bytes: int
    expected_gpus: int
    expected_gpu_memory_bytes: int
    extra_engine_args: tuple[str, ...]


def runtime_launch(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> RuntimeLaunch:
    """The launch values of one worker pod, all taken from the plan and the spec."""
    args = engine_args(plan)
    lay = plan.chosen.layout
    return RuntimeLaunch(
        model=_model_id(spec, plan),
        served_model_name=served_model_name(spec),
        weights=_weights_path(spec),
        nodes=lay.nodes,
        tensor_parallel_size=lay.tensor_parallel,
        pipeline_parallel_size=lay.pipeline_parallel,
        data_parallel_size=lay.data_parallel,
        data_parallel_size_local=lay.data_parallel_local,
        expert_parallel=lay.expert_parallel,
        kv_cache_dtype=str(args["kv_cache_dtype"]),
        block_size=int(args["block_size"]),
        max_model_len=plan.chosen.max_model_len,
        max_num_seqs=plan.chosen.max_num_seqs,
        max_num_batched_tokens=plan.chosen.max_num_batched_tokens,
        gpu_memory_utilization=float(plan.chosen.memory.gpu_memory_utilization),
        num_speculative_tokens=plan.request.speculative_tokens,
        expected_shm_bytes=shm_size_bytes(spec, plan),
        expected_gpus=lay.gpus_per_node,
        expected_gpu_memory_bytes=plan.chosen.gpu.memory_bytes,
        extra_engine_args=_extra_args(spec, plan),
    )


def termination_grace(spec: DeepSeekV4DeploymentSpec, nodes: int = 1) -> int:
    """The pods' terminationGracePeriodSeconds, s.

    preStop + `spec.rollout.drainSeconds` + engine stop grace + 5 s margin, so the kubelet never
    SIGKILLs a runtime that is still inside its drain (runtime supervisor.py); with `nodes` > 1
    (pods per group) also `ROUTE_SETTLE_SECONDS`, which a worker holds its ranks before its
    drain. Leader and worker templates share the value: it is an upper bound, and a leader
    exits when its own drain ends.
    """
    return (
        PRESTOP_SLEEP_SECONDS
        + (ROUTE_SETTLE_SECONDS if nodes > 1 else 0)
        + spec.rollout.drain_seconds
        + ENGINE_STOP_GRACE_SECONDS
        + TERMINATION_GRACE_MARGIN_SECONDS
    )


def runtime_args(spec: DeepSeekV4DeploymentSpec, plan: Plan) -> list[str]:
    """`dsv4-runtime` arguments of every pod of a replica (leader and workers alike).

    The pod's role comes from the LWS environment (`LWS_WORKER_INDEX`), not from arguments, so
    leader and worker templates carry the same list.

    Returns:
        The argument list in `RuntimeConfig.to_args()` order; floats with `repr`.
    """
    r = runtime_launch(spec, plan)
    out = ["--engine", "vllm", "--model", r.model, "--served-model-name", r.served_model_name]
    if r.weights is not None:
        out += ["--weights", r.weights]
    out += [
        "--nodes", str(r.nodes),
        "--tensor-parallel-size", str(r.tensor_parallel_size),
        "--pipeline-parallel-size", str(r.pipeline_parallel_size),
        "--data-parallel-size", str(r.data_parallel_size),
        "--data-parallel-size-local", str(r.data_parallel_size_local),
        "--expert-parallel" if r.expert_parallel else "--no-expert-parallel",
        "--kv-cache-dtype", r.kv_cache_dtype,
        "--block-size", str(r.block_size),
        "--max-model-len", str(r.max_model_len),
        "--max-num-seqs", str(r.max_num_seqs),
        "--max-num-batched-tokens", str(r.max_num_batched_tokens),
        "--gpu-memory-utilization", repr(r.gpu_memory_utilization),
        "--num-speculative-tokens", str(r.num_speculative_tokens),
        "--drain-timeout-seconds", str(spec.rollout.drain_seconds),
        "--engine-stop-grace-seconds", str(ENGINE_STOP_GRACE_SECONDS),
        "--expected-shm-bytes", str(r.expected_shm_bytes),
        "--expected-gpus", str(r.expected_gpus),
        "--expected-gpu-memory-bytes", str(r.expected_gpu_memory_bytes),
        "--host", "0.0.0.0",  # noqa: S104  (pods listen on all interfaces; Services select them)
        "--api-port", str(API_PORT),
        "--admin-port", str(ADMIN_PORT),
        "--data-parallel-rpc-port", str(DATA_PARALLEL_RPC_PORT),
        "--ray-port", str(RAY_PORT),
        "--seed", "0",
        "--reference-config", _REFERENCE_CONFIG,
        "--reference-module", _REFERENCE_MODULE,
        "--reference-device", "cpu",
        "--shm-path", SHM_PATH,
        "--termination-log", TERMINATION_LOG,
    ]  # fmt: skip
    if r.extra_engine_args:
        out += ["--", *r.extra_engine_args]
    return out
