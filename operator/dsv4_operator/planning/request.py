"""What the planner is asked: model, formats, targets, GPU pools and optional pinned layout."""

from __future__ import annotations

from dataclasses import dataclass, field

from dsv4_operator.api.v1alpha1.engine import (
    ALL2ALL_BACKENDS,
    DEEPEP_BUFFER_DEFAULT_MIB,
    DEFAULT_MAX_LOGPROBS,
    MOE_DP_CHUNK_DEFAULT_TOKENS,
    NCCL_DEFAULT_BUFFER_BYTES,
    PERFORMANCE_MODES,
)
from dsv4_operator.planning.engine import VLLM_0_33, EngineProfile
from dsv4_operator.planning.hardware import GpuType

__all__ = ["DEFAULT_MAX_NODES", "PlanRequest"]

DEFAULT_MAX_NODES = 4
"""Nodes per replica searched when the request does not say (`--nodes`, `spec.gpu.maxNodes`)."""


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Inputs of one planning run. `None` means "planner's choice" or "engine default".

    Attributes:
        model: `flash` or `pro`.
        weights_format: `official`, `nvfp4`, `fp8`, `bf16` or `int4`.
        kv_cache_dtype: `fp8` (fp8_ds_mla) or `bf16`.
        indexer_cache_dtype: lightning-indexer key cache: `fp8` (default), `mxfp4`, `bf16`.
        gpu_types: GPU type names in order of preference (fallback list).
        custom_gpus: GPU types described inline, matched before the catalog.
        gpus_per_node: GPUs per node; None = the type's typical node.
        max_nodes: largest number of nodes per replica to consider.
        gpu_budget: most GPUs one replica may use; None = unbounded.
        tensor_parallel: pinned TP size.
        data_parallel: pinned DP size.
        pipeline_parallel: pinned PP size.
        expert_parallel: pinned expert parallel on/off.
        max_model_len: context cap, tokens; None = `auto` (largest that fits, up to 1,048,576).
        max_num_seqs: sequences per DP rank; None = from the concurrency target or capacity.
        max_num_batched_tokens: tokens per engine step; None = engine default.
        gpu_memory_utilization: fraction of device memory vLLM may use; None = engine default.
        speculative_tokens: MTP draft tokens (0 = off).
        concurrency: target concurrent requests at max-model-len per replica.
        tokens_per_second: target generation throughput, tokens/s (over all replicas).
        max_replicas: most replicas the tokens/s target may use, 1 to 1,000 (None: the
            resource's most, `api.v1alpha1.scaling.MAX_REPLICAS`, 1,000).
        total_gpu_budget: most GPUs all replicas may hold, 1 to 100,000 (None: unbounded).
        cpu_offload_bytes: weights offloaded to host memory per GPU (`--cpu-offload-gb`), bytes.
        prefetch_offload: vLLM's prefetch weight offloader as (`--offload-group-size`,
            `--offload-num-in-group`, `--offload-prefetch-step`), layers, or None when it is
            off (`EngineSpec.prefetch_offload`): its pinned host copies go into the pod's
            memory request and its GPU buffer pool into the weights (`planning.offload`).
        kv_offloading_gib: host KV cache per engine (DP rank), over all its TP ranks, GiB
            (vLLM's `--kv-offloading-size`, or `cpu_bytes_to_use` of an offloading
            `--kv-transfer-config` over 2^30): the pod's /dev/shm and memory grow by it times
            the engines on the pod (`ShmPlan.kv_offload_bytes`).
        kv_offload_rank_bytes: host KV cache per TP rank of every engine, bytes
            (`cpu_bytes_to_use_per_rank` of vLLM's `SimpleCPUOffloadConnector`, which overrides
            its per-engine `cpu_bytes_to_use`): the pod's /dev/shm and memory grow by it times
            the TP ranks of an engine times the engines on the pod.
        host_kv_not_counted: the host KV caches the engine keeps that the plan cannot size, each
            described (`EngineSpec.kv_offload_not_counted`: LMCache, another offloading spec,
            a per-rank size): vLLM runs them, the pod's memory request leaves them out, and
            the plan warns (`HOST_KV_NOT_COUNTED`).
        max_cudagraph_capture_size: largest CUDA-graph batch, tokens (`--max-cudagraph-capture-
            size`); None = vLLM's default, which the plan computes and the renderer pins.
        performance_mode: vLLM's `--performance-mode` (`balanced`, `interactivity`,
            `throughput`; `EngineProfile`'s `PERFORMANCE_MODES`): `interactivity` captures every
            CUDA-graph size from 1 to 32 tokens, which the plan counts.
        cuda_graphs: False when the engine captures no CUDA graphs (`--enforce-eager`,
            `cudagraph_mode` NONE, `--optimization-level=0`): the plan then counts no graph
            memory.
        eplb: vLLM's expert-parallel load balancing (`--enable-eplb`): EP layouts only, and
            one MoE layer's local experts per GPU as its transfer buffer.
        redundant_experts: `num_redundant_experts` of `--eplb-config` (R, needs `eplb`): every
            MoE layer holds E + R physical experts, (E + R) / EP per GPU.
        all2all_backend: vLLM's `--all2all-backend`; `deepep_high_throughput` adds DeepEP
            buffers of `deepep_buffer_bytes` (twice over nodes) and DeepEP's 32 MiB workspace
            beyond the EP allowance, and
            `deepep_low_latency` one of `deepep_buffer_bytes`, DeepEP's 32 MiB workspace and
            the low-latency RDMA buffer (`memory.deepep_low_latency_rdma_bytes`). The backends
            of `ALL2ALL_NOT_COUNTED`, whose buffers the plan does not size, are refused.
        deepep_buffer_bytes: one DeepEP buffer, bytes (`VLLM_DEEPEP_BUFFER_SIZE_MB`).
        moe_dp_chunk_tokens: vLLM's `VLLM_MOE_DP_CHUNK_SIZE` (default 256), tokens one DP rank
            dispatches at a time: sizes DeepEP low-latency's RDMA buffer. At least 1.
        nccl_buffer_bytes: one NCCL connection's buffers (NCCL_BUFFSIZE + NCCL_LL_BUFFSIZE +
            NCCL_LL128_BUFFSIZE), bytes; NCCL's defaults 9,633,792. Larger values scale the
            plan's NCCL figures (measured at the defaults) by their ratio.
        nvls: True when the engine's environment lets NCCL use NVLink SHARP (`NCCL_NVLS_ENABLE`
            other than 0), whose multicast buffers the plan does not count (warning
            `NVLS_NOT_COUNTED`); the operator turns it off otherwise.
        async_scheduling: vLLM's `--async-scheduling` (True) or `--no-async-scheduling`
            (False) from extraArgs; None leaves it to vLLM (`evaluate.concurrent_batches`).
        dual_batch_overlap: vLLM's `--enable-dbo` from extraArgs (read for async scheduling).
        max_logprobs: vLLM's `--max-logprobs`, the most logprobs a request may ask per token
            (default 20), 0 to 1,024: counted in the sampler's unprofiled peak. vLLM's -1 (no
            cap, up to the whole vocabulary) is refused.
        weights_download: every node downloads the checkpoint (Hugging Face Hub) at first boot,
            which the startup budget allows for; False when it is read from a volume.
        usd_per_gpu_hour: price per GPU type (decimal strings), used to rank across types.
        engine: engine constants.
        engine_version: engine version that will run, checked against the engine's floor.
        transformers_version: transformers version in the image, checked against its floor.
    """

    model: str = "flash"
    weights_format: str = "official"
    kv_cache_dtype: str = "fp8"
    indexer_cache_dtype: str = "fp8"
    gpu_types: tuple[str, ...] = ("h100-80gb",)
    custom_gpus: tuple[GpuType, ...] = ()
    gpus_per_node: int | None = None
    max_nodes: int = DEFAULT_MAX_NODES
    gpu_budget: int | None = None
    tensor_parallel: int | None = None
    data_parallel: int | None = None
    pipeline_parallel: int | None = None
    expert_parallel: bool | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    speculative_tokens: int = 0
    concurrency: int | None = None
    tokens_per_second: int | None = None
    max_replicas: int | None = None
    total_gpu_budget: int | None = None
    cpu_offload_bytes: int = 0
    prefetch_offload: tuple[int, int, int] | None = None
    kv_offloading_gib: float = 0.0
    kv_offload_rank_bytes: int = 0
    host_kv_not_counted: tuple[str, ...] = ()
    max_cudagraph_capture_size: int | None = None
    performance_mode: str = PERFORMANCE_MODES[0]
    cuda_graphs: bool = True
    eplb: bool = False
    redundant_experts: int = 0
    all2all_backend: str = ALL2ALL_BACKENDS[0]
    deepep_buffer_bytes: int = DEEPEP_BUFFER_DEFAULT_MIB << 20
    moe_dp_chunk_tokens: int = MOE_DP_CHUNK_DEFAULT_TOKENS
    async_scheduling: bool | None = None
    dual_batch_overlap: bool = False
    max_logprobs: int = DEFAULT_MAX_LOGPROBS
    nccl_buffer_bytes: int = NCCL_DEFAULT_BUFFER_BYTES
    nvls: bool = False
    weights_download: bool = False
    usd_per_gpu_hour: dict[str, str] = field(default_factory=dict)
    engine: EngineProfile = VLLM_0_33
    engine_version: str | None = None
    transformers_version: str | None = None

    @property
    def interactivity(self) -> bool:
        """`--performance-mode=interactivity`: vLLM captures every CUDA-graph size up to 32."""
        return self.performance_mode == "interactivity"

    @property
    def pinned(self) -> bool:
        """True when any layout dimension is pinned."""
        return any(
            x is not None
            for x in (
                self.tensor_parallel,
                self.data_parallel,
                self.pipeline_parallel,
                self.expert_parallel,
            )
        )
