"""Layout search: the best feasible layout, the runners-up, and every rejection with its reason.

For each GPU type in the request's order, every layout of up to `max_nodes` nodes is enumerated:
one node with 1, 2, 4... up to its GPUs, or several full nodes; TP divides the GPUs of a node; DP is
the rest; expert parallel on and off (EP = TP x DP). Pinned dimensions restrict the enumeration, so
a
fully pinned request evaluates one layout. Candidates are ranked by

1. GPU type: the first type in the preference list (the list is a fallback order), unless a price is
   given for every type, in which case by cost per hour of all replicas needed;
2. nodes needed, over all replicas (one-node replicas packed onto whole nodes);
3. GPUs needed (per replica, times the replicas a tokens/s target needs);
4. KV capacity per replica, tokens (DP attention multiplies it: every DP rank has its own pool);
5. expected decode throughput.
(`_rank_key` gives the reasons.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from dsv4_operator.api.v1alpha1.engine import (
    ALL2ALL_BACKENDS,
    ALL2ALL_COUNTED,
    ALL2ALL_NOT_COUNTED,
    MAX_COUNTED_LOGPROBS,
    MAX_KV_OFFLOADING_GIB,
    MAX_REDUNDANT_EXPERTS,
    kv_offloading_bound,
)
from dsv4_operator.api.v1alpha1.gpu import MAX_GPU_BUDGET
from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS
from dsv4_operator.planning.engine import PERFORMANCE_MODES, parse_version
from dsv4_operator.planning.evaluate import (
    HOST_LINK_BYTES_PER_S,
    MIN_ADVISED_BATCHED_TOKENS,
    Evaluation,
    concurrent_batches,
    evaluate,
    max_num_seqs_name,
    structural_problems,
)
from dsv4_operator.planning.findings import Code, Finding, PlanningError, Setting, Term
from dsv4_operator.planning.hardware import GpuType, get_gpu
from dsv4_operator.planning.kvcache import (
    INDEXER_ENTRY_BYTES,
    MAIN_ENTRY_BYTES,
    KvGeometry,
    kv_geometry,
)
from dsv4_operator.planning.memory import Layout
from dsv4_operator.planning.models import ModelSpec, get_model
from dsv4_operator.planning.offload import prefetch_offload, uva_host_bytes
from dsv4_operator.planning.request import PlanRequest
from dsv4_operator.planning.shm import ShmPlan, shm_bytes
from dsv4_operator.planning.weights import (
    BYTES_PER_ELEMENT,
    checkpoint_bytes,
    in_gpu_format,
    per_gpu_weight_bytes,
    repack_rule,
)

__all__ = [
    "FitAdvice",
    "Plan",
    "Rejection",
    "budget_need",
    "fit_option",
    "kv_offload_pod_bytes",
    "layout_settings_parts",
    "plan",
    "settings_option",
    "shortfall_bytes",
    "speculative_step_problem",
]

_GIB = 1 << 30
_GB = 10**9
_RUNNERS_UP = 3
_EXPLAIN_MAX_NODES = 16
"""Nodes the "what would fit" search covers at the GPU type's usual node size (16 x 8 GPUs);
smaller nodes get proportionally more, up to the request limit of 64 nodes."""
_MAX_NODES_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Rejection:
    """A candidate layout that was not chosen because it breaks a rule or does not fit.

    Attributes:
        gpu: GPU type name.
        layout: the layout.
        reasons: coded reasons.
    """

    gpu: str
    layout: Layout
    reasons: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class FitAdvice:
    """What would make an unfit request fit, as data.

    The `NO_FEASIBLE_LAYOUT` warning says it in words; the operator says it in spec fields.

    Attributes:
        offload_gib: `--cpu-offload-gb` in all (GiB of routed experts per GPU in host memory)
            that covers the shortfall; None when offload cannot.
        layout: the layout of the same GPU type that the planner picks with more nodes allowed
            and no budget (fewest nodes, then GPUs; cheapest first when priced: `_advised`);
            None when none within the search does.
        more_gpus: `layout` takes more GPUs than the closest one (else it rearranges them).
        searched: (nodes, GPUs per node) searched for `layout` when it is None.
        max_num_batched_tokens: a smaller `--max-num-batched-tokens` (tokens) at which the
            closest layout fits, when the request leaves it to the planner; None otherwise.
        settings: request settings to change, each on its own enough for the request (all its
            GPU types and limits) to plan: a `Term` with bound `most` is a value to lower the
            setting to, `least` one to raise it to (`settings_option` words it). Given when
            max-num-seqs exceeds max-num-batched-tokens, which no layout changes, and for a
            pinned max-num-batched-tokens too large for any layout of the type.
        layout_settings: settings `layout` fits only with (one `Term`, as in `settings`), when
            no setting alone nor layout alone does: a max-num-seqs above the batch, or a pinned
            batch too large for any layout, on too few GPUs (`layout` was then None, and the
            advice "more than N nodes, or a larger GPU"). Empty otherwise.
    """

    offload_gib: int | None = None
    layout: Layout | None = None
    more_gpus: bool = False
    searched: tuple[int, int] = (0, 0)
    max_num_batched_tokens: int | None = None
    settings: tuple[Term, ...] = ()
    layout_settings: tuple[Term, ...] = ()

    @property
    def layout_advised(self) -> bool:
        """Whether the layout option (`fit_option`) is advice: a layout fits, or no setting does.

        With a setting that fixes it and no layout that does, "more than N nodes" would send
        the reader to buy GPUs for a setting.
        """
        return self.layout is not None or not self.settings


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer.

    Attributes:
        model: catalog entry planned for.
        request: the request, as given.
        weights_format: checkpoint format.
        weights_format_in_gpu: format held in GPU memory on the chosen GPU.
        checkpoint_bytes: all weights in the checkpoint format, bytes.
        geometry: KV cache sizes.
        chosen: the best candidate (the closest one when nothing fits).
        fits: True when the chosen candidate serves the request.
        runners_up: the next best feasible candidates.
        rejected: every candidate that broke a rule or did not fit, with reasons.
        warnings: guards and warnings on the chosen plan.
        reasons: human explanation, one line each.
        shm: /dev/shm size for the chosen layout.
        startup_budget_seconds: first-boot time to allow (weight load + kernel warm-up), s.
        feasible_gpu_types: GPU types with at least one feasible layout, in request order.
        advice: what would make it fit, when it does not (None otherwise, or when only a lower
            gpu-memory-utilization would).
        weight_offload_host_bytes: host memory the weights of vLLM's offloaders take on one pod,
            bytes: an upper bound of the pinned copies (`--cpu-offload-gb` or the prefetch
            offloader's layers; `planning.offload`) times the pod's GPUs, 0 without. The
            renderer adds it to the pod's memory request (and limit, when set).
    """

    model: ModelSpec
    request: PlanRequest
    weights_format: str
    weights_format_in_gpu: str
    checkpoint_bytes: int
    geometry: KvGeometry
    chosen: Evaluation
    fits: bool
    runners_up: tuple[Evaluation, ...]
    rejected: tuple[Rejection, ...]
    warnings: tuple[Finding, ...]
    reasons: tuple[str, ...]
    shm: ShmPlan
    startup_budget_seconds: int
    feasible_gpu_types: tuple[str, ...] = ()
    advice: FitAdvice | None = None
    weight_offload_host_bytes: int = 0


def _validate(req: PlanRequest) -> ModelSpec:
    try:
        model = get_model(req.model)
    except KeyError as e:
        raise PlanningError("model", str(e.args[0])) from None
    if req.engine_version is not None:
        try:
            parse_version(req.engine_version)
        except ValueError:
            raise PlanningError(
                "engine_version", f"{req.engine_version!r} is not a version (e.g. 0.33.0)"
            ) from None
    if req.weights_format not in BYTES_PER_ELEMENT:
        raise PlanningError(
            "weights_format",
            f"unknown format {req.weights_format!r}: "
            f"expected one of {', '.join(BYTES_PER_ELEMENT)}",
        )
    if req.kv_cache_dtype not in MAIN_ENTRY_BYTES:
        raise PlanningError("kv_cache_dtype", f"{req.kv_cache_dtype!r}: expected fp8 or bf16")
    if req.indexer_cache_dtype not in INDEXER_ENTRY_BYTES:
        raise PlanningError(
            "indexer_cache_dtype", f"{req.indexer_cache_dtype!r}: expected fp8, mxfp4 or bf16"
        )
    if not req.gpu_types:
        raise PlanningError("gpu_types", "at least one GPU type is required")
    if req.performance_mode not in PERFORMANCE_MODES:
        raise PlanningError(
            "performance_mode",
            f"{req.performance_mode!r}: expected {', '.join(PERFORMANCE_MODES[:-1])} or "
            f"{PERFORMANCE_MODES[-1]} (vLLM's --performance-mode)",
        )
    _validate_numbers(req, model.max_position_embeddings)
    _validate_engine_options(req)
    return model


