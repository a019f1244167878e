"""Host and GPU memory of vLLM's weight offloaders (`planning.offload`), restated by hand.

Sources: vllm/model_executor/offloader/prefetch.py at 04db3199 (layer i is offloaded when
`i % group_size >= group_size - num_in_group`; a `StaticBufferPool` of `prefetch_step` copies of
every distinct parameter), uva.py at 00593fa7 (the budget is checked before each parameter),
PyTorch's CachingHostAllocator (`PowerOf2Ceil` of every pinned allocation).
"""

from __future__ import annotations

import dataclasses

import pytest

from dsv4_operator.planning import plan
from dsv4_operator.planning.findings import Code, PlanningError
from dsv4_operator.planning.models import FLASH, PRO
from dsv4_operator.planning.offload import prefetch_layers, prefetch_offload, uva_host_bytes
from dsv4_operator.planning.request import PlanRequest
from dsv4_operator.planning.weights import layer_weight_bytes

_GIB = 1 << 30

# One layer of Flash in int4 (33/64 B per quantised weight: 0.5 B + a BF16 scale per 128) on
# one rank of TP1 x DP8, by hand (facts §1; hidden 4096, 256 experts of 2048, 64 heads x 512,
# q_lora 1024, o 8 x 1024, indexer 64 x 128, hc_mult 4).
_Q = 33 / 64
_FLASH_INT4_DP8_EXPERTS = int(256 * 3 * 4096 * 2048 * _Q / 8)  # 415,236,096: 32 local experts
_FLASH_INT4_DP8_SHARED_ATTN = int(
    (3 * 4096 * 2048 + 4096 * 1024 + 4096 * 512 + 1024 * 32768 + 4096 * 8192 + 8192 * 4096) * _Q
)  # shared expert, wq_a, wkv, wq_b, wo_a, wo_b
_HC = 2 * (24 * 4 * 4096 + 24 + 3) * 4  # mHC of both sublayers, fp32
_GATE = 256 * 4096 * 2  # router weight, bf16
_SINK = 64 * 4
# Layer 2: CSA (indexer, overlapping compressor) and a hash layer (tid2eid, no gate bias).
_LAYER2 = (
    _FLASH_INT4_DP8_EXPERTS
    + _FLASH_INT4_DP8_SHARED_ATTN
    + int(1024 * 8192 * _Q)  # indexer wq_b
    + 4096 * 64 * 2  # indexer weights_proj, bf16
    + 2 * 4096 * 2 * 512 * 2  # compressor wkv + wgate, ratio 4 (2 x 512 out), bf16
    + 2 * 4096 * 2 * 128 * 2  # indexer compressor, bf16
    + 4 * 2 * (512 + 128) * 4  # compressor positional bias, fp32
    + 512 * 2  # compressor norm, bf16
    + _SINK
    + _GATE
    + 129280 * 6 * 8  # tid2eid, int64
    + _HC
    + (2 * 4096 + 1024 + 512 + 128) * 2  # norms, bf16
)
# Layer 3: HCA (ratio 128: compressor 512 out, positional bias 128 x 512), gate bias.
_LAYER3 = (
    _FLASH_INT4_DP8_EXPERTS
    + _FLASH_INT4_DP8_SHARED_ATTN
    + 2 * 4096 * 512 * 2
    + 128 * 512 * 4
    + 512 * 2  # compressor norm, bf16
    + _SINK
    + _GATE
    + 256 * 4  # gate bias, fp32
    + _HC
    + (2 * 4096 + 1024 + 512) * 2
)


def test_layer_groups_add_up_to_the_model_groups() -> None:
    """Every per-layer family summed over the layers is its whole-model group (both models)."""
    for model in (FLASH, PRO):
        summed: dict[str, int] = {}
        for layer in range(model.num_layers):
            for g in model.layer_groups(layer):
                summed[g.name] = summed.get(g.name, 0) + g.elements
        whole = {
            g.name: g.elements
            for g in model.parameter_groups()
            if not g.mtp and g.name not in {"embed", "head", "hc_head", "norm"}
        }
        assert summed == whole, model.name


def test_a_layer_outside_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match=r"layer 43 is not in 0\.\.42"):
        FLASH.layer_groups(43)


