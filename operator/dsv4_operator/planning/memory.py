"""Per-GPU memory budget, as vLLM computes it (facts §5.3).

    budget     = total device memory x gpu-memory-utilization
    KV pool    = budget - weight shard - activation peak(mnbt) - CUDA-graph estimate - non-torch
    one request (startup check) = compressed blocks for max-model-len + admission state(mnbt)

Activation peak at `max-num-batched-tokens` (mnbt) tokens, bytes:

    engine workspace                                   EngineProfile.workspace_bytes
    + mnbt x per-token bytes                           see `activation_bytes_per_token`
    + V4 prefill gather 4 x (ceil(T/4) + 128 + mnbt) x 512 x 2     (S2, T = max-model-len)
    + top-k indices [mnbt, index_topk] int32                       (S1)
    + sampler: max-num-seqs x vocab x 4 B x sampler_copies

The sampler's runtime peak is not all in that profile: vLLM's profiling run samples one row
per sequence without top-k/top-p or logprobs, while serving samples 1 + k rows per sequence
with MTP, sorts them for top-p and returns logprobs. What that peak holds beyond the larger of
the forward peak and the profiled sampler is `unprofiled_sampler_bytes`; it lands outside the
budget, beside the memory held at start-up:

    rows = max-num-seqs x (1 + speculative tokens)
    runtime  = rows x vocab x sampler_runtime_entry_bytes
               + rows x (max-logprobs + 1) x logprob_entry_bytes
    profiled = max(forward peak,
                   min(mnbt, max-num-seqs) x vocab x sampler_profiled_entry_bytes)
    unprofiled = max(0, runtime - profiled)

Beside that peak (vLLM profiles it after the model is loaded), `DeepseekV4Model.__init__`
allocates the MTP hidden buffer `[mnbt, hc_mult x H]` in the model dtype on the last PP rank,
speculating or not (S1 @023da1fc; facts §3): `mtp_hidden_buffer_bytes`, counted with the
activations in the plan. (Later vLLM versions allocate it only when speculating; counting it
always errs on the safe side.)

Per-token bytes follow the tensors alive at the peak: the mHC residual (3 live copies of
`[hc_mult, H]` bf16, facts §3), the sublayer input/output `[H]`, attention (below), MoE caches per
chosen expert (`[2I']` gate/up, `[I']` activation, `[H]` output, I' = I/(TP x DP) when experts are
split rather than placed whole), fp32 router logits and indexer queries.
Attention keeps two `[heads/TP, 512]` bf16 buffers alive (queries and the attention output, which is
also the grouped output projection's input).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from dsv4_operator.api.v1alpha1.engine import (
    ALL2ALL_BACKENDS,
    DEEPEP_BUFFER_DEFAULT_MIB,
    DEFAULT_MAX_LOGPROBS,
    MOE_DP_CHUNK_DEFAULT_TOKENS,
)
from dsv4_operator.planning.engine import EngineProfile, SchedulingDefaults
from dsv4_operator.planning.models import ModelSpec
from dsv4_operator.planning.weights import WeightBreakdown

__all__ = [
    "Layout",
    "MemoryBreakdown",
    "activation_bytes",
    "activation_bytes_per_token",
    "budget_bytes",
    "cuda_graph_bytes",
    "deepep_low_latency_rdma_bytes",
    "gather_workspace_bytes",
    "mtp_hidden_buffer_bytes",
    "nccl_scaled",
    "overhead_bytes",
    "sampler_bytes",
    "unprofiled_sampler_bytes",
]

_BF16 = 2
_DEEPEP_ALIGN = 128
"""DeepEP's `NUM_BUFFER_ALIGNMENT_BYTES` (csrc/kernels/configs.cuh): 128."""
DEEPEP_WORKSPACE_BYTES = 32 << 20
"""DeepEP's `NUM_WORKSPACE_BYTES` (csrc/kernels/configs.cuh), 32 MiB: every `deep_ep.Buffer`
cudaMallocs this workspace in its constructor (csrc/deep_ep.cpp `Buffer::Buffer`), beside its
NVLink buffer."""


