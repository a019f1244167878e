"""Engine-version-dependent constants of the memory model, each named, with its source.

vLLM measures memory while profiling (facts §5.3); the planner must predict that measurement before
any GPU is bought. Everything that varies by engine version is a field of `EngineProfile` with a
documented default, never a literal in the arithmetic, so a newer engine is a new profile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dsv4_operator.api.v1alpha1.engine import NCCL_DEFAULT_BUFFER_BYTES, PERFORMANCE_MODES
from dsv4_operator.api.v1alpha1.vllm_cli import VLLM_VERSION
from dsv4_operator.api.versions import parse_version

__all__ = [
    "INTERACTIVITY_FINE_MAX",
    "PERFORMANCE_MODES",
    "VLLM_0_33",
    "EngineProfile",
    "SchedulingDefaults",
    "parse_version",
]

_GIB = 1 << 30
_MIB = 1 << 20

INTERACTIVITY_FINE_MAX = 32
"""With `--performance-mode=interactivity` vLLM captures every size from 1 to min(cap, 32),
tokens, instead of 1, 2, 4 and every 8 (`interactivity_max = min(max_cudagraph_capture_size,
32)` in `VllmConfig._set_cudagraph_sizes`, vllm/config/vllm.py at 000fc94b)."""


def _grid(largest: int) -> set[int]:
    """The capture grid of vLLM up to `largest`: 1, 2, 4, every 8 below 256, every 16 from 256."""
    return (
        {s for s in (1, 2, 4) if s <= largest}
        | set(range(8, min(largest + 1, 256), 8))
        | set(range(256, largest + 1, 16))
    )


def _fine(limit: int) -> set[int]:
    """The sizes interactivity captures below the grid: 1 to min(`limit`, 32), tokens."""
    return set(range(1, min(limit, INTERACTIVITY_FINE_MAX) + 1))


def _counted_sizes(largest: int) -> int:
    """Capture sizes up to `largest` as the plan counts them: 1, 2, 4 and every 8.

    vLLM steps by 16 from 256, so counting every 8 there errs on the safe side.
    """
    return sum(1 for s in (1, 2, 4) if s <= largest) + largest // 8


@dataclass(frozen=True, slots=True)
class SchedulingDefaults:
    """vLLM's scheduling defaults for one accelerator memory tier (`vllm serve` context).

    Attributes:
        min_memory_bytes: smallest device memory of the tier, bytes.
        max_num_batched_tokens: default `--max-num-batched-tokens`, tokens.
        max_num_seqs: default `--max-num-seqs`, sequences.
        max_cudagraph_capture_size: largest batch size captured in a CUDA graph.
        excludes_a100: A100s are kept in the compact tier whatever their memory (vLLM PR #17885).
    """

    min_memory_bytes: int
    max_num_batched_tokens: int
    max_num_seqs: int
    max_cudagraph_capture_size: int
    excludes_a100: bool = True


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """Memory and behaviour constants of one inference engine version.

    Attributes:
        name: engine name (`vllm`).
        version: engine version the constants were read from.
        default_gpu_memory_utilization: `--gpu-memory-utilization` default (0.92 in vLLM
            0.33.0's `vllm serve` parser, shared/fixtures/vllm/vllm-0.33.0-serve-flags.json).
        scheduling: memory tiers, largest first, as vLLM's `infer_accelerator_scheduling_defaults`
            (vllm `config/scheduler` hardware defaults: >= 70 GiB and not A100: 8192 tokens, 1024
            seqs, graphs to 512; >= 40 GiB and not A100: 4096, 512, 256; else 2048, 256, 128).
        workspace_bytes: activation peak that does not scale with the batch (MoE, GEMM and attention
            workspaces), bytes. Calibrated so that the Pro TP8 MI355X recipe's published peaks (8.9
            GiB
            at mnbt 8192, 11.44 GiB at 16384; facts §5.2) are reproduced within 5 % together with
            the
            per-token, sampler, gather and top-k terms: 3 GiB.
        sampler_copies: vocabulary-sized fp32 buffers per sequence alive at the sampler's peak
            (logits, probabilities, sort values and int64 indices, top-p cumsum, noise): 8,
            counted from vLLM's sampler code path, not measured. The plan counts them inside
            the budget; vLLM's profiling run sees only `sampler_profiled_entry_bytes` of them,
            so what the runtime peak holds beyond the profiled peak is counted outside the
            budget as well (`memory.unprofiled_sampler_bytes`).
        sampler_runtime_entry_bytes: bytes per vocabulary entry per sampled logits row at the
            sampler's runtime peak with top-p (vLLM 0.33.0 runs Model Runner V2 for
            DeepseekV4ForCausalLM on CUDA: `VllmConfig.use_v2_model_runner`, vllm/config/vllm.py
            @000fc94b): the logits from `compute_logits` (bf16, 2), their FP32 copy
            (`Sampler.sample`, vllm/v1/worker/gpu/sample/sampler.py, 4), and
            `apply_top_k_top_p`'s sort (vllm/v1/sample/ops/topk_topp_sampler.py: sorted FP32
            values and int64 indices, 12, with the sort's input copies, 12): 30, once any request
            of the batch asks for top-p (a client's `top_p`, or a default from the model's
            generation config, which vLLM applies unless told not to). Counted from the code
            path, not measured.
        sampler_profiled_entry_bytes: what vLLM's profiling run sees of the same, per entry per
            row: 6 (logits and their FP32 copy). Model Runner V2's `_dummy_sampler_run` runs the
            sampler with dummy request states ("the sampler may skip top_k, top_p, and logprobs,
            using less GPU memory than what is possible during actual execution"), one row per
            sequence (min(mnbt, max-num-seqs) rows), and never the 1 + k rows per sequence of
            MTP's rejection sampling.
        logprob_entry_bytes: bytes per sampled row per returned logprob (`--max-logprobs`, the
            most a request may ask, vLLM's default 20): torch.topk's FP32 values and int64
            indices, the int64 ids with the sampled token and the FP32 logprobs
            (`compute_topk_logprobs`, vllm/v1/worker/gpu/sample/logprob.py, which does not
            materialise full-vocabulary logprobs): 24.
        cuda_graph_bytes_per_size: memory per captured CUDA-graph batch size beyond the shared pool,
            bytes (vLLM's estimate since v0.21, PR #30515; 8 MiB is conservative for 60-layer MoE).
        blackwell_max_cudagraph_capture_size: the CUDA-graph capture cap on data-centre
            Blackwell (compute capability 10.x: B200, GB200) where other GPUs of the tier get
            512: 1024 (vLLM PR #49390, merged 2026-07-22, "Raise Blackwell CUDA graph capture
            default to 1024"; the max-num-seqs x decode-query-length x 2 bound still applies).
        nontorch_base_bytes: cuBLAS/cuDNN workspaces and allocator slack outside torch, bytes.
            An allowance, not measured: 512 MiB. (The start-up measurement in
            `benchmarks/reports/2026-11-30-startup-memory-h200.md` shows cuBLAS's handle and
            workspace at about 100 MB.)
        nccl_bytes: NCCL buffers created after vLLM's start-up snapshot (lazily connected
            channels of its groups) when the world size exceeds 1, bytes. An allowance of
            512 MiB. Measured on 2 H200 ranks (`benchmarks/startup_memory.py --sweep`,
            report in `benchmarks/reports/`): after the warm-up, all-reduces of 1 KiB to
            256 MiB, all-gather and reduce-scatter (torch's equal-size ones; vLLM's
            variable-size all_gatherv / reduce_scatterv not measured) connected nothing
            more; only an all-to-all did (467,664,896 B for one peer), which vLLM's default
            EP backend (allgather_reducescatter) does not use. More ranks not measured. The buffers
            that exist before the snapshot are `startup_nccl_first_bytes` and
            `startup_nccl_group_bytes`.
        nccl_measured_buffer_bytes: one NCCL connection's protocol buffers (Simple + LL + LL128
            per channel and peer) at which the NCCL figures here were measured: NCCL's defaults,
            4,194,304 + 524,288 + 4,915,200 = 9,633,792 B (`NCCL_BUFFER_DEFAULTS`). Larger
            buffers from `spec.engine.env` scale `nccl_bytes`, `startup_nccl_first_bytes` and
            `startup_nccl_group_bytes` by their ratio to this (`memory.nccl_scaled`), a model:
            the measured figures also hold memory that does not grow with the buffers, so the
            scaled figure errs high. Smaller buffers keep the measured figures.
        all2all_bytes: expert-parallel dispatch/combine buffers when EP > 1, bytes. An
            allowance, not measured: 1 GiB.
        startup_context_bytes: device memory a worker process holds before vLLM's start-up
            snapshot on one GPU: the CUDA context and torch's first allocation, bytes. vLLM
            refuses to start unless the memory free at that snapshot is at least total x
            gpu-memory-utilization (`Worker.init_device` / `request_memory`, vllm/v1/worker:
            "Free memory on device ... on startup is less than desired GPU memory
            utilization"), so this must fit in total x (1 - utilization). Measured on an H200
            (torch 2.11.0+cu130, 2026-11-30, `benchmarks/startup_memory.py`): 651,034,624 B.
        startup_nccl_first_bytes: NCCL buffers a worker also holds at that snapshot once its
            first communicator is warmed (vLLM initialises its process groups, with a warm-up
            collective on each, before the snapshot), when its replica spans several GPUs over
            NVLink/NVSwitch, bytes: 880,803,840 measured on 2 H200 ranks.
        startup_nccl_group_bytes: each further warmed communicator (one per parallel group of
            more than one rank: TP, DP, EP, PP), bytes: 509,607,936 measured on 2 H200 ranks
            (the larger of two alternating steps). More ranks per group may hold more (not
            measured: 2 GPUs were available). Not measured for PCIe-only GPUs, whose NCCL
            transport buffers sit in host memory (SHM), and not applied to them.
        max_concurrent_batches: batches of max-num-batched-tokens in flight at once, which the
            window and compressor-state KV groups reserve blocks for at admission
            (`VllmConfig.max_in_flight_tokens` = this x mnbt, read by
            `SlidingWindowSpec.max_admission_blocks_per_request`) with async scheduling and no
            PP: 2 in vLLM 0.33.0 (`VllmConfig.max_concurrent_batches`: PP size + 1 on Model
            Runner V2, 2 on V1 without PP, the PP size without async scheduling; vllm/config/
            vllm.py in the 0.33.0 wheel). When async scheduling is on: `evaluate.
            concurrent_batches`.
        pipeline_parallel: whether the engine supports PP for DeepseekV4ForCausalLM (vLLM 0.33: no).
        min_version: first engine release with DeepseekV4ForCausalLM (vLLM 0.20.0, PR #40760).
        min_transformers_exclusive: transformers must be newer than this (4.51.1), else
            "Unrecognized model architecture".
        mtp_hang_max_model_len: above this max-model-len, MTP speculation hangs on one published
            engine image: 65,536 tokens (as issue 2 states it; the facts document and the
            recipes do not describe the hang).
        mtp_safe_max_model_len: the cap recommended instead when keeping MTP: 32,768 tokens.
        warmup_seconds: first-boot kernel JIT/compile and CUDA-graph capture on big layouts, s
            (10+ minutes reported for DeepSeek-V4; OME allows about 20 min).
        load_bytes_per_s: weight read rate per node from a PVC or node-local cache, bytes/s.
        download_bytes_per_s: Hugging Face Hub download rate per node, bytes/s, for the first
            boot's budget: 250 MB/s (2 Gbit/s), an assumption, not measured; a slower download
            is retried by the startup probe's restarts, which keep the pod's cache.
        decode_bandwidth_efficiency: fraction of peak memory bandwidth a decode step reaches; used
            only to rank layouts by expected throughput (FlashMLA-class kernels reach 0.3-0.98 of
            it,
            shared/docs/kernel-yardstick.md; 0.5 is a middle value).
        min_auto_max_model_len: `max-model-len auto` is refused below this many tokens (4,096): a
            layout that only holds shorter requests is reported as not fitting.
    """

    name: str
    version: str
    default_gpu_memory_utilization: float
    scheduling: tuple[SchedulingDefaults, ...]
    workspace_bytes: int
    sampler_copies: int
    sampler_runtime_entry_bytes: int
    sampler_profiled_entry_bytes: int
    logprob_entry_bytes: int
    cuda_graph_bytes_per_size: int
    blackwell_max_cudagraph_capture_size: int
    nontorch_base_bytes: int
    nccl_bytes: int
    nccl_measured_buffer_bytes: int
    all2all_bytes: int
    startup_context_bytes: int
    startup_nccl_first_bytes: int
    startup_nccl_group_bytes: int
    max_concurrent_batches: int
    pipeline_parallel: bool
    min_version: str
    min_transformers_exclusive: str
    mtp_hang_max_model_len: int
    mtp_safe_max_model_len: int
    warmup_seconds: int
    load_bytes_per_s: int
    download_bytes_per_s: int
    decode_bandwidth_efficiency: float
    min_auto_max_model_len: int

    def scheduling_defaults(
        self, memory_bytes: int, gpu_name: str, arch: str = ""
    ) -> SchedulingDefaults:
        """The tier vLLM picks for a device of `memory_bytes` named `gpu_name`.

        On data-centre Blackwell (`arch` sm100, compute capability 10.x) a tier's CUDA-graph
        capture cap of 512 becomes `blackwell_max_cudagraph_capture_size`.
        """
        is_a100 = "a100" in gpu_name.lower()
        found = self.scheduling[-1]
        for tier in self.scheduling:
            if memory_bytes >= tier.min_memory_bytes and not (is_a100 and tier.excludes_a100):
                found = tier
                break
        if arch.startswith("sm10") and found.max_cudagraph_capture_size == 512:
            return replace(
                found, max_cudagraph_capture_size=self.blackwell_max_cudagraph_capture_size
            )
        return found

    @staticmethod
    def max_cudagraph_capture_size(
        max_num_seqs: int,
        tier: SchedulingDefaults,
        speculative_tokens: int = 0,
        *,
        max_num_batched_tokens: int | None = None,
        pinned: int | None = None,
        interactivity: bool = False,
    ) -> int:
        """Largest batch captured in a CUDA graph, tokens (`--max-cudagraph-capture-size`).

        The plan counts graphs up to it and the renderer passes it. vLLM's
        `VllmConfig._set_cudagraph_sizes` (vllm/config/vllm.py) takes an explicit cap (`pinned`)
        as given, else min(max-num-seqs x (1 + speculative tokens) x 2, the tier's cap): graphs
        are sized in tokens, `decode_query_len` = 1 + num_speculative_tokens per decoding
        sequence. Either is then at most max-num-batched-tokens. vLLM captures 1, 2, 4, every 8
        below 256 and every 16 from 256, and max-num-batched-tokens itself when it is within
        the cap ("ensure max_num_tokens is captured"), so that bound is the final cap as it is;
        otherwise the final cap is the largest grid size at or below the limit (an explicit cap
        off that grid is logged as truncated), so the result is rounded down to the grid.
        With `interactivity` (`--performance-mode=interactivity`) vLLM captures every size up
        to min(limit, 32), so a limit of at most 32 is the final cap as it is.
        """
        if pinned is not None:
            largest = pinned
        else:
            per_seq = 2 * (1 + speculative_tokens)
            largest = min(per_seq * max_num_seqs, tier.max_cudagraph_capture_size)
        if max_num_batched_tokens is not None and max_num_batched_tokens <= largest:
            return max_num_batched_tokens
        if interactivity and largest <= INTERACTIVITY_FINE_MAX:
            return largest
        return max(_grid(largest), default=0)

    @staticmethod
    def speculative_capture_list(
        max_num_seqs: int,
        tier: SchedulingDefaults,
        speculative_tokens: int,
        *,
        max_num_batched_tokens: int,
        interactivity: bool = False,
    ) -> tuple[int, ...]:
        """Default capture sizes of vLLM with speculation, tokens, ascending.

        As `VllmConfig._set_cudagraph_sizes` infers them when no cap is given (vllm/config/
        vllm.py at 000fc94b, after PR #50488): the grid (1, 2, 4, every 8 below 256, every 16
        from 256) up to the cap, max-num-batched-tokens when within it, and every uniform
        decode batch n x (1 + k) for request counts n on the same grid up to max-num-seqs (and
        max-num-seqs itself) that fits the cap before max-num-batched-tokens bounds it. An
        explicit `--max-cudagraph-capture-size` drops those decode sizes (vLLM issue #54933),
        so a plan with speculation pins this list instead. With `interactivity` the list also
        holds every size from 1 to min(cap, 32) (vLLM's interactivity default): vLLM takes a
        given list as it is in every performance mode, so the pinned list must carry them.
        """
        query = 1 + speculative_tokens
        default_cap = tier.max_cudagraph_capture_size
        cap = min(max_num_seqs * query * 2, default_cap)
        most = min(max_num_seqs, default_cap)
        counts = _grid(most) | {most}
        decode = {n * query for n in counts if n * query <= cap}
        cap = min(cap, max_num_batched_tokens)
        sizes = _grid(cap) | {d for d in decode if d <= max_num_batched_tokens}
        if interactivity:
            sizes |= _fine(cap)
        if max_num_batched_tokens <= cap:
            sizes.add(max_num_batched_tokens)
        return tuple(sorted(sizes))

    @staticmethod
    def cudagraph_capture_sizes(
        max_num_seqs: int,
        tier: SchedulingDefaults,
        speculative_tokens: int = 0,
        *,
        max_num_batched_tokens: int | None = None,
        pinned: int | None = None,
        interactivity: bool = False,
    ) -> int:
        """Number of batch sizes captured: 1, 2, 4, then every 8 up to the largest.

        The largest is `max_cudagraph_capture_size`. vLLM steps by 16 above 256; counting every
        8 there errs on the safe side. A largest off that grid (max-num-batched-tokens, which
        vLLM captures too) counts the grid below it plus itself. With speculation and no pinned
        cap, at least the length of `speculative_capture_list` (its decode sizes may lie off the
        grid). With `interactivity` and a cap (no list), also every size from 1 to min(largest,
        32) that the grid lacks: exact while the largest is at most 256.
        """
        largest = EngineProfile.max_cudagraph_capture_size(
            max_num_seqs,
            tier,
            speculative_tokens,
            max_num_batched_tokens=max_num_batched_tokens,
            pinned=pinned,
            interactivity=interactivity,
        )
        # an off-grid max-num-batched-tokens adds one to the grid below it
        stepped = _grid(largest) | {largest}
        count = max(_counted_sizes(largest), len(stepped))
        if speculative_tokens > 0 and pinned is None and max_num_batched_tokens is not None:
            listed = EngineProfile.speculative_capture_list(
                max_num_seqs,
                tier,
                speculative_tokens,
                max_num_batched_tokens=max_num_batched_tokens,
                interactivity=interactivity,
            )
            return max(count, len(listed), _counted_sizes(listed[-1]))
        if interactivity:
            count += len(_fine(largest) - stepped)
        return count


VLLM_0_33 = EngineProfile(
    name="vllm",
    version=VLLM_VERSION,
    default_gpu_memory_utilization=0.92,
    scheduling=(
        SchedulingDefaults(70 * _GIB, 8192, 1024, 512),
        SchedulingDefaults(40 * _GIB, 4096, 512, 256),
        SchedulingDefaults(0, 2048, 256, 128, excludes_a100=False),
    ),
    workspace_bytes=3 * _GIB,
    sampler_copies=8,
    sampler_runtime_entry_bytes=30,
    sampler_profiled_entry_bytes=6,
    logprob_entry_bytes=24,
    cuda_graph_bytes_per_size=8 * _MIB,
    blackwell_max_cudagraph_capture_size=1024,
    nontorch_base_bytes=512 * _MIB,
    nccl_bytes=512 * _MIB,
    nccl_measured_buffer_bytes=NCCL_DEFAULT_BUFFER_BYTES,
    all2all_bytes=1 * _GIB,
    startup_context_bytes=651_034_624,
    startup_nccl_first_bytes=880_803_840,
    startup_nccl_group_bytes=509_607_936,
    max_concurrent_batches=2,
    pipeline_parallel=False,
    min_version="0.20.0",
    min_transformers_exclusive="4.51.1",
    mtp_hang_max_model_len=65_536,
    mtp_safe_max_model_len=32_768,
    warmup_seconds=600,
    load_bytes_per_s=2_000_000_000,
    download_bytes_per_s=250_000_000,
    decode_bandwidth_efficiency=0.5,
    min_auto_max_model_len=4096,
)
"""The engine the runtime image pins (vLLM 0.33.0)."""