def test_one_layer_per_rank_by_hand() -> None:
    """Flash int4, TP1 x DP8 (the RTX 5090 example's layout): a CSA hash layer and an HCA one."""
    per_rank = {
        layer: sum(
            layer_weight_bytes(FLASH, "int4", layer, tensor_parallel=1, data_parallel=8).values()
        )
        for layer in (2, 3)
    }
    assert _FLASH_INT4_DP8_EXPERTS == 415_236_096
    assert per_rank == {2: _LAYER2, 3: _LAYER3}
    assert _LAYER2 == 520_671_960


@pytest.mark.parametrize(
    ("layers", "group", "per_group", "expected"),
    [
        # Flash: the last of every 4 of 43 layers; the partial group 40..42 offloads none.
        (43, 4, 1, (3, 7, 11, 15, 19, 23, 27, 31, 35, 39)),
        # vLLM's docstring example: group 8, 2 per group -> 6, 7, 14, 15, ...
        (16, 8, 2, (6, 7, 14, 15)),
        (7, 3, 2, (1, 2, 4, 5)),
        (5, 1, 1, (0, 1, 2, 3, 4)),
    ],
)
def test_prefetch_layers(
    layers: int, group: int, per_group: int, expected: tuple[int, ...]
) -> None:
    assert prefetch_layers(layers, group, per_group) == expected


def test_prefetch_host_and_buffer_pool_by_hand() -> None:
    """Group 4, 1 per group offloads Flash's HCA layers 3, 7, ..., 39 (10 alike layers).

    Host: twice their bytes (power-of-two bound). GPU: the pool holds `step` layers; with a step
    of 2 that is within the 10 the plan keeps counted, with 25 it is 15 layers more.
    """
    for step, excess_layers in ((1, 0), (2, 0), (10, 0), (25, 15)):
        pre = prefetch_offload(FLASH, "int4", (4, 1, step), tensor_parallel=1, data_parallel=8)
        assert pre.layers == tuple(range(3, 43, 4))[:10]
        assert pre.offloaded_bytes == 10 * _LAYER3
        assert pre.host_bytes == 2 * 10 * _LAYER3
        assert pre.buffer_bytes == step * _LAYER3
        assert pre.gpu_excess_bytes == excess_layers * _LAYER3


def test_prefetch_pool_of_unlike_layers_is_counted_per_distinct_tensor() -> None:
    """Group 2, 1 per group offloads layers 1, 3, ..., 41: layer 1 is SWA-only and hashed
    (tid2eid, no gate bias), the other 20 HCA with a gate bias. The pool holds `step` copies of
    each distinct family: with step 1 the 21 offloaded layers cover it; with step 21 the
    families in fewer than 21 of them are short: tid2eid (1 layer) by 20 copies, the gate bias
    and the HCA compressor, its norm and positional bias (20 layers) by one each."""
    pre = prefetch_offload(FLASH, "int4", (2, 1, 1), tensor_parallel=1, data_parallel=8)
    assert pre.layers == tuple(range(1, 43, 2))
    assert pre.gpu_excess_bytes == 0
    pre21 = prefetch_offload(FLASH, "int4", (2, 1, 21), tensor_parallel=1, data_parallel=8)
    tid2eid = 129280 * 6 * 8
    # gate bias, compressor, compressor norm, ape
    per_hca_layer = 256 * 4 + 2 * 4096 * 512 * 2 + 512 * 2 + 128 * 512 * 4
    assert pre21.gpu_excess_bytes == 20 * tid2eid + per_hca_layer


_FLASH_VOCAB_SHARE_TP1 = 129280 * 4096 * 2  # embedding (or LM head) rows, BF16, over TP 1
_FLASH_VOCAB_SHARE_TP8 = 129280 * 4096 * 2 // 8


