"""Turn a DeepSeekV4Deployment spec into a planner request (the operator and `dsv4 plan FILE`).

Mapping: `spec.gpu.types` -> preference list; `spec.gpu.customTypes` -> inline GPU types;
`spec.gpu.gpusPerNode` unset -> each type's node size (catalog, or `CUSTOM_GPUS_PER_NODE`);
`spec.gpu.budget` is for all replicas, so one replica may use `budget // replicas` GPUs;
`spec.load.concurrency` is for all replicas, so one replica carries `ceil(concurrency / replicas)`;
a tokens/s target may use up to `autoscaling.maxReplicas` replicas when autoscaling is on, else
`spec.replicas`, and `spec.gpu.budget` GPUs in all. With autoscaling on, the plan must not depend
on `spec.replicas`, which the autoscaler moves: a new plan would change the pod template and roll
every group, and lower the default tokens/s target as replicas rise (a runaway). So the
concurrency is shared by `maxReplicas` (the target holds at full scale) and the budget by
`max(minReplicas, 1)` (the floor fits; the autoscaler keeps replicas x GPUs within the budget);
see `planning_replicas`.
`spec.parallelism.expert` > 1 turns expert parallel on (EP = TP x DP), 1 turns it off;
`gpuMemoryUtilizationPercent` / 100 is vLLM's `--gpu-memory-utilization`.

`spec_words` is the inverse for the planner's findings: the spec field a `Term` names, and its
value as that field takes it, for the resource's status and Events.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Final

from dsv4_operator.api.v1alpha1.gpu import CustomGpuType
from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning.findings import PlanningError, Setting, Term
from dsv4_operator.planning.hardware import GpuType
from dsv4_operator.planning.planner import Plan, plan
from dsv4_operator.planning.request import PlanRequest

__all__ = [
    "CUSTOM_GPUS_PER_NODE",
    "PERCENT_RANGE",
    "SPEC_FIELDS",
    "budget_share_words",
    "custom_gpu",
    "planning_replicas",
    "replica_cap_words",
    "replica_gpu_budget",
    "request_from_spec",
    "spec_path",
    "spec_words",
]

CUSTOM_GPUS_PER_NODE: Final = 8
"""Node size of a `spec.gpu.customTypes` entry when `spec.gpu.gpusPerNode` is unset: an HGX/OAM
baseboard's 8 GPUs (catalog types use their own, `hardware.GPUS`)."""


def custom_gpu(c: CustomGpuType, gpus_per_node: int) -> GpuType:
    """Planner view of a GPU type described inline in the spec."""
    nvidia = c.vendor == "nvidia"
    label_key = "nvidia.com/gpu.product" if nvidia else "amd.com/gpu.product-name"
    return GpuType(
        name=c.name.lower(),
        memory_bytes=c.memory_bytes,
        bandwidth_bytes_per_s=c.memory_bandwidth_gbps * 10**9,
        gpus_per_node=gpus_per_node,
        nvlink_domain=gpus_per_node if c.interconnect_gbps >= 200 else 1,
        fp8=c.fp8,
        fp4=c.fp4,
        arch="custom",
        vendor="nvidia" if nvidia else "amd",
        label_key=label_key,
        label=c.node_selector.get(label_key, c.name),
        resource="nvidia.com/gpu" if nvidia else "amd.com/gpu",
    )


def planning_replicas(spec: DeepSeekV4DeploymentSpec) -> tuple[int, int]:
    """Replicas that share `spec.load.concurrency`, and replicas that share `spec.gpu.budget`.

    Both are `max(spec.replicas, 1)` with fixed replicas. With autoscaling on they ignore
    `spec.replicas`: `(maxReplicas, max(minReplicas, 1))`, so scaling never re-plans.
    """
    a = spec.autoscaling
    if a.enabled:
        return a.max_replicas, max(a.min_replicas, 1)
    replicas = max(spec.replicas, 1)
    return replicas, replicas


