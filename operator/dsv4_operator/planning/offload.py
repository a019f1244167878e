"""Host (and GPU) memory of vLLM's two weight offloaders, per GPU: what the pod must request.

Both offloaders move parameters of the decoder layers (`make_layers` hands the layer stack to
`wrap_modules`, vllm/model_executor/offloader/base.py at 03584c33) into pinned host memory:

- UVA (`--cpu-offload-gb=N`, vllm/model_executor/offloader/uva.py at 00593fa7): walks the
  layers from the first and, before each parameter, stops once it has moved N GiB
  (`cpu_offload_bytes >= cpu_offload_max_bytes`); the parameter that crosses N is moved whole,
  so it moves less than N GiB plus one parameter. Each is copied with `tensor.pin_memory()`.
- Prefetch (`--offload-group-size=G` above 0, `--offload-num-in-group=K`,
  `--offload-prefetch-step=S`; vllm/model_executor/offloader/prefetch.py at 04db3199): moves
  every parameter (or those `--offload-params` names) of the layers i with
  `i % G >= G - K` into `torch.empty_strided(..., pin_memory=True)`, and allocates on the GPU a
  `StaticBufferPool` of S copies of every distinct (name, shape, stride, dtype) among them.

Pinned allocations go through PyTorch's CachingHostAllocator, which rounds each one up to the
next power of two (`c10::llvm::PowerOf2Ceil(size)` in aten/src/ATen/core/CachingHostAllocator.h;
vLLM issue #56410 measures about 1.9x for `--cpu-offload-gb`, PRs #48436 and #50094 the same
rounding for the host KV cache). The planner knows each layer's bytes per tensor family
(`ModelSpec.layer_groups`), not the shapes vLLM gives each parameter after loading (fused
projections, repacked quantised weights, separate scale tensors), so the rounding is bounded,
not computed: PowerOf2Ceil(x) < 2x for every x >= 1, so a set of parameters of b bytes in all
pins less than `PINNED_ROUNDING_FACTOR` x b. The bound is reached only by tensors just above a
power of two; it is the safe side for a memory request, which the scheduler must be able to
trust.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from dsv4_operator.planning.models import ModelSpec
from dsv4_operator.planning.weights import layer_weight_bytes

__all__ = [
    "PINNED_ROUNDING_FACTOR",
    "PrefetchOffload",
    "prefetch_layers",
    "prefetch_offload",
    "uva_host_bytes",
]

PINNED_ROUNDING_FACTOR: Final = 2
"""Upper bound of pinned bytes over requested bytes: PyTorch's CachingHostAllocator pins
`PowerOf2Ceil(size)` for a request of `size` bytes (aten/src/ATen/core/CachingHostAllocator.h),
which is below 2 x size for every size >= 1."""
_BF16_BYTES: Final = 2
"""Bytes per element of the embedding and LM head (BF16 in every format, `models.Storage`)."""


def _rank_layer_bytes(
    model: ModelSpec,
    weights_format: str,
    tensor_parallel: int,
    data_parallel: int,
    redundant_experts: int,
) -> Callable[[int], dict[str, int]]:
    """`layer_weight_bytes` of one rank's layout, as a function of the layer index."""

    def of(layer: int) -> dict[str, int]:
        return layer_weight_bytes(
            model,
            weights_format,
            layer,
            tensor_parallel=tensor_parallel,
            data_parallel=data_parallel,
            redundant_experts=redundant_experts,
        )

    return of


def prefetch_layers(num_layers: int, group_size: int, num_in_group: int) -> tuple[int, ...]:
    """Indices of the decoder layers the prefetch offloader moves to host memory.

    `PrefetchOffloader.wrap_modules` (vllm/model_executor/offloader/prefetch.py at 04db3199)
    offloads layer i when `i % group_size >= group_size - num_in_group`: the last
    `num_in_group` layers of every group of `group_size` (a last, partial group included).

    Args:
        num_layers: decoder layers, the MTP layer excluded.
        group_size: `--offload-group-size`, at least 1.
        num_in_group: `--offload-num-in-group`, 1 to `group_size`.

    Raises:
        ValueError: a group size below 1 or a count outside 1..group_size.
    """
    if group_size < 1 or not 1 <= num_in_group <= group_size:
        msg = (
            f"offload group of {group_size} layers with {num_in_group} offloaded: need a group "
            "of at least 1 and 1 to the group size offloaded"
        )
        raise ValueError(msg)
    return tuple(i for i in range(num_layers) if i % group_size >= group_size - num_in_group)