def test_uva_host_bound_by_hand() -> None:
    """N GiB plus one parameter, twice. One parameter is at most the largest layer on the rank
    (Flash's layer 2) or the rank's embedding / LM head share, whichever is larger: at TP 1 the
    1.06 GB embedding, at TP 8 (all experts over 8, the rest over TP 8) the layer."""
    assert _FLASH_VOCAB_SHARE_TP1 == 1_059_061_760 > _LAYER2
    on_gpu = 10**12
    host = uva_host_bytes(
        FLASH, "int4", 4 * _GIB, tensor_parallel=1, data_parallel=8, weights_on_gpu=on_gpu
    )
    assert host == 2 * (4 * _GIB + _FLASH_VOCAB_SHARE_TP1)
    layer2_tp8 = sum(
        layer_weight_bytes(FLASH, "int4", 2, tensor_parallel=8, data_parallel=1).values()
    )
    assert layer2_tp8 > _FLASH_VOCAB_SHARE_TP8
    host_tp8 = uva_host_bytes(
        FLASH, "int4", 4 * _GIB, tensor_parallel=8, data_parallel=1, weights_on_gpu=on_gpu
    )
    assert host_tp8 == 2 * (4 * _GIB + layer2_tp8)
    capped = uva_host_bytes(
        FLASH, "int4", 4 * _GIB, tensor_parallel=1, data_parallel=8, weights_on_gpu=3 * _GIB
    )
    assert capped == 2 * 3 * _GIB
    assert (
        uva_host_bytes(FLASH, "int4", 0, tensor_parallel=1, data_parallel=8, weights_on_gpu=1) == 0
    )


_RTX = PlanRequest(
    model="flash",
    weights_format="int4",
    gpu_types=("rtx-5090-32gb",),
    gpus_per_node=8,
    max_nodes=1,
    tensor_parallel=1,
    data_parallel=8,
    expert_parallel=True,
    max_model_len=131072,
    max_num_seqs=4,
    max_num_batched_tokens=512,
)


def test_plan_counts_the_prefetch_offloaders_host_memory_and_warns() -> None:
    """Before: the prefetch offloader's pinned layers were in no memory request (0 B)."""
    base = plan(_RTX)
    assert base.weight_offload_host_bytes == 0
    offloaded = plan(dataclasses.replace(_RTX, prefetch_offload=(4, 1, 1)))
    assert offloaded.chosen.layout == base.chosen.layout
    assert offloaded.weight_offload_host_bytes == 8 * 2 * 10 * _LAYER3
    (finding,) = [w for w in offloaded.warnings if w.code is Code.PREFETCH_OFFLOAD]
    assert f"{2 * 10 * _LAYER3:,} B per GPU" in finding.message
    # Step 1 fits in the offloaded layers: the GPU weights are unchanged.
    assert offloaded.chosen.memory.weights.total_bytes == base.chosen.memory.weights.total_bytes


def test_plan_counts_a_prefetch_pool_beyond_the_offloaded_layers_on_the_gpu() -> None:
    """A step of 25 over 10 offloaded layers allocates 15 layers more than the plan counted."""
    base = plan(_RTX)
    big = plan(dataclasses.replace(_RTX, prefetch_offload=(4, 1, 25)))
    extra = big.chosen.memory.weights.total_bytes - base.chosen.memory.weights.total_bytes
    assert extra == 15 * _LAYER3
    assert big.chosen.memory.weights.offload_buffer_bytes == 15 * _LAYER3


def test_plan_counts_the_uva_offloaders_rounding_and_one_more_parameter() -> None:
    """Before: `--cpu-offload-gb=4` on 8 GPUs added exactly 32 GiB to the pod."""
    offloaded = plan(dataclasses.replace(_RTX, cpu_offload_bytes=4 * _GIB))
    per_gpu = 2 * (4 * _GIB + _FLASH_VOCAB_SHARE_TP1)
    assert offloaded.weight_offload_host_bytes == 8 * per_gpu
    (finding,) = [w for w in offloaded.warnings if w.code is Code.CPU_OFFLOAD]
    assert f"{per_gpu:,} B per GPU" in finding.message


@pytest.mark.parametrize("setting", [(0, 1, 1), (4, 5, 1), (4, 0, 1), (4, 1, 0)])
def test_a_prefetch_setting_vllm_refuses_is_a_planning_error(
    setting: tuple[int, int, int],
) -> None:
    with pytest.raises(PlanningError, match="--offload-num-in-group from 1 to the group size"):
        plan(dataclasses.replace(_RTX, prefetch_offload=setting))