@dataclass(frozen=True, slots=True, order=True)
class Layout:
    """A parallel layout of one replica.

    Attributes:
        nodes: nodes per replica (LeaderWorkerSet group size).
        gpus_per_node: GPUs used on each node.
        tensor_parallel: TP size (inside one node).
        data_parallel: DP size (attention data parallel ranks).
        expert_parallel: routed experts divided by EP = TP x DP.
        pipeline_parallel: PP size (1: the engine does not support PP for this model).
    """

    nodes: int
    gpus_per_node: int
    tensor_parallel: int
    data_parallel: int
    expert_parallel: bool
    pipeline_parallel: int = 1

    @property
    def gpus(self) -> int:
        """GPUs per replica."""
        return self.nodes * self.gpus_per_node

    @property
    def expert_parallel_size(self) -> int:
        """EP size: TP x DP with expert parallel on, else 1."""
        return self.tensor_parallel * self.data_parallel if self.expert_parallel else 1

    @property
    def data_parallel_local(self) -> int:
        """DP ranks on one node (`--data-parallel-size-local`)."""
        return self.gpus_per_node // self.tensor_parallel

    def describe(self) -> str:
        """Short human form, e.g. `2x8 TP8 DP2 EP16`."""
        ep = f" EP{self.expert_parallel_size}" if self.expert_parallel else ""
        pp = f" PP{self.pipeline_parallel}" if self.pipeline_parallel > 1 else ""
        return (
            f"{self.nodes}x{self.gpus_per_node} TP{self.tensor_parallel} "
            f"DP{self.data_parallel}{ep}{pp}"
        )


def budget_bytes(memory_bytes: int, gpu_memory_utilization: float) -> int:
    """`memory_bytes x gpu_memory_utilization`, floored to whole bytes (decimal-exact)."""
    frac = Fraction(str(gpu_memory_utilization))
    return memory_bytes * frac.numerator // frac.denominator