@dataclass(frozen=True, slots=True)
class PrefetchOffload:
    """The prefetch offloader's memory on one GPU's rank, bytes.

    Attributes:
        layers: indices of the offloaded decoder layers.
        offloaded_bytes: their weights on this rank (the plan keeps them counted on the GPU).
        host_bytes: upper bound of the pinned host memory holding them
            (`PINNED_ROUNDING_FACTOR` x `offloaded_bytes`).
        buffer_bytes: the GPU `StaticBufferPool`: prefetch step x the bytes of every distinct
            tensor family (name and per-layer size) among the offloaded layers.
        gpu_excess_bytes: what the pool can hold beyond the offloaded weights it replaces, the
            sum over families of max(0, pool bytes - offloaded bytes): counted in the GPU's
            weights (`WeightBreakdown.offload_buffer_bytes`). Per family so that it bounds any
            subset `--offload-params` selects too.
    """

    layers: tuple[int, ...]
    offloaded_bytes: int
    host_bytes: int
    buffer_bytes: int
    gpu_excess_bytes: int


def prefetch_offload(
    model: ModelSpec,
    weights_format: str,
    setting: tuple[int, int, int],
    *,
    tensor_parallel: int,
    data_parallel: int,
    redundant_experts: int = 0,
) -> PrefetchOffload:
    """Memory of the prefetch offloader on one rank of a layout.

    Args:
        model: catalog entry.
        weights_format: the format held in GPU memory (`in_gpu_format`).
        setting: (`--offload-group-size`, `--offload-num-in-group`, `--offload-prefetch-step`).
        tensor_parallel: TP size.
        data_parallel: DP size.
        redundant_experts: EPLB's redundant experts per layer.

    Returns:
        The offloaded layers and their bytes (see `PrefetchOffload`).

    Raises:
        ValueError: a setting `prefetch_layers` refuses, or a step below 1.
    """
    group, per_group, step = setting
    if step < 1:
        msg = f"prefetch step {step}: need at least 1 layer"
        raise ValueError(msg)
    layers = prefetch_layers(model.num_layers, group, per_group)
    offloaded: dict[str, int] = {}
    distinct: dict[str, set[int]] = {}
    rank_layer = _rank_layer_bytes(
        model, weights_format, tensor_parallel, data_parallel, redundant_experts
    )
    for layer in layers:
        for name, size in rank_layer(layer).items():
            offloaded[name] = offloaded.get(name, 0) + size
            distinct.setdefault(name, set()).add(size)
    pool = {name: step * sum(sizes) for name, sizes in distinct.items()}
    total = sum(offloaded.values())
    return PrefetchOffload(
        layers=layers,
        offloaded_bytes=total,
        host_bytes=PINNED_ROUNDING_FACTOR * total,
        buffer_bytes=sum(pool.values()),
        gpu_excess_bytes=sum(max(0, pool[n] - offloaded[n]) for n in pool),
    )


def uva_host_bytes(
    model: ModelSpec,
    weights_format: str,
    offload_bytes: int,
    *,
    tensor_parallel: int,
    data_parallel: int,
    redundant_experts: int = 0,
    weights_on_gpu: int,
) -> int:
    """Upper bound of the pinned host memory `--cpu-offload-gb` takes on one rank, bytes.

    The UVA offloader moves parameters until it has moved `offload_bytes` (N GiB), checking
    before each one, so it moves less than N GiB plus one parameter, and no more than the
    rank's weights. One parameter is at most the largest decoder layer's bytes on the rank, or
    the rank's share of the embedding or LM head (vocab x hidden BF16 over TP: at 00593fa7 only
    the layers are offloaded, but a later `BaseOffloader.offload_model`, base.py at 03584c33,
    lets an offloader sweep the rest). Each moved parameter is pinned at its power-of-two
    ceiling, below `PINNED_ROUNDING_FACTOR` times its size.

    Args:
        model: catalog entry.
        weights_format: the format held in GPU memory (`in_gpu_format`).
        offload_bytes: `--cpu-offload-gb` x 2^30 (vLLM's `int(cpu_offload_gb * 1024**3)`).
        tensor_parallel: TP size.
        data_parallel: DP size.
        redundant_experts: EPLB's redundant experts per layer.
        weights_on_gpu: all weight bytes of the rank before offloading (`WeightBreakdown`).

    Returns:
        `PINNED_ROUNDING_FACTOR` x min(`offload_bytes` + largest parameter bound,
        `weights_on_gpu`); 0 without offload.
    """
    if offload_bytes <= 0:
        return 0
    vocab_share = -(-model.vocab_size * model.hidden_size * _BF16_BYTES // tensor_parallel)
    rank_layer = _rank_layer_bytes(
        model, weights_format, tensor_parallel, data_parallel, redundant_experts
    )
    layer = max(sum(rank_layer(i).values()) for i in range(model.num_layers))
    largest = max(layer, vocab_share)
    return PINNED_ROUNDING_FACTOR * min(offload_bytes + largest, weights_on_gpu)
