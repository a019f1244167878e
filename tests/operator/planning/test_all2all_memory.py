"""Expert-parallel all-to-all buffers that vLLM 0.33.0 allocates per GPU, as the plan counts them.

DeepEP low-latency (`--all2all-backend=deepep_low_latency`): vLLM's `DeepEPLLAll2AllManager.
_make_all2all_kwargs` (vllm/distributed/device_communicators/all2all.py) builds one
`deep_ep.Buffer` with `num_nvl_bytes = VLLM_DEEPEP_BUFFER_SIZE_MB MiB` and `num_rdma_bytes =
Buffer.get_low_latency_rdma_size_hint(max_num_tokens_per_dp_rank, hidden, num_ep_ranks,
num_global_experts)`, the tokens being `FusedMoEConfig.max_num_tokens = VLLM_MOE_DP_CHUNK_SIZE`
(default 256, vllm/envs.py). DeepEP's hint (csrc/config.hpp `LowLatencyLayout`,
`get_low_latency_rdma_size_hint`) restated here by hand, in BF16:

    scales     = hidden / 128
    dispatch   = 16 + max(2 x hidden, hidden + 4 x scales)      bytes per message
    combine    = 4 x scales + 2 x hidden                        bytes per message
    send       = max(T x dispatch, E x T x combine)
    recv       = max(E x T x dispatch, E x T x combine)
    signal     = align(4 x E, 128)
    total      = 2 x send + 2 x recv + 2 x signal
    hint       = (total + 128) // 128 x 128
"""

from __future__ import annotations

import dataclasses

import pytest

from dsv4_operator.planning import PlanningError, PlanRequest, plan
from dsv4_operator.planning.memory import deepep_low_latency_rdma_bytes
from dsv4_operator.planning.models import FLASH, PRO

_GIB = 1 << 30


@pytest.mark.parametrize(
    ("tokens", "hidden", "experts", "expected"),
    [
        # Flash, hidden 4,096, 256 experts, 256 tokens: scales 32; dispatch 16 + 8,192 = 8,208;
        # combine 128 + 8,192 = 8,320; send = recv = 256 x 256 x 8,320 = 545,259,520;
        # signal 1,024; total 4 x 545,259,520 + 2,048 = 2,181,040,128 (a multiple of 128,
        # so the hint adds a whole 128).
        (256, 4096, 256, 2_181_040_256),
        # Pro, hidden 7,168, 384 experts: scales 56; dispatch 16 + 14,336 = 14,352;
        # combine 224 + 14,336 = 14,560; send = recv = 384 x 256 x 14,560 = 1,431,306,240;
        # signal 1,536; total 5,725,224,960 + 3,072 = 5,725,228,032 -> 5,725,228,160.
        (256, 7168, 384, 5_725_228_160),
        # Pro at 128 tokens (VLLM_MOE_DP_CHUNK_SIZE=128): half the buffers, same signal.
        # send = recv = 384 x 128 x 14,560 = 715,653,120; total 2,862,612,480 + 3,072.
        (128, 7168, 384, 2_862_615_680),
        # Flash with 16 redundant experts (EPLB): E = 272; send = recv = 272 x 256 x 8,320
        # = 579,338,240; signal align(1,088) = 1,152; total 2,317,352,960 + 2,304.
        (256, 4096, 272, 2_317_355_392),
    ],
)
def test_deepep_low_latency_rdma_bytes_restate_deepeps_hint(
    tokens: int, hidden: int, experts: int, expected: int
) -> None:
    assert deepep_low_latency_rdma_bytes(tokens, hidden, experts) == expected


def test_deepep_low_latency_rdma_bytes_refuses_what_deepep_refuses() -> None:
    with pytest.raises(ValueError, match="tokens"):
        deepep_low_latency_rdma_bytes(0, 4096, 256)
    with pytest.raises(ValueError, match="hidden"):
        deepep_low_latency_rdma_bytes(256, 4000, 256)  # not a multiple of 128
    with pytest.raises(ValueError, match="experts"):
        deepep_low_latency_rdma_bytes(256, 4096, 0)


