"""Evaluate one (GPU type, layout) candidate: structural rules, memory, KV capacity, throughput.

Structural rules (a candidate that breaks one is rejected before any memory arithmetic):

- PP only where the engine supports it for DeepseekV4ForCausalLM (vLLM 0.33: not at all).
- TP stays inside a node, divides the query heads and the output groups (`wo_a` is grouped).
- TP never splits a quantisation block: every TP-split dimension of a block-quantised linear (the
  shared expert's and, without EP, the routed experts' intermediate size) must stay a multiple of
  128 (`_block_width`: block-FP8 128x128, int4 group 128, and 128 for MXFP4 too, whose scale
  blocks are 32 wide, so as to keep its kernels' 128-column tiles whole). Public reports show a
  block-FP8 DeepSeek failing to load at TP=32 (2048/32 = 64); such layouts are never proposed.
  On Blackwell and ROCm an MXFP4 expert slice without EP must be a multiple of 256
  (`MXFP4_PADDED_SLICE`).
- EP = TP x DP divides the routed experts.
- No explicit `--async-scheduling` on ROCm with `--enable-dbo` and DeepEP high-throughput, which
  vLLM 0.33.0 refuses at start (`ASYNC_SCHEDULING_REFUSED`; `async_scheduling`).

Memory: `memory.py`. KV capacity: `kvcache.py`. A request at `max-model-len` must fit the KV pool as
vLLM's startup check sizes it (compressed blocks + admission state); the concurrency target is
checked
with the same per-request size, so the plan never promises more than vLLM reports as "maximum
concurrency".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Final

from dsv4_operator.api.v1alpha1.scaling import MAX_REPLICAS
from dsv4_operator.planning.engine import EngineProfile, SchedulingDefaults
from dsv4_operator.planning.findings import Code, Finding, Setting, Term
from dsv4_operator.planning.hardware import GpuType
from dsv4_operator.planning.kvcache import BLOCK_TOKENS, KvGeometry
from dsv4_operator.planning.memory import (
    Layout,
    MemoryBreakdown,
    activation_bytes,
    budget_bytes,
    cuda_graph_bytes,
    gather_workspace_bytes,
    mtp_hidden_buffer_bytes,
    nccl_scaled,
    overhead_bytes,
    sampler_bytes,
    unprofiled_sampler_bytes,
)
from dsv4_operator.planning.models import LayerKind, ModelSpec
from dsv4_operator.planning.offload import prefetch_offload
from dsv4_operator.planning.request import PlanRequest
from dsv4_operator.planning.weights import WeightBreakdown, per_gpu_weight_bytes

__all__ = [
    "MIN_ADVISED_BATCHED_TOKENS",
    "ROCM_ASYNC_OFF_BACKEND",
    "Evaluation",
    "async_scheduling",
    "concurrent_batches",
    "evaluate",
    "structural_problems",
]

_GB = 10**9


def _gb(n: int) -> str:
    return f"{n / _GB:,.1f} GB"


def _block_width(weights_format: str) -> int:
    """Width of the quantisation block along a TP-split dimension (0 = unquantised)."""
    return {"official": 128, "nvfp4": 128, "fp8": 128, "int4": 128}.get(weights_format, 0)


MXFP4_PADDED_SLICE: Final = 256
"""Columns the MXFP4 MoE kernels of Blackwell (FlashInfer) and ROCm pad each expert's
intermediate slice to: vLLM `Mxfp4MoEMethod.create_weights` rounds
`intermediate_size_per_partition` up to 256 for its FlashInfer backends and on ROCm (to 64 or
128 elsewhere). A slice that is not a multiple would take padded memory the planner does not
count, so such splits are refused there (expert parallelism places whole experts instead)."""


def _pads_mxfp4_slices(gpu: GpuType | None, weights_format: str) -> bool:
    """Whether this GPU's MXFP4 MoE kernels pad expert slices to `MXFP4_PADDED_SLICE`."""
    if gpu is None or weights_format != "official":
        return False
    return gpu.arch.startswith("sm10") or gpu.vendor == "amd"