def replica_gpu_budget(spec: DeepSeekV4DeploymentSpec) -> int | None:
    """GPUs one replica may use: `spec.gpu.budget // n`; None without a budget.

    `n` is the replicas that share the budget, `planning_replicas`'s second value. 0 when the
    budget is below `n`, which `request_from_spec` refuses (a floor of 1 GPU per replica would
    roll out more GPUs than the budget).
    """
    if spec.gpu.budget is None:
        return None
    return spec.gpu.budget // planning_replicas(spec)[1]


def budget_share_words(spec: DeepSeekV4DeploymentSpec) -> str | None:
    """How replicas share `spec.gpu.budget`, naming the field that sets the share, or None.

    `spec.gpu.budget 8 shared by spec.replicas 3 leaves 2 GPUs per replica (lower spec.replicas
    or raise the budget)`; with autoscaling on the share is set by
    `spec.autoscaling.minReplicas`, not `spec.replicas` (`planning_replicas`). None without a
    budget or when one replica has all of it. For messages about a budget that is too small
    (PlanFailed, InsufficientCapacity).
    """
    share = planning_replicas(spec)[1]
    per_replica = replica_gpu_budget(spec)
    if per_replica is None or share <= 1:
        return None
    by = "spec.autoscaling.minReplicas" if spec.autoscaling.enabled else "spec.replicas"
    return (
        f"spec.gpu.budget {spec.gpu.budget} shared by {by} {share} leaves {per_replica} GPUs "
        f"per replica (lower {by} or raise the budget)"
    )


_MAX_REPLICA_TRIES: Final = 8
"""Replica counts `replica_cap_words` plans before it names no count: each try starts from the
count the previous plan needed (a concurrency target split over more replicas lowers each
one's throughput, so the count can grow; Flash at 5,000 tokens/s and 8 concurrent requests
needs 3 replicas at 1 and 4 at 3)."""


def _with_replica_cap(spec: DeepSeekV4DeploymentSpec, n: int) -> DeepSeekV4DeploymentSpec:
    """`spec` with `n` as its replica cap: `spec.autoscaling.maxReplicas`, else `spec.replicas`."""
    a = spec.autoscaling
    if a.enabled:
        return spec.model_copy(update={"autoscaling": a.model_copy(update={"max_replicas": n})})
    return spec.model_copy(update={"replicas": n})


def replica_cap_words(spec: DeepSeekV4DeploymentSpec, planned: Plan) -> str | None:
    """The field that caps the replicas of `spec.load.tokensPerSecond`, when that blocks `planned`.

    The planner says "needs 24 replicas; at most 1 are allowed" (`TOKENS_TARGET_EXCEEDS_REPLICAS`)
    without naming the cap: `spec.replicas` (default 1) with fixed replicas,
    `spec.autoscaling.maxReplicas` with autoscaling (`request_from_spec`'s `max_replicas`). The
    words name it and the smallest count, from the closest layout's
    (`Evaluation.replicas_for_target`) up, at which the spec plans (`_MAX_REPLICA_TRIES`), or
    no count when none of those does (e.g. a `spec.gpu.budget` the replicas share) (h22). A
    count above `MAX_REPLICAS` (1,000, the CRD's most for either field) is named with that
    limit instead of "raise it", which the API server would refuse.
    None when `planned` fits, without a target or cap, or when the closest layout's count is
    within the cap.
    """
    needed = planned.chosen.replicas_for_target
    if planned.fits or spec.load is None or spec.load.tokens_per_second is None or needed is None:
        return None
    a = spec.autoscaling
    cap = a.max_replicas if a.enabled else spec.replicas
    if not cap or needed <= cap:
        return None
    field = "spec.autoscaling.maxReplicas" if a.enabled else "spec.replicas"
    if needed > MAX_REPLICAS:  # no cap the API server takes holds the target
        return (
            f"{field} {cap} caps the replicas spec.load.tokensPerSecond may use ({needed} "
            f"replicas needed, more than the {MAX_REPLICAS:,} a resource takes: lower "
            "spec.load.tokensPerSecond, or split it over several resources)"
        )
    count: int | None = None
    n = needed
    for _ in range(_MAX_REPLICA_TRIES):
        try:
            tried = plan(request_from_spec(_with_replica_cap(spec, n)))
        except PlanningError:
            break
        if tried.fits:
            count = n
            break
        more = tried.chosen.replicas_for_target
        if more is None or more <= n:
            break  # something else than the replica cap keeps it from fitting
        n = more
    to = f" to {count}" if count is not None else ""
    if a.enabled:
        fix = f"raise it{to}"
    else:
        most = f"maxReplicas {count}" if count is not None else "a larger maxReplicas"
        fix = f"raise spec.replicas{to}, or enable spec.autoscaling with {most}"
    if count is None and spec.gpu.budget is not None:
        fix += ", with a spec.gpu.budget that holds them"
    return f"{field} {cap} caps the replicas spec.load.tokensPerSecond may use ({fix})"