def _pro_ep(nodes: int) -> PlanRequest:
    return PlanRequest(
        model="pro",
        gpu_types=("h200-141gb",),
        gpus_per_node=8,
        max_nodes=nodes,
        tensor_parallel=1,
        data_parallel=8 * nodes,
        expert_parallel=True,
        max_model_len=65_536,
    )


@pytest.mark.parametrize("nodes", [1, 2])
def test_deepep_low_latency_buffers_are_counted(nodes: int) -> None:
    """The EP term was the 1 GiB allowance: 5.4 GiB short per GPU for Pro (NVL 1 GiB + DeepEP's
    32 MiB workspace + RDMA 5,725,228,160 B), whatever the EP size (the hint does not depend on
    the rank count)."""
    base = _pro_ep(nodes)
    plain = plan(base).chosen
    ll = plan(dataclasses.replace(base, all2all_backend="deepep_low_latency")).chosen
    assert ll.layout == plain.layout
    assert ll.layout.expert_parallel_size == 8 * nodes
    # NVL (1 GiB) + workspace (32 MiB) + RDMA replaces the 1 GiB allowance
    assert ll.memory.overhead_bytes == plain.memory.overhead_bytes + (32 << 20) + 5_725_228_160
    bigger = dataclasses.replace(
        base, all2all_backend="deepep_low_latency", deepep_buffer_bytes=2 * _GIB
    )
    assert plan(bigger).chosen.memory.overhead_bytes == ll.memory.overhead_bytes + _GIB


def test_deepep_low_latency_counts_the_moe_chunk_and_redundant_experts() -> None:
    base = dataclasses.replace(_pro_ep(1), all2all_backend="deepep_low_latency")
    ll = plan(base).chosen.memory.overhead_bytes
    half = plan(dataclasses.replace(base, moe_dp_chunk_tokens=128)).chosen.memory.overhead_bytes
    assert ll - half == 5_725_228_160 - 2_862_615_680
    flash = dataclasses.replace(base, model="flash")
    redundant = dataclasses.replace(flash, eplb=True, redundant_experts=16)
    assert (
        plan(redundant).chosen.memory.overhead_bytes - plan(flash).chosen.memory.overhead_bytes
        == 2_317_355_392 - 2_181_040_256
    )


def test_deepep_low_latency_without_an_all_to_all_holds_nothing() -> None:
    """vLLM builds the buffers only where `use_all2all_kernels` (DP > 1 with EP): TP-only EP
    keeps the plain plan."""
    base = dataclasses.replace(_pro_ep(1), tensor_parallel=8, data_parallel=1)
    ll = dataclasses.replace(base, all2all_backend="deepep_low_latency")
    assert plan(ll).chosen.memory.overhead_bytes == plan(base).chosen.memory.overhead_bytes


@pytest.mark.parametrize(
    "backend",
    [
        "deepep_v2",
        "flashinfer_all2allv",
        "flashinfer_nvlink_one_sided",
        "flashinfer_nvlink_two_sided",
        "moonep",
        "mori_high_throughput",
        "mori_low_latency",
        "nixl_ep",
    ],
)
def test_backends_whose_buffers_the_plan_cannot_size_are_refused(backend: str) -> None:
    with pytest.raises(PlanningError, match=rf"all2all_backend: '{backend}'.*not counted"):
        plan(dataclasses.replace(_pro_ep(1), all2all_backend=backend))


def test_moe_chunk_tokens_must_be_positive() -> None:
    with pytest.raises(PlanningError, match="moe_dp_chunk_tokens"):
        plan(dataclasses.replace(_pro_ep(1), moe_dp_chunk_tokens=0))


def test_models_have_the_shapes_the_hand_computed_values_assume() -> None:
    assert (FLASH.hidden_size, FLASH.n_routed_experts) == (4096, 256)
    assert (PRO.hidden_size, PRO.n_routed_experts) == (7168, 384)