def _validate_numbers(req: PlanRequest, limit: int) -> None:
    """Range checks of every numeric request field: what the planner can evaluate.

    These bound the CLI's what-if requests. The CRD is stricter for some fields (its schema
    refuses them at `kubectl apply`): max-num-batched-tokens at least 64, GPUs per node at
    most 16, TP at most 16 and DP at most 1,024, gpu-memory-utilization 0.10 to 0.99.

    Raises:
        PlanningError: naming the field and the limit.
    """
    if req.max_model_len is not None and not 1 <= req.max_model_len <= limit:
        raise PlanningError("max_model_len", f"{req.max_model_len} is outside 1..{limit:,} tokens")
    util = req.gpu_memory_utilization
    if util is not None and not 0 < util <= 1:
        hint = f" (a fraction: {util / 100:g} for {util:g} %)" if 10 <= util <= 100 else ""
        raise PlanningError("gpu_memory_utilization", f"{util} is outside (0, 1]{hint}")
    bounded = {
        "max_nodes": (req.max_nodes, _MAX_NODES_LIMIT),
        "gpus_per_node": (req.gpus_per_node, 64),
        "speculative_tokens": (req.speculative_tokens, 4),
        "max_num_seqs": (req.max_num_seqs, 16_384),
        "concurrency": (req.concurrency, 1_000_000),
        "tokens_per_second": (req.tokens_per_second, 1_000_000_000),
        "max_num_batched_tokens": (req.max_num_batched_tokens, limit),
        "max_cudagraph_capture_size": (req.max_cudagraph_capture_size, limit),
        # the resource's own limits (spec.replicas / autoscaling.maxReplicas, spec.gpu.budget)
        "max_replicas": (req.max_replicas, MAX_REPLICAS),
        "total_gpu_budget": (req.total_gpu_budget, MAX_GPU_BUDGET),
        "gpu_budget": (req.gpu_budget, MAX_GPU_BUDGET),
    }
    for name, (value, most) in bounded.items():
        if value is not None and value > most:
            raise PlanningError(name, f"{value} exceeds the limit of {most:,}")
    positive = {
        "max_nodes": req.max_nodes,
        "gpus_per_node": req.gpus_per_node,
        "gpu_budget": req.gpu_budget,
        "tensor_parallel": req.tensor_parallel,
        "data_parallel": req.data_parallel,
        "pipeline_parallel": req.pipeline_parallel,
        "max_num_seqs": req.max_num_seqs,
        "max_num_batched_tokens": req.max_num_batched_tokens,
        "max_cudagraph_capture_size": req.max_cudagraph_capture_size,
        "concurrency": req.concurrency,
        "tokens_per_second": req.tokens_per_second,
        "max_replicas": req.max_replicas,
        "total_gpu_budget": req.total_gpu_budget,
    }
    for name, value in positive.items():
        if value is not None and not value >= 1:  # True for NaN, which passed the limits
            raise PlanningError(name, f"{value} must be at least 1")
    if req.speculative_tokens < 0:
        raise PlanningError("speculative_tokens", f"{req.speculative_tokens} must not be negative")
    if req.cpu_offload_bytes < 0:
        raise PlanningError("cpu_offload_bytes", f"{req.cpu_offload_bytes} must not be negative")
    if req.prefetch_offload is not None:
        group, per_group, step = req.prefetch_offload
        if not (1 <= per_group <= group and step >= 1):
            raise PlanningError(
                "prefetch_offload",
                f"{req.prefetch_offload}: --offload-group-size must be at least 1, "
                "--offload-num-in-group from 1 to the group size and --offload-prefetch-step "
                "at least 1",
            )
    if not 0 <= req.kv_offloading_gib <= MAX_KV_OFFLOADING_GIB:  # False for NaN too
        raise PlanningError(
            "kv_offloading_gib",
            f"{req.kv_offloading_gib} GiB must be {kv_offloading_bound(none=True)}",
        )
    if not 0 <= req.kv_offload_rank_bytes <= MAX_KV_OFFLOADING_GIB * _GIB:
        raise PlanningError(
            "kv_offload_rank_bytes",
            f"{req.kv_offload_rank_bytes:,} B must be from 0 to {MAX_KV_OFFLOADING_GIB} GiB",
        )


def _validate_engine_options(req: PlanRequest) -> None:
    """Checks of the request fields that come from `spec.engine` (extraArgs and env).

    Raises:
        PlanningError: naming the field: redundant experts out of range or without EPLB, EPLB
            without expert parallelism, an unknown all-to-all backend or a negative DeepEP
            buffer (vLLM refuses the first three at start-up), an all-to-all backend whose
            buffers the plan does not size (`ALL2ALL_NOT_COUNTED`) or a MoE DP chunk under 1.
    """
    if not 0 <= req.redundant_experts <= MAX_REDUNDANT_EXPERTS:
        raise PlanningError(
            "redundant_experts",
            f"{req.redundant_experts} is outside 0..{MAX_REDUNDANT_EXPERTS:,} (EPLB's "
            "num_redundant_experts in --eplb-config)",
        )
    if req.redundant_experts and not req.eplb:
        raise PlanningError(
            "redundant_experts",
            f"{req.redundant_experts} redundant experts need --enable-eplb (vLLM refuses "
            "num_redundant_experts without EPLB)",
        )
    if req.all2all_backend not in ALL2ALL_BACKENDS:
        raise PlanningError(
            "all2all_backend",
            f"{req.all2all_backend!r}: expected one of {', '.join(ALL2ALL_BACKENDS)}",
        )
    if (held := ALL2ALL_NOT_COUNTED.get(req.all2all_backend)) is not None:
        raise PlanningError(
            "all2all_backend",
            f"{req.all2all_backend!r}: its GPU buffers ({held}) are not counted by the plan; "
            f"use one of {', '.join(ALL2ALL_COUNTED)}",
        )
    if req.moe_dp_chunk_tokens < 1:
        raise PlanningError(
            "moe_dp_chunk_tokens",
            f"{req.moe_dp_chunk_tokens} must be at least 1 (VLLM_MOE_DP_CHUNK_SIZE, tokens one "
            "DP rank dispatches at a time)",
        )
    if not 0 <= req.max_logprobs <= MAX_COUNTED_LOGPROBS:
        raise PlanningError(
            "max_logprobs",
            f"{req.max_logprobs} is outside 0..{MAX_COUNTED_LOGPROBS:,} (--max-logprobs: the "
            "plan counts the top-N logprobs vLLM returns per sampled row; -1, no cap, lets a "
            "request ask for the whole vocabulary)",
        )
    if req.nccl_buffer_bytes < 1:
        raise PlanningError(
            "nccl_buffer_bytes",
            f"{req.nccl_buffer_bytes} must be positive (NCCL_BUFFSIZE + NCCL_LL_BUFFSIZE + "
            "NCCL_LL128_BUFFSIZE, bytes)",
        )
    if req.deepep_buffer_bytes < 0:
        raise PlanningError(
            "deepep_buffer_bytes", f"{req.deepep_buffer_bytes} must not be negative"
        )
    if req.eplb and req.expert_parallel is False:
        raise PlanningError(
            "expert_parallel",
            "off, but --enable-eplb in spec.engine.extraArgs needs expert parallelism (vLLM: "
            "'enable_expert_parallel must be True to use EPLB')",
        )


def _node_shapes(req: PlanRequest, per_node: int) -> Iterator[tuple[int, int]]:
    """(nodes, GPUs used per node): every node count, each using all or a power of two of its GPUs.

    Using part of each node keeps layouts reachable when the node's GPU count suits no layout
    (10-GPU servers: EP=10 or 20 divides no expert count), so adding nodes or GPUs per node never
    removes a layout.
    """
    locals_ = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k < per_node} | {per_node})
    for nodes in range(1, req.max_nodes + 1):
        for local in locals_:
            yield nodes, local


def _layouts(req: PlanRequest, per_node: int) -> Iterator[Layout]:
    pp = req.pipeline_parallel or 1
    eps = (req.expert_parallel,) if req.expert_parallel is not None else (True, False)
    if req.eplb:
        eps = (True,)  # vLLM refuses EPLB without expert parallelism
    for nodes, local in _node_shapes(req, per_node):
        total = nodes * local
        tps = (
            [req.tensor_parallel]
            if req.tensor_parallel
            else [t for t in range(1, local + 1) if local % t == 0]
        )
        for tp in tps:
            if total % (tp * pp):
                continue
            dp = total // (tp * pp)
            if req.data_parallel is not None and dp != req.data_parallel:
                continue
            for ep in eps:
                if not ep and tp * dp == 1 and req.expert_parallel is None:
                    continue  # EP on and off are the same layout on one GPU
                yield Layout(nodes, local, tp, dp, ep, pp)


def _all_priced(req: PlanRequest) -> bool:
    """True when every GPU type of the request has a price (prices then rank the types)."""
    priced = {k.lower() for k in req.usd_per_gpu_hour}
    return bool(priced) and all(t.lower() in priced for t in req.gpu_types)