def structural_problems(
    model: ModelSpec,
    layout: Layout,
    req: PlanRequest,
    weights_format: str,
    per_node: int,
    gpu: GpuType | None = None,
) -> tuple[Finding, ...]:
    """Rules a layout must satisfy before memory is considered (module docstring).

    Args:
        model: catalog entry.
        layout: candidate layout.
        req: the request (engine, GPU budget).
        weights_format: format held in GPU memory.
        per_node: GPUs per node of the pool.
        gpu: the GPU type, for kernel rules that depend on it (`MXFP4_PADDED_SLICE`).

    Returns:
        Findings; empty when the layout is structurally valid.
    """
    tp, problems = layout.tensor_parallel, []
    if layout.pipeline_parallel > 1 and not req.engine.pipeline_parallel:
        problems.append(
            Finding(
                Code.PIPELINE_PARALLEL_UNSUPPORTED,
                f"PP={layout.pipeline_parallel}: {req.engine.name} {req.engine.version} does not "
                "support pipeline parallelism for DeepseekV4ForCausalLM",
            )
        )
    if tp > per_node:
        problems.append(
            Finding(Code.TP_EXCEEDS_NODE, f"TP={tp} exceeds the {per_node} GPUs of one node")
        )
    if model.num_heads % tp:
        problems.append(
            Finding(Code.TP_NOT_DIVIDING_HEADS, f"TP={tp} does not divide {model.num_heads} heads")
        )
    if model.o_groups % tp:
        problems.append(
            Finding(
                Code.TP_NOT_DIVIDING_OUTPUT_GROUPS,
                f"TP={tp} does not divide the {model.o_groups} output groups of wo_a",
            )
        )
    if tp <= per_node and layout.gpus_per_node % tp:
        problems.append(
            Finding(
                Code.TP_SPANS_NODES,
                f"TP={tp} does not divide the {layout.gpus_per_node} GPUs used per node: a "
                "tensor-parallel group would span nodes",
            )
        )
    block = _block_width(weights_format)
    inter = model.moe_intermediate_size
    # The shared expert is split by TP; routed experts without EP by the flattened TP x DP group.
    splits = {("TP", tp)}
    if not layout.expert_parallel:
        splits.add(("TP x DP", tp * layout.data_parallel))
    for label, n in sorted(splits):
        if inter % n:
            # vLLM's FusedMoE divides the intermediate size by the split with
            # `vllm.distributed.utils.divide`, which asserts divisibility: it fails to load.
            problems.append(
                Finding(
                    Code.EXPERT_SPLIT_UNEVEN,
                    f"{label}={n} does not divide the expert intermediate dimension ({inter} "
                    f"columns = {inter / n:g} per GPU); vLLM's fused MoE fails to load it: "
                    "enable expert parallelism or split the experts a dividing number of ways",
                )
            )
        elif block and (inter // n) % block:
            problems.append(
                Finding(
                    Code.TP_SPLITS_QUANT_BLOCK,
                    f"{label}={n} splits the {block}-wide quantisation blocks of the expert "
                    f"intermediate dimension ({inter}/{n} = {inter / n:g} columns); a block-FP8 "
                    "DeepSeek split this way fails to load",
                )
            )
    split = tp * layout.data_parallel
    if (
        not layout.expert_parallel
        and _pads_mxfp4_slices(gpu, weights_format)
        and (inter // split) % MXFP4_PADDED_SLICE
    ):
        padded = -(-(inter // split) // MXFP4_PADDED_SLICE) * MXFP4_PADDED_SLICE
        problems.append(
            Finding(
                Code.EXPERT_SPLIT_PADDED,
                f"TP x DP={split} without expert parallelism leaves each expert a slice of "
                f"{inter // split} intermediate columns, which the MXFP4 MoE kernels of "
                f"{gpu.arch if gpu else ''} pad to {padded} (a multiple of {MXFP4_PADDED_SLICE}): "
                "enable expert parallelism or split the experts fewer ways",
            )
        )
    problems += _expert_problems(model, layout, req)
    if req.async_scheduling and gpu is not None and _rocm_dbo_deepep_ht(req, gpu):
        # VllmConfig.__post_init__ (vllm/config/vllm.py, 0.33.0): an explicit True hard-fails.
        problems.append(
            Finding(
                Code.ASYNC_SCHEDULING_REFUSED,
                f"--async-scheduling with --enable-dbo and --all2all-backend="
                f"{ROCM_ASYNC_OFF_BACKEND} on {gpu.name} (ROCm): vLLM refuses to start ('Async "
                "scheduling is not compatible with ROCm DeepEP high-throughput DBO'); drop "
                "--async-scheduling (vLLM then turns it off), --enable-dbo, or choose another "
                "all-to-all backend",
            )
        )
    if req.gpu_budget is not None and layout.gpus > req.gpu_budget:
        problems.append(
            Finding(
                Code.GPU_BUDGET_EXCEEDED,
                f"{layout.gpus} GPUs exceed the GPU budget of {req.gpu_budget}",
            )
        )
    return tuple(problems)


def _expert_problems(model: ModelSpec, layout: Layout, req: PlanRequest) -> list[Finding]:
    """EP sizes vLLM refuses: one not dividing the E + R physical experts, or EPLB on one rank.

    vLLM's `DeepseekV4MoE` asserts that EP divides `n_physical_experts` (E plus EPLB's
    redundant experts R), and `ParallelConfig` refuses EPLB without TP, PCP or DP ("EPLB
    requires tensor, prefill-context, or data parallelism").
    """
    problems = []
    ep = layout.expert_parallel_size
    physical = model.n_routed_experts + req.redundant_experts
    if layout.expert_parallel and physical % ep:
        extra = f" + {req.redundant_experts} redundant (EPLB)" if req.redundant_experts else ""
        problems.append(
            Finding(
                Code.EP_NOT_DIVIDING_EXPERTS,
                f"EP={ep} does not divide the {model.n_routed_experts} routed experts{extra}",
            )
        )
    if req.eplb and ep < 2:
        problems.append(
            Finding(
                Code.EP_NOT_DIVIDING_EXPERTS,
                "EPLB (--enable-eplb) needs expert parallelism over at least 2 GPUs",
            )
        )
    return problems


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A memory-evaluated candidate.

    Attributes:
        gpu: GPU type.
        layout: parallel layout.
        memory: per-GPU memory breakdown.
        max_model_len: context cap, tokens (resolved when `auto`).
        max_num_seqs: sequences per DP rank.
        max_num_batched_tokens: tokens per engine step.
        request_bytes: KV bytes one max-model-len request reserves (vLLM admission size).
        kv_tokens_per_replica: KV pool in tokens of compressed-block growth, all DP ranks.
        max_concurrency: max-model-len requests the replica holds at once (all DP ranks).
        tokens_per_second: expected decode throughput of one replica, tokens/s (ranking only).
        replicas_for_target: replicas needed for the tokens/s target, or None without a target.
        problems: why the candidate does not fit; empty when it fits.
        max_cudagraph_capture_size: largest CUDA-graph batch the memory counts, tokens (the
            request's, else vLLM's default for these sizes; `EngineProfile.
            max_cudagraph_capture_size`); the renderer passes it to vLLM.
        cudagraph_capture_sizes: with speculation and no cap in the request, vLLM's default
            capture sizes (`EngineProfile.speculative_capture_list`, ending at
            `max_cudagraph_capture_size`), which the renderer passes instead of the cap;
            empty otherwise.
        batch_lowered_from: (vLLM's default max-num-batched-tokens for this GPU, the
            `max-model-len auto` it gives) when the planner chose a smaller batch for a longer
            context (`_batch_for_context`); None otherwise.
    """

    gpu: GpuType
    layout: Layout
    memory: MemoryBreakdown
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    request_bytes: int
    kv_tokens_per_replica: int
    max_concurrency: int
    tokens_per_second: int
    replicas_for_target: int | None
    problems: tuple[Finding, ...]
    max_cudagraph_capture_size: int
    cudagraph_capture_sizes: tuple[int, ...] = ()
    batch_lowered_from: tuple[int, int] | None = None

    @property
    def fits(self) -> bool:
        """True when nothing prevents this candidate from serving the target."""
        return not self.problems

    @property
    def total_gpus(self) -> int:
        """GPUs over all replicas needed for the target (one replica without a tokens/s target)."""
        return self.layout.gpus * (self.replicas_for_target or 1)


_UTIL = Setting.GPU_MEMORY_UTILIZATION


def max_num_seqs_name(req: PlanRequest) -> str | Term:
    """max-num-seqs as a finding names it: a `Term` when the request pins it, else vLLM's name.

    Unpinned, the value is derived (from the concurrency target or the KV pool), so a front end
    must not name a field of the user's (the operator's `spec.maxNumSeqs`) for it.
    """
    return Term(Setting.MAX_NUM_SEQS) if req.max_num_seqs is not None else "max-num-seqs"


def _min_util_text(ctx: _Context, mem: MemoryBreakdown, length: int) -> tuple[str | Term, ...]:
    """`minimum gpu-memory-utilization for one N-token request: u` (or why none exists).

    None exists above 1, nor above the most at which vLLM starts (`_most_utilization`). Parts
    of a `Finding.said` sentence: the utilization is a `Term`, worded by each front end.
    """
    need = mem.min_utilization(ctx.geometry.request_bytes(length, ctx.state(length)))
    most = _most_utilization(ctx, mem)
    head = ("minimum ", Term(_UTIL), f" for one {length:,}-token request")
    if need > 1:
        return (
            *head,
            " would be ",
            Term(_UTIL, need, "least"),
            ": no utilization fits on this GPU",
        )
    if need > most:
        return (
            *head,
            " would be ",
            Term(_UTIL, need, "least"),
            ", above the ",
            Term(_UTIL, most, "most"),
            " at which vLLM starts here (STARTUP_MEMORY_RESERVE): no utilization fits on this "
            "layout",
        )
    return (*head, ": ", Term(_UTIL, need, "least"))


def _most_utilization(ctx: _Context, mem: MemoryBreakdown) -> float:
    """Highest gpu-memory-utilization (2 decimals) that leaves the startup reserve free.

    And, beside it, the sampler's runtime peak above vLLM's profiled peak
    (`MemoryBreakdown.unprofiled_bytes`), which also lands outside the budget.
    """
    reserve = _startup_reserve(ctx) + mem.unprofiled_bytes
    return math.floor((mem.memory_bytes - reserve) * 100 / mem.memory_bytes) / 100


def _startup_reserve(ctx: _Context) -> int:
    """`startup_reserve_bytes` for this candidate, with the request's NCCL buffer sizes."""
    req = ctx.req
    return startup_reserve_bytes(
        req.engine, ctx.gpu, ctx.layout, nccl_buffer_bytes=req.nccl_buffer_bytes
    )


def startup_reserve_bytes(
    engine: EngineProfile, gpu: GpuType, layout: Layout, *, nccl_buffer_bytes: int | None = None
) -> int:
    """Device memory a worker holds before vLLM's start-up snapshot, bytes.

    The CUDA context (`EngineProfile.startup_context_bytes`); on a replica of several GPUs
    joined by NVLink/NVSwitch also NCCL's buffers: the world's communicator
    (`startup_nccl_first_bytes`) and one more (`startup_nccl_group_bytes`) per parallel group
    of more than one rank (TP, DP, EP, PP), each of which vLLM warms before the snapshot. Both
    NCCL figures scale with `nccl_buffer_bytes`, one connection's NCCL buffers (`nccl_scaled`;
    None: NCCL's defaults, at which they were measured).
    """
    if layout.gpus <= 1 or gpu.nvlink_domain <= 1:
        return engine.startup_context_bytes
    sizes = (
        layout.tensor_parallel,
        layout.data_parallel,
        layout.pipeline_parallel,
        layout.expert_parallel_size,
    )
    groups = sum(1 for size in sizes if size > 1)
    first = nccl_scaled(engine, engine.startup_nccl_first_bytes, nccl_buffer_bytes)
    group = nccl_scaled(engine, engine.startup_nccl_group_bytes, nccl_buffer_bytes)
    nccl = first + groups * group
    return engine.startup_context_bytes + nccl


def _startup_reserve_problem(ctx: _Context, mem: MemoryBreakdown) -> Finding | None:
    """Why vLLM would refuse to start, or run out of memory serving.

    It refuses to start when total x utilization is above the memory free at start-up; it runs
    out serving when the sampler's unprofiled peak does not fit outside the budget beside what
    a worker holds from start-up.
    """
    reserve = _startup_reserve(ctx)
    outside = mem.memory_bytes - mem.budget_bytes
    if outside >= reserve + mem.unprofiled_bytes:
        return None
    most = _most_utilization(ctx, mem)
    held = (
        f"a worker already holds about {reserve:,} B (CUDA context"
        + (" and NCCL buffers" if reserve > ctx.req.engine.startup_context_bytes else "")
        + ") when vLLM checks that total x utilization is free"
    )
    code = Code.STARTUP_MEMORY_RESERVE
    if outside < reserve:
        why = f"{held}, and refuses to start"
    else:
        code = Code.SAMPLER_PEAK_OUTSIDE_BUDGET
        why = (
            f"{held}, and serving needs {mem.unprofiled_bytes:,} B more there for the "
            "sampler's peak above what vLLM's profiling run measured (it samples one row per "
            "sequence, not 1 + MTP tokens, without top-k/top-p or logprobs): out of memory "
            "under load"
        )
    return Finding.said(
        code,
        Term(_UTIL),
        " ",
        Term(_UTIL, mem.gpu_memory_utilization),
        f" leaves {outside:,} B of the "
        f"{mem.memory_bytes:,} B CUDA reports on {ctx.gpu.name} outside vLLM's budget, but {why}"
        + (
            ": lower max-num-seqs or use a "
            if code is Code.SAMPLER_PEAK_OUTSIDE_BUDGET
            else ": use a "
        ),
        Term(_UTIL),
        " of at most ",
        Term(_UTIL, most, "most"),
    )


def _offloaded(weights: WeightBreakdown, offload: int) -> WeightBreakdown:
    """Weights left on the GPU after `--cpu-offload-gb` moves `offload` bytes to host memory."""
    if offload <= 0:
        return weights
    moved = min(offload, weights.expert_bytes)
    return replace(weights, expert_bytes=weights.expert_bytes - moved)


HOST_LINK_BYTES_PER_S: Final = 63_015_384_615
"""Host <-> GPU bandwidth one direction, bytes/s: PCIe 5.0 x16 (32 GT/s x 16 lanes, 128b/130b
encoding; PCI-SIG), the ceiling for weights that `--cpu-offload-gb` leaves in host memory."""


def _decode_tokens_per_second(
    model: ModelSpec,
    gpu: GpuType,
    layout: Layout,
    weights: WeightBreakdown,
    *,
    batch_per_rank: int,
    context: int,
    efficiency: float,
    kv_entry_bytes: int,
    index_entry_bytes: int,
    offloaded_expert_bytes: int = 0,
) -> int:
    """Decode tokens/s of one replica from bytes moved per step (a ranking heuristic).

    Step bytes per GPU = non-expert weights + the experts the batch touches + KV read for the batch
    (window + top-k or all compressed entries + indexer keys, at `context` tokens), over the HBM
    bandwidth; plus the touched part of `offloaded_expert_bytes` (in host memory, read by the
    GPU through unified addressing every step, as vLLM's CPU offload does) over
    `HOST_LINK_BYTES_PER_S`.
    """
    if batch_per_rank <= 0:
        return 0
    tokens = batch_per_rank * layout.data_parallel
    untouched = (1 - Fraction(model.experts_per_token, model.n_routed_experts)) ** min(tokens, 64)
    experts = int(weights.expert_bytes * (1 - untouched))
    from_host = int(offloaded_expert_bytes * (1 - untouched))
    w = model.sliding_window
    entries = 0
    index_keys = 0
    for kind in model.layer_kinds:
        entries += min(w, context)
        if kind is LayerKind.CSA:
            entries += min(model.index_topk, context // 4)
            index_keys += context // 4
        elif kind is LayerKind.HCA:
            entries += context // 128
    kv = batch_per_rank * (entries * kv_entry_bytes + index_keys * index_entry_bytes)
    step_bytes = weights.sharded_bytes + weights.replicated_bytes + experts + kv
    seconds = step_bytes / (gpu.bandwidth_bytes_per_s * efficiency)
    seconds += from_host / HOST_LINK_BYTES_PER_S
    return int(tokens / seconds)


def evaluate(
    model: ModelSpec,
    gpu: GpuType,
    layout: Layout,
    req: PlanRequest,
    weights_format: str,
    geometry: KvGeometry,
    kv_entry_bytes: int,
    index_entry_bytes: int,
) -> Evaluation:
    """Memory, KV capacity and throughput of one structurally valid candidate.

    `max-model-len auto` resolves to the largest context whose admission size fits the pool
    (capped at `max_position_embeddings`); `max-num-seqs` left open resolves to the concurrency
    target per DP rank, or to what the pool holds at max-model-len (at most the engine default).

    Returns:
        The evaluation; `problems` says why it does not fit.
    """
    eng = req.engine
    tier = eng.scheduling_defaults(gpu.cuda_total_bytes, gpu.name, gpu.arch)
    dp = layout.data_parallel
    on_gpu = per_gpu_weight_bytes(
        model,
        weights_format,
        tensor_parallel=layout.tensor_parallel,
        data_parallel=dp,
        expert_parallel=layout.expert_parallel,
        redundant_experts=req.redundant_experts,
        eplb=req.eplb,
    )
    full_experts = on_gpu.expert_bytes
    weights = _offloaded(on_gpu, req.cpu_offload_bytes)
    if req.prefetch_offload is not None:
        # The offloaded layers stay counted on the GPU; the buffer pool's excess over them is
        # added (planning.offload).
        prefetch = prefetch_offload(
            model,
            weights_format,
            req.prefetch_offload,
            tensor_parallel=layout.tensor_parallel,
            data_parallel=dp,
            redundant_experts=req.redundant_experts,
        )
        weights = replace(weights, offload_buffer_bytes=prefetch.gpu_excess_bytes)
    ctx = _Context(model, gpu, layout, req, weights, tier, geometry)
    target_per_rank = -(-req.concurrency // dp) if req.concurrency else None
    length = req.max_model_len or ctx.auto_length(target_per_rank or 1)
    lowered_from = None
    if req.max_model_len is None and req.max_num_batched_tokens is None:
        default = (ctx.mnbt, length)
        ctx, length = _batch_for_context(ctx, length, target_per_rank)
        lowered_from = default if ctx.mnbt != default[0] else None
    # With `auto` and no room at all, size everything for the shortest useful request, the one
    # the shortfall and the advice name: its prefill gather workspace grows with the length.
    sized = length or eng.min_auto_max_model_len
    seqs = ctx.resolve_seqs(sized, target_per_rank)
    mem = ctx.memory(sized, seqs)
    request_bytes = ctx.request_bytes(sized)
    problems = _problems(ctx, mem, length, seqs, target_per_rank)
    per_rank = max(0, mem.kv_cache_bytes) // request_bytes
    tps = _decode_tokens_per_second(
        model,
        gpu,
        layout,
        weights,
        batch_per_rank=min(seqs, per_rank),
        context=max(length, 1) // 2,
        efficiency=eng.decode_bandwidth_efficiency,
        kv_entry_bytes=kv_entry_bytes,
        index_entry_bytes=index_entry_bytes,
        offloaded_expert_bytes=full_experts - weights.expert_bytes,
    )
    listed: tuple[int, ...] = ()
    if req.speculative_tokens > 0 and req.max_cudagraph_capture_size is None:
        listed = eng.speculative_capture_list(
            seqs,
            tier,
            req.speculative_tokens,
            max_num_batched_tokens=ctx.mnbt,
            interactivity=req.interactivity,
        )
    replicas = None
    if req.tokens_per_second and tps > 0:
        replicas = -(-req.tokens_per_second // tps)
        problems += _replica_problems(req, layout, replicas, tps)
    return Evaluation(
        gpu=gpu,
        layout=layout,
        memory=mem,
        max_model_len=length,
        max_num_seqs=seqs,
        max_num_batched_tokens=ctx.mnbt,
        request_bytes=request_bytes,
        kv_tokens_per_replica=dp
        * (max(0, mem.kv_cache_bytes) // geometry.pool_block)
        * BLOCK_TOKENS,
        max_concurrency=dp * per_rank,
        tokens_per_second=tps,
        replicas_for_target=replicas,
        problems=tuple(problems),
        max_cudagraph_capture_size=listed[-1]
        if listed
        else eng.max_cudagraph_capture_size(
            seqs,
            tier,
            req.speculative_tokens,
            max_num_batched_tokens=ctx.mnbt,
            pinned=req.max_cudagraph_capture_size,
            interactivity=req.interactivity,
        ),
        cudagraph_capture_sizes=listed,
        batch_lowered_from=lowered_from,
    )


def _batch_for_context(
    ctx: _Context, length: int, target_per_rank: int | None
) -> tuple[_Context, int]:
    """The batch (`--max-num-batched-tokens`) for `max-model-len auto`, and the length it gives.

    Every request reserves window and compressor-state blocks for the tokens in flight,
    `concurrent_batches` x mnbt (`KvGeometry.admission_state_bytes`): at vLLM's default batch
    that reservation can be most of a request, so the context left is short (Pro on 8 L40S per
    node: 5,632 tokens at 4,096, 300,544 at 2,048). While it is larger than the context's own
    compressed blocks, the context is below the cap (`auto_cap`) and half the batch is at least
    `MIN_ADVISED_BATCHED_TOKENS` and one decode step of the sequences a request pins or its
    concurrency target needs (max-num-seqs x (1 + k), `planner.speculative_step_problem`), the
    batch is halved and the length searched again; a halving that gives no longer context is
    not taken. The trade-off is fewer prompt tokens per engine step (slower prefill of long
    prompts), which the plan states (`BATCH_LOWERED_FOR_CONTEXT`). Only for a request that
    leaves both the batch and max-model-len to the planner.

    Args:
        ctx: the candidate at vLLM's default batch.
        length: `max-model-len auto` at that batch, tokens (0 when none fits).
        target_per_rank: the concurrency target per DP rank, or None.

    Returns:
        (the candidate at the chosen batch, its `max-model-len auto`).
    """
    seqs = ctx.req.max_num_seqs or target_per_rank or 1
    floor = max(MIN_ADVISED_BATCHED_TOKENS, seqs * (1 + ctx.req.speculative_tokens))
    while ctx.mnbt // 2 >= floor and length < ctx.auto_cap:
        tokens = max(length, 1)
        if ctx.state(tokens) <= ctx.geometry.growth_bytes(tokens):
            break
        smaller = replace(ctx, batch=ctx.mnbt // 2)
        longer = smaller.auto_length(target_per_rank or 1)
        if longer <= length:
            break
        ctx, length = smaller, longer
    return ctx, length


MIN_ADVISED_BATCHED_TOKENS: Final = 512
"""Smallest `--max-num-batched-tokens` the planner picks or the "what would fit" advice proposes,
tokens: the decode-side value of the Flash H200 prefill/decode recipe (facts §5.1, R2); smaller
steps make long prompts take many more prefill chunks."""

ROCM_ASYNC_OFF_BACKEND: Final = "deepep_high_throughput"
"""The all-to-all backend with which, on ROCm and with dual batch overlap, vLLM 0.33.0 turns async
scheduling off (`VllmConfig.__post_init__`, vllm/config/vllm.py: `uses_rocm_deepep_ht_dbo`)."""


def async_scheduling(req: PlanRequest, gpu: GpuType) -> bool:
    """Whether vLLM 0.33.0 runs async scheduling for this request on this GPU type.

    `VllmConfig.__post_init__` (vllm/config/vllm.py in the 0.33.0 wheel) keeps an explicit
    `--async-scheduling` / `--no-async-scheduling` (`req.async_scheduling`) and resolves None to
    on unless: the model is a pooling model (not a DeepSeek-V4 launch); the executor does not
    support it (`Executor.supports_async_scheduling`: True for `mp`, `uni`, `ray` (a
    `MultiprocExecutor`) and `external_launcher`, the backends the runtime uses); ROCm with
    `--enable-dbo` and `--all2all-backend=deepep_high_throughput` (`uses_rocm_deepep_ht_dbo`,
    `gpu.vendor` amd here); or the V1 model runner with a speculative method other than the
    EAGLE/MTP, ngram-GPU and draft-model ones, a padded drafter batch turned off, or PP. The
    runtime's speculation is always method `mtp` (an EAGLE type, `EagleModelTypes` in
    vllm/config/speculative.py) from the operator's speculative config, which extraArgs may not
    set, and DeepSeek-V4 has no PP on this engine, so none of the V1 cases arise.
    """
    if req.async_scheduling is not None:
        return req.async_scheduling
    return not _rocm_dbo_deepep_ht(req, gpu)


def _rocm_dbo_deepep_ht(req: PlanRequest, gpu: GpuType) -> bool:
    """Whether vLLM's `uses_rocm_deepep_ht_dbo` holds: ROCm, `--enable-dbo`, DeepEP HT."""
    return (
        gpu.vendor == "amd"
        and req.dual_batch_overlap
        and req.all2all_backend == ROCM_ASYNC_OFF_BACKEND
    )


def concurrent_batches(req: PlanRequest, gpu: GpuType, layout: Layout) -> int:
    """Batches of max-num-batched-tokens vLLM 0.33.0 keeps in flight for this candidate.

    `VllmConfig.max_concurrent_batches` (vllm/config/vllm.py in the 0.33.0 wheel): with async
    scheduling (`async_scheduling`) PP size + 1 on Model Runner V2, 2 on the V1 runner without
    PP (`EngineProfile.max_concurrent_batches` + PP - 1: 2 for every layout this engine runs);
    without it the PP size (1). Each request reserves its window and compressor-state KV blocks
    for this many batches (`VllmConfig.max_in_flight_tokens`, read by
    `SlidingWindowSpec.max_admission_blocks_per_request`, vllm/v1/kv_cache_interface.py).
    """
    pp = layout.pipeline_parallel
    if async_scheduling(req, gpu):
        return req.engine.max_concurrent_batches + pp - 1
    return pp


@dataclass(frozen=True, slots=True)
class _Context:
    """One candidate's fixed inputs, with the memory arithmetic that varies by length and seqs."""

    model: ModelSpec
    gpu: GpuType
    layout: Layout
    req: PlanRequest
    weights: WeightBreakdown
    tier: SchedulingDefaults
    geometry: KvGeometry
    batch: int | None = None

    @property
    def mnbt(self) -> int:
        """`--max-num-batched-tokens`: as given, the planner's (`batch`), or the tier default."""
        return self.req.max_num_batched_tokens or self.batch or self.tier.max_num_batched_tokens

    @property
    def auto_cap(self) -> int:
        """Longest `max-model-len auto`: the model's limit, the engine's safe length with MTP."""
        cap = self.model.max_position_embeddings
        if self.req.speculative_tokens > 0:
            cap = min(cap, self.req.engine.mtp_safe_max_model_len)
        return cap

    def memory(self, length: int, seqs: int) -> MemoryBreakdown:
        """Per-GPU breakdown at a max-model-len and max-num-seqs."""
        req, gpu = self.req, self.gpu
        util = req.gpu_memory_utilization or req.engine.default_gpu_memory_utilization
        forward = activation_bytes(
            self.model,
            self.layout,
            req.engine,
            max_num_batched_tokens=self.mnbt,
            max_num_seqs=0,
            max_model_len=max(length, 1),
        )
        return MemoryBreakdown(
            memory_bytes=gpu.cuda_total_bytes,
            gpu_memory_utilization=util,
            budget_bytes=budget_bytes(gpu.cuda_total_bytes, util),
            weights=self.weights,
            activation_bytes=forward
            + sampler_bytes(self.model, req.engine, seqs)
            + mtp_hidden_buffer_bytes(self.model, self.mnbt),
            cuda_graph_bytes=cuda_graph_bytes(
                req.engine,
                seqs,
                self.tier,
                req.speculative_tokens,
                max_num_batched_tokens=self.mnbt,
                pinned=req.max_cudagraph_capture_size,
                interactivity=req.interactivity,
                cuda_graphs=req.cuda_graphs,
            ),
            overhead_bytes=overhead_bytes(
                req.engine,
                self.layout,
                all2all_backend=req.all2all_backend,
                deepep_buffer_bytes=req.deepep_buffer_bytes,
                nccl_buffer_bytes=req.nccl_buffer_bytes,
                model=self.model,
                redundant_experts=req.redundant_experts,
                moe_dp_chunk_tokens=req.moe_dp_chunk_tokens,
            ),
            unprofiled_bytes=unprofiled_sampler_bytes(
                self.model,
                req.engine,
                forward_bytes=forward,
                max_num_batched_tokens=self.mnbt,
                max_num_seqs=seqs,
                speculative_tokens=req.speculative_tokens,
                max_logprobs=req.max_logprobs,
            ),
        )

    def state(self, length: int) -> int:
        """Admission state bytes of one request at this max-model-len."""
        return self.geometry.admission_state_bytes(
            self.mnbt,
            self.model.sliding_window,
            max(length, 1),
            concurrent_batches=concurrent_batches(self.req, self.gpu, self.layout),
        )

    def request_bytes(self, length: int) -> int:
        """KV bytes vLLM reserves for one max-model-len request (blocks + admission state)."""
        return self.geometry.request_bytes(max(length, 1), self.state(length))

    def auto_length(self, requests: int) -> int:
        """`max-model-len auto`: the longest context at which `requests` requests fit one pool.

        Capped at the model's limit, and at the engine's safe length when MTP speculation is on.
        The prefill gather workspace grows with the length, so the search is over block counts
        with the pool recomputed at each (both sides are monotone).
        """
        cap = self.auto_cap
        seqs = self.req.max_num_seqs or requests
        base = self.memory(1, seqs).kv_cache_bytes + gather_workspace_bytes(
            self.model, 1, self.mnbt
        )
        lo, hi = 0, cap // BLOCK_TOKENS
        while lo < hi:
            mid = (lo + hi + 1) // 2
            tokens = mid * BLOCK_TOKENS
            pool = base - gather_workspace_bytes(self.model, tokens, self.mnbt)
            if requests * self.request_bytes(tokens) <= pool:
                lo = mid
            else:
                hi = mid - 1
        return lo * BLOCK_TOKENS

    def resolve_seqs(self, length: int, target_per_rank: int | None) -> int:
        """`--max-num-seqs`: as given, the target per DP rank, or what the pool holds.

        The planner's own choice never exceeds the engine tier's default nor `mnbt` divided by
        the tokens one decoding sequence takes a step, 1 + speculative tokens. vLLM refuses
        max-num-batched-tokens below max-num-seqs (`SchedulerConfig.verify_max_model_len`,
        vllm/config/scheduler.py); above it, with MTP, a decode step of max-num-seqs x (1 + k)
        tokens beyond the budget is accepted and cut: the scheduler gives each running request
        at most what is left of the budget, trims its drafts and leaves the rest of the running
        queue for the next step (vllm/v1/core/sched/scheduler.py, `Scheduler.schedule`), so a
        larger choice would hold sequences that do not advance every step.
        """
        pinned = self.req.max_num_seqs or target_per_rank
        if pinned is not None:
            return pinned
        per_request = self.request_bytes(length)
        held = max(self.memory(length, 1).kv_cache_bytes, 0) // per_request
        step = 1 + self.req.speculative_tokens
        seqs = max(1, min(self.tier.max_num_seqs, self.mnbt // step, held))
        held = max(self.memory(length, seqs).kv_cache_bytes, 0) // per_request
        return max(1, min(seqs, held))


def _problems(
    ctx: _Context, mem: MemoryBreakdown, length: int, seqs: int, target_per_rank: int | None
) -> list[Finding]:
    """Why a candidate does not serve the request (empty when it does)."""
    req, eng, pool = ctx.req, ctx.req.engine, mem.kv_cache_bytes
    request_bytes = ctx.request_bytes(length)
    out: list[Finding] = []
    if pool <= 0:
        shown = max(length, eng.min_auto_max_model_len)
        out.append(
            Finding.said(
                Code.WEIGHTS_EXCEED_BUDGET,
                f"weights {_gb(mem.weights.total_bytes)} + activations {_gb(mem.activation_bytes)}"
                f" + CUDA graphs {_gb(mem.cuda_graph_bytes)} + overhead "
                f"{_gb(mem.overhead_bytes)} per GPU exceed the budget {_gb(mem.budget_bytes)} "
                f"({ctx.gpu.name} {_gb(mem.memory_bytes)} visible to CUDA x "
                f"{mem.gpu_memory_utilization}) by {-pool:,} B; ",
                *_min_util_text(ctx, mem, shown),
            )
        )
    elif req.max_model_len is None and length < eng.min_auto_max_model_len:
        out.append(
            Finding.said(
                Code.CONTEXT_TOO_SHORT,
                f"the KV pool ({pool:,} B per GPU) holds {target_per_rank or 1} request(s) of only "
                f"{length:,} tokens, under the {eng.min_auto_max_model_len:,}-token minimum for ",
                Term(Setting.MAX_MODEL_LEN),
                " auto",
            )
        )
    elif request_bytes > pool:
        fit = ctx.auto_length(1) if pool > 0 else 0
        out.append(
            Finding.said(
                Code.MAX_MODEL_LEN_EXCEEDS_KV_POOL,
                f"one {length:,}-token request needs {request_bytes:,} B of KV (blocks + admission "
                f"state at mnbt {ctx.mnbt:,}) but the pool holds {pool:,} B per GPU; largest ",
                Term(Setting.MAX_MODEL_LEN),
                " that fits: ",
                Term(Setting.MAX_MODEL_LEN, fit, "most"),
                "; ",
                *_min_util_text(ctx, mem, length),
            )
        )
    if (startup := _startup_reserve_problem(ctx, mem)) is not None:
        out.append(startup)
    per_rank = max(0, pool) // request_bytes
    if not out and target_per_rank and per_rank < target_per_rank:
        out.append(
            Finding(
                Code.CONCURRENCY_EXCEEDS_KV_POOL,
                f"the target of {req.concurrency} concurrent {length:,}-token requests needs "
                f"{target_per_rank} per DP rank; the pool holds {per_rank} ({pool:,} B per GPU, "
                f"{request_bytes:,} B per request)",
            )
        )
    dp = ctx.layout.data_parallel
    if req.concurrency and seqs * dp < req.concurrency:
        out.append(
            Finding.said(
                Code.CONCURRENCY_EXCEEDS_MAX_NUM_SEQS,
                max_num_seqs_name(req),
                f" {seqs} x {dp} DP ranks = {seqs * dp} concurrent requests, under the target of "
                f"{req.concurrency}",
            )
        )
    if seqs > ctx.mnbt:
        mnbt = Setting.MAX_NUM_BATCHED_TOKENS
        # max-num-seqs is the user's when pinned, else the concurrency target per DP rank.
        lower: tuple[str | Term, ...] = (
            (Term(Setting.MAX_NUM_SEQS),)
            if req.max_num_seqs is not None
            else ("the ", Term(Setting.CONCURRENCY), " per DP rank")
        )
        out.append(
            Finding.said(
                Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS,
                max_num_seqs_name(req),
                f" {seqs} exceeds ",
                Term(mnbt),
                " ",
                Term(mnbt, ctx.mnbt),
                ": vLLM refuses to start (raise ",
                Term(mnbt),
                " to at least ",
                Term(mnbt, seqs, "least"),
                " or lower ",
                *lower,
                ")",
            )
        )
    return out


def _replica_problems(req: PlanRequest, layout: Layout, replicas: int, tps: int) -> list[Finding]:
    """A tokens/s target that needs more replicas or GPUs than allowed.

    The replicas are held to `req.max_replicas`, else to the resource's most (`MAX_REPLICAS`,
    1,000); the GPUs over all replicas to `req.total_gpu_budget`. The target is a term
    (`Setting.TOKENS_PER_SECOND`, bound `exact`), so a script reads it, and its flag and spec
    field, without parsing the sentence; the sentence is as before (`--output json` contract).
    """
    out = []
    target = Term(Setting.TOKENS_PER_SECOND, req.tokens_per_second)
    cap = req.max_replicas if req.max_replicas is not None else MAX_REPLICAS
    if replicas > cap:
        why = "" if req.max_replicas is not None else " (the most a resource takes)"
        out.append(
            Finding.said(
                Code.TOKENS_TARGET_EXCEEDS_REPLICAS,
                target,
                f" tokens/s at ~{tps:,} tokens/s per replica needs {replicas} replicas; at most "
                f"{cap:,} are allowed{why}",
            )
        )
    total = replicas * layout.gpus
    if req.total_gpu_budget is not None and total > req.total_gpu_budget:
        out.append(
            Finding.said(
                Code.TOKENS_TARGET_EXCEEDS_REPLICAS,
                target,
                f" tokens/s needs {replicas} replicas x {layout.gpus} GPUs = {total} GPUs, over "
                f"the GPU budget of {req.total_gpu_budget}",
            )
        )
    return out
