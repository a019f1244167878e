"""`status` of a DeepSeekV4Deployment, written only by the operator.

Our keys never collide with kopf's bookkeeping: kopf keeps its progress in `kopf.zalando.org/*`
annotations (and, if configured, `status.kopf`), which this schema does not declare.
"""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from dsv4_operator.api.meta import ApiModel, Condition
from dsv4_operator.api.v1alpha1.quantities import UsdAmount

__all__ = [
    "CostStatus",
    "DeepSeekV4DeploymentStatus",
    "GpuTypeRejection",
    "MemoryBreakdown",
    "PlanLayout",
    "PlanStatus",
    "ScalingDecision",
]

Bytes = Annotated[int, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Text = Annotated[str, Field(max_length=1024)]


class PlanLayout(ApiModel):
    """Parallel layout of one replica."""

    nodes_per_replica: int = Field(ge=1)
    """Worker pods (nodes) per replica (LeaderWorkerSet group size)."""
    gpus_per_node: int = Field(ge=1)
    """GPUs each worker pod requests."""
    gpus_per_replica: int = Field(ge=1)
    """GPUs per replica (nodesPerReplica x gpusPerNode)."""
    tensor: int = Field(ge=1)
    """Tensor-parallel size."""
    data: int = Field(ge=1)
    """Data-parallel size."""
    pipeline: int = Field(ge=1)
    """Pipeline-parallel size."""
    expert: int = Field(ge=1)
    """Expert-parallel size (1: off)."""


class MemoryBreakdown(ApiModel):
    """Planned memory of one GPU, in bytes."""

    capacity_bytes: Bytes
    """Physical memory of the GPU, in bytes."""
    budget_bytes: Bytes
    """Memory vLLM may use (capacity x gpuMemoryUtilization), in bytes."""
    weights_bytes: Bytes
    """Weights resident on the GPU, in bytes."""
    kv_cache_bytes: Bytes
    """KV cache (all layers' compressed and window entries), in bytes."""
    activations_bytes: Bytes
    """Peak activations and workspace of a forward step, in bytes."""
    overhead_bytes: Bytes
    """CUDA context, CUDA graphs, NCCL buffers and fragmentation reserve, in bytes."""


class GpuTypeRejection(ApiModel):
    """A GPU type from spec.gpu.types that the planner did not choose, and why."""

    gpu_type: Annotated[str, Field(max_length=63)]
    """GPU type name (lowercase)."""
    reason: Text
    """Why it was not chosen, with the numbers (e.g. weights exceed memory by N bytes)."""


class PlanStatus(ApiModel):
    """The plan of the spec at `status.observedGeneration`, and whether the groups run it yet.

    GPU type, layout and memory, with the reasons.
    """

    gpu_type: Annotated[str, Field(max_length=63)]
    """Chosen GPU type (lowercase name)."""
    reason: Text
    """Why this GPU type was chosen (first type in spec.gpu.types that fits, ...)."""
    rejected: Annotated[tuple[GpuTypeRejection, ...], Field(max_length=8)] = ()
    """Earlier GPU types in spec.gpu.types that did not fit, with reasons."""
    layout: PlanLayout
    """Nodes, GPUs and parallel sizes of one replica."""
    memory_per_gpu: MemoryBreakdown
    """Memory budget of one GPU, in bytes."""
    max_model_len: int = Field(ge=1)
    """Resolved maximum sequence length in tokens."""
    kv_cache_tokens: Count
    """KV-cache capacity of one replica in tokens (planned; vLLM's reported figure may differ)."""
    max_concurrency: Count
    """Sequences of maxModelLen tokens one replica holds at once (kvCacheTokens / maxModelLen)."""
    shm_bytes: Bytes
    """Size of /dev/shm per worker pod, in bytes."""
    warnings: Annotated[tuple[Text, ...], Field(max_length=32)] = ()
    """Planner warnings (tight memory, low concurrency, ...)."""
    applied: bool = True
    """False while this plan is not what the groups run: the API server refused one of its
    children (Progressing=False, reason ApplyFailed, names it and the error), a reconcile failed
    before applying it (Progressing=False, reason ReconcileError) or a Secret,
    ConfigMap or claim its pods read is missing (ReferenceMissing: the LeaderWorkerSet keeps its
    pod template); the groups keep the last applied plan meanwhile."""


class CostStatus(ApiModel):
    """Estimated cost at the target load, from spec.cost prices."""

    usd_per_million_tokens: UsdAmount | None = None
    """US dollars per million generated tokens at spec.load (decimal string), with the replicas
    that load takes (with autoscaling: load / targetTokensPerSecondPerReplica, within min and
    maxReplicas); unset without a price or load."""
    usd_per_hour: UsdAmount | None = None
    """US dollars per hour for the current replicas (decimal string)."""
    gpu_hours_per_day: Count
    """GPU-hours per day held by the current replicas (GPUs x 24)."""


class ScalingDecision(ApiModel):
    """One change of replicas by the autoscaler."""

    time: datetime
    """When the decision was applied (RFC 3339 date-time)."""
    from_replicas: Count
    """Replicas before."""
    to_replicas: Count
    """Replicas after."""
    reason: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    """CamelCase cause (native, `autoscaling.policy.Cause`): TokenRateHigh, GuardRail,
    RequestsWaiting, MinReplicas, TokenRateLow, ReplicaLimit or Idle."""
    message: Text = ""
    """Metric values behind the decision."""


class DeepSeekV4DeploymentStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: Count = 0
    """metadata.generation the status reflects."""
    conditions: Annotated[
        tuple[Condition, ...],
        Field(
            max_length=16,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = ()
    """Ready, Planned, Progressing, Available, Degraded, ScalingActive (one per type)."""
    plan: PlanStatus | None = None
    """The plan of the spec at observedGeneration (while Planned is not True, the last plan), and
    `applied`, whether the groups run it yet; unset until Planned is True."""
    replicas: Count = 0
    """Replica groups that exist (the scale subresource's status replicas)."""
    ready_replicas: Count = 0
    """Replica groups whose every pod is ready."""
    selector: Annotated[str, Field(max_length=4096)] = ""
    """Label selector of the worker pods in string form (for the scale subresource / HPA)."""
    endpoint: Annotated[str, Field(max_length=2048)] = ""
    """Base URL of the OpenAI-compatible API, e.g. http://NAME.NAMESPACE.svc:8000/v1."""
    cost: CostStatus | None = None
    """Estimated cost at the current replicas and target load."""
    starting_since: datetime | None = None
    """Since when every replica group runs the current pod template while some are not ready
    yet (RFC 3339, UTC); unset otherwise. `Degraded` turns True when this is older than the
    plan's startup budget. Kept in status so an operator restart does not restart the wait."""
    recent_scaling_decisions: Annotated[tuple[ScalingDecision, ...], Field(max_length=10)] = ()
    """Last 10 autoscaler decisions, oldest first."""