def _type_key(req: PlanRequest, e: Evaluation, order: dict[str, int]) -> tuple[Decimal, int]:
    if _all_priced(req):
        lookup = {k.lower(): v for k, v in req.usd_per_gpu_hour.items()}
        return Decimal(lookup[e.gpu.name]) * e.total_gpus, order[e.gpu.name]
    return Decimal(order[e.gpu.name]), 0


def _rank_key(
    req: PlanRequest, e: Evaluation, order: dict[str, int]
) -> tuple[Decimal, int, int, int, int, int, Layout]:
    """Order of fitting layouts: GPU type, nodes, GPUs, KV capacity, throughput.

    The GPU type by preference, or by the price of all GPUs when every type is priced. Then
    nodes before GPUs, over all replicas (a rollout's surge does not change how a replica is
    spread: the renderer lowers the surge to the budget instead, with a `RolloutAdjusted`
    Event): a replica spread over
    nodes to save GPUs (Pro on B200: 3 nodes x 2 GPUs against 1 node x 8) leaves each node
    mostly idle and puts its all-to-alls on the network (a third of the throughput there). A
    pod takes a power of two of GPUs, so a layout on fewer nodes costs at most that rounding.
    One-node replicas smaller than a node count as packed onto whole nodes (25 one-GPU replicas
    take 4 nodes of 8), so a tokens/s target still picks few large replicas only when they
    need fewer nodes.
    """
    t = _type_key(req, e, order)
    replicas = e.replicas_for_target or 1
    if e.layout.nodes > 1:
        nodes = e.layout.nodes * replicas
    else:
        node = req.gpus_per_node or e.gpu.gpus_per_node
        nodes = -(-replicas * e.layout.gpus // node)
    return (
        t[0],
        t[1],
        nodes,
        e.total_gpus,
        -e.kv_tokens_per_replica,
        -e.tokens_per_second,
        e.layout,
    )


def _ranking_words(req: PlanRequest) -> str:
    """How `_rank_key` chose among the fitting layouts of the chosen type, in words."""
    if _all_priced(req):
        return "the cheapest (price x GPUs), then the fewest nodes in all"
    return "the fewest nodes in all, then GPUs"


def _check_prices(req: PlanRequest) -> None:
    for gpu, price in req.usd_per_gpu_hour.items():
        try:
            if Decimal(price) < 0:
                raise PlanningError("usd_per_gpu_hour", f"{gpu}: {price} is negative")
        except InvalidOperation:
            raise PlanningError("usd_per_gpu_hour", f"{gpu}: {price!r} is not a number") from None


def _search(
    req: PlanRequest, model: ModelSpec
) -> tuple[list[Evaluation], list[Rejection], list[Evaluation], dict[str, GpuType]]:
    custom = {g.name.lower(): g for g in req.custom_gpus}
    feasible: list[Evaluation] = []
    unfit: list[Evaluation] = []
    rejected: list[Rejection] = []
    gpus: dict[str, GpuType] = {}
    mtp = req.speculative_tokens > 0
    geometry = kv_geometry(model, req.kv_cache_dtype, req.indexer_cache_dtype, mtp=mtp)
    e_main = MAIN_ENTRY_BYTES[req.kv_cache_dtype]
    e_idx = INDEXER_ENTRY_BYTES[req.indexer_cache_dtype]
    for name in dict.fromkeys(t.lower() for t in req.gpu_types):
        try:
            gpu = get_gpu(name, custom)
        except KeyError as e:
            raise PlanningError("gpu_types", str(e.args[0])) from None
        gpus[gpu.name] = gpu
        per_node = req.gpus_per_node or gpu.gpus_per_node
        fmt = in_gpu_format(req.weights_format, gpu)
        seen = False
        for layout in _layouts(req, per_node):
            seen = True
            problems = structural_problems(model, layout, req, fmt, per_node, gpu)
            if problems:
                rejected.append(Rejection(gpu.name, layout, problems))
                continue
            ev = evaluate(model, gpu, layout, req, fmt, geometry, e_main, e_idx)
            (feasible if ev.fits else unfit).append(ev)
            if not ev.fits:
                rejected.append(Rejection(gpu.name, layout, ev.problems))
        if not seen:
            tp, dp = req.tensor_parallel or 1, req.data_parallel or 1
            layout = Layout(
                1, per_node, tp, dp, bool(req.expert_parallel), req.pipeline_parallel or 1
            )
            problems = structural_problems(model, layout, req, fmt, per_node, gpu) or (
                Finding(
                    Code.PINNED_LAYOUT_MISMATCH,
                    f"pinned TP={tp} x DP={dp} x PP={req.pipeline_parallel or 1} does not fill "
                    f"whole nodes of {per_node} GPUs within {req.max_nodes} node(s)",
                ),
            )
            rejected.append(Rejection(gpu.name, _spread(layout, per_node), problems))
    return feasible, rejected, unfit, gpus


def _spread(layout: Layout, per_node: int) -> Layout:
    """`layout`'s TP x DP x PP GPUs on the fewest nodes of at most `per_node` GPUs, equal shares.

    Shows a pinned layout that no node shape of the search holds with GPUs that match its sizes
    (the rejection's reasons say why it cannot run).
    """
    total = layout.tensor_parallel * layout.data_parallel * layout.pipeline_parallel
    nodes = next(n for n in range(1, total + 1) if total % n == 0 and total // n <= per_node)
    return replace(layout, nodes=nodes, gpus_per_node=total // nodes)


_FIELD_OF_CODE = {
    Code.PIPELINE_PARALLEL_UNSUPPORTED: "pipeline_parallel",
    Code.TP_EXCEEDS_NODE: "tensor_parallel",
    Code.TP_SPANS_NODES: "tensor_parallel",
    Code.TP_NOT_DIVIDING_HEADS: "tensor_parallel",
    Code.TP_NOT_DIVIDING_OUTPUT_GROUPS: "tensor_parallel",
    Code.TP_SPLITS_QUANT_BLOCK: "tensor_parallel",
    Code.EP_NOT_DIVIDING_EXPERTS: "expert_parallel",
    Code.EXPERT_SPLIT_PADDED: "expert_parallel",
    Code.EXPERT_SPLIT_UNEVEN: "tensor_parallel",  # the TP x DP split, as the block rule
    Code.GPU_BUDGET_EXCEEDED: "gpu_budget",
    Code.PINNED_LAYOUT_MISMATCH: "data_parallel",
    Code.ASYNC_SCHEDULING_REFUSED: "async_scheduling",
}


_PINNED_SIZES = ("data_parallel", "tensor_parallel", "pipeline_parallel")
"""Request fields that pin parallel sizes, the likeliest cause first when several are pinned."""


def _no_layout_error(req: PlanRequest, rejected: list[Rejection]) -> PlanningError:
    """The error when every candidate broke a structural rule, naming the field most at fault."""
    codes = [f.code for r in rejected for f in r.reasons]
    common = [
        c for c in dict.fromkeys(codes) if all(c in {f.code for f in r.reasons} for r in rejected)
    ]
    focus = common or list(dict.fromkeys(codes))
    field = _FIELD_OF_CODE.get(focus[0], "layout")
    if field in (*_PINNED_SIZES, "expert_parallel") and getattr(req, field) is None:
        # The rule is about a size the search chose; the user's pinned size is the cause (DP=3
        # makes EP=3: the error names --data-parallel, not an option never given).
        field = next((f for f in _PINNED_SIZES if getattr(req, f) is not None), field)
    detail = "; ".join(
        dict.fromkeys(f.message for r in rejected for f in r.reasons if f.code in focus[:1])
    )
    return PlanningError(field, f"no layout can be evaluated: {detail}")


def shortfall_bytes(e: Evaluation) -> int:
    """Bytes per GPU missing for the weights, activations and one request.

    The request is `shortfall_tokens` long.
    """
    need = e.memory.non_kv_bytes + e.request_bytes - e.memory.budget_bytes
    return max(need, 0)


def shortfall_tokens(req: PlanRequest, e: Evaluation) -> int:
    """Length in tokens of the one request `shortfall_bytes` counts.

    That is max-model-len, or the engine's smallest automatic max-model-len when none fits
    (max-model-len 0).
    """
    return e.max_model_len or req.engine.min_auto_max_model_len


_OFFLOAD_TRIES = 4
"""Whole GiB above the estimate `_offload_that_fits` tries before it gives up on offload."""


def _pinned_to(req: PlanRequest, gpu: GpuType, layout: Layout) -> PlanRequest:
    """`req` restricted to one GPU type and one layout (nodes, GPUs per node, TP, DP, EP, PP)."""
    return replace(
        req,
        gpu_types=(gpu.name,),
        gpus_per_node=layout.gpus_per_node,
        max_nodes=layout.nodes,
        tensor_parallel=layout.tensor_parallel,
        data_parallel=layout.data_parallel,
        pipeline_parallel=layout.pipeline_parallel,
        expert_parallel=layout.expert_parallel,
    )


def _offload_that_fits(req: PlanRequest, model: ModelSpec, closest: Evaluation) -> int | None:
    """`--cpu-offload-gb` in all (GiB per GPU) at which `closest`'s layout fits, or None.

    Estimated for the concurrency target per DP rank (one request without one), then checked by
    evaluating the layout with that offload, and up to `_OFFLOAD_TRIES` GiB more (the activation
    and CUDA-graph terms follow max-num-seqs, a tokens/s target the slower decode): advice that
    does not fit when followed is not given. None when offloading all routed experts cannot.
    """
    mem = closest.memory
    experts = mem.weights.expert_bytes + req.cpu_offload_bytes  # on the GPU without offload
    dp = closest.layout.data_parallel
    requests = -(-req.concurrency // dp) if req.concurrency else 1
    need = mem.non_kv_bytes + requests * closest.request_bytes - mem.budget_bytes
    if need <= 0 or need > mem.weights.expert_bytes:
        return None
    first = -(-(need + req.cpu_offload_bytes) // _GIB)
    pinned = _pinned_to(req, closest.gpu, closest.layout)
    for gib in range(first, min(first + _OFFLOAD_TRIES, -(-experts // _GIB)) + 1):
        fitting, _, _, _ = _search(replace(pinned, cpu_offload_bytes=gib * _GIB), model)
        if fitting:
            return gib
    return None


def _batch_that_fits(req: PlanRequest, model: ModelSpec, closest: Evaluation) -> int | None:
    """The largest `--max-num-batched-tokens` at which `closest`'s layout fits, or None.

    Halves the engine's default (the activation peak, prefill gather workspace and admission
    state all grow with it) down to `MIN_ADVISED_BATCHED_TOKENS`; None when the request pins
    the batch or no such value fits. vLLM's default grows with device memory (8,192 tokens from
    70 GiB), which the plan's own flag overrides. With MTP a value below one decode step of the
    plan's sequences (max-num-seqs x (1 + k), `speculative_step_problem`) is not advised:
    vLLM would start but advance only part of the concurrency target each step, and a smaller
    value only cuts deeper.
    """
    if req.max_num_batched_tokens is not None:
        return None
    pinned = _pinned_to(req, closest.gpu, closest.layout)
    return _halved_batch_that_fits(pinned, model, closest.max_num_batched_tokens // 2)


def _halved_batch_that_fits(base: PlanRequest, model: ModelSpec, batch: int) -> int | None:
    """The first `--max-num-batched-tokens` of `batch`, `batch` // 2, ... at which `base` plans.

    Down to `MIN_ADVISED_BATCHED_TOKENS`; None when none does, or (with MTP) when a layout that
    fits at it runs a decode step above it (`speculative_step_problem`).
    """
    while batch >= MIN_ADVISED_BATCHED_TOKENS:
        smaller = replace(base, max_num_batched_tokens=batch)
        fitting, _, _, _ = _search(smaller, model)
        if fitting:
            return None if any(speculative_step_problem(smaller, e) for e in fitting) else batch
        batch //= 2
    return None


def _settings_that_fit(req: PlanRequest, model: ModelSpec, closest: Evaluation) -> tuple[Term, ...]:
    """Setting values that make the request plan when `closest` runs more sequences than tokens.

    vLLM refuses a max-num-seqs above max-num-batched-tokens (`SchedulerConfig.
    verify_max_model_len`, vllm/config/scheduler.py), whatever the layout: more GPUs help only
    a max-num-seqs derived from a concurrency target (more DP ranks), so the advice is the
    settings. A pinned max-num-seqs is lowered to max-num-batched-tokens, halved until the
    request fits (fewer sequences need less activation, CUDA-graph and KV memory; one layout
    search per halving, at most 20 for the model's 1,048,576-token limit on the batch);
    max-num-batched-tokens is raised to max-num-seqs. With `k` MTP draft tokens a decode step
    of max-num-seqs sequences takes max-num-seqs x (1 + k) tokens, so the values are those at
    which a step fits (`speculative_step_problem`, the rule `_batch_that_fits` keeps):
    max-num-seqs from max-num-batched-tokens // (1 + k), and max-num-batched-tokens
    max-num-seqs x (1 + k), or max-num-seqs itself when only that fits (vLLM starts, with the
    warning). Each value is kept only when the request with it, otherwise as given, plans:
    advice that does not fit when followed is not given.
    """
    if Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS not in {f.code for f in closest.problems}:
        return ()
    step = 1 + req.speculative_tokens
    out: list[Term] = []
    if req.max_num_seqs is not None:
        seqs = max(closest.max_num_batched_tokens // step, 1)
        while seqs >= 1:
            fitting, _, _, _ = _search(replace(req, max_num_seqs=seqs), model)
            if fitting:
                out.append(Term(Setting.MAX_NUM_SEQS, seqs, "most"))
                break
            seqs //= 2
    for batch in dict.fromkeys((closest.max_num_seqs * step, closest.max_num_seqs)):
        fitting, _, _, _ = _search(replace(req, max_num_batched_tokens=batch), model)
        if fitting:
            out.append(Term(Setting.MAX_NUM_BATCHED_TOKENS, batch, "least"))
            break
    return tuple(out)


def _pinned_batch_that_fits(req: PlanRequest, model: ModelSpec) -> int | None:
    """The largest halving of a pinned `--max-num-batched-tokens` at which the request plans.

    For a request that no layout of the closest GPU type fits, even with more nodes: the
    activation peak, prefill gather workspace and admission state grow with the batch, so a
    batch pinned too large is a setting to lower, not GPUs to buy. Halves down to
    `MIN_ADVISED_BATCHED_TOKENS`, checking the request as given (all its GPU types and limits);
    None when the batch is not pinned, or no such value plans, or (with MTP) a fitting value
    is below one decode step of the plan's sequences (`speculative_step_problem`), as in
    `_batch_that_fits`.
    """
    if req.max_num_batched_tokens is None:
        return None
    return _halved_batch_that_fits(req, model, req.max_num_batched_tokens // 2)


def _advised(wider: PlanRequest, fitting: list[Evaluation]) -> Evaluation | None:
    """The layout of `fitting` that the planner itself would pick for `wider`, or None.

    `wider` is one GPU type with more nodes allowed (`_explain_no_fit`): ranked as a fitting
    plan is (`_rank_key`: fewest nodes, then GPUs; the cheapest first when the type is priced),
    so a request that follows the advice (`--nodes` / `spec.gpu.maxNodes` set to the advised
    layout's nodes) plans that very layout. The fewest GPUs alone advised 3x4 for Pro NVFP4 on
    MI300X, which then planned 2x8, on fewer nodes than the advice asked for (h22).
    """
    if not fitting:
        return None
    order = {g: i for i, g in enumerate(wider.gpu_types)}
    return min(fitting, key=lambda e: _rank_key(wider, e, order))


def _layout_with_setting(
    req: PlanRequest, model: ModelSpec, closest: Evaluation, wider: PlanRequest
) -> tuple[Evaluation | None, tuple[Term, ...]]:
    """The smallest `wider` layout that fits with one setting changed, and that setting.

    For a request that neither a setting alone (on its own limits) nor a layout alone (the
    wider search, setting as given) fits: a max-num-seqs above max-num-batched-tokens, which
    vLLM refuses on every layout, or a pinned batch too large for every layout, on too few
    GPUs. The setting values are those `_settings_that_fit` and `_pinned_batch_that_fits`
    find for `wider` (the closest GPU type, more nodes, no budget, layout unpinned), so the
    layout and the setting together plan. (None, ()) when none does.
    """
    candidates = _settings_that_fit(wider, model, closest)
    if not candidates and (lower := _pinned_batch_that_fits(wider, model)):
        candidates = (Term(Setting.MAX_NUM_BATCHED_TOKENS, lower, "most"),)
    for term in candidates:
        value = int(term.value or 0)  # both are counts (sequences, tokens)
        if term.setting is Setting.MAX_NUM_SEQS:
            changed = replace(wider, max_num_seqs=value)
        else:
            changed = replace(wider, max_num_batched_tokens=value)
        fitting, _, _, _ = _search(changed, model)
        if fitting:
            return _advised(changed, fitting), (term,)
    return None, ()


def layout_settings_parts(advice: FitAdvice) -> tuple[str | Term, ...]:
    """`advice.layout_settings` as the start of its layout option: "lower X to N with "."""
    return tuple(p for t in advice.layout_settings for p in (*settings_option(t), " with "))


def settings_option(term: Term) -> tuple[str | Term, ...]:
    """One `FitAdvice.settings` value as sentence parts (`Finding.said`): "lower X to N"."""
    verb = "lower " if term.bound == "most" else "raise "
    return (verb, Term(term.setting), " to ", term)


def offload_sizing(concurrency: int | None) -> str:
    """What the advised CPU offload is sized for, when more than the one request of the shortfall.

    `_offload_that_fits` sizes it for the concurrency target, while the shortfall the message
    states is for one request: without this note 29 GiB of advice next to a 1.4 GB shortfall
    read as an error (h12).
    """
    return f"; sized for {concurrency} concurrent requests" if (concurrency or 0) > 1 else ""


def _explain_no_fit(
    req: PlanRequest, model: ModelSpec, closest: Evaluation
) -> tuple[Finding, FitAdvice | None]:
    short = shortfall_bytes(closest)
    gpus = closest.layout.gpus
    head: list[str | Term] = [
        f"{model.name} ({req.weights_format}) does not fit on {gpus}x {closest.gpu.name} "
        f"({closest.layout.describe()})"
    ]
    if short > 0:
        head.append(
            f": short by {short:,} B per GPU ({short * gpus:,} B in all) for the weights, "
            f"activations and one {shortfall_tokens(req, closest):,}-token request"
        )
    else:
        head += [": ", *closest.problems[0].parts()]
    startup = next((f for f in closest.problems if f.code is Code.STARTUP_MEMORY_RESERVE), None)
    if startup is not None:
        # More or other GPUs of this type do not help: the utilization itself must come down.
        if short > 0 or closest.problems[0] is not startup:
            head += ["; and ", *startup.parts()]
        return Finding.said(Code.NO_FEASIBLE_LAYOUT, *head), None
    if short <= 0 and {f.code for f in closest.problems} == {Code.SAMPLER_PEAK_OUTSIDE_BUDGET}:
        # Its own advice (fewer sequences or a lower utilization) is all: more GPUs add none.
        return Finding.said(Code.NO_FEASIBLE_LAYOUT, *head), None
    options: list[tuple[str | Term, ...]] = []
    settings = _settings_that_fit(req, model, closest)
    options.extend(settings_option(t) for t in settings)
    offload = _offload_that_fits(req, model, closest) if short > 0 else None
    if offload is not None:
        options.append(
            (
                f"CPU offload of {offload} GiB per GPU (--cpu-offload-gb {offload}; slow"
                f"{offload_sizing(req.concurrency)})",
            )
        )
    batch = _batch_that_fits(req, model, closest)
    if batch is not None:
        default = closest.max_num_batched_tokens
        options.append(
            (
                f"--max-num-batched-tokens {batch} on this layout (default {default:,}; "
                "slower prefill)",
            )
        )
    # The user's node shape when given (more such nodes), else the GPU type's usual one; as many
    # GPUs in all as 16 usual nodes hold.
    per_node = req.gpus_per_node or closest.gpu.gpus_per_node
    max_nodes = min(
        _MAX_NODES_LIMIT,
        max(_EXPLAIN_MAX_NODES, -(-_EXPLAIN_MAX_NODES * closest.gpu.gpus_per_node // per_node)),
    )
    wider = replace(
        req,
        gpu_types=(closest.gpu.name,),
        gpus_per_node=per_node,
        max_nodes=max_nodes,
        gpu_budget=None,
        tensor_parallel=None,
        data_parallel=None,
        pipeline_parallel=None,
        expert_parallel=None,
    )
    more, _, _, _ = _search(wider, model)
    best = _advised(wider, more)
    if best is None and not settings and (lower := _pinned_batch_that_fits(req, model)):
        settings = (Term(Setting.MAX_NUM_BATCHED_TOKENS, lower, "most"),)
        options.insert(0, settings_option(settings[0]))
    layout_settings: tuple[Term, ...] = ()
    if best is None and not settings:
        # A setting no layout fits as given (vLLM refuses it, or its batch is too large for
        # any) on too few GPUs: the layout search with the setting fixed (h19).
        best, layout_settings = _layout_with_setting(req, model, closest, wider)
    advice = FitAdvice(
        offload_gib=offload,
        layout=None if best is None else best.layout,
        more_gpus=best is not None and best.layout.gpus > gpus,
        searched=(max_nodes, per_node),
        max_num_batched_tokens=batch,
        settings=settings,
        layout_settings=layout_settings,
    )
    if advice.layout_advised:
        options.append(
            (*layout_settings_parts(advice), fit_option(advice, _budget_hint(req, advice)))
        )
    joined: list[str | Term] = []
    for i, option in enumerate(options):
        joined += [" or "] * (i > 0) + list(option)
    return Finding.said(Code.NO_FEASIBLE_LAYOUT, *head, "; what would fit: ", *joined), advice


def _budget_hint(req: PlanRequest, advice: FitAdvice) -> str:
    """`fit_option`'s hint when the request's GPU budget bars the advised layout, else "".

    The advice is searched without the budget (`_explain_no_fit`), so following it with
    `--nodes` / `spec.gpu.maxNodes` alone would plan the same layout again; the budget comes
    from a FILE's `spec.gpu.budget` (its share per replica), which `dsv4 plan` has no flag for.
    """
    need = None if advice.layout is None else budget_need(req, advice.layout)
    return "" if need is None else f"; {need}"


def budget_need(req: PlanRequest, layout: Layout) -> str | None:
    """What the GPU budget must allow for `layout`, or None when `req.gpu_budget` allows it.

    `spec.gpu.budget allowing N GPUs per replica` (`req.gpu_budget` is the budget's share per
    replica): the words `dsv4 plan`'s advice and the operator's `InsufficientCapacity`
    message both use.
    """
    if req.gpu_budget is None or layout.gpus <= req.gpu_budget:
        return None
    return f"spec.gpu.budget allowing {layout.gpus} GPUs per replica"


def fit_option(advice: FitAdvice, hint: str = "") -> str:
    """The layout option of `advice` in words, `hint` (spec fields) after the layout."""
    if advice.layout is None:
        nodes, per_node = advice.searched
        return f"more than {nodes} nodes of {per_node} GPUs of this type, or a larger GPU"
    described = f"{advice.layout.describe()}{hint}"
    if not advice.more_gpus:
        return f"another layout of these GPUs ({described})"
    return f"at least {advice.layout.gpus} GPUs of this type ({described})"


def _guards(req: PlanRequest, model: ModelSpec, chosen: Evaluation, fmt: str) -> list[Finding]:
    eng, out = req.engine, []
    if req.engine_version and parse_version(req.engine_version) < parse_version(eng.min_version):
        out.append(
            Finding(
                Code.ENGINE_TOO_OLD,
                f"{eng.name} {req.engine_version} is older than {eng.min_version}, the first "
                "release with DeepseekV4ForCausalLM: it fails with "
                "'Unrecognized model architecture'",
            )
        )
    floor = parse_version(eng.min_transformers_exclusive)
    if req.transformers_version and parse_version(req.transformers_version) <= floor:
        out.append(
            Finding(
                Code.TRANSFORMERS_TOO_OLD,
                f"transformers {req.transformers_version} must be newer than "
                f"{eng.min_transformers_exclusive}, else 'Unrecognized model architecture'",
            )
        )
    if req.speculative_tokens > 0 and chosen.max_model_len > eng.mtp_hang_max_model_len:
        length = Setting.MAX_MODEL_LEN
        out.append(
            Finding.said(
                Code.MTP_LONG_CONTEXT_HANG,
                "MTP speculative decoding with ",
                Term(length),
                " ",
                Term(length, chosen.max_model_len),
                f" > {eng.mtp_hang_max_model_len:,} hangs on a published engine image: disable ",
                Term(Setting.SPECULATIVE_TOKENS),
                " or cap ",
                Term(length),
                " at ",
                Term(length, eng.mtp_safe_max_model_len, "most"),
            )
        )
    if (step := speculative_step_problem(req, chosen)) is not None:
        out.append(step)
    if (lowered := _batch_lowered_finding(req, chosen)) is not None:
        out.append(lowered)
    if req.speculative_tokens > 0 and req.max_cudagraph_capture_size is not None:
        # vLLM appends the uniform-decode sizes only to the list it infers without a cap
        # (`VllmConfig._set_cudagraph_sizes`, vllm/config/vllm.py; vLLM issue #54933).
        out.append(
            Finding(
                Code.CUDAGRAPH_CAP_WITH_SPECULATION,
                f"an explicit --max-cudagraph-capture-size {req.max_cudagraph_capture_size:,} "
                "with MTP speculation: vLLM then captures only its stepped sizes up to it, not "
                f"the uniform-decode sizes n x (1 + {req.speculative_tokens}) that verify steps "
                "use, so those steps can run without CUDA graphs (vLLM issue #54933: 25 against "
                "133 tokens/s); without it the plan pins vLLM's default capture list, decode "
                "sizes included",
            )
        )
    if not req.cuda_graphs:
        # `VllmConfig.__post_init__` / `_set_cudagraph_sizes` (vllm/config/vllm.py at 000fc94b)
        out.append(
            Finding(
                Code.CUDA_GRAPHS_OFF,
                "extraArgs turn CUDA graphs off (--enforce-eager, cudagraph_mode NONE in "
                "--compilation-config, or --optimization-level=0): vLLM captures none, so the "
                "plan counts no graph memory, and every decode step runs eagerly (slower)",
            )
        )
    if req.nvls and chosen.layout.gpus_per_node > 2:
        # NCCL uses NVLS only for communicators of more than 2 GPUs (api NVLS_ENV).
        out.append(
            Finding(
                Code.NVLS_NOT_COUNTED,
                "NCCL_NVLS_ENABLE in the engine's env lets NCCL use NVLink SHARP on NVSwitch "
                "nodes, whose multicast buffers the plan does not count (its NCCL memory was "
                "measured without NVLS): vLLM issue #9699 saw 288 MiB per rank per "
                "communicator and a KV cache a fifth smaller on 8 x H200, so the KV pool, "
                "concurrency and start-up headroom can fall short of the plan; leave it unset "
                "(the operator then sets it to 0)",
            )
        )
    if chosen.layout.gpus_per_node > chosen.gpu.gpus_per_node:
        out.append(
            Finding.said(
                Code.GPUS_PER_NODE_ABOVE_TYPE,
                f"{chosen.gpu.name} nodes usually hold {chosen.gpu.gpus_per_node} GPUs, but "
                f"each pod asks for {chosen.layout.gpus_per_node}: pods stay Pending unless "
                "your nodes have that many (leave ",
                Term(Setting.GPUS_PER_NODE),
                " unset for the type's node size)",
            )
        )
    rule = repack_rule(req.weights_format, chosen.gpu)
    if rule:
        out.append(Finding(Code.WEIGHTS_REPACKED, rule))
    if fmt == "official" and not chosen.gpu.fp4 and chosen.gpu.vendor == "amd":
        out.append(
            Finding(
                Code.FP4_WEIGHT_ONLY,
                f"{chosen.gpu.name} ({chosen.gpu.arch}) has no FP4 matrix cores: vLLM keeps the "
                "MXFP4 experts packed and dequantises them in its MoE kernels: memory as "
                "planned, throughput lower",
            )
        )
    if not chosen.gpu.fp8 and fmt in {"official", "nvfp4", "fp8"}:
        out.append(
            Finding(
                Code.FP8_WEIGHT_ONLY,
                f"{chosen.gpu.name} ({chosen.gpu.arch}) has no FP8 tensor cores: FP8 weights run "
                "as weight-only FP8 (Marlin w8a16): memory as planned, throughput lower",
            )
        )
    return out


def _batch_lowered_finding(req: PlanRequest, e: Evaluation) -> Finding | None:
    """`BATCH_LOWERED_FOR_CONTEXT`: the smaller batch the plan chose for `max-model-len auto`.

    Says vLLM's default batch for the GPU and the context it would leave, the chosen batch and
    its context, why (each request's window and compressor-state blocks for the batches in
    flight, `evaluate._batch_for_context`) and the trade-off (fewer prompt tokens per step).
    The batch and the lengths are terms, so a script reads them and the front ends name the
    flag or spec field to pin. None when the plan kept vLLM's default.
    """
    if e.batch_lowered_from is None:
        return None
    default, short = e.batch_lowered_from
    batch, length = Setting.MAX_NUM_BATCHED_TOKENS, Setting.MAX_MODEL_LEN
    batches = concurrent_batches(req, e.gpu, e.layout)
    return Finding.said(
        Code.BATCH_LOWERED_FOR_CONTEXT,
        Term(batch),
        " ",
        Term(batch, e.max_num_batched_tokens),
        f" instead of vLLM's default {default:,} for {e.gpu.name}: each request reserves "
        f"window and compressor-state KV blocks for the {batches} batch"
        f"{'es' if batches != 1 else ''} of ",
        Term(batch),
        " in flight, which at ",
        Term(batch, default),
        " left ",
        Term(length),
        f" auto {short:,} tokens; at ",
        Term(batch, e.max_num_batched_tokens),
        " it is ",
        Term(length, e.max_model_len),
        " (fewer prompt tokens per engine step: slower prefill of long prompts; set ",
        Term(batch),
        " to choose)",
    )


def _batch_fits_fewer_gpus(
    req: PlanRequest, model: ModelSpec, chosen: Evaluation
) -> Finding | None:
    """`BATCH_FITS_FEWER_GPUS`: a smaller batch at which a fixed max-model-len fits on fewer GPUs.

    For a fitting plan whose request fixes max-model-len and leaves the batch to vLLM's default,
    when each request's window and compressor-state blocks for the batches in flight
    (`KvGeometry.admission_state_bytes`) outweigh its compressed blocks: the default batch is
    halved down to `MIN_ADVISED_BATCHED_TOKENS` (and not below one decode step of the chosen
    sequences, max-num-seqs x (1 + k)) and the request planned again at each, all its GPU types
    and limits; the first (largest) batch whose best layout the planner ranks ahead of the
    chosen one by GPU type or price, nodes or GPUs (`_rank_key`) is named, with that layout and
    the trade-off (fewer prompt tokens per engine step). Advice, not a choice: the plan keeps
    vLLM's default batch, as the request leaves it. None otherwise.
    """
    if req.max_num_batched_tokens is not None or req.max_model_len is None:
        return None
    length = chosen.max_model_len
    geometry = kv_geometry(
        model, req.kv_cache_dtype, req.indexer_cache_dtype, mtp=req.speculative_tokens > 0
    )
    batches = concurrent_batches(req, chosen.gpu, chosen.layout)
    default = chosen.max_num_batched_tokens
    state = geometry.admission_state_bytes(
        default, model.sliding_window, length, concurrent_batches=batches
    )
    if state <= geometry.growth_bytes(length):
        return None
    order = {g: i for i, g in enumerate(dict.fromkeys(t.lower() for t in req.gpu_types))}
    now = _rank_key(req, chosen, order)[:4]
    floor = max(MIN_ADVISED_BATCHED_TOKENS, chosen.max_num_seqs * (1 + req.speculative_tokens))
    batch = default // 2
    while batch >= floor:
        smaller = replace(req, max_num_batched_tokens=batch)
        fitting, _, _, _ = _search(smaller, model)
        fitting = [e for e in fitting if speculative_step_problem(smaller, e) is None]
        if fitting:
            best = min(fitting, key=lambda e: _rank_key(smaller, e, order))
            if _rank_key(smaller, best, order)[:4] < now:
                return _fewer_gpus_finding(chosen, best, batch, batches)
        batch //= 2
    return None


def _replicas_of(e: Evaluation) -> str:
    """`e`'s layout, with the replicas a tokens/s target needs when more than one."""
    replicas = e.replicas_for_target or 1
    return e.layout.describe() if replicas == 1 else f"{replicas} x {e.layout.describe()}"


def _fewer_gpus_finding(chosen: Evaluation, best: Evaluation, batch: int, batches: int) -> Finding:
    """`BATCH_FITS_FEWER_GPUS` in words: the batch, the layout it fits, the trade-off."""
    mnbt = Setting.MAX_NUM_BATCHED_TOKENS
    default = chosen.max_num_batched_tokens
    return Finding.said(
        Code.BATCH_FITS_FEWER_GPUS,
        "each ",
        Term(Setting.MAX_MODEL_LEN),
        f" request reserves window and compressor-state KV blocks for the {batches} batch"
        f"{'es' if batches != 1 else ''} of ",
        Term(mnbt),
        " in flight, more than its own context's blocks at vLLM's default ",
        Term(mnbt, default),
        f" for {chosen.gpu.name}; at ",
        Term(mnbt, batch, "most"),
        f" it fits on {best.total_gpus} {best.gpu.name} GPUs ({_replicas_of(best)}) "
        f"instead of {chosen.total_gpus} ({_replicas_of(chosen)}): fewer prompt tokens per "
        "engine step (slower prefill of long prompts); set ",
        Term(mnbt),
        " to take it",
    )


def speculative_step_problem(req: PlanRequest, e: Evaluation) -> Finding | None:
    """Why a decode step of `e` does not fit its `--max-num-batched-tokens`, or None.

    With `k` MTP draft tokens a decoding sequence takes 1 + k tokens a step, so max-num-seqs
    of them need max-num-seqs x (1 + k). vLLM starts with less (it refuses only a budget below
    max-num-seqs, `SchedulerConfig.verify_max_model_len` in vllm/config/scheduler.py, and below
    `max_num_new_slots_for_drafting`, which is 0 for method `mtp`, vllm/config/speculative.py
    and `VllmConfig._set_max_num_scheduled_tokens` in vllm/config/vllm.py) but its scheduler
    then gives the running requests what is left of the budget in order, trims drafts and
    leaves the rest for the next step (vllm/v1/core/sched/scheduler.py, `Scheduler.schedule`):
    a warning, not a refusal.
    """
    k = req.speculative_tokens
    need = e.max_num_seqs * (1 + k)
    budget = e.max_num_batched_tokens
    if k <= 0 or need <= budget:
        return None
    seqs, mnbt = Setting.MAX_NUM_SEQS, Setting.MAX_NUM_BATCHED_TOKENS
    lower: tuple[str | Term, ...] = (
        (Term(seqs), " to ", Term(seqs, budget // (1 + k), "most"))
        if req.max_num_seqs is not None
        # the target is a total over DP ranks and replicas: say the per-rank bound, not a value
        else (
            Term(Setting.CONCURRENCY),
            f" until each DP rank holds at most {budget // (1 + k):,} sequences",
        )
    )
    # Unpinned, the value is vLLM's (the target per DP rank), written as the CLI writes counts.
    value = Term(seqs, e.max_num_seqs) if req.max_num_seqs is not None else f"{e.max_num_seqs:,}"
    return Finding.said(
        Code.SPECULATIVE_STEP_EXCEEDS_BATCHED_TOKENS,
        max_num_seqs_name(req),
        " ",
        value,
        f" x (1 + {k} MTP draft token{'s' if k > 1 else ''}) = {need:,} token slots per decode "
        "step exceed ",
        Term(mnbt),
        " ",
        Term(mnbt, budget),
        f": vLLM starts, but schedules at most {budget:,} tokens a step, so only "
        f"{budget // (1 + k):,} sequences per DP rank advance with all their drafts and the "
        "rest wait or lose drafts; raise ",
        Term(mnbt),
        " to at least ",
        Term(mnbt, need, "least"),
        " or lower ",
        *lower,
    )


def _startup_seconds(req: PlanRequest, chosen: Evaluation, checkpoint: int) -> int:
    """First-boot budget, s.

    Kernel warm-up, reading the node's weight shards, and with a Hub source the download of
    the whole checkpoint on every node (vLLM downloads all of it).
    """
    per_node = chosen.memory.weights.total_bytes * chosen.layout.gpus_per_node
    load = -(-per_node // req.engine.load_bytes_per_s)
    warmup = (
        req.engine.warmup_seconds if chosen.layout.gpus >= 8 else req.engine.warmup_seconds // 2
    )
    download = -(-checkpoint // req.engine.download_bytes_per_s) if req.weights_download else 0
    return warmup + load + download


def _auto_length_reason(req: PlanRequest, chosen: Evaluation) -> str:
    if chosen.max_model_len == 0:
        return "max-model-len auto: no request length fits the pool (the warnings say what would)"
    return (
        f"max-model-len auto: {chosen.max_model_len:,} tokens, the longest request whose KV "
        f"blocks and admission state fit the pool (model limit "
        f"{get_model(req.model).max_position_embeddings:,})"
    )


def _reasons(
    req: PlanRequest, plan_fits: bool, chosen: Evaluation, ranked: list[Evaluation], fmt: str
) -> list[str]:
    lay, mem = chosen.layout, chosen.memory
    w = mem.weights
    lines = []
    if plan_fits:
        types = list(dict.fromkeys(t.lower() for t in req.gpu_types))
        if _all_priced(req):
            best = {e.gpu.name: e for e in reversed(ranked)}  # each type's best-ranked layout
            others = [
                f"{t}: {best[t].total_gpus} GPUs for ${_type_key(req, best[t], {t: 0})[0]:,}/h"
                if t in best
                else f"{t} did not fit"
                for t in types
                if t != chosen.gpu.name
            ]
            cost = _type_key(req, chosen, {chosen.gpu.name: 0})[0]
            why = f"cheapest feasible type at the given prices (${cost:,}/h)"
            lines.append(
                f"GPU {chosen.gpu.name}: {why}" + (f"; {', '.join(others)}" if others else "")
            )
        else:
            skipped = types[: types.index(chosen.gpu.name)] if chosen.gpu.name in types else []
            why = "first type in the preference list with a feasible layout"
            lines.append(
                f"GPU {chosen.gpu.name}: {why}"
                + (f" ({', '.join(skipped)} did not fit)" if skipped else "")
            )
        if chosen.replicas_for_target:
            total = f"{chosen.replicas_for_target} replicas x {lay.gpus} = {chosen.total_gpus}"
            held = f"the {req.tokens_per_second:,} tokens/s target ({total} GPUs)"
        elif req.concurrency:
            held = f"{req.concurrency} concurrent requests"
        else:
            held = "a max-model-len request"
        lines.append(
            f"layout {lay.describe()}: {_ranking_words(req)} that hold the weights and "
            f"{held}; "
            "among equal GPU counts the most KV capacity, then the most expected throughput"
        )
    if req.max_model_len is None:
        lines.append(_auto_length_reason(req, chosen))
    # Routed experts are spread over all TP x DP ranks either way (weights.per_gpu_weight_bytes).
    ranks = lay.tensor_parallel * lay.data_parallel
    if lay.expert_parallel:
        split = f"/{ranks} EP"
    elif lay.data_parallel == 1:
        split = f"/{ranks} TP"
    else:
        split = f"/{ranks}: flattened TP{lay.tensor_parallel} x DP{lay.data_parallel}"
    lines.append(
        f"weights per GPU {w.total_bytes / _GB:,.1f} GB ({fmt} in GPU memory): experts "
        f"{w.expert_bytes / _GB:,.1f} GB ({split}), TP-sharded {w.sharded_bytes / _GB:,.2f} GB "
        f"(/{lay.tensor_parallel}), replicated {w.replicated_bytes / _GB:,.2f} GB"
        + (
            f", EPLB transfer buffer {w.eplb_buffer_bytes / _GB:,.2f} GB (one MoE layer's "
            f"experts of this GPU; {req.redundant_experts} redundant experts per layer included "
            "above)"
            if w.eplb_buffer_bytes
            else ""
        )
    )
    lines.append(
        f"KV pool {max(mem.kv_cache_bytes, 0) / _GB:,.2f} GB per GPU = budget "
        f"{mem.budget_bytes / _GB:,.2f} GB - weights - activations "
        f"{mem.activation_bytes / _GB:,.2f} GB - CUDA graphs "
        f"{mem.cuda_graph_bytes / _GB:,.2f} GB - overhead "
        f"{mem.overhead_bytes / _GB:,.2f} GB"
    )
    if lay.tensor_parallel > 1:
        lines.append(
            f"one KV head: each of the {lay.tensor_parallel} TP ranks holds the full KV of its "
            "requests; each of the "
            f"{lay.data_parallel} DP ranks has its own pool"
        )
    for other in ranked[1 : 1 + _RUNNERS_UP]:
        lines.append(
            f"runner-up {other.gpu.name} {other.layout.describe()}: {other.layout.gpus} GPUs, "
            f"{other.kv_tokens_per_replica:,} KV tokens, ~{other.tokens_per_second:,} tokens/s"
        )
    return lines


def kv_offload_pod_bytes(req: PlanRequest, layout: Layout) -> int:
    """Host KV cache of one pod of `layout`, bytes: per engine x the engines on the pod.

    Per engine (one DP rank and its TP ranks) vLLM 0.33.0 takes `--kv-offloading-size` GiB x
    2^30 as `cpu_bytes_to_use` (`VllmConfig._post_init_kv_transfer_config`, vllm/config/vllm.py
    at 000fc94b), truncated by `int()`, and holds at most that: `CPUOffloadingSpec` keeps
    `cpu_bytes_to_use // row` rows, a row being one block of every TP rank of the engine
    (`kv_bytes_per_block x world_size`), in one /dev/shm file per engine (`SharedOffloadRegion`);
    `SimpleCPUOffloadConnector` `cpu_bytes_to_use // world_size` per rank (pinned anonymous
    memory). A pod runs `layout.data_parallel_local` engines (TP never spans nodes:
    `TP_SPANS_NODES`), each its own engine core with its own connector and file.

    `SimpleCPUOffloadConnector`'s `cpu_bytes_to_use_per_rank` (`kv_offload_rank_bytes`) is per
    TP rank instead: an engine holds it `layout.tensor_parallel` times (vLLM's `world_size`,
    TP x PP, PP being 1 here).

    Args:
        req: the request (`kv_offloading_gib`, GiB per engine; `kv_offload_rank_bytes`, bytes
            per TP rank).
        layout: the chosen layout.

    Returns:
        Bytes per pod (0 without KV offloading).
    """
    per_engine = int(req.kv_offloading_gib * _GIB)
    per_engine += req.kv_offload_rank_bytes * layout.tensor_parallel
    return per_engine * layout.data_parallel_local


def _kv_offload_finding(req: PlanRequest, layout: Layout, pod_bytes: int) -> Finding:
    """`KV_OFFLOAD`: the host KV cache per engine (a term) and per TP rank, and the pod's share."""
    engines = layout.data_parallel_local
    size: list[str | Term] = []
    if req.kv_offloading_gib:
        size += [Term(Setting.KV_OFFLOADING_GIB, req.kv_offloading_gib), " GiB per engine"]
    if req.kv_offload_rank_bytes:  # SimpleCPUOffloadConnector's cpu_bytes_to_use_per_rank
        tp = layout.tensor_parallel
        rank = f"{req.kv_offload_rank_bytes:,} B per TP rank x {tp} TP rank{'s' if tp != 1 else ''}"
        size += [f" plus ({rank})"] if size else [rank]
    return Finding.said(
        Code.KV_OFFLOAD,
        "host KV cache of ",
        *size,
        f" x {engines} engine{'s' if engines != 1 else ''} per pod = "
        f"{pod_bytes:,} B ({pod_bytes / _GB:,.1f} GB) of pinned host memory (vLLM's "
        "OffloadingConnector keeps it in /dev/shm): added to the pod's /dev/shm size and memory "
        "request (and limit, when set); it holds offloaded prefix blocks, not the running "
        "requests' KV cache, so the plan's KV capacity does not change",
    )


def _weight_offload(
    req: PlanRequest, model: ModelSpec, fmt: str, chosen: Evaluation, warnings: list[Finding]
) -> int:
    """Host bytes per pod of the weight offloaders (`planning.offload`), with their findings.

    Appends `CPU_OFFLOAD` for `--cpu-offload-gb` and `PREFETCH_OFFLOAD` for the prefetch
    offloader to `warnings`; returns the upper bound of their pinned host memory on one pod
    (per GPU x the pod's GPUs).
    """
    layout = chosen.layout
    gpus = layout.gpus_per_node
    shares = {
        "tensor_parallel": layout.tensor_parallel,
        "data_parallel": layout.data_parallel,
        "redundant_experts": req.redundant_experts,
    }
    per_gpu = 0
    if req.cpu_offload_bytes > 0:
        on_gpu = per_gpu_weight_bytes(
            model,
            fmt,
            tensor_parallel=layout.tensor_parallel,
            data_parallel=layout.data_parallel,
            expert_parallel=layout.expert_parallel,
            redundant_experts=req.redundant_experts,
        )
        host = uva_host_bytes(
            model,
            fmt,
            req.cpu_offload_bytes,
            tensor_parallel=layout.tensor_parallel,
            data_parallel=layout.data_parallel,
            redundant_experts=req.redundant_experts,
            weights_on_gpu=on_gpu.total_bytes,
        )
        per_gpu += host
        warnings.append(
            Finding(
                Code.CPU_OFFLOAD,
                f"--cpu-offload-gb keeps {req.cpu_offload_bytes:,} B of weights per GPU in "
                "pinned host memory, read over PCIe (at most "
                f"{HOST_LINK_BYTES_PER_S / _GB:,.0f} GB/s) at every decode step: about "
                f"{chosen.tokens_per_second:,} tokens/s per replica (estimate); vLLM may move "
                "one parameter more and PyTorch pins each at its power-of-two ceiling, so the "
                f"pod's memory request gains up to {host:,} B per GPU "
                f"({host * gpus / _GB:,.1f} GB per pod)",
            )
        )
    if req.prefetch_offload is not None:
        group, per_group, step = req.prefetch_offload
        pre = prefetch_offload(model, fmt, req.prefetch_offload, **shares)
        per_gpu += pre.host_bytes
        excess = (
            f"; its GPU buffer pool ({step} x the offloaded layers' distinct tensors, "
            f"{pre.buffer_bytes:,} B) exceeds them by up to {pre.gpu_excess_bytes:,} B, "
            "counted in the GPU's weights"
            if pre.gpu_excess_bytes
            else ""
        )
        warnings.append(
            Finding(
                Code.PREFETCH_OFFLOAD,
                f"--offload-group-size={group} --offload-num-in-group={per_group} offloads "
                f"{len(pre.layers)} of {model.num_layers} layers ({pre.offloaded_bytes:,} B per "
                "GPU, still counted on the GPU, the safe side) to pinned host memory; with "
                "PyTorch's power-of-two rounding the pod's memory request gains up to "
                f"{pre.host_bytes:,} B per GPU ({pre.host_bytes * gpus / _GB:,.1f} GB per "
                f"pod){excess}",
            )
        )
    return per_gpu * gpus


def _host_kv_not_counted_finding(req: PlanRequest) -> Finding:
    """`HOST_KV_NOT_COUNTED`: the host KV caches the pod's memory request leaves out, and the fix.

    The operator's memory request is `spec.resources.requests.memory` plus what the plan
    counts (`render.leaderworkerset`), so memory added there reaches the pod. The fix comes
    before the caches' descriptions, which are long: status keeps 1,024 characters of a
    warning (`render.status`).
    """
    return Finding(
        Code.HOST_KV_NOT_COUNTED,
        "extraArgs configure a host KV cache whose size the plan cannot read: vLLM runs it, but "
        "the pod's memory request (and /dev/shm) leave it out, so the pod can be OOM-killed or "
        "evicted when the cache fills; add the host memory it keeps in the pod (over every "
        "engine and TP rank the pod runs) to spec.resources.requests.memory (and limits.memory "
        "when set), or use --kv-offloading-size=N (GiB per engine, the native backend), which "
        "the operator counts. Not counted: " + "; ".join(req.host_kv_not_counted),
    )


def plan(req: PlanRequest) -> Plan:
    """Plan a DeepSeek-V4 replica: GPU type, layout, per-GPU memory, KV capacity, /dev/shm.

    Args:
        req: the request.

    Returns:
        The plan; `fits` is False (and `chosen` is the closest candidate) when nothing fits.

    Raises:
        PlanningError: when the request itself is invalid (names the field and the limit).
    """
    model = _validate(req)
    _check_prices(req)
    feasible, rejected, unfit, gpus = _search(req, model)
    order = {g: i for i, g in enumerate(gpus)}
    geometry = kv_geometry(
        model, req.kv_cache_dtype, req.indexer_cache_dtype, mtp=req.speculative_tokens > 0
    )
    warnings: list[Finding] = []
    advice = None
    if feasible:
        ranked = sorted(feasible, key=lambda e: _rank_key(req, e, order))
        chosen, fits = ranked[0], True
    elif unfit:
        ranked = []
        # Layouts short of nothing but a utilization vLLM can start with come first, in the
        # order a fitting plan would take (new-user trial: at 0.99 on H200 Flash was shown on
        # 32 GPUs, the layout with the most KV, though 2 fit at 0.97).
        # Then those short of nothing but a max-num-seqs within max-num-batched-tokens: the
        # largest layout was shown for a setting no layout changes (h18).
        startup_only, seqs_only = (
            [e for e in unfit if {f.code for f in e.problems} <= codes]
            for codes in (
                {Code.STARTUP_MEMORY_RESERVE, Code.SAMPLER_PEAK_OUTSIDE_BUDGET},
                {Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS},
            )
        )
        closest = startup_only or seqs_only
        chosen = (
            min(closest, key=lambda e: _rank_key(req, e, order))
            if closest
            else max(unfit, key=lambda e: (e.memory.kv_cache_bytes, e.layout.gpus))
        )
        fits = False
        explained, advice = _explain_no_fit(req, model, chosen)
        warnings.append(explained)
        warnings.extend(chosen.problems)
    else:
        raise _no_layout_error(req, rejected)
    fmt = in_gpu_format(req.weights_format, chosen.gpu)
    guards = _guards(req, model, chosen, fmt)
    if any(g.code in {Code.ENGINE_TOO_OLD, Code.TRANSFORMERS_TOO_OLD} for g in guards):
        fits = False
    warnings.extend(guards)
    if fits and (fewer := _batch_fits_fewer_gpus(req, model, chosen)) is not None:
        warnings.append(fewer)
    offload_host = _weight_offload(req, model, fmt, chosen, warnings)
    checkpoint = checkpoint_bytes(model, req.weights_format)
    startup = _startup_seconds(req, chosen, checkpoint)
    if chosen.layout.gpus >= 8 or req.weights_download:
        node_bytes = chosen.memory.weights.total_bytes * chosen.layout.gpus_per_node
        download = (
            f"downloads the {checkpoint / _GB:,.0f} GB checkpoint (at "
            f"{req.engine.download_bytes_per_s / _GB:g} GB/s assumed; every node into its own "
            "cache unless a shared one is given), "
            if req.weights_download
            else ""
        )
        warnings.append(
            Finding(
                Code.FIRST_BOOT_WARMUP,
                f"first boot {download}loads {node_bytes / _GB:,.0f} GB per node and compiles "
                f"kernels for 10+ minutes: allow {startup:,} s before declaring the group failed",
            )
        )
    kv_offload = kv_offload_pod_bytes(req, chosen.layout)
    if kv_offload:
        warnings.append(_kv_offload_finding(req, chosen.layout, kv_offload))
    if req.host_kv_not_counted:
        warnings.append(_host_kv_not_counted_finding(req))
    shm = shm_bytes(
        chosen.layout,
        nvlink=chosen.gpu.nvlink_domain > 1,
        max_num_seqs=chosen.max_num_seqs,
        max_model_len=chosen.max_model_len,
        cpu_offload_bytes=0,
        kv_offload_bytes=kv_offload,
    )
    if len(shm.reasons) > 1:
        warnings.append(Finding(Code.SHM_LONG_CONTEXT, shm.reasons[-1]))
    reasons = _reasons(req, fits, chosen, ranked, fmt) + list(shm.reasons)
    return Plan(
        model=model,
        request=req,
        weights_format=req.weights_format,
        weights_format_in_gpu=fmt,
        checkpoint_bytes=checkpoint,
        geometry=geometry,
        chosen=chosen,
        fits=fits,
        runners_up=tuple(ranked[1 : 1 + _RUNNERS_UP]),
        rejected=tuple(rejected),
        feasible_gpu_types=tuple(g for g in gpus if any(e.gpu.name == g for e in feasible)),
        warnings=tuple(warnings),
        reasons=tuple(reasons),
        shm=shm,
        startup_budget_seconds=startup,
        advice=advice,
        weight_offload_host_bytes=offload_host,
    )