def activation_bytes_per_token(model: ModelSpec, layout: Layout) -> int:
    """Activation bytes per batched token on one GPU (module docstring lists the terms)."""
    h, tp = model.hidden_size, layout.tensor_parallel
    inter = model.moe_intermediate_size
    if not layout.expert_parallel:
        inter //= tp * layout.data_parallel  # vLLM flattens DP x TP for MoE without EP
    residual = 3 * model.hc_mult * h * _BF16
    sublayer = 2 * h * _BF16
    attention = 2 * (model.num_heads // tp) * model.head_dim * _BF16
    moe = model.experts_per_token * (3 * inter + h) * _BF16
    router = model.n_routed_experts * 4
    indexer = model.index_n_heads * model.index_head_dim * _BF16
    return residual + sublayer + attention + moe + router + indexer


def gather_workspace_bytes(
    model: ModelSpec, max_model_len: int, max_num_batched_tokens: int
) -> int:
    """V4 prefill gather workspace `4 x (ceil(T/4) + W + mnbt) x 512 x 2` bytes (S2)."""
    entries = -(-max_model_len // 4) + model.sliding_window + max_num_batched_tokens
    return 4 * entries * model.head_dim * _BF16


def activation_bytes(
    model: ModelSpec,
    layout: Layout,
    engine: EngineProfile,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    max_model_len: int,
) -> int:
    """Peak activation bytes on one GPU while vLLM profiles a batch of mnbt tokens.

    Args:
        model: catalog entry.
        layout: parallel layout.
        engine: engine constants.
        max_num_batched_tokens: mnbt, tokens.
        max_num_seqs: sequences per DP rank.
        max_model_len: context cap, tokens.

    Returns:
        Bytes (the MTP hidden buffer, allocated at model init, is `mtp_hidden_buffer_bytes`).
    """
    m = max_num_batched_tokens
    gather = gather_workspace_bytes(model, max_model_len, m)
    topk = m * model.index_topk * 4
    per_token = activation_bytes_per_token(model, layout)
    forward = engine.workspace_bytes + m * per_token + gather + topk
    return forward + sampler_bytes(model, engine, max_num_seqs)


def sampler_bytes(model: ModelSpec, engine: EngineProfile, max_num_seqs: int) -> int:
    """The sampler's term of `activation_bytes`: max-num-seqs x vocab x 4 B x sampler_copies.

    So `activation_bytes` at max_num_seqs 0 is the forward pass's peak alone.
    """
    return max_num_seqs * model.vocab_size * 4 * engine.sampler_copies


def unprofiled_sampler_bytes(
    model: ModelSpec,
    engine: EngineProfile,
    *,
    forward_bytes: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    speculative_tokens: int = 0,
    max_logprobs: int = DEFAULT_MAX_LOGPROBS,
) -> int:
    """Bytes of the sampler's runtime peak above the peak vLLM's profiling run measures, per GPU.

    The module docstring gives the formula. The forward peak is the plan's own estimate
    (`activation_bytes` at max_num_seqs 0, without its sampler term); the sampler runs after
    the forward pass has released its activations, so only what it holds beyond that peak (or
    beyond the profiled sampler, if larger) is outside vLLM's measurement. A model, not
    measured.

    Args:
        model: catalog entry (`vocab_size`).
        engine: engine constants (`sampler_*_entry_bytes`, `logprob_entry_bytes`).
        forward_bytes: the forward pass's activation peak, bytes.
        max_num_batched_tokens: mnbt, tokens.
        max_num_seqs: sequences per DP rank.
        speculative_tokens: MTP draft tokens k (rows sampled per sequence: 1 + k).
        max_logprobs: vLLM's `--max-logprobs`, logprobs per row a request may ask (0 to 1,024).

    Returns:
        Bytes, at least 0.
    """
    vocab = model.vocab_size
    rows = max_num_seqs * (1 + speculative_tokens)
    runtime = rows * vocab * engine.sampler_runtime_entry_bytes
    runtime += rows * (max_logprobs + 1) * engine.logprob_entry_bytes
    profiled_rows = min(max_num_batched_tokens, max_num_seqs)
    profiled = max(forward_bytes, profiled_rows * vocab * engine.sampler_profiled_entry_bytes)
    return max(0, runtime - profiled)


def mtp_hidden_buffer_bytes(model: ModelSpec, max_num_batched_tokens: int) -> int:
    """Bytes of vLLM's `_mtp_hidden_buffer [mnbt, hc_mult x H]` bf16 on one GPU (last PP rank).

    Allocated by `DeepseekV4Model.__init__` whether or not MTP speculation runs (S1 @023da1fc,
    facts §3): Flash 268,435,456 B and Pro 469,762,048 B at 8,192 batched tokens.
    """
    return max_num_batched_tokens * model.hc_mult * model.hidden_size * _BF16


def cuda_graph_bytes(
    engine: EngineProfile,
    max_num_seqs: int,
    tier: SchedulingDefaults,
    speculative_tokens: int = 0,
    *,
    max_num_batched_tokens: int | None = None,
    pinned: int | None = None,
    interactivity: bool = False,
    cuda_graphs: bool = True,
) -> int:
    """VLLM's CUDA-graph memory estimate: bytes per captured batch size x sizes.

    `pinned` is an explicit `--max-cudagraph-capture-size` (tokens); `interactivity` is
    `--performance-mode=interactivity`; the sizes are `EngineProfile.cudagraph_capture_sizes`.
    Without CUDA graphs (`cuda_graphs` False: `--enforce-eager`, or `cudagraph_mode` NONE) vLLM
    captures none and estimates none: `VllmConfig._set_cudagraph_sizes` sets the sizes to [] and
    `Worker.determine_available_memory` (vllm/v1/worker/gpu_worker.py) profiles graph memory
    only when `cudagraph_mode` is not NONE, so the estimate is 0.
    """
    if not cuda_graphs:
        return 0
    sizes = engine.cudagraph_capture_sizes(
        max_num_seqs,
        tier,
        speculative_tokens,
        max_num_batched_tokens=max_num_batched_tokens,
        pinned=pinned,
        interactivity=interactivity,
    )
    return sizes * engine.cuda_graph_bytes_per_size


def nccl_scaled(engine: EngineProfile, measured: int, buffer_bytes: int | None) -> int:
    """An NCCL figure measured at NCCL's default buffers, for connections of `buffer_bytes`.

    `measured` x `buffer_bytes` / `EngineProfile.nccl_measured_buffer_bytes`, rounded up, when
    the buffers are larger than the defaults (NCCL_BUFFSIZE, NCCL_LL_BUFFSIZE,
    NCCL_LL128_BUFFSIZE: each channel's connection to each peer holds one buffer per protocol);
    `measured` as it is otherwise (None: the defaults). A model, not measured.
    """
    base = engine.nccl_measured_buffer_bytes
    if buffer_bytes is None or buffer_bytes <= base:
        return measured
    return -(-measured * buffer_bytes // base)


def deepep_low_latency_rdma_bytes(tokens: int, hidden: int, experts: int) -> int:
    """DeepEP low-latency's RDMA buffer on one GPU, bytes: `Buffer.get_low_latency_rdma_size_hint`.

    DeepEP csrc/config.hpp (`LowLatencyLayout`, `get_low_latency_rdma_size_hint`, read at
    DeepEP commit 3861241a), sized in BF16; the rank count it takes is unused:

        scales   = hidden / 128
        dispatch = 16 + max(2 x hidden, hidden + 4 x scales)    (int4 header + payload)
        combine  = 4 x scales + 2 x hidden
        send     = max(tokens x dispatch, experts x tokens x combine)
        recv     = max(experts x tokens x dispatch, experts x tokens x combine)
        signal   = align(4 x experts, 128)
        total    = 2 x (send + recv + signal)       (odd/even double buffering)
        hint     = (total + 128) // 128 x 128       (NUM_BUFFER_ALIGNMENT_BYTES)

    vLLM 0.33.0 passes `tokens` = `FusedMoEConfig.max_num_tokens` (`VLLM_MOE_DP_CHUNK_SIZE`,
    default 256), `hidden` = the MoE hidden size (4,096 Flash, 7,168 Pro: both among
    `DeepEPLLPrepareAndFinalize.SUPPORTED_HIDDEN_SIZES`, so not rounded up) and `experts` = the
    global expert count including EPLB's redundant ones (`maybe_make_prepare_finalize`,
    vllm/model_executor/layers/fused_moe/all2all_utils.py). Flash at 256 tokens:
    2,181,040,256 B; Pro: 5,725,228,160 B.

    Args:
        tokens: most tokens one rank dispatches at a time, at least 1.
        hidden: hidden size, a positive multiple of 128 (DeepEP asserts its scales fit).
        experts: global experts, at least 1.

    Returns:
        Bytes.

    Raises:
        ValueError: naming the argument out of range.
    """
    problem = (
        f"tokens: {tokens} must be at least 1"
        if tokens < 1
        else f"hidden: {hidden} must be a positive multiple of 128"
        if hidden < _DEEPEP_ALIGN or hidden % _DEEPEP_ALIGN
        else f"experts: {experts} must be at least 1"
        if experts < 1
        else None
    )
    if problem is not None:
        raise ValueError(problem)
    scales = hidden // 128
    dispatch = 16 + max(hidden * _BF16, hidden + scales * 4)
    combine = scales * 4 + hidden * _BF16
    send = max(tokens * dispatch, experts * tokens * combine)
    recv = max(experts * tokens * dispatch, experts * tokens * combine)
    signal = -(-experts * 4 // _DEEPEP_ALIGN) * _DEEPEP_ALIGN
    total = 2 * (send + recv + signal)
    return (total + _DEEPEP_ALIGN) // _DEEPEP_ALIGN * _DEEPEP_ALIGN


def overhead_bytes(
    engine: EngineProfile,
    layout: Layout,
    *,
    all2all_backend: str = ALL2ALL_BACKENDS[0],
    deepep_buffer_bytes: int = DEEPEP_BUFFER_DEFAULT_MIB << 20,
    nccl_buffer_bytes: int | None = None,
    model: ModelSpec | None = None,
    redundant_experts: int = 0,
    moe_dp_chunk_tokens: int = MOE_DP_CHUNK_DEFAULT_TOKENS,
) -> int:
    """Non-torch memory: library workspaces, NCCL buffers, EP all-to-all buffers, bytes.

    With an all-to-all in use (expert parallel with DP > 1: vLLM's `use_all2all_kernels`), the
    EP term is at least the DeepEP buffers of the backend:

    - `deepep_high_throughput`: `deepep_buffer_bytes` over NVLink and DeepEP's 32 MiB
      workspace, plus `deepep_buffer_bytes` for RDMA when the EP group spans nodes
      (`DeepEPHTAll2AllManager._make_all2all_kwargs`, vllm/distributed/device_communicators/
      all2all.py; `VLLM_DEEPEP_BUFFER_SIZE_MB`, default 1024 MiB).
    - `deepep_low_latency`: `deepep_buffer_bytes` over NVLink, DeepEP's 32 MiB workspace and
      the RDMA buffer `deepep_low_latency_rdma_bytes(moe_dp_chunk_tokens, hidden, experts +
      redundant_experts)` (`DeepEPLLAll2AllManager._make_all2all_kwargs`), on one node or many.
      Needs `model`.

    Other backends keep the `all2all_bytes` allowance (backends whose buffers the plan cannot
    size are refused before this: `ALL2ALL_NOT_COUNTED`). The NCCL allowance scales with
    `nccl_buffer_bytes`, one connection's NCCL buffers (`nccl_scaled`).

    Raises:
        ValueError: `deepep_low_latency` without `model`.
    """
    total = engine.nontorch_base_bytes
    if layout.gpus > 1:
        total += nccl_scaled(engine, engine.nccl_bytes, nccl_buffer_bytes)
        if layout.expert_parallel:
            all2all = engine.all2all_bytes
            if all2all_backend == "deepep_high_throughput" and layout.data_parallel > 1:
                rdma = deepep_buffer_bytes if layout.nodes > 1 else 0
                all2all = max(all2all, deepep_buffer_bytes + DEEPEP_WORKSPACE_BYTES + rdma)
            elif all2all_backend == "deepep_low_latency" and layout.data_parallel > 1:
                if model is None:
                    msg = "model: deepep_low_latency buffers depend on the model"
                    raise ValueError(msg)
                rdma = deepep_low_latency_rdma_bytes(
                    moe_dp_chunk_tokens,
                    model.hidden_size,
                    model.n_routed_experts + redundant_experts,
                )
                all2all = max(all2all, deepep_buffer_bytes + DEEPEP_WORKSPACE_BYTES + rdma)
            total += all2all
    return total


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    """Where one GPU's memory goes under a layout, bytes.

    Attributes:
        memory_bytes: total device memory as the CUDA runtime reports it (what vLLM multiplies).
        gpu_memory_utilization: fraction of it vLLM may use.
        budget_bytes: memory_bytes x gpu_memory_utilization.
        weights: weight bytes by placement.
        activation_bytes: activation peak at mnbt, plus the MTP hidden buffer.
        cuda_graph_bytes: CUDA-graph estimate.
        overhead_bytes: non-torch memory.
        unprofiled_bytes: the sampler's runtime peak above vLLM's profiled peak
            (`unprofiled_sampler_bytes`): not in the budget, it must fit outside it.
    """

    memory_bytes: int
    gpu_memory_utilization: float
    budget_bytes: int
    weights: WeightBreakdown
    activation_bytes: int
    cuda_graph_bytes: int
    overhead_bytes: int
    unprofiled_bytes: int = 0

    @property
    def non_kv_bytes(self) -> int:
        """Everything but the KV pool, bytes."""
        return (
            self.weights.total_bytes
            + self.activation_bytes
            + self.cuda_graph_bytes
            + self.overhead_bytes
        )

    @property
    def kv_cache_bytes(self) -> int:
        """KV pool, bytes (negative when the rest does not fit the budget)."""
        return self.budget_bytes - self.non_kv_bytes

    def min_utilization(self, kv_bytes_needed: int) -> float:
        """Smallest gpu-memory-utilization (rounded up to 1e-4) leaving `kv_bytes_needed` of KV."""
        need = Fraction(self.non_kv_bytes + kv_bytes_needed, self.memory_bytes)
        return float(-(-need * 10_000 // 1)) / 10_000
