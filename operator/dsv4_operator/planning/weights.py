"""Weight formats: bytes per tensor family (scales included), on disk and in GPU memory.

Bytes per element, as exact fractions so that every byte count is an integer (facts §4, §7.1).
MXFP4 = e2m1 + one UE8M0 scale per 32 values; NVFP4 = e2m1 + one e4m3 scale per 16; block-FP8 = e4m3
+ one UE8M0 scale per 128x128 block.

| storage / format | official | nvfp4 | fp8 | bf16 | int4 (w4a16) |
|---|---|---|---|---|---|
| routed experts | MXFP4 17/32 | NVFP4 9/16 | 16385/16384 | 2 | 33/64 |
| other linears | FP8 16385/16384 | same | same | 2 | 33/64 |
| embeddings, router, compressor/indexer projections, norms | 2 | 2 | 2 | 2 | 2 |
| mHC, positional bias, sinks, router bias | 4 | 4 | 4 | 4 | 4 |
| hash-routing table tid2eid | 8 | 8 | 8 | 8 | 8 |

`int4` is w4a16 with group size 128 and one BF16 scale per group (0.5 + 2/128 B), applied to the
routed experts and every linear that is FP8 in the official checkpoint.
NVFP4 adds two fp32 per-tensor scales (`weight_scale_2`, `input_scale`) to each expert matrix.

In-GPU format (the rule per GPU architecture, `repack_rule`): an engine keeps a format it has
kernels
for, natively or weight-only:

- FP8 linears stay FP8 everywhere in the catalog: natively on sm89/sm90/sm100/sm120 and CDNA3/4
  (e4m3fn is converted in place to e4m3fnuz on gfx942, same bytes), as weight-only FP8 Marlin
  (w8a16)
  on sm80/sm86, which keeps 1 B per weight.
- MXFP4/NVFP4 experts stay packed on every NVIDIA GPU: natively on sm100/sm120, as weight-only FP4
  Marlin (w4a16) on sm80-sm90, same bytes.
- On AMD GPUs without FP4 matrix cores (gfx942, MI300X) MXFP4 experts stay packed too: vLLM's
  MXFP4 MoE runs them weight-only, dequantising in the kernel (vLLM issue #41961 loads
  DeepSeek-V4-Flash's MXFP4 expert scales on MI325X; PR #57079 measures DS4-Flash at TP1 on a
  256 GB MI325, which only packed experts fit; load-time dequantisation is opt-in, PR #50814).
  NVFP4 experts, for which no gfx942 path is documented, are counted as dequantised to
  block-FP8 on load (16385/16384 B per weight): the larger figure. gfx950 (MI355X) runs MXFP4
  natively.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

from dsv4_operator.planning.models import ModelSpec, ParamGroup, Placement, Storage

if TYPE_CHECKING:
    from dsv4_operator.api.v1alpha1.enums import WeightsFormat
    from dsv4_operator.planning.hardware import GpuType

__all__ = [
    "BYTES_PER_ELEMENT",
    "WeightBreakdown",
    "checkpoint_bytes",
    "element_bytes",
    "in_gpu_format",
    "layer_weight_bytes",
    "per_gpu_weight_bytes",
    "repack_rule",
]

_FP8_BLOCK = Fraction(16385, 16384)  # 1 B + one UE8M0 scale byte per 128x128 block
_MXFP4 = Fraction(17, 32)  # 0.5 B + one UE8M0 scale byte per 32 values
_NVFP4 = Fraction(9, 16)  # 0.5 B + one e4m3 scale byte per 16 values
_INT4_G128 = Fraction(33, 64)  # 0.5 B + one BF16 scale (2 B) per 128 values

BYTES_PER_ELEMENT: dict[str, dict[Storage, Fraction]] = {
    "official": {Storage.EXPERT: _MXFP4, Storage.LINEAR: _FP8_BLOCK},
    "nvfp4": {Storage.EXPERT: _NVFP4, Storage.LINEAR: _FP8_BLOCK},
    "fp8": {Storage.EXPERT: _FP8_BLOCK, Storage.LINEAR: _FP8_BLOCK},
    "bf16": {Storage.EXPERT: Fraction(2), Storage.LINEAR: Fraction(2)},
    "int4": {Storage.EXPERT: _INT4_G128, Storage.LINEAR: _INT4_G128},
}
"""Bytes per element of the quantised storage classes, per weights format."""

_FIXED: dict[Storage, Fraction] = {
    Storage.BF16: Fraction(2),
    Storage.FP32: Fraction(4),
    Storage.INT64: Fraction(8),
}
_NVFP4_TENSOR_SCALE_BYTES = 2 * 4  # weight_scale_2 + input_scale, fp32, per expert matrix


def element_bytes(weights_format: str, storage: Storage) -> Fraction:
    """Bytes per element of one storage class in one weights format.

    Raises:
        KeyError: for an unknown weights format.
    """
    if storage in _FIXED:
        return _FIXED[storage]
    return BYTES_PER_ELEMENT[weights_format][storage]


def in_gpu_format(weights_format: WeightsFormat | str, gpu: GpuType) -> str:
    """Format the engine holds in GPU memory for a checkpoint format on one GPU type.

    Returns `fp8` for NVFP4 checkpoints on AMD GPUs without native FP4 (gfx942), which have no
    documented NVFP4 MoE path; the checkpoint format otherwise (MXFP4 runs weight-only there).
    See the module docstring for the rule.
    """
    if weights_format == "nvfp4" and not gpu.fp4 and gpu.vendor == "amd":
        return "fp8"
    return str(weights_format)


def repack_rule(weights_format: WeightsFormat | str, gpu: GpuType) -> str | None:
    """A sentence explaining a repack on load, or None when the checkpoint format is kept."""
    held = in_gpu_format(weights_format, gpu)
    if held == weights_format:
        return None
    return (
        f"{gpu.name} ({gpu.arch}) has no FP4 MoE kernels: the engine dequantises the FP4 routed "
        f"experts to block-FP8 on load, so weights take {held} size in GPU memory"
    )


def _group_bytes(group: ParamGroup, weights_format: str, model: ModelSpec) -> int:
    size = group.elements * element_bytes(weights_format, group.storage)
    total = -(-size.numerator // size.denominator)  # ceil to whole bytes
    if weights_format == "nvfp4" and group.storage is Storage.EXPERT:
        layers = group.elements // model.expert_elements_per_layer
        total += layers * model.n_routed_experts * 3 * _NVFP4_TENSOR_SCALE_BYTES
    return total


def checkpoint_bytes(model: ModelSpec, weights_format: str, *, include_mtp: bool = True) -> int:
    """Total bytes of all weights in a format, scales included (the checkpoint's `total_size`).

    Args:
        model: catalog entry.
        weights_format: `official`, `nvfp4`, `fp8`, `bf16` or `int4`.
        include_mtp: count the MTP layer (the published checkpoints contain it).

    Returns:
        Bytes (int).
    """
    return sum(
        _group_bytes(g, weights_format, model)
        for g in model.parameter_groups()
        if include_mtp or not g.mtp
    )


@dataclass(frozen=True, slots=True)
class WeightBreakdown:
    """Weight bytes held by one GPU, by placement.

    Attributes:
        expert_bytes: this rank's share of the routed experts (redundant EPLB experts included).
        sharded_bytes: this rank's share of TP-sharded tensors.
        replicated_bytes: tensors every rank holds in full.
        eplb_buffer_bytes: EPLB's transfer buffer, one MoE layer's local experts (0 without
            EPLB): allocated at load beside the weights, so counted with them.
        offload_buffer_bytes: what the prefetch weight offloader's GPU buffer pool holds beyond
            the offloaded layers the plan keeps counted on the GPU (0 without it;
            `planning.offload.PrefetchOffload.gpu_excess_bytes`).
    """

    expert_bytes: int
    sharded_bytes: int
    replicated_bytes: int
    eplb_buffer_bytes: int = 0
    offload_buffer_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Bytes of weights on this GPU (the EPLB and offload buffers included)."""
        return (
            self.expert_bytes
            + self.sharded_bytes
            + self.replicated_bytes
            + self.eplb_buffer_bytes
            + self.offload_buffer_bytes
        )


def per_gpu_weight_bytes(
    model: ModelSpec,
    weights_format: str,
    *,
    tensor_parallel: int,
    data_parallel: int,
    expert_parallel: bool,
    include_mtp: bool = True,
    redundant_experts: int = 0,
    eplb: bool = False,
) -> WeightBreakdown:
    """Weight bytes on one GPU of a layout (vLLM placement, facts §4 and §7.1).

    Routed experts are spread over all TP x DP ranks either way: whole experts with expert parallel
    on (EP = TP x DP), or each expert's intermediate dimension split over a flattened TP group of
    size TP x DP without it (vLLM `FusedMoEParallelConfig`: "expert layers form a tensor parallel
    group of size DP x TP"). Sharded tensors (wq_b, wo_a, wo_b, shared expert, vocab-parallel
    embedding and head) are split by the attention TP; the rest is replicated.

    Args:
        model: catalog entry.
        weights_format: the format held in GPU memory (see `in_gpu_format`).
        tensor_parallel: TP size.
        data_parallel: DP size (attention data parallel).
        expert_parallel: whether routed experts are placed whole (EP) or split (flattened TP);
            the bytes per GPU are the same.
        include_mtp: count the MTP layer (the planner always does). vLLM loads it only with
            MTP speculation: the target model skips every `mtp.*` tensor
            (`DeepseekV4ForCausalLM.load_weights`, `AutoWeightsLoader(self,
            skip_substrs=["mtp."])`, S1) and the drafter (`deepseek_v4_mtp.py`, S8) loads it.
            But the one public load report (issue 2: Pro on 8x H200, DP8 + EP8, 125.65 GiB of
            weights per GPU) is 1.0 % above this count with the MTP layer and 2.6 % above it
            without: what vLLM allocates at load exceeds the checkpoint's tensors, so the MTP
            bytes are kept as that margin rather than dropped.

        redundant_experts: EPLB's `num_redundant_experts` R: each MoE layer holds E + R
            physical experts, (E + R) / EP on each GPU (vLLM `DeepseekV4MoE`:
            `n_physical_experts = n_logical_experts + num_redundant_experts`, asserted
            divisible by the EP size), so the experts' bytes scale by (E + R) / E.
        eplb: EPLB is on: add its transfer buffer, `[torch.empty_like(w) for w in
            model.expert_weights[0]]` (`EplbState.add_model`, vllm/distributed/eplb/
            eplb_state.py), i.e. one main-model MoE layer's local physical experts.

    Returns:
        The per-GPU breakdown in bytes (ceil of each share).
    """
    del expert_parallel  # same bytes: whole experts over EP ranks or slices over TP x DP ranks
    ranks = (model, tensor_parallel, data_parallel, redundant_experts)
    sums = dict.fromkeys(Placement, 0)
    for placement, b in _placed_bytes(model, weights_format, include_mtp=include_mtp):
        sums[placement] += _rank_share(placement, b, *ranks)
    buffer = 0
    if eplb:
        buffer = _rank_share(Placement.EXPERT, _layer_expert_bytes(model, weights_format), *ranks)
    return WeightBreakdown(
        expert_bytes=sums[Placement.EXPERT],
        sharded_bytes=sums[Placement.SHARDED],
        replicated_bytes=sums[Placement.REPLICATED],
        eplb_buffer_bytes=buffer,
    )


def layer_weight_bytes(
    model: ModelSpec,
    weights_format: str,
    layer: int,
    *,
    tensor_parallel: int,
    data_parallel: int,
    redundant_experts: int = 0,
) -> dict[str, int]:
    """Bytes one GPU holds of each tensor family of one main-model decoder layer.

    The per-layer share of `per_gpu_weight_bytes`, placed the same way (experts over TP x DP
    ranks, scaled by (E + R) / E; sharded families over TP; the rest in full), each family's
    bytes rounded up to whole bytes per layer and per rank.

    Args:
        model: catalog entry.
        weights_format: the format held in GPU memory (see `in_gpu_format`).
        layer: main-model layer index, 0 to `num_layers - 1` (`ModelSpec.layer_groups`).
        tensor_parallel: TP size.
        data_parallel: DP size.
        redundant_experts: EPLB's `num_redundant_experts` R.

    Returns:
        Family name (`ParamGroup.name`) -> bytes on one GPU.

    Raises:
        ValueError: a layer index outside the model.
    """
    ranks = (model, tensor_parallel, data_parallel, redundant_experts)
    return {
        group.name: _rank_share(group.placement, _group_bytes(group, weights_format, model), *ranks)
        for group in model.layer_groups(layer)
    }


def _rank_share(
    placement: Placement,
    size: int,
    model: ModelSpec,
    tensor_parallel: int,
    data_parallel: int,
    redundant_experts: int,
) -> int:
    """Bytes one GPU holds of `size` bytes placed as `placement`, rounded up.

    Experts: over all TP x DP ranks, scaled by the physical experts (E + R) / E; sharded
    tensors: over TP; the rest in full (`per_gpu_weight_bytes` gives the sources).
    """
    if placement is Placement.EXPERT:
        physical = model.n_routed_experts + redundant_experts
        return -(-size * physical // (tensor_parallel * data_parallel * model.n_routed_experts))
    if placement is Placement.SHARDED:
        return -(-size // tensor_parallel)
    return size


def _layer_expert_bytes(model: ModelSpec, weights_format: str) -> int:
    """Bytes of one main-model layer's routed experts (all E of them, scales included)."""
    main = next(g for g in model.parameter_groups() if g.name == "ffn.experts")
    return -(-_group_bytes(main, weights_format, model) // model.num_layers)


@lru_cache(maxsize=64)
def _placed_bytes(
    model: ModelSpec, weights_format: str, *, include_mtp: bool
) -> tuple[tuple[Placement, int], ...]:
    """(placement, bytes) of every tensor family; cached: the layout search asks per candidate."""
    return tuple(
        (g.placement, _group_bytes(g, weights_format, model))
        for g in model.parameter_groups()
        if include_mtp or not g.mtp
    )