def request_from_spec(spec: DeepSeekV4DeploymentSpec) -> PlanRequest:
    """Build the planner request for one replica of a validated spec.

    Raises:
        PlanningError: `gpu_budget` when `spec.gpu.budget` leaves less than one GPU per
            replica (`budget_share_words` says why).
    """
    load_share, _ = planning_replicas(spec)
    if replica_gpu_budget(spec) == 0:
        raise PlanningError("gpu_budget", budget_share_words(spec) or "less than one GPU")
    par = spec.parallelism
    expert = None if par is None or par.expert is None else par.expert > 1
    load = spec.load
    concurrency = None
    if load is not None and load.concurrency is not None:
        concurrency = -(-load.concurrency // load_share)
    prices = {
        p.gpu_type.lower(): str(Decimal(p.usd_per_gpu_hour)) for p in spec.cost.gpu_hourly_prices
    }
    return PlanRequest(
        model=spec.model,
        weights_format=spec.weights_format,
        kv_cache_dtype=spec.kv_cache_dtype,
        gpu_types=tuple(t.lower() for t in spec.gpu.types),
        custom_gpus=tuple(
            custom_gpu(c, spec.gpu.gpus_per_node or CUSTOM_GPUS_PER_NODE)
            for c in spec.gpu.custom_types
        ),
        gpus_per_node=spec.gpu.gpus_per_node,
        max_nodes=spec.gpu.max_nodes,
        gpu_budget=replica_gpu_budget(spec),
        tensor_parallel=None if par is None else par.tensor,
        data_parallel=None if par is None else par.data,
        pipeline_parallel=None if par is None else par.pipeline,
        expert_parallel=expert,
        max_model_len=None if spec.max_model_len == "auto" else spec.max_model_len,
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        gpu_memory_utilization=spec.gpu_memory_utilization_percent / 100,
        speculative_tokens=(
            0
            if spec.speculative_decoding is None
            else spec.speculative_decoding.num_speculative_tokens
        ),
        concurrency=concurrency,
        tokens_per_second=None if load is None else load.tokens_per_second,
        max_replicas=(
            spec.autoscaling.max_replicas if spec.autoscaling.enabled else spec.replicas or None
        ),
        total_gpu_budget=spec.gpu.budget,
        weights_download=spec.effective_model_source.hugging_face is not None,
        usd_per_gpu_hour=prices,
        cpu_offload_bytes=spec.engine.cpu_offload_bytes,
        prefetch_offload=spec.engine.prefetch_offload,
        kv_offloading_gib=spec.engine.kv_offloading_gib,
        kv_offload_rank_bytes=spec.engine.kv_offload_rank_bytes,
        host_kv_not_counted=spec.engine.kv_offload_not_counted,
        max_cudagraph_capture_size=spec.engine.max_cudagraph_capture_size,
        performance_mode=spec.engine.performance_mode,
        cuda_graphs=spec.engine.cuda_graphs,
        eplb=spec.engine.eplb,
        redundant_experts=spec.engine.redundant_experts,
        all2all_backend=spec.engine.all2all_backend,
        deepep_buffer_bytes=spec.engine.deepep_buffer_bytes,
        moe_dp_chunk_tokens=spec.engine.moe_dp_chunk_tokens,
        async_scheduling=spec.engine.async_scheduling,
        dual_batch_overlap=spec.engine.dual_batch_overlap,
        max_logprobs=spec.engine.max_logprobs,
        nccl_buffer_bytes=spec.engine.nccl_buffer_bytes,
        nvls=spec.engine.nvls,
        engine_version=spec.engine.version,
    )


PERCENT_RANGE: Final = (10, 99)
"""`spec.gpuMemoryUtilizationPercent`'s range (`DeepSeekV4DeploymentSpec`, ge=10, le=99)."""


def spec_words(term: Term) -> str:
    """`term` in the resource's own terms: its spec field, or a value that field takes.

    Utilization in whole percent (`spec.gpuMemoryUtilizationPercent`), rounded down for an
    upper limit and up for a lower one (a lower limit under the field's minimum of 10 is
    said as 10); lengths and counts as plain integers, so the value can be pasted into the
    spec; host KV cache in GiB as `--kv-offloading-size` takes them (`1.5`). The speculation
    setting is named as the field that turns it on.
    """
    if term.value is None:
        return SPEC_FIELDS[term.setting]
    if term.setting is Setting.KV_OFFLOADING_GIB:
        return f"{term.value:g}"  # GiB, as --kv-offloading-size takes them (1.5 stays 1.5)
    if term.setting is not Setting.GPU_MEMORY_UTILIZATION:
        return str(int(term.value))
    percent = Fraction(str(term.value)) * 100  # 0.6349 -> 63.49 exactly, not 63.4899...
    if term.bound == "most":
        return str(math.floor(percent))
    if term.bound == "least":
        return str(max(math.ceil(percent), PERCENT_RANGE[0]))
    return str(round(percent))


_SPEC_PATHS: Final[dict[str, str]] = {
    "model": "spec.model",
    "weights_format": "spec.weightsFormat",
    "kv_cache_dtype": "spec.kvCacheDtype",
    "gpu_types": "spec.gpu.types",
    "gpus_per_node": "spec.gpu.gpusPerNode",
    "max_nodes": "spec.gpu.maxNodes",
    "gpu_budget": "spec.gpu.budget",
    "tensor_parallel": "spec.parallelism.tensor",
    "data_parallel": "spec.parallelism.data",
    "pipeline_parallel": "spec.parallelism.pipeline",
    "expert_parallel": "spec.parallelism.expert",
    "max_num_seqs": "spec.maxNumSeqs",
    "max_num_batched_tokens": "spec.maxNumBatchedTokens",
    "concurrency": "spec.load.concurrency",
    "tokens_per_second": "spec.load.tokensPerSecond",
    "usd_per_gpu_hour": "spec.cost.gpuHourlyPrices",
    "cpu_offload_bytes": "spec.engine.extraArgs",
    "prefetch_offload": "spec.engine.extraArgs",
    "kv_offloading_gib": "spec.engine.extraArgs",
    "kv_offload_rank_bytes": "spec.engine.extraArgs",
    "host_kv_not_counted": "spec.engine.extraArgs",
    "eplb": "spec.engine.extraArgs",
    "redundant_experts": "spec.engine.extraArgs",
    "all2all_backend": "spec.engine.extraArgs",
    "deepep_buffer_bytes": "spec.engine.env",
    "moe_dp_chunk_tokens": "spec.engine.env",
    "max_logprobs": "spec.engine.extraArgs",
    "async_scheduling": "spec.engine.extraArgs",
    "dual_batch_overlap": "spec.engine.extraArgs",
    "nccl_buffer_bytes": "spec.engine.env",
    "nvls": "spec.engine.env",
    "engine_version": "spec.engine.version",
    "max_model_len": "spec.maxModelLen",
    "gpu_memory_utilization": "spec.gpuMemoryUtilizationPercent",
    "speculative_tokens": "spec.speculativeDecoding",
}
"""The spec field behind each `PlanRequest` field that `request_from_spec` sets from one."""

SPEC_FIELDS: Final[dict[Setting, str]] = {setting: _SPEC_PATHS[setting] for setting in Setting}
"""The spec field that sets each request setting (a `Setting`'s value is its request field)."""


def spec_path(field: str) -> str:
    """The spec field behind request field `field` (a `PlanningError.field`), else `field`."""
    return _SPEC_PATHS.get(field, field)
